"""Model and training cost, as ratios measured side by side in one run.

    python bench/bench_model.py [--repeats 5] [--vs "model.l_max=2 model.num_tensor_features=16" ...]

Prints: SAM step / Adam step; SAM step eager / compiled (torch.compile of the
training step, model.compile_mode=compile); forward+forces time vs atoms (16, 128, 1024) and its
growth exponent; one batched call on 32 copies of a 16-atom cell vs 32 calls; with
--vs, the cost of other architectures (config overrides) relative to the shipped one;
the shipped full model vs the cheap reference (models/fast.legato.pt) per force call.
The model is the architecture of training/configs/sam.yaml (weights untrained:
cost does not depend on them). Exits 1 when a ratio misses its goal (bench/goals.py).
"""

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from nequip.data import AtomicDataDict
from omegaconf import OmegaConf

from legato.model import build_model
from legato.modelfile import UNITS
from legato.potential import ModelPotential
from legato.training.sam import ascended
from legato.training.train import load_config
from legato.geometry import ammonia_phase_i
from legato.training.structures import rattled

from goals import Goals

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "training" / "configs" / "sam.yaml"


def best_time(fn, repeats):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def model_config(overrides=()) -> dict:
    """The sam.yaml model section with ``key=value`` overrides and fixed data statistics."""
    cfg = OmegaConf.to_container(load_config(CONFIG, overrides).model, resolve=True)
    cfg.update(avg_num_neighbors=20.0, per_type_energy_shifts={"H": 0.0, "N": 0.0}, per_type_energy_scales={"H": 1.0, "N": 1.0})
    return cfg


def untrained_potential(overrides=()):
    """(model, ModelPotential) of the sam.yaml architecture with ``key=value`` overrides."""
    cfg = model_config(overrides)
    model = build_model(cfg, ["H", "N"])
    meta = {"type_names": ["H", "N"], "r_max": cfg["r_max"], "units": UNITS, "valence_charge": {"H": 1, "N": 5}, "wannier_count": {"H": 0, "N": 4}}
    return model, ModelPotential(model, meta)


def bead_batch():
    """(symbols, positions, cells) of 32 rattled copies of the 16-atom cell, as PIMD beads."""
    copies = rattled(ammonia_phase_i(), 32, stdev=0.05, seed=1)
    return copies[0].get_chemical_symbols(), np.stack([c.positions for c in copies]), np.stack([c.cell.array for c in copies])


def training_steps(model, batch):
    """(Adam step, SAM step) closures: force + Wannier loss on ``batch``, rho 0.05."""
    target = torch.randn(AtomicDataDict.num_nodes(batch), 3)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=1e-4)

    def loss():
        out = model(dict(batch))
        return ((out["forces"] - target) ** 2).mean() + (out["wannier_disp"] ** 2).mean()

    def adam_step():
        opt.zero_grad()
        loss().backward()
        opt.step()

    def sam_step():
        opt.zero_grad()
        loss().backward()
        with ascended(params, 0.05):  # the training's SAM step (training/sam.py)
            opt.zero_grad()
            loss().backward()
        opt.step()

    return adam_step, sam_step


def architecture_costs(variants, repeats):
    """Forward+forces time of each variant / the shipped architecture: 128 atoms, and 32 x 16 atoms batched."""
    cell = ammonia_phase_i(repeat=(2, 2, 2))
    symbols, positions, cells = bead_batch()
    base = None
    for overrides in [""] + variants:
        model, pot = untrained_potential(overrides.split())
        t_cell = best_time(lambda: pot.evaluate(cell.get_chemical_symbols(), cell.positions, cell.cell.array[None]), repeats)
        t_beads = best_time(lambda: pot.evaluate(symbols, positions, cells), repeats)
        base = base or (t_cell, t_beads)
        n_params = sum(p.numel() for p in model.parameters())
        print(f"  x{t_cell / base[0]:5.1f} (128 atoms), x{t_beads / base[1]:5.1f} (32 x 16 atoms), {n_params:6d} parameters: {overrides or 'shipped architecture'}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--vs", action="append", default=[], metavar="OVERRIDES",
                        help='another architecture as space-separated config overrides, e.g. "model.num_layers=3"; repeatable')
    args = parser.parse_args()
    goals = Goals()
    model, pot = untrained_potential()
    print(f"model: {CONFIG.name} architecture, {sum(p.numel() for p in model.parameters())} parameters, torch threads {torch.get_num_threads()}")

    # --- SAM vs Adam step, eager and compiled, on 8 frames of 16 atoms ---
    frames = rattled(ammonia_phase_i(), 8, stdev=0.05, seed=0)
    symbols = frames[0].get_chemical_symbols()
    graphs = [pot._graph(f.positions, f.cell.array, (True,) * 3, pot.atom_types(symbols)) for f in frames]
    batch = AtomicDataDict.batched_from_list(graphs)
    t_adam, t_sam = (best_time(step, args.repeats) for step in training_steps(model, batch))
    print(f"SAM step / Adam step (8 x 16 atoms): {t_sam / t_adam:.2f}  {goals.check('SAM step / Adam step', t_sam / t_adam, 2.2, higher_is_better=False)} (theory 2)  [{t_sam*1e3:.0f} / {t_adam*1e3:.0f} ms]")
    compiled = build_model(model_config(), ["H", "N"], compile_mode="compile")
    _, t_sam_compiled = (best_time(step, args.repeats) for step in training_steps(compiled, batch))
    print(f"SAM step eager / compiled (model.compile_mode=compile, training only): {t_sam / t_sam_compiled:.2f}  [{t_sam*1e3:.0f} / {t_sam_compiled*1e3:.0f} ms]")

    # --- scaling with system size ---
    sizes, times = [], []
    for rep in (1, 2, 4):
        atoms = ammonia_phase_i(repeat=(rep,) * 3)
        t = best_time(lambda: pot.evaluate(atoms.get_chemical_symbols(), atoms.positions, atoms.cell.array[None]), max(2, args.repeats // (rep * rep)))
        sizes.append(len(atoms))
        times.append(t)
        print(f"forward+forces, {len(atoms):5d} atoms: {t*1e3:8.1f} ms")
    slope = np.polyfit(np.log(sizes), np.log(times), 1)[0]
    print(f"growth exponent d ln t / d ln N (16-1024 atoms): {slope:.2f}  {goals.check('growth exponent 16-1024 atoms', slope, 1.1, higher_is_better=False)}")
    slope_big = np.log(times[2] / times[1]) / np.log(sizes[2] / sizes[1])
    print(f"growth exponent 128 -> 1024 atoms: {slope_big:.2f}")

    # --- batching ---
    symbols, positions, cells = bead_batch()
    for _ in range(pot.planner.calls_to_plan(32, 16)):  # let the call planner time its candidates (legato.callplan)
        pot.evaluate(symbols, positions, cells)
    t_batched = best_time(lambda: pot.evaluate(symbols, positions, cells), args.repeats)
    t_single = best_time(lambda: [pot.evaluate(symbols, positions[i], cells[i][None]) for i in range(32)], max(2, args.repeats // 2))
    ratio = t_single / t_batched
    plan = pot.planner.plans[(32, 16)]
    print(f"32 x 16 atoms: 32 separate calls / one evaluate() of all (planned: {plan.frames} frames per model call{'' if plan.threads is None else f', {plan.threads} thread(s)'}): {ratio:.2f}  {goals.check('32 single calls / one planned evaluate()', ratio, 1.0)}  [{t_single*1e3:.0f} / {t_batched*1e3:.0f} ms]")

    # --- the cheap reference of contracted / MTS PIMD vs the full model (shipped files) ---
    fast_file, full_file = ROOT / "models" / "fast.legato.pt", ROOT / "models" / "sam.legato.pt"
    if fast_file.exists():
        full, fast = ModelPotential.from_file(full_file), ModelPotential.from_file(fast_file)
        for rep in (1, 2):
            atoms = ammonia_phase_i(repeat=(rep,) * 3)
            call = lambda p: p.evaluate(atoms.get_chemical_symbols(), atoms.positions, atoms.cell.array[None])  # noqa: E731
            t_full, t_fast = best_time(lambda: call(full), args.repeats), best_time(lambda: call(fast), args.repeats)
            ratio = t_full / t_fast
            print(f"{len(atoms):4d} atoms: full (sam.legato.pt) / cheap (fast.legato.pt) force call = {ratio:.1f}x  {goals.check(f'full / cheap force call, {len(atoms)} atoms', ratio, 10.0)}  [{t_full*1e3:.1f} / {t_fast*1e3:.1f} ms]")

    if args.vs:
        print("architectures, forward+forces time relative to the shipped one:")
        architecture_costs(args.vs, max(2, args.repeats // 2))
    goals.finish()


if __name__ == "__main__":
    main()
