"""The i-PI driver against real i-PI processes: physics, dipoles, restarts, bad input."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from ase import units as ase_units

from legato.fileio import bead_files, read_extras, read_properties, read_structures, read_xyz
from legato.driver.checks import InputError, check_frame
from legato.driver.run import RunSettings, run_simulation, steps_in, write_input
from legato.driver.pes import LegatoDriver
from legato.driver.analytic import HarmonicPotential
from legato.potential import ModelPotential

REPO = Path(__file__).resolve().parent.parent
TEMPLATES = REPO / "ipi_inputs"
LEGATO = [sys.executable, "-m", "legato.cli"]


def model_driver(model_file):
    return lambda structure: LegatoDriver(model=str(model_file), structure=str(structure))


def harmonic_input(tmp_path, n_atoms, nbeads, temperature, steps, k_ev_a2, timestep_fs=1.0):
    """An i-PI input for independent H atoms in one 3D harmonic well (non-periodic)."""
    structure = tmp_path / "atoms.xyz"
    rng = np.random.default_rng(0)
    lines = [f"{n_atoms}", "# CELL(abcABC): 30 30 30 90 90 90 cell{angstrom} positions{angstrom}"]
    lines += [f"H {x:.5f} {y:.5f} {z:.5f}" for x, y, z in rng.normal(scale=0.05, size=(n_atoms, 3))]
    structure.write_text("\n".join(lines) + "\n")
    template = (TEMPLATES / "nh3_solid_pimd_nvt.xml").read_text()
    template = template.replace("nh3_phase_i.xyz", "atoms.xyz").replace("<tau units='femtosecond'> 100 </tau>", "<tau units='femtosecond'> 25 </tau>")
    xml = tmp_path / "harmonic.xml"
    xml.write_text(template)
    settings = RunSettings(nbeads=nbeads, temperature=temperature, total_steps=steps, timestep=timestep_fs, seed=12345, stride=1000)
    return xml, settings, k_ev_a2


def exact_kinetic_per_dof(hbar_omega, kT, nbeads):
    """Centroid-virial kinetic energy per degree of freedom of a P-bead harmonic ring polymer.

    KE = kT/2 + (kT/2) sum_{k>0} w^2 / w_k^2, w_k^2 = w^2 + (2 P kT / hbar)^2 sin^2(pi k / P).
    """
    k = np.arange(1, nbeads)
    ratio = hbar_omega**2 / (hbar_omega**2 + (2 * nbeads * kT * np.sin(np.pi * k / nbeads)) ** 2)
    return 0.5 * kT + 0.5 * kT * ratio.sum()


def block_error(x, n_blocks=10):
    blocks = np.array_split(x, n_blocks)
    means = np.array([b.mean() for b in blocks])
    return means.std(ddof=1) / np.sqrt(n_blocks)


@pytest.mark.slow  # i-PI with 32 beads, ~20 s
def test_pimd_harmonic_oscillator_gives_the_quantum_kinetic_energy(tmp_path):
    """32 beads, 32 atoms for 2000 steps of 2 fs. i-PI's cost is per step, hardly per atom: 32 atoms
    for 4 ps sample more than the 8 atoms for 6000 steps of 1 fs (6 ps) this test ran before, so the
    block error is smaller (0.17% of the KE against 0.34%, one-off runs) at a third of the time. The
    free ring polymer is integrated exactly in normal modes and 2 fs is 1/60 of the oscillator's
    period (mean KE 0.04% off the exact value, 0.18% at 1 fs). The classical answer is 48% of it."""
    temperature, nbeads, n_atoms = 100.0, 32, 32
    kT = ase_units.kB * temperature
    hbar_omega = 4 * kT  # deep quantum regime: KE is ~2x the classical kT/2
    mass_kg = 1.00794 * ase_units._amu
    omega = hbar_omega * ase_units._e / ase_units._hbar
    k_ev_a2 = mass_kg * omega**2 / ase_units._e * 1e-20
    xml, settings, k = harmonic_input(tmp_path, n_atoms, nbeads, temperature, steps=2000, k_ev_a2=k_ev_a2, timestep_fs=2.0)
    drivers = lambda structure: LegatoDriver(potential=HarmonicPotential(k), symbols=["H"] * n_atoms, periodic=False)
    run_simulation(xml, tmp_path / "run", drivers, settings, progress=False)
    props = read_properties(tmp_path / "run" / "simulation.out")
    ke = props["kinetic_cv"][len(props["kinetic_cv"]) // 5 :] / (3 * n_atoms)  # drop equilibration
    exact_p = exact_kinetic_per_dof(hbar_omega, kT, nbeads)
    exact = hbar_omega / 4 / np.tanh(hbar_omega / (2 * kT))
    assert exact_p == pytest.approx(exact, rel=0.01)  # 32 beads converge the quantum result
    err = block_error(ke)
    assert abs(ke.mean() - exact_p) < 3 * err + 0.005 * exact_p, (ke.mean(), exact_p, err)
    assert ke.mean() > 1.5 * 0.5 * kT  # clearly not the classical result


def test_a_hard_killed_run_resumes_from_the_periodic_checkpoint_as_if_never_stopped(tmp_path):
    """No RESTART (SIGKILL, a machine that went away): the run goes on from i-PI's last
    periodic checkpoint, with the outputs written after it cut, and ends with the same
    trajectory, properties and dipoles as the run that was never stopped."""
    import shutil

    from legato.driver.run import recover_checkpoint

    template = tmp_path / "pimd.xml"
    template.write_text((TEMPLATES / "nh3_solid_pimd_nvt.xml").read_text().replace("<checkpoint stride='200'/>", "<checkpoint stride='20'/>"))
    (tmp_path / "nh3_phase_i.xyz").write_text((TEMPLATES / "nh3_phase_i.xyz").read_text())
    settings = RunSettings(nbeads=2, temperature=150, total_steps=30, stride=2, seed=5)
    drivers = lambda structure: LegatoDriver(potential=HarmonicPotential(1.0), symbols=read_structures(structure)[0].get_chemical_symbols())  # noqa: E731
    run = tmp_path / "run"
    run_simulation(template, run, drivers, settings, progress=False)
    names = ["simulation.out", "simulation.pos_0.xyz", "simulation.pos_1.xyz", "simulation.dip_0"]
    names = [n for n in names if (run / n).exists()]
    assert "simulation.out" in names and "simulation.pos_0.xyz" in names
    whole = {n: (run / n).read_text() for n in names}
    (run / "RESTART").unlink()  # as a hard kill at step 30 leaves it: the checkpoint of step 20, outputs to 30
    with open(run / "simulation.pos_0.xyz", "a") as f:
        f.write("16\n# CELL(abcABC): 5 5 5 90 90 90 Step: 32 Bead: 0\nN 0 0")  # a frame the kill cut short
    killed = tmp_path / "killed"
    shutil.copytree(run, killed)
    other = killed / "simulation.temperatures"  # properties without the step first are left as they are
    other.write_text("# column   1     --> temperature{kelvin} : ...\n  1.5e+02\n")
    assert recover_checkpoint(killed) and (killed / "RESTART").exists()
    assert steps_in(killed / "simulation.out")[-1] == 20
    assert other.read_text().endswith("1.5e+02\n")
    stale = (killed / "simulation.restart").read_text().replace("<step>20</step>", "<step>10</step>")
    assert stale != (killed / "simulation.restart").read_text()
    (killed / "RESTART").write_text(stale)  # a run resumed from step 10 once, then killed past its checkpoint of step 20
    assert recover_checkpoint(killed) and "<step>20</step>" in (killed / "RESTART").read_text()
    out = run / "simulation.out"
    out.write_text("# written before the kill\n" + out.read_text())  # kept by a resume, gone if the run started over
    run_simulation(template, run, drivers, settings, progress=False)
    assert out.read_text().startswith("# written before the kill\n")
    out.write_text(out.read_text().removeprefix("# written before the kill\n"))
    for n in names:
        assert (run / n).read_text() == whole[n], n

    def no_driver(structure):
        raise AssertionError("a finished run must not start i-PI or a driver")

    run_simulation(template, run, no_driver, settings, progress=False)  # run again: nothing left, outputs kept
    for n in names:
        assert (run / n).read_text() == whole[n], n


def test_a_checkpoint_of_step_zero_is_older_than_a_later_restart(tmp_path):
    """i-PI leaves <step> out of the state files it writes at step 0 (its first periodic
    checkpoint): that is step 0, older than a RESTART written at a later clean stop."""
    from legato.driver.run import recover_checkpoint

    (tmp_path / "input.xml").write_text("<simulation><output prefix='simulation'><checkpoint stride='200'/></output></simulation>")
    (tmp_path / "simulation.restart").write_text("<simulation><total_steps>40</total_steps></simulation>")
    (tmp_path / "RESTART").write_text("<simulation><step>12</step><total_steps>40</total_steps></simulation>")
    (tmp_path / "simulation.out").write_text("# column   1     --> step : ...\n 10 1.0\n 12 1.0\n")
    assert not recover_checkpoint(tmp_path)
    assert "<step>12</step>" in (tmp_path / "RESTART").read_text()
    assert (tmp_path / "simulation.out").read_text().endswith(" 12 1.0\n")
    (tmp_path / "RESTART").unlink()  # a hard kill before the first clean stop: back to step 0
    assert recover_checkpoint(tmp_path) and "<step>" not in (tmp_path / "RESTART").read_text()
    assert steps_in(tmp_path / "simulation.out").size == 0


def test_nve_conserves_energy_with_second_order_error(tmp_path, trained_model_file):
    """Velocity Verlet on conservative forces: the conserved energy wanders by O(dt^2)."""
    spread = {}
    for dt, steps in ((0.5, 200), (0.25, 400)):  # the same 100 fs
        settings = RunSettings(total_steps=steps, timestep=dt, temperature=100, stride=1000, seed=7)
        run_simulation(TEMPLATES / "nh3_solid_classical_nve.xml", tmp_path / f"nve{dt}", model_driver(trained_model_file), settings, progress=False)
        props = read_properties(tmp_path / f"nve{dt}" / "simulation.out")
        conserved, potential = props["conserved"], props["potential"]
        assert np.ptp(potential) > 0.03  # eV: the system moved
        assert np.ptp(conserved) < 0.05 * np.ptp(potential)  # conserved: flat where the potential swings
        spread[dt] = np.std(conserved - conserved[0])
    assert 2.5 < spread[0.5] / spread[0.25] < 6.0, spread  # 4 for an O(dt^2) integrator error


def test_per_bead_dipoles_are_what_the_driver_sent(tmp_path, tiny_model_file):
    settings = RunSettings(nbeads=4, total_steps=20, stride=5)
    run_dir = run_simulation(TEMPLATES / "nh3_solid_pimd_nvt.xml", tmp_path / "pimd", model_driver(tiny_model_file), settings, progress=False)
    potential = ModelPotential.from_file(tiny_model_file)
    positions_files, dipole_files = bead_files(run_dir, "simulation", "pos"), bead_files(run_dir, "simulation", "dip")
    assert len(positions_files) == len(dipole_files) == 4
    cell = np.eye(3) * 5.13
    for pos_file, dip_file in zip(positions_files, dipole_files):
        steps, positions, symbols = read_xyz(pos_file)
        dip_steps, dipoles = read_extras(dip_file)
        np.testing.assert_array_equal(steps, dip_steps)
        expected = potential.evaluate(symbols, positions, np.repeat(cell[None], len(steps), 0))["dipole"]
        np.testing.assert_allclose(dipoles, expected, atol=2e-4)  # positions are printed to 6 digits
        assert np.abs(np.diff(dipoles, axis=0)).max() > 1e-3  # the beads moved, the dipoles changed


@pytest.mark.slow  # i-PI and two driver processes, ~25 s
def test_killed_driver_restarted_loses_and_repeats_no_step(tmp_path, tiny_model_file):
    from legato.driver.run import socket_name, write_input

    run_dir = tmp_path / "kill"
    run_dir.mkdir()
    xml, structure = write_input(TEMPLATES / "nh3_solid_pimd_nvt.xml", run_dir, RunSettings(nbeads=4, total_steps=300, stride=10))
    ipi = subprocess.Popen([sys.executable, "-m", "legato.driver.ipi_main", xml.name], cwd=run_dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    serve = LEGATO + ["serve", str(tiny_model_file), "-s", str(structure), "-u", socket_name(run_dir)]
    try:
        first = subprocess.Popen(serve, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        out = run_dir / "simulation.out"
        deadline = time.time() + 120
        while time.time() < deadline and (not out.exists() or len(steps_in(out)) < 5):
            time.sleep(0.2)
        first.send_signal(signal.SIGKILL)
        first.wait()
        killed_at = steps_in(out)[-1]
        assert killed_at < 300
        second = subprocess.run(serve, capture_output=True, text=True, timeout=300)
        assert second.returncode == 0, second.stderr
        assert ipi.wait(timeout=60) == 0
    finally:
        for proc in (ipi,):
            if proc.poll() is None:
                proc.kill()
    steps = steps_in(run_dir / "simulation.out")
    np.testing.assert_array_equal(steps, np.arange(0, 301, 10))


def test_driver_refuses_a_structure_that_does_not_match_ipi(tmp_path, tiny_model_file, legato_in_process):
    from legato.driver.run import socket_name, write_input

    run_dir = tmp_path / "bad"
    run_dir.mkdir()
    xml, _ = write_input(TEMPLATES / "nh3_solid_pimd_nvt.xml", run_dir, RunSettings(nbeads=2, total_steps=10))
    ipi = subprocess.Popen([str(Path(sys.executable).parent / "i-pi"), xml.name], cwd=run_dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wrong = TEMPLATES / "nh3_liquid_8.xyz"  # 32 atoms, i-PI runs 16
        result = legato_in_process("serve", tiny_model_file, "-s", wrong, "-u", socket_name(run_dir))
    finally:
        ipi.kill()
        ipi.wait()
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert "i-PI sent 16 atoms but the driver's structure has 32" in last


def test_driver_refuses_a_model_without_the_structures_species(tmp_path, tiny_model_file, legato_in_process):
    water = tmp_path / "water.xyz"
    water.write_text("3\n\nO 0 0 0\nH 0.96 0 0\nH -0.24 0.93 0\n")
    result = legato_in_process("serve", tiny_model_file, "-s", water, "-u", "nobody")
    assert result.returncode != 0
    assert "model knows ['H', 'N'] but the structure has ['O']" in result.stderr


def test_a_run_started_from_an_equilibration_continues_its_state(tmp_path, tiny_model_file):
    """--start: the production run's first state is the equilibration's last (positions and momenta)."""
    driver = model_driver(tiny_model_file)
    equilibration = run_simulation(TEMPLATES / "equilibrate_nvt.xml", tmp_path / "eq", driver, RunSettings(nbeads=2, temperature=150, total_steps=30, seed=3), progress=False)
    settings = RunSettings(nbeads=2, temperature=150, total_steps=20, stride=1000, seed=4, start=equilibration / "RESTART")
    production = run_simulation(TEMPLATES / "nh3_solid_pimd_nvt.xml", tmp_path / "prod", driver, settings, progress=False)
    before, after = read_properties(equilibration / "simulation.out"), read_properties(production / "simulation.out")
    assert before["step"][-1] == 30 and after["step"][0] == 0
    for key in ("temperature", "potential"):  # momenta and positions carried over (thermal momenta differ by ~10%)
        assert after[key][0] == pytest.approx(before[key][-1], rel=1e-7), key
    (tmp_path / "other").mkdir()
    with pytest.raises(ValueError, match="same number of beads"):
        write_input(TEMPLATES / "nh3_solid_pimd_nvt.xml", tmp_path / "other", RunSettings(nbeads=4, start=equilibration / "RESTART"))


def test_run_starts_from_any_structure_file_with_a_cell(tmp_path, legato_in_process):
    """--structure: an extxyz water box (no ammonia) runs under a template written for ammonia."""
    import ase.io

    from legato.fileio import read_frames
    from legato.training.structures import molecular_liquid

    water = molecular_liquid("H2O", 4, 1.0, seed=0)
    ase.io.write(tmp_path / "water.extxyz", water)
    args = ["run", "nh3_solid_pimd_nvt.xml", "-o", tmp_path / "run", "--potential", "harmonic:k=1", "--beads", "2", "--steps", "4", "--stride", "2", "--no-progress"]
    result = legato_in_process(*args, "--structure", tmp_path / "water.extxyz")
    assert result.returncode == 0, result.stderr
    frames = read_frames(bead_files(tmp_path / "run", "simulation", "pos")[0])
    assert frames[0].get_chemical_symbols() == water.get_chemical_symbols()
    np.testing.assert_allclose(frames[0].cell.cellpar(), water.cell.cellpar(), atol=1e-5)
    np.testing.assert_allclose(frames[0].get_all_distances(mic=True), water.get_all_distances(mic=True), atol=1e-4)  # step 0
    molecule = tmp_path / "molecule.xyz"
    ase.io.write(molecule, water[:3], format="xyz")
    (tmp_path / "other").mkdir()
    with pytest.raises(ValueError, match="has no cell; i-PI needs one"):
        write_input(TEMPLATES / "nh3_solid_pimd_nvt.xml", tmp_path / "other", RunSettings(structure=molecule))


def test_an_ipi_that_dies_at_start_is_reported_at_once(tmp_path, tiny_model_file):
    broken = tmp_path / "broken.xml"
    broken.write_text((TEMPLATES / "equilibrate_nvt.xml").read_text().replace("mode='pile_l'", "mode='no-such-thermostat'"))
    (tmp_path / "nh3_phase_i.xyz").write_text((TEMPLATES / "nh3_phase_i.xyz").read_text())
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="i-PI exited"):
        run_simulation(broken, tmp_path / "run", model_driver(tiny_model_file), RunSettings(total_steps=10), progress=False)
    assert time.monotonic() - started < 50  # the connection wait is 60 s


def test_serve_without_ipi_times_out_with_a_clear_error(tiny_model_file, legato_in_process):
    result = legato_in_process("serve", tiny_model_file, "-s", TEMPLATES / "nh3_phase_i.xyz", "-u", "no-such-server", "--connect-wait", "1")
    assert result.returncode != 0
    assert "no i-PI server at /tmp/ipi_no-such-server" in result.stderr


@pytest.mark.parametrize(
    "positions, cell, match",
    [
        (np.full((16, 3), np.nan), np.eye(3) * 5, "NaN or inf positions"),
        (np.zeros((15, 3)), np.eye(3) * 5, "i-PI sent 15 atoms"),
        (np.random.default_rng(0).random((16, 3)), np.zeros((3, 3)), "singular cell"),
        (np.random.default_rng(0).random((16, 3)), np.eye(3) * 5000, "absurd"),
    ],
)
def test_bad_frames_are_refused(positions, cell, match):
    with pytest.raises(InputError, match=match):
        check_frame(positions, cell, 16)


def test_non_finite_model_output_is_never_sent(tiny_model_file):
    class Broken:
        def evaluate(self, symbols, positions, cells=None, pbc=None, dipoles=True):
            n = len(positions)
            return {"energy": np.full(n, np.nan), "forces": np.zeros((n, len(symbols), 3)), "virial": np.zeros((n, 3, 3)), "dipole": np.zeros((n, 3))}

    driver = LegatoDriver(potential=Broken(), symbols=["H", "H"], periodic=False)
    with pytest.raises(FloatingPointError):
        driver(np.eye(3) * 20, np.array([[0.0, 0, 0], [1.5, 0, 0]]))


@pytest.mark.slow  # i-PI and a second driver process
def test_two_driver_processes_share_the_beads(tmp_path, tiny_model_file, monkeypatch):
    """Started from a folder holding a `legato/` that is not the package (a repository root
    beside a non-editable install), with a relative run folder: the helper still serves."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "legato").mkdir()
    (tmp_path / "legato" / "__init__.py").write_text('raise ImportError("a decoy legato/ shadowed the package")\n')
    extra = LEGATO + ["serve", str(tiny_model_file), "--reconnect", "0"]
    settings = RunSettings(nbeads=4, total_steps=60, stride=1000)
    run_dir = run_simulation(TEMPLATES / "nh3_solid_pimd_nvt.xml", Path("two"), model_driver(tiny_model_file), settings, n_drivers=2, extra_driver_cmd=extra, progress=False)
    log = (run_dir / "ipi.log").read_text()
    assert log.count("Handshaking was successful") == 2
    served = int(log.split("served ")[1].split()[0])  # the helper's summary line
    assert 0 < served < 4 * 61
    np.testing.assert_array_equal(steps_in(run_dir / "simulation.out"), np.arange(0, 61, 10))


def test_drivers_never_join_another_runs_ipi_on_a_taken_port(tmp_path, tiny_model_file, monkeypatch):
    """If the chosen inet port is already held (another run's i-PI), this run's i-PI dies on bind:
    that is reported, and no driver talks to the stranger listening there."""
    import socket

    import legato.driver.run as run_module

    with socket.socket() as stranger:
        stranger.bind(("localhost", 0))
        stranger.listen()
        monkeypatch.setattr(run_module, "_free_port", lambda: stranger.getsockname()[1])
        extra = LEGATO + ["serve", str(tiny_model_file), "--reconnect", "0"]
        started = time.monotonic()
        with pytest.raises(RuntimeError, match="before it opened port"):
            run_simulation(TEMPLATES / "nh3_solid_pimd_nvt.xml", tmp_path / "run", model_driver(tiny_model_file), RunSettings(nbeads=2, total_steps=10), n_drivers=2, extra_driver_cmd=extra, progress=False)
        assert time.monotonic() - started < 60
        stranger.settimeout(0.1)
        with pytest.raises(socket.timeout):
            stranger.accept()  # nobody knocked


def test_atoms_per_call_reaches_the_model_and_zero_is_refused(tiny_model_file):
    structure = str(TEMPLATES / "nh3_phase_i.xyz")
    driver = LegatoDriver(model=str(tiny_model_file), structure=structure, atoms_per_call="16")  # as i-PI's -o passes it
    assert driver.potential.atoms_per_call == 16
    assert driver.potential.planner is None  # a forced choice is not planned over
    assert LegatoDriver(model=str(tiny_model_file), structure=structure).potential.planner is not None
    with pytest.raises(ValueError, match="atoms_per_call=0: give at least 1"):
        LegatoDriver(model=str(tiny_model_file), structure=structure, atoms_per_call=0)


@pytest.mark.slow  # torch.compile builds C++ kernels, ~1-2 min on a fresh machine
def test_compiled_driver_serves_the_eager_energies_forces_and_dipoles(tiny_model_file, compiled_variants):
    from legato import units
    from legato.fileio import read_structures

    structure = TEMPLATES / "nh3_phase_i.xyz"
    atoms = read_structures(structure)[0]  # with its cell
    rng = np.random.default_rng(3)
    positions = units.angstrom_to_bohr(atoms.positions + rng.normal(0, 0.05, (4, len(atoms), 3)))
    cells = np.repeat(units.angstrom_to_bohr(atoms.cell.array.T)[None], 4, axis=0)
    eager = LegatoDriver(model=str(tiny_model_file), structure=str(structure)).evaluate(cells, positions)
    assert not compiled_variants
    compiled = LegatoDriver(model=str(tiny_model_file), structure=str(structure), compile="true").evaluate(cells, positions)  # as i-PI's -o passes it
    assert compiled_variants  # the 4 beads went through torch.compile's model
    for (e_eager, f_eager, v_eager, x_eager), (e_comp, f_comp, v_comp, x_comp) in zip(eager, compiled):
        assert e_comp == pytest.approx(e_eager, rel=1e-10)
        np.testing.assert_allclose(f_comp, f_eager, rtol=1e-8, atol=1e-12)
        np.testing.assert_allclose(v_comp, v_eager, rtol=1e-8, atol=1e-12)
        np.testing.assert_allclose(json.loads(x_comp)["dipole"], json.loads(x_eager)["dipole"], rtol=1e-8, atol=1e-12)


@pytest.mark.slow  # a fresh process: the compiler is found when torch loads
def test_compiled_driver_without_a_cxx_compiler_is_refused_with_the_fix():
    result = subprocess.run(
        LEGATO + ["serve", "-s", str(TEMPLATES / "nh3_phase_i.xyz"), "-u", "unused_compile", "--compile", "--connect-wait", "1"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "CXX": "/nonexistent/g++"},
    )
    assert result.returncode != 0
    assert "torch.compile: the first step" not in result.stderr  # no promise of a compile that is refused
    assert "compile: no C++ compiler" in result.stderr and "run without compiling" in result.stderr


@pytest.mark.slow  # i-PI with a listening run, independent drivers, and a reference run, ~1 min
def test_drivers_started_elsewhere_join_and_leave_a_listening_run(tmp_path):
    """`legato run --listen HOST:PORT` with drivers started on their own, as on other nodes
    (`legato serve --inet HOST:PORT`): one is killed mid-run and another joins; the trajectory
    is the single-driver run's, step for step (an analytic potential: the same numbers
    whichever driver computes a bead)."""
    from legato.driver.run import _free_port

    common = ["nh3_solid_pimd_nvt.xml", "--potential", "harmonic:k=1", "--beads", "4", "--steps", "1500", "--stride", "50", "--seed", "3", "--no-progress"]
    alone = subprocess.run(LEGATO + ["run", *common, "-o", str(tmp_path / "alone")], capture_output=True, text=True, timeout=600)
    assert alone.returncode == 0, alone.stderr
    port = _free_port()
    shared = tmp_path / "shared"
    run = subprocess.Popen(LEGATO + ["run", *common, "-o", str(shared), "--listen", f"127.0.0.1:{port}", "--drivers", "2"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    serve = LEGATO + ["serve", "--potential", "harmonic:k=1", "-s", str(TEMPLATES / "nh3_phase_i.xyz"), "--inet", f"127.0.0.1:{port}", "--reconnect", "0"]
    log = shared / "ipi.log"
    handshakes = lambda: log.read_text(errors="replace").count("Handshaking was successful") if log.exists() else 0  # noqa: E731
    try:
        first = subprocess.Popen(serve, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while time.time() < deadline and handshakes() < 2 and run.poll() is None:
            time.sleep(0.1)
        assert handshakes() >= 2, "the independent driver never joined"
        time.sleep(0.5)
        first.send_signal(signal.SIGKILL)  # leaves, perhaps mid-batch
        first.wait()
        second = subprocess.Popen(serve, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _, err = run.communicate(timeout=600)
        assert run.returncode == 0, err
        second.wait(timeout=120)
    finally:
        for proc in [run, *(p for p in locals().values() if isinstance(p, subprocess.Popen))]:
            if proc.poll() is None:
                proc.kill()
    assert steps_in(shared / "simulation.out")[-1] == 1500
    for name in ["simulation.out", *(p.name for p in bead_files(tmp_path / "alone", "simulation", "pos"))]:
        assert (shared / name).read_text() == (tmp_path / "alone" / name).read_text(), name
