"""PIMD throughput through i-PI, as ratios measured side by side in one run.

    python bench/bench_driver.py [--model MODEL] [--steps 20]

1. wall time per PIMD step / time of the one batched model call (P = 32, 16 atoms);
2. legato's batched driver vs what users do today: i-PI sending one bead per
   message to a client wrapping nequip's ASE calculator (NequIPCalculator) of the
   same model, eager beside legato eager, and, with ``--nequip-pt2 FILE`` (nequip's own
   AOT-compiled model: ``legato export MODEL --nequip DIR --target ase``), compiled beside
   legato compiled;
3. the driver with the model compiled (``legato run --compile``) vs eager;
4. steps/s vs number of beads (8, 16, 32, 64);
5. the driver's own call plan (timed on its first steps, logged by the driver) vs the
   fixed 64-atom chunks it used before planning.
Run it on a quiet machine: i-PI and the driver share its cores. Exits 1 when a ratio
misses its goal (bench/goals.py).
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import ase
import numpy as np

from legato import units
from legato.driver.pes import LegatoDriver
from legato.driver.run import RunSettings, run_simulation
from legato.modelfile import load_model
from legato.callplan import CallPlanner
from legato.potential import MAX_PLANNED_ATOMS, planned_thread_counts, use_threads

from goals import Goals

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "ipi_inputs" / "nh3_solid_pimd_nvt.xml"
STRUCTURE = ROOT / "ipi_inputs" / "nh3_phase_i.xyz"


class TimedDriver(LegatoDriver):
    """LegatoDriver that records when each call starts and how long it takes."""

    def evaluate(self, cells_au, positions_au):
        start = time.perf_counter()
        out = super().evaluate(cells_au, positions_au)
        self.starts = getattr(self, "starts", []) + [start]
        self.call_seconds = getattr(self, "call_seconds", []) + [time.perf_counter() - start]
        return out


def step_period(starts, calls_per_step: int) -> float:
    """Median wall time of one PIMD step in steady state (first step dropped)."""
    starts = np.asarray(starts[calls_per_step:])
    return float(np.median(starts[calls_per_step:] - starts[:-calls_per_step]))


def planning_calls(n_frames: int, n_atoms: int) -> int:
    """Driver calls the call planner spends timing its candidates for this request shape."""
    planner = CallPlanner(max_atoms=MAX_PLANNED_ATOMS, threads=planned_thread_counts(), use_threads=use_threads)
    return planner.calls_to_plan(n_frames, n_atoms)


class PerBeadNequIPDriver(LegatoDriver):
    """Today's path: every bead on its own through nequip's ASE calculator."""

    def __init__(self, model_file, structure, compiled=None):
        """``compiled``: nequip's AOT-compiled ``.nequip.pt2`` of the model instead of the eager model."""
        from nequip.data.transforms import ChemicalSpeciesToAtomTypeMapper, NeighborListTransform
        from nequip.integrations.ase import NequIPCalculator

        if compiled is not None:
            self.calc = NequIPCalculator.from_compiled_model(str(compiled), device="cpu", chemical_species_to_atom_type_map=True)
        else:
            model, meta = load_model(model_file)
            self.calc = NequIPCalculator(
                model,
                device="cpu",
                transforms=[ChemicalSpeciesToAtomTypeMapper(model_type_names=meta["type_names"]), NeighborListTransform(r_max=meta["r_max"])],
            )
        symbols = ase.io.read(structure).get_chemical_symbols()
        self.atoms = ase.Atoms(symbols, pbc=True)
        super().__init__(potential=self, symbols=symbols)

    def evaluate(self, cells_au, positions_au):
        self.starts = getattr(self, "starts", []) + [time.perf_counter()]
        results = []
        for cell, pos in zip(cells_au, positions_au):
            self.atoms.set_cell(units.bohr_to_angstrom(cell.T))
            self.atoms.positions = units.bohr_to_angstrom(pos)
            self.atoms.calc = self.calc
            e = self.atoms.get_potential_energy()
            f = self.atoms.get_forces()
            # no dipoles from this path: zeros keep i-PI's dipole output (same XML) working
            results.append((units.ev_to_hartree(e), units.forces_ev_per_angstrom_to_au(f), np.zeros((3, 3)), json.dumps({"dipole": [0.0, 0.0, 0.0]})))
        return results


def timed_run(factory, nbeads, steps, batched=True):
    with tempfile.TemporaryDirectory() as tmp:
        template = TEMPLATE
        if not batched:
            text = TEMPLATE.read_text().replace("<batch_size> 16 </batch_size>", "").replace("<consolidate_messages> true </consolidate_messages>", "")
            template = Path(tmp) / "unbatched.xml"
            template.write_text(text)
            (Path(tmp) / STRUCTURE.name).write_text(STRUCTURE.read_text())
        holder = {}

        def make(structure):
            holder["driver"] = factory(structure)
            return holder["driver"]

        start = time.perf_counter()
        run_simulation(template, Path(tmp) / "run", make, RunSettings(nbeads=nbeads, total_steps=steps, stride=1000), progress=False)
        wall = time.perf_counter() - start
    return wall, holder["driver"]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(ROOT / "models" / "sam.legato.pt"))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--nequip-pt2", type=Path, help="nequip's compiled model of --model for the compiled per-bead pairing (legato export MODEL --nequip DIR --target ase)")
    args = parser.parse_args()
    goals = Goals()
    batched = lambda s: TimedDriver(model=args.model, structure=str(s))  # noqa: E731
    print(f"torch threads the planner times: {planned_thread_counts() or 'as set (OMP_NUM_THREADS)'}")
    # warm-up, then 1, 2, 4, 8, 16 and 32 beads per call at each thread count, twice each (legato.callplan)
    planning_steps = planning_calls(32, 16)
    steps = max(args.steps, planning_steps + 8)

    _, driver = timed_run(batched, 32, steps)
    starts = driver.starts[planning_steps:]  # steady state: after the plan is made
    per_step = step_period(starts, 1)
    per_call = float(np.median(driver.call_seconds[planning_steps:]))
    ratio = per_step / per_call
    print(f"P=32, 16 atoms: wall per PIMD step / one batched driver call = {ratio:.2f}  {goals.check('wall per step / driver call', ratio, 1.05, higher_is_better=False)}  [{per_step*1e3:.0f} / {per_call*1e3:.0f} ms]")

    _, fixed = timed_run(lambda s: TimedDriver(model=args.model, structure=str(s), atoms_per_call=64), 32, steps)
    per_step_fixed = step_period(fixed.starts[planning_steps:], 1)
    print(f"P=32: fixed 64-atom chunks / planned calls = {per_step_fixed / per_step:.2f}x  [{per_step_fixed*1e3:.0f} / {per_step*1e3:.0f} ms per step]")

    _, compiled = timed_run(lambda s: TimedDriver(model=args.model, structure=str(s), compile=True), 32, args.steps)
    per_step_compiled = step_period(compiled.starts, 1)  # the first step, which compiles, is left out
    print(f"P=32: wall per PIMD step, eager / compiled model (--compile) = {per_step / per_step_compiled:.2f}x  [{per_step*1e3:.0f} / {per_step_compiled*1e3:.0f} ms]")

    _, per_bead_driver = timed_run(lambda s: PerBeadNequIPDriver(args.model, s), 32, args.steps, batched=False)
    per_step_pb = step_period(per_bead_driver.starts, 32)
    lead = per_step_pb / per_step
    print(f"P=32: i-PI one bead per message + NequIPCalculator / legato batched, eager / eager = {lead:.2f}x  {goals.check('per-bead NequIPCalculator / legato (eager)', lead, 2.0)}  [{per_step_pb*1e3:.0f} / {per_step*1e3:.0f} ms per step]")
    if args.nequip_pt2 is not None:
        _, per_bead_compiled = timed_run(lambda s: PerBeadNequIPDriver(args.model, s, compiled=args.nequip_pt2), 32, args.steps, batched=False)
        per_step_pbc = step_period(per_bead_compiled.starts, 32)
        best = min(per_step_pb, per_step_pbc)
        print(f"P=32: per bead with nequip's compiled model (.nequip.pt2) / legato batched compiled = {per_step_pbc / per_step_compiled:.2f}x  [{per_step_pbc*1e3:.0f} / {per_step_compiled*1e3:.0f} ms per step]")
        lead_best = best / min(per_step, per_step_compiled)
        print(f"P=32: best per-bead path / best legato path = {lead_best:.2f}x  {goals.check('best per-bead / best legato', lead_best, 2.0)}")
    else:
        print("P=32: per bead with nequip's compiled model: skipped (give --nequip-pt2 FILE)")

    for nbeads in (8, 16, 32, 64):
        planned = planning_calls(nbeads, 16)
        _, d = timed_run(batched, nbeads, steps - planning_steps + planned)
        print(f"P={nbeads:3d}: {1.0 / step_period(d.starts[planned:], 1):6.2f} steps/s")
    goals.finish()


if __name__ == "__main__":
    main()
