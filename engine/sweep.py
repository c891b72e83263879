"""``selfdev sweep``: a grid of runs (seeds x ``--set`` values) into one database.

How the work is split, and why: the log has one writer (``store/lock.py``: a second writer is
refused), and a run's steps are computed from its folded log. The sweep's own process is that
single writer; it starts each grid point's run (``run.started``) and hands it to one of
``--workers`` worker processes. A worker drives the run with the engine's ordinary
:class:`~selfdev.engine.loop.Runner`, over a store whose reads go to the database opened
read-only (SQLite's WAL lets readers see every commit) and whose writes (``append`` and
``put_blob``) are sent to the sweep process, which appends them, under its lock, and answers
with the stored events. So the worker computes (samples, runs candidates in the sandbox,
scores, trains the factory) and the single writer records; nothing a worker computes reaches
the log except through the writer, and a worker cannot outlive it: it dies with the sweep
process (``PR_SET_PDEATHSIG``) and its next write would find no one to take it.

Resumable as a whole: every run of the sweep is tagged ``sweep:NAME`` and its ``[run]``
configuration is the grid point's, so the same command run again finds the runs it started,
skips the finished ones, resumes the others exactly as ``selfdev resume`` does (the engine
redoes only what the log has no completion event for, with the same seeds), and starts the
points it never reached. A run found under the sweep's name with another configuration is
refused rather than silently compared with the wrong settings.
"""
from __future__ import annotations

import copy
import itertools
import os
import re
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from selfdev.engine.api import ConfigError, SelfdevError

#: a sweep's name becomes the tag ``sweep:NAME``: keep it one plain word
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


# ---- the grid ------------------------------------------------------------------------------

def parse_seeds(text: str) -> list[int]:
    """``0-4`` -> [0, 1, 2, 3, 4]; ``0,2,7`` and ``0-2,9`` too; order kept, repeats dropped."""
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        m = re.fullmatch(r"(-?\d+)(?:-(-?\d+))?", part)
        if not m:
            raise SelfdevError(f"--seeds {text!r}: expected integers and ranges such as 0-4 "
                               "or 0,1,5 or 0-2,7")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        if hi < lo:
            raise SelfdevError(f"--seeds {text!r}: the range {part} runs backwards; write "
                               f"{hi}-{lo}")
        seeds += range(lo, hi + 1)
    return list(dict.fromkeys(seeds))


def _value(text: str) -> Any:
    """A ``--set`` value as TOML reads it (0.1 a number, true a boolean), else the text itself
    (so ``generator.name=tiny,grammar`` needs no quotes)."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_set(text: str) -> tuple[str, list[Any]]:
    """``temperature.beta=0,0.1,0.2`` -> ("temperature.beta", [0, 0.1, 0.2])."""
    key, sep, values = text.partition("=")
    key = key.strip()
    if not sep or not re.fullmatch(r"[A-Za-z_][\w-]*\.[A-Za-z_][\w-]*", key):
        raise SelfdevError(f"--set {text!r}: expected SECTION.KEY=V1,V2,... such as "
                           "temperature.beta=0,0.1,0.2,0.4")
    if key == "run.seed":
        raise SelfdevError("--set run.seed: sweep seeds with --seeds (e.g. --seeds 0-4)")
    if key in ("run.name", "run.tags"):
        raise SelfdevError(f"--set {key}: the sweep names and tags its runs itself "
                           "(--name NAME tags them sweep:NAME)")
    items = [v.strip() for v in values.split(",")]
    if not values.strip() or any(not v for v in items):
        raise SelfdevError(f"--set {text!r}: a value is empty; give comma-separated values, "
                           f"e.g. {key}=0,0.1")
    parsed = list(dict.fromkeys(_value(v) for v in items))
    return key, parsed


@dataclass
class Point:
    """One run of the grid: its seed, its swept values and the configuration it runs."""

    seed: int
    values: dict[str, Any]
    config: dict[str, Any]  # validated and normalised (``RunConfig.to_dict()``)

    @property
    def label(self) -> str:
        return " ".join([f"seed={self.seed}", *(f"{k}={v}" for k, v in self.values.items())])


@dataclass
class Sweep:
    """A planned sweep: what :func:`plan_sweep` checked, what :func:`run_sweep` runs."""

    name: str
    config_path: Path
    seeds: list[int]
    sets: dict[str, list[Any]]
    points: list[Point] = field(default_factory=list)

    @property
    def tag(self) -> str:
        return f"sweep:{self.name}"

    @property
    def keys(self) -> list[str]:
        return list(self.sets)


def plan_sweep(config: str | Path, seeds: str | None = None, sets: Sequence[str] = (),
               name: str | None = None) -> Sweep:
    """Read ``config``, parse ``--seeds`` and the ``--set`` items, and validate every point of
    the grid as ``selfdev run`` would (components, options, preflight) before anything is
    written: a typo in the last value is refused now, not after an hour of runs.

    ``seeds`` None keeps the configuration's seed; ``name`` None is the config file's stem.
    Points are in order of the swept values (the first ``--set`` varying slowest), each over
    the seeds.
    """
    from selfdev.engine.config import from_dict, load
    from selfdev.engine.loop import check_config

    path = Path(config)
    base = load(path).to_dict()
    name = path.stem if name is None else name
    if not NAME_RE.match(name):
        raise SelfdevError(f"--name {name!r}: use letters, digits, '_', '.', '-' (at most 64, "
                           "starting with a letter or digit); it becomes the tag sweep:NAME")
    seed_list = parse_seeds(seeds) if seeds is not None else [base["run"]["seed"]]
    swept: dict[str, list[Any]] = {}
    for item in sets:
        key, values = parse_set(item)
        if key in swept:
            raise SelfdevError(f"--set {key} is given twice; list all its values in one "
                               f"--set {key}=V1,V2,...")
        section, option = key.split(".", 1)
        if section not in base:
            raise SelfdevError(f"--set {key}: no section [{section}]; the sections are "
                               f"{', '.join(base)}")
        swept[key] = values
    sweep = Sweep(name, path, seed_list, swept)
    combos = list(itertools.product(*swept.values())) if swept else [()]
    for combo in combos:
        values = dict(zip(swept, combo))
        for seed in seed_list:
            data = copy.deepcopy(base)
            data["run"]["seed"] = seed
            for key, value in values.items():
                section, option = key.split(".", 1)
                data[section][option] = value
            point = Point(seed, values, data)
            run = data["run"]
            run["tags"] = [*(t for t in run.get("tags") or [] if t != sweep.tag), sweep.tag]
            run["name"] = f"{run.get('name') or name}: {point.label}"
            try:
                cfg = from_dict(data)
                check_config(cfg)
            except ConfigError as exc:
                raise ConfigError(f"{exc} (sweep point {point.label})") from None
            point.config = cfg.to_dict()
            # the values as the run records them (0 becomes 0.0 for a float key), so the
            # same sweep run again finds its runs by what their logs say
            flat = _flat(point.config)
            point.values = {k: flat.get(k) for k in values}
            sweep.points.append(point)
    return sweep


# ---- finding the sweep's runs again ------------------------------------------------------------

def _flat(config: dict[str, Any]) -> dict[str, Any]:
    from selfdev.engine.compare import flatten

    return flatten(config)


def existing_runs(store: Any, sweep: Sweep) -> dict[int, dict[str, Any]]:
    """Grid point index -> the listing row of the run already recorded for it (the finished
    one if there are several, else the last begun). A run tagged with the sweep whose seed
    and swept values are a point's but whose configuration differs elsewhere is refused."""
    from selfdev.engine.runs import run_summaries

    found: dict[int, dict[str, Any]] = {}
    index = {(p.seed, tuple(repr(v) for v in p.values.values())): i
             for i, p in enumerate(sweep.points)}
    for row in run_summaries(store):
        if sweep.tag not in (row.get("tags") or ()):
            continue
        flat = _flat(row.get("config") or {})
        key = (flat.get("run.seed"), tuple(repr(flat.get(k)) for k in sweep.keys))
        i = index.get(key)
        if i is None:
            continue  # another grid under the same name: not this sweep's point
        want = _flat(sweep.points[i].config)
        differ = sorted(k for k in set(want) | set(flat) if want.get(k) != flat.get(k))
        if differ:
            k = differ[0]
            raise SelfdevError(
                f"sweep {sweep.name!r}: run {row['run_id']} ({sweep.points[i].label}) was made "
                f"with another configuration ({k} = {flat.get(k)!r} there, {want.get(k)!r} "
                f"now); give this sweep another --name, or run the configuration it was made "
                "with")
        if i not in found or found[i].get("status") != "finished":
            found[i] = row
    return found


# ---- the worker side ---------------------------------------------------------------------------

class WriterGone(BaseException):
    """The sweep process (the single writer) is gone, or stopped this worker. A
    ``BaseException``, like ``KeyboardInterrupt``: the run loop must not try to record a
    failure it has no writer for; its ``finally`` still closes the components."""


class WriterProxy:
    """The store a worker's :class:`~selfdev.engine.loop.Runner` uses: reads from the database
    opened read-only, writes sent to the sweep process, which appends them and answers with the
    stored events (so the worker folds exactly what was recorded)."""

    def __init__(self, conn: Any, db: str) -> None:
        from selfdev.store import EventStore

        self._conn = conn
        self._reader = EventStore(db, readonly=True)
        self.path = self._reader.path
        self.memory = False
        self.readonly = False

    def _call(self, *message: Any) -> Any:
        try:
            self._conn.send(message)
            reply = self._conn.recv()
        except (EOFError, OSError) as exc:
            raise WriterGone(f"the sweep process is gone ({type(exc).__name__})") from None
        if reply[0] == "error":
            raise SelfdevError(f"the sweep's writer refused a write: {reply[1]}")
        return reply[1]

    def append(self, run_id: str, events: list[Any], expected_version: int | None = None
               ) -> list[Any]:
        return self._call("append", run_id, list(events), expected_version)

    def put_blob(self, data: bytes | str) -> str:
        return self._call("blob", data)

    def close(self) -> None:
        self._reader.close()

    def __getattr__(self, name: str) -> Any:  # reads: iter_events, read, get_text, head, ...
        return getattr(self._reader, name)


def _die_with_parent(parent: int) -> None:
    """Ask Linux to kill this worker when the sweep process dies (even by SIGKILL)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # died before the request took effect
        os._exit(1)


def _on_term(signum: int, frame: Any) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    raise WriterGone("stopped by the sweep process")


def worker_main(argv: Sequence[str] | None = None) -> None:
    """A worker process: ``python -c ... FD DB PARENT_PID``. Receives ``("run", run_id)``,
    drives that run to its end through a :class:`WriterProxy`, answers ``("done", run_id,
    status, reason)``; ``("stop",)`` ends it."""
    from multiprocessing.connection import Connection

    fd, db, parent = argv or sys.argv[1:4]
    _die_with_parent(int(parent))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the sweep process's to handle
    signal.signal(signal.SIGTERM, _on_term)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as `selfdev` sets (engine/cli.py)
    conn = Connection(int(fd))
    from selfdev.engine.loop import Runner
    from selfdev.engine.report import status

    store = WriterProxy(conn, db)
    try:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                return
            if message[0] != "run":
                return
            run_id = message[1]
            try:
                state = Runner(store, run_id).run()
                reply = ("done", run_id, status(state), state.failed)
            except Exception as exc:  # noqa: BLE001 - a failed run is told to the writer
                reply = ("done", run_id, "failed", str(exc))
            try:
                conn.send(reply)
            except (EOFError, OSError):
                return
    except WriterGone:
        return
    finally:
        store.close()


@dataclass
class _Worker:
    proc: subprocess.Popen
    conn: Any
    point: int | None = None  # the grid point it is running
    run_id: str | None = None
    since: float = 0.0


def _spawn(db: str) -> _Worker:
    from multiprocessing.connection import Connection

    ours, theirs = socket.socketpair()
    code = "from selfdev.engine.sweep import worker_main; worker_main()"
    try:
        proc = subprocess.Popen([sys.executable, "-c", code, str(theirs.fileno()), db,
                                 str(os.getpid())], pass_fds=[theirs.fileno()],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    finally:
        theirs.close()
    return _Worker(proc, Connection(ours.detach()))


# ---- the writer side ---------------------------------------------------------------------------

def run_sweep(sweep: Sweep, db: Path | None = None, *, workers: int = 1,
              echo: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run every point of ``sweep`` not finished yet into ``db`` with ``workers`` worker
    processes (this process is the single writer: see the module docstring), then compare
    the grid's runs grouped by the swept keys.

    Returns ``{"sweep", "db", "config", "seeds", "sets", "points": [{"seed", "values",
    "run_id", "status", "reason"}], "comparison": compare_runs(...)}``; ``echo`` gets one
    progress line at a time (None: quiet). Ctrl-C stops the workers and raises
    ``KeyboardInterrupt``; what was recorded stays, and the same sweep continues from it.
    """
    from selfdev.engine.compare import compare_runs
    from selfdev.engine.runs import default_db, open_store

    say = echo or (lambda line: None)
    path = Path(db or default_db())
    points = sweep.points
    outcome: dict[int, dict[str, Any]] = {}
    with open_store(path, readonly=False) as store:
        found = existing_runs(store, sweep)
        todo = deque()
        for i, p in enumerate(points):
            row = found.get(i)
            if row is not None and row.get("status") == "finished":
                outcome[i] = {"run_id": row["run_id"], "status": "finished", "reason": None}
            else:
                todo.append((i, row["run_id"] if row else None))
        resumed = sum(1 for _, rid in todo if rid)
        say(f"sweep {sweep.name}: {len(points)} runs ({_shape(sweep)}) in {path}; "
            f"{len(outcome)} finished already, {resumed} to resume, {len(todo) - resumed} "
            f"to start; {min(workers, len(todo)) if todo else 0} worker process(es)")
        pool: list[_Worker] = []
        try:
            for _ in range(min(workers, len(todo))):
                pool.append(_spawn(str(store.path)))
            _drive(store, sweep, pool, todo, outcome, say)
        finally:
            _stop(pool)
    ids = [outcome[i]["run_id"] for i in range(len(points)) if i in outcome]
    with open_store(path, readonly=True) as store:
        comparison = compare_runs(store, ids, sweep.keys) if ids else None
    return {
        "sweep": sweep.name, "tag": sweep.tag, "db": str(path),
        "config": str(sweep.config_path), "seeds": sweep.seeds, "sets": sweep.sets,
        "points": [{"seed": p.seed, "values": p.values, **outcome.get(i, {
            "run_id": None, "status": "not started", "reason": None})}
            for i, p in enumerate(points)],
        "comparison": comparison,
    }


def _shape(sweep: Sweep) -> str:
    parts = [f"{len(sweep.seeds)} seed{'s' if len(sweep.seeds) != 1 else ''}"]
    parts += [f"{len(v)} values of {k}" for k, v in sweep.sets.items()]
    return " x ".join(parts)


def _drive(store: Any, sweep: Sweep, pool: list[_Worker], todo: deque,
           outcome: dict[int, dict[str, Any]], say: Callable[[str], None]) -> None:
    """The writer's loop: hand out points, append what workers send, note what ends."""
    from multiprocessing.connection import wait

    from selfdev.engine.config import from_dict
    from selfdev.engine.loop import new_run_id, start_run

    total = len(sweep.points)

    def assign(w: _Worker) -> None:
        i, run_id = todo.popleft()
        point = sweep.points[i]
        fresh = run_id is None
        # named in the lock file before its first event, so no reader sees it unnamed
        w.point, w.run_id, w.since = i, run_id or new_run_id(), time.monotonic()
        announce()
        if fresh:
            start_run(store, from_dict(copy.deepcopy(point.config)), run_id=w.run_id)
        say(f"{'started' if fresh else 'resuming'} {w.run_id}  {point.label}")
        w.conn.send(("run", w.run_id))

    def announce() -> None:
        # the lock file names the runs being written, so `selfdev runs` and the TUI show
        # each of them running (not the last written one only) while the sweep goes
        store.note_writer(runs=[x.run_id for x in pool if x.run_id])

    for w in pool:
        if todo:
            assign(w)
    while any(w.run_id for w in pool):
        busy = {w.conn: w for w in pool if w.run_id}
        for conn in wait(list(busy), timeout=5.0):
            w = busy[conn]
            try:
                message = conn.recv()
            except (EOFError, OSError):
                code = w.proc.wait()
                outcome[w.point] = {"run_id": w.run_id, "status": "interrupted",
                                    "reason": f"its worker process died (exit status {code})"}
                say(f"worker for {w.run_id} died (exit status {code}); the run stays "
                    "interrupted: run the same sweep again to resume it")
                pool.remove(w)
                announce()
                if todo:
                    pool.append(_spawn(str(store.path)))
                    assign(pool[-1])
                continue
            kind = message[0]
            if kind == "done":
                _, run_id, status, reason = message
                outcome[w.point] = {"run_id": run_id, "status": status, "reason": reason}
                seconds = time.monotonic() - w.since
                say(f"[{len(outcome)}/{total}] {status} {run_id}  "
                    f"{sweep.points[w.point].label}  ({seconds:.0f} s)"
                    + (f": {reason}" if reason else ""))
                w.point = w.run_id = None
                if todo:
                    assign(w)
                else:
                    announce()
                continue
            try:
                if kind == "append" and message[1] == w.run_id:
                    stored = store.append(message[1], message[2], expected_version=message[3])
                    for e in stored:
                        if e.type == "iteration.finished":
                            say(f"  {w.run_id}  iteration {e.payload.get('iteration')} done")
                    reply: tuple = ("ok", stored)
                elif kind == "blob":
                    reply = ("ok", store.put_blob(message[1]))
                else:  # a worker may write only the run it was given
                    reply = ("error", f"unexpected {kind!r} for {message[1:2]} from the worker "
                                      f"of {w.run_id}")
            except Exception as exc:  # noqa: BLE001 - the worker's run records it
                reply = ("error", f"{type(exc).__name__}: {exc}")
            conn.send(reply)


def _stop(pool: list[_Worker]) -> None:
    """End the workers: idle ones are told to stop; busy ones (Ctrl-C, an error in the
    writer) get SIGTERM, which stops their run where it is (what was recorded stays)."""
    for w in pool:
        try:
            if w.run_id is None:
                w.conn.send(("stop",))
            elif w.proc.poll() is None:
                w.proc.terminate()
        except (OSError, ValueError):
            pass
    deadline = time.monotonic() + 20
    for w in pool:
        try:
            w.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            w.proc.kill()
            w.proc.wait()
        w.conn.close()
