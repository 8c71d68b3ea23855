"""The command line as users meet it: help, one-line errors, the pipeline end to end."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import assert_one_line_error

REPO = Path(__file__).resolve().parent.parent
LEGATO = [sys.executable, "-m", "legato.cli"]


def legato(*args, timeout=600):
    return subprocess.run(LEGATO + [str(a) for a in args], capture_output=True, text=True, timeout=timeout, cwd=REPO)


@pytest.mark.parametrize("verb", ["structures", "label", "select", "merge", "train", "evaluate", "export", "info", "serve", "run", "spectrum", "nqe", "demo", "failure", "sharpness", "orientation", "compare"])
def test_every_verb_has_help(verb):
    result = legato(verb, "--help")
    assert result.returncode == 0 and "Usage" in result.stdout


def test_the_choices_of_string_options_are_those_their_stages_take():
    from legato import cli
    from legato.analysis.ir import CORRECTIONS
    from legato.analysis.pipeline import SPECTRA
    from legato.training.structures import KINDS

    assert [k.value for k in cli.StructureKind] == list(KINDS)
    assert [k.value for k in cli.Spectrum] == list(SPECTRA)
    assert [k.value for k in cli.Correction] == list(CORRECTIONS)


def test_version_names_the_package_and_its_engines(legato_in_process):
    import torch

    from legato import __version__

    result = legato_in_process("--version")
    assert result.returncode == 0
    assert result.stdout.startswith(f"legato-pimd {__version__} (") and f"torch {torch.__version__}" in result.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "no/such.yaml"], "no such config"),
        (["info", "README.md"], "corrupt or not a legato model file"),
        (["orientation", "README.md"], "corrupt or not a legato model file"),
        (["sharpness", "README.md", "data/nh3_dft_test.extxyz"], "corrupt or not a legato model file"),
        (["failure", "README.md", "--workers", "2"], "corrupt or not a legato model file"),
        (["label", "no/such.xyz", "out.extxyz"], "no such structure file"),
        (["spectrum", "ir", "no/such/run"], "no i-PI input"),
        (["spectrum", "raman", "."], "'raman' is not one of 'ir', 'ins'"),
        (["structures", "unused.extxyz", "--kind", "gas"], "'gas' is not one of 'ammonia-initial'"),
        (["label", "data/nh3_dft_test.extxyz", "unused.extxyz", "--dispersion", "d4"], "'d4' is not one of 'd3bj', 'd3zero', 'none'"),
        (["run"], "Missing argument"),
        (["structures", "unused.extxyz", "--kind", "path"], "--kind path needs --between FILE"),
        (["structures", "unused.extxyz", "--kind", "displaced"], "--kind displaced needs --source FILE"),
        (["structures", "unused.extxyz", "--kind", "liquid", "--molecule", "XYZ"], "unknown molecule 'XYZ'"),
        (["serve", "README.md", "-s", "ipi_inputs/nh3_phase_i.xyz"], "exactly one of --unix"),
        (["serve", "-s", "ipi_inputs/nh3_phase_i.xyz", "-u", "unused", "--atoms-per-call", "0"], "atoms_per_call=0: give at least 1"),
        (["serve", "-s", "ipi_inputs/nh3_phase_i.xyz", "-u", "unused", "--device", "gpu"], "device 'gpu': use cpu, cuda or cuda:N"),
        (["run", "nh3_solid_pimd_nvt.xml", "-o", "no/such/run", "--device", "gpu"], "device 'gpu': use cpu, cuda or cuda:N"),
        (["demo", "-o", "no/such/demo", "--device", "mps"], "device 'mps': use cpu, cuda or cuda:N"),
        (["failure", "-o", "no/such/study", "--device", "tpu"], "device 'tpu': use cpu, cuda or cuda:N"),
        (["failure", "-o", "no/such/study", "--seeds", "0"], "--seeds 0: give at least 1"),
        (["failure", "-o", "no/such/study", "--protocol", "cold"], "'cold' is not one of 'hot', 'legato'"),
        (["failure", "-o", "no/such/study", "--temperature", "-5"], "--temperature -5.0: give a positive value"),
        (["compare", "-o", "no/such/study", "--rho", "0"], "--rho 0.0: give a positive value"),
        (["sharpness", "models/sam.legato.pt", "data/nh3_dft_test.extxyz", "--rho", "-1"], "--rho -1.0: give a positive value"),
        (["sharpness", "models/sam.legato.pt", "data/nh3_dft_test.extxyz", "--sigma", "0"], "--sigma 0.0: give a positive value"),
        (["sharpness", "models/sam.legato.pt", "data/nh3_dft_test.extxyz", "--loss-weights", "forces=ten"], "'forces=ten' is not NAME=NUMBER"),
        (["sharpness", "models/sam.legato.pt", "data/nh3_dft_test.extxyz", "--loss-weights", "molecule_forces=1"], "have no sharpness estimate yet"),
        (["orientation", "--steps", "0"], "--steps 0: give at least 1"),
        (["demo", "-o", "no/such/demo", "--temperature", "0"], "--temperature 0.0: give a positive value"),
        (["demo", "-o", "no/such/demo", "--no-fast-path", "--fast-model", "models/fast.legato.pt"], "--fast-model goes with the fast path"),
        (["demo", "-o", "no/such/demo", "--fast-model", "no/such/model.pt"], "no/such/model.pt"),
        (["structures", "unused.extxyz", "-n", "0"], "-n 0: give at least 1"),
        (["structures", "unused.extxyz", "--kind", "liquid", "--density", "-1"], "--density -1.0: give a positive value"),
        (["select", "models/sam.legato.pt", "models/sam.legato.pt", "-f", "data/nh3_dft_test.extxyz", "-o", "unused.extxyz"], "lists a model file twice"),
        (["select", "models/sam.legato.pt", "models/adam.legato.pt", "-f", "data/nh3_dft_test.extxyz", "-o", "unused.extxyz", "-n", "0"], "-n 0: give at least 1"),
        (["merge", "data/nh3_dft_test.extxyz", "-o", "data/nh3_dft_test.extxyz"], "also an input; write the merge to a new file"),
        (["label", "data/nh3_dft_test.extxyz", "unused.extxyz", "--limit", "0"], "--limit 0: give at least 1"),
        (["spectrum", "ir", ".", "--equilibration", "1"], "--equilibration 1.0: give a fraction"),
        (["nqe", "a", "b", "--equilibration", "-0.1"], "--equilibration -0.1: give a fraction"),
    ],
)
def test_bad_input_gives_a_one_line_error_and_nonzero_exit(args, message, legato_in_process):
    result = legato_in_process(*args)
    assert_one_line_error(result, message)


@pytest.mark.parametrize(
    "args, message",
    [
        (["info", "README.md"], "corrupt or not a legato model file"),  # torch and nequip loaded
        (["structures", "unused.extxyz", "-n", "0"], "-n 0: give at least 1"),
        pytest.param(["run", "nh3_solid_pimd_nvt.xml", "-o", "no/such/run", "--beads", "0"], "--beads 0: give at least 1", marks=pytest.mark.slow),  # i-PI
        pytest.param(["label", "data/nh3_dft_test.extxyz", "unused.extxyz", "--limit", "0"], "--limit 0: give at least 1", marks=pytest.mark.slow),  # PySCF
        (["spectrum", "raman", "."], "'raman' is not one of 'ir', 'ins'"),  # a usage error typer raises
    ],
)
def test_one_line_errors_stay_one_line_in_a_fresh_process(args, message):
    """As the checks above, in a new Python as a user starts it: a warning printed while a
    library loads (stderr, outside pytest's capture) would add a line."""
    result = legato(*args)
    assert_one_line_error(result, message)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--beads", "0"], "--beads 0: give at least 1"),
        (["--steps", "0"], "--steps 0: give at least 1"),
        (["--temperature", "-5"], "--temperature -5.0: give a positive value"),
        (["--timestep", "0"], "--timestep 0.0: give a positive value"),
        (["--drivers", "0"], "--drivers 0: give at least 1"),
        (["-m", "no/such.legato.pt"], "no such model file"),
        (["-m", "README.md"], "corrupt or not a legato model file"),
        (["--listen", "nohost"], "--listen nohost: give HOST:PORT"),
    ],
)
def test_bad_run_settings_fail_in_one_line_before_the_run_folder_is_made(tmp_path, args, message, legato_in_process):
    """i-PI would reject them only after `legato run` had written the run folder (and a traceback for 0 beads)."""
    result = legato_in_process("run", "nh3_solid_pimd_nvt.xml", "-o", tmp_path / "run", *args)
    assert_one_line_error(result, message)
    assert not (tmp_path / "run").exists()


def test_nqe_of_a_missing_run_makes_no_output_folder(tmp_path, legato_in_process):
    result = legato_in_process("nqe", tmp_path / "no_classical_run", tmp_path / "no_pimd_run", "-o", tmp_path / "nqe")
    assert result.returncode != 0 and "no_classical_run: no i-PI input" in result.stderr
    assert not (tmp_path / "nqe").exists()


def test_info_shows_what_the_model_file_holds():
    import torch

    from legato.modelfile import read_model_file

    path = REPO / "models/sam.legato.pt"
    content = read_model_file(path)
    arch, meta = content["model_config"], content["metadata"]
    result = legato("info", path)
    assert result.returncode == 0, result.stderr
    weights = sum(t.numel() for t in content["state_dict"].values())
    assert f"l_max {arch['l_max']}, {arch['num_layers']} layers, {arch['num_scalar_features']} scalar / {arch['num_tensor_features']} tensor features, {weights} weights" in result.stdout
    assert f"{meta['epochs']} epochs on data/nh3_dft.extxyz (sha256 {meta['dataset_sha256'][:12]}" in result.stdout
    assert f"/ {meta['test_errors']['n_frames']} test)" in result.stdout
    assert f"torch {torch.__version__}" in result.stdout


def test_the_readme_python_examples_run():
    import re

    blocks = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    assert blocks
    for block in blocks:
        result = subprocess.run([sys.executable, "-c", block], capture_output=True, text=True, timeout=300, cwd=REPO)
        assert result.returncode == 0, result.stderr


def test_merge_keeps_each_frame_once(synthetic_dataset, tmp_path, legato_in_process):
    import ase.io

    frames = ase.io.read(synthetic_dataset, ":")
    ase.io.write(tmp_path / "overlap.extxyz", frames[:5], format="extxyz")
    merged_file = tmp_path / "new_folder" / "merged.extxyz"  # the folder is made
    result = legato_in_process("merge", synthetic_dataset, tmp_path / "overlap.extxyz", "-o", merged_file)
    assert result.returncode == 0, result.stderr
    assert "5 duplicates dropped" in result.stdout
    merged = ase.io.read(merged_file, ":")
    assert len(merged) == len(frames) and {a.info["source_file"] for a in merged} == {synthetic_dataset.name}


def test_structures_path_with_no_displacement_is_an_energy_profile_between_the_end_points(tmp_path, legato_in_process):
    import ase.io
    import numpy as np

    from legato.geometry import ammonia_phase_i, molecules_of
    from legato.training.structures import rotated_molecule

    start = ammonia_phase_i(5.13)
    end = rotated_molecule(start, 60.0, np.random.default_rng(0), molecules_of(start))
    ase.io.write(tmp_path / "ends.extxyz", [start, end])
    for extra, on_path in [(["--stdev", "0", "--overshoot", "0"], True), ([], False)]:
        result = legato_in_process("structures", tmp_path / "p.extxyz", "--kind", "path", "--between", tmp_path / "ends.extxyz", "-n", "3", *extra)
        assert result.returncode == 0, result.stderr
        frames = ase.io.read(tmp_path / "p.extxyz", ":")
        exact = [np.allclose(f.positions, e.positions, atol=1e-8) for f, e in zip(frames[::2], [start, end])]
        assert exact == [on_path, on_path]


def test_structures_displaced_from_an_ipi_file_keep_its_cell(tmp_path, legato_in_process):
    import ase.io

    result = legato_in_process("structures", tmp_path / "d.extxyz", "--kind", "displaced", "--source", "ipi_inputs/nh3_phase_i.xyz", "-n", "2")
    assert result.returncode == 0, result.stderr
    frames = ase.io.read(tmp_path / "d.extxyz", ":")
    assert len(frames) == 2 and all(f.pbc.all() and f.cell.cellpar() == pytest.approx([5.13] * 3 + [90] * 3) for f in frames)


@pytest.mark.slow  # the pipeline end to end: two i-PI runs and the spectra, ~40 s
def test_structures_then_classical_and_pimd_runs_then_nqe(tmp_path, trained_model_file, legato_in_process):
    """The runs as a user starts them (200 steps each: the spectra's checks are of their files and
    lines); structures, nqe and spectrum in this process, saving three Python start-ups."""
    result = legato_in_process("structures", tmp_path / "s.extxyz", "--kind", "ammonia-crystal", "--repeat", "1")
    assert result.returncode == 0
    for name, template, beads in (("classical", "nh3_solid_classical_nvt.xml", 1), ("pimd", "nh3_solid_trpmd.xml", 4)):
        run = legato("run", template, "-o", tmp_path / name, "-m", trained_model_file, "--beads", beads, "--steps", 200, "--stride", 2, "--no-progress")
        assert run.returncode == 0, run.stderr
    nqe = legato_in_process("nqe", tmp_path / "classical", tmp_path / "pimd", "-o", tmp_path / "nqe")
    assert nqe.returncode == 0, nqe.stderr
    for kind in ("ir", "ins"):
        assert (tmp_path / "nqe" / f"{kind}_nqe.png").stat().st_size > 10000
        assert (tmp_path / "nqe" / f"{kind}_nqe_shifts.csv").read_text().startswith("classical_cm-1")
    assert "IR: figure" in nqe.stdout and "INS: figure" in nqe.stdout
    shares = json.loads((tmp_path / "nqe" / "summary.json").read_text())["ins"]["dos_share_below_60_cm-1"]
    assert set(shares) == {"classical", "pimd"} and all(set(v) == {"H", "N"} and all(0 <= x <= 1 for x in v.values()) for v in shares.values())
    assert f"classical N {100 * shares['classical']['N']:.1f}%" in nqe.stdout
    single = legato_in_process("spectrum", "ins", tmp_path / "pimd", "-o", tmp_path / "ins_pimd")
    assert single.returncode == 0, single.stderr
    assert f"DOS share below 60 cm^-1: pimd N {100 * shares['pimd']['N']:.1f}%" in single.stdout


def test_demo_warns_when_the_crystal_has_low_frequency_motion():
    """The demo's runs of the shipped model (N 0.1% / 0.3%) pass; a model whose TRPMD crystal went soft (6.7%) is flagged."""
    from legato.analysis.nqe import low_frequency_warning

    assert low_frequency_warning({"classical": {"N": 0.001, "H": 0.0}, "pimd": {"N": 0.003, "H": 0.0002}}) is None
    warning = low_frequency_warning({"classical": {"N": 0.004, "H": 0.0002}, "pimd": {"N": 0.067, "H": 0.006}})
    assert warning.startswith("warning: 6.7% of a DOS lies below 60 cm^-1")


def test_select_writes_the_most_disputed_frames_with_their_provenance(tmp_path, tiny_model_file, trained_model_file, legato_in_process):
    import ase.io

    from legato.geometry import ammonia_phase_i
    from legato.training.structures import rattled

    candidates = tmp_path / "candidates.extxyz"
    ase.io.write(candidates, rattled(ammonia_phase_i(), 8, stdev=0.05, seed=3))
    out = tmp_path / "picked.extxyz"
    result = legato_in_process("select", tiny_model_file, trained_model_file, "-f", candidates, "-n", 3, "--min-separation", 2, "-o", out)
    assert result.returncode == 0, result.stderr
    picked = ase.io.read(out, ":")
    indices = [a.info["selected_index"] for a in picked]
    assert len(picked) == 3 and all(b - a >= 2 for a, b in zip(indices, indices[1:]))
    assert all(a.info["selected_from"] == str(candidates) and a.info["committee_force_spread"] > 0 for a in picked)


def test_select_ranks_frames_of_several_files_together_without_repeats_or_skipped_frames(tmp_path, tiny_model_file, trained_model_file, legato_in_process):
    import ase.io

    from legato.geometry import ammonia_phase_i
    from legato.training.structures import rattled

    frames = rattled(ammonia_phase_i(), 6, stdev=0.05, seed=5)
    ase.io.write(tmp_path / "pos_0.extxyz", frames[:4])
    ase.io.write(tmp_path / "pos_1.extxyz", [frames[0]] + frames[4:])  # shares its first frame with pos_0, as PIMD beads do
    out = tmp_path / "picked.extxyz"
    args = ("select", tiny_model_file, trained_model_file, "-f", tmp_path / "pos_*.extxyz", "--min-separation", 1, "-o", out)
    result = legato_in_process(*args, "-n", 10)
    assert result.returncode == 0, result.stderr
    assert "6 of 6 frames from 2 file(s)" in result.stdout  # the repeated first frame counted once
    picked = {(a.info["selected_from"], a.info["selected_index"]) for a in ase.io.read(out, ":")}
    assert {(str(tmp_path / "pos_1.extxyz"), i) for i in (1, 2)} <= picked and (str(tmp_path / "pos_1.extxyz"), 0) not in picked
    result = legato_in_process(*args, "-n", 10, "--skip", 2)
    assert "3 of 3 frames" in result.stdout and all(a.info["selected_index"] >= 2 for a in ase.io.read(out, ":"))
    missing = legato_in_process("select", tiny_model_file, trained_model_file, "-f", tmp_path / "nothing_*.xyz", "-o", out)
    assert missing.returncode == 2 and "nothing_*.xyz: no such file" in missing.stderr


@pytest.mark.slow  # two MD runs and four quenches with the shipped model, ~40 s
def test_orientation_quenches_the_last_frame_and_exits_1_past_the_shift_limit(tmp_path, legato_in_process):
    """The verb's plumbing (the quench, the exit code, --minima, the bar); whether the shipped models
    stay ordered is tests/test_shipped.py's. 50 steps (200 before): the MD costs 1/8, and the crystal
    turns 7 deg instead of 19 deg (limit 20), so "ordered" is no longer a near miss."""
    import ase.io

    minima = tmp_path / "minima.extxyz"
    result = legato_in_process("orientation", "models/sam.legato.pt", "--repeat", 1, "--steps", 50, "--minima", minima)
    assert result.returncode == 0, result.stderr
    assert "-> ordered" in result.stdout and "-> same minimum" in result.stdout
    assert len(ase.io.read(minima, ":")) == 2
    strict = legato_in_process("orientation", "models/sam.legato.pt", "--repeat", 1, "--steps", 50, "--max-shift", 0, "--no-progress")
    assert strict.returncode == 1 and "ANOTHER minimum" in strict.stdout
    assert "orientation sam.legato.pt" in result.stderr and "orientation sam.legato.pt" not in strict.stderr  # the bar, and --no-progress


def test_failure_study_resumes_without_rerunning(tmp_path, trained_model_file, legato_in_process):
    import json

    args = ["failure", trained_model_file, "-o", tmp_path, "--sizes", "1", "--seeds", "2", "--max-steps", "20", "--temperature", "100"]
    first = legato_in_process(*args)
    assert first.returncode == 0, first.stderr
    results = tmp_path / Path(trained_model_file).name.split(".")[0] / "trajectories.jsonl"
    assert len(results.read_text().splitlines()) == 2
    second = legato_in_process(*args, "--no-progress")
    assert second.returncode == 0 and len(results.read_text().splitlines()) == 2
    bar = f"failure {Path(trained_model_file).name}"
    assert bar in first.stderr and bar not in second.stderr
    assert {json.loads(line)["seed"] for line in results.read_text().splitlines()} == {1000, 1001}
    assert "N =   16" in second.stdout
    assert "beta undetermined" in second.stdout and "nan" not in second.stdout  # one size: no fit
    hotter = legato_in_process(*args[:-1], "200")  # other settings must not extend this study
    assert hotter.returncode != 0 and "other settings" in hotter.stderr and "temperature" in hotter.stderr
    assert len(results.read_text().splitlines()) == 2


def test_failure_study_runs_supercells_of_a_given_structure(tmp_path, trained_model_file, legato_in_process):
    """--structure: the 32-atom liquid box (an i-PI xyz) instead of phase I; its study keeps to it."""
    import json

    args = ["failure", trained_model_file, "-o", tmp_path, "--sizes", "1,2", "--seeds", "1", "--max-steps", "10", "--temperature", "100", "--no-progress"]
    result = legato_in_process(*args, "--structure", "ipi_inputs/nh3_liquid_8.xyz")
    assert result.returncode == 0, result.stderr
    results = tmp_path / Path(trained_model_file).name.split(".")[0] / "trajectories.jsonl"
    assert sorted(json.loads(line)["n_atoms"] for line in results.read_text().splitlines()) == [32, 64]
    assert "N =   32" in result.stdout and "N =   64" in result.stdout
    other = legato_in_process(*args, "--structure", "ipi_inputs/nh3_phase_i.xyz")  # another cell must not extend this study
    assert other.returncode != 0 and "structure_sha256" in other.stderr
    molecule = tmp_path / "molecule.xyz"
    molecule.write_text("4\n\nN 0 0 0\nH 1 0 0\nH 0 1 0\nH 0 0 1\n")
    no_cell = legato_in_process(*args[:3], tmp_path / "m", *args[4:], "--structure", molecule)
    assert no_cell.returncode != 0 and "give a periodic structure with a 3D cell" in no_cell.stderr


def test_failure_study_on_allegro_legatos_protocol(tmp_path, trained_model_file, legato_in_process):
    """--protocol legato: its own folder and record (200 K, 2.5 fs, Nose-Hoover, deuterium),
    the liquid box by default; it does not extend a study of the other protocol."""
    import json

    args = ["failure", trained_model_file, "-o", tmp_path, "--protocol", "legato", "--sizes", "1", "--seeds", "1", "--max-steps", "20", "--no-progress"]
    result = legato_in_process(*args)
    assert result.returncode == 0, result.stderr
    out = tmp_path / (Path(trained_model_file).name.split(".")[0] + "_legato")
    record = json.loads((out / "study.json").read_text())
    assert (record["protocol"], record["temperature"], record["timestep_fs"], record["thermostat"], record["hydrogen_mass"]) == ("legato", 200.0, 2.5, "nose-hoover", 2.014)
    assert (record["max_temperature_deviation"], record["fluctuation_sigmas"], record["min_distance"]) == (100.0, 0.0, 0.0)
    assert [json.loads(line)["n_atoms"] for line in (out / "trajectories.jsonl").read_text().splitlines()] == [32]  # the liquid box
    hot_record = dict(record, protocol="hot")
    (out / "study.json").write_text(json.dumps(hot_record))
    mixed = legato_in_process(*args)
    assert mixed.returncode != 0 and "other settings" in mixed.stderr and "protocol" in mixed.stderr


@pytest.mark.slow  # three studies, one in worker processes, ~30 s
def test_failure_study_in_worker_processes_runs_each_trajectory_once(tmp_path, trained_model_file, legato_in_process):
    import json

    args = ["failure", trained_model_file, "--sizes", "1,2", "--seeds", "2", "--max-steps", "20", "--temperature", "100"]
    records = {}
    for workers in (1, 2):  # one worker: in this process; two: `legato failure` as a user starts it
        run = (legato_in_process if workers == 1 else legato)(*args, "-o", tmp_path / str(workers), "--workers", workers)
        assert run.returncode == 0, run.stderr
        lines = (tmp_path / str(workers) / Path(trained_model_file).name.split(".")[0] / "trajectories.jsonl").read_text().splitlines()
        records[workers] = sorted((r["n_atoms"], r["seed"], r["steps"], r["failed"]) for r in map(json.loads, lines))
    assert [(n, seed) for n, seed, *_ in records[2]] == [(16, 1000), (16, 1001), (32, 2000), (32, 2001)]
    assert records[2] == records[1]
    bad = legato_in_process(*args, "-o", tmp_path / "0", "--workers", 0)
    assert bad.returncode != 0 and "--workers 0" in bad.stderr


def test_compare_tables_t_failure_per_size_side_by_side(tmp_path, trained_model_file, legato_in_process):
    import csv

    import numpy as np

    result = legato_in_process("compare", trained_model_file, trained_model_file, "--data", tmp_path / "none.extxyz", "-o", tmp_path,
                    "--sizes", "1", "--seeds", "1", "--max-steps", "10", "--temperature", "100", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "traj" not in result.stderr  # no progress bars
    rows = list(csv.DictReader(open(tmp_path / "comparison.csv")))
    assert len(rows) == 2 and all(r["failed_N16"] == "0/1" and r["t_failure_N16"] == f">{10 / np.log(20):.0f}" for r in rows)
    assert (tmp_path / "failure_comparison.png").stat().st_size > 0


def test_demo_refuses_to_reuse_runs_made_with_other_settings(tmp_path, legato_in_process):
    """A demo folder is reused only by the same model and settings (finished runs are skipped)."""
    import json

    other = tmp_path / "other"
    other.mkdir()
    (other / "study.json").write_text(json.dumps({"model_sha256": "0" * 64, "temperature": 150.0, "production": False, "start": "relaxed, equilibrated"}))
    result = legato_in_process("demo", "-o", other, "--no-progress")
    assert result.returncode != 0 and "holds a study with other settings" in result.stderr and "model_sha256" in result.stderr
    old = tmp_path / "old"
    (old / "classical").mkdir(parents=True)
    result = legato_in_process("demo", "-o", old, "--no-progress")
    assert result.returncode != 0 and "older legato demo" in result.stderr
