"""Shared fixtures: tiny models and a synthetic labelled ammonia data set.

The synthetic labels come from an analytic reference (harmonic N-H bonds plus a
Wannier centroid shifted along the sum of N->H bond vectors), so training tests
need no DFT and know what is learnable.
"""

import os
import subprocess
import sys
from pathlib import Path

# One OpenMP thread per process (this one and the i-PI, driver, training and PySCF processes
# the tests start, which inherit it) unless OMP_NUM_THREADS is set: the test models are tiny,
# and most tests run i-PI beside a driver, so two threads each oversubscribe two cores. With
# two threads, 50 MD steps of the shipped model took 23 CPU-s instead of 1.6 on a busy 2-core
# machine (one-off timing).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import ase.io
import numpy as np
import pytest
import torch

if os.environ["OMP_NUM_THREADS"].isdigit():
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))  # in case a plugin loaded torch first
os.environ.setdefault("MPLBACKEND", "Agg")  # figures go to files; the same backend with or without a display

from legato.model import build_model
from legato.modelfile import UNITS
from legato.geometry import ammonia_phase_i
from legato.training.structures import rattled

TINY_MODEL = {
    "model_dtype": "float64",
    "r_max": 3.5,
    "l_max": 1,
    "num_layers": 1,
    "num_scalar_features": 16,
    "num_tensor_features": 4,
    "radial_chemical_embed": {"_target_": "allegro.nn.TwoBodyBesselScalarEmbed", "num_bessels": 6},
    "radial_chemical_embed_dim": 16,
    "allegro_mlp_hidden_layers_width": 16,
    "readout_mlp_hidden_layers_width": 8,
    "wannier_mlp_hidden_layers_width": 8,
    "avg_num_neighbors": 10.0,
    "per_type_energy_shifts": {"H": 0.0, "N": 0.0},
    "per_type_energy_scales": {"H": 1.0, "N": 1.0},
}
TINY_METADATA = {
    "type_names": ["H", "N"],
    "r_max": 3.5,
    "units": UNITS,
    "method": "adam",
    "rho": 0.0,
    "valence_charge": {"H": 1, "N": 5},
    "wannier_count": {"H": 0, "N": 4},
}


@pytest.fixture(scope="session")
def tiny_model():
    torch.manual_seed(0)
    return build_model(TINY_MODEL, ["H", "N"], seed=0)


def analytic_labels(atoms, k=30.0, r0=1.01, shift=0.1):
    """Harmonic N-H bonds (eV, A) and a Wannier centroid 0.1 A along the N->H bond sum."""
    n_idx = [i for i, s in enumerate(atoms.get_chemical_symbols()) if s == "N"]
    h_idx = [i for i, s in enumerate(atoms.get_chemical_symbols()) if s == "H"]
    energy, forces = 0.0, np.zeros((len(atoms), 3))
    disp = np.zeros((len(atoms), 3))
    for n in n_idx:
        vecs = atoms.get_distances(n, h_idx, mic=True, vector=True)
        bonded = np.argsort(np.linalg.norm(vecs, axis=1))[:3]
        total = np.zeros(3)
        for b in bonded:
            v = vecs[b]
            r = np.linalg.norm(v)
            energy += 0.5 * k * (r - r0) ** 2
            f = -k * (r - r0) * v / r  # force on H
            forces[h_idx[b]] += f
            forces[n] -= f
            total += v
        disp[n] = shift * total / np.linalg.norm(total)
    out = atoms.copy()
    out.info = {"energy": energy, "method": "analytic"}
    out.arrays["forces"] = forces
    out.arrays["wannier_disp"] = disp
    out.arrays["wannier_count"] = np.array([4 if s == "N" else 0 for s in atoms.get_chemical_symbols()])
    out.arrays["valence_charge"] = np.array([5 if s == "N" else 1 for s in atoms.get_chemical_symbols()])
    return out


@pytest.fixture(scope="session")
def synthetic_dataset(tmp_path_factory):
    frames = [analytic_labels(a) for a in rattled(ammonia_phase_i(), 40, stdev=0.06, seed=1)]
    path = tmp_path_factory.mktemp("data") / "synthetic.extxyz"
    ase.io.write(path, frames, format="extxyz")
    return path


@pytest.fixture(scope="session")
def tiny_model_file(tiny_model, tmp_path_factory):
    """The tiny (untrained, float64) model as a model file."""
    from legato.modelfile import save_model_file

    path = tmp_path_factory.mktemp("model") / "tiny.legato.pt"
    return save_model_file(path, tiny_model, dict(TINY_MODEL, _target_="legato.model.AllegroWannierModel"), dict(TINY_METADATA))


def tiny_train_config(data, out, epochs=1, rho=0.05, batch_size=4, optimizer=None, model_dtype="float64"):
    """A legato training config for the tiny model (statistics-derived entries left to the data)."""
    from omegaconf import OmegaConf

    model = {k: v for k, v in TINY_MODEL.items() if k not in ("avg_num_neighbors", "per_type_energy_shifts", "per_type_energy_scales")}
    model["model_dtype"] = model_dtype
    return OmegaConf.create(
        {
            "output_dir": str(out),
            "seed": 0,
            "data": {"path": str(data), "split": {"train": 0.8, "val": 0.1, "test": 0.1}, "batch_size": batch_size},
            "model": model,
            "loss": {"per_atom_energy": 1.0, "forces": 10.0, "wannier_disp": 100.0},
            "optimizer": optimizer or {"_target_": "torch.optim.Adam", "lr": 0.01},
            "lr_scheduler": None,
            "sam": {"rho": rho},
            "trainer": {"max_epochs": epochs},
        }
    )


@pytest.fixture(scope="session")
def trained_model_file(synthetic_dataset, tmp_path_factory):
    """A tiny float64 model trained for a few epochs on the synthetic data (smooth, stable)."""
    from legato.training.train import train

    return train(tiny_train_config(synthetic_dataset, tmp_path_factory.mktemp("trained"), epochs=8), progress=False)


@pytest.fixture
def compiled_variants(monkeypatch):
    """The input signatures nequip's CompileGraphModel compiled during a test (empty: nothing compiled)."""
    from nequip.nn.compile import CompileGraphModel

    seen = []
    compile_variant = CompileGraphModel._compile_variant
    monkeypatch.setattr(CompileGraphModel, "_compile_variant", lambda self, *a: seen.append(a[1]) or compile_variant(self, *a))
    return seen


@pytest.fixture
def legato_in_process(monkeypatch, capsys):
    """``legato ARGS`` run by ``legato.cli.main`` in this process, from the repository root:
    a ``subprocess.CompletedProcess`` (returncode, stdout, stderr) like a ``legato`` run.

    For commands that stop with a one-line error before any work: a fresh Python spends
    2-5 s of each such check importing torch, nequip, i-PI or PySCF. tests/test_cli.py
    keeps a few of these checks in a fresh process, where a warning printed on import
    would also break the one line."""
    from legato.cli import main

    def run(*args):
        args = [str(a) for a in args]
        monkeypatch.chdir(Path(__file__).resolve().parent.parent)
        monkeypatch.setattr(sys, "argv", ["legato", *args])
        capsys.readouterr()
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        out = capsys.readouterr()
        return subprocess.CompletedProcess(["legato", *args], code, out.out, out.err)

    return run


def assert_one_line_error(result, message: str) -> None:
    """A refused command: non-zero exit and exactly one line on stderr, holding ``message``."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0 and len(lines) == 1 and message in lines[0], result.stderr
