"""The i-PI PES: batched evaluation of all beads, per-bead dipoles as extras.

Usable three ways:

* ``legato serve MODEL --unix NAME`` (this package's socket client);
* i-PI's own client: ``i-pi-py_driver -m custom -P <path of this file>
  -o model=MODEL,structure=FILE [-u -a NAME | --shm]``;
* in Python: ``LegatoDriver(model=..., structure=...)(cells, positions)``.

i-PI passes atomic units and cell matrices with the lattice vectors as columns;
everything is converted in :mod:`legato.units`.
"""

from __future__ import annotations

import json
import sys

import ase.io
import numpy as np
from ipi.pes.dummy import Dummy_driver

from legato import units
from legato.driver.checks import InputError, check_frame, warn_close_contacts

__DRIVER_NAME__ = "legato"
__DRIVER_CLASS__ = "LegatoDriver"


def _as_bool(value) -> bool:
    return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes", "y")


class LegatoDriver(Dummy_driver):
    """i-PI PES serving a legato model (or any object with ``evaluate``).

    Args:
        model: path of a ``.legato.pt`` file
        structure: ASE-readable file with the atoms in i-PI's order (species)
        periodic: use i-PI's cell (True) or treat the system as a cluster
        potential: an object with the :class:`~legato.potential.ModelPotential`
            ``evaluate`` interface, instead of ``model`` (tests, analytic potentials)
        symbols: chemical symbols, instead of ``structure``
        atoms_per_call: atoms per model call (beads are grouped up to this many); default: the
            driver times the possible groupings on its first calls and keeps the fastest
        compile: torch.compile the model (its first batched call compiles, for minutes)
        device: where the model runs: cpu, cuda or cuda:N
        dipoles: send each bead's dipole as i-PI extras (off for the cheap reference of a
            contracted / multiple-time-step run, whose extras would overwrite the full model's)
    """

    def __init__(self, model=None, structure=None, periodic=True, potential=None, symbols=None, atoms_per_call=None, compile=False, device="cpu", dipoles=True, verbose=False, **kwargs):
        self.model_path = model
        self.device = device
        self.atoms_per_call = None if atoms_per_call is None else int(atoms_per_call)
        self.compile = _as_bool(compile)
        self.structure = structure
        self.periodic = _as_bool(periodic)
        self.potential = potential
        self.symbols = list(symbols) if symbols is not None else None
        self.dipoles = _as_bool(dipoles)
        self.calls = 0
        self.frames = 0
        super().__init__(verbose=verbose, **kwargs)

    def check_parameters(self):
        from legato.modelfile import ModelFileError

        if self.symbols is None:
            if self.structure is None:
                raise InputError("the driver needs the structure i-PI runs (structure=FILE) to know the species order")
            try:
                self.symbols = ase.io.read(self.structure).get_chemical_symbols()
            except FileNotFoundError:
                raise InputError(f"{self.structure}: no such structure file") from None
        if self.potential is None:
            if self.model_path is None:
                raise InputError("give the driver a model file (model=PATH)")
            from legato.model import require_cxx_compiler
            from legato.potential import ModelPotential

            if self.compile:
                try:
                    require_cxx_compiler()
                except ValueError as exc:
                    raise InputError(f"compile: {exc}, or run without compiling") from None
            self.potential = ModelPotential.from_file(self.model_path, self.atoms_per_call, compile=self.compile, device=self.device)
            if self.potential.planner is not None:  # the plan is logged once per request shape
                self.potential.planner.report = lambda line: print(f"legato driver: {line}", file=sys.stderr, flush=True)
            unknown = sorted(set(self.symbols) - set(self.potential.type_names))
            if unknown:
                raise ModelFileError(
                    f"{self.model_path}: model knows {self.potential.type_names} but the structure has {unknown}; use a matching model"
                )

    def compute(self, cell, pos):
        """One structure (arrays) or a batch (lists) -> (pot, force, vir, extras) or a list of them."""
        batched = isinstance(cell, list)
        cells = np.asarray(cell if batched else [cell], float)
        positions = np.asarray(pos if batched else [pos], float).reshape(len(cells), -1, 3)
        results = self.evaluate(cells, positions)
        return results if batched else results[0]

    def evaluate(self, cells_au: np.ndarray, positions_au: np.ndarray) -> list:
        """Batched evaluation in atomic units; cells (B, 3, 3) with vectors as columns."""
        positions = units.bohr_to_angstrom(positions_au)
        cells = units.bohr_to_angstrom(np.transpose(cells_au, (0, 2, 1))) if self.periodic else None
        for b in range(len(positions)):
            cell = cells[b] if cells is not None else None
            check_frame(positions[b], cell, len(self.symbols))
            warn_close_contacts(positions[b], cell)
        r = self.potential.evaluate(self.symbols, positions, cells, (self.periodic,) * 3, dipoles=self.dipoles)
        if not (np.all(np.isfinite(r["energy"])) and np.all(np.isfinite(r["forces"]))):
            raise FloatingPointError("the model returned non-finite energies or forces; refusing to send them to i-PI")
        self.calls += 1
        self.frames += len(positions)
        energies = units.ev_to_hartree(r["energy"])
        forces = units.forces_ev_per_angstrom_to_au(r["forces"])
        virials = units.ev_to_hartree(np.transpose(r["virial"], (0, 2, 1)))
        extras = [json.dumps({"dipole": d.tolist()}) for d in units.dipole_eangstrom_to_au(r["dipole"])] if self.dipoles else [""] * len(positions)
        return [
            (float(energies[b]), forces[b].reshape(-1, 3).astype(np.float64), virials[b].astype(np.float64), extras[b])
            for b in range(len(positions))
        ]


def make_driver(
    structure, model=None, potential: str | None = None, periodic: bool = True, atoms_per_call: int | None = None, compile_model: bool = False, device: str = "cpu", dipoles: bool = True
) -> LegatoDriver:
    """The i-PI PES for ``structure``: of a model file, or of an analytic potential spec
    (``harmonic:k=K``, ``morse:...`` or ``bond:...``, see :func:`~legato.driver.analytic.parse_potential`; then ``model`` is unused)."""
    if potential:
        from legato.driver.analytic import parse_potential

        symbols = ase.io.read(structure).get_chemical_symbols()
        return LegatoDriver(potential=parse_potential(potential), symbols=symbols, periodic=periodic, dipoles=dipoles)
    driver = LegatoDriver(model=str(model), structure=str(structure), periodic=periodic, atoms_per_call=atoms_per_call, compile=compile_model, device=device, dipoles=dipoles)
    if compile_model:  # after the driver's checks: a refused compile says only why
        print("torch.compile: the first step with two or more beads compiles the model (1-2 min; later runs reuse the cache)", file=sys.stderr)
    return driver
