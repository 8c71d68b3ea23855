"""Net force on each molecule as a training target (nequip transform + field modifier).

The error of a molecule's net force (the sum of its atoms' forces, eV/A) is the
intermolecular part of the force error that drives librations, lattice modes and
phase stability; per-atom force MSE weighs it only through the atoms. Enable the
loss term with ``loss.molecule_forces`` (weight of its MSE) in a training config.

nequip has per-atom and per-frame targets but none per molecule, hence this module:
:class:`MoleculeIndexTransform` labels each atom with its molecule (ASE covalent
neighbours, as ``legato.geometry.molecules_of``) when a frame is loaded,
and :class:`MoleculeNetForces` sums predicted and reference forces per molecule.
"""

from __future__ import annotations

from typing import Optional

import ase
import numpy as np
import torch
from nequip.data import AtomicDataDict
from nequip.data.modifier import BaseModifier

from legato.fields import MOLECULE_INDEX
from legato.geometry import molecules_of


class MoleculeIndexTransform(torch.nn.Module):
    """Adds ``molecule_index`` (per atom, 0..n_molecules-1 within its frame) to a frame."""

    def forward(self, data: AtomicDataDict.Type) -> AtomicDataDict.Type:
        # not nequip's to_ase: on a loaded frame it returns a list and attaches a calculator
        # with the labels; molecules_of needs only these four fields
        atoms = ase.Atoms(
            numbers=data[AtomicDataDict.ATOMIC_NUMBERS_KEY].numpy(),
            positions=data[AtomicDataDict.POSITIONS_KEY].numpy(),
            cell=data[AtomicDataDict.CELL_KEY].reshape(3, 3).numpy() if AtomicDataDict.CELL_KEY in data else None,
            pbc=data[AtomicDataDict.PBC_KEY].reshape(3).numpy() if AtomicDataDict.PBC_KEY in data else False,
        )
        index = np.empty(len(atoms), dtype=np.int64)
        for k, atom_indices in enumerate(molecules_of(atoms)):
            index[atom_indices] = k
        data[MOLECULE_INDEX] = torch.from_numpy(index)
        return data


class MoleculeNetForces(BaseModifier):
    """Metric field: (n_molecules_in_batch, 3) net forces, eV/A, molecules of all frames of a batch.

    Molecules are those of the reference frames (the model's output does not carry
    ``molecule_index``), so predicted and reference net forces pair molecule by molecule.
    """

    def __init__(self) -> None:
        super().__init__(AtomicDataDict.FORCE_KEY)

    def __call__(self, data1: AtomicDataDict.Type, data2: Optional[AtomicDataDict.Type] = None):
        reference = data1 if data2 is None else data2
        molecule = reference[MOLECULE_INDEX]
        frame = reference[AtomicDataDict.BATCH_KEY] if AtomicDataDict.BATCH_KEY in reference else torch.zeros_like(molecule)
        _, owner = torch.unique(frame * (int(molecule.max()) + 1) + molecule, return_inverse=True)
        n_molecules = int(owner.max()) + 1

        def net(forces: torch.Tensor) -> torch.Tensor:
            return torch.zeros(n_molecules, 3, dtype=forces.dtype, device=forces.device).index_add_(0, owner, forces)

        if data2 is None:
            return net(data1[self.field])
        return net(data1[self.field]), net(data2[self.field])

    def __str__(self) -> str:
        return "molecule_forces"

    @property
    def type(self) -> str:
        return "molecule"
