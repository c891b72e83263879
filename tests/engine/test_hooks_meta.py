"""Meta-tests, as datasette's: the hooks and events the code has are the ones the docs
describe, with the same signatures and fields, and every hook has a test.

- every hookspec has a section in docs/plugin-hooks.md headed by its exact signature, and
  the documented arguments are those of ``inspect.signature`` of the hookspec;
- every hook has a ``test_hook_<name>`` test somewhere under tests/;
- every event type has a section in docs/events.md with its ``VERSION`` and a table of exactly
  its dataclass fields (names, order, types); the event object a listener receives
  (``StoredEvent``) is documented field for field in both pages.

The checks are functions, and the last tests feed them a hook or an event the docs do not
have, to show that they fail then.
"""
import dataclasses
import inspect
import re
import textwrap
import types
from pathlib import Path
from typing import Any

import pluggy
import pytest

from selfdev.engine import events as ev
from selfdev.engine import hookspecs
from selfdev.engine.plugins import pm
from selfdev.store import StoredEvent

ROOT = Path(__file__).resolve().parents[2]
HOOKS_DOC = ROOT / "docs" / "plugin-hooks.md"
EVENTS_DOC = ROOT / "docs" / "events.md"


# ---- the checks ------------------------------------------------------------------------------


def spec_signatures(manager: pluggy.PluginManager) -> dict[str, list[str]]:
    """hook name -> its arguments, from the hookspec functions themselves."""
    return {name: list(inspect.signature(caller.spec.function).parameters)
            for name, caller in vars(manager.hook).items()
            if not name.startswith("_") and caller.has_spec()}


def documented_hooks(text: str) -> dict[str, list[str]]:
    """hook name -> arguments, from the ``## `name(a, b)` `` headings."""
    return {m.group(1): [a.strip() for a in m.group(2).split(",") if a.strip()]
            for m in re.finditer(r"^## `(\w+)\(([^)]*)\)`$", text, re.M)}


def hooks_having_tests(root: Path) -> set[str]:
    """Names ``x`` of every ``def test_hook_x`` under ``root``."""
    found: set[str] = set()
    for path in root.rglob("test_*.py"):
        found |= set(re.findall(r"^\s*(?:async\s+)?def test_hook_(\w+)\(", path.read_text(), re.M))
    return found


def hook_problems(specs: dict[str, list[str]], text: str, tested: set[str]) -> list[str]:
    problems = []
    documented = documented_hooks(text)
    for name, params in sorted(specs.items()):
        signature = f"{name}({', '.join(params)})"
        if name not in documented:
            problems.append(f"{signature} has no section in docs/plugin-hooks.md")
        elif documented[name] != params:
            problems.append(f"docs/plugin-hooks.md documents {name}({', '.join(documented[name])}) "
                            f"but the hookspec is {signature}")
        if not any(t == name or t.startswith(name + "_") for t in tested):
            problems.append(f"{name} has no test_hook_{name} test under tests/")
    problems += [f"docs/plugin-hooks.md documents {name}, which is no hook"
                 for name in sorted(set(documented) - set(specs))]
    return problems


def field_table(section: str) -> list[tuple[str, str]]:
    """``(name, type)`` rows of a markdown table whose first two cells are code."""
    return [(name, type_.replace("\\|", "|"))
            for name, type_ in re.findall(r"^\| `(\w+)` \| `((?:[^`])*)` \|", section, re.M)]


def documented_events(text: str) -> dict[str, tuple[int, list[tuple[str, str]]]]:
    """event type -> (version, fields) from ``## `type` (version N)`` sections."""
    out = {}
    for section in re.split(r"^## ", text, flags=re.M):
        m = re.match(r"`([a-z_]+\.[a-z_]+)` \(version (\d+)\)\n", section)
        if m:
            out[m.group(1)] = (int(m.group(2)), field_table(section))
    return out


def fields_of(cls: type) -> list[tuple[str, str]]:
    return [(f.name, str(f.type)) for f in dataclasses.fields(cls)]


def event_problems(types: dict[str, type], text: str) -> list[str]:
    problems = []
    documented = documented_events(text)
    for type_, cls in sorted(types.items()):
        if type_ not in documented:
            problems.append(f"{type_} has no section in docs/events.md")
            continue
        version, fields = documented[type_]
        if version != cls.VERSION:
            problems.append(f"docs/events.md gives {type_} version {version}, the code {cls.VERSION}")
        if fields != fields_of(cls):
            problems.append(f"docs/events.md lists {type_} fields {fields}, the code has {fields_of(cls)}")
    problems += [f"docs/events.md documents {t}, which is no event type"
                 for t in sorted(set(documented) - set(types))]
    return problems


# ---- the meta-tests --------------------------------------------------------------------------


def test_every_hook_is_documented_with_its_signature_and_tested():
    specs = spec_signatures(pm)
    assert {"register_generators", "on_event", "register_commands", "console_display"} <= set(specs)
    assert hook_problems(specs, HOOKS_DOC.read_text(), hooks_having_tests(ROOT / "tests")) == []


def test_every_event_type_is_documented_with_its_version_and_fields():
    assert {"run.started", "run.failed", "listener.failed"} <= set(ev.EVENT_TYPES)
    assert event_problems(ev.EVENT_TYPES, EVENTS_DOC.read_text()) == []


@pytest.mark.parametrize("doc, heading", [(HOOKS_DOC, "## `on_event(event)`"),
                                          (EVENTS_DOC, "## The envelope")])
def test_the_event_a_listener_gets_is_documented_exactly(doc, heading):
    section = doc.read_text().split(heading, 1)[1].split("\n## ", 1)[0]
    assert field_table(section) == fields_of(StoredEvent)


def test_hookspec_annotation_of_on_event_is_the_stored_event():
    assert inspect.signature(hookspecs.on_event).parameters["event"].annotation == "StoredEvent"


# ---- and they fail when the docs fall behind ---------------------------------------------------


def spec_module(source: str) -> types.ModuleType:
    """Hookspecs written as someone would add them to engine/hookspecs.py."""
    module = types.ModuleType("more_hookspecs")
    exec("from selfdev.engine.hookspecs import hookspec\n" + textwrap.dedent(source), module.__dict__)
    return module


#: a hook someone adds without docs or a test
ADDED = spec_module('''
    @hookspec
    def register_widgets(register):
        """Register widgets."""
''')

#: on_event grown an argument the docs do not show
CHANGED = spec_module('''
    @hookspec
    def on_event(event, state):
        """Called with the event and the folded state."""
''')


def test_a_hook_added_without_docs_or_test_fails():
    manager = pluggy.PluginManager("selfdev")
    manager.add_hookspecs(hookspecs)
    manager.add_hookspecs(ADDED)
    problems = hook_problems(spec_signatures(manager), HOOKS_DOC.read_text(), hooks_having_tests(ROOT / "tests"))
    assert problems == ["register_widgets(register) has no section in docs/plugin-hooks.md",
                        "register_widgets has no test_hook_register_widgets test under tests/"]


def test_a_changed_hook_signature_fails():
    changed = pluggy.PluginManager("selfdev")
    changed.add_hookspecs(CHANGED)
    specs = {**spec_signatures(pm), **spec_signatures(changed)}
    problems = hook_problems(specs, HOOKS_DOC.read_text(), hooks_having_tests(ROOT / "tests"))
    assert problems == ["docs/plugin-hooks.md documents on_event(event) but the hookspec is "
                        "on_event(event, state)"]


def test_a_hook_without_a_test_fails():
    tested = hooks_having_tests(ROOT / "tests") - {"on_event"}
    assert hook_problems(spec_signatures(pm), HOOKS_DOC.read_text(), tested) == [
        "on_event has no test_hook_on_event test under tests/"]


def test_an_event_added_or_changed_without_docs_fails():
    @dataclasses.dataclass
    class WidgetBuilt(ev.Event):  # no TYPE at class creation: not added to EVENT_TYPES
        widget: str = ""

    WidgetBuilt.TYPE = "widget.built"
    grown = dataclasses.make_dataclass(
        "RunFailed", [("hostname", "str", dataclasses.field(default=""))], bases=(ev.RunFailed,))
    grown.VERSION = 3
    types: dict[str, Any] = {**ev.EVENT_TYPES, "widget.built": WidgetBuilt, "run.failed": grown}
    assert "widget.built" not in ev.EVENT_TYPES
    problems = event_problems(types, EVENTS_DOC.read_text())
    assert problems == [
        "docs/events.md gives run.failed version 2, the code 3",
        f"docs/events.md lists run.failed fields {fields_of(ev.RunFailed)}, the code has "
        f"{fields_of(ev.RunFailed) + [('hostname', 'str')]}",
        "widget.built has no section in docs/events.md"]
