"""Labelled extended-XYZ data sets (what `legato label` writes): reading, validation, frame keys, splitting.

A frame (``ase.Atoms``) carries ``info['energy']`` (eV), ``arrays['forces']``
(eV/Angstrom), ``arrays['wannier_disp']`` (Angstrom), ``arrays['wannier_count']``
and ``arrays['valence_charge']`` (ints), ``info['dipole']`` (e*Angstrom, derived)
and provenance in ``info`` (``method``, ``basis``, ``code``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterable, Sequence

import ase
import ase.io
import numpy as np
from ase.data import chemical_symbols

from legato.fields import VALENCE_CHARGE, WANNIER_COUNT, WANNIER_DISP
from legato.geometry import closest_approach

REQUIRED_ARRAYS = {"forces": 3, WANNIER_DISP: 3, WANNIER_COUNT: 0, VALENCE_CHARGE: 0}
REQUIRED_INFO = ("energy",)
#: closest approach (Angstrom) below which a frame is rejected as overlapping atoms
MIN_DISTANCE = 0.5


class DatasetError(ValueError):
    """A data set problem, with a one-line message naming the fix."""


def read_frames(path: str | Path) -> list[ase.Atoms]:
    """Read every frame of an extxyz file (ASE reads extra arrays and info)."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path}: no such data set file (label structures with `legato label` first)")
    try:
        frames = ase.io.read(path, index=":", format="extxyz")
    except Exception as exc:  # ASE raises many types on malformed files
        raise DatasetError(f"{path}: not a readable extxyz file ({exc})") from exc
    if not frames:
        raise DatasetError(f"{path}: holds no frames")
    return frames


def _forces(atoms: ase.Atoms):
    if "forces" in atoms.arrays:
        return atoms.arrays["forces"]
    if atoms.calc is not None and "forces" in atoms.calc.results:
        return atoms.calc.results["forces"]
    return None


def _energy(atoms: ase.Atoms):
    if "energy" in atoms.info:
        return atoms.info["energy"]
    if atoms.calc is not None and "energy" in atoms.calc.results:
        return atoms.calc.results["energy"]
    return None


def frame_dipole(atoms: ase.Atoms):
    """The frame's dipole (e*A) as stored, or None (ASE moves it into the calculator)."""
    if "dipole" in atoms.info:
        return np.asarray(atoms.info["dipole"])
    if atoms.calc is not None and "dipole" in atoms.calc.results:
        return np.asarray(atoms.calc.results["dipole"])
    return None


def validate_frame(atoms: ase.Atoms, where: str, species: Sequence[str] | None = None) -> None:
    """Raise :class:`DatasetError` naming the first problem of one frame."""
    n = len(atoms)
    if species is not None:
        unknown = sorted(set(atoms.get_chemical_symbols()) - set(species))
        if unknown:
            raise DatasetError(f"{where}: species {unknown} not in the model's {list(species)} (add them to type_names)")
    if _energy(atoms) is None:
        raise DatasetError(f"{where}: missing info 'energy' (eV)")
    if not np.isfinite(float(_energy(atoms))):
        raise DatasetError(f"{where}: energy is not finite")
    for name, width in REQUIRED_ARRAYS.items():
        value = _forces(atoms) if name == "forces" else atoms.arrays.get(name)
        if value is None:
            raise DatasetError(f"{where}: missing per-atom array '{name}' (relabel with `legato label`)")
        value = np.asarray(value)
        expected = (n, width) if width else (n,)
        if value.shape != expected:
            raise DatasetError(f"{where}: '{name}' has shape {value.shape}, expected {expected}")
        if not np.all(np.isfinite(value)):
            raise DatasetError(f"{where}: '{name}' holds NaN or inf")
    if not np.all(np.isfinite(atoms.positions)):
        raise DatasetError(f"{where}: positions hold NaN or inf")
    if atoms.pbc.any() and abs(atoms.cell.volume) < 1e-6:
        raise DatasetError(f"{where}: periodic frame with a singular cell (set a cell or pbc=False)")
    closest = closest_approach(atoms)
    if closest < MIN_DISTANCE:
        raise DatasetError(f"{where}: atoms {closest:.3f} A apart (< {MIN_DISTANCE} A): overlapping atoms")


def frame_provenance(info: dict) -> dict:
    """Level of theory of a labelled frame; frames without ``wannier_order`` used order 1 (the first
    estimator), frames without ``min_cell_length`` the Gamma point of their own cell (0)."""
    return {
        "method": info.get("method"),
        "basis": info.get("basis"),
        "pseudo": info.get("pseudo"),
        "wannier_order": int(info.get("wannier_order", 1)),
        "min_cell_length": float(info.get("min_cell_length", 0.0)),
    }


def validate_frames(frames: Iterable[ase.Atoms], species: Sequence[str] | None = None, name: str = "data") -> None:
    """Each frame valid, and all from one level of theory (mixed labels would train a blend)."""
    first = None
    for i, atoms in enumerate(frames):
        validate_frame(atoms, f"{name} frame {i}", species)
        theory = frame_provenance(atoms.info)
        first = first or theory
        if theory != first:
            differ = {k: (first[k], theory[k]) for k in theory if theory[k] != first[k]}
            raise DatasetError(f"{name} frame {i}: labelled differently from frame 0 {differ}; relabel so that one data set has one level of theory")


def load_dataset(path: str | Path, species: Sequence[str] | None = None) -> list[ase.Atoms]:
    """Read and validate a data set; the frames are returned as read."""
    frames = read_frames(path)
    validate_frames(frames, species, name=str(path))
    return frames


def species_of(frames: Iterable[ase.Atoms]) -> list[str]:
    """Chemical symbols present, sorted by atomic number (the model's type order)."""
    numbers = sorted({int(z) for atoms in frames for z in atoms.numbers})
    return [chemical_symbols[z] for z in numbers]


def frame_key(atoms: ase.Atoms, seed: int = 0) -> float:
    """A number in [0, 1) fixed by the frame's species, positions and cell (to 1e-6 A) and ``seed``."""
    h = hashlib.sha256(str(seed).encode())
    h.update(np.asarray(atoms.numbers, dtype=np.int64).tobytes())
    for array in (atoms.positions, atoms.cell.array):
        h.update(np.round(np.asarray(array, dtype=np.float64), 6).tobytes())
    return int.from_bytes(h.digest()[:8], "big") / 2.0**64


def split_indices(frames: Sequence[ase.Atoms], fractions: Sequence[float], seed: int = 0) -> list[np.ndarray]:
    """Disjoint index sets with about the given fractions (summing to 1).

    Each frame's set follows from its own content (``frame_key``), not from its place
    in the file: adding frames to a data set never moves the old ones between
    train, validation and test, so models trained before and after can be compared
    on the same held-out frames.
    """
    if abs(sum(fractions) - 1.0) > 1e-9:
        raise DatasetError(f"split fractions {list(fractions)} must sum to 1")
    keys = np.array([frame_key(atoms, seed) for atoms in frames])
    which = np.searchsorted(np.cumsum(fractions)[:-1], keys, side="right")
    return [np.flatnonzero(which == k) for k in range(len(fractions))]
