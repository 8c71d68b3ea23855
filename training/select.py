"""Active learning: pick the frames where a committee of models disagrees most.

Disagreement of a frame = max over atoms of the standard deviation (over models)
of the predicted force vectors, |F_i - <F_i>| rms over the committee (eV/A), the
usual query-by-committee criterion.
"""

from __future__ import annotations

import glob
import itertools
from pathlib import Path

import numpy as np

from legato.dataset import frame_key
from legato.fileio import read_structures
from legato.potential import ModelPotential


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


def candidate_files(patterns) -> list[Path]:
    """Files named by ``patterns`` (paths, or glob patterns such as ``runs/x/simulation.pos_*.xyz``);
    ValueError naming a pattern that matches nothing."""
    paths = []
    for pattern in patterns:
        pattern = str(pattern)
        matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern] if Path(pattern).exists() else []
        if not matches:
            raise ValueError(f"{pattern}: no such file")
        paths += [Path(m) for m in matches]
    return paths


def read_candidates(paths, skip: int = 0, cell: float | None = None) -> tuple[list, list[str]]:
    """The frames of ``paths`` after the first ``skip`` of each file, each once (``frame_key``),
    with their provenance in ``info`` (``selected_from``, ``selected_index``); and each frame's file.
    ``cell``: a cubic cell edge (A) for frames that carry none."""
    candidates, sources, seen = [], [], set()
    for path in paths:
        for index, atoms in enumerate(read_structures(path)[skip:], start=skip):
            if cell is not None:
                atoms.set_cell(np.eye(3) * cell)
                atoms.pbc = True
            key = frame_key(atoms)
            if key in seen:  # e.g. the starting structure, step 0 of every bead
                continue
            seen.add(key)
            atoms.info.update(selected_from=str(path), selected_index=index)  # provenance, kept by `legato label`
            candidates.append(atoms)
            sources.append(str(path))
    return candidates, sources


def committee_select(models, patterns, n: int = 20, min_separation: int = 5, skip: int = 0, cell: float | None = None) -> dict:
    """`legato select`: the ``n`` frames of the candidate files where the committee ``models``
    (two or more model files) disagrees most, each with ``committee_force_spread`` (eV/A) in ``info``.

    Returns ``frames`` (picked), ``candidates`` (how many were scored), ``files`` and
    ``spread`` (min, max over the picked frames). ValueError (one line) for a committee
    of fewer than two distinct models or no frames left.
    """
    models = [Path(m) for m in models]
    if len(models) < 2:
        raise ValueError("a committee needs at least two models")
    if len({m.resolve() for m in models}) < len(models):
        raise ValueError("the committee lists a model file twice: give distinct models (e.g. trained with seed=0,1,2)")
    paths = candidate_files(patterns)
    candidates, sources = read_candidates(paths, skip, cell)
    if not candidates:
        raise ValueError(f"no frames left in {', '.join(map(str, paths))} after --skip {skip}")
    scores = force_disagreement([ModelPotential.from_file(m) for m in models], candidates)
    picked = select_frames(scores, n, min_separation, groups=sources)
    for i in picked:
        candidates[i].info["committee_force_spread"] = round(float(scores[i]), 4)
    return {
        "frames": [candidates[i] for i in picked],
        "candidates": len(candidates),
        "files": paths,
        "spread": (float(scores[picked].min()), float(scores[picked].max())),
    }
