"""The deployable model file: weights, the config that builds them, metadata.

One torch file (``*.legato.pt``) holding plain data only (loadable with
``weights_only=True``)::

    {"format": "legato-model", "format_version": 1,
     "model_config": {...}, "state_dict": {...}, "metadata": {...}}

metadata: ``type_names``, ``r_max`` (Angstrom), ``units``, ``method`` (sam/adam),
``rho``, ``dataset_sha256``, ``valence_charge`` and ``wannier_count`` per
species, ``test_errors``, ``versions``.
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path

import torch

FORMAT = "legato-model"
FORMAT_VERSION = 1
UNITS = {"energy": "eV", "length": "Angstrom", "forces": "eV/Angstrom", "dipole": "e*Angstrom"}
REQUIRED_METADATA = ("type_names", "r_max", "units", "method", "rho", "valence_charge", "wannier_count")


class ModelFileError(ValueError):
    """A model file that cannot be used, with a one-line message naming the fix."""


def versions() -> dict:
    import allegro
    import nequip

    import legato

    return {"legato": legato.__version__, "nequip": nequip.__version__, "allegro": allegro.__version__, "torch": str(torch.__version__)}


def save_model_file(path, model: torch.nn.Module, model_config: dict, metadata: dict) -> Path:
    """Write atomically (temp file + rename), so a kill never leaves half a model."""
    missing = [k for k in REQUIRED_METADATA if k not in metadata]
    if missing:
        raise ModelFileError(f"metadata lacks {missing}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_config": model_config,
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "metadata": {**metadata, "versions": versions(), "created": datetime.datetime.now(datetime.timezone.utc).isoformat()},
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def read_model_file(path) -> dict:
    """Read and check a model file's payload (no model built)."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file (train one with `legato train` or use models/)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelFileError(f"{path}: corrupt or not a legato model file ({type(exc).__name__}); re-export it with `legato train`") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ModelFileError(f"{path}: not a legato model file (no '{FORMAT}' header)")
    if payload.get("format_version") != FORMAT_VERSION:
        raise ModelFileError(f"{path}: model format {payload.get('format_version')} but this legato reads {FORMAT_VERSION}; upgrade legato")
    missing = [k for k in REQUIRED_METADATA if k not in payload.get("metadata", {})]
    if missing:
        raise ModelFileError(f"{path}: metadata lacks {missing}; re-export it with `legato train`")
    if payload["metadata"]["units"] != UNITS:
        raise ModelFileError(f"{path}: units {payload['metadata']['units']} differ from legato's {UNITS}")
    return payload


def load_model(path, expect_type_names=None, compile_mode: str = "eager"):
    """Build the model from a model file; returns ``(model, metadata)``.

    ``expect_type_names`` (e.g. from a driver's structure) must match the
    model's species, else :class:`ModelFileError`. ``compile_mode``: see
    :func:`legato.model.build_model`.
    """
    from legato.model import build_model

    payload = read_model_file(path)
    meta = payload["metadata"]
    if expect_type_names is not None and set(expect_type_names) - set(meta["type_names"]):
        raise ModelFileError(
            f"{path}: model knows species {meta['type_names']} but the structure has {sorted(set(expect_type_names))}; use a model trained on these species"
        )
    model = build_model(payload["model_config"], meta["type_names"], compile_mode=compile_mode)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise ModelFileError(f"{path}: weights do not fit the stored architecture ({str(exc).splitlines()[0]})") from exc
    model.eval()
    return model, meta
