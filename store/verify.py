"""``verify``: re-derive every hash, link and version of the log from what reads back.

Nothing stored is trusted: each event's hash is recomputed from its columns as they read back
(the payload text as it is), each ``prev_hash`` is compared with the hash of the run's previous
event, and each ``stream_version`` with the one before it. Checking the whole file also
catches deleted rows (holes in ``position``, an AUTOINCREMENT rowid that is never reused, and
a ``sqlite_sequence`` beyond the last row) and blobs whose content no longer matches its ref.

What a hash chain alone cannot see is a run cut short: delete a run's last events, reset
``sqlite_sequence``, and what is left is a valid, shorter chain. The anchor is the run's head
hash kept elsewhere (``selfdev show`` prints it, ``selfdev export`` writes it): given that
``head``, verify fails unless the run's chain still reaches it. Since every hash commits to all
the events before it, reaching the old head proves every event up to it is still there and
unchanged; events appended after it (a resumed run) are allowed.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field

from . import blobs
from .canonical import GENESIS_HASH, event_hash_fields
from .records import SELECT_EVENTS


@dataclass
class VerifyResult:
    """Outcome of :meth:`EventStore.verify`; truthy when ``ok``.

    ``first_broken`` is the global position of the first event that fails (for missing rows,
    the first missing position), or, for a blob whose content does not match its ref, the
    position of the first checked event whose payload mentions that ref (``None`` if none
    does). ``heads`` maps each checked run to the hash of its last event.
    """

    ok: bool
    checked: int
    first_broken: int | None = None
    reason: str | None = None
    heads: dict[str, str] = field(default_factory=dict)
    blobs_checked: int = 0
    reached: int | None = None

    def __bool__(self) -> bool:
        return self.ok


def verify(
    conn: sqlite3.Connection, run_id: str | None = None, head: str | None = None
) -> VerifyResult:
    """Check the events (one run's, or all) and then the blobs, inside one read transaction.

    The first problem found (lowest position; event problems before blob problems) is
    reported; scanning goes on to count every event and fill ``heads``. With a ``run_id``,
    only the broken blobs that run's payloads mention are reported. Truncating a run's tail
    cannot be told from a shorter run except by a head recorded elsewhere: with ``head`` (and
    ``run_id``) the result is broken, naming the run, unless one of the run's events has that
    hash (``first_broken`` is then None: the missing events have no position left).
    """
    if head is not None and run_id is None:
        raise ValueError("a head belongs to one run: give run_id with head")
    checked, heads, first, reason, reached = _check_events(conn, run_id, head)
    if first is None and head is not None and reached is None:
        version = conn.execute(
            "SELECT coalesce(max(stream_version), 0) FROM events WHERE run_id = ?", (run_id,)
        ).fetchone()[0]
        reason = (
            f"run {run_id!r} no longer reaches head {head}: its log ends at event {version}"
            + (f" ({heads[run_id]})" if run_id in heads else "")
            + ", so events after it were deleted (or the head is not this run's)"
        )
    blobs_checked, blob_position, blob_problem = _check_blobs(
        conn, run_id, stop=reason is not None
    )
    if reason is None and blob_problem is not None:
        first, reason = blob_position, blob_problem
    return VerifyResult(reason is None, checked, first, reason, heads, blobs_checked, reached)


def _check_events(
    conn: sqlite3.Connection, run_id: str | None, head: str | None = None
) -> tuple[int, dict[str, str], int | None, str | None, int | None]:
    """(events checked, run -> head hash, first broken position, why, version of ``head``)."""
    reached: int | None = None
    first: int | None = None
    reason: str | None = None
    checked = 0
    heads: dict[str, str] = {}
    versions: dict[str, int] = {}
    if run_id is None:
        cursor = conn.execute(SELECT_EVENTS + " ORDER BY position")
    else:
        cursor = conn.execute(SELECT_EVENTS + " WHERE run_id = ? ORDER BY position", (run_id,))
    expected_position = 1
    for pos, eid, rid, sv, typ, tv, at, src, payload, prev, h in cursor:
        checked += 1
        last_hash = heads.get(rid, GENESIS_HASH)
        last_version = versions.get(rid, 0)
        heads[rid] = h
        if h == head and reached is None:
            reached = sv
        # a non-integer version (only possible by editing the schema) breaks the chain
        versions[rid] = sv if type(sv) is int else last_version + 1
        if first is not None:
            continue  # only the first problem is reported; keep counting and heads
        if run_id is None and pos != expected_position:
            first = expected_position
            reason = (
                f"position {expected_position} is missing (next is {pos}): events were deleted"
            )
        elif sv != last_version + 1:
            first = pos
            reason = (
                f"position {pos}: run {rid!r} jumps from stream_version {last_version} "
                f"to {sv}: events were deleted or reordered"
            )
        elif prev != last_hash:
            first = pos
            reason = (
                f"position {pos}: prev_hash does not match the hash of the previous "
                f"event of run {rid!r}"
            )
        elif event_hash_fields(prev, eid, rid, sv, typ, tv, at, src, payload) != h:
            first = pos
            reason = f"position {pos}: stored hash does not match its content (edited)"
        expected_position = pos + 1
    if run_id is None and first is None:
        seq = conn.execute(
            "SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'events'), 0)"
        ).fetchone()[0]
        if seq >= expected_position:
            first = expected_position
            reason = (
                f"positions {expected_position}..{seq} are missing: the last events were deleted"
            )
    return checked, heads, first, reason, reached


def _check_blobs(
    conn: sqlite3.Connection, run_id: str | None, *, stop: bool
) -> tuple[int, int | None, str | None]:
    """(blobs counted, position of the first event that mentions the broken blob, why).

    With ``stop`` (an event problem was already found) blobs are only counted.
    """
    counted = 0
    found: tuple[int | None, str] | None = None
    for ref, size, content in conn.execute("SELECT hash, size, content FROM blobs"):
        counted += 1
        if stop or found is not None:
            continue
        problem = blobs.problem(ref, size, content)
        if problem is None:
            continue
        where, params = "instr(payload, ?) > 0", [ref]
        if run_id is not None:
            where += " AND run_id = ?"
            params.append(run_id)
        position = conn.execute(
            f"SELECT min(position) FROM events WHERE {where}", params
        ).fetchone()[0]
        if run_id is not None and position is None:
            continue  # not this run's blob
        found = (position, problem)
    return (counted, *found) if found is not None else (counted, None, None)
