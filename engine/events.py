"""Typed events of a run. Each class has a dotted, past-tense ``TYPE`` and a ``VERSION``.

The payload stored in the log is ``asdict(event)`` (canonical JSON in the store). Readers rebuild
typed events with ``parse(type, payload)``; unknown fields of newer writers are ignored, missing
fields take their defaults, so old logs stay readable when a class grows a field (bump VERSION
when a field changes meaning). docs/events.md lists them all.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

EVENT_TYPES: dict[str, type["Event"]] = {}


@dataclass
class Event:
    TYPE: ClassVar[str] = ""
    VERSION: ClassVar[int] = 1

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.TYPE:
            EVENT_TYPES[cls.TYPE] = cls

    def payload(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class RunStarted(Event):
    """A run began; ``config`` is the whole validated configuration."""

    TYPE = "run.started"
    config: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    domain: str = ""
    generator: str = ""
    evaluator: str = ""
    optimizer: str = ""
    executor: str = ""
    iterations: int = 0
    candidates: int = 0
    selfdev_version: str = ""


@dataclass
class RunResumed(Event):
    """A process took over an unfinished run (``selfdev resume``)."""

    TYPE = "run.resumed"
    at_version: int = 0


@dataclass
class DomainPrepared(Event):
    """Seed and experts are built or loaded; ``summary`` describes them."""

    TYPE = "domain.prepared"
    summary: dict[str, Any] = field(default_factory=dict)


@dataclass
class BaselineEvaluated(Event):
    """A reference model (seed, expert) or human baseline scored on dev and test."""

    TYPE = "baseline.evaluated"
    label: str = ""
    method: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    status: str = "ok"
    reason: str | None = None
    dev: float | None = None
    test: float | None = None
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass
class IterationStarted(Event):
    """Iteration ``iteration`` (1-based) began at this sampling temperature."""

    TYPE = "iteration.started"
    iteration: int = 0
    temperature: float = 0.0
    checkpoint: str | None = None


@dataclass
class CandidateGenerated(Event):
    """The factory produced one completion; ``completion`` and ``prompt`` are blob refs."""

    TYPE = "candidate.generated"
    candidate_id: str = ""
    iteration: int = 0
    index: int = 0
    completion: str = ""
    prompt: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class CandidateScreened(Event):
    """Parsing and the static policy: ``status`` is accepted, rejected or duplicate."""

    TYPE = "candidate.screened"
    candidate_id: str = ""
    status: str = ""
    reason: str | None = None
    code: str | None = None
    ast_hash: str | None = None
    duplicate_of: str | None = None
    #: the merge primitives the program calls (``engine/primitives.py``), None without a program
    primitives: list[str] | None = None


@dataclass
class CandidateExecuted(Event):
    """The sandbox ran the candidate: ``status`` is ok, rejected, error, timeout or killed."""

    TYPE = "candidate.executed"
    candidate_id: str = ""
    status: str = ""
    reason: str | None = None
    duration_ms: float = 0.0
    stdout: str = ""


@dataclass
class CandidateRetried(Event):
    """An attempt at a candidate's work was lost with its worker or node and was run again.

    Appended by the driver just before the candidate's ``candidate.executed`` (same batch), one
    per lost attempt, so an auditor sees every retry and the log still has exactly one result
    per candidate. ``attempt`` is the attempt that was lost (1 = the first).
    """

    TYPE = "candidate.retried"
    candidate_id: str = ""
    attempt: int = 1
    reason: str = ""


@dataclass
class CandidateEvaluated(Event):
    """The merged model was scored on ``split`` (dev during the loop, test for the top k)."""

    TYPE = "candidate.evaluated"
    candidate_id: str = ""
    split: str = "dev"
    score: float | None = None
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass
class PairsBuilt(Event):
    """Preference pairs from dev scores; each pair is ``[chosen id, rejected id]``."""

    TYPE = "pairs.built"
    iteration: int = 0
    chosen: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    elites: list[str] = field(default_factory=list)
    pairs: list[list[str]] = field(default_factory=list)


@dataclass
class FactoryRefined(Event):
    """The optimizer produced the next factory (``checkpoint`` is a content hash or None)."""

    TYPE = "factory.refined"
    iteration: int = 0
    optimizer: str = ""
    checkpoint: str | None = None
    path: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass
class PhaseTimed(Event):
    """How long one step of the loop took in the process that did it: the compute a run cost.

    Appended right after the step's own events (``sampling``: a ``generate`` step,
    ``screening``, ``execution`` (the sandbox and the evaluation of the candidates, through
    the executor), ``refinement``, ``baselines`` and ``test``); a step a crash cut short has
    none, and the process that redoes it records its own, so a resumed run's totals are the
    sum of what each process spent. ``iteration`` is 0 for the steps outside iterations
    (baselines, test). ``seconds`` is wall time; ``cpu_seconds`` the engine process's CPU time
    (all its threads; sandbox children report theirs in ``candidate.executed``'s
    ``duration_ms``). Machine facts: never part of what ``show --json`` compares
    between runs (it reports them under ``timing``).
    """

    TYPE = "phase.timed"
    iteration: int = 0
    phase: str = ""
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    items: int = 0


@dataclass
class IterationFinished(Event):
    """Per-iteration statistics."""

    TYPE = "iteration.finished"
    iteration: int = 0
    stats: dict[str, Any] = field(default_factory=dict)


@dataclass
class SelectionTested(Event):
    """The top ``k`` by dev score were scored once on test."""

    TYPE = "selection.tested"
    k: int = 0
    candidates: list[str] = field(default_factory=list)
    best_dev: str | None = None


@dataclass
class RunFinished(Event):
    """The run completed; ``summary`` is the final comparison table (one row per method:
    ``method``, ``dev``, ``test``, ``params``). Nothing follows it in the log."""

    TYPE = "run.finished"
    summary: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class RunFailed(Event):
    """The run stopped on an error it cannot get past (it can be resumed after a fix).

    Version 2 names what raised, so a failure can be traced to its plugin from the log alone:
    ``exception`` is the exception's class (``module.QualName``, builtins bare), ``plugin`` the
    plugin whose code raised (None when it was the engine's own code) and ``traceback`` the
    formatted traceback (capped at :data:`TRACEBACK_CHARS`, keeping the innermost frames).
    Version 1 events carry ``reason`` only; read back, the new fields take their defaults.
    """

    TYPE = "run.failed"
    VERSION = 2
    reason: str = ""
    exception: str | None = None
    plugin: str | None = None
    traceback: str | None = None


@dataclass
class ListenerFailed(Event):
    """An ``on_event`` listener raised; the run went on without it for that event.

    Recorded once per listener and run process (a listener that fails on every event would
    otherwise double the log), so an auditor learns that the listener's output from
    ``event_position`` on may be incomplete. ``listener`` is the plugin name the listener was
    registered under; ``event_type`` and ``event_position`` name the event it failed on.
    Nothing is appended after a run's closing event (``run.finished``, ``run.failed``), so a
    failure on one of those is reported on stderr only.
    """

    TYPE = "listener.failed"
    listener: str = ""
    event_type: str = ""
    event_position: int = 0
    exception: str = ""
    error: str = ""
    traceback: str = ""


#: the longest traceback text an event keeps (the innermost frames are the ones kept)
TRACEBACK_CHARS = 8000


def exception_name(exc: BaseException) -> str:
    """``ValueError`` for builtins, ``package.module.QualName`` for everything else."""
    cls = type(exc)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def format_traceback(exc: BaseException) -> str:
    """The exception's traceback as Python prints it (its causes included), capped at
    :data:`TRACEBACK_CHARS` from the end, where the frame that raised is."""
    import traceback

    text = "".join(traceback.format_exception(exc))
    if len(text) > TRACEBACK_CHARS:
        text = "...\n" + text[-TRACEBACK_CHARS:]
    return text


def parse(type_: str, payload: dict[str, Any]) -> Event | None:
    """Rebuild a typed event; None for a type this version does not know."""
    cls = EVENT_TYPES.get(type_)
    if cls is None:
        return None
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in payload.items() if k in names})
