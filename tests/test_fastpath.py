"""Ring-polymer contraction + multiple time steps (`legato run --contract --mts`) through real i-PI.

The physics is checked on analytic molecules as the scheme is meant for a full model over
a short-range one: the full potential is Morse bonds plus soft wells that hold each atom
near its start (slow "intermolecular" forces, 150 cm^-1 for H); the cheap reference is the
Morse bonds alone, so the correction (full - cheap) varies slowly across the ring polymer.
Contracted + MTS runs must give the brute-force quantum kinetic energy and conserve energy
at least as well.

Contraction holds only where the correction is slow next to the contracted ring polymer's
own frequencies (4 beads at 100 K: 390 cm^-1 and up), as it should. One-off runs, 16 beads at
100 K, 4 contracted: with wells of 520 cm^-1 the kinetic energy came out 14% below brute
force, and with the harmonic approximation of the bonds as the reference (the correction then
being the bond's own anharmonicity) 9% above; MTS alone (4 inner steps, no contraction)
agreed with brute force within its error in both.
"""

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from ase import units as ase_units

from legato.driver.analytic import HarmonicPotential, MorsePotential
from legato.driver.pes import LegatoDriver
from legato.driver.run import FAST, RunSettings, check_fast_path, run_simulation, write_input
from legato.fileio import bead_files, read_extras, read_properties
from conftest import assert_one_line_error

TEMPLATES = Path(__file__).resolve().parent.parent / "ipi_inputs"
N_MOLECULES = 8
D, A, R0 = 2.0, 1.5, 0.74  # eV, 1/A, A: a soft H2-like Morse bond (2200 cm^-1, 15 fs period)
K_WELL = 0.04  # eV/A^2: each atom's soft well about its start (150 cm^-1 for H)
PAIRS = [(2 * m, 2 * m + 1) for m in range(N_MOLECULES)]


def molecules(tmp_path: Path) -> Path:
    """Eight diatomics 5 A apart in a 40 A box (no periodicity used), as an i-PI xyz."""
    rng = np.random.default_rng(3)
    lines = [f"{2 * N_MOLECULES}", "# CELL(abcABC): 40 40 40 90 90 90 cell{angstrom} positions{angstrom}"]
    for m in range(N_MOLECULES):
        centre = np.array([5.0 * (m % 4), 5.0 * (m // 4), 0.0]) + 10.0
        axis = rng.normal(size=3)
        axis /= np.linalg.norm(axis)
        for sign in (-1, 1):
            lines.append("H {:.5f} {:.5f} {:.5f}".format(*(centre + sign * 0.5 * R0 * axis)))
    path = tmp_path / "molecules.xyz"
    path.write_text("\n".join(lines) + "\n")
    return path


def template(tmp_path: Path, nve: bool = False) -> Path:
    text = (TEMPLATES / "nh3_solid_pimd_nvt.xml").read_text().replace("nh3_phase_i.xyz", "molecules.xyz")
    text = text.replace("<tau units='femtosecond'> 100 </tau>", "<tau units='femtosecond'> 25 </tau>")
    if nve:
        start, end = text.index("<dynamics mode='nvt'>"), text.index("</dynamics>")
        timestep = text[text.index("<timestep", start) : text.index("</timestep>", start) + len("</timestep>")]
        text = text[:start] + f"<dynamics mode='nve'> {timestep} " + text[end:]
    path = tmp_path / ("nve.xml" if nve else "nvt.xml")
    path.write_text(text)
    molecules(tmp_path)
    return path


class MoleculesInWells:
    """The full potential: Morse bonds (with fixed charges for a dipole) plus a soft well per atom."""

    def __init__(self, start):
        self.bonds = MorsePotential(PAIRS, D, A, R0, charges=[0.3, -0.3] * N_MOLECULES)
        self.wells = HarmonicPotential(K_WELL, centres=start)

    def evaluate(self, symbols, positions, cells=None, pbc=None, dipoles=True):
        bonds, wells = self.bonds.evaluate(symbols, positions), self.wells.evaluate(symbols, positions)
        return {key: bonds[key] + (wells[key] if key in ("energy", "forces", "virial") else 0) for key in bonds}


def start_positions(structure):
    from legato.fileio import read_structures

    return read_structures(structure)[0].positions


def full_driver(structure):
    return LegatoDriver(potential=MoleculesInWells(start_positions(structure)), symbols=["H"] * 2 * N_MOLECULES, periodic=False)


def bonds_driver(structure):
    """The cheap reference: the bonds alone, no extras (the full driver's dipoles must not be overwritten)."""
    return LegatoDriver(potential=MorsePotential(PAIRS, D, A, R0), symbols=["H"] * 2 * N_MOLECULES, periodic=False, dipoles=False)


def block_error(x, n_blocks=10):
    means = np.array([b.mean() for b in np.array_split(x, n_blocks)])
    return means.std(ddof=1) / np.sqrt(n_blocks)


def test_the_input_splits_forces_into_reference_and_contracted_correction(tmp_path):
    xml = template(tmp_path)
    (tmp_path / "run").mkdir()
    written, _ = write_input(xml, tmp_path / "run", RunSettings(nbeads=16, contract=4, mts=4))
    root = ET.parse(written).getroot()
    sockets = {f.get("name"): f for f in root.findall("ffsocket")}
    assert set(sockets) == {"legato", FAST} and sockets[FAST].find("address").text.strip().endswith(f"-{FAST}")
    assert int(sockets["legato"].find("batch_size").text) == 4 and int(sockets[FAST].find("batch_size").text) == 16
    forces = [(f.get("forcefield"), float(f.get("weight")), f.get("nbeads"), f.findtext("mts_weights", "").strip()) for f in root.findall("system/forces/force")]
    assert forces == [("legato", 1.0, "4", "[1, 0]"), (FAST, -1.0, "4", "[1, 0]"), (FAST, 1.0, None, "[0, 1]")]
    assert root.find("system/forces/force").findtext("interpolate_extras").strip() == "[dipole]"
    assert root.findtext("system/motion/dynamics/nmts").strip() == "[1, 4]"
    # contraction alone: no MTS levels
    (tmp_path / "rpc").mkdir()
    rpc = ET.parse(write_input(xml, tmp_path / "rpc", RunSettings(nbeads=16, contract=8))[0]).getroot()
    assert [f.find("mts_weights") for f in rpc.findall("system/forces/force")] == [None] * 3 and rpc.find("system/motion/dynamics/nmts") is None


def test_the_demo_runs_the_same_simulated_time_on_the_fast_path():
    """`legato demo`: the full model every 2 fs on 4 of 32 beads, the cheap one every 0.5 fs,
    frames every 2 fs, as many ps as without the fast path; classical MD: MTS only."""
    from legato.driver.demo import DEMO, run_settings

    plan = DEMO["quick"]
    fast, brute = run_settings(plan, "pimd", 32, True), run_settings(plan, "pimd", 32, False)
    assert (fast.contract, fast.mts, fast.timestep, fast.stride) == (4, 4, 2.0, 1) and fast.fast_path
    assert (brute.contract, brute.mts, brute.timestep, brute.stride) == (None, None, 0.5, 4) and not brute.fast_path
    assert fast.total_steps * fast.timestep == brute.total_steps * brute.timestep == plan["pimd"] * 1000
    classical = run_settings(plan, "classical", 1, True)
    assert (classical.contract, classical.mts, classical.nbeads) == (None, 4, 1) and classical.fast_path
    check_fast_path(fast.nbeads, fast.contract, fast.mts)


@pytest.mark.parametrize(
    "nbeads, contract, mts, message",
    [(8, 16, None, "--contract 16: give 1 to 8 beads"), (16, 6, None, "--contract 6: give a divisor of the 16 beads (e.g. 4)"), (8, None, 0, "--mts 0: give at least 1")],
)
def test_contractions_i_pi_cannot_run_sensibly_are_refused(nbeads, contract, mts, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_fast_path(nbeads, contract, mts)


@pytest.mark.slow  # three i-PI runs of 16 beads, ~1 min
def test_contracted_mts_pimd_gives_the_brute_force_quantum_kinetic_energy(tmp_path):
    temperature, nbeads = 100.0, 16
    xml = template(tmp_path)
    kinetic, errors = {}, {}
    runs = {
        "brute force": (RunSettings(nbeads=nbeads, temperature=temperature, total_steps=3000, timestep=0.5, seed=11, stride=20), None),
        "contract 4, mts 4": (RunSettings(nbeads=nbeads, temperature=temperature, total_steps=750, timestep=2.0, seed=12, stride=5, contract=4, mts=4), bonds_driver),
    }
    for name, (settings, fast) in runs.items():
        run = tmp_path / name.replace(" ", "_").replace(",", "")
        run_simulation(xml, run, full_driver, settings, progress=False, fast_driver_factory=fast)
        ke = read_properties(run / "simulation.out")["kinetic_cv"]
        ke = ke[len(ke) // 5 :] / (3 * 2 * N_MOLECULES)
        kinetic[name], errors[name] = ke.mean(), block_error(ke)
    brute, fast = kinetic["brute force"], kinetic["contract 4, mts 4"]
    kT = ase_units.kB * temperature
    assert brute > 2 * 0.5 * kT  # deep quantum: zero-point motion of the bond, not kT/2
    assert abs(fast - brute) < 2 * np.hypot(errors["brute force"], errors["contract 4, mts 4"]), (kinetic, errors)
    # the dipoles come from the full model on 4 beads, interpolated by i-PI onto all 16
    _, dipoles = read_extras(bead_files(tmp_path / "contract_4_mts_4", "simulation", "dip")[0])
    assert dipoles.shape[-1] == 3 and np.abs(dipoles).max() > 0
    # without the wells (the cheap reference alone) the answer differs: the correction matters
    bonds_only = tmp_path / "bonds_only"
    bonds_alone = lambda structure: LegatoDriver(potential=MorsePotential(PAIRS, D, A, R0), symbols=["H"] * 2 * N_MOLECULES, periodic=False)  # noqa: E731
    run_simulation(xml, bonds_only, bonds_alone, RunSettings(nbeads=nbeads, temperature=temperature, total_steps=3000, timestep=0.5, seed=11, stride=20), progress=False)
    ke = read_properties(bonds_only / "simulation.out")["kinetic_cv"]
    ke = ke[len(ke) // 5 :] / (3 * 2 * N_MOLECULES)
    assert abs(ke.mean() - brute) > 2 * np.hypot(errors["brute force"], block_error(ke)), (ke.mean(), brute)


@pytest.mark.slow  # two NVE i-PI runs of 8 beads, ~30 s
def test_contracted_mts_nve_drifts_no_more_than_brute_force_at_the_outer_step(tmp_path):
    xml = template(tmp_path, nve=True)
    drift = {}
    for name, settings, fast in (
        ("brute", RunSettings(nbeads=8, temperature=100.0, total_steps=400, timestep=2.0, seed=5, stride=1000), None),
        ("fast", RunSettings(nbeads=8, temperature=100.0, total_steps=400, timestep=2.0, seed=5, stride=1000, contract=2, mts=4), bonds_driver),
    ):
        run_simulation(xml, tmp_path / name, full_driver, settings, progress=False, fast_driver_factory=fast)
        props = read_properties(tmp_path / name / "simulation.out")
        conserved, kinetic = props["conserved"], props["kinetic_cv"]
        drift[name] = np.abs(conserved - conserved[0]).max() / np.abs(kinetic).mean()
    assert drift["fast"] <= drift["brute"], drift
    assert drift["fast"] < 0.05, drift


@pytest.mark.parametrize(
    "args, message",
    [
        (["--beads", "8", "--contract", "3"], "--contract 3: give a divisor of the 8 beads (e.g. 2)"),
        (["--beads", "4", "--contract", "8"], "--contract 8: give 1 to 4 beads"),
        (["--mts", "0"], "--mts 0: give at least 1"),
        (["--contract", "2", "--fast-model", "README.md"], "corrupt or not a legato model file"),
    ],
)
def test_bad_fast_path_settings_fail_in_one_line_before_the_run_folder_is_made(tmp_path, args, message, legato_in_process):
    result = legato_in_process("run", "nh3_solid_pimd_nvt.xml", "-o", tmp_path / "run", *args)
    assert_one_line_error(result, message)
    assert not (tmp_path / "run").exists()


def test_legato_run_contracts_with_a_cheap_model_and_writes_interpolated_dipoles(tmp_path, tiny_model_file, legato_in_process):
    """`legato run --contract --mts --fast-model` end to end on the tiny model (as its own cheap reference)."""
    run = tmp_path / "run"
    result = legato_in_process(
        "run", "nh3_solid_trpmd.xml", "-o", run, "-m", tiny_model_file, "--fast-model", tiny_model_file,
        "--beads", "4", "--contract", "2", "--mts", "2", "--steps", "6", "--stride", "2", "--no-progress",
    )
    assert result.returncode == 0, result.stderr
    root = ET.parse(run / "input.xml").getroot()
    assert [f.get("nbeads") for f in root.findall("system/forces/force")] == ["2", "2", None]
    for dip in bead_files(run, "simulation", "dip"):  # every one of the 4 beads has the full model's dipole
        steps, dipoles = read_extras(dip)
        assert len(steps) == 4 and np.isfinite(dipoles).all() and np.abs(dipoles).max() > 0


FAST_MODEL = Path(__file__).resolve().parent.parent / "models" / "fast.legato.pt"


def harmonic_wavenumbers(model_file: Path, molecule_name: str = "NH3") -> np.ndarray:
    """Harmonic wavenumbers (cm^-1) of an isolated molecule relaxed with the model, the 3N - 6 largest."""
    from ase.build import molecule
    from ase.optimize import BFGS
    from ase.vibrations import VibrationsData

    from legato.potential import LegatoCalculator

    atoms = molecule(molecule_name)
    atoms.calc = LegatoCalculator(model_file)
    BFGS(atoms, logfile=None).run(fmax=1e-4, steps=500)
    delta, n = 0.005, len(atoms)
    hessian = np.zeros((3 * n, 3 * n))
    for i in range(3 * n):  # central differences of the forces, as ase.vibrations does
        moved = []
        for sign in (1, -1):
            displaced = atoms.copy()
            displaced.calc = atoms.calc
            displaced.positions.reshape(-1)[i] += sign * delta
            moved.append(displaced.get_forces().reshape(-1))
        hessian[i] = -(moved[0] - moved[1]) / (2 * delta)
    hessian = 0.5 * (hessian + hessian.T)
    energies = VibrationsData.from_2d(atoms, hessian).get_energies()
    return np.sort(np.abs(energies))[6:] / ase_units.invcm


@pytest.mark.xfail(
    strict=True,
    reason="models/fast.legato.pt (distilled, r_max 3 A, 2026-12-07): bends and stretches within 1.5%, but its umbrella"
    " mode is 3.9% stiffer (1018 vs 980 cm^-1; the first cheap model, r_max 2 A on DFT labels, was 18.6% stiffer):"
    " one short-range fit of lone molecules and of the solid, whose umbrella the hydrogen bonds stiffen",
)
def test_the_shipped_cheap_model_carries_the_intramolecular_vibrations_of_the_full_one():
    """The cheap reference acts alone at the inner time step: its isolated-NH3 harmonic
    wavenumbers must be within 3% of the full model's (the bend, umbrella and stretches)."""
    full = harmonic_wavenumbers(Path(__file__).resolve().parent.parent / "models" / "sam.legato.pt")
    fast = harmonic_wavenumbers(FAST_MODEL)
    assert len(full) == len(fast) == 6 and full.min() > 500  # a bound molecule: umbrella, bends, stretches
    np.testing.assert_allclose(fast, full, rtol=0.03)


def test_a_stale_cheap_socket_of_a_killed_run_does_not_stop_the_next(tmp_path):
    """A killed run leaves its unix socket files behind; i-PI refuses to open a socket whose
    file exists, so `legato run` removes both (the full model's and the cheap one's) first."""
    from legato.driver.run import fast_socket_name

    xml = template(tmp_path)
    run = tmp_path / "run"
    stale = Path(f"/tmp/ipi_{fast_socket_name(run)}")
    stale.write_text("")
    try:
        settings = RunSettings(nbeads=4, temperature=100.0, total_steps=10, timestep=1.0, stride=5, contract=2, mts=2)
        run_simulation(xml, run, full_driver, settings, progress=False, fast_driver_factory=bonds_driver)
    finally:
        stale.unlink(missing_ok=True)
    assert (run / "RESTART").exists()
