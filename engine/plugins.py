"""The plugin manager, component registries and plugin loading.

The built-in plugins are the modules named in :data:`DEFAULT_PLUGINS`, as in llm's and
datasette's ``plugins.py``: they register through the same hooks as third-party plugins
(entry-point group ``selfdev``), and this list is the only way the engine reaches them (or the
TUI command, or the console display). ``SELFDEV_LOAD_PLUGINS`` is a comma-separated allow-list
of third-party distributions to load (an empty value loads none); built-ins are always loaded.
"""
from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass
from typing import Any

import pluggy

from selfdev.engine import hookspecs
from selfdev.engine.api import KINDS, Component, ConfigError

pm = pluggy.PluginManager("selfdev")
pm.add_hookspecs(hookspecs)

_loaded = False

#: hook name -> component kind
HOOKS = {
    "register_generators": "generator",
    "register_domains": "domain",
    "register_evaluators": "evaluator",
    "register_optimizers": "optimizer",
    "register_executors": "executor",
}


#: Every built-in plugin module, registered under its dotted name. Each is cheap to import
#: (heavy libraries load inside the components that use them).
DEFAULT_PLUGINS: tuple[str, ...] = (
    "selfdev.plugins.generators.grammar",
    "selfdev.plugins.generators.hf",
    "selfdev.plugins.generators.openai",
    "selfdev.plugins.generators.replay",
    "selfdev.plugins.generators.tiny",
    "selfdev.plugins.generators.vllm",
    "selfdev.plugins.domains.digits",
    "selfdev.plugins.domains.lm.domain",
    "selfdev.plugins.domains.toymath.domain",
    "selfdev.plugins.evaluators.accuracy",
    "selfdev.plugins.evaluators.gsm8k",
    "selfdev.plugins.evaluators.toymath",
    "selfdev.plugins.optimizers.dpo",
    "selfdev.plugins.optimizers.none",
    "selfdev.plugins.optimizers.sft",
    "selfdev.plugins.executors.local",
    "selfdev.plugins.listeners.console",
    "selfdev.plugins.commands.apply",
    "selfdev.plugins.commands.factory_stats",
    "selfdev.plugins.commands.prompt",
    "selfdev.tui.cli",
)


def load_plugins() -> None:
    """Register built-ins, then third-party entry points (idempotent)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for name in DEFAULT_PLUGINS:
        if pm.get_plugin(name) is None:
            pm.register(importlib.import_module(name), name=name)
    allow = os.environ.get("SELFDEV_LOAD_PLUGINS")
    if getattr(sys, "_called_from_test", False) and allow is None:
        return
    if allow is None:
        pm.load_setuptools_entrypoints("selfdev")
        return
    wanted = {p.strip() for p in allow.split(",") if p.strip()}
    if not wanted:
        return
    from importlib.metadata import distributions

    for dist in distributions():
        dist_name = dist.metadata["Name"]
        if dist_name not in wanted:
            continue
        for ep in dist.entry_points:
            if ep.group == "selfdev" and pm.get_plugin(ep.name) is None:
                pm.register(ep.load(), name=ep.name)


def plugin_name(plugin: Any) -> str:
    """The name a plugin was registered under (a module path or an entry-point name)."""
    return pm.get_name(plugin) or getattr(plugin, "__name__", repr(plugin))


@dataclass
class Registry:
    """Components of every kind, each stamped with the plugin that registered it."""

    components: dict[str, dict[str, type[Component]]]

    def get(self, kind: str, name: str) -> type[Component]:
        found = self.components.get(kind, {})
        if name not in found:
            allowed = ", ".join(sorted(found)) or "(none)"
            raise ConfigError(f"unknown {kind} {name!r}; allowed: {allowed}")
        return found[name]

    def names(self, kind: str) -> list[str]:
        return sorted(self.components.get(kind, {}))


def get_registry() -> Registry:
    """Call every ``register_*`` hook, plugin by plugin, so each component records its plugin.

    A duplicate name within a kind raises ``ConfigError`` naming both plugins.
    """
    load_plugins()
    components: dict[str, dict[str, type[Component]]] = {kind: {} for kind in KINDS}
    for hook_name, kind in HOOKS.items():
        caller = getattr(pm.hook, hook_name)
        for impl in caller.get_hookimpls():
            source = plugin_name(impl.plugin)

            def register(cls: type[Component], name: str | None = None, *, _kind=kind, _src=source):
                base = KINDS[_kind]
                if not (isinstance(cls, type) and issubclass(cls, base)):
                    raise ConfigError(f"plugin {_src} registered {cls!r} as a {_kind}, "
                                      f"but it is not a subclass of selfdev.{base.__name__}")
                key = name or cls.name
                if not key:
                    raise ConfigError(f"plugin {_src} registered a {_kind} without a name")
                if key in components[_kind]:
                    other = components[_kind][key].plugin
                    raise ConfigError(f"duplicate {_kind} name {key!r}: registered by {other} and {_src}")
                cls.plugin = _src
                components[_kind][key] = cls

            impl.function(register=register)
    return Registry(components)


def call_commands(cli: Any) -> None:
    load_plugins()
    pm.hook.register_commands(cli=cli)


def plugins_info() -> list[dict[str, Any]]:
    """What ``selfdev plugins --json`` prints: each plugin, its hooks and its components."""
    load_plugins()
    registry = get_registry()
    dist_info = {id(p): d for p, d in pm.list_plugin_distinfo()}
    rows = []
    for plugin in pm.get_plugins():
        name = plugin_name(plugin)
        hooks = sorted(h.name for h in pm.get_hookcallers(plugin) or [])
        comps = {kind: sorted(n for n, c in found.items() if c.plugin == name)
                 for kind, found in registry.components.items()}
        row = {"name": name, "hooks": hooks,
               "components": {k: v for k, v in comps.items() if v}}
        dist = dist_info.get(id(plugin))
        if dist is not None:
            row["version"] = dist.version
            row["distribution"] = dist.project_name
        rows.append(row)
    return sorted(rows, key=lambda r: r["name"])


def components_info() -> list[dict[str, Any]]:
    """What ``selfdev plugins --options`` prints: every component of every kind, with the first
    paragraph of its docstring and each option's name, type, default, bounds, choices and
    description (from its declared ``Options``)."""
    from selfdev.engine.config import describe_options
    from selfdev.engine.options import component_doc

    registry = get_registry()
    rows = []
    for kind in KINDS:
        for name in registry.names(kind):
            cls = registry.components[kind][name]
            rows.append({"kind": kind, "name": name, "plugin": cls.plugin,
                         "doc": component_doc(cls), "options": describe_options(cls)})
    return rows
