"""A legato model file as nequip's own files: checkpoint, package and AOT-compiled models.

nequip's tools (``nequip-package``, ``nequip-compile``, ``NequIPCalculator``, LAMMPS's
``pair_allegro`` and ML-IAP) read nequip checkpoints and packages. The energy/forces part of a
legato model *is* a stock ``allegro.model.AllegroModel``: legato appends its Wannier head after
the total energy (:mod:`legato.model`), so the head never touches energies or forces. The export
builds that stock model from the stored config, loads the weights without the head's, and
writes a checkpoint in the layout nequip's Lightning module saves; nequip's own command-line
tools then package and compile it. Dipoles (the Wannier head) stay legato-only.

Files written into the output folder, for a model file ``NAME.legato.pt``::

    NAME.ckpt                      nequip checkpoint (NequIPLightningModule layout)
    NAME.example.extxyz            the frame nequip traces when compiling (``example=``)
    NAME.nequip.zip                ``nequip-package build``: portable, version-tolerant
    NAME.<target>.nequip.pt2       ``nequip-compile --mode aotinductor --target <target>``
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from legato.modelfile import ModelFileError, read_model_file

LEGATO_ARCHITECTURE = "legato.model.AllegroWannierModel"
#: the same architecture under the module it lived in before the core moved to legato/ (the shipped SAM and Adam files name it)
_LEGATO_ARCHITECTURES = (LEGATO_ARCHITECTURE, "legato.training.model.AllegroWannierModel")
TARGETS = ("ase", "pair_allegro")  # nequip-compile's AOT targets: nequip's ASE calculator, LAMMPS pair_allegro
_HEAD_CONFIG_PREFIX = "wannier_mlp_"
_HEAD_WEIGHTS = ".wannier_head."
# AllegroWannierModel's own defaults, written out because AllegroModel's differ or are required.
_ARCHITECTURE_DEFAULTS = {"l_max": 1, "parity": True, "avg_num_neighbors": 20.0, "model_dtype": "float32"}


def model_stem(model_file) -> str:
    """``sam.legato.pt`` -> ``sam``."""
    name = Path(model_file).name
    for suffix in (".legato.pt", ".pt"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def allegro_config(payload: dict) -> dict:
    """The stock ``allegro.model.AllegroModel`` config of a legato model file's payload."""
    config = payload["model_config"]
    target = config.get("_target_", LEGATO_ARCHITECTURE)
    if target not in _LEGATO_ARCHITECTURES:
        raise ModelFileError(f"architecture {target} has no nequip export (only {LEGATO_ARCHITECTURE}); export the model with its own tools")
    stock = {k: v for k, v in config.items() if k != "_target_" and not k.startswith(_HEAD_CONFIG_PREFIX)}
    for key, value in _ARCHITECTURE_DEFAULTS.items():
        stock.setdefault(key, value)
    return {"_target_": "allegro.model.AllegroModel", "seed": 0, "type_names": list(payload["metadata"]["type_names"]), **stock}


def example_frame(type_names: Sequence[str], r_max: float, seed: int = 0):
    """A small periodic frame of the model's species (8 atoms, every atom with neighbours within
    ``r_max``, Angstrom) for nequip-compile to trace; any frame with edges serves."""
    import ase

    spacing = 0.7 * r_max
    grid = np.array([[i, j, k] for i in range(2) for j in range(2) for k in range(2)], dtype=float)
    jitter = np.random.default_rng(seed).normal(scale=0.03 * spacing, size=grid.shape)
    symbols = [type_names[i % len(type_names)] for i in range(len(grid))]
    return ase.Atoms(symbols, positions=grid * spacing + jitter, cell=np.eye(3) * 2 * spacing, pbc=True)


def write_checkpoint(model_file, out_dir, example=None) -> Path:
    """Write ``NAME.ckpt`` (and the example frame it names) into ``out_dir``; returns the checkpoint.

    ``example``: an ``ase.Atoms`` of the model's system for nequip to trace when compiling
    (default :func:`example_frame`).
    """
    import ase.io
    import lightning
    import torch
    from nequip.train import NequIPLightningModule
    from nequip.utils import get_current_code_versions
    from nequip.utils.global_state import global_state_initialized, set_global_state

    payload = read_model_file(model_file)
    meta = payload["metadata"]
    config = allegro_config(payload)
    type_names, r_max = list(meta["type_names"]), float(meta["r_max"])
    if example is not None and set(example.get_chemical_symbols()) - set(type_names):
        raise ModelFileError(f"the example frame has species {sorted(set(example.get_chemical_symbols()))} but the model knows {type_names}; pass a frame of the model's system")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = model_stem(model_file)
    frame_path = (out_dir / f"{stem}.example.extxyz").resolve()
    frame = (example if example is not None else example_frame(type_names, r_max)).copy()
    frame.calc = None
    ase.io.write(frame_path, frame, format="extxyz")

    if not global_state_initialized():
        set_global_state()
    frame_data = {
        "_target_": "nequip.data.datamodule.ASEDataModule",
        "seed": 0,
        "train_file_path": str(frame_path),
        "val_file_path": str(frame_path),
        "transforms": [
            {"_target_": "nequip.data.transforms.ChemicalSpeciesToAtomTypeMapper", "model_type_names": type_names},
            {"_target_": "nequip.data.transforms.NeighborListTransform", "r_max": r_max},
        ],
        "train_dataloader": {"_target_": "torch.utils.data.DataLoader", "batch_size": 1},
    }
    info = {
        "versions": get_current_code_versions(verbose=False),
        "training_module": {"_target_": "nequip.train.NequIPLightningModule"},
        "data": frame_data,
    }
    module = NequIPLightningModule(model=config, num_datasets={"train": 1, "val": 1, "test": 0}, info_dict=info)
    weights = {k: v for k, v in payload["state_dict"].items() if _HEAD_WEIGHTS not in k}
    try:
        module.model["sole_model"].load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        raise ModelFileError(f"{model_file}: weights do not fit a stock Allegro model ({str(exc).splitlines()[0]})") from exc
    checkpoint = {
        "pytorch-lightning_version": lightning.__version__,
        "hyper_parameters": dict(module.hparams),
        "state_dict": module.state_dict(),
        "epoch": 0,
        "global_step": 0,
    }
    path = out_dir / f"{stem}.ckpt"
    torch.save(checkpoint, path)
    return path


def _nequip_tool(module: str, *args: str) -> None:
    """Run one of nequip's command-line tools (by module, in this interpreter); a failure
    becomes a ValueError carrying the tool's last error line."""
    done = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True)
    if done.returncode != 0:
        lines = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
        raise ValueError(f"{module} {args[0]} failed: {lines[-1] if lines else f'exit {done.returncode}'}")


def export_nequip(model_file, out_dir, targets: Sequence[str] = TARGETS, device: str = "cpu", example=None, log: Callable[[str], None] = print) -> dict:
    """Export a legato model file's energy/forces model into nequip's files (see the module
    docstring); returns ``{"checkpoint": ..., "package": ..., <target>: ...}`` paths.

    ``targets``: nequip-compile AOT targets (``()`` writes checkpoint and package only);
    ``device``: the device the compiled files run on (compile on a machine that has it).
    """
    unknown = [t for t in targets if t not in TARGETS]
    if unknown:
        raise ValueError(f"unknown nequip-compile target(s) {unknown}; choose from {list(TARGETS)}")
    if targets:
        from legato.model import require_cxx_compiler
        from legato.potential import torch_device

        if torch_device(device).type == "cpu":  # one-line ValueError where this torch cannot use the device
            require_cxx_compiler()
    out_dir = Path(out_dir)
    stem = model_stem(model_file)
    written = {"checkpoint": write_checkpoint(model_file, out_dir, example=example)}
    log(f"checkpoint: {written['checkpoint']}")
    package = out_dir / f"{stem}.nequip.zip"
    _nequip_tool("nequip.scripts.package", "build", str(written["checkpoint"]), str(package))
    written["package"] = package
    log(f"package:    {package}")
    for target in targets:
        compiled = out_dir / f"{stem}.{target}.nequip.pt2"
        log(f"compiling for {target} on {device} (nequip-compile, AOTInductor: minutes on a CPU) ...")
        _nequip_tool("nequip.scripts.compile", str(package), str(compiled), "--mode", "aotinductor", "--device", device, "--target", target)
        written[target] = compiled
        log(f"{target + ':':<11} {compiled}")
    return written
