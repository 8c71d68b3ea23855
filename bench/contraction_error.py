"""How well does a cheap model serve ring-polymer contraction? A minute's screening before a PIMD validation.

    python bench/contraction_error.py RUN_DIR [--fast-model FILE ...] [--contract 4 --contract 8] [--frames 12]

RUN_DIR is a PIMD run whose bead positions i-PI wrote (``simulation.pos_*``, one file per
bead). On each of ``--frames`` ring polymers spread over the run's second half, the correction
of a contracted run, c = F_full - F_cheap (eV/A), is computed exactly on every bead and, as
i-PI does for a component on P' beads, on the contracted ring polymer and interpolated back
(i-PI's own ``nm_rescale``). The root-mean-square difference per species is the force error
contraction makes with that cheap model; it is zero where the correction is smooth on the
scale of the ring polymer. Printed beside it: the correction's own size. Screening only:
`bench/validate_fastpath.py` measures what the error does to kinetic energies and spectra.
"""

import argparse
from pathlib import Path

import numpy as np
from ase.geometry import cellpar_to_cell
from ipi.utils.nmtransform import nm_rescale

from legato.fileio import bead_files, iter_xyz, read_xyz
from legato.potential import ModelPotential
from legato.shipped import default_model, fast_model


def ring_polymers(run_dir: Path, n_frames: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    """symbols, positions (frames, beads, atoms, 3) A and the cell (3, 3) A of ``n_frames`` steps of the run's second half."""
    files = bead_files(run_dir, "simulation", "pos")  # raises, naming the run, where there are none
    beads = []
    for path in files:
        _, positions, symbols = read_xyz(path, allow_truncated=True)
        beads.append(positions)
    steps = min(len(b) for b in beads)
    picked = np.linspace(steps // 2, steps - 1, n_frames).astype(int)
    cell = cellpar_to_cell(next(iter_xyz(files[0]))[1])  # NVT: the cell of the first frame
    return symbols, np.stack([b[picked] for b in beads], axis=1), cell


def corrections(full: ModelPotential, cheap: ModelPotential, symbols, positions: np.ndarray, cell: np.ndarray) -> np.ndarray:
    """F_full - F_cheap (eV/A) on frames ``positions`` (B, atoms, 3)."""
    cells = np.repeat(cell[None], len(positions), axis=0)
    return full.evaluate(symbols, positions, cells, dipoles=False)["forces"] - cheap.evaluate(symbols, positions, cells, dipoles=False)["forces"]


def contraction_errors(full, cheap, symbols, rings: np.ndarray, cell, contract: list[int]) -> dict:
    """Per species: RMS correction and, for each P', RMS of (interpolated - exact) correction, meV/A."""
    n_frames, n_beads, n_atoms, _ = rings.shape
    exact = corrections(full, cheap, symbols, rings.reshape(-1, n_atoms, 3), cell).reshape(rings.shape)
    species = np.array(symbols)
    rows = {s: {"correction": 1000 * float(np.sqrt(np.mean(exact[:, :, species == s] ** 2)))} for s in sorted(set(symbols))}
    for p in contract:
        rescale = nm_rescale(n_beads, p)
        small = np.stack([rescale.b1tob2(ring.reshape(n_beads, -1)).reshape(p, n_atoms, 3) for ring in rings])
        on_small = corrections(full, cheap, symbols, small.reshape(-1, n_atoms, 3), cell).reshape(n_frames, p, n_atoms, 3)
        back = np.stack([rescale.b2tob1(c.reshape(p, -1)).reshape(n_beads, n_atoms, 3) for c in on_small])
        for s in rows:
            rows[s][p] = 1000 * float(np.sqrt(np.mean((back - exact)[:, :, species == s] ** 2)))
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--model", type=Path, default=None, help="the full model (default: the shipped SAM model)")
    parser.add_argument("--fast-model", type=Path, action="append", help="cheap model(s) to compare (default: the shipped one)")
    parser.add_argument("--contract", type=int, action="append", help="P' (default: 4 and 8)")
    parser.add_argument("--frames", type=int, default=12)
    args = parser.parse_args(argv)
    symbols, rings, cell = ring_polymers(args.run_dir, args.frames)
    contract = args.contract or [4, 8]
    if any(p > rings.shape[1] or p < 1 for p in contract):
        raise SystemExit(f"--contract {contract}: give 1 to {rings.shape[1]} beads (the run's P)")
    full = ModelPotential.from_file(args.model or default_model(), atoms_per_call=rings.shape[2] * 8)
    print(f"{args.run_dir}: {rings.shape[0]} ring polymers of {rings.shape[1]} beads, {rings.shape[2]} atoms; full model {args.model or default_model()}")
    print("| cheap model | species | correction F_full - F_cheap, RMS (meV/A) | " + " | ".join(f"contraction error P'={p} (meV/A)" for p in contract) + " |")
    print("|---|---|---|" + "---|" * len(contract))
    for path in args.fast_model or [fast_model()]:
        cheap = ModelPotential.from_file(path, atoms_per_call=rings.shape[2] * 8)
        for s, row in contraction_errors(full, cheap, symbols, rings, cell, contract).items():
            print(f"| {path} | {s} | {row['correction']:.0f} | " + " | ".join(f"{row[p]:.1f}" for p in contract) + " |")


if __name__ == "__main__":
    main()
