"""Structure and trajectory files: i-PI outputs, i-PI xyz inputs, extxyz, any file ASE reads.

i-PI trajectories are read one frame at a time, so a long trajectory is never held
twice in memory. Repeated steps (a run resumed from an older checkpoint) keep the
latest copy; a truncated last frame (a killed run) raises ``TrajectoryError``
unless ``allow_truncated`` is set, in which case it is dropped.
Lengths are returned in Angstrom, velocities in Angstrom/fs, dipoles in e*Angstrom.
Also here: hashes of files and the settings record of a resumable study.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Iterator

import numpy as np

from legato import units

_UNIT_RE = re.compile(r"(\w+)\{([\w/]+)\}")
_STEP_RE = re.compile(r"Step:\s*(\d+)")
_CELL_RE = re.compile(r"CELL\(abcABC\):\s*((?:[-+\d.eE]+\s+){5}[-+\d.eE]+)")  # six numbers; "Step:" follows only in outputs


class TrajectoryError(ValueError):
    pass


def _length_factor(unit: str) -> float:
    """i-PI length unit -> Angstrom, with i-PI's own factors (those it wrote the file with)."""
    try:
        return units.ipi_to_angstrom(unit)
    except ValueError as exc:
        raise TrajectoryError(str(exc)) from None


def _velocity_factor(unit: str) -> float:
    """i-PI velocity unit -> Angstrom/fs, with i-PI's own factors."""
    try:
        return units.ipi_velocity_to_angstrom_per_fs(unit)
    except ValueError as exc:
        raise TrajectoryError(f"{exc}; write velocities in atomic units") from None


def iter_xyz(path) -> Iterator[tuple[int, np.ndarray, np.ndarray, list[str]]]:
    """Yield ``(step, cellpar, values, symbols)`` per frame, values converted (see module doc)."""
    path = Path(path)
    with open(path) as f:
        while True:
            first = f.readline()
            if not first.strip():
                return
            try:
                n = int(first)
            except ValueError:
                raise TrajectoryError(f"{path}: expected an atom count, got {first.strip()!r}") from None
            comment = f.readline()
            lines = [f.readline() for _ in range(n)]
            if not lines or not lines[-1].endswith("\n") and len(lines[-1].split()) < 4 or any(len(l.split()) < 4 for l in lines):
                raise TrajectoryError(f"{path}: truncated frame after step {comment.strip()[:60]!r}")
            step_match = _STEP_RE.search(comment)
            step = int(step_match.group(1)) if step_match else -1
            quantities = dict(_UNIT_RE.findall(comment))
            kind, unit = next(((k, u) for k, u in quantities.items() if k != "cell"), ("positions", "angstrom"))
            factor = _velocity_factor(unit) if kind.startswith("v") else _length_factor(unit)
            data = np.array([[float(x) for x in l.split()[1:4]] for l in lines]) * factor
            cell_match = _CELL_RE.search(comment)
            cellpar = np.array([float(x) for x in cell_match.group(1).split()]) if cell_match else np.zeros(6)
            if cell_match and "cell" in quantities:
                cellpar[:3] *= _length_factor(quantities["cell"])
            yield step, cellpar, data, [l.split()[0] for l in lines]


def read_xyz(path, allow_truncated: bool = False) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """All frames as ``(steps (T,), values (T, N, 3), symbols)``, repeated steps de-duplicated."""
    frames: dict[int, np.ndarray] = {}
    symbols: list[str] = []
    try:
        for step, _, data, symbols in iter_xyz(path):
            frames[step] = data
    except TrajectoryError:
        if not allow_truncated:
            raise
    if not frames:
        raise TrajectoryError(f"{path}: no frames")
    steps = np.array(sorted(frames))
    return steps, np.stack([frames[s] for s in steps]), symbols


def is_ipi_xyz(path) -> bool:
    """True for an i-PI xyz trajectory (its comment lines carry CELL(abcABC))."""
    with open(path) as f:
        f.readline()
        return "CELL(abcABC)" in f.readline()


def write_structure(path, atoms, title: str = "") -> Path:
    """Write one periodic ``ase.Atoms`` as an i-PI xyz input (Angstrom, CELL(abcABC) line).

    i-PI rebuilds the cell from a, b, c, alpha, beta, gamma with a along x and b in
    the xy plane, so the atoms are first mapped onto that orientation. Written here
    because i-PI's own writer (``ipi.utils.io.print_file``) needs i-PI Atoms/Cell
    objects in atomic units, and ASE does not write i-PI's comment line.
    """
    from ase.geometry import cellpar_to_cell

    cellpar = atoms.cell.cellpar()
    standard = atoms.copy()
    standard.set_cell(cellpar_to_cell(cellpar), scale_atoms=True)
    lines = [str(len(standard)), "# CELL(abcABC): " + " ".join(f"{x:.8f}" for x in cellpar) + f" cell{{angstrom}} positions{{angstrom}} {title}".rstrip()]
    lines += [f"{s:<3} {x:16.10f} {y:16.10f} {z:16.10f}" for s, (x, y, z) in zip(standard.get_chemical_symbols(), standard.positions)]
    Path(path).write_text("\n".join(lines) + "\n")
    return Path(path)


def read_frames(path) -> list:
    """An i-PI xyz trajectory as ``ase.Atoms`` (Angstrom, periodic when it has a cell), info ``step``."""
    import ase

    frames = []
    for step, cellpar, positions, symbols in iter_xyz(path):
        periodic = bool(np.all(cellpar[:3] > 0))
        frames.append(ase.Atoms(symbols, positions=positions, cell=cellpar if periodic else None, pbc=periodic, info={"step": step}))
    return frames


def read_structures(path) -> list:
    """Every frame of a structure file as ``ase.Atoms``: an i-PI xyz file with its cell
    (``ase.io.read`` takes it for plain xyz and drops the cell), anything else through ASE."""
    import ase.io

    return read_frames(path) if is_ipi_xyz(path) else ase.io.read(path, index=":")


def read_extras(path, key: str = "dipole") -> tuple[np.ndarray, np.ndarray]:
    """i-PI extras file (one JSON value per step, i-PI writes them as arrays) -> (steps, values).

    Dipoles arrive in e*bohr (the socket's atomic units) and are returned in e*Angstrom.
    """
    path = Path(path)
    frames: dict[int, np.ndarray] = {}
    step = None
    rows: list[float] = []
    with open(path) as f:
        for line in f:
            if line.lstrip().startswith("#"):
                if step is not None and rows:
                    frames[step] = np.array(rows)
                m = _STEP_RE.search(line)
                step, rows = (int(m.group(1)) if m else None), []
                if f"({key})" not in line:
                    raise TrajectoryError(f"{path}: holds extras other than '{key}' ({line.strip()[:40]})")
            elif line.strip():
                rows += [float(x) for x in line.split()]
    if step is not None and rows:
        frames[step] = np.array(rows)
    if not frames:
        raise TrajectoryError(f"{path}: no '{key}' extras")
    steps = np.array(sorted(frames))
    values = np.stack([frames[s] for s in steps])
    if key == "dipole":  # i-PI writes extras as the driver sent them: e*bohr with legato's (ASE's) bohr
        values = values * units.BOHR_IN_ANGSTROM
    return steps, values


def read_properties(path) -> dict[str, np.ndarray]:
    """i-PI properties file -> {column name without unit, with its argument (``kinetic_cv(H)``): values};
    repeated steps keep the last."""
    names = []
    rows = []
    with open(path) as f:
        for line in f:
            if line.startswith("#"):
                if "-->" in line:  # "kinetic_cv{electronvolt}(H)" -> "kinetic_cv(H)"
                    names.append(re.sub(r"\{[^}]*\}", "", line.split("-->")[1].split(":")[0]).strip())
            elif line.strip():
                rows.append([float(x) for x in line.split()])
    if not rows:
        raise TrajectoryError(f"{path}: no data rows")
    data = np.array(rows)
    if "step" in names:
        steps = data[:, names.index("step")]
        _, last = np.unique(steps[::-1], return_index=True)
        data = data[len(steps) - 1 - last]
    return {name: data[:, i] for i, name in enumerate(names)}


def bead_files(run_dir, prefix: str, kind: str) -> list[Path]:
    """Per-bead files of one kind (pos, vel, dip), sorted by bead index."""
    run_dir = Path(run_dir)
    files = sorted(run_dir.glob(f"{prefix}.{kind}_*"), key=lambda p: int(re.search(r"_(\d+)", p.name).group(1)))
    if not files:
        raise TrajectoryError(f"{run_dir}: no {prefix}.{kind}_* files (did the run write this trajectory?)")
    return files


def write_frames(path, frames) -> Path:
    """Write frames as extxyz, making the file's folder if it is new."""
    import ase.io

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ase.io.write(path, frames, format="extxyz")
    return path


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def record_study(out, study: dict) -> None:
    """Record a study's settings (failure study, demo) in ``out/study.json``; ValueError
    if ``out`` holds a study with other settings (resuming it would mix the two)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    record = out / "study.json"
    if record.exists():
        before = json.loads(record.read_text())
        differ = {k: (before.get(k), v) for k, v in study.items() if before.get(k) != v}
        if differ:
            raise ValueError(f"{out} holds a study with other settings {differ} (before, now): pass the same ones to resume, or -o a new folder")
    else:
        record.write_text(json.dumps(study, indent=1))
