"""Benchmark of the event store: ``python bench/store.py [--events 100000] [--batch 1000]``.

Measures, on fresh WAL files in a temporary folder:

(a) baseline: a bare sqlite-utils ``insert_all`` of equivalent rows (same columns, same
    payload text, precomputed hashes) into a plain table with the same indexes;
(b) ``EventStore.append`` in batches (ids, canonical JSON, hash chain);
(c) ``EventStore.verify()`` over the whole file;

and prints events/s and the ratio of (b) and (c) to (a). The events are an engine-like mix:
per candidate a generated, screened, executed and evaluated event, plus run and iteration
events, spread over a few runs.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlite_utils import Database  # noqa: E402

from selfdev.store import EventStore, NewEvent, canonical_json, content_hash  # noqa: E402

GOALS = {"append": 50_000, "verify": 100_000}


def engine_like_events(n: int, runs: int = 4) -> list[tuple[str, NewEvent]]:
    """``n`` events over ``runs`` runs, shaped like what the engine emits."""
    per_run = n // runs
    out: list[tuple[str, NewEvent]] = []
    for r in range(runs):
        run_id = f"run-{r:02d}"
        count = per_run if r < runs - 1 else n - per_run * (runs - 1)
        events = [
            NewEvent(
                "run.started",
                {"config": {"seed": r, "iterations": 10**6}, "domain": "tensors",
                 "generator": "tiny", "optimizer": "dpo", "evaluator": "mse",
                 "iterations": 10**6, "candidates": 16, "seed": r},
            )
        ]  # fmt: skip
        it = 0
        while len(events) < count:
            it += 1
            events.append(NewEvent("iteration.started", {"iteration": it, "temperature": 0.8}))
            for i in range(16):
                cid = f"c{it:05d}-{i:02d}"
                ref = content_hash(f"{run_id}/{cid}")
                events += [
                    NewEvent("candidate.generated",
                             {"candidate_id": cid, "iteration": it, "index": i,
                              "completion": ref, "prompt": ref}),
                    NewEvent("candidate.screened",
                             {"candidate_id": cid, "status": "accepted", "reason": None,
                              "code": ref, "ast_hash": ref}),
                    NewEvent("candidate.executed",
                             {"candidate_id": cid, "status": "ok", "reason": None,
                              "duration_ms": 12.5}),
                    NewEvent("candidate.evaluated",
                             {"candidate_id": cid, "split": "dev", "score": (it * 16 + i) % 97 / 97,
                              "metrics": {"mse": 0.01 * i, "params": 1234}}),
                ]  # fmt: skip
        out += [(run_id, e) for e in events[:count]]
    return out


def baseline_rows(events: list[tuple[str, NewEvent]]) -> list[dict]:
    """The rows an event log holds for ``events``, with stand-in ids and hashes."""
    versions: dict[str, int] = {}
    rows = []
    for pos, (run_id, e) in enumerate(events, 1):
        versions[run_id] = versions.get(run_id, 0) + 1
        rows.append(
            {"position": pos, "event_id": f"id-{pos:032d}", "run_id": run_id,
             "stream_version": versions[run_id], "type": e.type, "type_version": 1,
             "occurred_at": "2026-01-01T00:00:00.000000Z", "source": e.source,
             "payload": canonical_json(e.payload), "prev_hash": "b2:" + f"{pos - 1:064x}",
             "hash": "b2:" + f"{pos:064x}"}
        )  # fmt: skip
    return rows


def open_baseline(path: str):
    """A plain table with the same columns and indexes as ``events`` (no triggers, no chain)."""
    db = Database(path)
    db.enable_wal()
    db.execute("PRAGMA synchronous=NORMAL")
    table = db["events"]
    table.create(
        {"position": int, "event_id": str, "run_id": str, "stream_version": int, "type": str,
         "type_version": int, "occurred_at": str, "source": str, "payload": str,
         "prev_hash": str, "hash": str},
        pk="position",
    )  # fmt: skip
    table.create_index(["event_id"], unique=True)
    table.create_index(["run_id", "stream_version"], unique=True)
    table.create_index(["run_id", "position"])
    table.create_index(["type"])
    return db, table


def baseline(table, rows: list[dict], batch: int) -> None:
    for i in range(0, len(rows), batch):
        table.insert_all(rows[i : i + batch], batch_size=batch)


def append_batches(
    events: list[tuple[str, NewEvent]], batch: int
) -> list[tuple[str, list[NewEvent]]]:
    """Consecutive events of one run, at most ``batch`` per append."""
    batches: list[tuple[str, list[NewEvent]]] = []
    for run_id, e in events:
        if not batches or batches[-1][0] != run_id or len(batches[-1][1]) >= batch:
            batches.append((run_id, []))
        batches[-1][1].append(e)
    return batches


def bench_append(es: EventStore, batches: list[tuple[str, list[NewEvent]]]) -> None:
    for run_id, chunk in batches:
        es.append(run_id, chunk)


def bench_verify(es: EventStore) -> int:
    result = es.verify()
    assert result.ok, result
    return result.checked


def timed(fn, *args):
    """(wall seconds, CPU seconds of this process, result) of one call."""
    w0, c0 = time.perf_counter(), time.process_time()
    result = fn(*args)
    return time.perf_counter() - w0, time.process_time() - c0, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument(
        "--repeat", type=int, default=3, help="rounds on fresh files; the best of each is kept"
    )
    parser.add_argument(
        "--strict", action="store_true", help="exit 1 when a goal is missed (wall clock)"
    )
    args = parser.parse_args(argv)
    n = args.events
    events = engine_like_events(n)
    rows = baseline_rows(events)
    batches = append_batches(events, args.batch)
    best: dict[str, tuple[float, float]] = {}
    size = 0

    def keep(name: str, wall: float, cpu: float) -> None:
        old = best.get(name)
        best[name] = (min(wall, old[0]), min(cpu, old[1])) if old else (wall, cpu)

    load = os.getloadavg()[0]
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory() as tmp:
            db, table = open_baseline(os.path.join(tmp, "baseline.db"))
            wall, cpu, _ = timed(baseline, table, rows, args.batch)
            db.close()
            keep("baseline", wall, cpu)
            path = os.path.join(tmp, "runs.db")
            with EventStore(path, writer="bench") as es:
                wall, cpu, _ = timed(bench_append, es, batches)
            keep("append", wall, cpu)
            with EventStore(path, readonly=True) as reader:  # a fresh connection, cold cache
                wall, cpu, checked = timed(bench_verify, reader)
            keep("verify", wall, cpu)
            assert checked == n
            size = os.path.getsize(path)
    rate = {name: (n / wall, n / cpu) for name, (wall, cpu) in best.items()}
    base = rate["baseline"][0]
    print(
        f"events: {n:,} in batches of {args.batch} (engine-like mix, 4 runs); "
        f"db {size / 1e6:.1f} MB; best of {args.repeat}; load average {load:.2f} "
        f"on {os.cpu_count()} CPUs"
    )
    labels = {
        "baseline": "(a) sqlite-utils insert_all baseline",
        "append": "(b) EventStore.append              ",
        "verify": "(c) EventStore.verify              ",
    }
    for name, label in labels.items():
        wall_rate, cpu_rate = rate[name]
        line = (
            f"{label}: {best[name][0]:6.2f} s  {wall_rate:9,.0f} events/s "
            f"(per CPU second: {cpu_rate:9,.0f})"
        )
        if name in GOALS:
            line += f"  = {wall_rate / base:.2f}x baseline  (goal >= {GOALS[name]:,})"
        print(line)
    met = all(rate[name][0] >= goal for name, goal in GOALS.items())
    print("goals met" if met else "GOALS NOT MET (wall clock; see the per-CPU-second rates)")
    return 0 if met or not args.strict else 1


if __name__ == "__main__":
    raise SystemExit(main())
