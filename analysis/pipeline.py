"""Spectra of i-PI run directories: IR, INS, and the classical-vs-PIMD comparison.

Each function reads a run directory (see :mod:`legato.analysis.runinfo`),
drops the first ``equilibration`` fraction of frames, writes CSV (and PNG)
next to the data and returns what it computed.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from legato.fileio import bead_files, read_extras, read_xyz

from .ins import LOW_FREQUENCY_CM, ins_spectrum
from .ir import ir_spectrum
from .nqe import find_peaks_with_errors, match_peaks, plot_overlay, write_table
from .runinfo import read_run


def _drop(steps, data, fraction):
    start = int(len(steps) * fraction)
    return steps[start:], data[start:]


def run_dipoles(run_dir, equilibration: float = 0.2):
    """Bead dipoles (T, P, 3) e*A of a run, and the frame spacing (fs)."""
    info = read_run(run_dir)
    series = [read_extras(f) for f in bead_files(run_dir, info.prefix, "dip")]
    n = min(len(s) for s, _ in series)
    steps = series[0][0][:n]
    dipoles = np.stack([d[:n] for _, d in series], axis=1)
    steps, dipoles = _drop(steps, dipoles, equilibration)
    return dipoles, info.dt("dip"), info


def run_velocities_positions(run_dir, equilibration: float = 0.2):
    """Velocities (T, N, 3) A/fs for spectra (the centroid's for PIMD), bead positions (T, P, N, 3) A."""
    info = read_run(run_dir)
    vel_kind = "vc" if info.nbeads > 1 and "vc" in info.strides else "vel"
    vel_file = info.path / f"{info.prefix}.{vel_kind}.xyz" if vel_kind == "vc" else bead_files(run_dir, info.prefix, "vel")[0]
    steps, velocities, symbols = read_xyz(vel_file)
    steps, velocities = _drop(steps, velocities, equilibration)
    positions = [read_xyz(f)[1] for f in bead_files(run_dir, info.prefix, "pos")]
    n = min(len(p) for p in positions)
    positions = np.stack([p[:n] for p in positions], axis=1)
    positions = positions[int(n * equilibration) :]
    return velocities, positions, symbols, info.dt(vel_kind), info


def _blocks(series: np.ndarray, n_blocks: int):
    return [b for b in np.array_split(series, n_blocks) if len(b) >= 16]


def _write_csv(path, columns: dict) -> Path:
    names = list(columns)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(names)
        w.writerows(zip(*(np.round(columns[k], 8) for k in names)))
    return Path(path)


def ir_of_run(run_dir, out_dir=None, correction: str = "harmonic", equilibration: float = 0.2, n_blocks: int = 4, max_lag_fs: float | None = None):
    dipoles, dt, info = run_dipoles(run_dir, equilibration)
    max_lag = int(max_lag_fs / dt) if max_lag_fs else None
    full = ir_spectrum(dipoles, dt, info.temperature, correction, max_lag=max_lag)
    blocks = []
    for b in _blocks(dipoles, n_blocks):
        r = ir_spectrum(b, dt, info.temperature, correction, max_lag=min(max_lag or len(b) // 2, len(b) // 2))
        blocks.append((r["wavenumber"], r["intensity_norm"]))
    peaks = find_peaks_with_errors(full["wavenumber"], full["intensity_norm"], blocks)
    out_dir = Path(out_dir or run_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_csv(out_dir / "ir.csv", {"wavenumber_cm-1": full["wavenumber"], "intensity": full["intensity"], "intensity_norm": full["intensity_norm"]})
    return {"spectrum": full, "peaks": peaks, "info": info, "csv": out_dir / "ir.csv"}


def ins_of_run(run_dir, out_dir=None, equilibration: float = 0.2, n_blocks: int = 4, **kwargs):
    velocities, positions, symbols, dt, info = run_velocities_positions(run_dir, equilibration)
    full = ins_spectrum(velocities, positions, symbols, dt, info.temperature, **kwargs)
    blocks = []
    for vb, pb in zip(_blocks(velocities, n_blocks), np.array_split(positions, n_blocks)):
        r = ins_spectrum(vb, pb, symbols, dt, info.temperature, **kwargs)
        blocks.append((r["wavenumber"], r["total"] / r["total"].max()))
    peaks = find_peaks_with_errors(full["wavenumber"], full["total"] / full["total"].max(), blocks)
    out_dir = Path(out_dir or run_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_csv(
        out_dir / "ins.csv",
        {
            "energy_meV": full["energy"],
            "wavenumber_cm-1": full["wavenumber"],
            "S_total": full["total"],
            "S_one_phonon": full["one_phonon"],
            "S_two_phonon": full["two_phonon"],
            "h_weighted_dos": full["h_weighted_dos"],
        },
    )
    return {"spectrum": full, "peaks": peaks, "info": info, "csv": out_dir / "ins.csv"}


def compare_runs(classical_dir, pimd_dir, out_dir, equilibration: float = 0.2) -> dict:
    """IR and INS of a classical and a PIMD run: overlay figures and peak-shift tables."""
    for run_dir in (classical_dir, pimd_dir):
        read_run(run_dir)  # a missing or wrong run folder fails before out_dir is made
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = {}
    for kind, fn, x_key, y_key, xlim in (
        ("ir", ir_of_run, "wavenumber", "intensity_norm", (0, 4000)),
        ("ins", ins_of_run, "wavenumber", "total", (0, 4000)),
    ):
        cl = fn(classical_dir, out_dir / f"classical_{kind}", equilibration=equilibration)
        qm = fn(pimd_dir, out_dir / f"pimd_{kind}", equilibration=equilibration)
        label_c = f"classical MD ({cl['info'].temperature:.0f} K)"
        label_q = f"PIMD/TRPMD, {qm['info'].nbeads} beads"
        figure = plot_overlay(
            out_dir / f"{kind}_nqe.png",
            {label_c: (cl["spectrum"][x_key], cl["spectrum"][y_key]), label_q: (qm["spectrum"][x_key], qm["spectrum"][y_key])},
            xlabel="wavenumber (cm$^{-1}$)",
            ylabel="IR absorption (normalised)" if kind == "ir" else "S(Q, E) along VISION lines (normalised)",
            title=("IR" if kind == "ir" else "INS (VISION-like, incoherent approximation)") + ": classical vs PIMD",
            xlim=xlim,
            peaks={label_c: cl["peaks"], label_q: qm["peaks"]},
        )
        rows = match_peaks(cl["peaks"], qm["peaks"])
        table = write_table(rows, out_dir / f"{kind}_nqe_shifts.csv")
        result[kind] = {"figure": figure, "table": table, "rows": rows}
        if kind == "ins":
            result[kind]["low_frequency_share"] = {"classical": cl["spectrum"]["low_frequency_share"], "pimd": qm["spectrum"]["low_frequency_share"]}
    summary = {k: {"figure": str(v["figure"]), "table": str(v["table"]), "shifts": v["rows"]} for k, v in result.items()}
    summary["ins"][f"dos_share_below_{LOW_FREQUENCY_CM:.0f}_cm-1"] = result["ins"]["low_frequency_share"]
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    return result


#: the spectra `legato spectrum` computes
SPECTRA = ("ir", "ins")


def spectrum_of_run(kind: str, run_dir, out_dir=None, correction: str = "harmonic", equilibration: float = 0.2, final_energy_mev: float = 3.5, relative_resolution: float = 0.012) -> dict:
    """`legato spectrum`: the IR or INS spectrum (``kind`` in :data:`SPECTRA`) of one run, as
    :func:`ir_of_run` or :func:`ins_of_run` return it, with its figure (``figure``) beside the CSV."""
    if kind == "ir":
        r = ir_of_run(run_dir, out_dir, correction=correction, equilibration=equilibration)
        x, y, label = r["spectrum"]["wavenumber"], r["spectrum"]["intensity_norm"], "IR absorption (normalised)"
    elif kind == "ins":
        r = ins_of_run(run_dir, out_dir, equilibration=equilibration, final_energy_mev=final_energy_mev, relative_resolution=relative_resolution)
        x, y, label = r["spectrum"]["wavenumber"], r["spectrum"]["total"], "S(Q, E) along VISION lines (normalised)"
    else:
        raise ValueError(f"unknown spectrum '{kind}' (use {' or '.join(SPECTRA)})")
    r["figure"] = plot_overlay(Path(out_dir or run_dir) / f"{kind}.png", {Path(run_dir).name: (x, y)}, "wavenumber (cm$^{-1}$)", label, f"{kind.upper()} spectrum", xlim=(0, 4000))
    return r
