"""The run screen's title line: the run, its status, its head hash and the audit verdict.

The title owns the audit: :meth:`RunTitle.verify` re-derives the run's hash chain in a worker
(its own read-only connection) and shows the verdict when it arrives.
"""
from __future__ import annotations

from typing import Any

from textual import work
from textual.reactive import var
from textual.worker import Worker, WorkerState

from selfdev.store import EventStore
from selfdev.tui.messages import Verified
from selfdev.tui.widgets.pane import Frame, Line


def run_status(frame: Frame) -> str:
    """The run's status in words (colour never says it alone)."""
    if not frame.loaded:
        return f"loading… {frame.total:,} events"
    last = frame.index.types[-1] if frame.total else ""
    if last == "run.finished":
        return "✓ finished"
    if last == "run.failed":
        return "✗ failed (resumable)"
    if frame.live:
        return "● running"
    return "⚠ interrupted (resumable)"


class RunTitle(Line):
    """``run · status · head · audit · domain/generator/optimizer``."""

    audit: var[str] = var("? (v)", init=False)

    def __init__(self, db_path: Any, run_id: str, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.db_path = db_path
        self.run_id = run_id
        self.verify_result: Any = None  # store.VerifyResult of the last audit
        #: the run's last (stream_version, hash) as last read; shown at the next frame
        self.head: tuple[int, str] = (0, "")
        self._status: str | None = None  # None: not drawn yet
        self._what = ""

    def on_mount(self) -> None:
        self.text = f"{self.run_id} · loading…"

    def show(self, frame: Frame) -> None:
        started = frame.state.started
        self._what = (f"{started.domain}/{started.generator}/{started.optimizer}"
                      if started is not None else "")
        self._status = run_status(frame)
        self._draw()

    def _draw(self) -> None:
        if self._status is None:
            return
        head = self.head[1]
        head_short = (head[:14] + "…") if head else "-"
        parts = [self.run_id, self._status, f"head {head_short}", f"audit {self.audit}"]
        if self._what:
            parts.append(self._what)
        self.text = " · ".join(parts)

    def watch_audit(self) -> None:
        self._draw()

    # -- the audit -------------------------------------------------------------------------

    def verify(self) -> None:
        self.audit = "checking…"
        self._verify()

    @work(thread=True, exclusive=True, group="verify", exit_on_error=False)
    def _verify(self) -> None:
        with EventStore(self.db_path, readonly=True) as store:
            result = store.verify(self.run_id)
            head = store.head(self.run_id)
        self.post_message(Verified(result, head))

    def on_verified(self, message: Verified) -> None:
        r = message.result
        self.verify_result = r
        if message.head[1]:
            self.head = message.head
        if r.ok:
            self.audit = f"intact ✓ ({r.checked:,} events)"
            self.notify(f"hash chain intact: {r.checked:,} events verified; head "
                        f"{message.head[1]}", title="audit", timeout=6)
        else:
            self.audit = f"BROKEN ✗ at #{r.first_broken}"
            self.notify(f"BROKEN at position {r.first_broken}: {r.reason}", title="audit",
                        severity="error", timeout=10)
        self._draw()  # the head, even when the verdict reads as before

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR:
            error = event.worker.error
            self.audit = "could not check"
            self.notify(f"{type(error).__name__}: {error}", title="verify failed",
                        severity="error", timeout=10)
