"""Active learning: pick the frames where a committee of models disagrees most.

Disagreement of a frame = max over atoms of the standard deviation (over models)
of the predicted force vectors, |F_i - <F_i>| rms over the committee (eV/A), the
usual query-by-committee criterion.
"""

from __future__ import annotations

import numpy as np

from .potential import ModelPotential


def force_disagreement(potentials: list[ModelPotential], frames) -> np.ndarray:
    """Per-frame committee disagreement (eV/A)."""
    scores = []
    for atoms in frames:
        cell = atoms.cell.array[None] if atoms.pbc.any() else None
        forces = np.stack([p.evaluate(atoms.get_chemical_symbols(), atoms.positions, cell, atoms.pbc)["forces"][0] for p in potentials])
        spread = np.sqrt(((forces - forces.mean(axis=0)) ** 2).sum(axis=-1).mean(axis=0))  # per atom
        scores.append(spread.max())
    return np.array(scores)


def select_frames(scores: np.ndarray, n: int, min_separation: int = 1) -> list[int]:
    """Indices of the ``n`` highest ``scores`` (committee disagreement per frame), at least
    ``min_separation`` apart in the list."""
    chosen: list[int] = []
    for i in np.argsort(-scores):
        if all(abs(int(i) - j) >= min_separation for j in chosen):
            chosen.append(int(i))
        if len(chosen) == n:
            break
    return sorted(chosen)
