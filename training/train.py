"""`legato train`: SAM (or Adam) training of an Allegro + Wannier model.

Builds nequip's ASE data module, metrics managers and Lightning trainer from a
small legato YAML config, checkpoints every epoch (``last.ckpt``, ``best.ckpt``),
resumes from ``last.ckpt`` after a kill, and finally writes the deployable
model file ``<output_dir>/model.legato.pt`` with its test errors.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path

import ase.io
from omegaconf import DictConfig, OmegaConf

from legato import fields  # registers legato's data fields with nequip
from legato.dataset import DatasetError, load_dataset, species_of, split_indices
from legato.fileio import file_sha256
from legato.modelfile import UNITS, save_model_file

from .evaluate import test_errors

#: validation metric that picks the best checkpoint and drives the learning-rate plateau;
#: a config's optional ``monitor`` key names another (e.g. val0_epoch/forces_mae)
MONITOR = "val0_epoch/weighted_sum"
SPLITS = ("train", "val", "test")
#: trainer keys a resumed run takes from the new config (unset there: unset): more epochs,
#: another device, a new time limit
RESUMABLE_CHANGES = ("max_epochs", "max_steps", "max_time", "accelerator", "devices")
#: loss terms (MSE) every config weights, and those it may add with a weight > 0
REQUIRED_LOSS_TERMS = ("per_atom_energy", "forces", "wannier_disp")
OPTIONAL_LOSS_TERMS = ("molecule_forces",)
LOSS_TERMS = REQUIRED_LOSS_TERMS + OPTIONAL_LOSS_TERMS


def load_config(path, overrides=()) -> DictConfig:
    """Read a YAML config, composed by Hydra from its ``defaults`` list (adam.yaml is sam.yaml
    with SAM off), and apply ``key=value`` overrides (OmegaConf dotlist: new keys allowed)."""
    from hydra import compose, initialize_config_dir

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such config (see training/configs/)")
    with initialize_config_dir(config_dir=str(path.parent.resolve()), version_base=None):
        composed = compose(config_name=path.stem)
    cfg = OmegaConf.merge(OmegaConf.create(OmegaConf.to_container(composed)), OmegaConf.from_dotlist(list(overrides)))
    for key in ("data", "model", "loss", "optimizer", "sam", "trainer", "output_dir"):
        if key not in cfg:
            raise ValueError(f"{path}: config lacks section '{key}' (compare training/configs/sam.yaml)")
    return cfg


def check_loss_weights(loss: DictConfig) -> None:
    """Every loss term must be a known one with a weight >= 0 (a typo would silently do nothing)."""
    for name, weight in loss.items():
        if name not in LOSS_TERMS:
            raise ValueError(f"loss.{name}: unknown loss term; use one of {', '.join(LOSS_TERMS)}")
        if not isinstance(weight, (int, float)) or isinstance(weight, bool) or not weight >= 0:
            raise ValueError(f"loss.{name}={weight}: a loss weight must be a number >= 0 (0 turns the term off)")
    for name in REQUIRED_LOSS_TERMS:
        if name not in loss:
            raise ValueError(f"loss.{name}: missing; give its weight (compare training/configs/sam.yaml)")


def check_accelerator(trainer: DictConfig) -> None:
    """A GPU asked for must be one torch can use (Lightning would fail with a long traceback)."""
    import torch

    accelerator = str(trainer.get("accelerator", "cpu"))
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ValueError(f"trainer.accelerator={accelerator}: torch {torch.__version__} sees no GPU here; use trainer.accelerator=cpu")


def check_compile_mode(model: DictConfig) -> None:
    """``model.compile_mode=compile`` (nequip's torch.compile of the training step) needs a C++ compiler."""
    mode = str(model.get("compile_mode", "eager"))
    if mode not in ("eager", "compile"):
        raise ValueError(f"model.compile_mode={mode}: use compile (faster epochs) or eager")
    if mode == "compile":
        from legato.model import require_cxx_compiler

        try:
            require_cxx_compiler()
        except ValueError as exc:
            raise ValueError(f"model.compile_mode=compile: {exc} or use model.compile_mode=eager") from exc


def active_loss_terms(loss) -> list[str]:
    """The loss terms a run trains and logs: the required ones and optional ones weighted > 0."""
    return list(REQUIRED_LOSS_TERMS) + [name for name in OPTIONAL_LOSS_TERMS if float(loss.get(name, 0.0)) > 0]


def monitored_metric(cfg: DictConfig) -> str:
    """The config's ``monitor`` (default: the weighted validation loss), checked against the logged metrics."""
    monitor = str(cfg.get("monitor", MONITOR))
    known = [MONITOR] + [f"val0_epoch/{name}_{kind}" for name in active_loss_terms(cfg.loss) for kind in ("mae", "mse")]
    if monitor not in known:
        raise ValueError(f"monitor={monitor}: not a logged validation metric; use one of {', '.join(known)}")
    return monitor


def per_species_table(frames, key: str) -> dict:
    """The one value of a per-atom integer array for each species (e.g. valence charge)."""
    table: dict = {}
    for atoms in frames:
        for symbol, value in zip(atoms.get_chemical_symbols(), atoms.arrays[key]):
            if table.setdefault(symbol, int(value)) != int(value):
                raise DatasetError(f"'{key}' differs between {symbol} atoms; legato needs one value per species")
    return table


def write_splits(frames, cfg: DictConfig, split_dir: Path) -> dict:
    """Write train/val/test extxyz files once; later runs (resume) reuse them."""
    paths = {name: split_dir / f"{name}.extxyz" for name in SPLITS}
    if all(p.exists() for p in paths.values()):
        return paths
    fractions = [float(cfg.data.split[name]) for name in SPLITS]
    split_dir.mkdir(parents=True, exist_ok=True)
    for name, idx in zip(SPLITS, split_indices(frames, fractions, int(cfg.data.get("split_seed", 0)))):
        if len(idx) == 0:
            raise DatasetError(f"split '{name}' is empty: {len(frames)} frames are too few for fractions {fractions}")
        ase.io.write(paths[name], [frames[i] for i in idx], format="extxyz")
    return paths


#: the nequip metric field of each loss term
LOSS_FIELDS = {
    "per_atom_energy": {"_target_": "nequip.data.PerAtomModifier", "field": "total_energy"},
    "forces": "forces",
    "wannier_disp": fields.WANNIER_DISP,
    "molecule_forces": {"_target_": "legato.training.molecule_forces.MoleculeNetForces"},
}


def _metrics(coeffs: dict, kind: str) -> dict:
    """nequip MetricsManager config: MSE terms for the loss, MAE/RMSE for monitoring."""
    entries = []
    for name in active_loss_terms(coeffs):
        field = LOSS_FIELDS[name]
        entries.append({"name": f"{name}_mse", "field": field, "coeff": coeffs[name], "metric": {"_target_": "nequip.train.MeanSquaredError"}})
        if kind != "loss":
            entries.append({"name": f"{name}_mae", "field": field, "metric": {"_target_": "nequip.train.MeanAbsoluteError"}})
    return {"_target_": "nequip.train.MetricsManager", "metrics": entries}


def _datamodule(cfg: DictConfig, paths: dict, type_names: list):
    from hydra.utils import instantiate

    loader = {"_target_": "torch.utils.data.DataLoader", "batch_size": int(cfg.data.batch_size)}
    return instantiate(
        {
            "_target_": "nequip.data.datamodule.ASEDataModule",
            "seed": int(cfg.seed),
            "train_file_path": str(paths["train"]),
            "val_file_path": str(paths["val"]),
            "test_file_path": str(paths["test"]),
            "ase_args": {"format": "extxyz"},
            "include_keys": [fields.WANNIER_DISP],
            "exclude_keys": [fields.DIPOLE, fields.WANNIER_COUNT, fields.VALENCE_CHARGE],
            "transforms": [
                {"_target_": "nequip.data.transforms.ChemicalSpeciesToAtomTypeMapper", "model_type_names": type_names},
                {"_target_": "nequip.data.transforms.NeighborListTransform", "r_max": float(cfg.model.r_max)},
            ]
            + ([{"_target_": "legato.training.molecule_forces.MoleculeIndexTransform"}] if "molecule_forces" in active_loss_terms(cfg.loss) else []),
            "train_dataloader": {**loader, "shuffle": True},
            "val_dataloader": loader,
            "test_dataloader": loader,
            "stats_manager": {"_target_": "nequip.data.CommonDataStatisticsManager", "type_names": type_names},
        },
        _recursive_=False,
    )


def _model_config(cfg: DictConfig, stats: dict, type_names: list) -> dict:
    model = OmegaConf.to_container(cfg.model, resolve=True)
    model.setdefault("avg_num_neighbors", float(stats["num_neighbors_mean"]))
    model.setdefault("per_type_energy_shifts", {t: float(stats["per_atom_energy_mean"]) for t in type_names})
    model.setdefault("per_type_energy_scales", {t: float(stats["forces_rms"]) for t in type_names})
    return model


def _training_module_config(cfg: DictConfig, model_config: dict, type_names: list) -> dict:
    coeffs = OmegaConf.to_container(cfg.loss, resolve=True)
    module = {
        "_target_": "legato.training.sam.SAMLightningModule",
        "rho": float(cfg.sam.rho),
        "model": {"_target_": "legato.model.AllegroWannierModel", "seed": int(cfg.seed), "type_names": type_names, **model_config},
        "optimizer": OmegaConf.to_container(cfg.optimizer, resolve=True),
        "loss": _metrics(coeffs, "loss"),
        "val_metrics": _metrics(coeffs, "val"),
        "test_metrics": _metrics(coeffs, "val"),
    }
    ema_decay = float(cfg.get("ema_decay", 0.0))
    if ema_decay > 0:
        module.update({"_target_": "legato.training.sam.EMASAMLightningModule", "ema_decay": ema_decay})
    if cfg.get("lr_scheduler") is not None:
        module["lr_scheduler"] = {
            "scheduler": {"_target_": "torch.optim.lr_scheduler.ReduceLROnPlateau", **OmegaConf.to_container(cfg.lr_scheduler, resolve=True)},
            "monitor": monitored_metric(cfg),
            "interval": "epoch",
            "frequency": 1,
        }
    return module


def _quiet_lightning():
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "nequip"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="lightning")
    warnings.filterwarnings("ignore", category=UserWarning, message=".*does not have many workers.*")


def _resolve_run_config(cfg: DictConfig) -> DictConfig:
    """A started run's saved config.yaml wins over a new one, so a resume is the same run.

    A run has started once it has a checkpoint: the config saved by an attempt that
    stopped before its first epoch (a typo in data.path, say) is replaced.
    """
    out = Path(cfg.output_dir)
    saved_cfg = out / "config.yaml"
    if saved_cfg.exists() and (out / "checkpoints" / "last.ckpt").exists():
        previous = OmegaConf.load(saved_cfg)
        previous.output_dir = str(out)  # where the run is now, should it have been moved
        for key in RESUMABLE_CHANGES:
            if key in cfg.trainer:
                previous.trainer[key] = cfg.trainer[key]
            else:
                previous.trainer.pop(key, None)
        if OmegaConf.to_container(previous, resolve=True) != OmegaConf.to_container(cfg, resolve=True):
            print(f"resuming {out} with its saved config.yaml (the given config differs; use a new output_dir to change it)")
        cfg = previous
    out.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, saved_cfg)
    return cfg


def prepare(cfg: DictConfig):
    """Data splits, nequip data module and the SAM training module of a run.

    Returns ``(cfg, datamodule, module, paths, model_config, frames, type_names)``.
    """
    import torch
    from hydra.utils import instantiate
    from nequip.utils.global_state import set_global_state

    check_loss_weights(cfg.loss)
    check_compile_mode(cfg.model)
    monitored_metric(cfg)
    cfg = _resolve_run_config(cfg)
    frames = load_dataset(cfg.data.path)
    type_names = list(cfg.model.get("type_names") or species_of(frames))
    paths = write_splits(frames, cfg, Path(cfg.output_dir) / "split")

    set_global_state()
    torch.manual_seed(int(cfg.seed))
    datamodule = _datamodule(cfg, paths, type_names)
    stats = datamodule.get_statistics(dataset="train")
    model_config = _model_config(cfg, stats, type_names)
    model_config.pop("type_names", None)
    module_cfg = _training_module_config(cfg, model_config, type_names)
    module = instantiate(module_cfg, _recursive_=False, _convert_="all", num_datasets=datamodule.num_datasets, info_dict={"legato": True})
    return cfg, datamodule, module, paths, model_config, frames, type_names


def train(cfg: DictConfig, progress: bool = True) -> Path:
    """Train (or resume) the run described by ``cfg``; returns the model file path."""
    import lightning
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    from .epoch_log import EpochLog

    _quiet_lightning()
    check_accelerator(cfg.trainer)  # here, not in prepare: export needs no GPU, also for GPU-trained runs
    cfg, datamodule, module, paths, model_config, frames, type_names = prepare(cfg)
    out = Path(cfg.output_dir)
    ckpt_dir = out / "checkpoints"
    last = ckpt_dir / "last.ckpt"
    trainer_args = {"accelerator": "cpu", "devices": 1, **OmegaConf.to_container(cfg.trainer, resolve=True)}
    trainer = lightning.Trainer(
        inference_mode=False,
        enable_progress_bar=progress,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        logger=CSVLogger(out, name="logs"),
        # last.ckpt after every epoch, from its own callback: `save_last=True` on the monitored
        # one rewrites it only when the validation loss improves, so a resume redid epochs.
        callbacks=[
            ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor=monitored_metric(cfg), save_top_k=1),
            ModelCheckpoint(dirpath=ckpt_dir, filename="last", save_top_k=1, enable_version_counter=False),
            EpochLog(),
        ],
        **trainer_args,
    )
    if last.exists():
        _relocate_checkpoint_callbacks(last, ckpt_dir)
    if cfg.model.get("compile_mode") == "compile":
        print("torch.compile: the first training and validation steps compile the model (minutes on a CPU; later runs reuse the cache)", flush=True)
    trainer.fit(module, datamodule=datamodule, ckpt_path=str(last) if last.exists() else None, weights_only=False)

    return export(cfg, module, paths, model_config, frames, type_names, int(trainer.current_epoch))


def _relocate_checkpoint_callbacks(last: Path, ckpt_dir: Path) -> None:
    """Point the checkpoint callbacks saved in ``last`` at ``ckpt_dir``, where the run is now.

    Lightning restores a resumed ModelCheckpoint's best score only when its directory is
    unchanged; a moved or copied run would start again from no best, write ``best-v1.ckpt``
    and export the stale ``best.ckpt``.
    """
    import torch

    new_dir = os.path.realpath(ckpt_dir)
    state = torch.load(last, map_location="cpu", weights_only=False)
    saved = [cb for key, cb in state.get("callbacks", {}).items() if key.startswith("ModelCheckpoint")]
    if all(cb.get("dirpath") == new_dir for cb in saved):
        return

    def moved(path):
        return os.path.join(new_dir, os.path.basename(path)) if path else path

    for cb in saved:
        cb["dirpath"] = new_dir
        for key in ("best_model_path", "kth_best_model_path", "last_model_path"):
            cb[key] = moved(cb.get(key))
        cb["best_k_models"] = {moved(path): score for path, score in cb.get("best_k_models", {}).items()}
    partial = last.with_suffix(".relocating")
    torch.save(state, partial)
    os.replace(partial, last)  # a kill mid-write never leaves a broken last.ckpt


def export(cfg: DictConfig, module, paths: dict, model_config: dict, frames, type_names: list, epochs: int) -> Path:
    """Write ``<output_dir>/model.legato.pt`` from the best checkpoint, with test errors."""
    import torch

    out = Path(cfg.output_dir)
    ckpt_dir = out / "checkpoints"
    best, last = ckpt_dir / "best.ckpt", ckpt_dir / "last.ckpt"
    if not (best.exists() or last.exists()):
        raise FileNotFoundError(f"{ckpt_dir}: no checkpoint to export (train first)")
    state = torch.load(best if best.exists() else last, map_location="cpu", weights_only=False)["state_dict"]
    module.to("cpu").load_state_dict(state)  # the model file is a CPU model, also after GPU training
    model = module.evaluation_model["sole_model"].eval()  # with EMA: the averaged weights
    split_frames = {name: ase.io.read(p, index=":", format="extxyz") for name, p in paths.items()}
    test_frames = split_frames["test"]
    metadata = {
        "type_names": type_names,
        "r_max": float(cfg.model["r_max"]),
        "units": UNITS,
        "method": "sam" if float(cfg.sam.rho) > 0 else "adam",
        "rho": float(cfg.sam.rho),
        "ema_decay": float(cfg.get("ema_decay", 0.0)),
        "dataset": str(cfg.data.path),
        "dataset_sha256": file_sha256(cfg.data.path),
        "valence_charge": per_species_table(frames, fields.VALENCE_CHARGE),
        "wannier_count": per_species_table(frames, fields.WANNIER_COUNT),
        "epochs": epochs,
        "n_frames": {name: len(split) for name, split in split_frames.items()},
        "loss_weights": {name: float(weight) for name, weight in cfg.loss.items()},  # the objective it was trained on (`legato sharpness`)
    }
    model_config["_target_"] = "legato.model.AllegroWannierModel"
    model_config.pop("compile_mode", None)  # how the run trained, not the model: model files run eager
    metadata["test_errors"] = test_errors(model, metadata, test_frames)
    model_file = save_model_file(out / "model.legato.pt", model, model_config, metadata)
    (out / "test_errors.json").write_text(json.dumps(metadata["test_errors"], indent=2))
    return model_file


def export_run(run_dir) -> Path:
    """Export the model file of a (possibly unfinished) run directory from its best checkpoint."""
    import torch

    run_dir = Path(run_dir)
    cfg_file = run_dir / "config.yaml"
    if not cfg_file.exists():
        raise FileNotFoundError(f"{run_dir}: not a training run (no config.yaml)")
    cfg = OmegaConf.load(cfg_file)
    cfg.output_dir = str(run_dir)  # a moved or copied run exports from and into itself
    cfg, _, module, paths, model_config, frames, type_names = prepare(cfg)
    last = run_dir / "checkpoints" / "last.ckpt"
    epochs = int(torch.load(last, map_location="cpu", weights_only=False)["epoch"]) + 1 if last.exists() else 0
    return export(cfg, module, paths, model_config, frames, type_names, epochs)
