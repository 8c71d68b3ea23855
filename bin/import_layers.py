"""Lay legato's sources out as installed, then check pyproject.toml's import contracts there.

import-linter finds a package's modules by walking the package's folder, but
legato.training, legato.driver and legato.analysis live in the top-level folders
training/, driver/ and analysis/ ([tool.setuptools.package-dir] in pyproject.toml), so a
bare `lint-imports` in the repository sees legato/ alone. Here the .py files are copied
into ``<tmp>/legato/...`` as pyproject.toml maps them, and lint-imports runs there with
the repository's pyproject.toml. Usage: bin/lint-imports [lint-imports options].
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: tomllib's predecessor, a dependency of pytest there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent


def package_folders(root: Path = ROOT) -> dict[str, Path]:
    """{package name: its folder in the repository}, as pyproject.toml maps them."""
    setuptools = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = setuptools.get("package-dir", {})
    return {name: root / folders.get(name, name.replace(".", "/")) for name in setuptools["packages"]}


def lay_out(dest: Path, root: Path = ROOT) -> Path:
    """Copy each package's .py files to ``dest/<package path>`` (the installed layout); returns ``dest``."""
    for name, folder in package_folders(root).items():
        target = Path(dest).joinpath(*name.split("."))
        target.mkdir(parents=True, exist_ok=True)
        for source in folder.glob("*.py"):
            shutil.copy2(source, target / source.name)
    return Path(dest)


def lint_imports(tree: Path, args=(), root: Path = ROOT) -> subprocess.CompletedProcess:
    """lint-imports with ``root``'s pyproject.toml on the laid-out ``tree`` (its first entry on sys.path)."""
    command = [str(Path(sys.executable).parent / "lint-imports"), str(root / "pyproject.toml"), "--no-cache", *args]
    return subprocess.run(command, cwd=tree, capture_output=True, text=True)


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="legato-layers-") as tmp:
        result = lint_imports(lay_out(Path(tmp)), sys.argv[1:])
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
