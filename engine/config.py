"""The TOML run configuration, validated into typed objects.

Errors name the offending key and the allowed values, e.g.
``config: unknown key 'iteratons' in [run]; allowed: candidates, iterations, name, seed, ...``.

    [run]
    seed = 0
    iterations = 3
    candidates = 100      # completions sampled per iteration (N)
    timeout = 10.0        # seconds per candidate in the sandbox
    top_k = 15            # best by dev, scored once on test

    [temperature]         # T_t = t1 / (1 + beta * (t - 1))
    t1 = 1.2
    beta = 0.2

    [pairs]               # chosen = top p_w, rejected = bottom p_l (of scored candidates)
    p_w = 0.03
    p_l = 0.10
    elites = 3            # top of each earlier iteration joins the chosen side
    max_pairs = 256

    [domain]              # name + the component's own options
    name = "digits"
    [generator]
    name = "grammar"
    [evaluator]           # default: the domain's default evaluator
    [optimizer]
    name = "none"
    [executor]
    name = "local"
"""
from __future__ import annotations

import dataclasses
import inspect
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from selfdev.engine.api import Component, ConfigError, validate_options
from selfdev.engine.options import declared_options, describe_model, describe_parameter


@dataclass
class RunSection:
    seed: int = 0
    iterations: int = 3
    candidates: int = 100
    timeout: float = 10.0
    top_k: int = 15
    name: str = ""
    tags: list[str] = field(default_factory=list)  # labels to find runs by (`selfdev runs --tag`)


@dataclass
class TemperatureSection:
    t1: float = 1.2
    beta: float = 0.2

    def at(self, iteration: int) -> float:
        """``T_t = T1 / (1 + beta * (t - 1))`` (paper: 1.2, 1.0, 0.857)."""
        return self.t1 / (1.0 + self.beta * (iteration - 1))


@dataclass
class PairsSection:
    p_w: float = 0.03
    p_l: float = 0.10
    elites: int = 3
    max_pairs: int = 256


@dataclass
class ComponentSection:
    name: str = ""
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunConfig:
    run: RunSection = field(default_factory=RunSection)
    temperature: TemperatureSection = field(default_factory=TemperatureSection)
    pairs: PairsSection = field(default_factory=PairsSection)
    domain: ComponentSection = field(default_factory=lambda: ComponentSection("digits"))
    generator: ComponentSection = field(default_factory=lambda: ComponentSection("grammar"))
    evaluator: ComponentSection = field(default_factory=ComponentSection)
    optimizer: ComponentSection = field(default_factory=lambda: ComponentSection("none"))
    executor: ComponentSection = field(default_factory=lambda: ComponentSection("local"))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for section in SECTIONS:
            value = getattr(self, section)
            if isinstance(value, ComponentSection):
                out[section] = {"name": value.name, **value.options}
            else:
                out[section] = dataclasses.asdict(value)
        return out


PLAIN = {"run": RunSection, "temperature": TemperatureSection, "pairs": PairsSection}
COMPONENTS = ("domain", "generator", "evaluator", "optimizer", "executor")
SECTIONS = tuple(PLAIN) + COMPONENTS


def _check_type(section: str, key: str, value: Any, expected: Any) -> Any:
    kind = {int: "an integer", float: "a number", str: "a string"}
    if expected in ("int", int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config: [{section}] {key} must be {kind[int]}, got {value!r}")
    elif expected in ("float", float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config: [{section}] {key} must be {kind[float]}, got {value!r}")
        value = float(value)
    elif expected in ("str", str):
        if not isinstance(value, str):
            raise ConfigError(f"config: [{section}] {key} must be {kind[str]}, got {value!r}")
    elif expected == "list[str]":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"config: [{section}] {key} must be a list of strings, "
                              f"e.g. [\"ablation\", \"beta\"], got {value!r}")
        value = list(value)
    return value


def from_dict(data: dict[str, Any]) -> RunConfig:
    """Validate a parsed TOML document (or the ``config`` of a ``run.started`` event)."""
    if not isinstance(data, dict):
        raise ConfigError("config: expected a table at the top level")
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"config: unknown section [{unknown[0]}]; allowed: {', '.join(SECTIONS)}")
    cfg = RunConfig()
    for section in SECTIONS:
        table = data.get(section, {})
        if not isinstance(table, dict):
            raise ConfigError(_not_a_table(section, table))
    for section, cls in PLAIN.items():
        table = data.get(section, {})
        fields = {f.name: f.type for f in dataclasses.fields(cls)}
        values = {}
        for key, value in table.items():
            if key not in fields:
                raise ConfigError(f"config: unknown key {key!r} in [{section}]; allowed: {', '.join(fields)}")
            values[key] = _check_type(section, key, value, fields[key])
        setattr(cfg, section, cls(**values))
    r = cfg.run
    for key in ("iterations", "candidates", "top_k"):
        if getattr(r, key) < 1:
            raise ConfigError(f"config: [run] {key} must be at least 1, got {getattr(r, key)}")
    if r.timeout <= 0:
        raise ConfigError(f"config: [run] timeout must be positive, got {r.timeout}")
    p = cfg.pairs
    for key in ("p_w", "p_l"):
        if not 0 < getattr(p, key) <= 1:
            raise ConfigError(f"config: [pairs] {key} must be in (0, 1], got {getattr(p, key)}")
    if cfg.temperature.t1 <= 0 or cfg.temperature.beta < 0:
        raise ConfigError("config: [temperature] t1 must be positive and beta non-negative")
    for section in COMPONENTS:
        table = dict(data.get(section, {}))
        default = getattr(cfg, section).name
        name = table.pop("name", default)
        if not isinstance(name, str):
            raise ConfigError(f"config: [{section}] name must be a string")
        setattr(cfg, section, ComponentSection(name, table))
    return cfg


def _not_a_table(section: str, value: Any) -> str:
    """``generator = "grammar"`` where ``[generator]`` with ``name = "grammar"`` was meant."""
    if section in COMPONENTS and isinstance(value, str):
        quoted = json.dumps(value)  # a TOML basic string
        return (f"config: {section} = {quoted} must be a table: write [{section}] and on the "
                f"next line name = {quoted} (or {section} = {{ name = {quoted} }})")
    return f"config: [{section}] must be a table, got {type(value).__name__} {value!r}"


def load(path: str | Path) -> RunConfig:
    """Read and validate a TOML file (UTF-8, as TOML requires)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"config: cannot read {path}: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise ConfigError(f"config: {path} is not UTF-8 text (byte {raw[exc.start]:#04x} on "
                          f"line {line}); TOML files are UTF-8: save it as UTF-8") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config: {path} is not valid TOML: {exc}") from None
    return from_dict(data)


def legacy_parameters(cls: type) -> list[inspect.Parameter] | None:
    """The keyword parameters of an ``__init__`` that predates declared options, else None.

    A component that declares no ``Options`` but overrides ``__init__`` with keyword arguments
    (``def __init__(self, ctx, epochs=1)``) keeps working: its options are its parameters, as
    before options were declared. A ``**kwargs`` among them means "takes anything".
    """
    if declared_options(cls) is not Component.Options or cls.__init__ is Component.__init__:
        return None
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]  # drop self
    if params and params[0].name == "ctx":
        params = params[1:]
    return [p for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_KEYWORD)]


def describe_options(cls: type) -> list[dict[str, Any]]:
    """Each option of a component class, from its ``Options`` (or, for a component that
    predates them, from its ``__init__`` keyword arguments)."""
    legacy = legacy_parameters(cls)
    if legacy is not None:
        return [describe_parameter(p) for p in legacy]
    return describe_model(declared_options(cls))


def check_options(kind: str, cls: type, options: dict[str, Any]) -> None:
    """Refuse a bad options table for a component before anything is built.

    A component that declares ``Options`` has the table validated against them (unknown keys,
    types, bounds, cross-field rules; see ``engine/options.py``). One written before options
    were declared is checked against its ``__init__`` keyword arguments, as it always was.
    """
    legacy = legacy_parameters(cls)
    if legacy is None:
        validate_options(kind, cls.name, declared_options(cls), options)
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in legacy):
        return
    allowed = [p.name for p in legacy]
    for key in options:
        if key not in allowed:
            raise ConfigError(
                f"config: unknown option {key!r} for {kind} {cls.name!r}; "
                f"allowed: {', '.join(allowed) or '(none)'}"
            )
