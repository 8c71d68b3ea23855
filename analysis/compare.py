"""`legato compare`: two models side by side (SAM vs Adam, say): test errors, speed,
sharpness, time to failure per system size and beta, as one CSV table and one figure."""

from __future__ import annotations

import csv
import time
from pathlib import Path

from legato.modelfile import read_model_file
from legato.potential import ModelPotential, torch_device

from .failure_study import failure_study, failure_summary, t_failure_text, unit_cell
from .robustness import failure_times, per_size, plot_failure
from .sharpness import sharpness_of_file


def model_speed(model, atoms, device: str = "cpu", calls: int = 20) -> float:
    """Milliseconds per model call on ``atoms`` (after one call to warm up)."""
    potential = ModelPotential.from_file(model, device=device)
    args = (atoms.get_chemical_symbols(), atoms.positions, atoms.cell.array[None])
    potential.evaluate(*args)
    start = time.perf_counter()
    for _ in range(calls):
        potential.evaluate(*args)
    return (time.perf_counter() - start) / calls * 1e3


def sharpness_columns(model, data, rho: float, sigma: float = 0.05) -> dict:
    """Worst-case (rho) and average-case (sigma) sharpness of the model's own training loss
    on ``data``; NaN where ``data`` is missing."""
    keys = (f"sharpness_rho{rho}", f"sharpness_sigma{sigma}", f"sharpness_sigma{sigma}_error")
    if data is None or not Path(data).exists():
        return dict.fromkeys(keys, float("nan"))
    result = sharpness_of_file(model, data, rho, sigma=sigma)
    return dict(zip(keys, (round(result["worst_case"], 6), *(float(f"{v:.4g}") for v in result["average_case"]))))


def compare_models(
    models,
    output,
    data=None,
    sizes="1,2,4,8",
    structure=None,
    seeds: int = 6,
    temperature: float = 6000.0,
    max_steps: int = 6000,
    contact_checks: int = 4,
    workers: int = 1,
    device: str = "cpu",
    rho: float = 0.05,
    progress: bool = True,
    log=print,
) -> dict:
    """Compare model files: a failure study of each (:func:`failure_study`, in
    ``output/<model name>``), then ``output/comparison.csv`` and ``output/failure_comparison.png``.

    ``data``: labelled frames for the sharpness column (NaN where the file is missing).
    ``log`` gets each model's failure summary as it finishes. Returns ``rows`` (the table),
    ``table`` and ``figure`` (paths). ValueError / ModelFileError as :func:`failure_study`.
    """
    torch_device(device)
    if not rho > 0:
        raise ValueError(f"--rho {rho}: give a positive value")
    output = Path(output)
    atoms = unit_cell(structure)
    rows, series, fits = [], {}, {}
    for path in map(Path, models):
        meta = read_model_file(path)["metadata"]
        ms = model_speed(path, atoms, device)
        results = failure_study(path, output / path.name.split(".")[0], sizes, seeds, temperature, max_steps, contact_checks, workers, progress, structure, device)
        series[path.name] = results
        (beta, lo, hi), lines = failure_summary(path.name, results)
        fits[path.name] = (beta, lo, hi)
        for line in lines:
            log(line)
        errors = meta.get("test_errors", {})
        rows.append(
            {
                "model": path.name,
                "method": meta["method"],
                "rho": meta["rho"],
                "forces_mae_meV_per_A": round(errors.get("forces_mae_meV_per_A", float("nan")), 2),
                "energy_mae_meV_per_atom": round(errors.get("energy_mae_meV_per_atom", float("nan")), 3),
                "wannier_mae_A": round(errors.get("wannier_mae_A", float("nan")), 5),
                f"ms_per_{len(atoms)}_atoms": round(ms, 2),
                **sharpness_columns(path, data, rho),
                "beta": round(beta, 3),
                "beta_low": round(lo, 3),
                "beta_high": round(hi, 3),
            }
        )
        times = failure_times(results)
        for n, (failed, total, _) in per_size(results).items():
            rows[-1][f"t_failure_N{n}"] = t_failure_text(results, n, times[n])
            rows[-1][f"failed_N{n}"] = f"{failed}/{total}"
    output.mkdir(parents=True, exist_ok=True)
    table = output / "comparison.csv"
    with open(table, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    figure = plot_failure(output / "failure_comparison.png", series, fits, title=f"time to failure at {temperature:.0f} K")
    return {"rows": rows, "table": table, "figure": figure}
