"""legato installs like a package: the wheel carries what the default run needs, and an
installed copy finds it without the repository (legato.shipped, importlib.resources)."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation", "-q", "-w", str(out)], capture_output=True, text=True, timeout=300
    )
    assert build.returncode == 0, build.stderr
    return next(out.glob("legato_pimd-*.whl"))


def test_the_wheel_carries_templates_models_and_test_frames(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    templates = {f"legato/ipi_inputs/{p.name}" for p in (REPO / "ipi_inputs").iterdir() if p.suffix in (".xml", ".xyz")}
    assert len(templates) >= 9 and templates <= names
    assert {"legato/models/sam.legato.pt", "legato/models/adam.legato.pt", "legato/models/fast.legato.pt", "legato/data/nh3_dft_test.extxyz"} <= names
    assert {"legato/training/configs/sam.yaml", "legato/training/configs/adam.yaml"} <= names
    data = {n for n in names if n.startswith("legato/data/") and not n.endswith(".py")}
    assert data == {"legato/data/nh3_dft_test.extxyz"}  # not all of data/: only what the default run needs
    assert not any(n.startswith("legato/models/candidates/") for n in names)


def test_an_installed_copy_finds_its_files_away_from_the_repository(wheel, tmp_path):
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)  # a pure-Python wheel, unpacked: what pip installs
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    probe = (
        "import legato.shipped as s, legato.cli\n"
        "print(legato.cli.__file__)\n"
        "print(s.default_model()); print(s.baseline_model()); print(s.held_out_frames()); print(s.template('nh3_solid_trpmd.xml'))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=elsewhere, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    paths = [Path(line) for line in result.stdout.split()]
    assert all(p.is_file() and site in p.parents for p in paths), paths
    run_help = subprocess.run([sys.executable, "-m", "legato.cli", "run", "--help"], capture_output=True, text=True, cwd=elsewhere, env=env, timeout=120)
    assert run_help.returncode == 0 and "Usage" in run_help.stdout
