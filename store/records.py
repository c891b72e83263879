"""What goes in and what comes out: :class:`NewEvent`, :class:`StoredEvent`, :class:`Stream`.

The store never interprets an event's ``type`` or ``payload`` (the engine's fold does that);
these records only carry them. :data:`EVENT_COLUMNS` is the ``events`` table's column order,
which :class:`StoredEvent` takes positionally.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .canonical import ENVELOPE_FIELDS, parse_json

EVENT_COLUMNS = ("position", *ENVELOPE_FIELDS, "payload", "prev_hash", "hash")
SELECT_EVENTS = f"SELECT {', '.join(EVENT_COLUMNS)} FROM events"
INSERT_EVENTS = f"INSERT INTO events ({', '.join(EVENT_COLUMNS)})"
"""The head of the multi-row insert (:func:`~._sql.insert_rows` adds the ``VALUES``)."""


@dataclass
class NewEvent:
    """An event to append. ``payload`` must be a JSON object (see :func:`canonical_json`)."""

    type: str
    payload: dict[str, Any]
    type_version: int = 1
    source: str = "engine"
    occurred_at: str | None = None


@dataclass(slots=True)
class StoredEvent:
    """An event as stored; ``payload`` is parsed back from its canonical JSON.

    Not frozen: a frozen dataclass costs ~1.5 us more per instance, a fifth of the append
    budget. Changing an instance changes nothing stored.
    """

    position: int
    event_id: str
    run_id: str
    stream_version: int
    type: str
    type_version: int
    occurred_at: str
    source: str
    payload: dict[str, Any]
    prev_hash: str
    hash: str


def event_from_row(row: tuple) -> StoredEvent:
    """A ``SELECT_EVENTS`` row as a :class:`StoredEvent` (the payload parsed)."""
    return StoredEvent(
        row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7],
        parse_json(row[8]), row[9], row[10],
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class Stream:
    """One run's stream of events, as the log holds it (read from the envelope only).

    ``version`` is the stream version of its last event, which is also the number of its
    events (versions run 1..n); ``head`` is that event's hash (what :meth:`EventStore.head`
    and ``verify().heads`` report). ``first_at`` and ``last_at`` are the ``occurred_at`` of its
    first and last events.
    """

    run_id: str
    version: int
    head: str
    first_position: int
    last_position: int
    first_at: str
    last_at: str
