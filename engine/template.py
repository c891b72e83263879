"""``selfdev config template``: a commented run configuration with every key, its default and
what it accepts.

The template is derived, never written by hand: the engine's own sections (``[run]``,
``[temperature]``, ``[pairs]``) from the dataclasses of ``engine/config.py`` (the words about
each key are in :data:`SECTION_DOCS`, and a test checks every field has them), and each
component's section from its declared ``Options`` (``engine/options.py``), the same
declarations ``selfdev plugins --options`` lists and the engine validates a run against. So a
new option, or a changed default or bound, shows up in the template without anyone editing it.

Every key is written with its default, so the file loads as it is and runs what a config with
no keys would run; keys with no default are written commented out (``# steps = ...``, unset),
and required ones get a placeholder marked ``REQUIRED`` that the user replaces (the template
still validates, so a typo elsewhere is found before the placeholder is).
"""
from __future__ import annotations

import dataclasses
import json
import math
import textwrap
from typing import Any

from selfdev.engine.config import COMPONENTS, PLAIN, RunConfig

#: what each key of the engine's own sections means and accepts: (description, accepts)
SECTION_DOCS: dict[str, dict[str, tuple[str, str]]] = {
    "run": {
        "seed": ("the run seed: every random choice derives from (seed, iteration, candidate)",
                 "an integer"),
        "iterations": ("iterations of the loop (sample, screen, run, score, refine)",
                       "an integer >= 1"),
        "candidates": ("completions sampled per iteration (N)", "an integer >= 1"),
        "timeout": ("seconds of compute per candidate in the sandbox", "a number > 0"),
        "top_k": ("the best by dev score, scored once on test at the end", "an integer >= 1"),
        "name": ("a free-text name shown by `selfdev runs` and `selfdev show`", "a string"),
        "tags": ("labels to find runs by (`selfdev runs --tag`)", "a list of strings"),
    },
    "temperature": {
        "t1": ("sampling temperature of iteration 1; T_t = t1 / (1 + beta * (t - 1))",
               "a number > 0"),
        "beta": ("temperature decay per iteration (0: constant temperature)", "a number >= 0"),
    },
    "pairs": {
        "p_w": ("share of an iteration's scored candidates on the chosen side (top by dev)",
                "a number in (0, 1]"),
        "p_l": ("share on the rejected side (bottom by dev)", "a number in (0, 1]"),
        "elites": ("the top of each earlier iteration that joins the chosen side",
                   "an integer"),
        "max_pairs": ("at most this many preference pairs (a seeded subsample)", "an integer"),
    },
}

SECTION_TITLES = {
    "run": "the loop: seed, size and budget",
    "temperature": "the factory's sampling temperature per iteration",
    "pairs": "preference pairs for the optimizer: chosen = top p_w, rejected = bottom p_l",
    "domain": "what is merged, how candidates are applied, and the human baselines",
    "generator": "the algorithm factory that writes candidates",
    "evaluator": "scores merged models (default: the domain's own evaluator)",
    "optimizer": "refines the factory from the preference pairs (none: a control)",
    "executor": "where candidate work runs",
}

WIDTH = 92


def template_data(choices: dict[str, str | None] | None = None) -> list[dict[str, Any]]:
    """The template as data: one entry per section with its keys (name, default, accepts,
    description, required, unset) — what ``--json`` prints and :func:`render` writes."""
    from selfdev.engine.config import describe_options
    from selfdev.engine.options import component_doc
    from selfdev.engine.plugins import get_registry

    choices = {k: v for k, v in (choices or {}).items() if v}
    unknown = sorted(set(choices) - set(COMPONENTS))
    if unknown:
        raise ValueError(f"no component kind {unknown[0]!r}")
    defaults = RunConfig()
    sections: list[dict[str, Any]] = []
    for section, cls in PLAIN.items():
        docs = SECTION_DOCS[section]
        keys = []
        for f in dataclasses.fields(cls):
            value = getattr(getattr(defaults, section), f.name)
            description, accepts = docs[f.name]
            keys.append({"name": f.name, "default": value, "accepts": accepts,
                         "description": description, "required": False, "unset": False})
        sections.append({"section": section, "title": SECTION_TITLES[section], "keys": keys})
    registry = get_registry()
    names = {kind: choices.get(kind) or getattr(defaults, kind).name for kind in COMPONENTS}
    domain_cls = registry.get("domain", names["domain"])
    names["evaluator"] = names["evaluator"] or domain_cls.default_evaluator
    for kind in COMPONENTS:
        comp = registry.get(kind, names[kind])
        keys = [{"name": "name", "default": names[kind],
                 "accepts": "one of " + ", ".join(repr(n) for n in registry.names(kind)),
                 "description": component_doc(comp) or f"the {kind}", "required": False,
                 "unset": False}]
        if kind == "evaluator" and not choices.get(kind):
            # left unset, the run takes whatever domain it names' evaluator: writing this
            # domain's would silently pin it when the user changes the domain
            keys[0].update(unset=True, unset_means=f"the domain's evaluator, {names[kind]!r} "
                                                   f"for {names['domain']!r}")
        for o in describe_options(comp):
            if o["name"].startswith("**"):
                continue  # an old-style component that takes any keyword: nothing to list
            keys.append({"name": o["name"], "default": o["default"],
                         "accepts": o["must_be"] or o["type"],
                         "description": o["description"], "required": o["required"],
                         "unset": not o["required"] and o["default"] is None,
                         "placeholder": _placeholder(o) if o["required"] else None})
        sections.append({"section": kind, "title": SECTION_TITLES[kind], "keys": keys,
                         "plugin": comp.plugin})
    return sections


def _placeholder(option: dict[str, Any]) -> Any:
    """A value of the right shape for a required option, for the user to replace."""
    kind = option["type"].split(" | ")[0]
    bounds = option.get("bounds") or {}
    if option.get("choices"):
        return option["choices"][0]
    if kind == "int":
        return bounds["ge"] if "ge" in bounds else bounds["gt"] + 1 if "gt" in bounds else 1
    if kind == "float":
        return float(bounds.get("ge", bounds.get("le", 1.0)))  # a bound is a valid value
    if kind == "bool":
        return False
    if kind.startswith("dict"):
        return {"name": f"<{option['name']}>"}
    if kind.startswith("list"):
        return [f"<{option['name']}>"]
    return f"<{option['name']}>"


def toml_value(value: Any) -> str:
    """``value`` as TOML writes it (strings as basic strings, tables inline)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        if not value:
            return "{}"
        return "{ " + ", ".join(f"{_toml_key(k)} = {toml_value(v)}"
                                for k, v in value.items()) + " }"
    return json.dumps(str(value))


def _toml_key(key: Any) -> str:
    text = str(key)
    bare = text and all(c.isalnum() or c in "-_" for c in text) and text.isascii()
    return text if bare else json.dumps(text, ensure_ascii=False)


def _comment(text: str, indent: str = "# ") -> list[str]:
    return textwrap.wrap(text, width=WIDTH, initial_indent=indent, subsequent_indent=indent,
                         break_on_hyphens=False) or [indent.rstrip()]


def render(sections: list[dict[str, Any]], command: str, version: str = "") -> str:
    """The template as commented TOML text."""
    lines = [
        "# selfdev run configuration: `selfdev run THIS.toml`",
        f"# written by `{command}`" + (f" (selfdev {version})" if version else ""),
        "#",
        *_comment("Every key is shown with its default: a line you delete keeps that default. "
                  "Keys written as comments (`# key = ...`) are unset by default. REQUIRED keys "
                  "hold a placeholder that you must replace. Other components: `selfdev config "
                  "template --generator NAME ...`; every component's options: `selfdev plugins "
                  "--options`."),
    ]
    for s in sections:
        lines += ["", f"[{s['section']}]" + f"  # {s['title']}"]
        for k in s["keys"]:
            if k["description"]:
                lines += _comment(k["description"].rstrip("."))
            lines += _comment(f"allowed: {k['accepts']}")
            if k["required"]:
                lines.append(f"{k['name']} = {toml_value(k['placeholder'])}  # REQUIRED: "
                             "replace this placeholder")
            elif k["unset"] and k["default"] is not None:  # the evaluator's name
                lines.append(f"# {k['name']} = {toml_value(k['default'])}  (unset: "
                             f"{k['unset_means']})")
            elif k["unset"]:
                lines.append(f"# {k['name']} = ...  (unset)")
            else:
                lines.append(f"{k['name']} = {toml_value(k['default'])}")
    return "\n".join(lines) + "\n"


def config_template(domain: str | None = None, generator: str | None = None,
                    evaluator: str | None = None, optimizer: str | None = None,
                    executor: str | None = None, *, as_data: bool = False) -> Any:
    """The commented configuration for these components (each None: the default one), as
    TOML text, or with ``as_data`` as the list of sections :func:`template_data` gives.

    An unknown component name raises ``ConfigError`` naming the installed ones."""
    from selfdev.engine.api import selfdev_version

    choices = {"domain": domain, "generator": generator, "evaluator": evaluator,
               "optimizer": optimizer, "executor": executor}
    data = template_data(choices)
    if as_data:
        return data
    flags = " ".join(f"--{k} {v}" for k, v in choices.items() if v)
    return render(data, f"selfdev config template {flags}".rstrip(), selfdev_version())


__all__ = ["config_template", "template_data", "render", "toml_value", "SECTION_DOCS"]
