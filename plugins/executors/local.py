"""The ``local`` executor: candidate work on this machine.

Each candidate already runs in its own sandboxed child process (forked from the sandbox's warm,
clean parent), so the executor only decides how many candidates are in flight at once:
``workers = 1`` runs them one after another in log order; more workers keep several sandbox
children busy from a pool of supervisor threads (the trusted evaluation releases the GIL in torch).
"""
from __future__ import annotations

from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from typing import Any, Callable, Iterator

from selfdev import Executor, Field
from selfdev import hookimpl


class LocalExecutor(Executor):
    """Candidates on this machine, ``workers`` sandbox children at a time."""

    name = "local"

    class Options(Executor.Options):
        workers: int = Field(1, ge=1, description="candidates in flight at once (1: one after "
                                                  "another, in log order)")

    def map(self, fn: Callable[[Any], Any], items: list[Any]) -> Iterator[tuple[int, Any]]:
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
