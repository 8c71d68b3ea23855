"""Time to failure of MD with a model, and the fidelity-scaling fit t_failure = A N^-beta.

A trajectory fails at the first check where the temperature (averaged over the
last ``window`` checks, judged only after ``grace_steps`` of thermostat
equilibration) is off the target by more than ``max_temperature_deviation`` K or
4 standard deviations of the instantaneous temperature of N atoms, 4 T sqrt(2/3N),
whichever is larger (small cells must not trip on equilibrium fluctuations:
330 K for 16 atoms at 400 K, 100 K from ~1000 atoms), the closest approach stays below
``min_distance`` A for ``contact_checks`` consecutive checks, or energies/forces are
not finite. A close contact must persist because at the temperatures that provoke
failures a hot collision briefly passes the floor and bounces back within one check
(atoms at 0.42-0.56 A for at most one check, 2.5 fs, in 16-atom runs at 6000-8000 K),
while an atom pair that has fallen into a spurious well of the model stays there
(0.14 A for 45 fs in one such run; two N atoms at 0.26-0.50 A in another). Runs that
reach ``max_steps`` are right-censored. Per size N the failure rate is the
censored exponential maximum-likelihood estimate (failures / steps simulated),
t_failure(N) = 1 / rate. beta comes from the same likelihood over all sizes at once
(rate = N^beta / A), so sizes where nothing failed count too (a line through the
finite ln t_failure would drop them), with a bootstrap over trajectories for its interval.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from legato.geometry import closest_approach


@dataclass
class FailureCriteria:
    temperature: float  # thermostat target, K
    max_temperature_deviation: float = 100.0  # K
    min_distance: float = 0.6  # A
    contact_checks: int = 4  # consecutive checks (check_every steps apart) below min_distance
    window: int = 20  # checks in the running temperature average
    grace_steps: int = 300  # the thermostat equilibrates the start before T is judged
    #: the temperature band widens to this many standard deviations of the instantaneous
    #: temperature of N atoms where that is wider (0: the fixed band only)
    fluctuation_sigmas: float = 4.0


@dataclass
class Dynamics:
    """How a failure trajectory moves: ``thermostat`` ``langevin`` (``friction`` 1/fs) or
    ``nose-hoover`` (a Nose-Hoover chain of damping time ``tdamp_fs``), ``timestep_fs``,
    checked every ``check_every`` steps; ``hydrogen_mass`` (u) replaces H's where set
    (2.014: deuterium)."""

    timestep_fs: float = 0.5
    thermostat: str = "langevin"
    friction: float = 0.01  # 1/fs
    tdamp_fs: float = 100.0
    check_every: int = 5
    hydrogen_mass: float | None = None


@dataclass
class TrajectoryResult:
    n_atoms: int
    seed: int
    steps: int  # steps run until failure or the end
    failed: bool
    reason: str


def temperature_tolerance(criteria: FailureCriteria, n_atoms: int) -> float:
    """Allowed |<T> - T_target| (K): the fixed limit or 4 sigma of the instantaneous T."""
    return max(criteria.max_temperature_deviation, criteria.fluctuation_sigmas * criteria.temperature * np.sqrt(2 / (3 * n_atoms)))


def check_failure(temperatures, distances, finite: bool, criteria: FailureCriteria, judge_temperature: bool = True, n_atoms: int = 10**6) -> str | None:
    """Reason for failure at this check, or None. ``temperatures`` (K) and ``distances``
    (closest approach, A): the values at the checks so far, latest last."""
    if not finite:
        return "non-finite energy or forces"
    recent = distances[-criteria.contact_checks :]
    if len(recent) == criteria.contact_checks and max(recent) < criteria.min_distance:
        return f"atoms {recent[-1]:.2f} A apart for {criteria.contact_checks} checks"
    mean_t = float(np.mean(temperatures[-criteria.window :]))
    if judge_temperature and abs(mean_t - criteria.temperature) > temperature_tolerance(criteria, n_atoms):
        return f"temperature {mean_t:.0f} K vs target {criteria.temperature:.0f} K"
    return None


def langevin(atoms, calculator, temperature: float, seed: int, timestep_fs: float = 0.5, friction: float = 0.01):
    """ASE Langevin dynamics (classical) on a copy of ``atoms`` with Maxwell-Boltzmann
    velocities at ``temperature`` K; ``friction`` in 1/fs. Returns the integrator
    (its ``.atoms`` is the copy)."""
    from ase import units as u
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

    atoms = atoms.copy()
    atoms.calc = calculator
    rng = np.random.default_rng(seed)
    MaxwellBoltzmannDistribution(atoms, temperature_K=temperature, rng=rng)
    return Langevin(atoms, timestep_fs * u.fs, temperature_K=temperature, friction=friction / u.fs, rng=rng, fixcm=False)


def nose_hoover(atoms, calculator, temperature: float, seed: int, timestep_fs: float, tdamp_fs: float):
    """ASE's Nose-Hoover chain NVT on a copy of ``atoms`` with Maxwell-Boltzmann velocities
    at ``temperature`` K (as LAMMPS ``fix nvt`` in Allegro-Legato's failure runs)."""
    from ase import units as u
    from ase.md.nose_hoover_chain import NoseHooverChainNVT
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary

    atoms = atoms.copy()
    atoms.calc = calculator
    MaxwellBoltzmannDistribution(atoms, temperature_K=temperature, rng=np.random.default_rng(seed))
    Stationary(atoms)
    return NoseHooverChainNVT(atoms, timestep_fs * u.fs, temperature_K=temperature, tdamp=tdamp_fs * u.fs)


def run_trajectory(atoms, calculator, criteria: FailureCriteria, max_steps: int, seed: int, dynamics: Dynamics | None = None) -> TrajectoryResult:
    """MD (ASE; ``dynamics``, default Langevin at 0.5 fs) from ``atoms`` until failure or ``max_steps``."""
    d = dynamics or Dynamics()
    if d.hydrogen_mass is not None:
        atoms = atoms.copy()
        atoms.set_masses([d.hydrogen_mass if z == 1 else m for z, m in zip(atoms.numbers, atoms.get_masses())])
    if d.thermostat == "nose-hoover":
        dyn = nose_hoover(atoms, calculator, criteria.temperature, seed, d.timestep_fs, d.tdamp_fs)
    elif d.thermostat == "langevin":
        dyn = langevin(atoms, calculator, criteria.temperature, seed, d.timestep_fs, d.friction)
    else:
        raise ValueError(f"thermostat '{d.thermostat}': use langevin or nose-hoover")
    atoms, check_every = dyn.atoms, d.check_every
    temperatures, distances = [], []
    steps = 0
    n = len(atoms)
    while steps < max_steps:
        try:
            dyn.run(check_every)
            finite = bool(np.isfinite(atoms.get_potential_energy()) and np.all(np.isfinite(atoms.get_forces())))
        except (ValueError, FloatingPointError, RuntimeError):
            finite = False
        steps += check_every
        temperatures.append(atoms.get_temperature())
        distances.append(closest_approach(atoms) if finite else 0.0)
        reason = check_failure(temperatures, distances, finite, criteria, judge_temperature=steps > criteria.grace_steps, n_atoms=n)
        if reason:
            return TrajectoryResult(n, seed, steps, True, reason)
    return TrajectoryResult(n, seed, steps, False, "survived")


_worker_calculator = None  # one per worker process, built once by _start_worker


def _start_worker(make_calculator, threads: int) -> None:
    import torch

    global _worker_calculator
    torch.set_num_threads(threads)
    try:
        _worker_calculator = make_calculator()
    except Exception as exc:  # raised with the first job: a Pool restarts a failing initializer forever
        _worker_calculator = exc


def _worker_trajectory(job) -> TrajectoryResult:
    if isinstance(_worker_calculator, Exception):
        raise _worker_calculator
    atoms, seed, criteria, max_steps, dynamics = job
    return run_trajectory(atoms, _worker_calculator, criteria, max_steps, seed=seed, dynamics=dynamics)


def run_trajectories(jobs, make_calculator, criteria: FailureCriteria, max_steps: int, workers: int = 1, dynamics: Dynamics | None = None):
    """Yield the result of each ``(atoms, seed)`` job as it finishes (completion order).

    ``make_calculator`` is a picklable zero-argument callable (e.g. ``functools.partial(
    LegatoCalculator, model_file=path)``); with ``workers > 1`` each worker process builds
    one and runs whole trajectories on ``torch threads // workers`` threads, so a killed
    study keeps every trajectory the caller stored as it was yielded. Stopping early
    (an exception, Ctrl-C) terminates the workers instead of waiting for the queue.
    """
    if workers == 1:
        calculator = make_calculator()
        for atoms, seed in jobs:
            yield run_trajectory(atoms, calculator, criteria, max_steps, seed=seed, dynamics=dynamics)
        return
    import multiprocessing

    import torch

    threads = max(1, torch.get_num_threads() // workers)
    context = multiprocessing.get_context("spawn")  # forking a process that has run torch can deadlock
    with context.Pool(workers, initializer=_start_worker, initargs=(make_calculator, threads)) as pool:  # exit = terminate
        yield from pool.imap_unordered(_worker_trajectory, [(atoms, seed, criteria, max_steps, dynamics) for atoms, seed in jobs])


def load_results(path) -> list[TrajectoryResult]:
    """Finished trajectories, one per (N, seed) (the first record wins)."""
    path = Path(path)
    if not path.exists():
        return []
    results: dict = {}
    for line in path.read_text().splitlines():
        if line.strip():
            r = TrajectoryResult(**json.loads(line))
            results.setdefault((r.n_atoms, r.seed), r)
    return list(results.values())


def append_result(path, result: TrajectoryResult) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(asdict(result)) + "\n")
        f.flush()


def per_size(results: list[TrajectoryResult]) -> dict[int, tuple[int, int, int]]:
    """(failures, trajectories, steps simulated) per size N, sizes ascending."""
    out = {}
    for n in sorted({r.n_atoms for r in results}):
        rs = [r for r in results if r.n_atoms == n]
        out[n] = (sum(r.failed for r in rs), len(rs), sum(r.steps for r in rs))
    return out


def failure_times(results: list[TrajectoryResult]) -> dict[int, float]:
    """t_failure(N) = steps simulated / failures (censored exponential MLE); inf without failures."""
    return {n: exposure / failures if failures else float("inf") for n, (failures, _, exposure) in per_size(results).items()}


def failure_time_lower_bound(results: list[TrajectoryResult], n_atoms: int, level: float = 0.95) -> float:
    """One-sided ``level`` lower bound on t_failure (steps) at a size where nothing failed:
    with a Poisson rate, zero failures in E steps rule out rates above -ln(1 - level) / E."""
    return per_size(results)[n_atoms][2] / -np.log(1 - level)


BETA_BOUND = 10.0  # |beta| searched; an optimum at the bound means the data do not bound beta


def _beta_optimum(results: list[TrajectoryResult]) -> tuple[float, float]:
    """Censored maximum-likelihood (beta, A) within +-BETA_BOUND; nan without failures or
    with fewer than two sizes."""
    from scipy.optimize import minimize_scalar

    counts = per_size(results)
    sizes = list(counts)
    failures = np.array([f for f, _, _ in counts.values()], float)
    exposure = np.array([e for _, _, e in counts.values()], float)
    if len(sizes) < 2 or failures.sum() == 0:
        return float("nan"), float("nan")
    log_n = np.log(sizes)

    def negative_profile_loglik(beta):  # the rate prefactor maximised out analytically
        return -(beta * failures @ log_n - failures.sum() * np.log(np.exp(beta * log_n) @ exposure))

    beta = minimize_scalar(negative_profile_loglik, bounds=(-BETA_BOUND, BETA_BOUND), method="bounded", options={"xatol": 1e-8}).x
    return float(beta), float(np.exp(beta * log_n) @ exposure / failures.sum())


def _unbounded(beta: float) -> bool:
    return BETA_BOUND - abs(beta) < 1e-3


def fit_beta(results: list[TrajectoryResult]) -> tuple[float, float]:
    """(beta, A) of t_failure = A N^-beta by censored maximum likelihood: failures at size
    N are a Poisson process with rate N^beta / A per step over the steps simulated there.
    nan when fewer than two sizes, no failure, or the data do not bound beta (e.g.
    failures only at the largest size)."""
    beta, a = _beta_optimum(results)
    return (float("nan"), float("nan")) if _unbounded(beta) else (beta, a)


def bootstrap_beta(results: list[TrajectoryResult], n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> tuple[float, float, float]:
    """beta and its bootstrap interval, resampling trajectories within each size. Resamples
    whose failures do not bound beta count as -inf or +inf, so an end of the interval can
    be infinite; resamples without any failure are left out."""
    beta, _ = fit_beta(results)
    rng = np.random.default_rng(seed)
    by_size = {}
    for r in results:
        by_size.setdefault(r.n_atoms, []).append(r)
    samples = []
    for _ in range(n_boot):
        resampled = [rs[i] for rs in by_size.values() for i in rng.integers(0, len(rs), len(rs))]
        b, _ = _beta_optimum(resampled)
        if np.isfinite(b):
            samples.append(b)
    if not samples:
        return beta, float("nan"), float("nan")
    ends = np.quantile(samples, [(1 - level) / 2, (1 + level) / 2], method="nearest")
    lo, hi = (float(np.sign(e) * np.inf) if _unbounded(e) else float(e) for e in ends)
    return beta, lo, hi


def plot_failure(path, series: dict, fits: dict, title: str = "time to failure") -> Path:
    """log-log t_failure vs N with fits; ``series`` = {label: results}, ``fits`` =
    {label: (beta, low, high)} as ``bootstrap_beta`` gave them (the printed interval)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=120)
    for (label, results), color, marker in zip(series.items(), ("tab:blue", "tab:red", "tab:green"), ("^", "v", "s")):
        times = failure_times(results)
        n = np.array([k for k, t in times.items() if np.isfinite(t)])
        t = np.array([times[k] for k in n])
        beta, lo, hi = fits[label]
        fit = f"beta = {beta:.2f} [{lo:.2f}, {hi:.2f}]" if np.isfinite(beta) else "beta undetermined"
        ax.loglog(n, t, "o", color=color, label=f"{label}: {fit}")
        censored = [k for k, v in times.items() if not np.isfinite(v)]
        if censored:  # no failure at this size: open marker at the 95% lower bound
            bounds = [failure_time_lower_bound(results, k) for k in censored]
            ax.loglog(censored, bounds, marker, color=color, mfc="none", label=f"{label}: no failure (95% lower bound)")
        if np.isfinite(beta):
            _, a = fit_beta(results)
            grid = np.geomspace(min(times), max(times), 20)
            ax.loglog(grid, a * grid**-beta, "-", color=color, lw=1)
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    sizes = sorted({r.n_atoms for results in series.values() for r in results})
    ax.set_xticks(sizes)
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("atoms N")
    ax.set_ylabel("MD steps to failure")
    ax.set_title(title)
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
