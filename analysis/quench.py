"""Quench check: did MD carry the structure to another minimum of the model?

Relax the start and the last MD frame at fixed cell with the same model and compare.
Thermal motion relaxes back to the starting minimum (heavy atoms return to within
a few hundredths of an angstrom); a model with a spurious minimum near the crystal
lets the heavy atoms drift there, often over picoseconds while bond orientations
stay ordered (so ``orientation`` alone misses it). The energy change says which
minimum the model prefers; compare it with DFT on the two relaxed structures.
"""

from __future__ import annotations

from dataclasses import dataclass

import ase
import numpy as np
from ase.geometry import find_mic

from legato.potential import relaxed


@dataclass
class QuenchResult:
    heavy_shift_A: float  # largest heavy-atom displacement between the two minima, overall drift removed (A)
    energy_change_meV: float  # relaxed final minus relaxed start (meV per cell)
    start: ase.Atoms  # the relaxed structures, to label with DFT
    final: ase.Atoms

    def summary(self) -> str:
        return f"quenched last frame: heavy atoms up to {self.heavy_shift_A:.2f} A from the relaxed start, energy {self.energy_change_meV:+.1f} meV/cell"


def heavy_atom_shift(start: ase.Atoms, final: ase.Atoms) -> float:
    """Largest displacement (A, minimum image) of a non-hydrogen atom from ``start`` to
    ``final`` after removing the mean displacement of all atoms (drift of the whole cell)."""
    moves = find_mic(final.positions - start.positions, start.cell, start.pbc)[0]
    moves -= moves.mean(axis=0)
    heavy = start.numbers > 1
    if not heavy.any():
        raise ValueError("no atom heavier than hydrogen to follow")
    return float(np.linalg.norm(moves[heavy], axis=1).max())


def quench(start: ase.Atoms, final: ase.Atoms, calculator, fmax: float = 0.01, max_steps: int = 1000) -> QuenchResult:
    """Relax ``start`` and ``final`` (same atoms, same cell) with ``calculator``; compare."""
    start_min = relaxed(start, calculator, fmax=fmax, max_steps=max_steps)
    final_min = relaxed(final, calculator, fmax=fmax, max_steps=max_steps)
    return QuenchResult(
        heavy_shift_A=heavy_atom_shift(start_min, final_min),
        energy_change_meV=1e3 * (final_min.info["relaxed_energy"] - start_min.info["relaxed_energy"]),
        start=start_min,
        final=final_min,
    )
