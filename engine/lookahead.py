"""Screen and run an iteration's candidates while the factory is still sampling the rest.

An iteration's steps are recorded one after another (every ``candidate.generated``, then every
``candidate.screened``, then the results), but their work need not wait: a generator that yields
its completions in batches (``Generator.generate_batches``) hands each batch to a
:class:`Lookahead`, which screens it in order on one thread and runs its accepted candidates
through the domain's sandbox on a small pool, while the factory samples the next batch on the
cores left to it (``reserve_cores``). The screen and execute steps then record what was already
computed. Both are pure functions of the candidate (screening of the completion and the hashes
seen before it, execution of the code), so the log is the one the steps would have written
alone, results in log order; only ``duration_ms`` differs, as it does between any two runs.
Nothing is recorded early: killed mid-way, the run resumes from its log and redoes the work.

It is used with the ``local`` executor's ``lookahead`` option when no component hands an
accelerator between phases (``engine/device.py``): a GPU held by the factory is not shared with
evaluation. Candidates run beside the factory only on cores it does not use
(:func:`beside_factory`); with none to spare (2 cores), the lookahead starts when sampling ends
and overlaps screening with the runs. Measured on 2 cores (``python bench/iteration.py``, 3,000
candidates, 2 workers): candidates run beside a factory given one of the two cores took
66.2 s an iteration against 62.4 s with the phases one after another (the factory's one
thread, the screening thread and the sandbox supervisors contend for the cores and the GIL).
Started when sampling ends, the overlap of screening and runs changed a whole iteration by
-1.7, -4.3 and +2.2 s in three runs against the phases one after another: within the spread.
"""
from __future__ import annotations

import contextlib
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable


def beside_factory(workers: int) -> int:
    """Candidates to run while the factory samples: on the cores beyond the factory's (it
    samples on up to 2 threads, ``plugins/factory/threads.py``); 0 (start once it is done)
    where there are none: sharing its cores cost more than it saved (see the module)."""
    return min(workers, max(0, (os.cpu_count() or 1) - 2))


class _Gate:
    """A limit on the candidates in flight that can change while they run."""

    def __init__(self, limit: int) -> None:
        self._cond = threading.Condition()
        self._limit, self._busy = limit, 0

    def set(self, limit: int) -> None:
        with self._cond:
            self._limit = limit
            self._cond.notify_all()

    def __enter__(self) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._busy < self._limit)
            self._busy += 1

    def __exit__(self, *exc: Any) -> None:
        with self._cond:
            self._busy -= 1
            self._cond.notify_all()


class Lookahead:
    """One iteration's screening and dev runs, done as its completions arrive.

    ``screen(cid, text, seen)`` is the runner's pure screening of one completion (it returns a
    ``Screening`` and records an accepted hash in ``seen``); ``run(cid, code)`` applies and
    scores one accepted candidate. ``while_sampling`` candidates run at a time until
    :meth:`sampled`, then ``workers``.
    """

    def __init__(self, screen: Callable[[str, str, dict], Any], run: Callable[[str, str], Any],
                 seen: dict[str, str], workers: int, while_sampling: int, threads: int) -> None:
        self._screen, self._run, self._seen = screen, run, seen
        self.while_sampling, self._threads = while_sampling, threads
        self._restore = contextlib.ExitStack()  # the torch threads set by :meth:`sampled`
        self._screener = ThreadPoolExecutor(1, thread_name_prefix="selfdev-lookahead-screen")
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="selfdev-lookahead-run")
        self._gate = _Gate(while_sampling)
        self._workers = workers
        self.screenings: dict[str, Future] = {}
        self.results: dict[str, Future] = {}

    def feed(self, items: list[tuple[str, str]]) -> None:
        """Completions ``(candidate id, text)``, in the iteration's order."""
        for cid, text in items:
            self.screenings[cid] = self._screener.submit(self._screen_one, cid, text)

    def sampled(self) -> None:
        """The factory is done: every worker may run a candidate now, with the executor's
        torch threads for the evaluations (process-wide: restored by :meth:`close`)."""
        from selfdev.engine.api import torch_threads

        self._restore.enter_context(torch_threads(self._threads))
        self._gate.set(self._workers)

    def _screen_one(self, cid: str, text: str) -> Any:
        screening = self._screen(cid, text, self._seen)
        if screening.status == "accepted":
            self.results[cid] = self._pool.submit(self._run_one, cid, screening.code)
        return screening

    def _run_one(self, cid: str, code: str) -> Any:
        with self._gate:
            return self._run(cid, code)

    def close(self) -> None:
        """Stop: work not started is dropped, work in flight is waited for."""
        self._gate.set(self._workers)
        self._screener.shutdown(wait=True, cancel_futures=True)
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._restore.close()
