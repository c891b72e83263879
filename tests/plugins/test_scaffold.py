"""``selfdev plugins new KIND NAME``: the package it writes, its refusals, and (in a fresh
environment) that each kind's generated test passes after ``pip install -e``."""
from __future__ import annotations

import ast
import json
import sys
import tomllib

import pytest
from click.testing import CliRunner

from plugin_venv import make_plugin_venv
from selfdev.engine.cli import cli
from selfdev.plugins.commands.scaffold import KINDS, render

#: what a generated module may import: the door, and libraries selfdev already depends on
ALLOWED_IMPORTS = {"selfdev", "click", "pydantic", "torch"}


def new(*args: str):
    return CliRunner().invoke(cli, ["plugins", "new", *args])


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_renders_an_installable_package(kind):
    files = render(kind, "my-thing")
    assert set(files) == {"pyproject.toml", "README.md", "selfdev_my_thing.py",
                          "tests/test_selfdev_my_thing.py"}
    project = tomllib.loads(files["pyproject.toml"])
    assert project["project"]["name"] == "selfdev-my-thing"
    assert project["project"]["entry-points"]["selfdev"] == {"my-thing": "selfdev_my_thing"}
    assert project["tool"]["setuptools"]["py-modules"] == ["selfdev_my_thing"]
    assert any(dep.startswith("selfdev>=") for dep in project["project"]["dependencies"])

    module = ast.parse(files["selfdev_my_thing.py"])
    imported = {alias.name.split(".")[0] for node in ast.walk(module)
                if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(module)
                 if isinstance(node, ast.ImportFrom)}
    assert imported - set(sys.stdlib_module_names) <= ALLOWED_IMPORTS, imported
    hooks = [f.name for f in module.body if isinstance(f, ast.FunctionDef)
             and any(ast.unparse(d) == "selfdev.hookimpl" for d in f.decorator_list)]
    assert len(hooks) == 1, hooks
    assert '"my-thing"' in files["selfdev_my_thing.py"] or kind in ("listener", "command")

    test = ast.parse(files["tests/test_selfdev_my_thing.py"])
    fixtures = {a.arg for f in ast.walk(test) if isinstance(f, ast.FunctionDef)
                and f.name.startswith("test_") for a in f.args.args}
    assert fixtures and all(f.startswith("selfdev_") for f in fixtures), fixtures


def test_the_description_is_one_line_of_valid_toml():
    files = render("listener", "tally", 'Counts "events"\\ by\n type')
    assert tomllib.loads(files["pyproject.toml"])["project"]["description"] == 'Counts "events"\\ by type'
    assert 'Counts "events"\\ by type' in files["README.md"]


def test_new_writes_the_package_and_says_what_is_next(tmp_path):
    result = new("optimizer", "selfdev-shuffle", "--dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    target = tmp_path / "selfdev-shuffle"  # a selfdev- prefix given in NAME is not doubled
    assert sorted(str(p.relative_to(target)) for p in target.rglob("*") if p.is_file()) == [
        "README.md", "pyproject.toml", "selfdev_shuffle.py", "tests/test_selfdev_shuffle.py"]
    assert "class ShuffleOptimizer(selfdev.Optimizer)" in (target / "selfdev_shuffle.py").read_text()
    assert "selfdev install -e" in result.output.splitlines()[-1]


@pytest.mark.parametrize("args, message", [
    (["widget", "x"], "error: unknown plugin kind 'widget'; allowed: generator, domain, "
                      "evaluator, optimizer, executor, listener, command"),
    (["generator", "My Thing"], "error: plugin name 'My Thing' is not allowed; use lowercase"),
    (["generator", "2fast"], "error: plugin name '2fast' is not allowed"),
    (["generator", "x--y"], "error: plugin name 'x--y' is not allowed"),
])
def test_bad_kind_or_name_is_one_line_and_exit_2(tmp_path, args, message):
    result = new(*args, "--dir", str(tmp_path))
    assert result.exit_code == 2
    assert len(result.output.splitlines()) == 1 and result.output.startswith(message)
    assert list(tmp_path.iterdir()) == []


def test_an_existing_package_is_never_overwritten(tmp_path):
    assert new("listener", "tally", "--dir", str(tmp_path)).exit_code == 0
    module = tmp_path / "selfdev-tally" / "selfdev_tally.py"
    module.write_text("# my work\n")
    result = new("generator", "tally", "--dir", str(tmp_path))
    assert result.exit_code == 2 and "already exists and is not empty" in result.output
    assert module.read_text() == "# my work\n"


def test_plugins_still_lists_when_called_bare():
    result = CliRunner().invoke(cli, ["plugins", "--json"])
    assert result.exit_code == 0
    names = {row["name"] for row in json.loads(result.output)}
    assert {"selfdev.plugins.commands.scaffold", "selfdev.plugins.commands.install"} <= names
    assert "new" in CliRunner().invoke(cli, ["plugins", "--help"]).output


@pytest.mark.slow
def test_every_kind_installs_and_its_generated_test_passes(tmp_path):
    """One package per kind, ``pip install -e`` of each into a fresh environment, then their
    generated tests in one pytest run there (the fixtures come from selfdev's pytest11 entry
    point; the plugins from their own entry points)."""
    packages = tmp_path / "packages"
    for kind in KINDS:
        assert new(kind, f"my-{kind}", "--dir", str(packages)).exit_code == 0
    venv = make_plugin_venv(tmp_path / "venv")
    editable = [arg for kind in KINDS for arg in ("-e", str(packages / f"selfdev-my-{kind}"))]
    venv.pip_install(*editable, cwd=tmp_path)

    listed = venv.selfdev("plugins", "--json", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    rows = {row["name"]: row for row in json.loads(listed.stdout)}
    for kind in KINDS:
        row = rows[f"my-{kind}"]
        assert (row["distribution"], row["version"]) == (f"selfdev-my-{kind}", "0.1.0")
        if kind not in ("listener", "command"):
            assert row["components"] == {kind: [f"my-{kind}"]}
    assert rows["my-listener"]["hooks"] == ["on_event"]
    assert rows["my-command"]["hooks"] == ["register_commands"]

    tests = [str(packages / f"selfdev-my-{kind}" / "tests") for kind in KINDS]
    done = venv.run("-m", "pytest", "-q", "-p", "no:cacheprovider", *tests, cwd=tmp_path,
                    timeout=600)
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-2000:]
    assert f"{len(KINDS) + 1} passed" in done.stdout  # the evaluator's template has two tests
