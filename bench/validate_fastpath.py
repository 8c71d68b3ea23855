"""Is contracted + multiple-time-step PIMD the same physics as brute force, for ammonia?

    python bench/validate_fastpath.py [--beads 32] [--ps 2] [--setting 4x4 --setting 8x2] [-o runs/validate_fastpath]

TRPMD of the 16-atom phase-I cell at 150 K with the shipped SAM model: brute force (every
bead, 0.5 fs) beside `legato run --contract P' --mts M` for each ``--setting P'xM`` (outer
step 0.5 M fs, the cheap model models/fast.legato.pt or ``--fast-model`` at 0.5 fs). Compares the
centroid-virial kinetic energy per species, the intramolecular N-H and intermolecular
N...H radial distribution peaks, and every IR and INS peak position, each with block-average
errors, and prints the wall time per ps. A validation, not a timed test: runs resume (run
it again after a kill), and it exits 1 when a quantity differs by more than twice the
combined error. The brute-force summary is kept in bench/validate_fastpath_brute_force.json
(``--reference``) with its settings and the full model's checksum: a later check of a new
cheap model or setting with the same settings reuses it instead of an hour of brute force.
"""

import argparse
import sys
import json
import time
from pathlib import Path

import numpy as np

from legato.analysis.pipeline import ins_of_run, ir_of_run
from legato.driver.pes import make_driver
from legato.driver.run import RunSettings, is_finished, run_simulation
from legato.fileio import bead_files, file_sha256, read_properties, read_structures, read_xyz
from legato.shipped import TEMPLATES, default_model, fast_model

SPECIES = ("H", "N")


def template_with_species_kinetic(out: Path) -> Path:
    """nh3_solid_trpmd.xml with the centroid-virial kinetic energy of each species in the properties."""
    text = (TEMPLATES / "nh3_solid_trpmd.xml").read_text()
    extra = ", ".join(f"kinetic_cv{{electronvolt}}({s})" for s in SPECIES)
    text = text.replace("kinetic_cv{electronvolt},", f"kinetic_cv{{electronvolt}}, {extra},")
    out.mkdir(parents=True, exist_ok=True)
    path = out / "trpmd_species.xml"
    path.write_text(text)
    (out / "nh3_phase_i.xyz").write_text((TEMPLATES / "nh3_phase_i.xyz").read_text())
    return path


def blocks(x: np.ndarray, n: int = 5) -> tuple[float, float]:
    means = np.array([b.mean() for b in np.array_split(x, n)])
    return float(means.mean()), float(means.std(ddof=1) / np.sqrt(n))


def rdf_peak(run_dir: Path, lo: float, hi: float, n_blocks: int = 5) -> tuple[float, float]:
    """Position (A) of the N-H distance histogram's maximum within [lo, hi], minimum image, all beads."""
    cells = read_structures(run_dir / "nh3_phase_i.xyz")[0].cell.array  # NVT: the cell of the start
    positions = []
    for path in bead_files(run_dir, "simulation", "pos"):
        _, values, symbols = read_xyz(path)
        positions.append(values)
    symbols = np.array(symbols)
    positions = np.stack(positions)  # (beads, frames, atoms, 3)
    positions = positions[:, positions.shape[1] // 5 :]
    n_idx, h_idx = np.where(symbols == "N")[0], np.where(symbols == "H")[0]
    inverse = np.linalg.inv(cells)
    peaks = []
    for part in np.array_split(np.arange(positions.shape[1]), n_blocks):
        d = positions[:, part][:, :, h_idx, None, :] - positions[:, part][:, :, None, n_idx, :]
        frac = d @ inverse
        d = (frac - np.round(frac)) @ cells
        r = np.linalg.norm(d, axis=-1).ravel()
        hist, edges = np.histogram(r[(r > lo) & (r < hi)], bins=60, range=(lo, hi))
        peaks.append(0.5 * (edges[hist.argmax()] + edges[hist.argmax() + 1]))
    return float(np.mean(peaks)), float(np.std(peaks, ddof=1) / np.sqrt(n_blocks))


def summarize(run_dir: Path) -> dict:
    props = read_properties(run_dir / "simulation.out")
    result = {}
    for s in SPECIES:
        ke = props[f"kinetic_cv({s})"]
        result[f"kinetic_cv({s}), eV"] = blocks(ke[len(ke) // 5 :])
    result["N-H bond peak, A"] = rdf_peak(run_dir, 0.8, 1.3)
    result["N...H contact peak, A"] = rdf_peak(run_dir, 2.0, 2.8)
    for kind, fn in (("IR", ir_of_run), ("INS", ins_of_run)):
        result[kind] = [(peak.position, peak.error) for peak in fn(run_dir, run_dir / f"{kind.lower()}_spectrum")["peaks"]]
    return result


def with_peaks_matched(brute: dict, other: dict, window: float = 60.0) -> tuple[dict, dict]:
    """Both results with their IR and INS peaks as named entries, each brute-force peak paired
    with the other run's nearest peak within ``window`` cm^-1 (absent when there is none)."""
    a, b = {k: v for k, v in brute.items() if k not in ("IR", "INS")}, {k: v for k, v in other.items() if k not in ("IR", "INS")}
    for kind in ("IR", "INS"):
        for position, error in brute[kind]:
            key = f"{kind} peak, cm^-1"
            key = f"{key} ({position:.0f})"
            a[key] = (position, error)
            near = [p for p in other[kind] if abs(p[0] - position) <= window]
            if near:
                b[key] = min(near, key=lambda p: abs(p[0] - position))
    return a, b


def brute_force_record(path: Path, identity: dict) -> dict | None:
    """The brute-force summary stored at ``path`` for these settings and models (None: none
    stored, or stored for others). Brute force is most of the validation's cost (~1 h on one
    core), so a new cheap model or setting is checked against the stored run."""
    if not path.exists():
        return None
    record = json.loads(path.read_text())
    if record["identity"] != identity:
        print(f"{path}: stored for other settings or models ({record['identity']}); running brute force")
        return None
    return {k: [tuple(p) for p in v] if k in ("IR", "INS") else tuple(v) for k, v in record["summary"].items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--beads", type=int, default=32)
    parser.add_argument("--ps", type=float, default=2.0, help="simulated time per run, ps")
    parser.add_argument("--temperature", type=float, default=150.0)
    parser.add_argument("--setting", action="append", default=[], metavar="P'xM", help="contracted beads x inner steps (default 4x4 and 8x2)")
    parser.add_argument("-o", "--output", type=Path, default=Path("runs/validate_fastpath"))
    parser.add_argument("--fast-model", type=Path, default=None, help="the cheap model (default: the shipped models/fast.legato.pt)")
    parser.add_argument("--reference", type=Path, default=Path(__file__).with_name("validate_fastpath_brute_force.json"),
                        help="the brute-force summary: read where it matches the settings and the full model, written after a brute-force run")
    args = parser.parse_args()
    settings = [tuple(int(v) for v in s.split("x")) for s in (args.setting or ["4x4", "8x2"])]
    template = template_with_species_kinetic(args.output)
    structure_model, cheap = str(default_model()), str(args.fast_model or fast_model())
    results, walls = {}, {}
    identity = {"beads": args.beads, "ps": args.ps, "temperature": args.temperature, "full_model_sha256": file_sha256(structure_model)}
    stored = brute_force_record(args.reference, identity)
    for name, contract, mts in [("brute force", None, 1)] + [(f"contract {c}, mts {m}", c, m) for c, m in settings]:
        run_dir = args.output / name.replace(" ", "_").replace(",", "")
        if contract is None and stored is not None and not run_dir.exists():
            results[name], walls[name] = stored, float("nan")
            print(f"brute force: the stored run ({args.reference})")
            continue
        timestep = 0.5 * mts
        run = RunSettings(nbeads=args.beads, temperature=args.temperature, timestep=timestep, total_steps=int(round(args.ps * 1000 / timestep)), seed=2, stride=max(1, 4 // mts), contract=contract, mts=mts if contract else None)
        start = time.perf_counter()
        if not is_finished(run_dir):
            run_simulation(
                template, run_dir, lambda s: make_driver(s, structure_model), run,
                fast_driver_factory=(lambda s: make_driver(s, cheap, dipoles=False)) if contract else None,
            )
        walls[name] = (time.perf_counter() - start) / args.ps
        results[name] = summarize(run_dir)
        if contract is None:
            made = {"command": "python bench/validate_fastpath.py " + " ".join(sys.argv[1:]), "date": time.strftime("%Y-%m-%d"), "fast_model_sha256": file_sha256(cheap)}
            args.reference.write_text(json.dumps({"identity": identity, "made": made, "summary": results[name]}, indent=1) + "\n")
    paired = {name: with_peaks_matched(results["brute force"], results[name]) for name in list(results)[1:]}
    brute = next(iter(paired.values()))[0]
    failed = []
    print(f"{'quantity':34s} {'brute force':>18s} " + " ".join(f"{n:>22s}" for n in list(results)[1:]))
    for key, (value, error) in brute.items():
        cells = []
        for name in list(results)[1:]:
            other = paired[name][1].get(key)
            if other is None:
                cells.append(f"{'(no peak)':>22s}")
                failed.append(f"{name}: {key} missing")
                continue
            ok = abs(other[0] - value) <= 2 * np.hypot(error, other[1])
            cells.append(f"{other[0]:12.4g} +- {other[1]:<6.2g}{'' if ok else ' !'}")
            if not ok:
                failed.append(f"{name}: {key} {other[0]:.4g} vs {value:.4g}")
        print(f"{key:34s} {value:10.4g} +- {error:<6.2g} " + " ".join(cells))
    print("wall time per simulated ps (s): " + ", ".join(f"{n} {w:.0f}" for n, w in walls.items()))
    if failed:
        print("differ beyond 2 combined errors:\n  " + "\n  ".join(failed), file=sys.stderr)
        sys.exit(1)
    print("all quantities agree within 2 combined errors")


if __name__ == "__main__":
    main()
