"""Third-party plugins arrive through the ``selfdev`` entry-point group; SELFDEV_LOAD_PLUGINS
is an allow-list of distributions (empty = none). Exercised in real subprocesses."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

PLUGIN = textwrap.dedent('''
    from selfdev.engine import hookimpl
    from selfdev.engine.api import Optimizer

    class Shuffle(Optimizer):
        name = "example-shuffle"

    @hookimpl
    def register_optimizers(register):
        register(Shuffle)
''')


@pytest.fixture
def site(tmp_path):
    (tmp_path / "selfdev_example.py").write_text(PLUGIN)
    info = tmp_path / "selfdev_example-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: selfdev-example\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[selfdev]\nexample = selfdev_example\n")
    return tmp_path


def plugins_json(site, allow):
    env = dict(os.environ, PYTHONPATH=str(site))
    env.pop("SELFDEV_LOAD_PLUGINS", None)
    if allow is not None:
        env["SELFDEV_LOAD_PLUGINS"] = allow
    out = subprocess.run([sys.executable, "-m", "selfdev.engine", "plugins", "--json"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return {p["name"]: p for p in json.loads(out.stdout)}


def test_entry_point_plugin_is_loaded_and_stamped(site):
    info = plugins_json(site, None)
    assert info["example"]["components"] == {"optimizer": ["example-shuffle"]}
    assert info["example"]["distribution"] == "selfdev-example"


def test_allow_list(site):
    assert "example" in plugins_json(site, "selfdev-example")
    assert "example" not in plugins_json(site, "")
    # entry-point names, unknown names and broken plugins: test_plugin_loading.py
