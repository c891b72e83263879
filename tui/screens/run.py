"""The run screen: a playhead over the run's log, and what the run looked like there.

The screen moves the cursor (``replay.cursor``: how many events are folded) and wires
messages; the widgets draw themselves. Each redraw hands the title, the playhead and every
visible pane one :class:`~selfdev.tui.widgets.pane.Frame`, and each decides what changed.
"""
from __future__ import annotations

import gc
import threading
import time
from collections import Counter
from functools import partial
from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Container
from textual.screen import Screen
from textual.widgets import Footer, Input
from textual.worker import Worker, WorkerState

from selfdev.tui.loader import RunLoader
from selfdev.tui.messages import EventsLoaded, JumpTo, OpenCandidate
from selfdev.tui.replay import Replay
from selfdev.tui.screens.candidate import CandidateScreen
from selfdev.tui.screens.pickers import TypeFilterScreen
from selfdev.tui.widgets.eventlog import EventLog, EventsPane
from selfdev.tui.widgets.iterations import IterationsPane
from selfdev.tui.widgets.leaderboard import LeaderboardPane, top_candidates
from selfdev.tui.widgets.pane import Frame, Pane
from selfdev.tui.widgets.playhead import Playhead
from selfdev.tui.widgets.plot import PlotPane
from selfdev.tui.widgets.tabstrip import TabStrip
from selfdev.tui.widgets.title import RunTitle

PANES = [("leaderboard", "Leaderboard"), ("iterations", "Iterations"), ("plot", "Plot"),
         ("events", "Events")]


class RunScreen(Screen):
    """``RunScreen(store, run_id)``: loads the run in a worker, then follows it while it
    grows. The playhead is ``replay.cursor``: how many events are folded."""

    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (120, "-wide")]
    VERTICAL_BREAKPOINTS = [(0, "-short"), (34, "-tall")]

    BINDINGS = [
        Binding("left", "step(-1)", "prev", priority=True, tooltip="playhead one event back"),
        Binding("right", "step(1)", "next", priority=True, tooltip="playhead one event on"),
        Binding("left_square_bracket,shift+left", "candidate(-1)", "cand-", key_display="[",
                tooltip="playhead to the previous candidate"),
        Binding("right_square_bracket,shift+right", "candidate(1)", "cand+", key_display="]",
                tooltip="playhead to the next candidate"),
        Binding("left_curly_bracket,ctrl+left", "iteration(-1)", "iter-", key_display="{",
                tooltip="playhead to the start of this (or the previous) iteration"),
        Binding("right_curly_bracket,ctrl+right", "iteration(1)", "iter+", key_display="}",
                tooltip="playhead to the start of the next iteration"),
        Binding("home", "jump_start", "start", priority=True, show=False,
                tooltip="playhead to the first event"),
        Binding("end", "jump_end", "end", priority=True, show=False,
                tooltip="playhead to the last event (and follow, when following is on)"),
        Binding("space", "play", "play", tooltip="play / pause the replay"),
        Binding("plus,equals_sign", "speed(1)", "faster", key_display="+", show=False,
                tooltip="play faster (events per second)"),
        Binding("minus", "speed(-1)", "slower", key_display="-", show=False,
                tooltip="play slower"),
        Binding("f", "follow", "follow", show=False,
                tooltip="toggle follow: keep the playhead on the newest event of a live run"),
        Binding("v", "verify", "verify", tooltip="audit: re-derive the run's hash chain"),
        Binding("c", "open_candidate", "cand", show=False,
                tooltip="open the selected candidate (leaderboard row or event)"),
        Binding("b", "open_best", "best", show=False,
                tooltip="open the best candidate as of the playhead"),
        Binding("1", "pane('leaderboard')", "leaderboard", show=False,
                tooltip="show the leaderboard pane"),
        Binding("2", "pane('iterations')", "iterations", show=False,
                tooltip="show the per-iteration pane"),
        Binding("3", "pane('plot')", "plot", show=False, tooltip="show the score plot"),
        Binding("4", "pane('events')", "events", show=False, tooltip="show the event log"),
        Binding("t", "type_filter", "types", show=False,
                tooltip="choose the event types the log shows"),
        Binding("slash", "search", "search", show=False, key_display="/",
                tooltip="search the event log (type, summary, source)"),
        Binding("escape", "back", "back", show=False, tooltip="back to the runs list"),
    ]

    def __init__(self, store: Any, run_id: str, *, poll_interval: float = 0.5,
                 page_size: int = 5000) -> None:
        """``store``: the app's read-only store (used on the UI thread); the loader and the
        audit open their own read-only connections to ``store.path``."""
        super().__init__()
        self.store = store
        self.run_id = run_id
        self.replay: Replay = Replay.for_store(store, run_id)
        self.title_bar = RunTitle(store.path, run_id, id="run-title")
        self.playhead = Playhead(id="playhead")
        self.leaderboard = LeaderboardPane(active=True)
        self.event_pane = EventsPane(self.replay)
        self.panes: dict[str, Pane] = {
            "leaderboard": self.leaderboard, "iterations": IterationsPane(), "plot": PlotPane(),
            "events": self.event_pane}
        self.loader = RunLoader(store.path, run_id, self.replay, self.post_message,
                                pinned=lambda: self.playhead.pinned,
                                poll_interval=poll_interval, page_size=page_size)
        self.loaded = False  # the whole run was read once (then it is followed)
        self.live = False  # a writer holds the database and the run has not ended
        self.active = "leaderboard"
        self.first_paint: float | None = None  # monotonic time of the first drawn state
        self._stop = threading.Event()
        self._pending = False
        self._full = True
        self._load_timer: Any = None

    # -- layout ----------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield self.title_bar
        yield self.playhead
        yield TabStrip(PANES, id="panes-tabs")
        with Container(id="panes"):
            yield from self.panes.values()
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.leaderboard.focus_body()
        self.run_worker(partial(self.loader.run, self._stop), name="loader", group="loader",
                        thread=True, exclusive=True, exit_on_error=False)

    def on_unmount(self) -> None:
        self._stop.set()
        gc.unfreeze()  # what the loaded run froze can be collected once the screen is gone

    @property
    def wide(self) -> bool:
        """All four panes at once (no tab strip)."""
        return self.has_class("-wide") and self.has_class("-tall")

    def on_resize(self) -> None:
        self.call_later(self.request_refresh, True)

    # -- loading and following -------------------------------------------------------------

    def on_events_loaded(self, message: EventsLoaded) -> None:
        self.loaded = self.loaded or message.done
        self.live = message.live
        if message.head[1]:
            self.title_bar.head = message.head
        if message.done or self.first_paint is None:
            self.request_refresh()
            return
        # while a big run loads, redraw a few times a second, not once per page
        if self._load_timer is None:
            self._load_timer = self.set_timer(0.5, self._load_redraw)

    def _load_redraw(self) -> None:
        self._load_timer = None
        self.request_refresh()

    # -- the cursor ------------------------------------------------------------------------

    @property
    def cursor(self) -> int:
        return self.replay.cursor

    def move_to(self, k: int, *, user: bool = True) -> None:
        """Fold the first ``k`` events (clamped) and redraw. A ``user`` move decides whether
        the playhead stays pinned to the newest event; playback's moves do not."""
        with self.replay.lock:
            k = self.replay.seek(k)
            n = len(self.replay)
        if user:
            self.playhead.put(k, n)
        self.request_refresh()

    def action_step(self, delta: int) -> None:
        self.move_to(self.cursor + delta)

    def action_candidate(self, direction: int) -> None:
        with self.replay.lock:
            k = self.replay.candidate_step(self.cursor, direction)
        self.move_to(k)

    def action_iteration(self, direction: int) -> None:
        with self.replay.lock:
            k = self.replay.iteration_step(self.cursor, direction)
        self.move_to(k)

    def action_jump_start(self) -> None:
        self.move_to(min(1, len(self.replay)))

    def action_jump_end(self) -> None:
        self.move_to(len(self.replay))

    @on(JumpTo)
    def _jump(self, message: JumpTo) -> None:
        message.stop()
        self.move_to(message.index + 1)

    # -- playback: the playhead widget plays, the screen moves the cursor ------------------

    def action_play(self) -> None:
        """Play or pause; playing a run that has ended, from its end, starts it over."""
        at_end = self.cursor >= len(self.replay) and not self.live
        if self.playhead.toggle() and at_end:
            self.move_to(min(1, len(self.replay)), user=False)

    def action_speed(self, delta: int) -> None:
        self.playhead.speed_index += delta

    def action_follow(self) -> None:
        self.playhead.follow = not self.playhead.follow
        if self.playhead.follow:
            self.action_jump_end()

    @on(Playhead.Advance)
    def _advance(self, message: Playhead.Advance) -> None:
        if not self.playhead.playing:  # paused since this was posted
            return
        n = len(self.replay)
        self.move_to(self.cursor + message.step, user=False)
        if self.cursor >= n and not self.live:
            self.playhead.stop()

    # -- drawing ---------------------------------------------------------------------------

    def request_refresh(self, full: bool = False) -> None:
        """Redraw once, after the messages already queued (many moves make one redraw)."""
        self._full = self._full or full
        if not self._pending:
            self._pending = True
            self.call_later(self._redraw)

    @on(Pane.Stale)
    def _stale(self, message: Pane.Stale) -> None:
        message.stop()
        self.request_refresh()

    def _redraw(self) -> None:
        self._pending = False
        if not self.is_attached:
            return
        replay = self.replay
        with replay.lock:
            frame = Frame(replay.state, replay.index, replay.cursor, len(replay),
                          loaded=self.loaded, live=self.live, playing=self.playhead.playing,
                          full=self._full)
            self.title_bar.show(frame)
            self.playhead.show(frame)
            # while a big run is still loading, only the progress moves: the panes show the
            # first page's state until the whole run is folded
            if self.loaded or self.first_paint is None:
                for name, pane in self.panes.items():
                    if self.wide or name == self.active:
                        pane.show(frame)
            self._full = False
        if self.first_paint is None and frame.total:
            self.first_paint = time.monotonic()

    # -- panes, filters, candidates --------------------------------------------------------

    def action_pane(self, pane: str) -> None:
        self.active = pane
        for name, widget in self.panes.items():
            widget.set_class(name == pane, "-active")
        self.query_one(TabStrip).active = pane
        self.panes[pane].focus_body()
        self.request_refresh()

    @on(TabStrip.Picked)
    def _picked(self, message: TabStrip.Picked) -> None:
        self.action_pane(message.name)

    def action_search(self) -> None:
        if not self.wide:
            self.action_pane("events")
        self.event_pane.focus_search()

    def action_type_filter(self) -> None:
        events = self.event_pane
        with self.replay.lock:
            counts = Counter(self.replay.index.types)

        def done(chosen: set[str] | None) -> None:
            if chosen is not None:
                events.set_type_filter(None if chosen == set(counts) else chosen)

        if not self.wide:
            self.action_pane("events")
        self.app.push_screen(TypeFilterScreen(counts, events.type_filter), done)

    @on(OpenCandidate)
    def _open(self, message: OpenCandidate) -> None:
        message.stop()
        self.open_candidate(message.candidate_id)

    def open_candidate(self, candidate_id: str) -> None:
        with self.replay.lock:
            if candidate_id not in self.replay.state.candidates:
                self.notify(f"{candidate_id} does not exist yet at this point of the run",
                            severity="warning")
                return
        self.app.push_screen(CandidateScreen(self, candidate_id))

    def action_open_candidate(self) -> None:
        focused = self.focused
        if isinstance(focused, EventLog):
            focused.action_candidate()
            return
        cid = self.leaderboard.board.selected_candidate
        if cid is None:
            self.action_open_best()
        else:
            self.open_candidate(cid)

    def action_open_best(self) -> None:
        with self.replay.lock:
            top = top_candidates(self.replay.state, 1)
        if not top:
            self.notify("no candidate has a dev score yet at this point", severity="warning")
            return
        self.open_candidate(top[0].candidate_id)

    def action_verify(self) -> None:
        self.title_bar.verify()

    def action_back(self) -> None:
        if isinstance(self.focused, Input):
            self.event_pane.event_log.focus()
            return
        if len(self.app.screen_stack) > 2:
            self.app.pop_screen()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # the playhead's priority keys must not steal the cursor keys of the search box
        if action in ("step", "jump_start", "jump_end") and isinstance(self.focused, Input):
            return False
        return True

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR:
            error = event.worker.error
            self.notify(f"{type(error).__name__}: {error}", title=f"{event.worker.group} failed",
                        severity="error", timeout=10)
