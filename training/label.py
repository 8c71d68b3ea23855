"""`legato label`: DFT energies, forces and Wannier centres with PySCF, resumably.

Each input frame becomes one labelled extxyz frame (see DESIGN.md): Gamma-point
periodic Kohn-Sham (GTH pseudopotentials and basis, multigrid numerics), D3(BJ)
dispersion from ``pyscf-dispersion``, and Berry-phase Wannier centres of the
occupied (valence) orbitals assigned to the nearest owning atom.

Work is kept per frame under ``<output>.parts/``: ``00012.extxyz`` for a done
frame (written atomically), ``00012.failed.json`` for one that failed (with the
reason). A rerun skips both, so a killed job loses nothing and labels nothing
twice; ``<output>`` is reassembled from the parts after every frame that ends 30 s
or more after the last reassembly (every DFT frame) and at the end, and parts
are recreated from ``<output>`` when only it survived (a fresh clone).
"""

from __future__ import annotations

import io
import json
import os
import platform
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import ase
import ase.io
import numpy as np

from legato.dataset import MIN_DISTANCE, frame_provenance
from legato.fields import VALENCE_CHARGE, WANNIER_COUNT, WANNIER_DISP, dipole_from_wannier
from legato.fileio import read_structures
from legato.geometry import closest_approach
from legato.timing import time_to_go
from legato.units import BOHR_IN_ANGSTROM, FORCE_AU_IN_EV_PER_ANGSTROM, HARTREE_IN_EV

from .protocol import CONVERGED
from .wannier import assign_centres, wannier_centres


@dataclass
class DFTSettings:
    """Electronic-structure settings, stored as provenance in every frame."""

    xc: str = "pbe"
    basis: str = "gth-dzvp"
    pseudo: str = "gth-pbe"
    dispersion: str | None = "d3bj"  # None to switch off
    ke_cutoff: float | None = None  # hartree; None = PySCF's default for the basis
    conv_tol: float = 1e-8  # hartree
    max_cycle: int = 60
    wannier_owners: list[str] = field(default_factory=lambda: ["H"])  # species that never own centres
    wannier_order: int = 2  # Berry-phase estimator, see legato.training.wannier.spread_weights
    #: Brillouin-zone sampling: a frame whose cell is thinner than this (A) along any axis is
    #: labelled at the Gamma point of the smallest supercell that reaches it (the same as a
    #: Gamma-centred k-mesh), and its labels are those of the supercell's first image.
    #: 0 = Gamma point of the frame's own cell. See docs/convergence.md for the choice.
    min_cell_length: float = 0.0
    #: the program that solves Kohn-Sham: "pyscf" (a dependency) or "cp2k" (the Debian/Ubuntu
    #: package cp2k; same method, 3-4x faster, Berry-phase centres = wannier_order 1)
    code: str = "pyscf"
    cp2k_cutoff: float = 800.0  # Ry, CP2K's plane-wave cutoff (forces converged to ~1 meV/A there)

    @classmethod
    def converged(cls, **overrides) -> "DFTSettings":
        """The converged protocol (docs/convergence.md), `legato label`'s default: GTH-TZV2P,
        the Gamma point of cells at least 10 A across, Berry-phase centres of order 1 (what
        CP2K gives, so labels do not depend on the code), CP2K where it is installed."""
        return cls(**{**CONVERGED, **overrides})

    def resolved(self) -> "DFTSettings":
        """``code="auto"`` made concrete: CP2K where installed (3-4x faster), else PySCF."""
        if self.code != "auto":
            return self
        from dataclasses import replace

        from . import cp2k

        return replace(self, code="cp2k" if cp2k.executable() else "pyscf")

    def check(self, species) -> None:
        """Raise ValueError (one line, naming the option) for settings PySCF cannot run.

        Run before any frame: a setting error inside the per-frame loop would record
        every frame as failed, and failed frames are not retried on resume.
        """
        from pyscf import gto as molecular
        from pyscf.dft import libxc
        from pyscf.pbc import gto

        try:
            libxc.parse_xc(self.xc)
        except KeyError:
            raise ValueError(f"--xc {self.xc}: not a functional PySCF's libxc knows (e.g. pbe, blyp, scan)") from None
        if self.code not in ("pyscf", "cp2k", "auto"):
            raise ValueError(f"--code {self.code}: use pyscf, cp2k or auto")
        if self.code == "cp2k":
            from . import cp2k

            cp2k.check(self.xc, self.basis, self.pseudo, self.dispersion)
            if self.wannier_order != 1:
                raise ValueError(f"--wannier-order {self.wannier_order}: CP2K's Wannier centres are the Berry-phase (Resta) estimator, order 1; use --wannier-order 1 with --code cp2k")
        if not self.min_cell_length >= 0:
            raise ValueError(f"--min-cell-length {self.min_cell_length}: give a length in A (0 = the Gamma point of each frame's own cell)")
        if self.ke_cutoff is not None and not self.ke_cutoff > 0:
            raise ValueError(f"--ke-cutoff {self.ke_cutoff}: give a positive cutoff in hartree (or leave it to PySCF)")
        for option, value, load in (("basis", self.basis, gto.basis.load), ("pseudo", self.pseudo, gto.pseudo.load)):
            for symbol in sorted(set(species)):
                try:
                    with warnings.catch_warnings():  # PySCF suggests installing basis-set-exchange
                        warnings.simplefilter("ignore")
                        load(value, symbol)
                except Exception as exc:  # PySCF raises BasisNotFoundError, KeyError or RuntimeError by format
                    raise ValueError(f"--{option} {value}: PySCF has none for {symbol} ({type(exc).__name__}); e.g. --basis gth-dzvp --pseudo gth-pbe") from None
        if self.dispersion:
            from pyscf.dispersion.dftd3 import DFTD3Dispersion

            try:  # the damping parameters of this functional, on an H2 molecule
                DFTD3Dispersion(molecular.M(atom="H 0 0 0; H 0 0 0.74"), self.xc, version=self.dispersion)
            except (KeyError, RuntimeError) as exc:
                raise ValueError(f"--dispersion {self.dispersion} with --xc {self.xc}: not available in pyscf-dispersion ({exc}); try d3bj or d3zero, or none") from None

    def label(self, atoms: ase.Atoms) -> ase.Atoms:
        """One labelled copy of ``atoms`` (:func:`label_frame`)."""
        return label_frame(atoms, self)

    def provenance(self) -> dict:
        """What a labelled frame records about its method (and what resuming must match)."""
        return {
            "method": f"{self.xc.upper()}{'-' + self.dispersion.upper() if self.dispersion else ''}",
            "basis": self.basis,
            "pseudo": self.pseudo,
            "wannier_order": self.wannier_order,
            "min_cell_length": float(self.min_cell_length),
        }


class SCFNotConverged(RuntimeError):
    pass


def _cell(atoms: ase.Atoms, s: DFTSettings):
    from pyscf.pbc import gto

    if not atoms.pbc.all() or abs(atoms.cell.volume) < 1e-6:
        raise ValueError("legato label needs a periodic frame with a full 3D cell (set atoms.cell and pbc=True)")
    cell = gto.Cell(
        atom=[(sym, pos) for sym, pos in zip(atoms.get_chemical_symbols(), atoms.positions)],
        a=atoms.cell.array,
        unit="A",
        basis=s.basis,
        pseudo=s.pseudo,
        verbose=0,
    )
    if s.ke_cutoff:
        cell.ke_cutoff = s.ke_cutoff
    cell.build()
    return cell


def supercell_repeat(cell: np.ndarray, min_length: float) -> tuple[int, int, int]:
    """Smallest repeat along each cell vector so that every plane spacing of the
    supercell is at least ``min_length`` (A): the frame's Gamma-centred k-mesh."""
    if not min_length:
        return (1, 1, 1)
    spacing = 1.0 / np.linalg.norm(np.linalg.inv(cell).T, axis=1)  # distance between opposite faces
    return tuple(int(max(1, np.ceil(min_length / d - 1e-6))) for d in spacing)


def label_frame(atoms: ase.Atoms, s: DFTSettings) -> ase.Atoms:
    """One labelled copy of ``atoms`` (energy eV, forces eV/A, Wannier data in A).

    With ``s.min_cell_length`` the calculation runs in a supercell (see
    :func:`supercell_repeat`); energy is per frame (supercell energy / images), and
    forces, Wannier centres and dipole are those of the first image, which ASE's
    ``repeat`` puts first.
    """
    closest = closest_approach(atoms)
    if closest < MIN_DISTANCE:
        raise ValueError(f"atoms {closest:.2f} A apart: not worth a DFT calculation (overlapping atoms)")
    repeat = supercell_repeat(atoms.cell.array, s.min_cell_length)
    if repeat == (1, 1, 1):
        return _label_cell(atoms, s)
    images = int(np.prod(repeat))
    big = _label_cell(atoms.repeat(repeat), s)
    n = len(atoms)
    out = atoms.copy()
    out.calc = None
    out.info = {k: v for k, v in big.info.items() if k not in ("energy", "dipole")}
    out.info["energy"] = big.info["energy"] / images
    out.info["supercell"] = "x".join(str(r) for r in repeat)
    for key in ("forces", WANNIER_DISP, WANNIER_COUNT, VALENCE_CHARGE):
        out.arrays[key] = big.arrays[key][:n].copy()
    out.info["dipole"] = dipole_from_wannier(out.positions, out.arrays[VALENCE_CHARGE], out.arrays[WANNIER_COUNT], out.arrays[WANNIER_DISP])
    return out


def _label_cell(atoms: ase.Atoms, s: DFTSettings) -> ase.Atoms:
    """Gamma-point labels of ``atoms`` in its own cell."""
    cell = _cell(atoms, s)  # PySCF's cell also gives the pseudopotentials' valence charges
    valence = np.array([int(round(cell.atom_charge(i))) for i in range(len(atoms))])
    if s.code == "cp2k":
        from . import cp2k

        charges = dict(zip(atoms.get_chemical_symbols(), valence.tolist()))
        energy_ev, forces, centres, cycles, code = cp2k.run(atoms, s.xc, s.basis, s.pseudo, s.dispersion, charges, s.cp2k_cutoff, s.max_cycle)
    else:
        energy_ev, forces, centres, cycles, code = _pyscf_labels(cell, s)
    owners = np.array([sym not in s.wannier_owners for sym in atoms.get_chemical_symbols()])
    disp, count = assign_centres(atoms.positions, centres, atoms.cell.array, owners)
    if 2 * count.sum() != valence.sum():
        raise RuntimeError(f"{count.sum()} Wannier centres for {valence.sum()} valence electrons")

    out = atoms.copy()
    out.calc = None
    out.info = {k: v for k, v in atoms.info.items() if k not in ("energy", "dipole")}
    out.info["energy"] = float(energy_ev)
    out.arrays["forces"] = np.asarray(forces)
    out.arrays[WANNIER_DISP] = disp
    out.arrays[WANNIER_COUNT] = count
    out.arrays[VALENCE_CHARGE] = valence
    out.info["dipole"] = dipole_from_wannier(out.positions, valence, count, disp)
    out.info.update(s.provenance(), code=code, scf_cycles=int(cycles))
    return out


def _pyscf_labels(cell, s: DFTSettings):
    """PySCF multigrid Kohn-Sham + D3: (energy eV, forces eV/A, Wannier centres A, SCF cycles, version)."""
    import pyscf
    from pyscf.pbc import dft

    mf = dft.RKS(cell, xc=s.xc).multigrid_numint()
    mf.conv_tol = s.conv_tol
    mf.max_cycle = s.max_cycle
    energy = mf.kernel()
    if not mf.converged:
        raise SCFNotConverged(f"SCF not converged in {s.max_cycle} cycles")
    gradient = mf.nuc_grad_method().kernel()
    if s.dispersion:
        from pyscf.dispersion.dftd3 import DFTD3Dispersion

        d3 = DFTD3Dispersion(cell, s.xc, version=s.dispersion).get_dispersion(grad=True)
        energy += float(d3["energy"])
        gradient = gradient + d3["gradient"]
    occupied = mf.mo_coeff[:, mf.mo_occ > 0]
    centres = wannier_centres(cell, occupied, s.wannier_order) * BOHR_IN_ANGSTROM
    forces = -np.asarray(gradient) * FORCE_AU_IN_EV_PER_ANGSTROM
    return float(energy) * HARTREE_IN_EV, forces, centres, int(getattr(mf, "cycles", -1)), f"pyscf {pyscf.__version__}"


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _frame_text(atoms: ase.Atoms) -> str:
    import io

    buf = io.StringIO()
    ase.io.write(buf, atoms, format="extxyz")
    return buf.getvalue()


#: seconds between reassemblies of the output while labelling (a DFT frame takes longer, so
#: its output is rewritten after every frame; model labels come many per second)
ASSEMBLE_EVERY = 30.0


def label_file(input_path, output_path, settings=None, progress: bool = True, limit: int | None = None) -> dict:
    """Label every frame of ``input_path`` into ``output_path``; resumable. Returns counts.

    ``settings``: :class:`DFTSettings` (default: the converged protocol) or anything with its
    ``resolved``, ``check``, ``provenance`` and ``label`` methods, e.g.
    :class:`legato.training.model_labels.ModelLabels`.
    """
    from tqdm import tqdm

    settings = (settings or DFTSettings.converged()).resolved()
    frames = read_structures(input_path)
    settings.check({symbol for atoms in frames for symbol in atoms.get_chemical_symbols()})
    output_path = Path(output_path)
    parts = output_path.with_name(output_path.name + ".parts")
    parts.mkdir(parents=True, exist_ok=True)
    _rehydrate(output_path, parts)
    _check_same_method(parts, settings)
    _check_same_structures(parts, frames, input_path)
    _write_atomic(parts / "settings.json", json.dumps(asdict(settings), indent=1))

    def done(i):
        return (parts / f"{i:05d}.extxyz").exists() or (parts / f"{i:05d}.failed.json").exists()

    pending = [i for i in range(len(frames)) if not done(i)]
    todo = pending if limit is None else pending[:limit]
    counts = {"total": len(frames), "already_done": len(frames) - len(pending), "labelled": 0, "failed": 0}
    bar = tqdm(todo, desc="label", unit="frame", disable=not progress)
    run_started = last_assembled = time.time()
    for i in bar:
        start = time.time()
        atoms = frames[i]
        atoms.info["source_index"] = i
        try:
            labelled = settings.label(atoms)
        except (SCFNotConverged, RuntimeError, ValueError, np.linalg.LinAlgError) as exc:
            failed = parts / f"{i:05d}.failed.json"
            _write_atomic(failed, json.dumps({"index": i, "reason": str(exc), "host": platform.node()}))
            counts["failed"] += 1
            tqdm.write(f"frame {i}: not labelled ({exc}); skipped, reason in {failed}")
            continue
        seconds = round(time.time() - start, 1)
        labelled.info["source_index"] = i
        labelled.info["label_seconds"] = seconds
        _write_atomic(parts / f"{i:05d}.extxyz", _frame_text(labelled))
        counts["labelled"] += 1
        bar.set_postfix(s_per_frame=f"{seconds:.0f}")
        if time.time() - last_assembled >= ASSEMBLE_EVERY:
            assemble(parts, output_path)
            last_assembled = time.time()
        done_here = counts["labelled"] + counts["failed"]
        left = f"; {time_to_go(time.time() - run_started, done_here, len(todo) - done_here)}" if done_here < len(todo) else ""
        if seconds >= 1.0 or not progress:
            tqdm.write(f"frame {i}: labelled in {seconds:.0f} s ({counts['labelled']} of {len(todo)} this run{left})")
    assemble(parts, output_path)
    return counts


def _rehydrate(output_path: Path, parts: Path) -> None:
    """Recreate part files from an assembled output (e.g. a fresh clone holds only the output),
    each frame's text as it is, so that assembling them again gives the same file."""
    if not output_path.exists() or output_path.stat().st_size == 0:
        return
    lines = output_path.read_text().splitlines(keepends=True)
    start = 0
    while start < len(lines) and lines[start].strip():
        end = start + int(lines[start]) + 2
        text = "".join(lines[start:end])
        index = ase.io.read(io.StringIO(text), format="extxyz").info.get("source_index")
        part = parts / f"{int(index):05d}.extxyz" if index is not None else None
        if part is not None and not part.exists():
            _write_atomic(part, text)
        start = end


def _check_same_method(parts: Path, settings: DFTSettings) -> None:
    """Refuse to resume a data set with a different method: one file, one level of theory."""
    wanted = settings.provenance()
    for part in sorted(parts.glob("[0-9]*.extxyz"))[:1]:
        have = frame_provenance(ase.io.read(part, format="extxyz").info)
        differ = {k: have[k] for k in wanted if have[k] != wanted[k]}
        if differ:
            single = {"wannier_order": f"--wannier-order {have['wannier_order']}", "min_cell_length": f"--min-cell-length {have['min_cell_length']:g}"}
            hint = single[next(iter(differ))] if len(differ) == 1 and next(iter(differ)) in single else "the same --xc/--basis/--pseudo/--dispersion"
            raise ValueError(f"{parts.name[: -len('.parts')]} was labelled with {differ}, not {wanted}: continue it with {hint}, or label into a new file")


def _check_same_structures(parts: Path, frames: list, input_path) -> None:
    """Refuse to resume from another structure file: its frame i would count as done
    with the labels of the old frame i, and never be labelled."""
    for part in sorted(parts.glob("[0-9]*.extxyz")):
        i = int(part.name[:5])
        done = ase.io.read(part, format="extxyz")
        same = (
            i < len(frames)
            and done.get_chemical_symbols() == frames[i].get_chemical_symbols()
            and np.allclose(done.positions, frames[i].positions, atol=1e-5)
            and np.allclose(done.cell.array, frames[i].cell.array, atol=1e-5)
        )
        if not same:
            name = parts.name[: -len(".parts")]
            raise ValueError(f"{name} holds labels of other structures than {input_path} (frame {i} differs): label into a new file, then `legato merge` the two")


def assemble(parts: Path, output_path: Path) -> int:
    """Concatenate the done frames (in input order) into ``output_path`` atomically."""
    files = sorted(parts.glob("[0-9]*.extxyz"))
    _write_atomic(output_path, "".join(f.read_text() for f in files))
    return len(files)
