"""First look at a GPU: the shipped model, the driver and a SAM training step on DEVICE vs the CPU.

    python bench/gpu_check.py [--device cuda] [--repeats 5] [--steps 20]

Prints, each as DEVICE / CPU speed-up with both times:
1. model calls of the shipped SAM model: 32 beads x 16 atoms (all beads in one call, as the
   driver does on a GPU) and one 1,024-atom cell;
2. a SAM training step (8 frames of 16 atoms, sam.yaml architecture);
3. `legato run` PIMD steps per second (32 beads, 16 atoms) with ``--device DEVICE``;
4. with ``--export``: the cheap model exported and AOT-compiled for DEVICE (``legato export
   --nequip --device``, minutes per device), its energy and forces checked against legato's
   on 128 atoms (1e-5 relative, else exit 1), and nequip's calculator's call time.
Made so that the first lent GPU checks the CUDA path in minutes; until it has run there,
the docs say the CUDA path is unverified. With ``--device cpu`` it checks itself (ratios ~1).
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from nequip.data import AtomicDataDict

from bench_model import best_time, bead_batch, training_steps, untrained_potential
from legato.driver.pes import make_driver
from legato.driver.run import RunSettings, run_simulation, steps_in
from legato.geometry import ammonia_phase_i
from legato.potential import ModelPotential
from legato.shipped import TEMPLATES, default_model
from legato.training.structures import rattled


def synchronized(fn, device: str):
    def call():
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    return call


def model_calls(device: str, repeats: int) -> dict:
    pot = ModelPotential.from_file(default_model(), atoms_per_call=1 << 20, device=device)  # all beads in one call
    symbols, positions, cells = bead_batch()
    big = ammonia_phase_i(repeat=(4, 4, 4))
    return {
        "32 x 16 atoms, one call": best_time(synchronized(lambda: pot.evaluate(symbols, positions, cells), device), repeats),
        "1024 atoms": best_time(synchronized(lambda: pot.evaluate(big.get_chemical_symbols(), big.positions, big.cell.array[None]), device), repeats),
    }


def training_step(device: str, repeats: int) -> dict:
    model, pot = untrained_potential()
    model = model.to(device)
    frames = rattled(ammonia_phase_i(), 8, stdev=0.05, seed=0)
    symbols = frames[0].get_chemical_symbols()
    graphs = [pot._graph(f.positions, f.cell.array, (True,) * 3, pot.atom_types(symbols)) for f in frames]
    batch = AtomicDataDict.to_(AtomicDataDict.batched_from_list(graphs), torch.device(device))
    _, sam_step = training_steps(model, batch)
    return {"SAM step, 8 x 16 atoms": best_time(synchronized(sam_step, device), repeats)}


def pimd_steps(device: str, steps: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        run_simulation(
            TEMPLATES / "nh3_solid_pimd_nvt.xml", Path(tmp) / "run",
            lambda s: make_driver(s, default_model(), atoms_per_call=1 << 20, device=device),
            RunSettings(nbeads=32, total_steps=steps, stride=1000), progress=False,
        )
        wall = time.perf_counter() - start
        done = len(steps_in(Path(tmp) / "run" / "simulation.out"))
    return {"PIMD step, 32 beads x 16 atoms (with start-up)": wall / max(done, 1)}


def compiled_export(device: str, repeats: int) -> dict:
    from nequip.integrations.ase import NequIPCalculator

    from legato.nequip_export import export_nequip
    from legato.potential import LegatoCalculator
    from legato.shipped import fast_model

    atoms = rattled(ammonia_phase_i(repeat=(2, 2, 2)), 1, stdev=0.03, seed=1)[0]
    atoms.calc = LegatoCalculator(fast_model(), device=device)
    energy, forces = atoms.get_potential_energy(), atoms.get_forces()
    with tempfile.TemporaryDirectory() as tmp:
        files = export_nequip(fast_model(), tmp, targets=["ase"], device=device, log=lambda line: None)
        atoms.calc = NequIPCalculator.from_compiled_model(str(files["ase"]), device=device, chemical_species_to_atom_type_map=True)
        ok = abs(atoms.get_potential_energy() - energy) <= 1e-5 * abs(energy) and np.abs(atoms.get_forces() - forces).max() <= 1e-5 * np.abs(forces).max()
        if not ok:
            sys.exit(f"the compiled export on {device} differs from legato's model by more than 1e-5 relative")

        def call():
            atoms.calc.results = {}
            atoms.calc.calculate(atoms, ["energy", "forces"])

        return {"nequip's compiled cheap model, 128 atoms (agrees to 1e-5)": best_time(synchronized(call, device), repeats)}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--export", action="store_true", help="also export, compile and check the cheap model for the device and the CPU (minutes each)")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit(f"--device {args.device}: torch {torch.__version__} sees no GPU here (a CUDA build of torch on a GPU machine is needed)")
    print(f"torch {torch.__version__}, device {args.device}" + (f" ({torch.cuda.get_device_name()})" if args.device.startswith("cuda") else ""))
    checks = [("model calls", lambda d: model_calls(d, args.repeats)), ("training", lambda d: training_step(d, args.repeats)), ("driver", lambda d: pimd_steps(d, args.steps))]
    if args.export:
        checks.append(("export", lambda d: compiled_export(d, args.repeats)))
    for name, measure in checks:
        on_device, on_cpu = measure(args.device), measure("cpu")
        for key in on_device:
            print(f"{name}: {key}: CPU / {args.device} = {on_cpu[key] / on_device[key]:.1f}x  [{on_cpu[key]*1e3:.1f} / {on_device[key]*1e3:.1f} ms]")
    print(f"the CUDA path ran: model calls, a SAM step and i-PI PIMD on {args.device}" if args.device != "cpu" else "self-check on the CPU done")


if __name__ == "__main__":
    main()
