"""Batched evaluation of a legato model, and an ASE calculator on top of it.

:class:`ModelPotential` takes B frames of the same atoms and returns energies,
forces, virials, Wannier vectors and dipoles from ONE model call. The driver,
the analysis and the ASE calculator all evaluate models through it.
Units: Angstrom, eV, eV/Angstrom, e*Angstrom.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import torch
from ase.calculators.calculator import Calculator, all_changes
from ase.data import atomic_numbers
from ase.stress import full_3x3_to_voigt_6_stress
from nequip.data import AtomicDataDict
from nequip.data.transforms import NeighborListTransform

from legato.callplan import CallPlanner
from legato.fields import WANNIER_DISP, dipole_from_wannier
from legato.geometry import WholeMolecules
from legato.modelfile import ModelFileError, load_model


#: atoms per model call on a CPU until the call planner has timed a request shape: the fastest
#: chunk in a one-off timing on 2 CPU cores (docs/performance.md), and for shapes seen once
ATOMS_PER_CALL = 64
#: on a GPU the first calls take all frames at once: small graphs leave a GPU launch-bound
#: (docs/training-log.md, "Round 13, second seeds")
GPU_ATOMS_PER_CALL = 1 << 20
#: the largest model call the planner times on a CPU (memory grows with it)
MAX_PLANNED_ATOMS = 4096


#: torch's thread count when legato was imported (one per core unless OMP_NUM_THREADS chose):
#: the planner's largest candidate, whatever count an earlier plan in this process left set
TORCH_THREADS = torch.get_num_threads()


def planned_thread_counts(count: int | None = None) -> tuple[int, ...]:
    """Torch thread counts the call planner times on a CPU: ``count`` (default
    :data:`TORCH_THREADS`), half of it (4 or more) and one; none where OMP_NUM_THREADS
    chose the count."""
    if os.environ.get("OMP_NUM_THREADS"):
        return ()
    count = TORCH_THREADS if count is None else count
    return tuple(dict.fromkeys((count, count // 2 if count >= 4 else count, 1))) if count > 1 else ()


def use_threads(count: int) -> None:
    """Run torch's CPU operations on ``count`` threads (a no-op where they already are)."""
    if torch.get_num_threads() != count:
        torch.set_num_threads(count)


def torch_device(name: str) -> torch.device:
    """``cpu``, ``cuda`` or ``cuda:N`` as a torch.device; ValueError naming the fix where this torch cannot use it."""
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise ValueError(f"device '{name}': use cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device '{name}': torch {torch.__version__} sees no GPU here; use cpu")
    return device


class ModelPotential:
    """Evaluate a model on batches of frames (same species order in each frame) on ``device``."""

    def __init__(self, model: torch.nn.Module, metadata: dict, atoms_per_call: int | None = None, device: str = "cpu"):
        """``atoms_per_call``: frames go to the model in chunks of about this many atoms; None
        (default): planned per request shape by timing the first calls (:mod:`legato.callplan`),
        frames per call and, on a CPU where OMP_NUM_THREADS is unset, torch threads."""
        self.device = torch_device(device)
        if atoms_per_call is not None and atoms_per_call < 1:
            raise ValueError(f"atoms_per_call={atoms_per_call}: give at least 1, or leave it out to let the driver time its choices")
        self.model = model.to(self.device)
        self.atoms_per_call = atoms_per_call
        on_cpu = self.device.type == "cpu"
        self.planner = (
            CallPlanner(
                first_atoms=ATOMS_PER_CALL if on_cpu else GPU_ATOMS_PER_CALL,
                max_atoms=MAX_PLANNED_ATOMS if on_cpu else GPU_ATOMS_PER_CALL,
                threads=planned_thread_counts() if on_cpu else (),
                use_threads=use_threads,
            )
            if atoms_per_call is None
            else None
        )
        self.metadata = metadata
        self.type_names = list(metadata["type_names"])
        self.r_max = float(metadata["r_max"])
        self._neighbor_list = NeighborListTransform(r_max=self.r_max)
        self._type_index = {name: i for i, name in enumerate(self.type_names)}
        self._whole_molecules = WholeMolecules()

    @classmethod
    def from_file(cls, path, atoms_per_call: int | None = None, compile: bool = False, device: str = "cpu") -> "ModelPotential":
        """``compile``: torch.compile the model (faster batched calls after a first slow one).
        A compiled model is not planned (each chunk size tried would compile again): it takes
        ``atoms_per_call`` or the default chunk of its device."""
        if compile and atoms_per_call is None:
            atoms_per_call = ATOMS_PER_CALL if torch_device(device).type == "cpu" else GPU_ATOMS_PER_CALL
        return cls(*load_model(path, compile_mode="compile" if compile else "eager"), atoms_per_call=atoms_per_call, device=device)

    def atom_types(self, symbols: Sequence[str]) -> np.ndarray:
        unknown = sorted(set(symbols) - set(self._type_index))
        if unknown:
            raise ModelFileError(f"species {unknown} are unknown to the model (it knows {self.type_names})")
        return np.array([self._type_index[s] for s in symbols], dtype=np.int64)

    def per_atom(self, symbols: Sequence[str], key: str) -> np.ndarray:
        """Per-species metadata (``valence_charge`` or ``wannier_count``) as a per-atom array."""
        table = self.metadata[key]
        return np.array([table[s] for s in symbols], dtype=np.int64)

    def _graph(self, positions, cell, pbc, types) -> AtomicDataDict.Type:
        data = {
            AtomicDataDict.POSITIONS_KEY: torch.as_tensor(positions, dtype=torch.float64),
            AtomicDataDict.ATOM_TYPE_KEY: torch.as_tensor(types),
            AtomicDataDict.PBC_KEY: torch.as_tensor(np.asarray(pbc, dtype=bool).reshape(1, 3)),
        }
        if cell is not None:
            data[AtomicDataDict.CELL_KEY] = torch.as_tensor(cell, dtype=torch.float64).reshape(1, 3, 3)
        return self._neighbor_list(data)

    def evaluate(self, symbols: Sequence[str], positions, cells=None, pbc=(True, True, True), dipoles: bool = True) -> dict:
        """Evaluate B frames: ``positions`` (B, N, 3) Angstrom, ``cells`` (B, 3, 3) or None.

        Returns numpy arrays: ``energy`` (B,) eV, ``forces`` (B, N, 3) eV/A,
        ``virial`` (B, 3, 3) eV (zeros without a cell), ``wannier_disp`` (B, N, 3) A,
        ``dipole`` (B, 3) e*A (left out with ``dipoles=False``). Frames go to the model ``atoms_per_call`` atoms at a time
        (at least one frame), or in the chunks the call planner found fastest for B x N:
        on a CPU, one call on many atoms can be slower per atom than a few calls on fewer.
        """
        positions = np.asarray(positions, dtype=np.float64)
        if positions.ndim == 2:
            positions = positions[None]
        if not np.all(np.isfinite(positions)):
            raise ValueError("positions hold NaN or inf")
        n_frames = positions.shape[0]
        types = self.atom_types(symbols)
        if cells is None:
            pbc = (False, False, False)
        else:
            cells = np.asarray(cells, dtype=np.float64).reshape(n_frames, 3, 3)
            periodic_vectors = cells[:, np.asarray(pbc, dtype=bool).reshape(3)]
            if periodic_vectors.size and np.linalg.svd(periodic_vectors, compute_uv=False).min() < 1e-6:
                raise ValueError(
                    "periodic frames need a cell (Angstrom) whose periodic vectors span space; this one is singular"
                    " (ase.io.read drops the cell of i-PI xyz files: use legato.fileio.read_structures), or give no cell for a cluster"
                )

        def in_chunks(step: int) -> dict:
            parts = [
                self._evaluate_chunk(positions[i : i + step], None if cells is None else cells[i : i + step], pbc, types)
                for i in range(0, n_frames, step)
            ]
            return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}

        if self.planner is None:
            result = in_chunks(max(1, self.atoms_per_call // positions.shape[1]))
        else:
            result = self.planner.timed(n_frames, positions.shape[1], in_chunks)
        if not dipoles:
            return result
        if cells is not None and np.any(pbc):  # the dipole of whole molecules, however the positions were wrapped
            positions = self._whole_molecules([atomic_numbers[s] for s in symbols], positions, cells, pbc)
        result["dipole"] = dipole_from_wannier(
            positions, self.per_atom(symbols, "valence_charge"), self.per_atom(symbols, "wannier_count"), result["wannier_disp"]
        )
        return result

    def _evaluate_chunk(self, positions: np.ndarray, cells, pbc, types: np.ndarray) -> dict:
        """One model call on the frames ``positions`` (B, N, 3); see ``evaluate`` (no dipole)."""
        n_frames, n_atoms = positions.shape[:2]
        cell_list = [None] * n_frames if cells is None else list(cells)
        graphs = [self._graph(positions[b], cell_list[b], pbc, types) for b in range(n_frames)]
        out = self.model(AtomicDataDict.to_(AtomicDataDict.batched_from_list(graphs), self.device))

        def array(key, shape):
            return out[key].detach().cpu().double().numpy().reshape(shape)

        virial = out.get(AtomicDataDict.VIRIAL_KEY)
        return {
            "energy": array(AtomicDataDict.TOTAL_ENERGY_KEY, n_frames),
            "forces": array(AtomicDataDict.FORCE_KEY, (n_frames, n_atoms, 3)),
            "wannier_disp": array(WANNIER_DISP, (n_frames, n_atoms, 3)),
            "virial": (
                array(AtomicDataDict.VIRIAL_KEY, (n_frames, 3, 3))
                if virial is not None and cells is not None
                else np.zeros((n_frames, 3, 3))
            ),
        }


class LegatoCalculator(Calculator):
    """ASE calculator: energy, forces, stress, per-atom ``wannier_disp`` and ``dipole``."""

    implemented_properties = ["energy", "free_energy", "forces", "stress", "dipole", "wannier_disp"]

    def __init__(self, model_file=None, potential: ModelPotential | None = None, device: str = "cpu", **kwargs):
        super().__init__(**kwargs)
        self.potential = potential or ModelPotential.from_file(model_file, device=device)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        periodic = bool(self.atoms.pbc.any())
        cell = self.atoms.cell.array[None] if periodic else None
        r = self.potential.evaluate(self.atoms.get_chemical_symbols(), self.atoms.positions, cell, self.atoms.pbc)
        self.results = {
            "energy": r["energy"][0],
            "free_energy": r["energy"][0],
            "forces": r["forces"][0],
            "dipole": r["dipole"][0],
            "wannier_disp": r["wannier_disp"][0],
        }
        if periodic:
            # virial = -stress * volume (nequip and ASE convention)
            self.results["stress"] = full_3x3_to_voigt_6_stress(-r["virial"][0] / self.atoms.get_volume())


def relaxed(atoms, calculator, fmax: float = 0.01, max_steps: int = 500):
    """A copy of ``atoms`` relaxed at fixed cell with BFGS (forces below ``fmax`` eV/A)
    under an ASE ``calculator``; its energy (eV) is in ``info["relaxed_energy"]``.

    Raises RuntimeError if ``max_steps`` do not get there.
    """
    from ase.optimize import BFGS

    atoms = atoms.copy()
    atoms.calc = calculator
    if not BFGS(atoms, logfile=None).run(fmax=fmax, steps=max_steps):
        raise RuntimeError(f"relaxation did not reach fmax {fmax} eV/A in {max_steps} steps: check the structure, or relax it yourself first")
    atoms.info["relaxed_energy"] = float(atoms.get_potential_energy())
    atoms.calc = None
    return atoms
