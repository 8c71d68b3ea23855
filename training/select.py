"""Active learning: pick the frames where a committee of models disagrees most.

Disagreement of a frame = max over atoms of the standard deviation (over models)
of the predicted force vectors, |F_i - <F_i>| rms over the committee (eV/A), the
usual query-by-committee criterion.
"""

from __future__ import annotations

import itertools

import numpy as np

from .potential import ModelPotential


def force_disagreement(potentials: list[ModelPotential], frames) -> np.ndarray:
    """Per-frame committee disagreement (eV/A). Runs of frames with the same species and
    periodicity (e.g. one trajectory) go to each model together (``ModelPotential.evaluate``
    batches them)."""
    scores = []
    for _, run in itertools.groupby(frames, key=lambda atoms: (tuple(atoms.numbers), tuple(atoms.pbc))):
        run = list(run)
        symbols, pbc = run[0].get_chemical_symbols(), run[0].pbc
        positions = np.stack([atoms.positions for atoms in run])
        cells = np.stack([atoms.cell.array for atoms in run]) if pbc.any() else None
        forces = np.stack([p.evaluate(symbols, positions, cells, pbc)["forces"] for p in potentials])  # (models, frames, atoms, 3)
        spread = np.sqrt(((forces - forces.mean(axis=0)) ** 2).sum(axis=-1).mean(axis=0))  # (frames, atoms)
        scores.extend(spread.max(axis=1))
    return np.array(scores)


def select_frames(scores: np.ndarray, n: int, min_separation: int = 1, groups=None) -> list[int]:
    """Indices of the ``n`` highest ``scores`` (committee disagreement per frame), at least
    ``min_separation`` apart in the list, or, with ``groups`` (one label per frame, e.g. its
    trajectory file), at least that far apart within each group."""
    groups = np.zeros(len(scores), dtype=int) if groups is None else np.asarray(groups)
    position = np.zeros(len(scores), dtype=int)  # index within the frame's group
    for g in np.unique(groups):
        position[groups == g] = np.arange((groups == g).sum())
    chosen: list[int] = []
    for i in np.argsort(-scores, kind="stable"):
        if all(groups[i] != groups[j] or abs(position[i] - position[j]) >= min_separation for j in chosen):
            chosen.append(int(i))
        if len(chosen) == n:
            break
    return sorted(chosen)
