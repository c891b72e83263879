"""The playhead model: checkpointed, copy-on-write folding gives exactly the engine's fold."""
import random

import pytest

from selfdev.engine import events as ev
from selfdev.engine.state import fold
from selfdev.store import EventStore
from selfdev.tui.replay import Replay, summarize


@pytest.fixture(scope="module")
def events(run_db):
    path, run_id, _ = run_db
    with EventStore(path, readonly=True) as store:
        return list(store.iter_events(run_id=run_id))


def replay_of(events, **kw):
    by_pos = {e.position: i for i, e in enumerate(events)}

    def reader(after, limit):
        start = by_pos[after] + 1 if after else 0
        return events[start:start + limit]

    r = Replay(reader, **kw)
    return r


@pytest.mark.parametrize("every,chunk", [(7, 5), (50, 16), (2000, 1000)])
def test_seek_anywhere_equals_the_engine_fold(events, every, chunk):
    r = replay_of(events, checkpoint_every=every, chunk=chunk, cache_chunks=2)
    r.add(events)
    n = len(events)
    rng = random.Random(every)
    targets = [n, 0, n - 1, 1, every, every - 1, every + 1] + rng.sample(range(n + 1), 25)
    for k in (min(t, n) for t in targets):
        assert r.seek(k) == k
        assert r.state == fold(events[:k]), f"state after {k} events"
    # stepping back one at a time across checkpoints
    r.seek(min(n, 3 * every + 2))
    for k in range(min(n, 3 * every + 1), max(0, 2 * every - 3), -1):
        r.seek(k)
        assert r.state == fold(events[:k])


def test_checkpoints_are_not_changed_by_later_folding(events):
    r = replay_of(events, checkpoint_every=10, chunk=8)
    r.add(events)
    r.seek(len(events))
    assert len(r.checkpoints) == len(events) // 10 + 1
    for at in r.checkpoints[1:6]:
        r.seek(at)
        assert r.state == fold(events[:at])
        r.seek(len(events))
    # the live state owns what it changes: a snapshot taken now is not moved by seeking on
    snap = r.state_at(40)
    r.seek(len(events))
    assert snap == fold(events[:40])


def test_events_are_read_in_chunks_and_cached(events):
    calls = []
    base = replay_of(events, checkpoint_every=20, chunk=10, cache_chunks=3)
    reader = base.reader
    base.reader = lambda after, limit: calls.append((after, limit)) or reader(after, limit)
    for i in range(0, len(events), 10):  # as the loader does: add a page, fold it
        base.add(events[i:i + 10])
        base.seek(len(base))
    assert calls == []
    base.seek(5)
    assert calls and all(limit <= 10 for _, limit in calls)
    before = len(calls)
    base.seek(6)
    base.seek(4)
    assert len(calls) == before  # same chunk, cached


def test_growing_log_keeps_the_fold_exact(events):
    r = replay_of(events, checkpoint_every=9, chunk=4)
    for i in range(0, len(events), 13):
        r.add(events[i:i + 13])
        r.seek(len(r))
        assert r.state == fold(events[:len(r)])


def test_candidate_and_iteration_steps(events):
    r = replay_of(events)
    r.add(events)
    idx = r.index
    n = len(events)
    # next iteration lands on iteration.started events, in order, then the end
    k, seen = 0, []
    while k < n:
        k = r.iteration_step(k, 1)
        seen.append(k)
    starts = [i + 1 for i, t in enumerate(idx.types) if t == "iteration.started"]
    assert seen == starts + [n]
    assert r.iteration_step(starts[1] + 5, -1) == starts[1]
    assert r.iteration_step(starts[1], -1) == starts[0]
    assert r.iteration_step(starts[0], -1) == 0
    # next candidate: the playhead lands on an event about another candidate
    k = starts[0]
    prev = None
    for _ in range(30):
        k2 = r.candidate_step(k, 1)
        if k2 >= n:
            break
        assert idx.cids[k2 - 1] is not None and idx.cids[k2 - 1] != idx.cids[k - 1]
        back = r.candidate_step(k2, -1)
        assert back <= k
        prev, k = k, k2
    assert prev is not None


def test_index_filter_and_search(events):
    r = replay_of(events)
    r.add(events)
    idx = r.index
    evaluated = idx.filter({"candidate.evaluated"})
    assert evaluated and all(idx.types[i] == "candidate.evaluated" for i in evaluated)
    some = idx.cids[evaluated[0]]
    hits = idx.filter(None, some.upper())
    assert hits and all(some in idx.texts[i] for i in hits)
    assert idx.filter({"candidate.evaluated"}, some) == [i for i in hits if i in evaluated]
    assert idx.filter(None, "no such text anywhere") == []
    # filtering only what arrived since the last time gives the same rows
    half = len(events) // 2
    tail = idx.filter({"candidate.evaluated"}, "", half)
    assert [i for i in evaluated if i < half] + tail == evaluated


def test_every_event_type_has_a_summary():
    for type_, cls in ev.EVENT_TYPES.items():
        assert isinstance(summarize(type_, cls().payload()), str)
    assert summarize("plugin.custom", {"x": 1}) == '{"x": 1}'
