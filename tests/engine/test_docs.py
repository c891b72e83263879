"""The docs cover the contracts, as datasette's test_docs does: every hook, every event type,
and the plugin guides' code imports only the public door (signatures, fields and hook tests:
test_hooks_meta.py)."""
import ast
import re
from pathlib import Path

import pytest

import selfdev
from selfdev.engine import hookspecs
from selfdev.engine.events import EVENT_TYPES

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _hook_names() -> list[str]:
    return sorted(name for name in dir(hookspecs)
                  if hasattr(getattr(hookspecs, name), "selfdev_spec"))


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, re.S)


def test_every_event_type_is_documented():
    text = (DOCS / "events.md").read_text()
    missing = [t for t in EVENT_TYPES if f"`{t}`" not in text]
    assert not missing, missing


def test_every_hook_is_documented():
    hooks = _hook_names()
    assert {"register_generators", "on_event", "register_commands"} <= set(hooks)
    text = (DOCS / "plugins.md").read_text()
    missing = [h for h in hooks if f"`{h}(" not in text]
    assert not missing, missing


@pytest.mark.parametrize("page", ["plugins.md", "writing-plugins.md", "plugin-hooks.md"])
def test_plugin_guide_imports_only_the_public_door(page):
    blocks = _python_blocks((DOCS / page).read_text())
    assert blocks, f"docs/{page} has no python example"
    imports = []
    for block in blocks:
        for node in ast.walk(ast.parse(block)):
            if isinstance(node, ast.Import):
                imports += [(a.name, None) for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                imports += [(node.module, a.name) for a in node.names]
    ours = [(m, n) for m, n in imports if m == "selfdev" or m.startswith("selfdev.")]
    assert ours, "the guide's examples should import selfdev"
    deeper = [m for m, _ in ours if m != "selfdev"]
    assert not deeper, f"the guide imports past the door: {deeper}"
    for _, name in ours:
        if name is not None:
            assert hasattr(selfdev, name), f"selfdev has no {name!r}"


def test_door_names_are_documented_and_resolve():
    text = (DOCS / "plugins.md").read_text()
    undocumented = [n for n in selfdev.__all__ if f"`{n}`" not in text]
    assert not undocumented, undocumented
    for name in selfdev.__all__:
        assert getattr(selfdev, name) is not None, name


def test_options_example_gives_the_documented_errors():
    """The guide's Options example, run: each documented error line is what the engine says."""
    section = (DOCS / "plugins.md").read_text().split("## Options", 1)[1].split("\n## ", 1)[0]
    namespace: dict = {}
    exec(compile(_python_blocks(section)[0], "docs/plugins.md", "exec"), namespace)
    shown = re.search(r"```\n(config: .*?)```", section, re.S).group(1).strip().splitlines()
    shuffle = namespace["Shuffle"]
    said = []
    for options in ({"model": "m", "epoch": 1}, {"model": "m", "lr": "fast"},
                    {"model": "m", "mode": "all"}, {}, {"model": "m", "weights": [1.0, 2.0]}):
        try:
            shuffle(None, **options)
        except selfdev.ConfigError as exc:
            said.append(str(exc))
    assert said == shown
    assert shuffle(None, model="m", epochs=2, weights=[1, 1]).options.weights == [1.0, 1.0]
