"""Analytic potentials with the same ``evaluate`` interface as a model.

For tests and teaching: they let the driver, i-PI and the analysis be checked
against exact results. Units: Angstrom, eV, e*Angstrom.
"""

from __future__ import annotations

import numpy as np


class HarmonicPotential:
    """Independent 3D harmonic wells: E = sum_i k/2 |r_i - c_i|^2 (k in eV/A^2).

    The dipole is that of fixed point charges ``charges`` (e) at the atoms.
    """

    def __init__(self, k: float, centres=None, charges=None):
        self.k = float(k)
        self.centres = None if centres is None else np.asarray(centres, float)
        self.charges = None if charges is None else np.asarray(charges, float)

    def evaluate(self, symbols, positions, cells=None, pbc=None, dipoles=True) -> dict:
        positions = np.asarray(positions, float).reshape(-1, len(symbols), 3)
        centres = np.zeros_like(positions[0]) if self.centres is None else self.centres
        delta = positions - centres
        charges = np.zeros(len(symbols)) if self.charges is None else self.charges
        n = positions.shape[0]
        return {
            "energy": 0.5 * self.k * (delta**2).sum(axis=(1, 2)),
            "forces": -self.k * delta,
            "virial": np.zeros((n, 3, 3)),
            "wannier_disp": np.zeros_like(positions),
            "dipole": np.einsum("i,bij->bj", charges, positions),
        }


class MorsePotential:
    """Morse bonds between listed atom pairs: E = D (1 - exp(-a (r - r0)))^2.

    ``D`` eV, ``a`` 1/A, ``r0`` A. Dipole from fixed point charges (e).
    """

    def __init__(self, pairs, D: float, a: float, r0: float, charges=None):
        self.pairs = np.asarray(pairs, int).reshape(-1, 2)
        self.D, self.a, self.r0 = float(D), float(a), float(r0)
        self.charges = None if charges is None else np.asarray(charges, float)

    def evaluate(self, symbols, positions, cells=None, pbc=None, dipoles=True) -> dict:
        positions = np.asarray(positions, float).reshape(-1, len(symbols), 3)
        i, j = self.pairs.T
        vec = positions[:, j] - positions[:, i]
        r = np.linalg.norm(vec, axis=-1)
        x = np.exp(-self.a * (r - self.r0))
        energy = (self.D * (1 - x) ** 2).sum(axis=1)
        dE_dr = 2 * self.D * self.a * x * (1 - x)
        pair_force = (dE_dr / r)[..., None] * vec  # force on i
        forces = np.zeros_like(positions)
        np.add.at(forces, (slice(None), i), pair_force)
        np.add.at(forces, (slice(None), j), -pair_force)
        charges = np.zeros(len(symbols)) if self.charges is None else self.charges
        return {
            "energy": energy,
            "forces": forces,
            "virial": np.zeros((positions.shape[0], 3, 3)),
            "wannier_disp": np.zeros_like(positions),
            "dipole": np.einsum("i,bij->bj", charges, positions),
        }


class HarmonicBondPotential(MorsePotential):
    """Harmonic bonds between listed atom pairs: E = k/2 (r - r0)^2 (``k`` eV/A^2, ``r0`` A).

    With k = 2 D a^2 it is the Morse bond's harmonic approximation: the cheap reference
    of a contracted, multiple-time-step run checked against the Morse molecule itself.
    """

    def __init__(self, pairs, k: float, r0: float, charges=None):
        super().__init__(pairs, D=0.0, a=0.0, r0=r0, charges=charges)
        self.k = float(k)

    def evaluate(self, symbols, positions, cells=None, pbc=None, dipoles=True) -> dict:
        positions = np.asarray(positions, float).reshape(-1, len(symbols), 3)
        i, j = self.pairs.T
        vec = positions[:, j] - positions[:, i]
        r = np.linalg.norm(vec, axis=-1)
        pair_force = (self.k * (r - self.r0) / r)[..., None] * vec  # force on i
        forces = np.zeros_like(positions)
        np.add.at(forces, (slice(None), i), pair_force)
        np.add.at(forces, (slice(None), j), -pair_force)
        charges = np.zeros(len(symbols)) if self.charges is None else self.charges
        return {
            "energy": (0.5 * self.k * (r - self.r0) ** 2).sum(axis=1),
            "forces": forces,
            "virial": np.zeros((positions.shape[0], 3, 3)),
            "wannier_disp": np.zeros_like(positions),
            "dipole": np.einsum("i,bij->bj", charges, positions),
        }


FORMS = "harmonic:k=K, morse:D=..,a=..,r0=..,pairs=0-1/0-2 or bond:k=..,r0=..,pairs=0-1/0-2"


def parse_potential(spec: str):
    """``harmonic:k=0.5``, ``morse:D=4,a=2,r0=1,pairs=0-1/0-2`` or ``bond:k=16,r0=1,pairs=0-1``
    (optional ``charges=q0/q1/...``) -> the analytic potential (eV, A); ValueError naming
    the forms for anything else."""
    name, _, args = spec.partition(":")
    try:
        kwargs = dict(kv.split("=") for kv in args.split(",") if kv)
        charges = [float(q) for q in kwargs.pop("charges").split("/")] if "charges" in kwargs else None
        if name == "harmonic":
            return HarmonicPotential(k=float(kwargs["k"]), charges=charges)
        if name in ("morse", "bond"):
            pairs = [tuple(int(i) for i in p.split("-")) for p in kwargs.pop("pairs").split("/")]
            if name == "bond":
                return HarmonicBondPotential(pairs, float(kwargs["k"]), float(kwargs["r0"]), charges=charges)
            return MorsePotential(pairs, float(kwargs["D"]), float(kwargs["a"]), float(kwargs["r0"]), charges=charges)
    except (KeyError, ValueError) as exc:
        raise ValueError(f"analytic potential '{spec}': {type(exc).__name__} {exc} (use {FORMS})") from None
    raise ValueError(f"unknown analytic potential '{name}' (use {FORMS})")
