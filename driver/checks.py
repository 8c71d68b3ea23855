"""Checks on what i-PI sends before it reaches the model (one-line errors)."""

from __future__ import annotations

import logging

import numpy as np

from legato.geometry import min_distance

log = logging.getLogger("legato.driver")

#: atoms closer than this (A) are far outside any training set: warn
CLOSE_CONTACT = 0.6
#: plausible volume per atom (A^3) for a condensed or gas-in-box system
VOLUME_PER_ATOM = (1.0, 1.0e5)


class InputError(ValueError):
    """Bad data from i-PI or a bad set-up; the message names the fix."""


def check_frame(positions: np.ndarray, cell: np.ndarray | None, n_expected: int) -> None:
    """Raise :class:`InputError` for wrong atom counts, NaN/inf, singular or absurd cells."""
    if positions.shape[0] != n_expected:
        raise InputError(
            f"i-PI sent {positions.shape[0]} atoms but the driver's structure has {n_expected}; "
            "give `legato serve --structure` the same file as i-PI's <initialize>"
        )
    if not np.all(np.isfinite(positions)):
        raise InputError("i-PI sent NaN or inf positions: the simulation has blown up (smaller time step, check the model)")
    if cell is not None:
        if not np.all(np.isfinite(cell)):
            raise InputError("i-PI sent a NaN or inf cell")
        volume = abs(np.linalg.det(cell))
        per_atom = volume / max(n_expected, 1)
        if volume < 1e-8:
            raise InputError("i-PI sent a singular cell; set <cell> in the i-PI input, or serve with --no-periodic for a gas-phase run")
        if not VOLUME_PER_ATOM[0] <= per_atom <= VOLUME_PER_ATOM[1]:
            raise InputError(f"cell volume {per_atom:.3g} A^3 per atom is absurd; check the units of the i-PI <cell> (bohr vs angstrom)")


def warn_close_contacts(positions: np.ndarray, cell: np.ndarray | None, floor: float = CLOSE_CONTACT) -> bool:
    """Warn (not fail) when atoms come closer than ``floor``: the model extrapolates."""
    d = min_distance(positions, cell)
    if d < floor:
        log.warning("atoms %.3f A apart (< %.2f A): the model is extrapolating", d, floor)
        return True
    return False
