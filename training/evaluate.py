"""Test errors of a model on labelled frames, in the units users quote.

energy: MAE per atom (meV/atom); forces: MAE and RMSE per component (meV/A);
molecule forces: MAE per component of the net force on each molecule (meV/A), the
intermolecular part that drives librations, lattice modes and phase stability;
Wannier vectors: MAE per component over atoms that own centres (A);
dipole: MAE per component (e*A).
"""

from __future__ import annotations

import numpy as np

from legato.dataset import _energy, _forces, frame_dipole, load_dataset
from legato.fields import WANNIER_COUNT, WANNIER_DISP
from legato.geometry import molecules_of
from legato.modelfile import load_model
from legato.potential import ModelPotential


def predict_frames(potential: ModelPotential, frames) -> list[dict]:
    results = []
    for atoms in frames:
        cell = atoms.cell.array[None] if atoms.pbc.any() else None
        r = potential.evaluate(atoms.get_chemical_symbols(), atoms.positions, cell, atoms.pbc)
        results.append({k: v[0] for k, v in r.items()})
    return results


def test_errors(model, metadata: dict, frames) -> dict:
    return errors_of(frames, predict_frames(ModelPotential(model, metadata), frames))


def errors_of(frames, pred: list[dict]) -> dict:
    """Errors of predictions ``pred`` (from ``predict_frames``) against the labels of ``frames``."""
    e_err = [(p["energy"] - _energy(a)) / len(a) for p, a in zip(pred, frames)]
    f_err = np.concatenate([(p["forces"] - _forces(a)).ravel() for p, a in zip(pred, frames)])
    w_err = np.concatenate(
        [(p["wannier_disp"] - a.arrays[WANNIER_DISP])[a.arrays[WANNIER_COUNT] > 0].ravel() for p, a in zip(pred, frames)]
    )
    m_err = np.concatenate([molecule_net_forces(a, p["forces"] - _forces(a)).ravel() for p, a in zip(pred, frames)])
    dipoles = [(p["dipole"], frame_dipole(a)) for p, a in zip(pred, frames)]
    mu_err = np.concatenate([predicted - stored for predicted, stored in dipoles if stored is not None] or [np.zeros(0)])
    return {
        "n_frames": len(frames),
        "energy_mae_meV_per_atom": 1e3 * float(np.mean(np.abs(e_err))),
        "forces_mae_meV_per_A": 1e3 * float(np.mean(np.abs(f_err))),
        "forces_rmse_meV_per_A": 1e3 * float(np.sqrt(np.mean(f_err**2))),
        "molecule_forces_mae_meV_per_A": 1e3 * float(np.mean(np.abs(m_err))) if m_err.size else float("nan"),
        "wannier_mae_A": float(np.mean(np.abs(w_err))) if w_err.size else float("nan"),
        "dipole_mae_eA": float(np.mean(np.abs(mu_err))) if mu_err.size else float("nan"),
    }


def molecule_net_forces(atoms, forces) -> np.ndarray:
    """(n_molecules, 3) sums of ``forces`` over each molecule (``molecules_of``) of a frame
    holding two or more; empty otherwise (a lone molecule feels no net force)."""
    molecules = molecules_of(atoms)
    if len(molecules) < 2:
        return np.zeros((0, 3))
    return np.array([forces[idx].sum(axis=0) for idx in molecules])


def errors_by_group(frames, pred: list[dict], key: str) -> dict:
    """``errors_of`` for each value of ``info[key]`` (e.g. source_file); frames without it form "(none)"."""
    groups: dict = {}
    for i, atoms in enumerate(frames):
        groups.setdefault(atoms.info.get(key, "(none)"), []).append(i)
    numbers_first = sorted(groups, key=lambda v: (0, v, "") if isinstance(v, (int, float, np.number)) else (1, 0, str(v)))
    return {str(v): errors_of([frames[i] for i in groups[v]], [pred[i] for i in groups[v]]) for v in numbers_first}


def energy_profile(frames, pred: list[dict], key: str) -> list[tuple]:
    """(``info[key]``, reference, model) energies in meV per frame relative to the first
    frame, e.g. a rigid rotation scan labelled by its angle."""
    missing = [i for i, atoms in enumerate(frames) if key not in atoms.info]
    if missing:
        raise ValueError(f"frame {missing[0]} has no info key '{key}': pick a key every frame carries")
    energies = [p["energy"] for p in pred]
    ref = [_energy(atoms) for atoms in frames]
    return [(atoms.info[key], 1e3 * (r - ref[0]), 1e3 * (p - energies[0])) for atoms, r, p in zip(frames, ref, energies)]


def evaluate_file(model, data, by: str | None = None, group_by: str | None = None) -> dict:
    """`legato evaluate`: a model file's errors on a labelled file.

    Returns ``errors`` (:func:`errors_of`), ``groups`` (:func:`errors_by_group` by
    ``group_by``, or empty) and ``profile`` (:func:`energy_profile` against ``by``, or empty).
    """
    net, meta = load_model(model)
    frames = load_dataset(data, meta["type_names"])
    pred = predict_frames(ModelPotential(net, meta), frames)
    return {
        "errors": errors_of(frames, pred),
        "groups": errors_by_group(frames, pred, group_by) if group_by else {},
        "profile": energy_profile(frames, pred, by) if by else [],
    }
