"""`legato train`: learning, checkpoints, resume after kill -9, model files."""

import csv
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import ase.io
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from legato.modelfile import ModelFileError, load_model, read_model_file
from legato.training.train import train

from conftest import tiny_train_config


def config(data, out, epochs, rho=0.05):
    return tiny_train_config(data, out, epochs=epochs, rho=rho, model_dtype="float32")


def val_losses(out):
    rows = []
    for version in sorted((out / "logs").glob("version_*")):
        with open(version / "metrics.csv") as f:
            rows += [r for r in csv.DictReader(f) if r.get("val0_epoch/weighted_sum")]
    return [(int(r["epoch"]), float(r["val0_epoch/weighted_sum"])) for r in rows]


@pytest.fixture(scope="module")
def trained(synthetic_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("train")
    return out, train(config(synthetic_dataset, out, epochs=8), progress=False)


def test_training_lowers_validation_loss(trained):
    out, _ = trained
    losses = val_losses(out)
    assert [e for e, _ in losses] == list(range(8))
    assert losses[-1][1] < 0.5 * losses[0][1]


def test_model_file_has_metadata_and_loads(trained):
    _, model_file = trained
    model, meta = load_model(model_file)
    assert meta["method"] == "sam" and meta["rho"] == 0.05
    assert meta["type_names"] == ["H", "N"]
    assert meta["valence_charge"] == {"H": 1, "N": 5} and meta["wannier_count"] == {"H": 0, "N": 4}
    assert len(meta["dataset_sha256"]) == 64
    assert meta["test_errors"]["forces_mae_meV_per_A"] > 0


def test_ema_run_validates_checkpoints_and_exports_the_averaged_weights(synthetic_dataset, tmp_path):
    from legato.training.evaluate import test_errors

    out = tmp_path / "ema"
    cfg = config(synthetic_dataset, out, epochs=3)
    cfg.ema_decay = 0.9
    model_file = train(cfg, progress=False)
    best = torch.load(out / "checkpoints" / "best.ckpt", weights_only=False)
    state = best["state_dict"]
    average = [state[f"ema.ema_weight_{i}"] for i in range(sum(k.startswith("ema.ema_weight_") for k in state))]
    model, meta = load_model(model_file)
    assert meta["ema_decay"] == 0.9
    parameters = list(model.parameters())
    assert len(parameters) == len(average) > 0
    for p, a in zip(parameters, average):  # the model file holds the average, not the raw weights
        np.testing.assert_array_equal(p.detach().numpy(), a.numpy())
    raw = [v for k, v in state.items() if k.startswith("model.")]
    assert not all(any(torch.equal(a, r) for r in raw) for a in average)
    # best.ckpt was picked on the validation of the averaged weights
    logged = {int(r["epoch"]): float(r["val0_epoch/forces_mae"]) for version in (out / "logs").glob("version_*")
              for r in csv.DictReader(open(version / "metrics.csv")) if r.get("val0_epoch/forces_mae")}
    errors = test_errors(model, meta, ase.io.read(out / "split" / "val.extxyz", ":"))
    assert errors["forces_mae_meV_per_A"] == pytest.approx(1e3 * logged[best["epoch"]], rel=1e-3)


@pytest.mark.slow  # torch.compile builds C++ kernels, ~1-2 min on a fresh machine
def test_compiled_sam_training_takes_the_same_steps_as_eager(synthetic_dataset, tmp_path, compiled_variants, capsys):
    runs = {}
    for mode in ("eager", "compile"):
        cfg = config(synthetic_dataset, tmp_path / mode, epochs=2)
        cfg.model.compile_mode = mode
        runs[mode] = train(cfg, progress=False)
        assert bool(compiled_variants) == (mode == "compile")  # torch.compile ran in the compiled run only
        assert ("torch.compile: the first training" in capsys.readouterr().out) == (mode == "compile")  # says why it waits
    eager, compiled = (val_losses(tmp_path / mode) for mode in ("eager", "compile"))
    assert [e for e, _ in compiled] == [0, 1]
    assert [v for _, v in compiled] == pytest.approx([v for _, v in eager], rel=1e-4)
    (eager_model, _), (compiled_model, _) = load_model(runs["eager"]), load_model(runs["compile"])
    assert "compile_mode" not in read_model_file(runs["compile"])["model_config"]  # model files run eager
    assert type(compiled_model) is type(eager_model)
    for a, b in zip(eager_model.parameters(), compiled_model.parameters()):
        np.testing.assert_allclose(b.detach().numpy(), a.detach().numpy(), rtol=1e-4, atol=1e-6)


def test_corrupt_and_foreign_model_files_are_refused(trained, tmp_path):
    _, model_file = trained
    truncated = tmp_path / "truncated.legato.pt"
    truncated.write_bytes(model_file.read_bytes()[:5000])
    with pytest.raises(ModelFileError, match="corrupt"):
        read_model_file(truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(ModelFileError, match="not a legato model"):
        read_model_file(foreign)
    with pytest.raises(ModelFileError, match="species"):
        load_model(model_file, expect_type_names=["O", "H"])
    with pytest.raises(ModelFileError, match="no such model"):
        read_model_file(tmp_path / "missing.legato.pt")


@pytest.mark.slow  # two `legato train` processes, ~30 s
def test_resume_after_kill_continues_the_same_run(synthetic_dataset, tmp_path):
    out = tmp_path / "run"
    cfg_file = tmp_path / "cfg.yaml"
    OmegaConf.save(config(synthetic_dataset, out, epochs=6), cfg_file)
    cmd = [sys.executable, "-m", "legato.cli", "train", str(cfg_file), "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    last = out / "checkpoints" / "last.ckpt"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if last.exists() and torch.load(last, weights_only=False)["epoch"] >= 2:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "training finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = torch.load(last, weights_only=False)["epoch"]
    assert 2 <= killed_at < 5

    resumed = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=600)
    final = torch.load(last, weights_only=False)
    assert final["epoch"] == 5  # index of the last epoch, as Lightning stores it
    steps_per_epoch = -(-len(ase.io.read(out / "split" / "train.extxyz", ":")) // 4)  # batch 4
    assert final["global_step"] == 6 * steps_per_epoch
    epochs = [e for e, _ in val_losses(out)]
    assert sorted(set(epochs)) == list(range(6))
    assert (out / "model.legato.pt").exists()
    # the log of a background run: one line per epoch the resumed run trained (1-based)
    logged = re.findall(r"^epoch (\d+)/6: validation MAE forces ([\d.]+) meV/A, energy ([\d.]+) meV/atom, wannier ([\d.]+) A; lr", resumed.stdout, re.M)
    assert [int(epoch) for epoch, *_ in logged] == list(range(killed_at + 2, 7))
    assert all(float(value) > 0 for _, *values in logged for value in values)


def test_epoch_lines_mark_each_new_best_validation_loss(synthetic_dataset, tmp_path, capsys):
    out = tmp_path / "run"
    train(config(synthetic_dataset, out, epochs=6), progress=False)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch ")]
    assert [line.split(":")[0] for line in lines] == [f"epoch {k}/6" for k in range(1, 7)]
    losses = [loss for _, loss in val_losses(out)]
    running_best = [loss <= min(losses[: k + 1]) for k, loss in enumerate(losses)]
    assert [line.endswith("; best") for line in lines] == running_best
    assert all(re.search(r"; \d+ s; [\d.]+ (s|min|h) to go(; best)?$", line) for line in lines[:-1])
    assert "to go" not in lines[-1]  # nothing left after the last epoch


def test_time_to_go_reads_in_seconds_minutes_or_hours():
    from legato.timing import duration_text

    assert [duration_text(s) for s in (45, 89.4, 600, 5339, 5400, 11520)] == ["45 s", "89 s", "10 min", "89 min", "1.5 h", "3.2 h"]


def test_a_worse_epoch_is_not_marked_best():
    from types import SimpleNamespace

    from legato.training.epoch_log import EpochLog

    def trainer(best):
        return SimpleNamespace(checkpoint_callback=SimpleNamespace(monitor="val", best_model_score=best))

    assert EpochLog._is_best(trainer(None), {"val": torch.tensor(2.0)})  # the first epoch
    assert EpochLog._is_best(trainer(torch.tensor(2.0)), {"val": torch.tensor(1.0)})
    assert not EpochLog._is_best(trainer(torch.tensor(1.0)), {"val": torch.tensor(2.0)})
    assert not EpochLog._is_best(trainer(torch.tensor(1.0)), {})  # no validation this epoch


def test_committee_selection(tiny_model_file, trained):
    from legato.potential import ModelPotential
    from legato.training.select import force_disagreement, select_frames
    from legato.geometry import ammonia_phase_i
    from legato.training.structures import rattled

    frames = rattled(ammonia_phase_i(), 12, stdev=0.05, seed=4)
    a, b = ModelPotential.from_file(tiny_model_file), ModelPotential.from_file(trained[1])
    assert np.allclose(force_disagreement([a, a], frames), 0.0)
    scores = force_disagreement([a, b], frames)
    assert np.all(scores > 0)
    picked = select_frames(scores, n=3, min_separation=3)
    assert len(picked) == 3 and np.all(np.diff(picked) >= 3)
    assert scores.argmax() in picked
    assert np.allclose(scores[:5], force_disagreement([a, b], frames[:5]))  # batching keeps each frame's score
    assert select_frames(np.arange(12.0), n=4, min_separation=2) == [5, 7, 9, 11]
    two_files = ["x", "y"] * 6  # frame i is frame i // 2 of its file: min_separation counts within each file
    assert select_frames(np.arange(12.0), n=4, min_separation=2, groups=two_files) == [6, 7, 10, 11]


def test_energy_profile_is_relative_to_the_first_frame_and_needs_its_key(synthetic_dataset, tiny_model_file):
    import ase.io

    from legato.training.evaluate import energy_profile, predict_frames
    from legato.potential import ModelPotential

    frames = ase.io.read(synthetic_dataset, ":4")
    for k, atoms in enumerate(frames):
        atoms.info["step"] = 10 * k
    pred = predict_frames(ModelPotential.from_file(tiny_model_file), frames)
    profile = energy_profile(frames, pred, "step")
    energies = [atoms.get_potential_energy() for atoms in frames]
    predicted = [p["energy"] for p in pred]
    assert [row[0] for row in profile] == [0, 10, 20, 30]
    np.testing.assert_allclose([row[1] for row in profile], 1e3 * (np.array(energies) - energies[0]))
    np.testing.assert_allclose([row[2] for row in profile], 1e3 * (np.array(predicted) - predicted[0]), rtol=1e-6)
    with pytest.raises(ValueError, match="no info key 'angle'"):
        energy_profile(frames, pred, "angle")


def test_molecule_force_error_sees_net_forces_on_molecules_only():
    """An error that pushes each molecule as a whole shows in the molecule metric; one that
    sums to zero inside every molecule (intramolecular only) does not."""
    from conftest import analytic_labels

    from legato.training.evaluate import errors_of
    from legato.geometry import ammonia_phase_i, molecules_of
    from legato.training.structures import rattled

    atoms = analytic_labels(rattled(ammonia_phase_i(), 1, stdev=0.03, seed=4)[0])
    molecules = molecules_of(atoms)
    assert len(molecules) == 4
    labels = atoms.arrays["forces"]
    push, squeeze = np.zeros_like(labels), np.zeros_like(labels)
    for k, idx in enumerate(molecules):
        push[idx] = 0.01 * (k + 1)  # eV/A on every atom of molecule k
        squeeze[idx] = 0.05 * (np.eye(len(idx), 3) - np.eye(len(idx), 3).mean(axis=0))

    def errors(force_error):
        pred = {"energy": atoms.info["energy"], "forces": labels + force_error, "wannier_disp": atoms.arrays["wannier_disp"], "dipole": None}
        return errors_of([atoms], [pred])

    pushed = errors(push)
    assert pushed["molecule_forces_mae_meV_per_A"] == pytest.approx(1e3 * 0.01 * 4 * np.mean([1, 2, 3, 4]))
    squeezed = errors(squeeze)
    assert squeezed["forces_mae_meV_per_A"] > 10
    assert squeezed["molecule_forces_mae_meV_per_A"] == pytest.approx(0, abs=1e-9)


def test_errors_by_group_are_the_errors_of_each_group_alone(synthetic_dataset, tiny_model_file):
    import ase.io

    from legato.training.evaluate import errors_by_group, errors_of, predict_frames
    from legato.potential import ModelPotential

    frames = ase.io.read(synthetic_dataset, ":6")
    for atoms, source in zip(frames, ["a", "b", "a", "b", "a", None]):
        atoms.info.pop("source_file", None)
        if source:
            atoms.info["source_file"] = source
    pred = predict_frames(ModelPotential.from_file(tiny_model_file), frames)
    groups = errors_by_group(frames, pred, "source_file")
    assert list(groups) == ["(none)", "a", "b"] and [g["n_frames"] for g in groups.values()] == [1, 3, 2]
    alone = errors_of([frames[i] for i in (1, 3)], [pred[i] for i in (1, 3)])
    assert groups["b"] == pytest.approx(alone, nan_ok=True)
    assert groups["b"]["forces_mae_meV_per_A"] != errors_of(frames, pred)["forces_mae_meV_per_A"]
    for atoms, step in zip(frames, [100, 20, 3, 20, 100, 3]):
        atoms.info["step"] = step
    assert list(errors_by_group(frames, pred, "step")) == ["3", "20", "100"]  # numbers in numeric order


def test_split_follows_frame_content_so_new_data_never_moves_old_frames():
    from legato.dataset import split_indices
    from legato.geometry import ammonia_phase_i
    from legato.training.structures import rattled

    frames = rattled(ammonia_phase_i(), 300, stdev=0.05, seed=7)
    fractions = [0.8, 0.1, 0.1]

    def assignment(frames):
        return {round(frames[i].positions[0, 0], 9): k for k, idx in enumerate(split_indices(frames, fractions)) for i in idx}

    old = assignment(frames[:200])
    grown = assignment(frames[:200] + frames[200:][::-1])  # more data, and in another order
    assert all(grown[key] == split for key, split in old.items())
    counts = [len(idx) for idx in split_indices(frames, fractions)]
    assert sum(counts) == 300 and abs(counts[0] - 240) < 30 and min(counts) > 15
    assert split_indices(frames, fractions, seed=1)[2].tolist() != split_indices(frames, fractions)[2].tolist()  # split_seed matters


def test_molecule_net_force_target_matches_the_evaluated_metric():
    """The training term sums the same molecules' forces as `legato evaluate`, frame by frame in a batch."""
    from nequip.data import AtomicDataDict, from_ase

    from legato.training.evaluate import molecule_net_forces
    from legato.training.molecule_forces import MoleculeIndexTransform, MoleculeNetForces
    from legato.geometry import ammonia_phase_i
    from legato.training.structures import rattled

    frames = rattled(ammonia_phase_i().repeat((2, 1, 1)), 2, stdev=0.05, seed=3)
    order = np.random.default_rng(0).permutation(len(frames[0]))  # molecules need not be contiguous
    frames = [a[order] for a in frames]
    rng = np.random.default_rng(1)
    for atoms in frames:
        atoms.arrays["forces"] = rng.normal(size=(len(atoms), 3))
    batch = AtomicDataDict.batched_from_list([MoleculeIndexTransform()(from_ase(a)) for a in frames])
    net = MoleculeNetForces()(batch)
    expected = [molecule_net_forces(a, a.arrays["forces"]) for a in frames]
    assert net.shape == (16, 3)
    # molecules are numbered in order of their first atom in both, frame after frame
    np.testing.assert_allclose(net.numpy(), np.concatenate(expected), atol=1e-5)  # nequip loads float32


def test_molecule_force_loss_trains_and_is_monitored(synthetic_dataset, tmp_path):
    cfg = config(synthetic_dataset, tmp_path, epochs=2)
    cfg.loss.molecule_forces = 10.0
    train(cfg, progress=False)
    with open(next((tmp_path / "logs").glob("version_*")) / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("val0_epoch/molecule_forces_mae")]
    assert len(rows) == 2
    assert all(np.isfinite(float(r["val0_epoch/molecule_forces_mae"])) for r in rows)


@pytest.mark.parametrize(
    "override, message",
    [
        ("loss.forces=-1", "loss.forces=-1: a loss weight must be a number >= 0"),
        ("loss.molecule_force=10", "loss.molecule_force: unknown loss term"),
        ("monitor=val0_epoch/molecule_forces_mae", "monitor=val0_epoch/molecule_forces_mae: not a logged validation metric"),
        ("model.compile_mode=fast", "model.compile_mode=fast: use compile (faster epochs) or eager"),
        pytest.param(
            "trainer.accelerator=gpu",
            "trainer.accelerator=gpu: torch",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the run is valid"),
        ),
    ],
)
def test_bad_settings_are_refused_before_training(override, message, tmp_path, legato_in_process):
    out = tmp_path / "run"
    result = legato_in_process("train", "training/configs/sam.yaml", override, f"output_dir={out}")
    assert result.returncode != 0
    assert message in result.stderr
    assert not out.exists()


def test_the_adam_config_is_the_sam_config_with_sam_off():
    """adam.yaml composes sam.yaml (Hydra defaults) and changes only the run name and rho."""
    from legato.training.train import load_config

    configs = Path(__file__).resolve().parents[1] / "training/configs"
    sam = OmegaConf.to_container(load_config(configs / "sam.yaml"), resolve=True)
    adam = OmegaConf.to_container(load_config(configs / "adam.yaml", ["trainer.max_epochs=3"]), resolve=True)
    assert adam["sam"] == {"rho": 0.0} and sam["sam"]["rho"] > 0
    assert (adam["run_name"], adam["output_dir"]) == ("adam", "runs/adam") and adam["trainer"]["max_epochs"] == 3
    differ = {key for key in sam.keys() | adam.keys() if sam.get(key) != adam.get(key)}
    assert differ == {"run_name", "output_dir", "sam", "trainer"}
    assert {k: v for k, v in adam["trainer"].items() if k != "max_epochs"} == {k: v for k, v in sam["trainer"].items() if k != "max_epochs"}


@pytest.mark.slow  # a fresh process: the compiler is found when torch loads
def test_compiled_training_without_a_cxx_compiler_is_refused_before_training(tmp_path):
    out = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "legato.cli", "train", "training/configs/sam.yaml", f"output_dir={out}"],  # compile_mode: compile
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, CXX="/nonexistent/g++"),
    )
    assert result.returncode != 0
    assert "model.compile_mode=compile: no C++ compiler" in result.stderr and "model.compile_mode=eager" in result.stderr
    assert not out.exists()


def test_export_of_a_copied_gpu_run_writes_into_the_copy_on_cpu(trained, tmp_path):
    import shutil

    from legato.training.train import export_run

    out, model_file = trained
    before = model_file.read_bytes()
    copy = tmp_path / "copied_run"
    shutil.copytree(out, copy)
    (copy / "model.legato.pt").unlink()
    started_on_gpu = OmegaConf.load(copy / "config.yaml")
    started_on_gpu.trainer.accelerator = "gpu"
    OmegaConf.save(started_on_gpu, copy / "config.yaml")
    assert export_run(copy) == copy / "model.legato.pt"
    assert (copy / "model.legato.pt").exists()
    assert model_file.read_bytes() == before
    assert OmegaConf.load(copy / "config.yaml").output_dir == str(copy)


def test_resumed_copy_of_a_run_keeps_its_best_checkpoint(trained, synthetic_dataset, tmp_path):
    """More epochs on a copied run: best.ckpt is the best of all epochs, not a best-v1.ckpt."""
    import shutil

    out, _ = trained
    copy = tmp_path / "more_epochs"
    shutil.copytree(out, copy)
    train(config(synthetic_dataset, copy, epochs=12), progress=False)
    assert sorted(p.name for p in (copy / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    losses = val_losses(copy)
    assert [e for e, _ in losses] == list(range(12))
    best_epoch = min(losses, key=lambda el: el[1])[0]
    assert best_epoch >= 8, "the longer run never improved: the test cannot tell"
    assert torch.load(copy / "checkpoints/best.ckpt", weights_only=False)["epoch"] == best_epoch
    assert load_model(copy / "model.legato.pt")[1]["epochs"] == 12


def test_monitor_picks_the_best_checkpoint_by_that_metric(synthetic_dataset, tmp_path):
    cfg = config(synthetic_dataset, tmp_path, epochs=4)
    cfg.monitor = "val0_epoch/wannier_disp_mae"
    train(cfg, progress=False)
    with open(next((tmp_path / "logs").glob("version_*")) / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("val0_epoch/wannier_disp_mae")]
    best_epoch = min(rows, key=lambda r: float(r["val0_epoch/wannier_disp_mae"]))["epoch"]
    assert torch.load(tmp_path / "checkpoints/best.ckpt", map_location="cpu", weights_only=False)["epoch"] == int(best_epoch)


def test_resumed_run_takes_device_and_time_limit_from_the_new_config(synthetic_dataset, tmp_path):
    """A run started time-limited on a GPU goes on without a limit on the CPU, as the same run."""
    from legato.training.train import _resolve_run_config

    started = config(synthetic_dataset, tmp_path, epochs=4)
    started.trainer.update(accelerator="gpu", max_time={"minutes": 3})
    started.model.num_layers = 3
    _resolve_run_config(started)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").touch()  # it trained an epoch
    resumed = config(synthetic_dataset, tmp_path, epochs=8)
    resumed.trainer.accelerator = "cpu"
    cfg = _resolve_run_config(resumed)
    assert cfg.trainer.accelerator == "cpu" and "max_time" not in cfg.trainer and cfg.trainer.max_epochs == 8
    assert cfg.model.num_layers == 3  # the architecture stays the saved run's
    assert OmegaConf.load(tmp_path / "config.yaml") == cfg


def test_a_run_stopped_before_its_first_epoch_takes_the_corrected_config(synthetic_dataset, tmp_path):
    """A typo in data.path stops `legato train` before any epoch; the corrected command must not resume the typo."""
    from legato.training.train import _resolve_run_config

    typo = config(synthetic_dataset, tmp_path, epochs=4)
    typo.data.path = str(tmp_path / "no_such.extxyz")
    _resolve_run_config(typo)
    cfg = _resolve_run_config(config(synthetic_dataset, tmp_path, epochs=4))
    assert cfg.data.path == str(synthetic_dataset)
    assert OmegaConf.load(tmp_path / "config.yaml").data.path == str(synthetic_dataset)
