"""Physics of the Allegro + Wannier model: forces, symmetry, dipoles."""

import numpy as np
import torch
import pytest
from scipy.spatial.transform import Rotation

from legato.potential import ModelPotential
from legato.geometry import ammonia_phase_i
from legato.training.structures import rattled

from conftest import TINY_METADATA


@pytest.fixture(scope="module")
def potential(tiny_model):
    return ModelPotential(tiny_model, TINY_METADATA)


@pytest.fixture(scope="module")
def crystal():
    return rattled(ammonia_phase_i(), 1, stdev=0.05, seed=3)[0]


def evaluate(potential, atoms, positions=None, cell=None):
    positions = atoms.positions if positions is None else positions
    cell = atoms.cell.array if cell is None else cell
    r = potential.evaluate(atoms.get_chemical_symbols(), positions, cell[None], (True, True, True))
    return {k: v[0] for k, v in r.items()}


def test_forces_are_minus_energy_gradient(potential, crystal):
    base = evaluate(potential, crystal)
    h = 1e-4
    rng = np.random.default_rng(0)
    for atom, axis in zip(rng.choice(len(crystal), 6, replace=False), rng.integers(0, 3, 6)):
        plus, minus = crystal.positions.copy(), crystal.positions.copy()
        plus[atom, axis] += h
        minus[atom, axis] -= h
        numeric = -(evaluate(potential, crystal, plus)["energy"] - evaluate(potential, crystal, minus)["energy"]) / (2 * h)
        assert base["forces"][atom, axis] == pytest.approx(numeric, abs=1e-6, rel=1e-5)


def test_forces_and_wannier_rotate_with_the_structure(potential, crystal):
    rot = Rotation.from_euler("zyx", [0.3, -1.1, 2.0]).as_matrix()
    base = evaluate(potential, crystal)
    turned = evaluate(potential, crystal, crystal.positions @ rot.T, crystal.cell.array @ rot.T)
    assert turned["energy"] == pytest.approx(base["energy"], abs=1e-9)
    np.testing.assert_allclose(turned["forces"], base["forces"] @ rot.T, atol=1e-9)
    np.testing.assert_allclose(turned["wannier_disp"], base["wannier_disp"] @ rot.T, atol=1e-9)
    assert np.abs(base["wannier_disp"]).max() > 1e-4  # the check is not trivially 0 == 0


def test_translation_invariance(potential, crystal):
    base = evaluate(potential, crystal)
    moved = evaluate(potential, crystal, crystal.positions + np.array([0.37, -1.2, 2.9]))
    assert moved["energy"] == pytest.approx(base["energy"], abs=1e-9)
    np.testing.assert_allclose(moved["forces"], base["forces"], atol=1e-9)
    np.testing.assert_allclose(moved["wannier_disp"], base["wannier_disp"], atol=1e-9)


def test_permutation_equivariance(potential, crystal):
    symbols = np.array(crystal.get_chemical_symbols())
    perm = np.random.default_rng(1).permutation(len(crystal))
    base = evaluate(potential, crystal)
    r = potential.evaluate(list(symbols[perm]), crystal.positions[perm][None], crystal.cell.array[None])
    assert r["energy"][0] == pytest.approx(base["energy"], abs=1e-9)
    np.testing.assert_allclose(r["forces"][0], base["forces"][perm], atol=1e-9)
    np.testing.assert_allclose(r["wannier_disp"][0], base["wannier_disp"][perm], atol=1e-9)


def test_dipole_of_a_rotated_molecule_rotates(potential):
    from ase.build import molecule

    nh3 = molecule("NH3")
    rot = Rotation.from_euler("xyz", [1.0, 0.4, -0.7]).as_matrix()
    mu = potential.evaluate(nh3.get_chemical_symbols(), nh3.positions)["dipole"][0]
    mu_rot = potential.evaluate(nh3.get_chemical_symbols(), nh3.positions @ rot.T)["dipole"][0]
    np.testing.assert_allclose(mu_rot, rot @ mu, atol=1e-9)
    assert np.linalg.norm(mu) > 1e-3


@pytest.mark.parametrize("atoms_per_call", [16, 32, 10**6])  # 16-atom frames: 1, 2 (+1) or all 3 per model call
def test_batched_call_equals_single_calls(tiny_model, potential, crystal, atoms_per_call):
    frames = rattled(crystal, 3, stdev=0.03, seed=5)
    positions = np.stack([f.positions for f in frames])
    cells = np.stack([f.cell.array for f in frames])
    chunked = ModelPotential(tiny_model, TINY_METADATA, atoms_per_call=atoms_per_call)
    batched = chunked.evaluate(crystal.get_chemical_symbols(), positions, cells)
    assert {key: value.shape[0] for key, value in batched.items()} == dict.fromkeys(["energy", "forces", "wannier_disp", "virial", "dipole"], 3)
    for b, f in enumerate(frames):
        single = evaluate(potential, f)
        assert batched["energy"][b] == pytest.approx(single["energy"], abs=1e-9)
        np.testing.assert_allclose(batched["forces"][b], single["forces"], atol=1e-9)
        np.testing.assert_allclose(batched["virial"][b], single["virial"], atol=1e-9)
        np.testing.assert_allclose(batched["dipole"][b], single["dipole"], atol=1e-9)


def test_models_run_on_the_device_asked_for_and_refuse_one_torch_cannot_use(tiny_model, monkeypatch):
    import torch

    on_cpu = ModelPotential(tiny_model, TINY_METADATA, device="cpu")
    assert on_cpu.planner is not None and {p.device.type for p in on_cpu.model.parameters()} == {"cpu"}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="device 'cuda:0': torch .* sees no GPU here; use cpu"):
        ModelPotential(tiny_model, TINY_METADATA, device="cuda:0")
    with pytest.raises(ValueError, match="device 'gpu': use cpu, cuda or cuda:N"):
        ModelPotential(tiny_model, TINY_METADATA, device="gpu")


def test_unknown_species_is_refused(potential):
    from legato.modelfile import ModelFileError

    with pytest.raises(ModelFileError, match="unknown to the model"):
        potential.evaluate(["O", "H", "H"], np.eye(3))


@pytest.mark.parametrize("pbc", [(True, True, True), (True, False, False)])
def test_a_periodic_frame_without_a_cell_is_refused(potential, crystal, pbc):
    """A zero cell with periodic boundaries gave energies of 1e12 eV instead of an error."""
    with pytest.raises(ValueError, match="singular"):
        potential.evaluate(crystal.get_chemical_symbols(), crystal.positions, np.zeros((1, 3, 3)), pbc)
    flat = crystal.cell.array.copy()
    flat[2] = 0.0  # a slab cell: fine while only x and y are periodic
    assert np.isfinite(potential.evaluate(crystal.get_chemical_symbols(), crystal.positions, flat[None], (True, True, False))["energy"]).all()


def test_the_call_planner_keeps_the_fastest_chunk_after_timing_each_one():
    """A clock that makes 4-frame calls fastest: the planner must find 4, after one warm-up and
    `trials` timed calls of each candidate, and report the plan once."""
    from legato.callplan import CallPlanner, Way, candidate_chunks

    assert candidate_chunks(32, 16, 4096) == [1, 2, 4, 8, 16, 32]
    assert candidate_chunks(6, 16, 4096) == [1, 2, 4, 6]
    assert candidate_chunks(32, 128, 1024) == [1, 2, 4, 8]  # no call above the memory bound
    cost = {1: 9.0, 2: 5.0, 4: 2.0, 8: 3.0, 16: 4.0, 32: 6.0}  # seconds per request by frames per call
    now = [0.0]
    reports = []
    planner = CallPlanner(first_atoms=64, trials=2, report=reports.append, clock=lambda: now[0])

    def evaluate(chunk):
        now[0] += cost[chunk] * (10 if not used else 1)  # the warm-up call is slow, and must not count
        used.append(chunk)
        return chunk

    used = []
    assert planner.calls_to_plan(32, 16) == 1 + 2 * len(cost) and planner.calls_to_plan(1, 16) == 0
    for _ in range(1 + 2 * len(cost)):
        planner.timed(32, 16, evaluate)
    assert used[0] == 4 and sorted(used[1:]) == sorted(list(cost) * 2)  # warm-up at 64 atoms, then each twice
    assert planner.plans == {(32, 16): Way(4)} and len(reports) == 1 and "4 frame(s) per model call" in reports[0]
    assert planner.timed(32, 16, evaluate) == 4 and len(reports) == 1
    assert planner.chunk(1, 16) == 1 and planner.chunk(3, 2000) == 1  # nothing to plan: one candidate


def test_the_call_planner_times_thread_counts_too_and_runs_the_plan_with_its_threads():
    """Two threads are slower here (a busy second core): the planner must time each chunk at
    both counts, set the count before each call, keep one thread, and report it."""
    from legato.callplan import CallPlanner, Way

    cost = {(1, 2): 9.0, (2, 2): 8.0, (4, 2): 7.0, (1, 1): 4.0, (2, 1): 1.5, (4, 1): 3.0}
    now, threads, reports = [0.0], [2], []
    planner = CallPlanner(first_atoms=32, trials=2, threads=(2, 1), use_threads=lambda n: threads.__setitem__(0, n), report=reports.append, clock=lambda: now[0])
    calls = []

    def evaluate(chunk):
        calls.append((chunk, threads[0]))
        now[0] += cost[chunk, threads[0]]

    assert planner.calls_to_plan(4, 16) == 1 + 2 * len(cost)
    for _ in range(1 + 2 * len(cost)):
        planner.timed(4, 16, evaluate)
    assert calls[0] == (2, 2) and sorted(calls[1:]) == sorted(list(cost) * 2)
    assert planner.plans == {(4, 16): Way(2, 1)} and "2 frame(s) per model call, 1 thread(s)" in reports[0]
    threads[0] = 2  # another planner (the cheap model's, in the same process) set two
    planner.timed(4, 16, evaluate)
    assert calls[-1] == (2, 1) and len(reports) == 1
    with pytest.raises(ValueError, match="use_threads"):
        CallPlanner(threads=(2, 1))


def test_the_potential_plans_threads_unless_omp_num_threads_chose(monkeypatch):
    from legato.potential import planned_thread_counts

    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    assert planned_thread_counts(4) == ()
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert planned_thread_counts(4) == (4, 2, 1)
    assert planned_thread_counts(2) == (2, 1)
    assert planned_thread_counts(1) == ()


def test_a_potential_plans_its_threads_and_runs_with_the_planned_count(tiny_model, crystal, monkeypatch):
    from legato.callplan import candidate_ways

    frames = rattled(crystal, 3, stdev=0.03, seed=9)
    positions, cells = np.stack([f.positions for f in frames]), np.stack([f.cell.array for f in frames])
    symbols = crystal.get_chemical_symbols()
    reference = ModelPotential(tiny_model, TINY_METADATA, atoms_per_call=16).evaluate(symbols, positions, cells)
    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr("legato.potential.TORCH_THREADS", 2)  # a 2-core machine (the tests run on one thread)
    try:
        torch.set_num_threads(1)  # as an earlier plan in this process may have left it: the candidates stay 2 and 1
        planned = ModelPotential(tiny_model, TINY_METADATA)
        assert planned.planner.threads == (2, 1)
        for _ in range(1 + planned.planner.trials * len(candidate_ways(3, 16, planned.planner.max_atoms, (2, 1)))):
            result = planned.evaluate(symbols, positions, cells)
            np.testing.assert_allclose(result["forces"], reference["forces"], atol=1e-9)
        plan = planned.planner.plans[(3, 16)]
        torch.set_num_threads(3)  # as another planner in the process might leave it
        planned.evaluate(symbols, positions, cells)
        assert torch.get_num_threads() == plan.threads
    finally:
        torch.set_num_threads(before)


def test_a_planned_potential_gives_the_forced_results_and_a_forced_one_its_chunks(tiny_model, crystal):
    frames = rattled(crystal, 6, stdev=0.03, seed=8)
    positions = np.stack([f.positions for f in frames])
    cells = np.stack([f.cell.array for f in frames])
    symbols = crystal.get_chemical_symbols()
    forced = ModelPotential(tiny_model, TINY_METADATA, atoms_per_call=32)  # 2 frames of 16 atoms per call
    sizes = []
    forward = forced.model.forward
    forced.model.forward = lambda data: sizes.append(int(data["num_atoms"].shape[0])) or forward(data)
    reference = forced.evaluate(symbols, positions, cells)
    assert sizes == [2, 2, 2]
    planned = ModelPotential(tiny_model, TINY_METADATA)
    for _ in range(1 + planned.planner.trials * 4):  # warm-up, then candidates 1, 2, 4, 6 frames
        result = planned.evaluate(symbols, positions, cells)
        for key in ("energy", "forces", "virial", "wannier_disp", "dipole"):
            np.testing.assert_allclose(result[key], reference[key], atol=1e-9, err_msg=key)
    assert list(planned.planner.plans) == [(6, 16)] and planned.planner.plans[(6, 16)].frames in (1, 2, 4, 6)
