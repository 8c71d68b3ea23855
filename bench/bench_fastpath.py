"""Fast PIMD vs brute force, side by side: wall time per simulated ps at P = 32.

    python bench/bench_fastpath.py [--sizes 16,128] [--steps 24] [--no-compile]

TRPMD of solid ammonia at 150 K with 32 beads (ipi_inputs/nh3_solid_trpmd.xml), on the
16-atom phase-I cell and its 2x2x2 supercell (128 atoms):
- brute force: the shipped SAM model on every bead every 0.5 fs;
- fast path, `legato run --contract 4 --mts 4`: the cheap model (models/fast.legato.pt)
  on all 32 beads every 0.5 fs, SAM on 4 contracted beads every 2 fs;
each with the full model eager and compiled (`--compile`; --no-compile skips those rows).
The time per step is the steady-state period of the full model's calls (start-up, the
call planner's trial steps and compiling left out), reported per simulated ps. Run it on
a quiet machine. Exits 1 when the fast path is less than 10x faster at 128 atoms (eager),
the goal of the fast-PIMD work (bench/goals.py).
"""

import argparse
import tempfile
from pathlib import Path

import numpy as np

from legato.driver.pes import make_driver
from legato.driver.run import RunSettings, run_simulation
from legato.shipped import TEMPLATES, default_model, fast_model

from bench_driver import TimedDriver, planning_calls
from goals import Goals

STRUCTURES = {16: TEMPLATES / "nh3_phase_i.xyz", 128: TEMPLATES / "nh3_phase_i_2x2x2.xyz"}
BEADS, CONTRACT, MTS, TIMESTEP = 32, 4, 4, 0.5  # fs


def seconds_per_ps(n_atoms: int, fast: bool, compiled: bool, steps: int) -> float:
    """Wall seconds per simulated ps of TRPMD (P = 32, 150 K) on the ``n_atoms`` cell."""
    holder = {}

    def full(structure):
        holder["driver"] = TimedDriver(model=str(default_model()), structure=str(structure), compile=compiled)
        return holder["driver"]

    timestep = TIMESTEP * (MTS if fast else 1)
    # the full model's first requests: a warm-up, then two trials of each way the planner times
    # (1, 2, 4, ... beads per call at each thread count; none when compiled), and a compiling first call
    beads_seen = CONTRACT if fast else BEADS
    skip = 2 if compiled else planning_calls(beads_seen, n_atoms)
    settings = RunSettings(
        nbeads=BEADS, temperature=150.0, timestep=timestep, total_steps=skip + steps, stride=10_000, seed=1,
        structure=STRUCTURES[n_atoms], contract=CONTRACT if fast else None, mts=MTS if fast else None,
    )
    with tempfile.TemporaryDirectory() as tmp:
        run_simulation(
            TEMPLATES / "nh3_solid_trpmd.xml", Path(tmp) / "run", full, settings, progress=False,
            fast_driver_factory=(lambda s: make_driver(s, fast_model(), dipoles=False)) if fast else None,
        )
    starts = np.asarray(holder["driver"].starts[skip:])
    per_step = float(np.median(np.diff(starts)))
    return per_step * 1000.0 / timestep


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="16,128", help="atoms: 16 and/or 128")
    parser.add_argument("--steps", type=int, default=24, help="timed steps per run (after the planner's trial steps)")
    parser.add_argument("--no-compile", action="store_true", help="eager rows only")
    args = parser.parse_args()
    goals = Goals()
    sizes = [int(s) for s in args.sizes.split(",")]
    unknown = sorted(set(sizes) - set(STRUCTURES))
    if unknown:
        parser.error(f"--sizes: no structure for {unknown} atoms; use {sorted(STRUCTURES)}")
    for compiled in (False,) if args.no_compile else (False, True):
        mode = "compiled" if compiled else "eager"
        for n_atoms in sizes:
            brute = seconds_per_ps(n_atoms, False, compiled, args.steps)
            fast = seconds_per_ps(n_atoms, True, compiled, args.steps)
            speedup = brute / fast
            verdict = goals.check(f"fast path / brute force, {n_atoms} atoms, {mode}", speedup, 10.0) if n_atoms == 128 and not compiled else ""
            print(
                f"P={BEADS}, {n_atoms:4d} atoms, full model {mode}: brute force {brute:7.0f} s/ps, "
                f"--contract {CONTRACT} --mts {MTS} {fast:6.0f} s/ps: {speedup:5.1f}x  {verdict}",
                flush=True,
            )
    goals.finish()


if __name__ == "__main__":
    main()
