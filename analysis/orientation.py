"""Orientational order in MD: how far the bonds to hydrogen turn from where they started.

In an orientationally ordered molecular crystal (ammonia phase I below its
195 K melting point) molecules only librate about their lattice orientation.
A harmonic libration of angular frequency w and moment of inertia I turns a
bond by sqrt(kT / (I w^2)) rms per axis: for NH3 (I ~ 1.7-2.7 amu A^2,
librations 300-500 cm^-1) about 6 degrees per axis, ~10 degrees in all, at
150 K (classical). A model whose bonds turn much further at such temperatures
has too soft an orientational landscape even if its test-set errors are low,
so this check is part of accepting a model (see models/README.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from legato.geometry import covalent_neighbours


@dataclass
class OrientationResult:
    temperature: float  # K
    steps: int
    timestep_fs: float
    n_bonds: int
    mean_angle_deg: float  # bond turn from the start, averaged over bonds and the second half of the run
    final_mean_angle_deg: float  # averaged over bonds at the last step
    turned_fraction: float  # bonds more than 45 degrees from the start at the last step
    final: object = field(repr=False)  # ase.Atoms at the last step (e.g. for analysis.quench)

    def summary(self) -> str:
        return (
            f"{self.n_bonds} X-H bonds, {self.steps} steps at {self.temperature:.0f} K: mean turn {self.mean_angle_deg:.1f} deg "
            f"(second half), {self.final_mean_angle_deg:.1f} deg at the end, {100 * self.turned_fraction:.0f}% turned > 45 deg"
        )


def hydrogen_bonds(atoms) -> np.ndarray:
    """Covalent bonds (i, j) from a heavier atom i to a hydrogen j (ASE natural cutoffs)."""
    neighbours = covalent_neighbours(atoms)
    numbers = atoms.numbers
    pairs = [(i, j) for j in np.flatnonzero(numbers == 1) for i in neighbours.get_neighbors(j)[0] if numbers[i] > 1]
    if not pairs:
        raise ValueError("no covalent bond to hydrogen in the structure: nothing to follow")
    return np.array(sorted(pairs))


def bond_vectors(atoms, pairs: np.ndarray) -> np.ndarray:
    """Unit vectors (n_bonds, 3) along each bond, minimum image."""
    vectors = np.array([atoms.get_distance(i, j, mic=True, vector=True) for i, j in pairs])
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def turn_angles(start: np.ndarray, now: np.ndarray) -> np.ndarray:
    """Angle (degrees) between matching unit vectors."""
    return np.degrees(np.arccos(np.clip((start * now).sum(axis=1), -1.0, 1.0)))


def orientation_run(atoms, calculator, temperature: float, steps: int, seed: int = 0, timestep_fs: float = 0.5, friction: float = 0.01, sample_every: int = 10, progress=None) -> OrientationResult:
    """Langevin MD (ASE, classical) from ``atoms``; how far X-H bonds turn.

    ``friction`` is in 1/fs; ``progress`` (optional) is called with the steps done.
    """
    from .robustness import langevin

    pairs = hydrogen_bonds(atoms)
    start = bond_vectors(atoms, pairs)
    dyn = langevin(atoms, calculator, temperature, seed, timestep_fs, friction)
    atoms = dyn.atoms
    samples = []
    done = 0
    while done < steps:
        chunk = min(sample_every, steps - done)
        dyn.run(chunk)
        done += chunk
        if not np.all(np.isfinite(atoms.positions)):
            raise FloatingPointError(f"non-finite positions after {done} steps")
        samples.append(turn_angles(start, bond_vectors(atoms, pairs)))
        if progress:
            progress(done)
    second_half = np.array(samples[len(samples) // 2 :])
    return OrientationResult(
        temperature=temperature,
        steps=steps,
        timestep_fs=timestep_fs,
        n_bonds=len(pairs),
        mean_angle_deg=float(second_half.mean()),
        final_mean_angle_deg=float(samples[-1].mean()),
        turned_fraction=float((samples[-1] > 45.0).mean()),
        final=atoms.copy(),
    )


def orientation_check(model, structure=None, repeat: int = 2, temperature: float = 150.0, steps: int = 4000, seed: int = 0, device: str = "cpu", progress: bool = True):
    """`legato orientation`: classical MD of the ``repeat``-times supercell of ``structure``
    (default: phase I, see :func:`~legato.analysis.failure_study.unit_cell`) with a model
    file, then a quench of the last frame (:func:`~legato.analysis.quench.quench`).

    Returns ``(OrientationResult, QuenchResult)``. Raises ValueError, FloatingPointError
    (the run blew up) or RuntimeError (the quench did not converge), each one line.
    """
    from pathlib import Path

    from tqdm import tqdm

    from legato.potential import LegatoCalculator, ModelPotential

    from .failure_study import unit_cell
    from .quench import quench

    model = Path(model)
    atoms = unit_cell(structure).repeat(repeat)
    calc = LegatoCalculator(potential=ModelPotential.from_file(model, device=device))
    with tqdm(total=steps, desc=f"orientation {model.name}", unit="step", disable=not progress) as bar:
        result = orientation_run(atoms, calc, temperature, steps, seed=seed, progress=lambda done: bar.update(done - bar.n))
    try:
        quenched = quench(atoms, result.final, calc)
    except RuntimeError as exc:
        raise RuntimeError(f"quench: {exc}") from None
    return result, quenched
