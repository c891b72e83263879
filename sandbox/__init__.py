"""selfdev's sandbox for LLM-written merge candidates (imports nothing else of selfdev).

This module is the public face; the rest is laid out by whom it trusts:

* trusted side (runs in the engine): ``supervisor`` (the :class:`Sandbox`: warm parent
  management, one run per candidate), ``stream`` (the :class:`StreamSandbox`: one child per
  candidate fed one tensor at a time, for models too large to hold), ``verdict`` (reads and validates what a child sent),
  ``policy`` (L1 static screen), ``layers`` (the isolation layers and ``doctor``), ``cli``;
* ``jail/`` (runs inside the jailed processes, assumes hostile company): ``worker`` (the warm
  parent and the per-candidate child), ``facade`` (L2 capabilities), ``oslayers`` (L3);
* ``protocol``: the wire format, the one module both sides import.

Layers: L1 static policy (:func:`screen`), L2 capability facade (in the child), L3 OS
isolation (a clean warm parent forking one jailed child per candidate), L4 validated I/O.
See docs/sandbox.md for the threat model.
"""
from __future__ import annotations

from selfdev.sandbox.policy import ScreenResult, extract_candidate, screen

__all__ = ["Sandbox", "StreamSandbox", "SandboxResult", "SandboxUnavailable", "ScreenResult", "screen",
           "extract_candidate", "doctor", "DEFAULT_REQUIRE"]

# name -> module; torch is imported only when the runtime side (the supervisor) is needed
_LAZY = {"Sandbox": "supervisor", "StreamSandbox": "stream", "SandboxUnavailable": "supervisor", "SandboxResult": "verdict",
         "DEFAULT_REQUIRE": "layers", "ALL_LAYERS": "protocol"}


def __getattr__(name):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(f"selfdev.sandbox.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'selfdev.sandbox' has no attribute {name!r}")


def doctor() -> dict:
    """Which isolation layers this kernel offers, probed in a throw-away process."""
    from selfdev.sandbox.layers import doctor as _d
    return _d()
