"""`legato failure`: time to failure of a model's MD on supercells of one cell, resumable.

Each trajectory (:func:`~legato.analysis.robustness.run_trajectory`) is one line of
``<out>/trajectories.jsonl``, written as it finishes; ``<out>/study.json`` records the
settings, and a study resumes only with the same ones. Statistics and the figure:
:mod:`legato.analysis.robustness`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from legato.fileio import file_sha256, read_structures, record_study
from legato.geometry import ammonia_phase_i, order_by_species
from legato.modelfile import read_model_file
from legato.potential import LegatoCalculator, torch_device

from .robustness import (
    Dynamics,
    FailureCriteria,
    append_result,
    bootstrap_beta,
    failure_time_lower_bound,
    failure_times,
    load_results,
    per_size,
    run_trajectories,
)

#: supercells of the unit cell, by the number of cells they hold
SUPERCELLS = {1: (1, 1, 1), 2: (2, 1, 1), 4: (2, 2, 1), 8: (2, 2, 2), 16: (4, 2, 2), 27: (3, 3, 3), 32: (4, 4, 2)}


@dataclass(frozen=True)
class Protocol:
    """A failure study's preset: the defaults of `legato failure --protocol NAME`."""

    temperature: float  # K
    max_steps: int
    seeds: int
    sizes: str  # cell multipliers
    dynamics: Dynamics = field(default_factory=Dynamics)
    criteria: dict = field(default_factory=dict)  # FailureCriteria fields besides temperature
    structure: str | None = None  # the default cell: a file of ipi_inputs/, None: ammonia phase I


PROTOCOLS = {
    # the project's own: the phase-I crystal far above melting, so that failures come within ps
    "hot": Protocol(temperature=6000.0, max_steps=6000, seeds=6, sizes="1,2,4,8"),
    # Allegro-Legato's (Ibayashi et al. 2023, measure_t_failure.py with LAMMPS fix nvt): the
    # liquid at 200 K with deuterium masses, Nose-Hoover NVT (damping 100 steps), 2.5 fs steps,
    # a failure once the temperature (every 10 steps) leaves [100, 300] K; 10 runs per size.
    # Its runs started from an equilibrated liquid; ours start from a box with velocities
    # drawn at 200 K, which share their energy with the potential within the first ~0.1 ps
    # (T falls towards 100 K; a random-start box heats to ~700 K first), so the temperature is
    # judged after 1 ps (400 steps) of the thermostat. Sizes from 128 atoms (4 x the 32-atom
    # box): the fixed band is 3.5 sigma of the instantaneous temperature of 32 atoms at 200 K,
    # which equilibrium fluctuations leave about once in 2000 checks
    "legato": Protocol(
        temperature=200.0, max_steps=4000, seeds=10, sizes="4,8,16,32",
        dynamics=Dynamics(timestep_fs=2.5, thermostat="nose-hoover", tdamp_fs=250.0, check_every=10, hydrogen_mass=2.014),
        criteria={"max_temperature_deviation": 100.0, "window": 1, "grace_steps": 400, "fluctuation_sigmas": 0.0, "min_distance": 0.0},
        structure="nh3_liquid_8.xyz",
    ),
}


def unit_cell(structure=None):
    """The crystal to simulate (failure study, orientation check): ``structure``'s last frame,
    or ammonia phase I at a = 5.13 A; ValueError for a missing file or one without a 3D cell."""
    if structure is None:
        return ammonia_phase_i(5.13)
    structure = Path(structure)
    if not structure.exists():
        raise ValueError(f"{structure}: no such structure file")
    unit = read_structures(structure)[-1]
    if unit.cell.volume < 1e-6 or not unit.pbc.all():
        raise ValueError(f"{structure}: give a periodic structure with a 3D cell (a crystal or a liquid box)")
    return unit


def parse_sizes(sizes) -> list[int]:
    """``"1,2,4,8"`` (or a list) -> cell multipliers, each one of :data:`SUPERCELLS`."""
    multipliers = [int(k) for k in sizes.split(",")] if isinstance(sizes, str) else [int(k) for k in sizes]
    unknown = [k for k in multipliers if k not in SUPERCELLS]
    if unknown:
        raise ValueError(f"--sizes {unknown} not available; use cell multipliers from {sorted(SUPERCELLS)}")
    return multipliers


def failure_study(
    model,
    out,
    sizes=None,
    seeds: int | None = None,
    temperature: float | None = None,
    max_steps: int | None = None,
    contact_checks: int = 4,
    workers: int = 1,
    progress: bool = True,
    structure=None,
    device: str = "cpu",
    protocol: str = "hot",
):
    """Run (or resume) the failure trajectories of the model file ``model`` on supercells
    (``sizes``, cell multipliers) of ``structure`` in ``out``; returns all results there.
    ``protocol`` (:data:`PROTOCOLS`) sets the dynamics, the failure criteria and the
    defaults of the arguments left None.

    ValueError (one line, naming the option) for settings that cannot run, a study in
    ``out`` with other settings, or a structure without a cell; ModelFileError for a bad model.
    """
    from tqdm import tqdm

    from legato.shipped import TEMPLATES

    if protocol not in PROTOCOLS:
        raise ValueError(f"--protocol {protocol}: use one of {', '.join(PROTOCOLS)}")
    preset = PROTOCOLS[protocol]
    sizes = preset.sizes if sizes is None else sizes
    seeds = preset.seeds if seeds is None else seeds
    temperature = preset.temperature if temperature is None else temperature
    max_steps = preset.max_steps if max_steps is None else max_steps
    if structure is None and preset.structure is not None:
        structure = TEMPLATES / preset.structure
    model = Path(model)
    multipliers = parse_sizes(sizes)
    for name, value in (("seeds", seeds), ("max-steps", max_steps)):
        if value < 1:
            raise ValueError(f"--{name} {value}: give at least 1")
    if not temperature > 0:
        raise ValueError(f"--temperature {temperature}: give a positive value")
    if contact_checks < 1:
        raise ValueError(f"--contact-checks {contact_checks}: must be at least 1 (1 = any close contact is a failure)")
    if workers < 1:
        raise ValueError(f"--workers {workers}: must be at least 1 (trajectories run side by side, one process each)")
    torch_device(device)
    read_model_file(model)  # an unreadable model: one-line error before the study folder is made
    unit = unit_cell(structure)
    criteria = FailureCriteria(temperature=temperature, contact_checks=contact_checks, **preset.criteria)
    study = {"model_sha256": file_sha256(model), "max_steps": max_steps, **asdict(criteria)}
    if protocol == "hot":  # studies recorded before protocols existed resume
        study.pop("fluctuation_sigmas")
    else:
        study.update(protocol=protocol, **asdict(preset.dynamics))
    if structure is not None:  # studies of the default cell keep the record they had
        study["structure_sha256"] = file_sha256(structure)
    out = Path(out)
    record_study(out, study)
    results_file = out / "trajectories.jsonl"
    done = {(r.n_atoms, r.seed) for r in load_results(results_file)}
    todo = [(k, 1000 * k + seed) for k in multipliers for seed in range(seeds) if (len(unit) * k, 1000 * k + seed) not in done]
    jobs = [(order_by_species(unit.repeat(SUPERCELLS[k])), seed) for k, seed in todo]
    finished = run_trajectories(jobs, partial(LegatoCalculator, model_file=str(model), device=device), criteria, max_steps, workers, preset.dynamics)
    for result in tqdm(finished, total=len(jobs), desc=f"failure {model.name}", unit="traj", disable=not progress):
        append_result(results_file, result)
    return load_results(results_file)


def t_failure_text(results, n: int, t: float) -> str:
    """t_failure in steps, or '>' its 95% lower bound where nothing failed."""
    return f"{t:.0f}" if t != float("inf") else f">{failure_time_lower_bound(results, n):.0f}"


def failure_summary(label: str, results) -> tuple[tuple, list[str]]:
    """``((beta, low, high), lines)``: the fit of t_failure = A N^-beta with its bootstrap interval
    and the lines that report it, one per size."""
    times = failure_times(results)
    beta, lo, hi = bootstrap_beta(results)
    if not np.isfinite(beta):
        lines = [f"{label}: beta undetermined (too few failures to bound it: run longer, hotter or with more seeds)"]
    elif np.isnan(lo):
        lines = [f"{label}: beta = {beta:.2f}, no bootstrap interval (too few failures)"]
    else:
        lines = [f"{label}: beta = {beta:.2f}, 95% interval [{lo:.2f}, {hi:.2f}]"]
    for n, (failed, total, _) in per_size(results).items():
        lines.append(f"  N = {n:4d}: t_failure = {t_failure_text(results, n, times[n]):>9} steps  ({failed}/{total} trajectories failed)")
    return (beta, lo, hi), lines
