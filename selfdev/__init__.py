"""selfdev's public door: everything a plugin needs, from one module.

A plugin imports this and nothing deeper, as llm's plugins do ``import llm``::

    import selfdev

    class Greedy(selfdev.Generator):
        name = "greedy"
        ...

    @selfdev.hookimpl
    def register_generators(register):
        register(Greedy)

The names resolve lazily (PEP 562), so ``import selfdev`` costs nothing: the sandbox's jailed
child imports ``selfdev.sandbox`` through this package and must not pull in the engine, and
``selfdev --help`` stays fast. The subpackages (``selfdev.engine``, ``selfdev.plugins``,
``selfdev.sandbox``, ``selfdev.store``, ``selfdev.tui``) are the repository's top-level folders,
installed under this namespace; only the names below are a promise to plugin authors.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

#: public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    # hooks and the component registry
    "hookimpl": "selfdev.engine.hookspecs",
    "get_registry": "selfdev.engine.plugins",
    "Registry": "selfdev.engine.plugins",
    # component kinds (subclass one, register it from a register_* hook)
    "Component": "selfdev.engine.api",
    "Generator": "selfdev.engine.api",
    "Domain": "selfdev.engine.api",
    "Evaluator": "selfdev.engine.api",
    "Optimizer": "selfdev.engine.api",
    "Executor": "selfdev.engine.api",
    "Options": "selfdev.engine.options",
    "Field": "selfdev.engine.options",
    # values components exchange with the engine
    "Context": "selfdev.engine.api",
    "Completion": "selfdev.engine.api",
    "Pair": "selfdev.engine.api",
    "Refinement": "selfdev.engine.api",
    "MergeOutcome": "selfdev.engine.api",
    "Baseline": "selfdev.engine.api",
    "Progress": "selfdev.engine.api",
    "ProgressTask": "selfdev.engine.api",
    "NullProgress": "selfdev.engine.api",
    # candidate work described by value (executors that run it on other machines)
    "WorkSpec": "selfdev.engine.api",
    "CandidateWork": "selfdev.engine.api",
    "CandidateResult": "selfdev.engine.api",
    "execute_candidate": "selfdev.engine.api",
    # errors the CLI prints as one line
    "SelfdevError": "selfdev.engine.api",
    "ConfigError": "selfdev.engine.api",
    # helpers
    "selfdev_home": "selfdev.engine.api",
    "cache_dir": "selfdev.engine.api",
    "cache_lock": "selfdev.engine.api",
    "derive_seed": "selfdev.engine.api",
    "parse_kv": "selfdev.engine.api",
    "torch_threads": "selfdev.engine.api",
    "reserve_cores": "selfdev.engine.api",
    "reserved_cores": "selfdev.engine.api",
    "format_score": "selfdev.engine.api",
    # one accelerator shared by the loop's phases (engine/device.py)
    "DeviceNeed": "selfdev.engine.device",
    "DevicePlan": "selfdev.engine.device",
    "ModelShape": "selfdev.engine.device",
    "model_shape": "selfdev.engine.device",
    "dtype_bytes": "selfdev.engine.device",
    "free_device_memory": "selfdev.engine.device",
    "shutdown_engine": "selfdev.engine.device",
    "config_template": "selfdev.engine.template",
    # the event log (listeners receive a StoredEvent; commands may read runs and append their own)
    "StoredEvent": "selfdev.store",
    "NewEvent": "selfdev.store",
    "EventStore": "selfdev.store",
    "open_store": "selfdev.engine.runs",
    "resolve_run": "selfdev.engine.runs",
    "load_state": "selfdev.engine.runs",  # a run's folded state (e.g. dev scores so far)
    # comparing runs and sweeping settings (`selfdev compare`, `selfdev sweep`, plots)
    "compare_runs": "selfdev.engine.compare",
    "group_records": "selfdev.engine.compare",
    "interval": "selfdev.engine.compare",
    "render_comparison": "selfdev.engine.compare",
    "tagged_runs": "selfdev.engine.compare",
    "plan_sweep": "selfdev.engine.sweep",
    "run_sweep": "selfdev.engine.sweep",
    # the sandbox a domain calls to run candidate code
    "Sandbox": "selfdev.sandbox",
    "SandboxResult": "selfdev.sandbox",
    "SandboxUnavailable": "selfdev.sandbox",
    "StreamSandbox": "selfdev.sandbox",
    "screen": "selfdev.sandbox",
    "ScreenResult": "selfdev.sandbox",
    "extract_candidate": "selfdev.sandbox",
    "doctor": "selfdev.sandbox",
}

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str) -> Any:
    if name == "__version__":  # from the distribution's metadata, the one place it lives
        from selfdev.engine.api import selfdev_version

        return selfdev_version()
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'selfdev' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # resolve once
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:  # pragma: no cover - for editors and type checkers only
    from selfdev.engine.api import (CandidateResult, CandidateWork, WorkSpec, execute_candidate)
    from selfdev.engine.api import (Baseline, Completion, ConfigError, Component, Context,
                                    Domain, Evaluator, Executor, Generator, MergeOutcome,
                                    NullProgress, Optimizer, Pair, Progress, ProgressTask,
                                    Refinement, SelfdevError, cache_dir, cache_lock, derive_seed,
                                    format_score, parse_kv, reserve_cores, reserved_cores,
                                    selfdev_home, torch_threads)
    from selfdev.engine.device import (DeviceNeed, DevicePlan, ModelShape, dtype_bytes,
                                       free_device_memory, model_shape, shutdown_engine)
    from selfdev.engine.hookspecs import hookimpl
    from selfdev.engine.options import Field, Options
    from selfdev.engine.plugins import Registry, get_registry
    from selfdev.engine.runs import load_state, open_store, resolve_run
    from selfdev.engine.template import config_template
    from selfdev.engine.compare import (compare_runs, group_records, interval,
                                        render_comparison, tagged_runs)
    from selfdev.engine.sweep import plan_sweep, run_sweep
    from selfdev.sandbox import (Sandbox, SandboxResult, SandboxUnavailable, ScreenResult,
                                 StreamSandbox, doctor, extract_candidate, screen)
    from selfdev.store import EventStore, NewEvent, StoredEvent

    __version__: str
