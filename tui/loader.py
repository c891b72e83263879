"""Reading a run into the playhead's :class:`~selfdev.tui.replay.Replay`, then following it.

:meth:`RunLoader.run` is the body of the run screen's loader thread. It opens its own
read-only connection, reads the run page by page, and then asks for events after the last
position it has every ``poll_interval`` seconds until the run ends or ``stop`` is set.
Whatever arrived between two looks is taken in one go, so a flood of events costs one
message, not one per event. It never takes the writer lock: whether a writer is alive is read
from the lock file (:func:`selfdev.store.lock.current_holder`).
"""
from __future__ import annotations

import gc
import os
import threading
from typing import Any, Callable

from selfdev.store import EventStore
from selfdev.store.lock import current_holder
from selfdev.tui.messages import EventsLoaded
from selfdev.tui.replay import Replay


class RunLoader:
    """``RunLoader(db_path, run_id, replay, post, pinned=...)``.

    ``post(EventsLoaded)`` is called from the loader's thread (``Widget.post_message`` is
    thread-safe). ``pinned()`` says whether the playhead stays on the newest event; then the
    new events are folded here, off the UI thread."""

    def __init__(self, db_path: str | os.PathLike[str], run_id: str, replay: Replay,
                 post: Callable[[EventsLoaded], Any], *, pinned: Callable[[], bool],
                 poll_interval: float = 0.5, page_size: int = 5000) -> None:
        self.db_path = db_path
        self.run_id = run_id
        self.replay = replay
        self.post = post
        self.pinned = pinned
        self.poll_interval = poll_interval
        self.page_size = page_size
        self.loaded = False
        self.live = False
        self.head: tuple[int, str] = (0, "")
        self._gc_was = gc.isenabled()

    def _report(self) -> None:
        self.post(EventsLoaded(len(self.replay), self.loaded, self.live, self.head))

    def _loaded_now(self) -> None:
        self.loaded = True
        if self._gc_was:
            gc.enable()
            gc.freeze()  # the loaded run is long-lived: keep it out of later collections

    def run(self, stop: threading.Event) -> None:
        store = EventStore(self.db_path, readonly=True)
        replay = self.replay
        after = 0
        self._gc_was = gc.isenabled()
        gc.disable()  # a full collection per page over a growing heap would double the time
        try:
            limit = min(1000, self.page_size)  # a small first page: something to draw soon
            while not stop.is_set():
                page = store.read(run_id=self.run_id, after=after, limit=limit)
                if page:
                    with replay.lock:
                        replay.add(page)
                        if self.pinned():
                            replay.seek(len(replay))
                    last = page[-1]
                    after = last.position
                    self.head = (last.stream_version, last.hash)
                    ended = last.type == "run.finished"  # a failed run can be resumed
                    stopped = ended or last.type == "run.failed"
                    self.live = not stopped and current_holder(self.db_path) is not None
                    # more may wait behind a full page, but nothing follows run.finished
                    full = len(page) == limit and not ended
                    limit = self.page_size
                    if not full and not self.loaded:
                        self._loaded_now()
                    self._report()
                    if full:
                        continue
                    if ended:
                        break
                else:
                    was = (self.loaded, self.live)
                    if not self.loaded:
                        self._loaded_now()
                    self.live = current_holder(self.db_path) is not None
                    if (self.loaded, self.live) != was:
                        self._report()
                stop.wait(self.poll_interval)
        finally:
            store.close()
            if not self.loaded:  # stopped or failed half-way: what was read is all there is
                self._loaded_now()
                if not stop.is_set():
                    self._report()
