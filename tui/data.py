"""Read-side helpers for the screens: the runs list and whether a writer is alive.

Everything here reads; nothing opens the database for writing or takes its writer lock.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

from selfdev.engine.api import format_score
from selfdev.engine.runs import run_summaries, writer_statuses

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def parse_time(text: str | None) -> datetime | None:
    """``2025-03-14T09:26:53.250000Z`` (the store's format) -> an aware datetime."""
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(0, int(round(seconds)))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    if h:
        return f"{h}h{m:02d}m"
    if m:
        return f"{m}m{s:02d}s"
    return f"{s}s"


# -- the runs list -----------------------------------------------------------------------

STATUS_MARK = {
    "running": "● running",
    "finished": "✓ finished",
    "interrupted": "⚠ interrupted (resumable)",
    "failed": "✗ failed (resumable)",
}


@dataclass
class RunRow:
    run_id: str
    status: str  # running | finished | interrupted | failed
    domain: str
    generator: str
    optimizer: str
    iteration: int | None  # the iteration it is in (or ended in)
    iterations: int | None  # configured
    best_dev: float | None
    best_test: float | None
    started: datetime | None
    duration: float | None  # seconds
    events: int
    reason: str | None = None

    @property
    def status_label(self) -> str:
        return STATUS_MARK.get(self.status, self.status)

    @property
    def iters_label(self) -> str:
        if self.iterations is None:
            return "-"
        return f"{self.iteration or 0}/{self.iterations}"

    def cells(self) -> tuple[str, ...]:
        started = self.started.strftime("%Y-%m-%d %H:%M") if self.started else "-"
        return (self.run_id, self.status_label, self.domain, self.generator, self.iters_label,
                format_score(self.best_dev), format_score(self.best_test), started,
                fmt_duration(self.duration), f"{self.events:,}")

    def sort_key(self, column: str) -> Any:
        value = {
            "run": self.run_id, "status": self.status, "domain": self.domain,
            "generator": self.generator, "iters": self.iteration or 0,
            "dev": self.best_dev, "test": self.best_test,
            "started": self.started.timestamp() if self.started else None,
            "duration": self.duration, "events": self.events,
        }[column]
        # None sorts last in either direction's natural reading: put it first as the lowest
        return (value is not None, value if value is not None else 0)

    def matches(self, query: str) -> bool:
        q = query.strip().lower()
        return not q or any(q in cell.lower() for cell in self.cells())


COLUMNS = ("run", "status", "domain", "generator", "iters", "dev", "test", "started",
           "duration", "events")


def list_runs(store: Any, now: Clock = utc_now) -> list[RunRow]:
    """Every run in the store with the status a user needs, in the words ``selfdev runs``
    uses (:func:`selfdev.engine.runs.writer_statuses`): a run that has not finished is
    ``running`` only while a writer holds the database (and it is the run written last);
    otherwise it is ``interrupted`` or ``failed`` and can be resumed."""
    rows = writer_statuses(store, run_summaries(store))
    out = []
    for r in rows:
        status = r.get("status") or "running"
        started = parse_time(r.get("started_at"))
        ended = parse_time(r.get("finished_at"))
        if status == "running":
            ended = now()
        elif ended is None and r.get("last_position"):
            last = store.read(run_id=r["run_id"], after=r["last_position"] - 1, limit=1)
            ended = parse_time(last[0].occurred_at) if last else None
        duration = (ended - started).total_seconds() if started and ended else None
        out.append(RunRow(
            run_id=r["run_id"], status=status, domain=str(r.get("domain") or "-"),
            generator=str(r.get("generator") or "-"), optimizer=str(r.get("optimizer") or "-"),
            iteration=r.get("current_iteration"), iterations=r.get("iterations"),
            best_dev=r.get("best_dev"), best_test=r.get("best_test"), started=started,
            duration=duration, events=r.get("events") or 0, reason=r.get("reason"),
        ))
    return out
