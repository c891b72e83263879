"""The ``local`` executor: candidate work on this machine.

Each candidate already runs in its own sandboxed child process (forked from the sandbox's warm,
clean parent), so the executor only decides how many candidates are in flight at once:
``workers = 1`` runs them one after another in log order; more workers keep several sandbox
children busy from a pool of supervisor threads (the trusted evaluation releases the GIL in torch).
"""
from __future__ import annotations

from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from typing import Any, Callable, Iterator

import selfdev
from selfdev import Executor, Field
from selfdev import hookimpl
from selfdev.plugins.factory.threads import resolve_threads


class LocalExecutor(Executor):
    """Candidates on this machine, ``workers`` sandbox children at a time."""

    name = "local"

    class Options(Executor.Options):
        workers: int = Field(1, ge=1, description="candidates in flight at once (1: one after "
                                                  "another, in log order)")
        threads: int = Field(0, ge=0, description="torch CPU threads for the trusted side's "
                                                  "work (evaluation) while candidates run; 0 = "
                                                  "automatic: the cores shared among the workers, "
                                                  "1 on a busy machine")
        lookahead: bool = Field(True, description="overlap screening and candidate runs, "
                                                  "and run candidates beside the factory on "
                                                  "cores it does not use (engine/lookahead.py; "
                                                  "the same log either way)")

    def lookahead_workers(self) -> int:
        """Candidates the engine may run while the factory samples (0: none)."""
        return self.options.workers if self.options.lookahead else 0

    def torch_threads(self) -> int:
        """Threads for the engine-side torch work during ``map``.

        Every worker evaluates merged models in this process, and torch's thread count is
        process-wide: two workers each running two OpenMP threads on two cores spin at barriers
        (measured on ``digits``: 300 candidates took 50 s with torch's default 2 threads at load
        6, 15 s with 1), so automatic gives each worker its share of the cores.
        """
        if self.options.threads:
            return self.options.threads
        return max(1, resolve_threads(0) // self.options.workers)

    def map(self, fn: Callable[[Any], Any], items: list[Any]) -> Iterator[tuple[int, Any]]:
        with selfdev.torch_threads(self.torch_threads()):
            yield from self._map(fn, items)

    def _map(self, fn: Callable[[Any], Any], items: list[Any]) -> Iterator[tuple[int, Any]]:
        if self.options.workers == 1:
            for i, item in enumerate(items):
                yield i, fn(item)
            return
        with ThreadPoolExecutor(self.options.workers, thread_name_prefix="selfdev-local") as pool:
            pending = {}
            queue = list(enumerate(items))
            while queue or pending:
                while queue and len(pending) < self.options.workers:
                    i, item = queue.pop(0)
                    pending[pool.submit(fn, item)] = i
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    yield pending.pop(fut), fut.result()


@hookimpl
def register_executors(register):
    register(LocalExecutor)
