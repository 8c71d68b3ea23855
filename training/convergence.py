"""Convergence of the DFT reference: Brillouin-zone sampling and basis, resumably.

A periodic frame at the Gamma point of an ``n x n x n`` supercell is the same
calculation as the frame with a Gamma-centred ``n x n x n`` k-mesh, and it is
the labeller's own code path (Gamma-point Kohn-Sham with multigrid numerics,
D3(BJ), Berry-phase Wannier centres), so its forces and dipoles are the ones a
label with that protocol would carry. PySCF's k-point gradients do not run with
multigrid numerics (``pyscf.pbc.grad.krks`` needs a ``NumInt``), so forces are
converged in supercells; energies alone also come from k-meshes
(``pyscf.pbc.dft.KRKS``) up to 4x4x4, cheaper than the equivalent supercell.

Each calculation is one JSON file under the study folder (written when it ends),
so a killed study resumes at the next calculation. :func:`report` turns the
folder into the tables of ``docs/convergence.md``.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

import ase
import ase.io
import numpy as np

from legato.units import HARTREE_IN_EV

from .label import DFTSettings, label_frame


@dataclass(frozen=True)
class Calculation:
    """One DFT calculation of the study: a frame, its sampling and its basis."""

    frame: str  # key into the study's frames
    repeat: int = 1  # Gamma point of the repeat x repeat x repeat supercell
    kmesh: int = 0  # > 0: energy only, Gamma-centred kmesh^3 k-points in the frame's own cell
    basis: str = "gth-dzvp"
    code: str = "pyscf"  # or "cp2k" (supercells only)
    cutoff: float = 0.0  # CP2K plane-wave cutoff, Ry; 0 = the protocol's (DFTSettings.cp2k_cutoff)

    @property
    def name(self) -> str:
        sampling = f"k{self.kmesh}" if self.kmesh else f"sc{self.repeat}"
        return f"{self.frame}-{sampling}-{self.basis}" + ("-cp2k" if self.code == "cp2k" else "") + (f"-{self.cutoff:g}Ry" if self.cutoff else "")


def study_frames(solid: ase.Atoms, liquid: ase.Atoms, solid_other: ase.Atoms) -> dict[str, ase.Atoms]:
    """The study's frames: a thermal solid frame, a second one of the same cell,
    the first compressed and expanded by 3.5% in lattice constant (same fractional
    positions, so molecules are strained too), and a liquid box."""
    frames = {"solid": solid, "solid_b": solid_other, "liquid": liquid}
    for name, scale in (("solid_compressed", 0.965), ("solid_expanded", 1.035)):
        strained = solid.copy()
        strained.set_cell(solid.cell.array * scale, scale_atoms=True)
        frames[name] = strained
    return frames


#: cheap first, then what decides the protocol (forces at Gamma vs 2x2x2 vs 3x3x3), so the
#: early tables fill while the large supercells run. PySCF gives the k-mesh energies and
#: the first supercells; CP2K (same method, 3-4x faster) the rest, sc1 of every frame in
#: both codes, so that each comparison is made within one code.
SOLIDS = ("solid", "solid_b", "solid_compressed", "solid_expanded")
FRAMES = SOLIDS + ("liquid",)
DEFAULT_PLAN = (
    [Calculation(f) for f in FRAMES]
    + [Calculation(f, kmesh=2) for f in SOLIDS]
    + [Calculation("solid", repeat=2), Calculation("solid", kmesh=3)]
    + [Calculation(f, code="cp2k") for f in FRAMES]
    + [Calculation(f, basis=b, code="cp2k") for b in ("gth-tzv2p", "gth-qzv3p") for f in ("solid", "liquid")]
    + [Calculation("solid", repeat=2, code="cp2k"), Calculation("solid", repeat=3, code="cp2k")]
    + [Calculation(f, repeat=2, code="cp2k") for f in SOLIDS[1:]]
    + [Calculation("liquid", repeat=2, code="cp2k")]
    + [Calculation(f, repeat=3, code="cp2k") for f in SOLIDS[1:]]
    + [Calculation(f, kmesh=3) for f in SOLIDS[1:]]
    # the 432-atom 3x3x3 cell at 800 Ry needs more memory than a shared 24 GB machine gives
    # (killed twice); at 400 Ry it needs a third, and the 2x2x2 -> 3x3x3 step is taken at
    # 400 Ry on both sides (the cutoff's own error is a property of the frame, checked by
    # sc2 at 400 vs 800 Ry)
    + [Calculation("solid", repeat=n, code="cp2k", cutoff=400.0) for n in (1, 2, 3)]
)


def kmesh_energy(atoms: ase.Atoms, kmesh: int, settings: DFTSettings) -> float:
    """PBE(-D3) energy in eV of the periodic frame with a Gamma-centred kmesh^3 k-mesh."""
    from pyscf.pbc import dft

    from .label import SCFNotConverged, _cell

    cell = _cell(atoms, settings)
    mf = dft.KRKS(cell, kpts=cell.make_kpts([kmesh] * 3, wrap_around=True), xc=settings.xc).multigrid_numint()
    mf.conv_tol = settings.conv_tol
    mf.max_cycle = settings.max_cycle
    energy = mf.kernel()
    if not mf.converged:
        raise SCFNotConverged(f"SCF not converged in {settings.max_cycle} cycles")
    if settings.dispersion:
        from pyscf.dispersion.dftd3 import DFTD3Dispersion

        energy += float(DFTD3Dispersion(cell, settings.xc, version=settings.dispersion).get_dispersion()["energy"])
    return float(energy) * HARTREE_IN_EV


def run_calculation(calc: Calculation, atoms: ase.Atoms, settings: DFTSettings) -> dict:
    """Energy (eV per atom of the frame), forces on the frame's atoms (eV/A) and dipole per frame (e*A)."""
    settings = replace(settings, basis=calc.basis, code=calc.code, wannier_order=1 if calc.code == "cp2k" else settings.wannier_order)
    if calc.cutoff:
        settings = replace(settings, cp2k_cutoff=calc.cutoff)
    start = time.time()
    if calc.kmesh:
        energy = kmesh_energy(atoms, calc.kmesh, settings)
        result = {"energy_per_atom": energy / len(atoms)}
    else:
        big = atoms.repeat(calc.repeat)
        labelled = label_frame(big, settings)
        n = len(atoms)
        forces = labelled.arrays["forces"].reshape(-1, n, 3)  # ase.repeat puts images one after another
        result = {
            "energy_per_atom": labelled.info["energy"] / len(big),
            "forces": forces[0].tolist(),
            "image_spread": float(np.abs(forces - forces[0]).max()),  # should be ~0: a check on the supercell
            "dipole": (np.asarray(labelled.info["dipole"]) / calc.repeat**3).tolist(),
            "scf_cycles": labelled.info.get("scf_cycles"),
        }
    result.update(name=calc.name, frame=calc.frame, repeat=calc.repeat, kmesh=calc.kmesh, basis=calc.basis,
                  atoms=len(atoms) * calc.repeat**3, seconds=round(time.time() - start, 1),
                  threads=int(os.environ.get("OMP_NUM_THREADS", "0") or 0))
    return result


def run_study(frames: dict[str, ase.Atoms], folder: Path, plan=DEFAULT_PLAN, settings: DFTSettings | None = None, progress: bool = True) -> None:
    """Run every calculation of ``plan`` not yet in ``folder`` (one JSON each)."""
    from tqdm import tqdm

    settings = settings or DFTSettings()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, atoms in frames.items():
        path = folder / f"{name}.extxyz"
        if not path.exists():
            ase.io.write(path, atoms, format="extxyz")
    todo = [c for c in plan if not (folder / f"{c.name}.json").exists()]
    for calc in tqdm(todo, desc="convergence", unit="calc", disable=not progress):
        atoms = ase.io.read(folder / f"{calc.frame}.extxyz", format="extxyz")
        try:
            result = run_calculation(calc, atoms, settings)
        except Exception as exc:  # one failed calculation must not stop the others; recorded, not retried
            result = {"name": calc.name, "failed": f"{type(exc).__name__}: {exc}"}
        tmp = folder / f"{calc.name}.json.tmp"
        tmp.write_text(json.dumps(result, indent=1))
        os.replace(tmp, folder / f"{calc.name}.json")
        tqdm.write(f"{calc.name}: {result.get('seconds', 'failed')} s {result.get('failed', '')}")


def load(folder: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(Path(folder).glob("*.json"))}


def force_difference(a: dict, b: dict) -> tuple[float, float]:
    """Mean and largest |F_a - F_b| over the frame's atoms and components, meV/A."""
    diff = np.abs(np.asarray(a["forces"]) - np.asarray(b["forces"])) * 1000
    return float(diff.mean()), float(diff.max())


SAMPLINGS = (("sc1", "Gamma"), ("k2", "2x2x2 k"), ("sc2", "Gamma, 2x2x2 cell"), ("k3", "3x3x3 k"), ("sc3", "Gamma, 3x3x3 cell"), ("k4", "4x4x4 k"))
CODES = (("pyscf", ""), ("cp2k", "-cp2k"))


def report(folder: Path) -> str:
    """Markdown tables: energies per atom vs sampling, relative energies, forces vs sampling,
    basis and code, and the cost of each calculation."""
    results = {k: v for k, v in load(folder).items() if "failed" not in v}
    frames = [f for f in FRAMES if any(r["frame"] == f for r in results.values())]

    def get(frame, sampling, basis="gth-dzvp", code=""):
        return results.get(f"{frame}-{sampling}-{basis}{code}")

    head = "| frame | code | " + " | ".join(label for _, label in SAMPLINGS) + " |"
    sep = "|---" * (len(SAMPLINGS) + 2) + "|"
    lines = ["Energy per atom (meV), PBE-D3(BJ), GTH-DZVP:", "", head, sep]
    for frame in frames:
        for code_name, code in CODES:
            cells = [f"{get(frame, k, code=code)['energy_per_atom'] * 1000:.1f}" if get(frame, k, code=code) else "" for k, _ in SAMPLINGS]
            if any(cells):
                lines.append(f"| {frame} | {code_name} | " + " | ".join(cells) + " |")
    lines += ["", "Energy per atom (meV) relative to `solid` at the same sampling:", "", head, sep]
    for frame in frames:
        if frame in ("solid", "liquid"):
            continue
        for code_name, code in CODES:
            cells = []
            for key, _ in SAMPLINGS:
                r, ref = get(frame, key, code=code), get("solid", key, code=code)
                cells.append(f"{(r['energy_per_atom'] - ref['energy_per_atom']) * 1000:+.2f}" if r and ref else "")
            if any(cells):
                lines.append(f"| {frame} | {code_name} | " + " | ".join(cells) + " |")
    lines += ["", "Forces: mean / largest |dF| (meV/A) against the best-sampled supercell of the same frame and code:", "",
              "| frame | code | reference | Gamma | Gamma, 2x2x2 cell |", "|---|---|---|---|---|"]
    for frame in frames:
        for code_name, code in CODES:
            best = next((get(frame, k, code=code) for k in ("sc3", "sc2") if get(frame, k, code=code)), None)
            if best is None:
                continue
            cells = []
            for key in ("sc1", "sc2"):
                r = get(frame, key, code=code)
                cells.append("%.1f / %.1f" % force_difference(r, best) if r and r is not best else "")
            n = best["repeat"]
            lines.append(f"| {frame} | {code_name} | Gamma, {n}x{n}x{n} cell | " + " | ".join(cells) + " |")
    lines += ["", "Basis at the Gamma point, mean / largest |F(basis) - F(largest basis run)| (meV/A):", ""]
    bases = ("gth-dzvp", "gth-tzv2p", "gth-qzv3p")
    for frame in frames:
        for code_name, code in CODES:
            done = [b for b in bases if get(frame, "sc1", b, code)]
            if len(done) < 2:
                continue
            best = get(frame, "sc1", done[-1], code)
            cells = [f"{b} " + "%.1f / %.1f" % force_difference(get(frame, "sc1", b, code), best) for b in done[:-1]]
            lines.append(f"- {frame} ({code_name}), against {done[-1]}: " + "; ".join(cells))
    lines += ["", "Code: mean / largest |F(PySCF) - F(CP2K)| (meV/A) and energy per atom relative to `solid`, same frame and sampling:", ""]
    for frame in frames:
        for key, label in SAMPLINGS:
            a, b = get(frame, key), get(frame, key, code="-cp2k")
            if a and b and "forces" in a:
                rel = ""
                ra, rb = get("solid", key), get("solid", key, code="-cp2k")
                if frame != "solid" and ra and rb:
                    delta = (a["energy_per_atom"] - ra["energy_per_atom"]) - (b["energy_per_atom"] - rb["energy_per_atom"])
                    rel = f"; relative energy {delta * 1000:+.3f} meV/atom"
                lines.append(f"- {frame}, {label}: " + "%.1f / %.1f meV/A" % force_difference(a, b) + rel)
    for cutoff in sorted({float(n.rsplit("-", 1)[1][:-2]) for n in results if n.endswith("Ry")}):
        suffix = f"-cp2k-{cutoff:g}Ry"
        lines += ["", f"CP2K at {cutoff:g} Ry: energy per atom, forces against the largest cell, and the spread between a supercell's images:", ""]
        for frame in frames:
            runs = {n: get(frame, f"sc{n}", code=suffix) for n in (1, 2, 3)}
            runs = {n: r for n, r in runs.items() if r}
            if len(runs) < 2:
                continue
            best = runs[max(runs)]
            for n, r in runs.items():
                versus = "" if r is best else "; forces %.1f / %.1f meV/A" % force_difference(r, best)
                lines.append(f"- {frame}, Gamma of {n}x{n}x{n}: {r['energy_per_atom'] * 1000:.2f} meV/atom{versus}; image spread {1000 * r['image_spread']:.1f} meV/A")
            default = get(frame, "sc2", code="-cp2k")
            if default and 2 in runs:
                lines.append(f"- {frame}, Gamma of 2x2x2, {cutoff:g} vs {DFTSettings().cp2k_cutoff:g} Ry: forces " + "%.1f / %.1f meV/A" % force_difference(runs[2], default))
    lines += ["", "Cost (wall seconds on one core, threads as run; other jobs shared the machine):", ""]
    for name, r in results.items():
        lines.append(f"- {name}: {r['atoms']} atoms, {r['seconds']:.0f} s")
    return "\n".join(lines)


def main(argv=None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="study folder (resumes what it holds)")
    parser.add_argument("--solid", default="data/nh3_dft_al13_solid.extxyz@0", help="FILE@INDEX of a thermal solid frame")
    parser.add_argument("--solid-other", default="data/nh3_dft_al13_solid.extxyz@1", help="FILE@INDEX, same cell")
    parser.add_argument("--liquid", default="data/nh3_dft_al11_liquid.extxyz@0", help="FILE@INDEX of a liquid box")
    parser.add_argument("--report", action="store_true", help="print the tables of what is done and stop")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these calculations of the plan (e.g. solid-sc3-gth-dzvp-cp2k)")
    args = parser.parse_args(argv)
    if args.report:
        print(report(args.folder))
        return

    def frame(spec):
        path, _, index = spec.partition("@")
        atoms = ase.io.read(path, index=int(index or 0))
        return ase.Atoms(atoms.get_chemical_symbols(), atoms.positions, cell=atoms.cell, pbc=True)

    plan = DEFAULT_PLAN
    if args.only:
        names = {c.name for c in plan}
        unknown = sorted(set(args.only) - names)
        if unknown:
            parser.error(f"--only: {', '.join(unknown)} not in the plan; it holds {', '.join(sorted(names))}")
        plan = [c for c in plan if c.name in args.only]
    run_study(study_frames(frame(args.solid), frame(args.liquid), frame(args.solid_other)), args.folder, plan=plan)


if __name__ == "__main__":
    main()
