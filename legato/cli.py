"""The `legato` command line: one verb per stage (see `legato --help`).

Each verb parses its options, calls one function of its stage (legato.training,
legato.driver, legato.analysis) and turns the stage's errors into one line.
"""

from __future__ import annotations

import os
import sys
from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer

from legato.training.protocol import CONVERGED

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="legato-pimd: SAM-trained Allegro potentials with Wannier dipoles, for path-integral MD.",
)


# The choices of string options (typer checks them); the stage functions they reach
# check them again for Python callers (tests/test_cli.py keeps the two lists equal).
class StructureKind(str, Enum):
    ammonia_initial = "ammonia-initial"
    ammonia_crystal = "ammonia-crystal"
    ammonia_liquid = "ammonia-liquid"
    ammonia_reoriented = "ammonia-reoriented"
    ammonia_turned = "ammonia-turned"
    ammonia_c3_scan = "ammonia-c3-scan"
    path = "path"
    liquid = "liquid"
    displaced = "displaced"
    cluster = "cluster"


class Dispersion(str, Enum):
    d3bj = "d3bj"
    d3zero = "d3zero"
    none = "none"


class Spectrum(str, Enum):
    ir = "ir"
    ins = "ins"


class Correction(str, Enum):
    harmonic = "harmonic"
    standard = "standard"
    none = "none"


def _show_version(show: bool) -> None:
    if show:
        from legato.modelfile import versions

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


def _require_device(device: str) -> None:
    """A one-line error unless this torch can run models on ``device``."""
    from legato.potential import torch_device

    try:
        torch_device(device)
    except ValueError as exc:
        fail(f"--device: {exc}")


def _model_or_default(model: Optional[Path]) -> Path:
    from legato.shipped import default_model

    try:
        return Path(model or default_model())
    except FileNotFoundError as exc:
        fail(str(exc))


@app.command()
def structures(
    output: Path = typer.Argument(..., help="extxyz file to write"),
    kind: StructureKind = typer.Option(
        StructureKind.ammonia_initial,
        help="ammonia-initial | ammonia-crystal | ammonia-liquid | ammonia-reoriented (one molecule per cell turned) | ammonia-c3-scan (all turned about C3, 0-60 deg) | ammonia-turned (each turned about C3 at random, displaced) | path (between the first two frames of --between, displaced) | liquid (boxes of --molecule, displaced) | displaced (the frames of --source in turn, displaced) | cluster (--molecules of --molecule in vacuum, displaced)",
    ),
    n: int = typer.Option(120, "-n", "--n", help="number of frames (initial set: 2/3 crystal, 1/3 liquid)"),
    a: float = typer.Option(5.13, help="phase-I lattice constant, A"),
    repeat: int = typer.Option(1, help="supercell repeat along each axis (--kind ammonia-crystal; --kind displaced: each source tiled, every image displaced on its own)"),
    molecules: int = typer.Option(4, help="molecules per liquid box or cluster"),
    density: float = typer.Option(0.68, help="liquid density, g/cm^3"),
    molecule: str = typer.Option("NH3", help="for --kind liquid, cluster: a molecule ase.build.molecule knows (H2O, NH3, CH4, ...)"),
    strain: float = typer.Option(0.0, help="for --kind displaced: each cell scaled by a random factor within 1 +- STRAIN"),
    vacuum: float = typer.Option(9.0, help="for --kind cluster: least vacuum between periodic images, A"),
    min_box: float = typer.Option(10.0, help="for --kind cluster: least box edge, A (10: `legato label` labels thinner cells in supercells)"),
    source: Optional[Path] = typer.Option(None, help="for --kind displaced: a structure file (CIF, extxyz, i-PI xyz, ...); its frames are displaced in turn"),
    between: Optional[Path] = typer.Option(None, help="for --kind path: a file whose first two frames are the path's end points (e.g. two minima)"),
    stdev: float = typer.Option(0.03, help="for --kind path, liquid, displaced: thermal displacement of hydrogen, A; heavier atoms (m_H/m)^(1/4) of it (0 on a path: frames exactly on it, an energy profile)"),
    overshoot: float = typer.Option(0.25, help="for --kind path: path fraction beyond each end point"),
    seed: int = typer.Option(0),
):
    """Write starting structures (crystal, liquid, thermally displaced sets)."""
    from legato.fileio import write_frames
    from legato.training.structures import structure_set

    require_counts(n=n, repeat=repeat, molecules=molecules)
    require_positive(a=a, density=density, vacuum=vacuum)
    if min_box < 0:
        fail(f"--min-box {min_box}: give a length in A (0: no minimum)")
    if not 0 <= strain < 0.5:
        fail(f"--strain {strain}: give a fraction from 0 to 0.5 (0.03 scales each cell by 0.97-1.03)")
    try:
        frames = structure_set(kind.value, n, a, repeat, molecules, density, molecule, source, between, stdev, overshoot, seed, strain, vacuum, min_box)
    except ValueError as exc:
        fail(str(exc))
    write_frames(output, frames)
    typer.echo(f"wrote {len(frames)} frame(s) to {output}")


@app.command()
def label(
    input: Path = typer.Argument(..., help="structures (any ASE-readable file, periodic)"),
    output: Path = typer.Argument(..., help="labelled extxyz data set (appended, resumable)"),
    xc: str = typer.Option("pbe"),
    basis: str = typer.Option(CONVERGED["basis"], help="GTH basis (the convergence study's choice; gth-dzvp is the data shipped before it)"),
    pseudo: str = typer.Option("gth-pbe"),
    dispersion: Dispersion = typer.Option(Dispersion.d3bj),
    ke_cutoff: Optional[float] = typer.Option(None, help="PySCF's plane-wave cutoff, hartree (default: PySCF's)"),
    wannier_order: int = typer.Option(CONVERGED["wannier_order"], min=1, max=2, help="Berry-phase estimator: 1 = Resta/Silvestrelli (CP2K's), 2 = G and 2G extrapolated (Boys centres to O(1/L^4); PySCF only)"),
    min_cell_length: float = typer.Option(CONVERGED["min_cell_length"], help="A: frames thinner than this are labelled at the Gamma point of a supercell this wide (0 = each frame's own cell)"),
    code: str = typer.Option(CONVERGED["code"], help="pyscf | cp2k | auto (CP2K where installed: same labels, 3-4x faster)"),
    limit: Optional[int] = typer.Option(None, help="label at most this many new frames"),
    model: Optional[Path] = typer.Option(
        None, help="label with this model file instead of DFT (the data of a distilled cheap model, e.g. --model models/sam.legato.pt); the DFT options are then unused"
    ),
    progress: bool = typer.Option(True, help="show the progress bar (without it, a line per frame)"),
):
    """DFT energies, forces and Wannier centres with CP2K or PySCF (resumes where it stopped).

    Defaults are the converged protocol of docs/convergence.md. With --model,
    a trained model gives the labels (recorded as the frames' method).

    Prints one line per frame that takes a second or more (every DFT frame):
    labelled (seconds) or skipped (why; the reason is kept beside the output).
    """
    from legato.training.label import DFTSettings, label_file

    if not input.exists():
        fail(f"{input}: no such structure file")
    require_counts(limit=limit)
    if model is not None:
        from legato.training.model_labels import ModelLabels

        settings = ModelLabels(str(model))
    else:
        settings = DFTSettings(
            xc=xc, basis=basis, pseudo=pseudo, dispersion=None if dispersion is Dispersion.none else dispersion.value, ke_cutoff=ke_cutoff,
            wannier_order=wannier_order, min_cell_length=min_cell_length, code=code,
        )
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
    skip: int = typer.Option(0, min=0, help="leave out the first SKIP frames of each file (equilibration; every bead of a PIMD run starts from the same structure)"),
):
    """Active learning: pick the frames where a committee of models disagrees most (then `legato label`)."""
    from legato.fileio import write_frames
    from legato.training.select import committee_select

    require_counts(n=n, min_separation=min_separation)
    require_positive(cell=cell)
    try:
        picked = committee_select(models, frames, n, min_separation, skip, cell)
    except ValueError as exc:
        fail(str(exc))
    write_frames(output, picked["frames"])
    low, high = picked["spread"]
    typer.echo(
        f"{output}: {len(picked['frames'])} of {picked['candidates']} frames from {len(picked['files'])} file(s), committee force spread {low:.3f}-{high:.3f} eV/A"
    )


@app.command()
def merge(
    inputs: List[Path] = typer.Argument(..., help="labelled extxyz files"),
    output: Path = typer.Option(..., "-o", "--output", help="merged data set"),
    min_distance: float = typer.Option(0.8, help="drop frames whose closest atoms are nearer than this (A)"),
    max_force: float = typer.Option(25.0, help="drop frames with any force component above this (eV/A)"),
):
    """Merge labelled data sets, dropping frames far outside thermal sampling and repeated frames; validates the rest."""
    from legato.fileio import write_frames
    from legato.training.merge import merge_datasets

    try:
        merged = merge_datasets(inputs, output, min_distance, max_force)
    except ValueError as exc:  # DatasetError too
        fail(str(exc))
    write_frames(output, merged["frames"])
    typer.echo(
        f"{output}: {len(merged['frames'])} frames kept, {merged['dropped']} dropped (closest approach < {min_distance} A or |F| > {max_force} eV/A), "
        f"{merged['duplicates']} duplicates dropped (same species, positions and cell)"
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
    from legato.training.train import load_config
    from legato.training.train import train as run_training

    try:
        cfg = load_config(config, overrides or [])
        model_file = run_training(cfg, progress=progress)
    except (FileNotFoundError, ValueError) as exc:  # DatasetError too
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
    from legato.training.evaluate import evaluate_file

    try:
        result = evaluate_file(model, data, by, group_by)
    except ValueError as exc:  # ModelFileError, DatasetError too
        fail(str(exc))
    for key, value in result["errors"].items():
        typer.echo(f"{key}: {value:.4g}" if isinstance(value, float) else f"{key}: {value}")
    groups, profile = result["groups"], result["profile"]
    if groups:
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


class NequipTarget(str, Enum):
    ase = "ase"
    pair_allegro = "pair_allegro"


@app.command()
def export(
    source: Path = typer.Argument(..., help="a training output_dir (with config.yaml and checkpoints/), or a model file with --nequip"),
    nequip: Optional[Path] = typer.Option(None, "--nequip", help="also write the energy/forces model as nequip files into this folder: checkpoint, nequip-package .nequip.zip, nequip-compile .nequip.pt2 per --target"),
    target: Optional[List[NequipTarget]] = typer.Option(None, "--target", help="nequip-compile AOT target(s) for --nequip (default: ase and pair_allegro)"),
    compile: bool = typer.Option(True, "--compile/--no-compile", help="with --nequip: compile the .nequip.pt2 files (minutes each on a CPU); --no-compile stops at the package"),
    device: str = typer.Option("cpu", help="with --nequip: the device the compiled files run on (compile on a machine that has it)"),
    example: Optional[Path] = typer.Option(None, help="with --nequip: a frame of the model's system for nequip-compile to trace (default: a small generic frame of its species)"),
):
    """Write a run's model file from its best checkpoint (also for runs still training);
    with --nequip, export a model file (or the run's) for nequip's ASE calculator and LAMMPS."""
    from legato.modelfile import ModelFileError

    if source.is_dir():
        from legato.training.train import export_run

        try:
            model_file = export_run(source)
        except (FileNotFoundError, ValueError) as exc:
            fail(str(exc))
        _print_model(model_file)
    elif nequip is None:
        fail(f"{source}: not a training output_dir; to export a model file for nequip give --nequip DIR")
    else:
        model_file = source
    if nequip is None:
        return
    from legato.nequip_export import TARGETS, export_nequip

    targets = [t.value for t in target] if target else list(TARGETS)
    frame = None
    if example is not None:
        from legato.fileio import read_structures

        try:
            frame = read_structures(example)[0]
        except (OSError, ValueError, IndexError) as exc:
            fail(f"--example {example}: {exc}")
    try:
        export_nequip(model_file, nequip, targets=targets if compile else [], device=device, example=frame, log=typer.echo)
    except (ModelFileError, ValueError) as exc:
        fail(str(exc))
    typer.echo("energies and forces only: dipoles (the Wannier head) stay with legato's model file")


def _print_model(path: Path) -> None:
    from legato.modelfile import read_model_file

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
    if "loss_weights" in meta:
        typer.echo("  loss weights: " + ", ".join(f"{name} {weight:g}" for name, weight in meta["loss_weights"].items()))
    versions = ", ".join(f"{name} {version}" for name, version in meta["versions"].items())
    typer.echo(f"  created {meta['created'][:16]} with {versions}")
    for key, value in meta.get("test_errors", {}).items():
        typer.echo(f"  test {key}: {value:.4g}" if isinstance(value, float) else f"  test {key}: {value}")


@app.command()
def info(model: Path = typer.Argument(..., help="a .legato.pt model file")):
    """Show a model file's metadata and test errors."""
    _print_model(model)  # a ModelFileError is one line (main)


ATOMS_PER_CALL_HELP = (
    "atoms per model call: beads go to the model in groups of up to this many. Default: the driver times"
    " the groupings (1, 2, 4, ... beads, all; on a CPU at all cores' threads and at one, unless OMP_NUM_THREADS"
    " is set) on its first steps, keeps the fastest and logs the plan; with --compile 64 on a CPU, all beads on a GPU"
)
DEVICE_HELP = "where the model runs: cpu, cuda or cuda:N (a torch build with CUDA)"
COMPILE_HELP = (
    "torch.compile the model after 1-2 min of compiling (cached for later runs): PIMD steps 2x faster"
    " with the wide l_max 1 model, 1.14x with the shipped l_max 2 one on a CPU (docs/performance.md); needs g++"
)
POTENTIAL_HELP = "an analytic potential instead of a model: harmonic:k=K or morse:D=..,a=..,r0=..,pairs=0-1"


@app.command()
def serve(
    model: Optional[Path] = typer.Argument(None, help="model file (default: the shipped SAM model)"),
    structure: Path = typer.Option(..., "-s", "--structure", help="the structure i-PI runs (species order)"),
    unix: Optional[str] = typer.Option(None, "-u", "--unix", help="i-PI unix socket NAME (/tmp/ipi_NAME)"),
    inet: Optional[str] = typer.Option(None, "-i", "--inet", help="i-PI inet socket HOST:PORT"),
    periodic: bool = typer.Option(True, help="use i-PI's cell (off for molecules in vacuum)"),
    potential: Optional[str] = typer.Option(None, help=POTENTIAL_HELP),
    reconnect: float = typer.Option(120.0, help="after i-PI disconnects, wait this long (s) for it to come back"),
    connect_wait: float = typer.Option(60.0, help="wait this long (s) for i-PI to open its socket"),
    atoms_per_call: Optional[int] = typer.Option(None, help=ATOMS_PER_CALL_HELP),
    compile_model: bool = typer.Option(False, "--compile", help=COMPILE_HELP),
    device: str = typer.Option("cpu", help=DEVICE_HELP),
):
    """Serve a model's forces and per-bead dipoles to i-PI (batched when i-PI batches)."""
    import logging

    from legato.driver.client import serve as serve_ipi
    from legato.driver.pes import make_driver

    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    if (unix is None) == (inet is None):
        fail("give exactly one of --unix NAME or --inet HOST:PORT")
    host, _, port = (inet or "").rpartition(":")
    if inet is not None and not port.isdigit():
        fail(f"--inet needs HOST:PORT, got '{inet}'")
    try:
        driver = make_driver(structure, None if potential else _model_or_default(model), potential, periodic, atoms_per_call, compile_model, device)
        if unix is not None:
            outcome = serve_ipi(driver, unix, unix=True, reconnect_wait=reconnect, connect_wait=connect_wait)
        else:
            outcome = serve_ipi(driver, host or "localhost", int(port), unix=False, reconnect_wait=reconnect, connect_wait=connect_wait)
    except (TimeoutError, ValueError, FloatingPointError, FileNotFoundError) as exc:  # InputError, ModelFileError too
        fail(str(exc))
    typer.echo(f"served {driver.frames} structures in {driver.calls} model calls; i-PI {'finished' if outcome == 'exit' else 'disconnected'}")
    if outcome != "exit":
        raise typer.Exit(3)


def _serve_command(model_path: Optional[str], potential: Optional[str], periodic: bool, atoms_per_call: Optional[int], compile_model: bool, device: str) -> list[str]:
    """The `legato serve` command of a run's extra driver processes (run in the run folder)."""
    cmd = [sys.executable, "-m", "legato.cli", "serve", *(["--potential", potential] if potential else [model_path or ""]), "--reconnect", "0"]
    if not periodic:
        cmd.append("--no-periodic")
    if atoms_per_call is not None:
        cmd += ["--atoms-per-call", str(atoms_per_call)]
    if compile_model:
        cmd.append("--compile")
    return cmd + ["--device", device]


@app.command()
def run(
    template: Path = typer.Argument(..., help="i-PI XML (a file in ipi_inputs/ or your own)"),
    output: Path = typer.Option(..., "-o", "--output", help="run directory (run again to resume)"),
    model: Optional[Path] = typer.Option(None, "-m", "--model", help="model file (default: the shipped SAM model)"),
    potential: Optional[str] = typer.Option(None, help=POTENTIAL_HELP),
    beads: Optional[int] = typer.Option(None, help="number of beads (1 = classical)"),
    temperature: Optional[float] = typer.Option(None, help="K"),
    steps: Optional[int] = typer.Option(None, help="total MD steps"),
    timestep: Optional[float] = typer.Option(None, help="fs"),
    stride: Optional[int] = typer.Option(None, help="trajectory output stride (steps)"),
    seed: Optional[int] = typer.Option(None),
    periodic: bool = typer.Option(True, help="use the cell (off for molecules in vacuum)"),
    drivers: int = typer.Option(1, help="driver processes (>1: extra `legato serve` processes on an inet socket; with --listen, the number of drivers the beads are split for)"),
    listen: Optional[str] = typer.Option(
        None, help="HOST:PORT: i-PI's inet socket for drivers on other nodes (`legato serve MODEL -s STRUCTURE --inet HOST:PORT`, any time during the run); this process serves too and starts no helpers"
    ),
    start: Optional[Path] = typer.Option(None, help="i-PI checkpoint (e.g. an equilibration run's RESTART) whose positions and momenta start the run"),
    structure: Optional[Path] = typer.Option(None, "-s", "--structure", help="initial structure instead of the template's: i-PI xyz, or CIF, extxyz, ... (last frame, with its cell)"),
    atoms_per_call: Optional[int] = typer.Option(None, help=ATOMS_PER_CALL_HELP),
    compile_model: bool = typer.Option(False, "--compile", help=COMPILE_HELP),
    device: str = typer.Option("cpu", help=DEVICE_HELP),
    contract: Optional[int] = typer.Option(
        None, help="ring-polymer contraction: the full model sees this many beads (a divisor of --beads); a cheap reference model acts on all beads"
    ),
    mts: Optional[int] = typer.Option(None, help="multiple time steps: inner steps of the cheap reference per outer step (the template's time step is the outer one)"),
    fast_model: Optional[Path] = typer.Option(None, help="the cheap reference model of --contract / --mts (default: the shipped models/fast.legato.pt)"),
    fast_potential: Optional[str] = typer.Option(None, help="an analytic cheap reference instead of --fast-model (forms as --potential)"),
    progress: bool = typer.Option(True),
):
    """Run i-PI with the legato driver (PIMD, TRPMD, classical), with progress; resumes from RESTART.

    With --contract and/or --mts the forces split into a cheap reference on all beads at the
    inner time step and the correction (full - cheap) on the contracted beads at the outer
    one (i-PI's ring-polymer contraction and multiple time stepping); dipoles come from the
    full model, interpolated onto all beads.
    """
    from legato.driver.pes import make_driver
    from legato.driver.run import RunSettings, check_fast_path, run_simulation, template_beads
    from legato.modelfile import read_model_file
    from legato.shipped import template as find_template

    try:
        template = find_template(template)
    except FileNotFoundError as exc:
        fail(str(exc))
    if structure is not None and not structure.exists():
        fail(f"{structure}: no such structure file")
    _require_device(device)
    require_counts(beads=beads, steps=steps, stride=stride, drivers=drivers)
    require_positive(temperature=temperature, timestep=timestep)
    model_path = str(_model_or_default(model).resolve()) if potential is None else None  # helpers run in the run folder
    # a bad model file fails here (one line, main), before the run folder is made
    full_metadata = read_model_file(model_path)["metadata"] if model_path else None
    settings = RunSettings(
        nbeads=beads, temperature=temperature, total_steps=steps, timestep=timestep, seed=seed, stride=stride, start=start, structure=structure, contract=contract, mts=mts
    )
    fast_factory = None
    if listen is not None:
        from legato.driver.run import parse_address

        try:
            parse_address(listen)
        except ValueError as exc:
            fail(str(exc))
    if contract is not None or mts is not None:
        try:
            check_fast_path(beads or template_beads(template), contract, mts)
        except ValueError as exc:
            fail(str(exc))
    if settings.fast_path:
        fast_path = None if fast_potential is not None else _cheap_model(fast_model, full_metadata)

        def fast_factory(structure_in_run):
            return make_driver(structure_in_run, fast_path, fast_potential, periodic, None, compile_model, device, dipoles=False)

    def factory(structure_in_run):
        return make_driver(structure_in_run, model_path, potential, periodic, atoms_per_call, compile_model, device)

    extra = _serve_command(model_path, potential, periodic, atoms_per_call, compile_model, device)
    try:
        run_dir = run_simulation(
            template, output, factory, settings, n_drivers=drivers, extra_driver_cmd=extra, progress=progress, fast_driver_factory=fast_factory, listen=listen
        )
    except (FileNotFoundError, ValueError, RuntimeError, TimeoutError) as exc:  # InputError, ModelFileError too
        fail(str(exc))
    typer.echo(f"done: outputs in {run_dir}")


def _cheap_model(fast_model: Optional[Path], full_metadata: Optional[dict]) -> str:
    """The cheap reference model file of a fast-path run (default: the shipped one), checked
    against the full model's species; exits with one line where it does not fit."""
    from legato.modelfile import read_model_file
    from legato.shipped import fast_model as shipped_fast_model

    try:
        path = str(Path(fast_model or shipped_fast_model()).resolve())
        fast_species = sorted(read_model_file(path)["metadata"]["type_names"])
    except (FileNotFoundError, ValueError) as exc:  # ModelFileError too
        fail(str(exc))
    full_species = sorted(full_metadata["type_names"]) if full_metadata else fast_species
    if fast_species != full_species:
        fail(f"--fast-model {path}: it knows {fast_species}, the full model {full_species}; give a cheap model of the same species")
    return path


@app.command()
def spectrum(
    kind: Spectrum = typer.Argument(..., help="ir | ins"),
    run_dir: Path = typer.Argument(..., help="an i-PI run directory (from `legato run`, or with its input.xml)"),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="where to write CSV/PNG (default: the run directory)"),
    correction: Correction = typer.Option(Correction.harmonic, help="IR quantum correction: harmonic | standard | none"),
    equilibration: float = typer.Option(0.2, help="fraction of frames dropped at the start"),
    final_energy: float = typer.Option(3.5, help="INS: analyser final energy, meV (VISION 3.5)"),
    resolution: float = typer.Option(0.012, help="INS: FWHM / energy transfer (VISION ~1.2%)"),
):
    """IR (dipole ACF) or INS (H-weighted VDOS, VISION kinematics) spectrum of a run."""
    from legato.analysis.nqe import low_frequency_line
    from legato.analysis.pipeline import spectrum_of_run

    require_fraction(equilibration=equilibration)
    require_positive(final_energy=final_energy, resolution=resolution)
    try:
        r = spectrum_of_run(kind.value, run_dir, output, correction.value, equilibration, final_energy, resolution)
    except (FileNotFoundError, ValueError) as exc:  # TrajectoryError too
        fail(str(exc))
    typer.echo(f"{kind.value.upper()}: {r['csv']} and {r['figure']}")
    for p in r["peaks"]:
        typer.echo(f"  peak {p.position:7.1f} +- {p.error:4.1f} cm^-1  (height {p.height:.2f})")
    if kind is Spectrum.ins:
        typer.echo(low_frequency_line({run_dir.name: r["spectrum"]["low_frequency_share"]}))


@app.command()
def nqe(
    classical: Path = typer.Argument(..., help="run directory of the classical (1 bead) run"),
    pimd: Path = typer.Argument(..., help="run directory of the PIMD/TRPMD run (same system and temperature)"),
    output: Path = typer.Option(Path("results/nqe"), "-o", "--output"),
    equilibration: float = typer.Option(0.2),
):
    """Nuclear quantum effects: IR and INS of classical vs PIMD runs, peak shifts (CSV) and figures (PNG)."""
    from legato.analysis.pipeline import compare_runs

    require_fraction(equilibration=equilibration)
    try:
        result = compare_runs(classical, pimd, output, equilibration)
    except (FileNotFoundError, ValueError) as exc:  # TrajectoryError too
        fail(str(exc))
    _print_nqe(result)


def _print_nqe(result: dict) -> None:
    from legato.analysis.nqe import low_frequency_line

    for kind, r in result.items():
        typer.echo(f"{kind.upper()}: figure {r['figure']}, table {r['table']}")
        for row in r["rows"]:
            typer.echo(
                f"  {row['classical_cm-1']:7.1f} -> {row['pimd_cm-1']:7.1f} cm^-1   shift {row['shift_cm-1']:+7.1f} +- {row['shift_err']:.1f} ({row['shift_percent']:+.1f}%)"
            )
        if "low_frequency_share" in r:
            typer.echo(low_frequency_line(r["low_frequency_share"]))


@app.command()
def demo(
    output: Path = typer.Option(Path("results/demo"), "-o", "--output", help="where runs, spectra and figures go"),
    model: Optional[Path] = typer.Option(None, "-m", "--model", help="model file (default: the shipped SAM model)"),
    temperature: float = typer.Option(150.0, help="K (solid phase I melts at 195 K)"),
    production: bool = typer.Option(False, help="2x2x2 cell, 32 beads, 20 ps each (hours on 2 cores) instead of the quick look"),
    compile_model: bool = typer.Option(False, "--compile", help=COMPILE_HELP + "; with --production"),
    device: str = typer.Option("cpu", help=DEVICE_HELP),
    fast_path: bool = typer.Option(True, help="ring-polymer contraction to 4 beads and 4 inner steps over the cheap model (as `legato run --contract 4 --mts 4`); --no-fast-path: the full model on every bead every 0.5 fs (about 10x slower)"),
    fast_model: Optional[Path] = typer.Option(None, help="the cheap reference model of the fast path (default: the shipped models/fast.legato.pt)"),
    progress: bool = typer.Option(True),
):
    """The main job: solid ammonia, classical MD and TRPMD through i-PI, IR + INS spectra, NQE table.

    The crystal is first relaxed with the model; each run starts after its own
    equilibration (strong PILE-L thermostat, equilibrate_nvt.xml) that the spectra skip.
    Quick settings (default): 16-atom cell, equilibration 0.5 ps, classical 5 ps,
    TRPMD 32 beads 2 ps; the full model sees 4 contracted beads every 2 fs, the cheap
    model all beads every 0.5 fs. Runs resume if interrupted; finished runs are reused.
    """
    from legato.analysis.nqe import low_frequency_warning
    from legato.analysis.pipeline import compare_runs
    from legato.driver.demo import demo_runs
    from legato.modelfile import read_model_file

    model_path = _model_or_default(model)
    _require_device(device)
    require_positive(temperature=temperature)
    if fast_model is not None and not fast_path:
        fail("--fast-model goes with the fast path: leave out --no-fast-path")
    cheap = _cheap_model(fast_model, read_model_file(model_path)["metadata"]) if fast_path else None
    _print_model(model_path)
    try:  # the runs (driver stage), then their spectra (analysis stage)
        runs = demo_runs(output, model_path, temperature, production, compile_model, device, progress, log=typer.echo, fast_model=cheap)
    except (RuntimeError, FileNotFoundError, ValueError, TimeoutError) as exc:
        fail(str(exc))
    result = compare_runs(runs["classical"], runs["pimd"], output / "spectra", equilibration=0.0)
    _print_nqe(result)
    typer.echo(f"figures: {result['ir']['figure']}  {result['ins']['figure']}")
    warning = low_frequency_warning(result["ins"]["low_frequency_share"])
    if warning:
        typer.echo(warning, err=True)


CONTACT_CHECKS_HELP = (
    "a close contact (below 0.6 A) is a failure once it lasts this many consecutive checks "
    "(5 steps apart); hot collisions bounce back within one"
)
WORKERS_HELP = "trajectories run side by side, one process each (up to the number of cores); each keeps its seed, so a study may resume with another count"
STRUCTURE_HELP = "unit cell to multiply (CIF, extxyz, i-PI xyz; last frame; default: ammonia phase I, a = 5.13 A)"


class FailureProtocol(str, Enum):
    hot = "hot"
    legato = "legato"


FAILURE_PROTOCOL_HELP = (
    "hot: the crystal at 6000 K, Langevin, 0.5 fs, failure on a temperature drift or a lasting close contact; "
    "legato: Allegro-Legato's protocol, the liquid at 200 K with deuterium masses, Nose-Hoover NVT, 2.5 fs, "
    "failure once the temperature leaves [100, 300] K (checked every 10 steps), 10 runs per size"
)


@app.command()
def failure(
    model: Optional[Path] = typer.Argument(None, help="model file (default: the shipped SAM model)"),
    output: Path = typer.Option(Path("results/failure"), "-o", "--output"),
    protocol: FailureProtocol = typer.Option(FailureProtocol.hot, help=FAILURE_PROTOCOL_HELP),
    sizes: Optional[str] = typer.Option(None, help="supercell multipliers of the unit cell (--structure); default: hot 1,2,4,8, legato 4,8,16,32 (128-1024 atoms)"),
    structure: Optional[Path] = typer.Option(None, "-s", "--structure", help=STRUCTURE_HELP + "; --protocol legato: the 32-atom liquid box ipi_inputs/nh3_liquid_8.xyz"),
    seeds: Optional[int] = typer.Option(None, help="trajectories per size (default: hot 6, legato 10)"),
    temperature: Optional[float] = typer.Option(None, help="K (default: hot 6000, far above melting to provoke failures within ps; legato 200)"),
    max_steps: Optional[int] = typer.Option(None, help="steps after which a trajectory counts as surviving (censored; default: hot 6000 of 0.5 fs, legato 4000 of 2.5 fs)"),
    contact_checks: int = typer.Option(4, help=CONTACT_CHECKS_HELP + " (--protocol hot)"),
    workers: int = typer.Option(1, help=WORKERS_HELP),
    device: str = typer.Option("cpu", help=DEVICE_HELP),
    progress: bool = typer.Option(True, help="show the progress bar"),
):
    """Time to failure vs system size and beta of t_failure = A N^-beta (resumable)."""
    from legato.analysis.failure_study import failure_study, failure_summary
    from legato.analysis.robustness import plot_failure

    model_path = _model_or_default(model)
    out = output / model_path.name.split(".")[0]
    if protocol != FailureProtocol.hot:
        out = out.with_name(f"{out.name}_{protocol.value}")
    try:
        results = failure_study(model_path, out, sizes, seeds, temperature, max_steps, contact_checks, workers, progress, structure, device, protocol.value)
    except ValueError as exc:  # ModelFileError too
        fail(str(exc))
    fit, lines = failure_summary(model_path.name, results)
    typer.echo("\n".join(lines))
    typer.echo(f"figure: {plot_failure(out / 'failure.png', {model_path.name: results}, {model_path.name: fit})}")


@app.command()
def sharpness(
    model: Path = typer.Argument(..., help="model file"),
    data: Path = typer.Argument(..., help="labelled frames (e.g. a run's split/test.extxyz)"),
    rho: float = typer.Option(0.05, help="radius of the weight-space ball (worst case)"),
    restarts: int = typer.Option(3),
    steps: int = typer.Option(10, help="gradient-ascent steps per restart"),
    sigma: float = typer.Option(0.05, help="Gaussian weight noise per weight (average case, as Allegro-Legato's measure_sharpness.py)"),
    samples: int = typer.Option(100, help="noise samples of the average case (0: leave it out)"),
    loss_weights: Optional[str] = typer.Option(None, help="loss weights instead of the model's own, e.g. per_atom_energy=100,forces=10,wannier_disp=1000 (to compare models on one objective)"),
):
    """How sharp the model's training loss is around its weights: the largest increase
    within the rho-ball (worst case, what SAM minimises) and the mean increase under
    Gaussian weight noise (average case, Allegro-Legato's measure). The loss is the
    model's own training objective (its config's loss weights, stored in the model file)."""
    from legato.analysis.sharpness import parse_loss_weights, sharpness_of_file

    require_positive(rho=rho, sigma=sigma)
    require_counts(restarts=restarts, steps=steps)
    if samples < 0:
        fail(f"--samples {samples}: give 0 (no average case) or more")
    try:
        weights = parse_loss_weights(loss_weights) if loss_weights is not None else None
        result = sharpness_of_file(model, data, rho, restarts, steps, weights, sigma if samples else None, samples)
    except ValueError as exc:  # ModelFileError, DatasetError too
        fail(str(exc))
    source = "--loss-weights" if loss_weights is not None else "the model's training config"
    typer.echo("loss weights (" + source + "): " + ", ".join(f"{k}={v:g}" for k, v in result["loss_weights"].items()))
    typer.echo(f"worst case: max increase within |e| <= {rho:g}: {result['worst_case']:.5g}")
    if "average_case" in result:
        mean, error = result["average_case"]
        typer.echo(f"average case: mean increase under noise sigma {sigma:g} ({samples} samples): {mean:.5g} +- {error:.2g}")


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
    from legato.analysis.orientation import orientation_check
    from legato.fileio import write_frames

    require_counts(repeat=repeat, steps=steps)
    require_positive(temperature=temperature)
    model_path = _model_or_default(model)
    try:
        result, quenched = orientation_check(model_path, structure, repeat, temperature, steps, seed, progress=progress)
    except (ValueError, FloatingPointError, RuntimeError) as exc:  # ModelFileError too
        fail(str(exc))
    ordered = result.mean_angle_deg <= max_angle
    typer.echo(f"{model_path.name}: {result.summary()} -> {'ordered' if ordered else 'NOT ordered'} (limit {max_angle:.0f} deg)")
    stayed = quenched.heavy_shift_A <= max_shift
    typer.echo(f"{model_path.name}: {quenched.summary()} -> {'same minimum' if stayed else 'ANOTHER minimum'} (limit {max_shift:.2f} A)")
    if minima is not None:
        write_frames(minima, [quenched.start, quenched.final])
        typer.echo(f"wrote the relaxed start and last frame to {minima}")
    if not (ordered and stayed):
        raise typer.Exit(1)


@app.command()
def compare(
    model_a: Optional[Path] = typer.Argument(None, help="default: the shipped SAM model (models/sam.legato.pt)"),
    model_b: Optional[Path] = typer.Argument(None, help="default: the shipped Adam model (models/adam.legato.pt)"),
    data: Optional[Path] = typer.Option(None, help="held-out frames for sharpness (default: the shipped models' test frames, data/nh3_dft_test.extxyz)"),
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
    from legato.analysis.compare import compare_models
    from legato.shipped import baseline_model, held_out_frames

    try:
        models = [Path(model_a or _model_or_default(None)), Path(model_b or baseline_model())]
        table = compare_models(
            models, output, data or held_out_frames(), sizes, structure, seeds, temperature, max_steps, contact_checks, workers, device, rho, progress, log=typer.echo
        )
    except (FileNotFoundError, ValueError) as exc:  # ModelFileError too
        fail(str(exc))
    for row in table["rows"]:
        typer.echo("  " + ", ".join(f"{k}={v}" for k, v in row.items()))
    typer.echo(f"table: {table['table']}  figure: {table['figure']}")


def main() -> None:
    """The `legato` entry point: usage errors (a bad choice, a missing argument) and an
    unreadable model file are one-line errors in every verb, like the verbs' own."""
    os.environ.setdefault("MPLBACKEND", "Agg")  # legato writes figures to files and never shows them
    try:
        code = app(standalone_mode=False)
    except typer.TyperException as exc:  # a usage error: a value typer refuses, a missing argument
        if type(exc).__name__ == "NoArgsIsHelpError":  # a bare `legato`: the help, as typer shows it
            exc.show()
        else:
            typer.secho(f"error: {exc.format_message()}", err=True, fg=typer.colors.RED)
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(1)
    except Exception as exc:
        from legato.modelfile import ModelFileError  # here, not above: torch loads in seconds

        if not isinstance(exc, ModelFileError):
            raise
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        sys.exit(2)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
