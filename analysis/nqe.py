"""Peaks with block-average uncertainties, classical-vs-PIMD shift tables, and the alarm
for low-frequency motion that tells a crystal's spectra are no lattice spectra."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.signal import find_peaks

from .ins import LOW_FREQUENCY_CM

#: DOS share below LOW_FREQUENCY_CM (60 cm^-1) above which `legato demo` warns that its crystal is not behaving as one
#: (N in the TRPMD run of the quick demo: shipped SAM model 0.3%; a model whose quantum crystal went soft, 6.7%; models/README.md)
LOW_FREQUENCY_ALARM = 0.03


@dataclass
class Peak:
    position: float  # cm^-1
    error: float  # cm^-1, standard error over blocks
    height: float  # normalised


def find_peaks_with_errors(x, y, block_spectra, prominence: float = 0.08, search: float = 40.0, x_min: float = 50.0) -> list[Peak]:
    """Peaks of ``y`` (normalised to max 1 above ``x_min``) with errors from per-block spectra.

    For each peak, each block spectrum's maximum within +-``search`` cm^-1 gives
    one estimate; the error is their standard deviation / sqrt(blocks).
    """
    x, y = np.asarray(x), np.asarray(y)
    mask = x >= x_min
    y = y / y[mask].max()
    idx, _ = find_peaks(np.where(mask, y, 0.0), prominence=prominence)
    peaks = []
    for i in idx:
        near = np.abs(x - x[i]) <= search
        estimates = [x[near][np.argmax(np.interp(x[near], bx, by))] for bx, by in block_spectra]
        error = float(np.std(estimates, ddof=1) / np.sqrt(len(estimates))) if len(estimates) > 1 else float("nan")
        peaks.append(Peak(float(x[i]), error, float(y[i])))
    return peaks


def match_peaks(classical: list[Peak], quantum: list[Peak], tolerance: float = 0.15, min_window: float = 30.0) -> list[dict]:
    """Pair classical and PIMD peaks one to one within ``tolerance`` (relative shift)
    or ``min_window`` cm^-1, whichever is larger.

    The window's floor matters below 200 cm^-1, where a relative tolerance is narrower
    than the spectra resolve: a 2 ps run (1 ps of lag, Hann window) resolves ~25 cm^-1,
    and lattice modes near 100 cm^-1 shift by up to ~20% with NQE.
    The assignment (scipy's ``linear_sum_assignment``) pairs as many peaks as the
    window allows and, among those pairings, minimises the summed squared relative
    shifts. Unlike pairing nearest peaks first, this keeps the order of crowded modes
    (three N-H stretches that all shift down stay in order instead of the closest two
    pairing up and leaving a 200 cm^-1 "shift" for the third).
    """
    from scipy.optimize import linear_sum_assignment

    if not classical or not quantum:
        return []
    c_pos = np.array([c.position for c in classical])[:, None]
    q_pos = np.array([q.position for q in quantum])[None, :]
    relative = (q_pos - c_pos) / c_pos
    allowed = np.abs(q_pos - c_pos) <= np.maximum(tolerance * c_pos, min_window)
    cost = relative**2
    forbidden_cost = 1.0 + len(classical) * cost[allowed].max(initial=0.0)  # above any sum of allowed costs
    rows_idx, cols_idx = linear_sum_assignment(np.where(allowed, cost, forbidden_cost))
    matched = [(classical[i], quantum[j]) for i, j in zip(rows_idx, cols_idx) if allowed[i, j]]
    rows = []
    for c, q in sorted(matched, key=lambda m: m[0].position):
        rows.append(
            {
                "classical_cm-1": round(c.position, 1),
                "classical_err": round(c.error, 1),
                "pimd_cm-1": round(q.position, 1),
                "pimd_err": round(q.error, 1),
                "shift_cm-1": round(q.position - c.position, 1),
                "shift_err": round(float(np.hypot(c.error, q.error)), 1),
                "shift_percent": round(100 * (q.position - c.position) / c.position, 2),
            }
        )
    return rows


def write_table(rows: list[dict], path) -> Path:
    path = Path(path)
    with open(path, "w", newline="") as f:
        fields = list(rows[0]) if rows else ["classical_cm-1", "pimd_cm-1", "shift_cm-1"]
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return path


def plot_overlay(path, curves: dict, xlabel: str, ylabel: str, title: str, xlim=None, peaks: dict | None = None) -> Path:
    """One figure with several spectra ({label: (x, y)}), each normalised to its maximum."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=120)
    for (label, (x, y)), color in zip(curves.items(), ("tab:blue", "tab:red", "tab:green", "tab:purple")):
        sel = (x >= (xlim[0] if xlim else 0)) & (x <= (xlim[1] if xlim else np.inf))
        ax.plot(x[sel], y[sel] / y[sel].max(), label=label, color=color, lw=1.3)
        for p in (peaks or {}).get(label, []):
            ax.axvline(p.position, color=color, lw=0.6, ls=":")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if xlim:
        ax.set_xlim(*xlim)
    ax.set_ylim(bottom=0)
    ax.legend(frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def low_frequency_line(shares: dict) -> str:
    """One line: each run's per-species DOS share below LOW_FREQUENCY_CM (``shares`` = {run: {species: share}})."""
    runs = ", ".join(f"{run} " + " ".join(f"{s} {100 * v:.1f}%" for s, v in by_species.items()) for run, by_species in shares.items())
    return f"  DOS share below {LOW_FREQUENCY_CM:.0f} cm^-1: {runs} (a crystal has almost none; more is diffusion, rotational hopping or a soft mode)"


def low_frequency_warning(shares: dict) -> str | None:
    """A warning when any run's DOS share below LOW_FREQUENCY_CM exceeds LOW_FREQUENCY_ALARM (else None)."""
    worst = max(v for by_species in shares.values() for v in by_species.values())
    if worst <= LOW_FREQUENCY_ALARM:
        return None
    return f"warning: {100 * worst:.1f}% of a DOS lies below {LOW_FREQUENCY_CM:.0f} cm^-1: with this model the crystal diffuses, hops or goes soft; its low-energy INS is no lattice spectrum"
