"""Imports go one way (pyproject.toml [tool.importlinter]): the CLI over the stages
training, driver and analysis, which never import each other, over the core (legato/)."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _import_layers():
    spec = importlib.util.spec_from_file_location("import_layers", REPO / "bin/import_layers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_import_layers_hold():
    """What bin/lint-imports runs (without its set-up step)."""
    result = subprocess.run([sys.executable, str(REPO / "bin/import_layers.py"), "--no-logo"], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(
    "module, source, message",
    [
        ("driver/_probe.py", "def late():\n    from legato.analysis.nqe import match_peaks\n", "legato.driver is not allowed to import legato.analysis"),
        ("analysis/_probe.py", "from legato.training import structures\n", "legato.analysis is not allowed to import legato.training"),
        ("training/_probe.py", "import legato.driver.run\n", "legato.training is not allowed to import legato.driver"),
        ("potential_probe.py", "import legato.units\n", "potential_probe"),  # a core module not placed in a layer
        ("_probe.py", "", "_probe"),
    ],
)
def test_a_forbidden_import_breaks_the_contract(tmp_path, module, source, message):
    """A stage importing another (also inside a function), the core importing a stage,
    or a module under legato/ that no layer names, each fails lint-imports."""
    layers = _import_layers()
    tree = layers.lay_out(tmp_path)
    (tree / "legato" / module).write_text(source)
    result = layers.lint_imports(tree, ["--no-logo"])
    assert result.returncode != 0 and "0 kept, 1 broken" in result.stdout and message in result.stdout, result.stdout + result.stderr


def test_the_core_may_not_import_a_stage(tmp_path):
    layers = _import_layers()
    tree = layers.lay_out(tmp_path)
    with open(tree / "legato/geometry.py", "a") as f:
        f.write("\n\ndef late():\n    from legato.training import merge\n")
    result = layers.lint_imports(tree, ["--no-logo"])
    assert result.returncode != 0 and "legato.geometry -> legato.training.merge" in result.stdout, result.stdout
