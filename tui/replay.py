"""The playhead: a run's state as of any event, rebuilt with the engine's own fold.

:class:`Replay` keeps three things:

* a light **index** of every event of the run (position, type, time, candidate, iteration and
  a one-line summary), which the timeline, the event log and the step keys work on;
* the **live state**: ``engine.state.fold`` of the first ``cursor`` events, moved forward one
  event at a time with ``engine.state.apply`` (the same function the engine folds with);
* **checkpoints**: snapshots of the state every ``checkpoint_every`` events, so jumping back
  means "restore the nearest checkpoint, apply at most ``checkpoint_every`` events".

Snapshots are copy-on-write. ``apply`` only ever *replaces* nested values, except for the
candidate and iteration records, which it changes in place, and the dict fields of the state,
which it adds to. So a snapshot copies the dicts (pointers only) and takes over the records it
finds; before the live state folds an event that touches a candidate or an iteration it does
not own yet, that one record is copied. A snapshot therefore costs a few dict copies, not a
deep copy of every candidate, and restoring one costs the same.

Event payloads are not kept for the whole run: they are read back in chunks
(``store.read(run_id=, after=, limit=)``) and a few chunks are cached, so a 100k-event run
needs the index plus a few thousand parsed events in memory.

Not thread-safe on its own: callers hold :attr:`lock` around every call and around every read
of :attr:`state`.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import threading
from array import array
from bisect import bisect_left, bisect_right
from collections import OrderedDict
from typing import Any, Callable, Iterable, Iterator, Sequence

from selfdev.engine.api import format_score
from selfdev.engine.state import RunState, apply

#: event types that count as one step of "next candidate" / "next iteration"
ITERATION_START = "iteration.started"

_DICT_FIELDS = tuple(f.name for f in dataclasses.fields(RunState)
                     if f.default_factory is dict)  # type: ignore[misc]


def summarize(type_: str, p: dict[str, Any]) -> str:
    """One line saying what an event did (the event log's text column)."""
    cid = p.get("candidate_id") or ""
    if type_ == "run.started":
        return (f"{p.get('domain')} · {p.get('generator')} · {p.get('optimizer')} · "
                f"{p.get('iterations')} it × {p.get('candidates')} · seed {p.get('seed')}")
    if type_ == "domain.prepared":
        s = p.get("summary") or {}
        return " ".join(f"{k}={v}" for k, v in s.items() if not isinstance(v, (dict, list)))[:120]
    if type_ == "baseline.evaluated":
        if p.get("status", "ok") != "ok":
            return f"{p.get('label')}: {p.get('status')} {p.get('reason') or ''}"
        return (f"{p.get('label')}: dev {format_score(p.get('dev'))} "
                f"test {format_score(p.get('test'))}")
    if type_ == "iteration.started":
        return f"iteration {p.get('iteration')} · T={format_score(p.get('temperature'))}"
    if type_ == "candidate.generated":
        return f"{cid} generated"
    if type_ == "candidate.screened":
        status = p.get("status")
        if status == "accepted":
            return f"{cid} accepted"
        if status == "duplicate":
            return f"{cid} duplicate of {p.get('duplicate_of')}"
        return f"{cid} {status}: {p.get('reason') or ''}"
    if type_ == "candidate.executed":
        status = p.get("status")
        ms = p.get("duration_ms")
        took = f" in {ms:.1f} ms" if isinstance(ms, (int, float)) else ""
        if status == "ok":
            return f"{cid} ran ok{took}"
        return f"{cid} {status}{took}: {p.get('reason') or ''}"
    if type_ == "candidate.evaluated":
        score = p.get("score")
        if score is None:
            err = (p.get("metrics") or {}).get("error", "")
            return f"{cid} {p.get('split')} not scored {err}".rstrip()
        return f"{cid} {p.get('split')} {format_score(score)}"
    if type_ == "pairs.built":
        return (f"iteration {p.get('iteration')}: {len(p.get('chosen') or [])} chosen, "
                f"{len(p.get('rejected') or [])} rejected, {len(p.get('pairs') or [])} pairs")
    if type_ == "factory.refined":
        m = p.get("metrics") or {}
        bits = [f"{k} {format_score(v)}" for k, v in m.items() if not isinstance(v, (dict, list))]
        return f"iteration {p.get('iteration')}: {p.get('optimizer')} " + " ".join(bits[:4])
    if type_ == "iteration.finished":
        s = p.get("stats") or {}
        return (f"iteration {p.get('iteration')}: best {format_score(s.get('best'))} "
                f"mean {format_score(s.get('mean'))}")
    if type_ == "selection.tested":
        return f"top {p.get('k')} scored on test; best by dev {p.get('best_dev')}"
    if type_ == "run.finished":
        rows = len(p.get('summary') or [])
        return f"{rows} row{'' if rows == 1 else 's'} in the final table"
    if type_ == "run.failed":
        return f"failed: {p.get('reason')}"
    if type_ == "run.resumed":
        return f"resumed at version {p.get('at_version')}"
    text = json.dumps(p, sort_keys=True, default=str)
    return text[:120]


class EventIndex:
    """Parallel columns, one entry per event of the run, in log order."""

    __slots__ = ("positions", "types", "times", "sources", "cids", "iters", "texts",
                 "iteration_starts", "_cid_iter", "_lower")

    def __init__(self) -> None:
        self.positions = array("q")
        self.types: list[str] = []
        self.times: list[str] = []
        self.sources: list[str] = []
        self.cids: list[str | None] = []
        self.iters = array("i")
        self.texts: list[str] = []
        self.iteration_starts: list[int] = []  # indices of iteration.started events
        self._cid_iter: dict[str, int] = {}
        self._lower: list[str] | None = None

    def __len__(self) -> int:
        return len(self.positions)

    def add(self, events: Iterable[Any]) -> None:
        interned = _interned
        cid_iter = self._cid_iter
        positions, types, times, sources = self.positions, self.types, self.times, self.sources
        cids, iters, texts = self.cids, self.iters, self.texts
        for e in events:
            p = e.payload
            t = interned.get(e.type) or interned.setdefault(e.type, e.type)
            cid = p.get("candidate_id")
            if cid.__class__ is not str:
                cid = None
            it = p.get("iteration")
            if cid is not None:
                if t == "candidate.generated" and it.__class__ is int:
                    cid_iter[cid] = it
                else:
                    it = cid_iter.get(cid, 0)
            if it.__class__ is not int:
                it = 0
            positions.append(e.position)
            types.append(t)
            times.append(e.occurred_at)
            src = e.source
            sources.append(interned.get(src) or interned.setdefault(src, src))
            cids.append(cid)
            iters.append(it)
            texts.append(summarize(t, p))
            if t == ITERATION_START:
                self.iteration_starts.append(len(types) - 1)
        self._lower = None

    def search_text(self, i: int) -> str:
        if self._lower is None or len(self._lower) < len(self.texts):
            start = 0 if self._lower is None else len(self._lower)
            if self._lower is None:
                self._lower = []
            self._lower.extend(f"{self.types[j]} {self.texts[j]} {self.sources[j]}".lower()
                               for j in range(start, len(self.texts)))
        return self._lower[i]

    def filter(self, types: set[str] | None = None, query: str = "", start: int = 0) -> list[int]:
        """Indices (from ``start`` on) of the events whose type is in ``types`` (all if None)
        and whose text holds ``query`` (case-insensitive)."""
        n = len(self.types)
        if types is None:
            idx: Iterable[int] = range(start, n)
        else:
            ts = self.types
            idx = [i for i in range(start, n) if ts[i] in types]
        q = query.strip().lower()
        if not q:
            return list(idx)
        self.search_text(0) if n else None
        low = self._lower or []
        return [i for i in idx if q in low[i]]

    def iteration_at(self, cursor: int) -> int:
        """The iteration (1-based; 0 before the first) that the first ``cursor`` events reach."""
        return bisect_right(self.iteration_starts, cursor - 1)


_interned: dict[str, str] = {}


def _copy(record: Any) -> Any:
    """A shallow copy of a state record (faster than copy.copy for plain dataclasses)."""
    try:
        new = object.__new__(record.__class__)
        new.__dict__.update(record.__dict__)
        return new
    except (AttributeError, TypeError):  # a record with __slots__
        return copy.copy(record)


def snapshot(state: RunState) -> RunState:
    """A frozen copy of ``state`` sharing its records (see the module docstring)."""
    snap = copy.copy(state)
    for name in _DICT_FIELDS:
        setattr(snap, name, dict(getattr(state, name)))
    return snap


class Replay:
    """A run's events, and its state folded up to :attr:`cursor` of them."""

    def __init__(
        self,
        reader: Callable[[int, int], Sequence[Any]],
        *,
        checkpoint_every: int = 2000,
        chunk: int = 1000,
        cache_chunks: int = 12,
    ) -> None:
        """``reader(after_position, limit)`` returns up to ``limit`` events of the run with a
        position after ``after_position``, in log order."""
        self.reader = reader
        self.checkpoint_every = checkpoint_every
        self.chunk = chunk
        self.cache_chunks = cache_chunks
        self.index = EventIndex()
        self.lock = threading.RLock()
        self.state = RunState()
        self.cursor = 0
        self._checkpoints: dict[int, RunState] = {0: snapshot(RunState())}
        self._owned_c: set[str] = set()
        self._owned_i: set[int] = set()
        self._chunks: OrderedDict[int, list[Any]] = OrderedDict()

    @classmethod
    def for_store(cls, store: Any, run_id: str, **kw: Any) -> Replay:
        def reader(after: int, limit: int) -> Sequence[Any]:
            return store.read(run_id=run_id, after=after, limit=limit)

        return cls(reader, **kw)

    # -- events --------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.index)

    def add(self, events: Sequence[Any]) -> None:
        """Index new events (the next ones in log order) and cache them."""
        if not events:
            return
        start = len(self.index)
        self.index.add(events)
        c = self.chunk
        i = 0
        while i < len(events):
            j = (start + i) // c
            take = min(len(events) - i, (j + 1) * c - (start + i))
            part = list(events[i:i + take])
            cached = self._chunks.get(j)
            if cached is not None and len(cached) == (start + i) - j * c:
                cached.extend(part)
                self._chunks.move_to_end(j)
            elif (start + i) % c == 0:
                self._chunks[j] = part
            i += take
        while len(self._chunks) > self.cache_chunks:
            self._chunks.popitem(last=False)

    def _chunk(self, j: int) -> list[Any]:
        c = self.chunk
        want = min(c, len(self.index) - j * c)
        got = self._chunks.get(j)
        if got is not None and len(got) >= want:
            self._chunks.move_to_end(j)
            return got
        first = j * c
        after = self.index.positions[first - 1] if first else 0
        got = list(self.reader(after, want))
        if len(got) < want:
            raise RuntimeError(f"the store returned {len(got)} events, expected {want}")
        self._chunks[j] = got
        while len(self._chunks) > self.cache_chunks:
            self._chunks.popitem(last=False)
        return got

    def events(self, start: int, stop: int) -> Iterator[Any]:
        """Events ``start .. stop-1`` (0-based indices into the run)."""
        c = self.chunk
        i = start
        while i < stop:
            j = i // c
            part = self._chunk(j)
            lo = i - j * c
            hi = min(stop - j * c, len(part))
            yield from part[lo:hi]
            i = j * c + hi

    # -- folding -------------------------------------------------------------------------

    def _fold_forward(self, stop: int) -> None:
        state = self.state
        owned_c, owned_i = self._owned_c, self._owned_i
        cands, iters = state.candidates, state.iterations
        k = self.checkpoint_every
        i = self.cursor
        for e in self.events(self.cursor, stop):
            p = e.payload
            cid = p.get("candidate_id")
            if isinstance(cid, str) and cid not in owned_c:
                rec = cands.get(cid)
                if rec is not None:
                    cands[cid] = _copy(rec)
                owned_c.add(cid)
            it = p.get("iteration")
            if isinstance(it, int) and it not in owned_i:
                rec = iters.get(it)
                if rec is not None:
                    iters[it] = _copy(rec)
                owned_i.add(it)
            apply(state, e)
            i += 1
            if i % k == 0 and i not in self._checkpoints:
                self._checkpoints[i] = snapshot(state)
                owned_c.clear()
                owned_i.clear()
        self.cursor = i

    def _restore(self, at: int) -> None:
        self.state = snapshot(self._checkpoints[at])
        self._owned_c = set()
        self._owned_i = set()
        self.cursor = at

    def seek(self, k: int) -> int:
        """Fold exactly the first ``k`` events (clamped to what is indexed); returns k."""
        k = max(0, min(k, len(self.index)))
        if k == self.cursor:
            return k
        base = max(c for c in self._checkpoints if c <= k)
        if k < self.cursor or base > self.cursor:
            self._restore(base)
        self._fold_forward(k)
        return k

    def state_at(self, k: int) -> RunState:
        """A private copy of the state after ``k`` events (the cursor does not move)."""
        cur = self.cursor
        self.seek(k)
        snap = copy.deepcopy(self.state)
        self.seek(cur)
        return snap

    @property
    def checkpoints(self) -> list[int]:
        return sorted(self._checkpoints)

    # -- navigation ----------------------------------------------------------------------

    def next_index(self, frm: int, pred: Callable[[int], bool], direction: int) -> int | None:
        """The first event index after (direction 1) or before (-1) ``frm`` for which
        ``pred(i)`` holds, or None."""
        n = len(self.index)
        i = frm + direction
        while 0 <= i < n:
            if pred(i):
                return i
            i += direction
        return None

    def candidate_step(self, cursor: int, direction: int) -> int:
        """The cursor one candidate away: the next (previous) candidate event about another
        candidate than the one the playhead is on."""
        cids = self.index.cids
        n = len(cids)
        cur = cids[cursor - 1] if 0 < cursor <= n else None
        if direction > 0:
            i = self.next_index(cursor - 1, lambda j: cids[j] is not None and cids[j] != cur, 1)
            return n if i is None else i + 1
        # back: to the first event of the previous run of events about one candidate
        i = self.next_index(cursor - 1, lambda j: cids[j] is not None and cids[j] != cur, -1)
        if i is None:
            return 0
        while i > 0 and cids[i - 1] == cids[i]:
            i -= 1
        return i + 1

    def iteration_step(self, cursor: int, direction: int) -> int:
        """The cursor at the next (previous) iteration.started, or the end (start)."""
        starts = self.index.iteration_starts
        n = len(self.index)
        if direction > 0:
            j = bisect_right(starts, cursor - 1)  # first start after the current event
            return starts[j] + 1 if j < len(starts) else n
        j = bisect_left(starts, cursor - 1) - 1  # last start before the current event
        return starts[j] + 1 if j >= 0 else 0
