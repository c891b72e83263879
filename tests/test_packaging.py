"""The distribution installs one package, ``selfdev``, and nothing generic beside it.

A wheel is built from a copy of the checkout, installed into a fresh virtual environment (its
dependencies borrowed from the test's own environment through a ``.pth`` line, so nothing is
downloaded), and run from a directory that has its own ``plugins/`` and ``engine/`` packages:
every built-in must still be listed, and those folders must not be imported.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from plugin_venv import make_plugin_venv

ROOT = Path(__file__).resolve().parents[1]
GENERIC = {"engine", "plugins", "store", "sandbox", "tui"}


def _default_plugins() -> tuple[str, ...]:
    from selfdev.engine.plugins import DEFAULT_PLUGINS

    return DEFAULT_PLUGINS


def _decoy(where: Path) -> Path:
    """A project folder with packages named like ours that explode when imported."""
    for name in ("plugins", "engine"):
        pkg = where / name
        pkg.mkdir(parents=True)
        (pkg / "__init__.py").write_text(f"raise ImportError('the decoy {name} package was imported')\n")
    return where


def _plugin_names(argv: list[str], cwd: Path) -> set[str]:
    done = subprocess.run([*argv, "plugins", "--json"], cwd=cwd, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return {row["name"] for row in json.loads(done.stdout)}


def test_pyproject_lists_every_package_folder():
    """setuptools maps each listed package to a folder; a folder left out would be missing from
    the wheel while the editable install still finds it."""
    conf = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapping = conf["package-dir"]
    listed = set(conf["packages"])
    found = set()
    for package, folder in mapping.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            found.add(".".join([package, *rel.parts]))
    assert found == listed, (sorted(found - listed), sorted(listed - found))


def test_the_editable_install_ignores_the_working_directory(tmp_path):
    cwd = _decoy(tmp_path / "project")
    names = _plugin_names([sys.executable, "-m", "selfdev.engine"], cwd)
    assert set(_default_plugins()) <= names


@pytest.mark.slow
def test_wheel_installs_selfdev_only_and_lists_every_builtin(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".venv", ".git", "__pycache__", "build", "dist", "*.egg-info", ".pytest_cache"))
    wheels = tmp_path / "wheels"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                            "--no-build-isolation", "-w", str(wheels), str(src)],
                           capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = wheels.glob("selfdev-*.whl")

    venv = make_plugin_venv(tmp_path / "venv", lend_selfdev=False)
    venv.pip_install(str(wheel), cwd=tmp_path)
    purelib = venv.purelib

    tops = {p.name for p in purelib.iterdir()}
    assert "selfdev" in tops
    assert not (tops & GENERIC), sorted(tops & GENERIC)
    record = next(purelib.glob("selfdev-*.dist-info")) / "RECORD"
    installed_tops = {line.split("/", 1)[0] for line in record.read_text().splitlines()}
    assert installed_tops <= {"selfdev", record.parent.name, "..", venv.root.name}, installed_tops

    cwd = _decoy(tmp_path / "project")
    where = venv.run("-c", "import selfdev, selfdev.engine; print(selfdev.__file__); "
                     "print(selfdev.engine.__file__); print(selfdev.__version__)", cwd=cwd)
    assert where.returncode == 0, where.stderr
    door, engine, version = where.stdout.split()
    assert Path(door).is_relative_to(purelib) and Path(engine).is_relative_to(purelib)
    from importlib.metadata import version as dist_version

    assert version == dist_version("selfdev")

    names = _plugin_names([str(venv.root / "bin" / "selfdev")], cwd)
    assert set(_default_plugins()) <= names
