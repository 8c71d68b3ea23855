"""The `legato` command line: one verb per stage (see `legato --help`)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="legato-pimd: SAM-trained Allegro potentials with Wannier dipoles, for path-integral MD.",
)


def _show_version(show: bool) -> None:
    if show:
        from legato.training.modelfile import versions

        v = versions()
        typer.echo(f"legato-pimd {v.pop('legato')} (" + ", ".join(f"{name} {version}" for name, version in v.items()) + ")")
        raise typer.Exit()


@app.callback()
def _global_options(
    version: bool = typer.Option(False, "--version", callback=_show_version, is_eager=True, help="Show the versions of legato-pimd, nequip, allegro and torch, then exit."),
) -> None:
    pass


def fail(message: str, code: int = 2) -> None:
    """Print a one-line error and exit non-zero."""
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    raise typer.Exit(code)


def _flag(name: str) -> str:
    return "-n" if name == "n" else "--" + name.replace("_", "-")


def require_counts(**counts: Optional[int]) -> None:
    """One-line error for a count option below 1 (``-n 0``, ``--seeds 0``, ``--steps 0``)."""
    for name, value in counts.items():
        if value is not None and value < 1:
            fail(f"{_flag(name)} {value}: give at least 1")


def require_positive(**quantities: Optional[float]) -> None:
    """One-line error for a physical quantity (temperature, density, rho, ...) not above zero."""
    for name, value in quantities.items():
        if value is not None and not value > 0:
            fail(f"{_flag(name)} {value}: give a positive value")


def require_fraction(**fractions: float) -> None:
    """One-line error for a fraction outside [0, 1) (e.g. ``--equilibration``)."""
    for name, value in fractions.items():
        if not 0 <= value < 1:
            fail(f"{_flag(name)} {value}: give a fraction from 0 up to (not including) 1")


def write_frames(path: Path, frames) -> None:
    """Write frames as extxyz, making the file's folder if it is new."""
    import ase.io

    path.parent.mkdir(parents=True, exist_ok=True)
    ase.io.write(path, frames, format="extxyz")


@app.command()
def structures(
    output: Path = typer.Argument(..., help="extxyz file to write"),
    kind: str = typer.Option("ammonia-initial", help="ammonia-initial | ammonia-crystal | ammonia-liquid | ammonia-reoriented (one molecule per cell turned) | ammonia-c3-scan (all turned about C3, 0-60 deg) | ammonia-turned (each turned about C3 at random, displaced) | path (between the first two frames of --between, displaced) | liquid (boxes of --molecule, displaced) | displaced (the frames of --source in turn, displaced)"),
    n: int = typer.Option(120, "-n", "--n", help="number of frames (initial set: 2/3 crystal, 1/3 liquid)"),
    a: float = typer.Option(5.13, help="phase-I lattice constant, A"),
    repeat: int = typer.Option(1, help="supercell repeat along each axis"),
    molecules: int = typer.Option(4, help="molecules per liquid box"),
    density: float = typer.Option(0.68, help="liquid density, g/cm^3"),
    molecule: str = typer.Option("NH3", help="for --kind liquid: a molecule ase.build.molecule knows (H2O, NH3, CH4, ...)"),
    source: Optional[Path] = typer.Option(None, help="for --kind displaced: a structure file (CIF, extxyz, i-PI xyz, ...); its frames are displaced in turn"),
    between: Optional[Path] = typer.Option(None, help="for --kind path: a file whose first two frames are the path's end points (e.g. two minima)"),
    stdev: float = typer.Option(0.03, help="for --kind path, liquid, displaced: thermal displacement of hydrogen, A; heavier atoms (m_H/m)^(1/4) of it (0 on a path: frames exactly on it, an energy profile)"),
    overshoot: float = typer.Option(0.25, help="for --kind path: path fraction beyond each end point"),
    seed: int = typer.Option(0),
):
    """Write starting structures (crystal, liquid, thermally displaced sets)."""

    from legato.analysis.ipi_io import read_structures
    from legato.training import structures as st

    require_counts(n=n, repeat=repeat, molecules=molecules)
    require_positive(a=a, density=density)
    if kind == "ammonia-initial":
        frames = st.ammonia_initial_set(n_crystal=2 * n // 3, n_liquid=n - 2 * n // 3, seed=seed)
    elif kind == "ammonia-crystal":
        frames = [st.ammonia_phase_i(a, (repeat,) * 3)]
    elif kind == "ammonia-liquid":
        frames = [st.molecular_liquid("NH3", molecules, density, seed=seed)]
    elif kind == "ammonia-reoriented":
        frames = st.ammonia_reoriented_set(n, seed=seed)
    elif kind == "ammonia-turned":
        frames = st.ammonia_turned_set(n, seed=seed)
    elif kind == "ammonia-c3-scan":
        frames = st.ammonia_c3_scan(a=a)
    elif kind == "path":
        if between is None or not between.exists():
            fail("--kind path needs --between FILE, a structure file whose first two frames are the end points")
        ends = read_structures(between)[:2]
        if len(ends) < 2:
            fail(f"{between}: --kind path needs two frames, found {len(ends)}")
        try:
            frames = st.path_between(ends[0], ends[1], n, stdev=stdev, overshoot=overshoot, seed=seed)
        except ValueError as exc:
            fail(f"{between}: {exc}")
    elif kind == "liquid":
        try:
            frames = st.liquid_set(molecule, n, molecules, density, stdev=stdev, seed=seed)
        except (ValueError, RuntimeError) as exc:
            fail(str(exc))
    elif kind == "displaced":
        if source is None or not source.exists():
            fail("--kind displaced needs --source FILE, a structure file (CIF, extxyz, i-PI xyz, ...)")
        frames = st.displaced_set(read_structures(source), n, stdev=stdev, seed=seed)
    else:
        fail(f"unknown kind '{kind}' (use ammonia-initial, ammonia-crystal, ammonia-liquid, ammonia-reoriented, ammonia-turned, ammonia-c3-scan, path, liquid or displaced)")
    write_frames(output, frames)
    typer.echo(f"wrote {len(frames)} frame(s) to {output}")


@app.command()
def label(
    input: Path = typer.Argument(..., help="structures (any ASE-readable file, periodic)"),
    output: Path = typer.Argument(..., help="labelled extxyz data set (appended, resumable)"),
    xc: str = typer.Option("pbe"),
    basis: str = typer.Option("gth-dzvp"),
    pseudo: str = typer.Option("gth-pbe"),
    dispersion: str = typer.Option("d3bj", help="d3bj | d3zero | none"),
    ke_cutoff: Optional[float] = typer.Option(None, help="plane-wave cutoff, hartree (default: PySCF's)"),
    wannier_order: int = typer.Option(2, help="Berry-phase estimator: 1 = Resta/Silvestrelli (CP2K), 2 = G and 2G extrapolated (Boys centres to O(1/L^4))"),
    limit: Optional[int] = typer.Option(None, help="label at most this many new frames"),
    progress: bool = typer.Option(True, help="show the progress bar (the line per frame is printed either way)"),
):
    """DFT energies, forces and Wannier centres with PySCF (resumes where it stopped).

    Prints one line per frame: labelled (seconds) or skipped (why;
    the reason is kept beside the output).
    """
    from legato.training.label import DFTSettings, label_file

    if not input.exists():
        fail(f"{input}: no such structure file")
    if wannier_order not in (1, 2):
        fail(f"--wannier-order {wannier_order}: use 1 or 2")
    require_counts(limit=limit)
    settings = DFTSettings(xc=xc, basis=basis, pseudo=pseudo, dispersion=None if dispersion == "none" else dispersion, ke_cutoff=ke_cutoff, wannier_order=wannier_order)
    try:
        counts = label_file(input, output, settings, progress=progress, limit=limit)
    except ValueError as exc:
        fail(str(exc))
    typer.echo(f"{output}: {counts}")


@app.command()
def select(
    models: List[Path] = typer.Argument(..., help="a committee of model files (e.g. trained with seed=0,1,2)"),
    frames: List[str] = typer.Option(
        ..., "-f", "--frames",
        help="candidate structures: extxyz, or an i-PI positions file (pos_*.xyz); repeat -f, or quote a pattern for every bead: -f 'runs/x/simulation.pos_*.xyz'",
    ),
    output: Path = typer.Option(..., "-o", "--output", help="structures to label next (extxyz)"),
    n: int = typer.Option(20, "-n", "--n", help="how many frames to pick, from all files together"),
    cell: Optional[float] = typer.Option(None, help="cubic cell edge (A) for frames that carry none (i-PI xyz frames carry theirs)"),
    min_separation: int = typer.Option(5, help="minimum index distance between frames picked from one file (decorrelation)"),
    skip: int = typer.Option(0, help="leave out the first SKIP frames of each file (equilibration; every bead of a PIMD run starts from the same structure)"),
):
    """Active learning: pick the frames where a committee of models disagrees most (then `legato label`)."""
    import glob

    import numpy as np

    from legato.analysis.ipi_io import read_structures
    from legato.training.dataset import frame_key
    from legato.training.potential import ModelPotential
    from legato.training.select import force_disagreement, select_frames

    if len(models) < 2:
        fail("a committee needs at least two models")
    if len({m.resolve() for m in models}) < len(models):
        fail("the committee lists a model file twice: give distinct models (e.g. trained with seed=0,1,2)")
    require_counts(n=n, min_separation=min_separation)
    require_positive(cell=cell)
    if skip < 0:
        fail(f"--skip {skip}: give 0 or more frames")
    paths = []
    for pattern in frames:
        if glob.has_magic(pattern):
            matches = sorted(glob.glob(pattern))
        else:
            matches = [pattern] if Path(pattern).exists() else []
        if not matches:
            fail(f"{pattern}: no such file")
        paths += [Path(m) for m in matches]
    candidates, sources, seen = [], [], set()
    for path in paths:
        for index, atoms in enumerate(read_structures(path)[skip:], start=skip):
            if cell is not None:
                atoms.set_cell(np.eye(3) * cell)
                atoms.pbc = True
            key = frame_key(atoms)
            if key in seen:  # e.g. the starting structure, step 0 of every bead
                continue
            seen.add(key)
            atoms.info.update(selected_from=str(path), selected_index=index)  # provenance, kept by `legato label`
            candidates.append(atoms)
            sources.append(str(path))
    if not candidates:
        fail(f"no frames left in {', '.join(map(str, paths))} after --skip {skip}")
    potentials = [ModelPotential.from_file(m) for m in models]
    scores = force_disagreement(potentials, candidates)
    picked = select_frames(scores, n, min_separation, groups=sources)
    for i in picked:
        candidates[i].info["committee_force_spread"] = round(float(scores[i]), 4)
    write_frames(output, [candidates[i] for i in picked])
    typer.echo(
        f"{output}: {len(picked)} of {len(candidates)} frames from {len(paths)} file(s), committee force spread {scores[picked].min():.3f}-{scores[picked].max():.3f} eV/A"
    )


@app.command()
def merge(
    inputs: List[Path] = typer.Argument(..., help="labelled extxyz files"),
    output: Path = typer.Option(..., "-o", "--output", help="merged data set"),
    min_distance: float = typer.Option(0.8, help="drop frames whose closest atoms are nearer than this (A)"),
    max_force: float = typer.Option(25.0, help="drop frames with any force component above this (eV/A)"),
):
    """Merge labelled data sets, dropping frames far outside thermal sampling and repeated frames; validates the rest."""
    import numpy as np

    from legato.training.dataset import DatasetError, closest_approach, frame_key, load_dataset, validate_frames

    if output.resolve() in {p.resolve() for p in inputs}:
        fail(f"{output}: also an input; write the merge to a new file")
    kept, dropped, seen, duplicates = [], 0, set(), 0
    try:
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
    except DatasetError as exc:
        fail(str(exc))
    write_frames(output, kept)
    typer.echo(
        f"{output}: {len(kept)} frames kept, {dropped} dropped (closest approach < {min_distance} A or |F| > {max_force} eV/A), "
        f"{duplicates} duplicates dropped (same species, positions and cell)"
    )


@app.command()
def train(
    config: Path = typer.Argument(..., help="YAML config, e.g. training/configs/sam.yaml"),
    overrides: Optional[List[str]] = typer.Argument(None, help="key=value overrides, e.g. sam.rho=0.02 trainer.max_epochs=5"),
    progress: bool = typer.Option(True, help="show the progress bar (the line per epoch is printed either way)"),
):
    """Train an Allegro + Wannier model with SAM (sam.rho > 0) or Adam (sam.rho = 0).

    Prints one line per epoch (validation MAE, learning rate, seconds, time to go;
    'best' when the epoch improves best.ckpt).
    Resumes from <output_dir>/checkpoints/last.ckpt if present; writes
    <output_dir>/model.legato.pt with metadata and test errors.
    """
    from legato.training.dataset import DatasetError
    from legato.training.train import load_config
    from legato.training.train import train as run_training

    try:
        cfg = load_config(config, overrides or [])
        model_file = run_training(cfg, progress=progress)
    except (DatasetError, FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    _print_model(model_file)


@app.command()
def evaluate(
    model: Path = typer.Argument(..., help="model file"),
    data: Path = typer.Argument(..., help="labelled frames (e.g. data/nh3_dft_test.extxyz)"),
    by: Optional[str] = typer.Option(None, help="also print energies relative to the first frame against this info key (e.g. c3_angle_deg for data/nh3_dft_c3scan.extxyz)"),
    group_by: Optional[str] = typer.Option(None, help="also print the errors for each value of this info key (e.g. source_file: where the errors are)"),
):
    """Test errors of a model on labelled frames (energy, forces, net force on each molecule, Wannier centres, dipoles)."""
    from legato.training.dataset import DatasetError, load_dataset
    from legato.training.evaluate import energy_profile, errors_by_group, errors_of, predict_frames
    from legato.training.modelfile import ModelFileError, load_model
    from legato.training.potential import ModelPotential

    try:
        net, meta = load_model(model)
        frames = load_dataset(data, meta["type_names"])
        pred = predict_frames(ModelPotential(net, meta), frames)
        profile = energy_profile(frames, pred, by) if by else []
    except (ModelFileError, DatasetError, ValueError) as exc:
        fail(str(exc))
    for key, value in errors_of(frames, pred).items():
        typer.echo(f"{key}: {value:.4g}" if isinstance(value, float) else f"{key}: {value}")
    if group_by:
        groups = errors_by_group(frames, pred, group_by)
        width = max(len(group_by), *map(len, groups))
        typer.echo(f"{group_by:>{width}} {'frames':>6} {'E (meV/atom)':>12} {'F MAE (meV/A)':>13} {'F mol (meV/A)':>13} {'W (A)':>8}")
        for value, e in groups.items():
            typer.echo(
                f"{value:>{width}} {e['n_frames']:>6} {e['energy_mae_meV_per_atom']:12.2f} {e['forces_mae_meV_per_A']:13.1f}"
                f" {e['molecule_forces_mae_meV_per_A']:13.1f} {e['wannier_mae_A']:8.4f}"
            )
    if profile:
        width = max(14, len(by), *(len(str(value)) for value, _, _ in profile))
        typer.echo(f"{by:>{width}} {'reference (meV)':>16} {'model (meV)':>12}")
        for value, reference, predicted in profile:
            typer.echo(f"{value!s:>{width}} {reference:16.1f} {predicted:12.1f}")


@app.command()
def export(run_dir: Path = typer.Argument(..., help="a training output_dir (with config.yaml and checkpoints/)")):
    """Write a run's model file from its best checkpoint (also for runs still training)."""
    from legato.training.train import export_run

    try:
        _print_model(export_run(run_dir))
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))


def _print_model(path: Path) -> None:
    from legato.training.modelfile import read_model_file

    content = read_model_file(path)
    meta, arch = content["metadata"], content["model_config"]
    typer.echo(f"model: {path}")
    ema = f", EMA decay {meta['ema_decay']}" if meta.get("ema_decay") else ""
    typer.echo(f"  method {meta['method']} (rho={meta['rho']}{ema}), species {meta['type_names']}, r_max {meta['r_max']} A")
    weights = sum(tensor.numel() for tensor in content["state_dict"].values())
    typer.echo(
        f"  architecture: l_max {arch['l_max']}, {arch['num_layers']} layers, {arch['num_scalar_features']} scalar"
        f" / {arch['num_tensor_features']} tensor features, {weights} weights"
    )
    if "dataset" in meta:  # written by `legato train`
        split = " / ".join(f"{n} {part}" for part, n in meta["n_frames"].items())
        typer.echo(f"  trained: {meta['epochs']} epochs on {meta['dataset']} (sha256 {meta['dataset_sha256'][:12]}; frames {split})")
    versions = ", ".join(f"{name} {version}" for name, version in meta["versions"].items())
    typer.echo(f"  created {meta['created'][:16]} with {versions}")
    for key, value in meta.get("test_errors", {}).items():
        typer.echo(f"  test {key}: {value:.4g}" if isinstance(value, float) else f"  test {key}: {value}")


@app.command()
def info(model: Path = typer.Argument(..., help="a .legato.pt model file")):
    """Show a model file's metadata and test errors."""
    from legato.training.modelfile import ModelFileError

    try:
        _print_model(model)
    except ModelFileError as exc:
        fail(str(exc))


def _potential_spec(spec: str, symbols):
    """'harmonic:k=0.5' or 'morse:D=4,a=2,r0=1,pairs=0-1' -> an analytic potential (eV, A)."""
    from legato.driver.analytic import HarmonicPotential, MorsePotential

    name, _, args = spec.partition(":")
    kwargs = dict(kv.split("=") for kv in args.split(",") if kv)
    charges = [float(q) for q in kwargs.pop("charges").split("/")] if "charges" in kwargs else None
    if name == "harmonic":
        return HarmonicPotential(k=float(kwargs["k"]), charges=charges)
    if name == "morse":
        pairs = [tuple(int(i) for i in p.split("-")) for p in kwargs.pop("pairs").split("/")]
        return MorsePotential(pairs, float(kwargs["D"]), float(kwargs["a"]), float(kwargs["r0"]), charges=charges)
    raise ValueError(f"unknown analytic potential '{name}' (use harmonic:k=K or morse:D=..,a=..,r0=..,pairs=0-1/0-2)")


ATOMS_PER_CALL_HELP = (
    "atoms per model call: beads go to the model in groups of up to this many"
    " (default on a CPU 64, the fastest in a timing on 2 CPU cores: README, Performance; on a GPU all beads in one call)"
)
DEVICE_HELP = "where the model runs: cpu, cuda or cuda:N (a torch build with CUDA)"


def _require_device(device: str) -> None:
    """A one-line error unless this torch can run models on ``device``."""
    from legato.training.potential import torch_device

    try:
        torch_device(device)
    except ValueError as exc:
        fail(f"--device: {exc}")


COMPILE_HELP = (
    "torch.compile the model: PIMD steps about 2x faster on a CPU after 1-2 min of compiling"
    " (cached for later runs; README, Performance); worth it for runs of more than a few minutes; needs g++"
)


def _make_driver(structure, model=None, potential: Optional[str] = None, periodic: bool = True, atoms_per_call: Optional[int] = None, compile_model: bool = False, device: str = "cpu"):
    """The i-PI PES for a model file, or for an analytic potential spec (then ``model`` is unused)."""
    from legato.driver.pes import LegatoDriver

    if potential:
        import ase.io

        symbols = ase.io.read(structure).get_chemical_symbols()
        return LegatoDriver(potential=_potential_spec(potential, symbols), symbols=symbols, periodic=periodic)
    driver = LegatoDriver(model=str(model), structure=str(structure), periodic=periodic, atoms_per_call=atoms_per_call, compile=compile_model, device=device)
    if compile_model:  # after the driver's checks: a refused --compile says only why
        typer.echo("torch.compile: the first step with two or more beads compiles the model (1-2 min; later runs reuse the cache)", err=True)
    return driver


@app.command()
def serve(
    model: Optional[Path] = typer.Argument(None, help="model file (default: the shipped SAM model)"),
    structure: Path = typer.Option(..., "-s", "--structure", help="the structure i-PI runs (species order)"),
    unix: Optional[str] = typer.Option(None, "-u", "--unix", help="i-PI unix socket NAME (/tmp/ipi_NAME)"),
    inet: Optional[str] = typer.Option(None, "-i", "--inet", help="i-PI inet socket HOST:PORT"),
    periodic: bool = typer.Option(True, help="use i-PI's cell (off for molecules in vacuum)"),
    potential: Optional[str] = typer.Option(None, help="serve an analytic potential instead: harmonic:k=K or morse:D=..,a=..,r0=..,pairs=0-1"),
    reconnect: float = typer.Option(120.0, help="after i-PI disconnects, wait this long (s) for it to come back"),
    connect_wait: float = typer.Option(60.0, help="wait this long (s) for i-PI to open its socket"),
    atoms_per_call: Optional[int] = typer.Option(None, help=ATOMS_PER_CALL_HELP),
    compile_model: bool = typer.Option(False, "--compile", help=COMPILE_HELP),
    device: str = typer.Option("cpu", help=DEVICE_HELP),
):
    """Serve a model's forces and per-bead dipoles to i-PI (batched when i-PI batches)."""
    import logging

    from legato.driver.checks import InputError
    from legato.driver.client import serve as serve_ipi
    from legato.training.modelfile import ModelFileError

    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    if (unix is None) == (inet is None):
        fail("give exactly one of --unix NAME or --inet HOST:PORT")
    try:
        driver = _make_driver(structure, None if potential else model or default_model(), potential, periodic, atoms_per_call, compile_model, device)
        if unix is not None:
            outcome = serve_ipi(driver, unix, unix=True, reconnect_wait=reconnect, connect_wait=connect_wait)
        else:
            host, _, port = inet.rpartition(":")
            if not port.isdigit():
                fail(f"--inet needs HOST:PORT, got '{inet}'")
            outcome = serve_ipi(driver, host or "localhost", int(port), unix=False, reconnect_wait=reconnect, connect_wait=connect_wait)
    except (InputError, ModelFileError, TimeoutError, ValueError, FloatingPointError, FileNotFoundError) as exc:
        fail(str(exc))
    typer.echo(f"served {driver.frames} structures in {driver.calls} model calls; i-PI {'finished' if outcome == 'exit' else 'disconnected'}")
    if outcome != "exit":
        raise typer.Exit(3)


TEMPLATES = Path(__file__).resolve().parent.parent / "ipi_inputs"


@app.command()
def run(
    template: Path = typer.Argument(..., help="i-PI XML (a file in ipi_inputs/ or your own)"),
    output: Path = typer.Option(..., "-o", "--output", help="run directory (run again to resume)"),
    model: Optional[Path] = typer.Option(None, "-m", "--model", help="model file (default: the shipped SAM model)"),
    potential: Optional[str] = typer.Option(None, help="analytic potential instead of a model: harmonic:k=K | morse:..."),
    beads: Optional[int] = typer.Option(None, help="number of beads (1 = classical)"),
    temperature: Optional[float] = typer.Option(None, help="K"),
    steps: Optional[int] = typer.Option(None, help="total MD steps"),
    timestep: Optional[float] = typer.Option(None, help="fs"),
    stride: Optional[int] = typer.Option(None, help="trajectory output stride (steps)"),
    seed: Optional[int] = typer.Option(None),
    periodic: bool = typer.Option(True, help="use the cell (off for molecules in vacuum)"),
    drivers: int = typer.Option(1, help="driver processes (>1: extra `legato serve` processes on an inet socket)"),
    start: Optional[Path] = typer.Option(None, help="i-PI checkpoint (e.g. an equilibration run's RESTART) whose positions and momenta start the run"),
    structure: Optional[Path] = typer.Option(None, "-s", "--structure", help="initial structure instead of the template's: i-PI xyz, or CIF, extxyz, ... (last frame, with its cell)"),
    atoms_per_call: Optional[int] = typer.Option(None, help=ATOMS_PER_CALL_HELP),
    compile_model: bool = typer.Option(False, "--compile", help=COMPILE_HELP),
    device: str = typer.Option("cpu", help=DEVICE_HELP),
    progress: bool = typer.Option(True),
):
    """Run i-PI with the legato driver (PIMD, TRPMD, classical), with progress; resumes from RESTART."""
    from legato.driver.checks import InputError
    from legato.driver.run import RunSettings, run_simulation
    from legato.training.modelfile import ModelFileError, read_model_file

    if not template.exists() and (TEMPLATES / template).exists():
        template = TEMPLATES / template
    if not template.exists():
        fail(f"{template}: no such i-PI input (templates are in {TEMPLATES})")
    if structure is not None and not structure.exists():
        fail(f"{structure}: no such structure file")
    _require_device(device)
    require_counts(beads=beads, steps=steps, stride=stride, drivers=drivers)
    require_positive(temperature=temperature, timestep=timestep)
    model_path = str(Path(model or default_model()).resolve()) if potential is None else None  # helpers run in the run folder
    if model_path:
        try:
            read_model_file(model_path)  # a bad model file fails here, before the run folder is made
        except ModelFileError as exc:
            fail(str(exc))
    settings = RunSettings(nbeads=beads, temperature=temperature, total_steps=steps, timestep=timestep, seed=seed, stride=stride, start=start, structure=structure)

    def factory(structure_in_run):
        return _make_driver(structure_in_run, model_path, potential, periodic, atoms_per_call, compile_model, device)

    extra = [sys.executable, "-m", "legato.cli", "serve", model_path or "", "--reconnect", "0"]
    if potential:
        extra = [sys.executable, "-m", "legato.cli", "serve", "--potential", potential, "--reconnect", "0"]
    if not periodic:
        extra.append("--no-periodic")
    if atoms_per_call is not None:
        extra += ["--atoms-per-call", str(atoms_per_call)]
    if compile_model:
        extra.append("--compile")
    extra += ["--device", device]
    try:
        run_dir = run_simulation(template, output, factory, settings, n_drivers=drivers, extra_driver_cmd=extra, progress=progress)
    except (InputError, ModelFileError, FileNotFoundError, ValueError, RuntimeError, TimeoutError) as exc:
        fail(str(exc))
    typer.echo(f"done: outputs in {run_dir}")


@app.command()
def spectrum(
    kind: str = typer.Argument(..., help="ir | ins"),
    run_dir: Path = typer.Argument(..., help="an i-PI run directory (from `legato run`, or with its input.xml)"),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="where to write CSV/PNG (default: the run directory)"),
    correction: str = typer.Option("harmonic", help="IR quantum correction: harmonic | standard | none"),
    equilibration: float = typer.Option(0.2, help="fraction of frames dropped at the start"),
    final_energy: float = typer.Option(3.5, help="INS: analyser final energy, meV (VISION 3.5)"),
    resolution: float = typer.Option(0.012, help="INS: FWHM / energy transfer (VISION ~1.2%)"),
):
    """IR (dipole ACF) or INS (H-weighted VDOS, VISION kinematics) spectrum of a run."""
    from legato.analysis.ipi_io import TrajectoryError
    from legato.analysis.nqe import plot_overlay
    from legato.analysis.pipeline import ins_of_run, ir_of_run

    require_fraction(equilibration=equilibration)
    require_positive(final_energy=final_energy, resolution=resolution)
    out = output or run_dir
    try:
        if kind == "ir":
            r = ir_of_run(run_dir, out, correction=correction, equilibration=equilibration)
            x, y, label = r["spectrum"]["wavenumber"], r["spectrum"]["intensity_norm"], "IR absorption (normalised)"
        elif kind == "ins":
            r = ins_of_run(run_dir, out, equilibration=equilibration, final_energy_mev=final_energy, relative_resolution=resolution)
            x, y, label = r["spectrum"]["wavenumber"], r["spectrum"]["total"], "S(Q, E) along VISION lines (normalised)"
        else:
            fail(f"unknown spectrum '{kind}' (use ir or ins)")
    except (TrajectoryError, FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    figure = plot_overlay(Path(out) / f"{kind}.png", {run_dir.name: (x, y)}, "wavenumber (cm$^{-1}$)", label, f"{kind.upper()} spectrum", xlim=(0, 4000))
    typer.echo(f"{kind.upper()}: {r['csv']} and {figure}")
    for p in r["peaks"]:
        typer.echo(f"  peak {p.position:7.1f} +- {p.error:4.1f} cm^-1  (height {p.height:.2f})")
    if kind == "ins":
        typer.echo(_low_frequency_line({run_dir.name: r["spectrum"]["low_frequency_share"]}))


@app.command()
def nqe(
    classical: Path = typer.Argument(..., help="run directory of the classical (1 bead) run"),
    pimd: Path = typer.Argument(..., help="run directory of the PIMD/TRPMD run (same system and temperature)"),
    output: Path = typer.Option(Path("results/nqe"), "-o", "--output"),
    equilibration: float = typer.Option(0.2),
):
    """Nuclear quantum effects: IR and INS of classical vs PIMD runs, peak shifts (CSV) and figures (PNG)."""
    from legato.analysis.ipi_io import TrajectoryError
    from legato.analysis.pipeline import compare_runs

    require_fraction(equilibration=equilibration)
    try:
        result = compare_runs(classical, pimd, output, equilibration)
    except (TrajectoryError, FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    _print_nqe(result)


def _print_nqe(result: dict) -> None:
    for kind, r in result.items():
        typer.echo(f"{kind.upper()}: figure {r['figure']}, table {r['table']}")
        for row in r["rows"]:
            typer.echo(
                f"  {row['classical_cm-1']:7.1f} -> {row['pimd_cm-1']:7.1f} cm^-1   shift {row['shift_cm-1']:+7.1f} +- {row['shift_err']:.1f} ({row['shift_percent']:+.1f}%)"
            )
        if "low_frequency_share" in r:
            typer.echo(_low_frequency_line(r["low_frequency_share"]))


def _low_frequency_line(shares: dict) -> str:
    """One line: each run's per-species DOS share below LOW_FREQUENCY_CM."""
    from legato.analysis.ins import LOW_FREQUENCY_CM

    runs = ", ".join(f"{run} " + " ".join(f"{s} {100 * v:.1f}%" for s, v in by_species.items()) for run, by_species in shares.items())
    return f"  DOS share below {LOW_FREQUENCY_CM:.0f} cm^-1: {runs} (a crystal has almost none; more is diffusion, rotational hopping or a soft mode)"


#: DOS share below LOW_FREQUENCY_CM (60 cm^-1) above which `legato demo` warns that its crystal is not behaving as one
#: (N in the TRPMD run of the quick demo: shipped SAM model 0.3%, round 9's sam_s9, whose quantum crystal goes soft, 6.7%; models/README.md)
LOW_FREQUENCY_ALARM = 0.03


def low_frequency_warning(shares: dict) -> str | None:
    """A warning when any run's DOS share below LOW_FREQUENCY_CM exceeds LOW_FREQUENCY_ALARM (else None)."""
    from legato.analysis.ins import LOW_FREQUENCY_CM

    worst = max(v for by_species in shares.values() for v in by_species.values())
    if worst <= LOW_FREQUENCY_ALARM:
        return None
    return f"warning: {100 * worst:.1f}% of a DOS lies below {LOW_FREQUENCY_CM:.0f} cm^-1: with this model the crystal diffuses, hops or goes soft; its low-energy INS is no lattice spectrum"


DEMO = {
    # steps of 0.5 fs; frames every 2 steps (1 fs); equilibration steps precede each run
    "quick": {"structure": "nh3_phase_i.xyz", "equilibration": 1000, "classical": 10000, "pimd": 4000, "beads": 8},
    "production": {"structure": "nh3_phase_i_2x2x2.xyz", "equilibration": 4000, "classical": 40000, "pimd": 40000, "beads": 32},
}


def _relaxed_start(structure: Path, model_path: Path, path: Path) -> Path:
    """``structure`` relaxed with the model at fixed cell, written once to ``path`` (i-PI xyz)."""
    from legato.analysis.ipi_io import read_frames, write_structure
    from legato.training.potential import LegatoCalculator, ModelPotential, relaxed

    if not path.exists():
        start = relaxed(read_frames(structure)[0], LegatoCalculator(potential=ModelPotential.from_file(model_path)))
        path.parent.mkdir(parents=True, exist_ok=True)
        write_structure(path.with_suffix(".tmp"), start, f"{structure.name} relaxed with {model_path.name}").replace(path)
    return path


@app.command()
def demo(
    output: Path = typer.Option(Path("results/demo"), "-o", "--output", help="where runs, spectra and figures go"),
    model: Optional[Path] = typer.Option(None, "-m", "--model", help="model file (default: the shipped SAM model)"),
    temperature: float = typer.Option(150.0, help="K (solid phase I melts at 195 K)"),
    production: bool = typer.Option(False, help="2x2x2 cell, 32 beads, 20 ps each (hours on 2 cores) instead of the quick look"),
    compile_model: bool = typer.Option(False, "--compile", help=COMPILE_HELP + "; with --production"),
    device: str = typer.Option("cpu", help=DEVICE_HELP),
    progress: bool = typer.Option(True),
):
    """The main job: solid ammonia, classical MD and TRPMD through i-PI, IR + INS spectra, NQE table.

    The crystal is first relaxed with the model; each run starts after its own
    equilibration (strong PILE-L thermostat, equilibrate_nvt.xml) that the spectra skip.
    Quick settings (default): 16-atom cell, equilibration 0.5 ps, classical 5 ps,
    TRPMD 8 beads 2 ps. Runs resume if interrupted; finished runs are reused.
    """
    from legato.analysis.pipeline import compare_runs
    from legato.driver.run import RunSettings, is_finished, run_simulation

    from legato.training.dataset import file_sha256

    plan = DEMO["production" if production else "quick"]
    model_path = Path(model or default_model())
    _require_device(device)
    require_positive(temperature=temperature)
    _print_model(model_path)
    if (output / "classical").exists() and not (output / "study.json").exists():
        fail(f"{output} holds runs of an older legato demo (no relaxed, equilibrated start): -o a new folder, or delete it")
    _check_study(output, {"model_sha256": file_sha256(model_path), "temperature": temperature, "production": production, "start": "relaxed, equilibrated"})
    try:
        start = _relaxed_start(TEMPLATES / plan["structure"], model_path, output / "start.xyz")
    except RuntimeError as exc:
        fail(str(exc))
    factory = lambda s: _make_driver(s, model_path, compile_model=compile_model, device=device)  # noqa: E731
    runs = []
    for name, template, beads, seed in (("classical", "nh3_solid_classical_nvt.xml", 1, 1), ("pimd", "nh3_solid_trpmd.xml", plan["beads"], 2)):
        equilibration = output / f"{name}_equilibration"
        common = dict(nbeads=beads, temperature=temperature, structure=start)
        runs.append((equilibration, "equilibrate_nvt.xml", RunSettings(**common, total_steps=plan["equilibration"], seed=seed + 100)))
        runs.append((output / name, template, RunSettings(**common, total_steps=plan[name], stride=2, seed=seed, start=equilibration / "RESTART")))
    for run_dir, template, settings in runs:
        if is_finished(run_dir):
            typer.echo(f"{run_dir.name}: already finished in {run_dir}")
            continue
        typer.echo(f"{run_dir.name}: {template}, {settings.nbeads} bead(s), {settings.total_steps} steps at {temperature:.0f} K -> {run_dir}")
        try:
            run_simulation(TEMPLATES / template, run_dir, factory, settings, progress=progress)
        except (RuntimeError, FileNotFoundError, ValueError) as exc:
            fail(str(exc))
    result = compare_runs(output / "classical", output / "pimd", output / "spectra", equilibration=0.0)
    _print_nqe(result)
    typer.echo(f"figures: {result['ir']['figure']}  {result['ins']['figure']}")
    warning = low_frequency_warning(result["ins"]["low_frequency_share"])
    if warning:
        typer.echo(warning, err=True)


SUPERCELLS = {1: (1, 1, 1), 2: (2, 1, 1), 4: (2, 2, 1), 8: (2, 2, 2), 16: (4, 2, 2), 27: (3, 3, 3)}


def _check_study(out: Path, study: dict) -> None:
    """Record a study's settings (failure study, demo) in ``out``; refuse to resume it with other settings."""
    import json

    out.mkdir(parents=True, exist_ok=True)
    record = out / "study.json"
    if record.exists():
        before = json.loads(record.read_text())
        differ = {k: (before.get(k), v) for k, v in study.items() if before.get(k) != v}
        if differ:
            fail(f"{out} holds a study with other settings {differ} (before, now): pass the same ones to resume, or -o a new folder")
    else:
        record.write_text(json.dumps(study, indent=1))


CONTACT_CHECKS_HELP = (
    "a close contact (below 0.6 A) is a failure once it lasts this many consecutive checks "
    "(5 steps apart); hot collisions bounce back within one"
)

WORKERS_HELP = "trajectories run side by side, one process each (up to the number of cores); each keeps its seed, so a study may resume with another count"


STRUCTURE_HELP = "unit cell to multiply (CIF, extxyz, i-PI xyz; last frame; default: ammonia phase I, a = 5.13 A)"


def _unit_cell(structure: Optional[Path]):
    """The crystal to simulate (failure study, orientation check): ``structure``'s last frame, or phase I."""
    from legato.analysis.ipi_io import read_structures
    from legato.training.structures import ammonia_phase_i

    if structure is None:
        return ammonia_phase_i(5.13)
    if not structure.exists():
        fail(f"{structure}: no such structure file")
    unit = read_structures(structure)[-1]
    if unit.cell.volume < 1e-6 or not unit.pbc.all():
        fail(f"{structure}: give a periodic structure with a 3D cell (a crystal or a liquid box)")
    return unit


def _failure_study(model_path: Path, out: Path, sizes: str, seeds: int, temperature: float, max_steps: int, contact_checks: int, workers: int = 1, progress: bool = True, structure: Optional[Path] = None, device: str = "cpu"):
    """Run (or resume) the failure trajectories of one model on supercells of ``structure``; returns the results."""
    from dataclasses import asdict
    from functools import partial

    from tqdm import tqdm

    from legato.analysis.robustness import FailureCriteria, append_result, load_results, run_trajectories
    from legato.training.dataset import file_sha256
    from legato.training.modelfile import read_model_file
    from legato.training.potential import LegatoCalculator
    from legato.training.structures import order_by_species

    multipliers = [int(k) for k in sizes.split(",")]
    unknown = [k for k in multipliers if k not in SUPERCELLS]
    if unknown:
        fail(f"--sizes {unknown} not available; use cell multipliers from {sorted(SUPERCELLS)}")
    require_counts(seeds=seeds, max_steps=max_steps)
    require_positive(temperature=temperature)
    if contact_checks < 1:
        fail(f"--contact-checks {contact_checks}: must be at least 1 (1 = any close contact is a failure)")
    if workers < 1:
        fail(f"--workers {workers}: must be at least 1 (trajectories run side by side, one process each)")
    _require_device(device)
    read_model_file(model_path)  # an unreadable model: one-line error before the study folder is made
    unit = _unit_cell(structure)
    criteria = FailureCriteria(temperature=temperature, contact_checks=contact_checks)
    study = {"model_sha256": file_sha256(model_path), "max_steps": max_steps, **asdict(criteria)}
    if structure is not None:  # studies of the default cell keep the record they had
        study["structure_sha256"] = file_sha256(structure)
    _check_study(out, study)
    results_file = out / "trajectories.jsonl"
    done = {(r.n_atoms, r.seed) for r in load_results(results_file)}
    todo = [(k, 1000 * k + seed) for k in multipliers for seed in range(seeds) if (len(unit) * k, 1000 * k + seed) not in done]
    jobs = [(order_by_species(unit.repeat(SUPERCELLS[k])), seed) for k, seed in todo]
    finished = run_trajectories(jobs, partial(LegatoCalculator, model_file=str(model_path), device=device), criteria, max_steps, workers)
    for result in tqdm(finished, total=len(jobs), desc=f"failure {model_path.name}", unit="traj", disable=not progress):
        append_result(results_file, result)
    return load_results(results_file)


def _print_failure(label: str, results) -> tuple:
    import numpy as np

    from legato.analysis.robustness import bootstrap_beta, failure_times, per_size

    times = failure_times(results)
    beta, lo, hi = bootstrap_beta(results)
    if not np.isfinite(beta):
        typer.echo(f"{label}: beta undetermined (too few failures to bound it: run longer, hotter or with more seeds)")
    elif np.isnan(lo):
        typer.echo(f"{label}: beta = {beta:.2f}, no bootstrap interval (too few failures)")
    else:
        typer.echo(f"{label}: beta = {beta:.2f}, 95% interval [{lo:.2f}, {hi:.2f}]")
    for n, (failed, total, _) in per_size(results).items():
        typer.echo(f"  N = {n:4d}: t_failure = {_t_failure_text(results, n, times[n]):>9} steps  ({failed}/{total} trajectories failed)")
    return beta, lo, hi


def _t_failure_text(results, n: int, t: float) -> str:
    """t_failure in steps, or '>' its 95% lower bound where nothing failed."""
    from legato.analysis.robustness import failure_time_lower_bound

    return f"{t:.0f}" if t != float("inf") else f">{failure_time_lower_bound(results, n):.0f}"


@app.command()
def failure(
    model: Optional[Path] = typer.Argument(None, help="model file (default: the shipped SAM model)"),
    output: Path = typer.Option(Path("results/failure"), "-o", "--output"),
    sizes: str = typer.Option("1,2,4,8", help="supercell multipliers of the unit cell (--structure)"),
    structure: Optional[Path] = typer.Option(None, "-s", "--structure", help=STRUCTURE_HELP),
    seeds: int = typer.Option(6, help="trajectories per size"),
    temperature: float = typer.Option(6000.0, help="K; far above melting to provoke failures within ps (the shipped models did not fail at 1500 K)"),
    max_steps: int = typer.Option(6000, help="steps (0.5 fs) after which a trajectory counts as surviving (censored)"),
    contact_checks: int = typer.Option(4, help=CONTACT_CHECKS_HELP),
    workers: int = typer.Option(1, help=WORKERS_HELP),
    device: str = typer.Option("cpu", help=DEVICE_HELP),
    progress: bool = typer.Option(True, help="show the progress bar"),
):
    """Time to failure vs system size and beta of t_failure = A N^-beta (resumable)."""
    from legato.analysis.robustness import plot_failure

    model_path = Path(model or default_model())
    out = output / model_path.name.split(".")[0]
    results = _failure_study(model_path, out, sizes, seeds, temperature, max_steps, contact_checks, workers, progress, structure, device)
    fit = _print_failure(model_path.name, results)
    typer.echo(f"figure: {plot_failure(out / 'failure.png', {model_path.name: results}, {model_path.name: fit})}")


@app.command()
def sharpness(
    model: Path = typer.Argument(..., help="model file"),
    data: Path = typer.Argument(..., help="labelled frames (e.g. a run's split/test.extxyz)"),
    rho: float = typer.Option(0.05, help="radius of the weight-space ball"),
    restarts: int = typer.Option(3),
    steps: int = typer.Option(10, help="gradient-ascent steps per restart"),
):
    """Max loss increase within the rho-ball around the model's weights."""
    require_positive(rho=rho)
    require_counts(restarts=restarts, steps=steps)
    typer.echo(f"sharpness(rho={rho}) = {_sharpness(model, data, rho, restarts, steps):.5g}")


@app.command()
def orientation(
    model: Optional[Path] = typer.Argument(None, help="model file (default: the shipped SAM model)"),
    structure: Optional[Path] = typer.Option(None, help="crystal to start from (default: ammonia phase I, a = 5.13 A)"),
    repeat: int = typer.Option(2, help="supercell repeat along each axis"),
    temperature: float = typer.Option(150.0, help="K; below the crystal's orientational melting"),
    steps: int = typer.Option(4000, help="Langevin steps of 0.5 fs"),
    seed: int = typer.Option(0),
    max_angle: float = typer.Option(20.0, help="deg; a larger mean turn of X-H bonds fails the check (exit 1)"),
    max_shift: float = typer.Option(0.3, help="A; after MD, the last frame and the start are relaxed with the model: a heavy atom further apart than this fails the check (another minimum; exit 1)"),
    minima: Optional[Path] = typer.Option(None, help="write the two relaxed structures here (extxyz; label them with `legato label` to see which minimum DFT prefers)"),
    progress: bool = typer.Option(True, help="show the progress bar"),
):
    """Does the crystal stay orientationally ordered, and in its minimum? Classical MD; how far X-H bonds turn; then a quench."""
    from tqdm import tqdm

    from legato.analysis.orientation import orientation_run
    from legato.analysis.quench import quench
    from legato.training.potential import LegatoCalculator, ModelPotential

    require_counts(repeat=repeat, steps=steps)
    require_positive(temperature=temperature)
    model_path = Path(model or default_model())
    atoms = _unit_cell(structure).repeat(repeat)
    calc = LegatoCalculator(potential=ModelPotential.from_file(model_path))
    with tqdm(total=steps, desc=f"orientation {model_path.name}", unit="step", disable=not progress) as bar:
        try:
            result = orientation_run(atoms, calc, temperature, steps, seed=seed, progress=lambda done: bar.update(done - bar.n))
        except (ValueError, FloatingPointError) as exc:
            fail(str(exc))
    ordered = result.mean_angle_deg <= max_angle
    typer.echo(f"{model_path.name}: {result.summary()} -> {'ordered' if ordered else 'NOT ordered'} (limit {max_angle:.0f} deg)")
    try:
        quenched = quench(atoms, result.final, calc)
    except RuntimeError as exc:
        fail(f"quench: {exc}")
    stayed = quenched.heavy_shift_A <= max_shift
    typer.echo(f"{model_path.name}: {quenched.summary()} -> {'same minimum' if stayed else 'ANOTHER minimum'} (limit {max_shift:.2f} A)")
    if minima is not None:
        write_frames(minima, [quenched.start, quenched.final])
        typer.echo(f"wrote the relaxed start and last frame to {minima}")
    if not (ordered and stayed):
        raise typer.Exit(1)


def _sharpness(model: Path, data: Path, rho: float, restarts: int = 3, steps: int = 10) -> float:
    import torch

    from legato.training.dataset import load_dataset
    from legato.training.modelfile import load_model
    from legato.training.potential import frames_to_batch
    from legato.training.sharpness import model_loss, sharpness as estimate

    net, meta = load_model(model)
    net.train()  # forces must stay differentiable w.r.t. the weights (no dropout/batch norm in Allegro)
    batch = frames_to_batch(load_dataset(data, meta["type_names"]), meta["type_names"], meta["r_max"])
    loss = model_loss(net, batch, {"per_atom_energy": 1.0, "forces": 10.0, "wannier_disp": 100.0})
    params = [p for p in net.parameters() if p.requires_grad]
    torch.manual_seed(0)
    return estimate(loss, params, rho, restarts=restarts, steps=steps)


@app.command()
def compare(
    model_a: Optional[Path] = typer.Argument(None, help="default: models/sam.legato.pt"),
    model_b: Optional[Path] = typer.Argument(None, help="default: models/adam.legato.pt"),
    data: Path = typer.Option(Path("data/nh3_dft_test.extxyz"), help="held-out frames for sharpness"),
    output: Path = typer.Option(Path("results/compare"), "-o", "--output"),
    sizes: str = typer.Option("1,2,4,8", help="supercell multipliers of the unit cell (--structure)"),
    structure: Optional[Path] = typer.Option(None, "-s", "--structure", help=STRUCTURE_HELP),
    seeds: int = typer.Option(6),
    temperature: float = typer.Option(6000.0, help="K, as for legato failure"),
    max_steps: int = typer.Option(6000),
    contact_checks: int = typer.Option(4, help=CONTACT_CHECKS_HELP),
    workers: int = typer.Option(1, help=WORKERS_HELP),
    device: str = typer.Option("cpu", help=DEVICE_HELP + "; for the speed column and the failure trajectories"),
    rho: float = typer.Option(0.05),
    progress: bool = typer.Option(True, help="show the progress bars"),
):
    """SAM vs Adam (or any two models): test errors, speed, sharpness, t_failure(N), beta."""
    import csv
    import time

    from legato.analysis.robustness import failure_times, per_size, plot_failure
    from legato.training.modelfile import read_model_file
    from legato.training.potential import ModelPotential

    models = [Path(model_a or default_model()), Path(model_b or default_model().with_name("adam.legato.pt"))]
    _require_device(device)
    require_positive(rho=rho)
    atoms = _unit_cell(structure)
    rows, series, fits = [], {}, {}
    for path in models:
        meta = read_model_file(path)["metadata"]
        pot = ModelPotential.from_file(path, device=device)
        pot.evaluate(atoms.get_chemical_symbols(), atoms.positions, atoms.cell.array[None])
        start = time.perf_counter()
        for _ in range(20):
            pot.evaluate(atoms.get_chemical_symbols(), atoms.positions, atoms.cell.array[None])
        ms = (time.perf_counter() - start) / 20 * 1e3
        results = _failure_study(path, output / path.name.split(".")[0], sizes, seeds, temperature, max_steps, contact_checks, workers, progress, structure, device)
        series[path.name] = results
        beta, lo, hi = fits[path.name] = _print_failure(path.name, results)
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
                f"sharpness_rho{rho}": round(_sharpness(path, data, rho), 6) if data.exists() else float("nan"),
                "beta": round(beta, 3),
                "beta_low": round(lo, 3),
                "beta_high": round(hi, 3),
            }
        )
        times = failure_times(results)
        for n, (failed, total, _) in per_size(results).items():
            rows[-1][f"t_failure_N{n}"] = _t_failure_text(results, n, times[n])
            rows[-1][f"failed_N{n}"] = f"{failed}/{total}"
    output.mkdir(parents=True, exist_ok=True)
    with open(output / "comparison.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    figure = plot_failure(output / "failure_comparison.png", series, fits, title=f"time to failure at {temperature:.0f} K")
    for row in rows:
        typer.echo("  " + ", ".join(f"{k}={v}" for k, v in row.items()))
    typer.echo(f"table: {output / 'comparison.csv'}  figure: {figure}")


def default_model() -> Path:
    """The shipped SAM model (models/sam.legato.pt in the source tree)."""
    path = Path(__file__).resolve().parent.parent / "models" / "sam.legato.pt"
    if not path.exists():
        fail(f"{path}: the shipped model is missing; pass a model file")
    return path


def main() -> None:
    """The `legato` entry point: an unreadable model file is a one-line error in every verb."""
    try:
        app()
    except Exception as exc:
        from legato.training.modelfile import ModelFileError

        if not isinstance(exc, ModelFileError):
            raise
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        sys.exit(2)


if __name__ == "__main__":
    main()
