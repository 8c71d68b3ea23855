"""The files legato ships and its default run needs: i-PI templates with their
structures, the SAM and Adam models, the held-out DFT test frames.

They live in the repository's top-level folders ``ipi_inputs/``, ``models/`` and
``data/`` and are installed as package data (``legato.ipi_inputs``, ``legato.models``,
``legato.data``; pyproject.toml lists which files), found here through
:mod:`importlib.resources`, so an editable and a plain ``pip install`` find the same files.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def _folder(package: str) -> Path:
    return Path(str(files(package)))  # installed as plain files (pip's default), not zipped


#: the i-PI input templates (``legato run TEMPLATE``) and the structures they start from
TEMPLATES = _folder("legato.ipi_inputs")


def template(name) -> Path:
    """An i-PI input: ``name`` itself where it exists, else the shipped template of that name."""
    path = Path(name)
    if not path.exists() and (TEMPLATES / path).is_file():
        return TEMPLATES / path
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such i-PI input (templates are in {TEMPLATES})")
    return path


def _shipped(package: str, name: str, what: str) -> Path:
    path = _folder(package) / name
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} is missing from this installation; pass a file")
    return path


def default_model() -> Path:
    """The shipped SAM model (``models/sam.legato.pt``)."""
    return _shipped("legato.models", "sam.legato.pt", "the shipped model")


def fast_model() -> Path:
    """The shipped cheap reference model for contracted / multiple-time-step runs (``models/fast.legato.pt``)."""
    return _shipped("legato.models", "fast.legato.pt", "the cheap reference model (--fast-model)")


def baseline_model() -> Path:
    """The shipped Adam model trained like the SAM one (``models/adam.legato.pt``), for comparisons."""
    return _shipped("legato.models", "adam.legato.pt", "the shipped Adam model")


def held_out_frames() -> Path:
    """The held-out DFT frames of the shipped models (``data/nh3_dft_test.extxyz``)."""
    return _shipped("legato.data", "nh3_dft_test.extxyz", "the held-out test set")
