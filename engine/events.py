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
class CandidateEvaluated(Event):
    """The merged model was scored on ``split`` (dev during the loop, test for the top k)."""

    TYPE = "candidate.evaluated"
    candidate_id: str = ""
    split: str = "dev"
    score: float | None = None
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass
class PairsBuilt(Event):
    """Preference pairs from dev scores; each pair holds candidate ids and scores."""

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
    TYPE = "run.finished"
    summary: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunFailed(Event):
    """The run stopped on an error it cannot get past (it can be resumed after a fix)."""

    TYPE = "run.failed"
    reason: str = ""


def parse(type_: str, payload: dict[str, Any]) -> Event | None:
    """Rebuild a typed event; None for a type this version does not know."""
    cls = EVENT_TYPES.get(type_)
    if cls is None:
        return None
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in payload.items() if k in names})
