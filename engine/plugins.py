"""The plugin manager, component registries and plugin loading.

The built-in plugins are the modules named in :data:`DEFAULT_PLUGINS`, as in llm's and
datasette's ``plugins.py``: they register through the same hooks as third-party plugins
(entry-point group ``selfdev``), and this list is the only way the engine reaches them (or the
TUI command, or the console display).

``SELFDEV_LOAD_PLUGINS`` is a comma-separated allow-list of third-party plugins, each named by
its distribution (``selfdev-shuffle``, what pip installs) or by its entry-point name
(``shuffle``, what ``selfdev plugins`` prints): both spellings are what a user has in hand. An
empty value loads none; a name that is no installed plugin is refused with one line listing the
installed ones, because silently loading nothing is how a typo turns into a run without the
plugin. Built-ins always load.

Third-party code must not take the CLI down with it: a plugin that fails to import, or that
pluggy refuses (a hook argument the hook does not have), is named in one line on stderr and
left out; a hook implementation whose name is no selfdev hook (a misspelling, which pluggy
would otherwise ignore silently) is named too, with the closest hook. ``SELFDEV_DEBUG=1`` or
``selfdev --debug`` adds the traceback.
"""
from __future__ import annotations

import difflib
import importlib
import os
import re
import sys
import types
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
    "selfdev.plugins.generators.cmaes",
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
    "selfdev.plugins.executors.ray",
    "selfdev.plugins.listeners.console",
    "selfdev.plugins.commands.apply",
    "selfdev.plugins.commands.config",
    "selfdev.plugins.commands.compare",
    "selfdev.plugins.commands.factory_stats",
    "selfdev.plugins.commands.install",
    "selfdev.plugins.commands.plot",
    "selfdev.plugins.commands.prompt",
    "selfdev.plugins.commands.scaffold",
    "selfdev.plugins.commands.sweep",
    "selfdev.tui.cli",
)


@dataclass
class LoadProblem:
    """A third-party plugin (or one hook of it) left out while loading, and why."""

    plugin: str
    message: str  # the one line shown on stderr
    traceback: str | None = None  # None where no exception was raised (an unknown hook name)
    shown: bool = False  # the traceback was printed already


_problems: list[LoadProblem] = []
_reported: set[tuple[str, str]] = set()
_refusal: ConfigError | None = None
#: entry-point name -> (distribution, version) of every third-party plugin loaded
_distributions: dict[str, tuple[str, str]] = {}

#: what click (and so ``--debug``'s environment variable) reads as true
_TRUE = {"1", "true", "t", "yes", "y", "on"}


def debug_enabled() -> bool:
    """``SELFDEV_DEBUG`` is set to a true value (``selfdev --debug`` sets it for the command)."""
    return os.environ.get("SELFDEV_DEBUG", "").strip().lower() in _TRUE


def report_problem(plugin: str, message: str, exc: BaseException | None = None,
                   key: str | None = None) -> None:
    """Name a broken plugin in one line on stderr (once per ``key``), with the traceback when
    debugging. Loading goes on without the broken part."""
    from selfdev.engine.events import format_traceback

    if (plugin, key or message) in _reported:
        return
    _reported.add((plugin, key or message))
    problem = LoadProblem(plugin, message, format_traceback(exc) if exc is not None else None)
    _problems.append(problem)
    hint = " (--debug shows the traceback)" if problem.traceback and not debug_enabled() else ""
    print(f"warning: {message}{hint}", file=sys.stderr)
    if problem.traceback and debug_enabled():
        print(problem.traceback, end="", file=sys.stderr)
        problem.shown = True


def print_load_tracebacks() -> None:
    """Print the tracebacks not printed yet (``--debug`` is parsed after plugins loaded)."""
    for problem in _problems:
        if problem.traceback and not problem.shown:
            print(f"traceback of: {problem.message}", file=sys.stderr)
            print(problem.traceback, end="", file=sys.stderr)
            problem.shown = True


def one_line(exc: BaseException) -> str:
    """``Type: message`` on one line (pluggy's validation errors span several)."""
    from selfdev.engine.events import exception_name

    text = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    return f"{exception_name(exc)}: {text}" if text else exception_name(exc)


def canonical_distribution(name: str) -> str:
    """A distribution name as pip compares them (PEP 503): ``Selfdev_Shuffle`` is ``selfdev-shuffle``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def load_plugins() -> None:
    """Register built-ins, then third-party entry points (idempotent).

    Raises ``ConfigError`` (every call) when ``SELFDEV_LOAD_PLUGINS`` names a plugin that is not
    installed; the plugins it does name are loaded all the same.
    """
    global _loaded
    if _loaded:
        if _refusal is not None:
            raise _refusal
        return
    _loaded = True
    for name in DEFAULT_PLUGINS:
        if pm.get_plugin(name) is None:
            pm.register(importlib.import_module(name), name=name)
    allow = os.environ.get("SELFDEV_LOAD_PLUGINS")
    if not (getattr(sys, "_called_from_test", False) and allow is None):
        _load_entry_points(allow)
    check_hook_names()
    if _refusal is not None:
        raise _refusal


def _load_entry_points(allow: str | None) -> None:
    """Import and register each allowed ``selfdev`` entry point; a broken one is reported and
    left out (pluggy's ``load_setuptools_entrypoints`` would stop at the first)."""
    global _refusal
    from importlib.metadata import entry_points

    found = []
    for ep in entry_points(group="selfdev"):
        dist = getattr(ep, "dist", None)
        dist_name = dist.metadata["Name"] if dist is not None else "?"
        found.append((ep, dist_name, dist.version if dist is not None else "?"))
    wanted: set[str] | None = None
    if allow is not None:
        wanted = {p.strip() for p in allow.split(",") if p.strip()}
        known = {ep.name for ep, _, _ in found} | {canonical_distribution(d) for _, d, _ in found}
        unknown = sorted(w for w in wanted if w not in known and canonical_distribution(w) not in known)
        if unknown:
            installed = ", ".join(f"{d} (entry point {ep.name})" for ep, d, _ in found) or "none"
            _refusal = ConfigError(
                f"SELFDEV_LOAD_PLUGINS names {', '.join(map(repr, unknown))}, which "
                f"{'is' if len(unknown) == 1 else 'are'} not an installed plugin; installed: "
                f"{installed} (give distribution or entry-point names, or an empty value for none)")
        wanted |= {canonical_distribution(w) for w in wanted}
    for ep, dist_name, version in found:
        if wanted is not None and ep.name not in wanted and canonical_distribution(dist_name) not in wanted:
            continue
        if pm.get_plugin(ep.name) is not None or pm.is_blocked(ep.name):
            continue
        label = f"plugin {ep.name!r} ({dist_name} {version})"
        try:
            plugin = ep.load()
        except Exception as exc:  # noqa: BLE001 - third-party import errors of any kind
            report_problem(ep.name, f"{label} failed to import and is left out: {one_line(exc)}", exc)
            continue
        try:
            pm.register(plugin, name=ep.name)
        except pluggy.PluginValidationError as exc:  # a hook argument the hook does not have
            _unregister_half(ep.name)
            why = "; ".join(line.strip() for line in str(exc).splitlines()[1:] if line.strip())
            report_problem(ep.name, f"{label} does not match selfdev's hooks and is left out: "
                                    f"{why}", exc)
            continue
        except Exception as exc:  # noqa: BLE001 - e.g. the same module under two names
            _unregister_half(ep.name)
            report_problem(ep.name, f"{label} was refused and is left out: {one_line(exc)}", exc)
            continue
        _distributions[ep.name] = (dist_name, version)


def _unregister_half(name: str) -> None:
    """pluggy before 1.7 may leave a refused plugin half-registered."""
    if pm.get_plugin(name) is not None:
        pm.unregister(name=name)


def hook_names() -> list[str]:
    """The hooks selfdev calls (those with a specification)."""
    return sorted(name for name, caller in vars(pm.hook).items()
                  if not name.startswith("_") and caller.has_spec())


def check_hook_names() -> None:
    """Report every hook implementation whose name is no selfdev hook (pluggy's
    ``check_pending``, which stops at the first and raises): it would never be called."""
    known = hook_names()
    for name, caller in list(vars(pm.hook).items()):
        if name.startswith("_") or caller.has_spec():
            continue
        for impl in caller.get_hookimpls():
            if impl.optionalhook:
                continue
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"hooks: {', '.join(known)}"
            report_problem(impl.plugin_name,
                           f"plugin {impl.plugin_name!r} implements {name!r}, which is not a "
                           f"selfdev hook, so it is never called; {hint}", key=name)


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

    A duplicate name within a kind raises ``ConfigError`` naming both plugins. A hook
    implementation that raises anything else is third-party code failing: it is reported once
    on stderr and what it registered in that call is left out, so one broken plugin does not
    stop the commands that list or use the others.
    """
    load_plugins()
    components: dict[str, dict[str, type[Component]]] = {kind: {} for kind in KINDS}
    for hook_name, kind in HOOKS.items():
        caller = getattr(pm.hook, hook_name)
        for impl in caller.get_hookimpls():
            source = plugin_name(impl.plugin)
            added: list[str] = []

            def register(cls: type[Component], name: str | None = None, *, _kind=kind, _src=source,
                         _added=added):
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
                _added.append(key)

            try:
                call_impl(impl, register=register)
            except ConfigError:
                raise
            except Exception as exc:  # noqa: BLE001 - a third-party hook failing
                for key in added:
                    components[kind].pop(key, None)
                report_problem(source, f"plugin {source!r} raised in {hook_name}, so its {kind}s "
                                       f"are left out: {one_line(exc)}", exc, key=hook_name)
    return Registry(components)


def call_impl(impl: Any, **kwargs: Any) -> Any:
    """Call one hook implementation with the arguments it asks for (pluggy lets an
    implementation take fewer than its hook offers)."""
    return impl.function(**{name: value for name, value in kwargs.items() if name in impl.argnames})


def call_commands(cli: Any) -> None:
    """Let each plugin add its commands; one that raises is reported and the others go on."""
    load_plugins()
    for impl in pm.hook.register_commands.get_hookimpls():
        try:
            call_impl(impl, cli=cli)
        except Exception as exc:  # noqa: BLE001 - a third-party hook failing
            source = plugin_name(impl.plugin)
            report_problem(source, f"plugin {source!r} raised in register_commands, so its "
                                   f"commands may be missing: {one_line(exc)}", exc,
                           key="register_commands")


def plugin_of(exc: BaseException) -> str | None:
    """The plugin whose code raised ``exc``, for ``run.failed``.

    Walking the traceback from the frame that raised outwards, the first frame that is a
    method of a registered component (its ``self``) or runs in a plugin's module names the
    plugin (a third-party package's other modules count as its own). Frames of the engine, the
    store and the sandbox are passed over: a plugin calling them is the one that failed. None
    means no plugin code was on the way (the engine itself raised).
    """
    modules: dict[str, str] = {}
    tops: dict[str, str] = {}
    for plugin in pm.get_plugins():
        name = plugin_name(plugin)
        module = plugin.__name__ if isinstance(plugin, types.ModuleType) else type(plugin).__module__
        modules.setdefault(module, name)
        top = module.partition(".")[0]
        if top != "selfdev":
            tops.setdefault(top, name)
    frames = []
    tb = exc.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    for frame in reversed(frames):
        module = frame.f_globals.get("__name__", "")
        if module == "selfdev" or module.startswith(("selfdev.engine.", "selfdev.store",
                                                     "selfdev.sandbox")):
            continue
        owner = frame.f_locals.get("self")
        if isinstance(owner, Component) and type(owner).plugin:
            return type(owner).plugin
        if module in modules:
            return modules[module]
        if module.partition(".")[0] in tops:
            return tops[module.partition(".")[0]]
    return None


def plugins_info() -> list[dict[str, Any]]:
    """What ``selfdev plugins --json`` prints: each plugin, its hooks and its components."""
    load_plugins()
    registry = get_registry()
    dist_info = {id(p): (d.project_name, d.version) for p, d in pm.list_plugin_distinfo()}
    rows = []
    for plugin in pm.get_plugins():
        name = plugin_name(plugin)
        hooks = sorted(h.name for h in pm.get_hookcallers(plugin) or [])
        comps = {kind: sorted(n for n, c in found.items() if c.plugin == name)
                 for kind, found in registry.components.items()}
        row = {"name": name, "hooks": hooks,
               "components": {k: v for k, v in comps.items() if v}}
        dist = _distributions.get(name) or dist_info.get(id(plugin))
        if dist is not None:
            row["distribution"], row["version"] = dist
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
