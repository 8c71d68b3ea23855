"""Failure detection, the beta fit and sharpness, on cases with known answers."""

import numpy as np
import pytest
import torch
from ase.calculators.calculator import Calculator, all_changes

from legato.analysis.orientation import orientation_run
from legato.analysis.robustness import FailureCriteria, TrajectoryResult, bootstrap_beta, check_failure, failure_times, fit_beta, run_trajectory
from legato.analysis.sharpness import sharpness
from legato.geometry import ammonia_phase_i


def test_detector_fires_on_heating_collapse_and_nan_but_not_on_fluctuations_or_collisions():
    c = FailureCriteria(temperature=300.0, window=10, contact_checks=4)
    rng = np.random.default_rng(0)
    normal = list(300 + 60 * rng.normal(size=100))  # small-cell fluctuations, no drift
    apart = [0.95] * 100
    assert check_failure(normal, apart, True, c) is None
    assert "temperature" in check_failure(normal + [600.0] * 10, apart, True, c)
    assert "non-finite" in check_failure(normal, apart, False, c)
    collision = apart + [0.45, 0.9, 0.95]  # a hot collision passes the floor for one check
    assert check_failure(normal, collision, True, c) is None
    collapse = apart + [0.45, 0.3, 0.2, 0.15]  # a pair stuck in a spurious well
    assert "apart for 4 checks" in check_failure(normal, collapse, True, c)
    assert "apart" in check_failure(normal, [0.3], True, FailureCriteria(temperature=300.0, contact_checks=1))


class Harmonic:
    """ASE calculator: atoms tied to their start positions by springs (stable)."""

    def __init__(self, origin, k):
        from ase.calculators.calculator import Calculator

        self.calc_class = Calculator
        self.origin, self.k = origin.copy(), k

    def make(self):
        from ase.calculators.calculator import Calculator, all_changes

        origin, k = self.origin, self.k

        class _Calc(Calculator):
            implemented_properties = ["energy", "forces"]

            def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
                super().calculate(atoms, properties, system_changes)
                d = self.atoms.positions - origin
                self.results = {"energy": 0.5 * k * (d**2).sum(), "forces": -k * d}

        return _Calc()


def test_stable_harmonic_md_survives_and_a_repulsive_blow_up_fails():
    from ase.calculators.calculator import Calculator, all_changes

    from legato.geometry import ammonia_phase_i

    atoms = ammonia_phase_i()
    stable = run_trajectory(atoms, Harmonic(atoms.positions, 5.0).make(), FailureCriteria(temperature=200.0), max_steps=300, seed=1)
    assert not stable.failed and stable.steps == 300

    class Exploding(Calculator):
        implemented_properties = ["energy", "forces"]

        def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
            super().calculate(atoms, properties, system_changes)
            d = self.atoms.positions - self.atoms.positions.mean(axis=0)
            self.results = {"energy": -0.5 * (d**2).sum(), "forces": 1.0 * d}  # inverted well: runaway heating

    blown = run_trajectory(atoms, Exploding(), FailureCriteria(temperature=200.0), max_steps=2000, seed=1)
    assert blown.failed and blown.steps < 2000


def test_the_legato_protocol_runs_deuterium_with_nose_hoover_and_fails_outside_100_to_300_k():
    """Allegro-Legato's preset: H weighs 2.014 u, 2.5 fs steps, Nose-Hoover NVT at 200 K,
    a failure at the first check (every 10 steps) with T outside [100, 300] K after 1 ps."""
    from ase.calculators.calculator import Calculator, all_changes

    from legato.analysis.failure_study import PROTOCOLS
    from legato.analysis.robustness import temperature_tolerance

    preset = PROTOCOLS["legato"]
    criteria = FailureCriteria(temperature=preset.temperature, **preset.criteria)
    assert preset.temperature == 200.0 and temperature_tolerance(criteria, 32) == 100.0  # a fixed band, also for 32 atoms
    assert check_failure([299.0], [0.1], True, criteria, n_atoms=32) is None  # no contact criterion
    assert "temperature" in check_failure([301.0], [1.0], True, criteria, n_atoms=32)
    assert "temperature" in check_failure([99.0], [1.0], True, criteria, n_atoms=32)

    masses = []

    class Heating(Calculator):  # an inverted well: runaway heating
        implemented_properties = ["energy", "forces"]

        def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
            super().calculate(atoms, properties, system_changes)
            masses.append(self.atoms.get_masses().copy())
            d = self.atoms.positions - self.atoms.positions.mean(axis=0)
            self.results = {"energy": -0.5 * (d**2).sum(), "forces": 1.0 * d}

    atoms = ammonia_phase_i()
    blown = run_trajectory(atoms, Heating(), criteria, max_steps=5000, seed=1, dynamics=preset.dynamics)
    assert blown.failed and blown.steps % 10 == 0  # its thermostat overflows (non-finite) as the atoms fly apart
    hydrogen = atoms.numbers == 1
    assert np.allclose(masses[-1][hydrogen], 2.014) and np.allclose(masses[-1][~hydrogen], atoms.get_masses()[~hydrogen])
    assert np.allclose(atoms.get_masses()[hydrogen], 1.008, atol=1e-3)  # the caller's atoms keep theirs
    from ase.build import bulk
    from ase.calculators.emt import EMT

    # a solid the thermostat can equilibrate (a Nose-Hoover chain does not, on independent
    # harmonic springs): 108 Cu atoms, instantaneous T within +-16 K (1 sigma) at 200 K
    copper = bulk("Cu", cubic=True).repeat((3, 3, 3))
    stable = run_trajectory(copper, EMT(), criteria, max_steps=600, seed=1, dynamics=preset.dynamics)
    assert not stable.failed and stable.steps == 600


def test_beta_fit_recovers_a_known_exponent():
    rng = np.random.default_rng(1)
    beta_true, a_true = 0.8, 2.0e5
    results = []
    for n in (16, 32, 64, 128, 256):
        mean = a_true * n**-beta_true
        for seed in range(300):
            t = rng.exponential(mean)
            results.append(TrajectoryResult(n, seed, int(min(t, 20000)) + 1, t < 20000, ""))
    beta, lo, hi = bootstrap_beta(results, n_boot=300)
    assert lo < beta_true < hi
    assert beta == pytest.approx(beta_true, abs=0.05)
    two_sizes = [TrajectoryResult(16, 0, 100, True, ""), TrajectoryResult(32, 0, 50, True, "")]
    assert fit_beta(two_sizes)[0] == pytest.approx(1.0, abs=1e-6)  # rates 1/100 and 1/50
    assert np.isnan(fit_beta([TrajectoryResult(16, 0, 100, False, ""), TrajectoryResult(32, 0, 50, True, "")])[0])  # unbounded
    assert failure_times([TrajectoryResult(16, 0, 100, False, "")])[16] == float("inf")


def test_beta_fit_counts_sizes_where_nothing_failed():
    """No failure in 1e5 steps at N = 16 is evidence of a steep size dependence: the
    likelihood over all sizes puts beta above the 1.0 of a line through 32 and 64 alone,
    at the maximum of the Poisson log-likelihood (checked on a grid)."""
    results = [TrajectoryResult(16, s, 10000, False, "") for s in range(10)]
    results += [TrajectoryResult(32, s, 10000, s < 2, "") for s in range(10)]
    results += [TrajectoryResult(64, s, 10000, s < 4, "") for s in range(10)]
    beta, a = fit_beta(results)
    n, k, e = np.array([16, 32, 64.0]), np.array([0, 2, 4.0]), np.full(3, 1e5)
    grid = np.linspace(0.5, 4, 3501)
    loglik = [k @ np.log(n**b / (n**b @ e / k.sum())) - (n**b / (n**b @ e / k.sum())) @ e for b in grid]
    assert beta > 1.2 and beta == pytest.approx(grid[int(np.argmax(loglik))], abs=2e-3)
    assert a == pytest.approx((n**beta @ e) / k.sum())


def test_lower_bound_without_failures_is_the_poisson_limit():
    """Zero failures in E steps: at 95% the rate is below ln(20)/E, so t_failure > E/ln(20);
    simulated exponential lifetimes with that mean survive E steps in 5% of studies."""
    from legato.analysis.robustness import failure_time_lower_bound

    survivors = [TrajectoryResult(32, s, 3000, False, "survived") for s in range(4)] + [TrajectoryResult(16, 0, 10, True, "")]
    bound = failure_time_lower_bound(survivors, 32)
    assert bound == pytest.approx(12000 / np.log(20))
    lifetimes = np.random.default_rng(3).exponential(bound, size=(20000, 4))  # 4 trajectories of 3000 steps each
    assert np.mean(np.all(lifetimes > 3000, axis=1)) == pytest.approx(0.05, abs=0.005)


def test_sharpness_of_a_quadratic_is_half_lambda_max_rho_squared():
    h = torch.diag(torch.tensor([0.5, 3.0, 1.0, 0.2], dtype=torch.float64))
    w = torch.nn.Parameter(torch.zeros(4, dtype=torch.float64))
    rho = 0.1
    value = sharpness(lambda: 0.5 * w @ h @ w, [w], rho, restarts=3, steps=30)
    assert value == pytest.approx(0.5 * 3.0 * rho**2, rel=1e-3)
    assert torch.all(w == 0)  # weights restored


def test_temperature_tolerance_covers_small_cell_fluctuations_only():
    from legato.analysis.robustness import temperature_tolerance

    c = FailureCriteria(temperature=400.0)
    assert temperature_tolerance(c, 16) == pytest.approx(4 * 400 * np.sqrt(2 / 48))
    assert temperature_tolerance(c, 10000) == 100.0
    fluctuating = list(400 + 82 * np.random.default_rng(2).normal(size=40))  # sigma of 16 atoms at 400 K
    assert check_failure(fluctuating, [0.95], True, c, n_atoms=16) is None
    assert "temperature" in check_failure([1200.0] * 40, [0.95], True, c, n_atoms=16)


def test_sharpness_of_a_force_model_is_positive_and_restores_weights(trained_model_file, synthetic_dataset):
    import ase.io

    from legato.modelfile import load_model
    from legato.analysis.sharpness import frames_to_batch
    from legato.analysis.sharpness import model_loss

    net, meta = load_model(trained_model_file)
    net.train()
    batch = frames_to_batch(ase.io.read(synthetic_dataset, ":4"), meta["type_names"], meta["r_max"])
    loss = model_loss(net, batch, {"per_atom_energy": 1.0, "forces": 10.0, "wannier_disp": 100.0})
    before = [p.detach().clone() for p in net.parameters()]
    small, large = (sharpness(loss, list(net.parameters()), rho, restarts=1, steps=3) for rho in (0.01, 0.1))
    assert 0 < small < large
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))



def test_average_sharpness_of_a_quadratic_is_half_sigma_squared_trace():
    """E[L(w + sigma z)] - L(w) = sigma^2 tr(H) / 2 for L = w.H.w / 2 at its minimum."""
    from legato.analysis.sharpness import average_sharpness

    h = torch.diag(torch.tensor([4.0, 1.0, 0.25], dtype=torch.float64))
    w = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
    sigma = 0.1
    mean, error = average_sharpness(lambda: 0.5 * w @ h @ w, [w], sigma, samples=4000)
    expected = 0.5 * sigma**2 * float(torch.trace(h))
    assert abs(mean - expected) < 3 * error and error < 0.05 * expected
    assert torch.equal(w.detach(), torch.zeros(3, dtype=torch.float64))  # restored


def test_sharpness_uses_the_loss_the_model_was_trained_on(trained_model_file, synthetic_dataset, tmp_path):
    """The loss weights come from the model file (`legato train` stores its config's); other
    weights give another value, and a file without them is refused in one line."""
    import ase.io

    from legato.analysis.sharpness import average_sharpness, frames_to_batch, model_loss, sharpness_of_file
    from legato.modelfile import load_model, read_model_file, save_model_file

    meta = read_model_file(trained_model_file)["metadata"]
    assert meta["loss_weights"] == {"per_atom_energy": 1.0, "forces": 10.0, "wannier_disp": 100.0}  # tiny_train_config's
    data = tmp_path / "frames.extxyz"
    ase.io.write(data, ase.io.read(synthetic_dataset, ":4"))
    result = sharpness_of_file(trained_model_file, data, 0.05, restarts=1, steps=2, samples=5)
    assert result["loss_weights"] == meta["loss_weights"]
    net, _ = load_model(trained_model_file)
    net.train()
    loss = model_loss(net, frames_to_batch(ase.io.read(data, ":"), meta["type_names"], meta["r_max"]), meta["loss_weights"])
    params = [p for p in net.parameters() if p.requires_grad]
    assert result["average_case"] == pytest.approx(average_sharpness(loss, params, 0.05, samples=5), rel=1e-9)
    energy_only = sharpness_of_file(trained_model_file, data, 0.05, restarts=1, steps=2, samples=5, loss_weights={"per_atom_energy": 1.0})
    assert energy_only["loss_weights"] == {"per_atom_energy": 1.0, "forces": 0.0, "wannier_disp": 0.0}
    assert energy_only["average_case"][0] != pytest.approx(result["average_case"][0], rel=1e-3)
    content = read_model_file(trained_model_file)
    old = {k: v for k, v in content["metadata"].items() if k not in ("loss_weights", "versions", "created")}
    net, _ = load_model(trained_model_file)
    old_file = save_model_file(tmp_path / "old.legato.pt", net, content["model_config"], old)
    with pytest.raises(ValueError, match="records no training loss weights.*--loss-weights per_atom_energy="):
        sharpness_of_file(old_file, data, 0.05, restarts=1, steps=1, samples=1)


class _NoForces(Calculator):
    """Free atoms: every bond falls apart and turns at random."""

    implemented_properties = ["energy", "forces"]

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        self.results = {"energy": 0.0, "forces": np.zeros((len(self.atoms), 3))}


def test_orientation_check_fires_when_bonds_turn_freely():
    free = orientation_run(ammonia_phase_i(5.13), _NoForces(), temperature=2000.0, steps=400, seed=0, timestep_fs=2.0)
    assert free.mean_angle_deg > 30.0 and free.turned_fraction > 0.3


class _TwoSites(Calculator):
    """Each atom in a harmonic well at site ``a`` or, ``offset`` eV higher, at site ``b``."""

    implemented_properties = ["energy", "forces"]

    def __init__(self, a, b, offset, k=5.0):
        super().__init__()
        self.sites, self.offset, self.k = (a, b), offset, k

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        (a, b), x = self.sites, self.atoms.positions
        da, db = x - a, x - b
        near_b = (db**2).sum(1) < (da**2).sum(1)
        d = np.where(near_b[:, None], db, da)
        energy = 0.5 * self.k * (d**2).sum() + self.offset * near_b.sum()
        self.results = {"energy": energy, "forces": -self.k * d}


def test_quench_finds_the_other_minimum_and_its_energy_but_not_thermal_motion():
    from legato.analysis.quench import quench

    crystal = ammonia_phase_i(5.13)
    a = crystal.positions.copy()
    b = a.copy()
    b[0] += [0.6, 0.0, 0.0]  # one N (heavy) and one H have a second site
    b[5] += [0.0, 0.5, 0.0]
    calc = _TwoSites(a, b, offset=0.02)
    thermal = crystal.copy()
    thermal.positions += np.random.default_rng(0).normal(scale=0.05, size=a.shape)
    same = quench(crystal, thermal, calc)
    assert same.heavy_shift_A < 1e-2 and abs(same.energy_change_meV) < 1e-3
    moved = thermal.copy()
    moved.positions[[0, 5]] = b[[0, 5]] + 0.05
    other = quench(crystal, moved, calc)
    assert other.energy_change_meV == pytest.approx(40.0, abs=1e-2)  # two atoms at their higher site
    shifts = b - a
    shifts -= shifts.mean(axis=0)
    assert other.heavy_shift_A == pytest.approx(np.linalg.norm(shifts[0]), abs=1e-2)  # the H move alone would not count


def test_heavy_atom_shift_ignores_drift_hydrogens_and_cell_images():
    from legato.analysis.quench import heavy_atom_shift

    crystal = ammonia_phase_i(5.13)
    moved = crystal.copy()
    moved.positions += [1.0, 2.0, -0.5]  # the whole cell drifts
    moved.positions[8] += [0.7, 0.0, 0.0]  # a hydrogen
    moved.wrap()  # some atoms cross the cell faces
    assert heavy_atom_shift(crystal, moved) == pytest.approx(0.7 / 16, abs=1e-9)  # only the drift correction of the H move
    moved.positions[1] += [0.0, 0.0, 0.4]
    assert heavy_atom_shift(crystal, moved) == pytest.approx(np.linalg.norm([0.7 / 16, 0.0, 0.4 - 0.4 / 16]), abs=1e-9)
