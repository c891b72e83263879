"""selfdev's sandbox for LLM-written merge candidates (imports nothing else of selfdev).

Layers: L1 static policy (:func:`screen`), L2 capability facade (in the child), L3 OS
isolation (a clean warm parent forking one jailed child per candidate), L4 validated I/O.
See docs/sandbox.md for the threat model.
"""
from __future__ import annotations

from selfdev.sandbox._policy import ScreenResult, extract_candidate, screen

__all__ = ["Sandbox", "SandboxResult", "SandboxUnavailable", "ScreenResult", "screen",
           "extract_candidate", "doctor", "DEFAULT_REQUIRE"]

_LAZY = {"Sandbox", "SandboxResult", "SandboxUnavailable", "DEFAULT_REQUIRE", "ALL_LAYERS"}


def __getattr__(name):  # torch is imported only when the runtime side is needed
    if name in _LAZY:
        from selfdev.sandbox import _supervisor
        return getattr(_supervisor, name)
    raise AttributeError(f"module 'sandbox' has no attribute {name!r}")


def doctor() -> dict:
    """Which isolation layers this kernel offers, probed in a throw-away process."""
    from selfdev.sandbox._doctor import doctor as _d
    return _d()
