"""Merging labelled data sets: frames far outside thermal sampling and repeated frames are dropped."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from legato.dataset import frame_key, load_dataset, validate_frames
from legato.geometry import closest_approach


def merge_datasets(inputs, output, min_distance: float = 0.8, max_force: float = 25.0) -> dict:
    """`legato merge`: the frames of the labelled files ``inputs`` (each with ``source_file`` in
    ``info``) whose closest atoms are at least ``min_distance`` A apart and whose forces stay
    below ``max_force`` eV/A, each frame once; validated as one data set named ``output``.

    Returns ``frames``, ``dropped`` (outside thermal sampling) and ``duplicates``. Raises
    :class:`~legato.dataset.DatasetError`, or ValueError where ``output`` is also an input.
    """
    inputs = [Path(p) for p in inputs]
    if Path(output).resolve() in {p.resolve() for p in inputs}:
        raise ValueError(f"{output}: also an input; write the merge to a new file")
    kept, dropped, seen, duplicates = [], 0, set(), 0
    for path in inputs:
        for atoms in load_dataset(path):
            if closest_approach(atoms) < min_distance or np.abs(atoms.get_forces()).max() > max_force:
                dropped += 1
                continue
            key = frame_key(atoms)
            if key in seen:  # e.g. every bead of a PIMD run at step 0 is the starting structure
                duplicates += 1
                continue
            seen.add(key)
            atoms.info["source_file"] = path.name
            kept.append(atoms)
    validate_frames(kept, name=str(output))
    return {"frames": kept, "dropped": dropped, "duplicates": duplicates}
