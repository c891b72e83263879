"""Checks of the components' constructor options: one clear ``ConfigError`` line each."""
from __future__ import annotations

from typing import Any, Iterable

from selfdev import ConfigError


def check_choice(kind: str, key: str, value: Any, allowed: Iterable[Any]) -> Any:
    allowed = list(allowed)
    if value not in allowed:
        raise ConfigError(f"config: [{kind}] {key} must be one of "
                          f"{', '.join(repr(a) for a in allowed)}; got {value!r}")
    return value


def check_number(kind: str, key: str, value: Any, *, lo: float | None = None,
                 hi: float | None = None, integer: bool = False) -> Any:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if integer:
        ok = ok and float(value).is_integer()
    if ok and lo is not None and value < lo:
        ok = False
    if ok and hi is not None and value > hi:
        ok = False
    if not ok:
        rng = f" in [{lo}, {hi}]" if lo is not None and hi is not None else (
            f" >= {lo}" if lo is not None else "")
        what = "an integer" if integer else "a number"
        raise ConfigError(f"config: [{kind}] {key} must be {what}{rng}; got {value!r}")
    return int(value) if integer else float(value)


def chat_option(kind: str, value: Any) -> str:
    """``chat_template``: "auto" (use the tokenizer's template when it has one), true or false."""
    if value in (True, "on", "true", "yes"):
        return "on"
    if value in (False, "off", "false", "no"):
        return "off"
    if value in ("auto", None, ""):
        return "auto"
    raise ConfigError(f"config: [{kind}] chat_template must be \"auto\", true or false; got {value!r}")


def check_reference(kind: str, value: Any) -> str:
    if value not in ("current", "initial"):
        raise ConfigError(f"config: [{kind}] reference must be \"current\" (the factory being "
                          f"refined) or \"initial\" (the first factory); got {value!r}")
    return value
