"""Broken third-party plugins, installed for real (a module plus a ``.dist-info`` with an
entry point on ``PYTHONPATH``, which is what pip leaves behind), must not take the CLI down:
each is named in one line on stderr and the others go on. ``SELFDEV_LOAD_PLUGINS`` takes
distribution and entry-point names and refuses one that is not installed. Every check runs
``selfdev`` in a subprocess, as a user meets it."""
import json
import os
import re
import subprocess
import sys
import textwrap

import pytest

GOOD = '''
import selfdev

class Shuffle(selfdev.Optimizer):
    name = "example-shuffle"

@selfdev.hookimpl
def register_optimizers(register):
    register(Shuffle)
'''

PLUGINS = {
    # entry point: (distribution, module source)
    "example": ("selfdev-example", GOOD),
    "broken": ("selfdev-broken", "import selfdev\nimport no_such_module_anywhere\n"),
    "wrongargs": ("selfdev-wrongargs", '''
import selfdev

@selfdev.hookimpl
def register_optimizers(registr):
    pass
'''),
    "typo": ("selfdev-typo", '''
import selfdev

class Typo(selfdev.Evaluator):
    name = "typo-eval"

@selfdev.hookimpl
def register_evaluatorz(register):
    register(Typo)

@selfdev.hookimpl
def register_evaluators(register):
    register(Typo)
'''),
    "raises": ("selfdev-raises", '''
import selfdev

@selfdev.hookimpl
def register_generators(register):
    raise RuntimeError("cannot reach the model server")

@selfdev.hookimpl
def register_commands(cli):
    raise RuntimeError("commands broke")
'''),
}


def install(site, entry_point, dist, source):
    module = f"selfdev_{entry_point}"
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[selfdev]\n{entry_point} = {module}\n")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    site = tmp_path_factory.mktemp("site")
    for entry_point, (dist, source) in PLUGINS.items():
        install(site, entry_point, dist, source)
    return site


@pytest.fixture(scope="module")
def good_site(tmp_path_factory):
    site = tmp_path_factory.mktemp("good")
    install(site, "example", "selfdev-example", GOOD)
    return site


def selfdev(site, *args, allow=None, debug=None):
    env = dict(os.environ, PYTHONPATH=str(site))
    env.pop("SELFDEV_LOAD_PLUGINS", None)
    env.pop("SELFDEV_DEBUG", None)
    if allow is not None:
        env["SELFDEV_LOAD_PLUGINS"] = allow
    if debug is not None:
        env["SELFDEV_DEBUG"] = debug
    return subprocess.run([sys.executable, "-m", "selfdev.engine", *args], env=env,
                          capture_output=True, text=True, timeout=120)


def warnings_of(stderr):
    return [line for line in stderr.splitlines() if line.startswith("warning: ")]


@pytest.fixture(scope="module")
def listed(site):
    """``selfdev plugins --json`` with every broken plugin installed."""
    return selfdev(site, "plugins", "--json")


def test_help_works_and_names_each_broken_plugin_in_one_line(site):
    out = selfdev(site, "--help")
    assert out.returncode == 0, out.stderr
    assert "Commands:" in out.stdout
    lines = warnings_of(out.stderr)
    assert "Traceback" not in out.stderr
    assert out.stderr.splitlines() == lines, "only one-line warnings on stderr"
    broken = [line for line in lines if "'broken'" in line]
    assert len(broken) == 1
    assert "selfdev-broken 0.1" in broken[0] and "failed to import" in broken[0]
    assert "No module named 'no_such_module_anywhere'" in broken[0]
    assert "--debug shows the traceback" in broken[0]
    wrong = [line for line in lines if "'wrongargs'" in line]
    assert len(wrong) == 1 and "register_optimizers(registr)" in wrong[0]
    assert "does not match selfdev's hooks" in wrong[0]
    commands = [line for line in lines if "register_commands" in line]
    assert len(commands) == 1 and "'raises'" in commands[0] and "commands broke" in commands[0]


def test_the_other_plugins_go_on(listed):
    assert listed.returncode == 0, listed.stderr
    info = {p["name"]: p for p in json.loads(listed.stdout)}
    assert info["example"]["components"] == {"optimizer": ["example-shuffle"]}
    assert info["example"]["distribution"] == "selfdev-example"
    assert "broken" not in info and "wrongargs" not in info
    assert info["typo"]["components"] == {"evaluator": ["typo-eval"]}
    assert "generator" not in info["raises"]["components"]
    assert "selfdev.plugins.optimizers.none" in info


def test_a_misspelled_hook_is_named_with_the_closest_hook(listed):
    typo = [line for line in warnings_of(listed.stderr) if "register_evaluatorz" in line]
    assert len(typo) == 1, listed.stderr
    assert "plugin 'typo'" in typo[0] and "never called" in typo[0]
    assert "did you mean 'register_evaluators'?" in typo[0]


def test_a_raising_register_hook_is_named_once(listed):
    raised = [line for line in warnings_of(listed.stderr) if "register_generators" in line]
    assert len(raised) == 1, listed.stderr
    assert "plugin 'raises'" in raised[0] and "cannot reach the model server" in raised[0]


@pytest.mark.parametrize("how", ["flag", "env"])
def test_debug_prints_the_tracebacks(site, how):
    out = (selfdev(site, "--debug", "--help") if how == "flag"
           else selfdev(site, "--help", debug="1"))
    assert out.returncode == 0, out.stderr
    assert "Traceback (most recent call last)" in out.stderr
    assert "selfdev_broken.py" in out.stderr and "ModuleNotFoundError" in out.stderr
    assert 'selfdev_raises.py", line 10, in register_commands' in out.stderr
    if how == "env":  # known before loading: each traceback follows its line
        assert "--debug shows the traceback" not in out.stderr
    else:  # --debug is parsed after plugins loaded: the tracebacks follow the lines
        assert "traceback of: plugin 'broken' (selfdev-broken 0.1) failed" in out.stderr


@pytest.mark.parametrize("allow", ["example", "selfdev-example", "Selfdev_Example",
                                   " example , selfdev-broken"])
def test_allow_list_takes_entry_point_and_distribution_names(site, allow):
    out = selfdev(site, "plugins", "--json", allow=allow)
    assert out.returncode == 0, out.stderr
    names = {p["name"] for p in json.loads(out.stdout)}
    assert "example" in names
    assert not names & {"typo", "raises", "wrongargs"}
    assert ("broken" in out.stderr) == ("broken" in allow)


def test_allow_list_empty_loads_none(good_site):
    out = selfdev(good_site, "plugins", "--json", allow="")
    assert out.returncode == 0, out.stderr
    assert "example" not in {p["name"] for p in json.loads(out.stdout)}


def test_an_unknown_name_is_refused_in_one_line(good_site):
    out = selfdev(good_site, "plugins", allow="example,selfdev-exampel")
    assert out.returncode == 2
    assert out.stdout == ""
    assert out.stderr.splitlines() == [
        "error: SELFDEV_LOAD_PLUGINS names 'selfdev-exampel', which is not an installed plugin; "
        "installed: selfdev-example (entry point example) (give distribution or entry-point "
        "names, or an empty value for none)"]
    assert selfdev(good_site, "--help", allow="nope").returncode == 0  # help still works


FAILING = '''
import selfdev


def download(url):
    raise ValueError(f"no route to {url}")


class Failing(selfdev.Domain):
    name = "failing"

    def prepare(self):
        return download("models.example")


@selfdev.hookimpl
def register_domains(register):
    register(Failing)
'''

CONFIG = '''
[run]
iterations = 1
candidates = 2
[domain]
name = "failing"
'''


def test_a_failing_plugin_stops_the_run_in_one_line_and_debug_shows_where(tmp_path):
    install(tmp_path, "failing", "selfdev-failing", FAILING)
    (tmp_path / "run.toml").write_text(CONFIG)
    db = str(tmp_path / "runs.db")
    plain = selfdev(tmp_path, "run", str(tmp_path / "run.toml"), "--db", db, "--quiet")
    assert plain.returncode == 2
    (line,) = plain.stderr.splitlines()[-1:]
    assert re.fullmatch(r"error: run (run-[\w-]+) failed in plugin 'failing': ValueError: no route "
                        r"to models.example; fix it and `selfdev resume \1` \(--debug shows the traceback\)", line)
    assert "Traceback" not in plain.stderr
    debug = selfdev(tmp_path, "--debug", "run", str(tmp_path / "run.toml"), "--db", db, "--quiet")
    assert debug.returncode == 2
    assert "Traceback (most recent call last)" in debug.stderr
    assert 'selfdev_failing.py", line 13, in prepare' in debug.stderr
    assert 'selfdev_failing.py", line 6, in download' in debug.stderr
    assert debug.stderr.splitlines()[-1].startswith("error: run run-")
