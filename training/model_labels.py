"""Labels from a trained model instead of DFT: the data of a distilled (cheaper) model.

`legato label STRUCTURES OUT --model FULL.legato.pt` writes the same extxyz frames as the
DFT labeller (energy eV, forces eV/A, Wannier vectors A, with per-frame resume), labelled by
the model. A cheap reference for contracted / multiple-time-step PIMD is best trained on
such labels: the correction (full - cheap) then holds only what the cheap model cannot
see (docs/performance.md, "Fast PIMD"), not the full model's own error against DFT.

Each frame records ``method = "model <name> sha256:<first 16>"``, so a data set never mixes
model labels with DFT ones (``legato merge`` and ``legato train`` refuse the blend).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import ase
import numpy as np

from legato.fields import VALENCE_CHARGE, WANNIER_COUNT, WANNIER_DISP
from legato.fileio import file_sha256


@dataclass
class ModelLabels:
    """Label frames with the model file ``model`` (what `legato label --model` uses)."""

    model: str
    device: str = "cpu"

    def resolved(self) -> "ModelLabels":
        return self

    def check(self, species) -> None:
        """ValueError (one line) when the model file is missing or cannot label these species."""
        from legato.modelfile import ModelFileError, read_model_file

        if not Path(self.model).exists():
            raise ValueError(f"--model {self.model}: no such model file")
        try:
            known = read_model_file(self.model)["metadata"]["type_names"]
        except ModelFileError as exc:
            raise ValueError(f"--model {self.model}: {exc}") from None
        unknown = sorted(set(species) - set(known))
        if unknown:
            raise ValueError(f"--model {self.model} knows {list(known)}, not {unknown}: label these structures with DFT or another model")

    def provenance(self) -> dict:
        """What each frame records (and what resuming must match): the model by name and checksum."""
        return {
            "method": f"model {Path(self.model).name} sha256:{self._checksum()[:16]}",
            "basis": None,
            "pseudo": None,
            "wannier_order": 1,
            "min_cell_length": 0.0,
        }

    def label(self, atoms: ase.Atoms) -> ase.Atoms:
        """One labelled copy of ``atoms``: the model's energy (eV), forces (eV/A) and Wannier data (A)."""
        potential = self._potential()
        periodic = bool(atoms.pbc.any())
        result = potential.evaluate(atoms.get_chemical_symbols(), atoms.positions[None], atoms.cell.array[None] if periodic else None, atoms.pbc)
        symbols = atoms.get_chemical_symbols()
        out = atoms.copy()
        out.calc = None
        out.info = {k: v for k, v in atoms.info.items() if k not in ("energy", "dipole")}
        out.info["energy"] = float(result["energy"][0])
        out.arrays["forces"] = result["forces"][0]
        out.arrays[WANNIER_DISP] = result["wannier_disp"][0]
        out.arrays[WANNIER_COUNT] = potential.per_atom(symbols, "wannier_count")
        out.arrays[VALENCE_CHARGE] = potential.per_atom(symbols, "valence_charge")
        out.info["dipole"] = np.asarray(result["dipole"][0])
        provenance = self.provenance()
        out.info.update({k: v for k, v in provenance.items() if v is not None}, code="legato")
        return out

    def _checksum(self) -> str:
        if getattr(self, "_sha256", None) is None:
            self._sha256 = file_sha256(self.model)
        return self._sha256

    def _potential(self):
        if getattr(self, "_loaded", None) is None:
            from legato.potential import ModelPotential

            # One frame per call: the planner has nothing to choose, and labels must not
            # depend on timing. Loaded once per labeller (not a dataclass field: not provenance).
            self._loaded = ModelPotential.from_file(self.model, atoms_per_call=1, device=self.device)
        return self._loaded
