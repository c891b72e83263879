"""The run screen: a playhead over the run's log, and what the run looked like there."""
from __future__ import annotations

import gc
import threading
import time
from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Container, Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Input, Static
from textual.worker import Worker, WorkerState

from selfdev.engine.report import status as state_status
from selfdev.tui.data import fmt_score, writer_holder
from selfdev.tui.messages import EventsLoaded, JumpTo, OpenCandidate, Verified
from selfdev.tui.replay import Replay
from selfdev.tui.widgets.eventlog import EventLog
from selfdev.tui.widgets.plot import ScorePlot
from selfdev.tui.widgets.tables import IterationTable, Leaderboard, iteration_detail, top_candidates
from selfdev.tui.widgets.tabstrip import TabStrip
from selfdev.tui.widgets.timeline import Timeline, iteration_of

PANES = [("leaderboard", "Leaderboard"), ("iterations", "Iterations"), ("plot", "Plot"),
         ("events", "Events")]
SPEEDS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
FPS = 20
#: a playhead jump longer than this redraws everything instead of looking at what changed
DELTA_SCAN = 5000


class RunScreen(Screen):
    """``RunScreen(db_path, run_id)``: loads the run in a worker, then follows it while it
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
        """``store``: the app's read-only store (used on the UI thread); workers open their
        own read-only connections to ``store.path``."""
        super().__init__()
        self.store = store
        self.db_path = store.path
        self.run_id = run_id
        self.poll_interval = poll_interval
        self.page_size = page_size
        self.replay: Replay = Replay.for_store(store, run_id)
        self.pinned = True  # the playhead stays at the end as events arrive
        self.follow = True
        self.loaded = False
        self.live = False  # a writer holds the database and the run has not ended
        self.head: tuple[int, str] = (0, "")
        self.audit = "? (v)"
        self.verify_result: Any = None
        self.active = "leaderboard"
        self.speed_index = SPEEDS.index(50)
        self.playing = False
        self.type_filter: set[str] | None = None
        self.search = ""
        self._stop = threading.Event()
        self._acc = 0.0
        self._pending = False
        self._full = True
        self._drawn: dict[str, int] = {}
        self._iter_cache: dict[int, dict[str, Any]] = {}
        self._iter_at = -1
        self._plot_time = 0.0
        self._plot_timer: Any = None
        self._load_timer: Any = None
        self._marks: list[int] = []
        self._marks_n = 0
        self._filtered_n = -1
        self.first_paint: float | None = None  # monotonic time of the first drawn state
        self.loaded_at: float | None = None

    # -- layout ----------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Static(id="run-title")
        yield Timeline(id="timeline")
        yield TabStrip(PANES, id="panes-tabs")
        with Container(id="panes"):
            with Vertical(id="pane-leaderboard", classes="pane -active"):
                yield Static(id="leaderboard-label", classes="pane-label")
                yield Leaderboard(id="leaderboard")
            with Vertical(id="pane-iterations", classes="pane"):
                yield Static(id="iterations-label", classes="pane-label")
                yield IterationTable(id="iterations")
                yield Static(id="iteration-detail")
            with Vertical(id="pane-plot", classes="pane"):
                yield Static(id="plot-label", classes="pane-label")
                yield ScorePlot(id="plot")
                yield Static(id="plot-legend")
            with Vertical(id="pane-events", classes="pane"):
                yield Input(placeholder="search events: / · types: t", id="event-search")
                yield Static(id="events-label", classes="pane-label")
                yield EventLog(self.replay.index, id="events")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#run-title", Static).update(f"{self.run_id} · loading…")
        self._play_timer = self.set_interval(1 / FPS, self._tick, pause=True)
        self.query_one(Leaderboard).focus()
        self._loader()

    def on_unmount(self) -> None:
        self._stop.set()
        gc.unfreeze()  # what the loaded run froze can be collected once the screen is gone

    @property
    def wide(self) -> bool:
        return self.has_class("-wide") and self.has_class("-tall")

    def visible(self, pane: str) -> bool:
        return self.wide or self.active == pane

    def on_resize(self) -> None:
        self.call_later(self.request_refresh, True)

    # -- loading and following -------------------------------------------------------------

    @work(thread=True, exclusive=True, group="loader", exit_on_error=False)
    def _loader(self) -> None:
        """Read the run page by page (its own read-only connection), index and fold it; then
        poll for new events every ``poll_interval`` until the run ends or the screen goes.
        Whatever arrived between two polls is taken in one go (floods coalesce)."""
        from selfdev.store import EventStore

        store = EventStore(self.db_path, readonly=True)
        replay = self.replay
        after = 0
        gc_was = gc.isenabled()
        gc.disable()  # a full collection per page over a growing heap would double the time
        try:
            limit = min(1000, self.page_size)  # a small first page: something to draw soon
            while not self._stop.is_set():
                page = store.read(run_id=self.run_id, after=after, limit=limit)
                if page:
                    with replay.lock:
                        replay.add(page)
                        if self.pinned:
                            replay.seek(len(replay))
                    after = page[-1].position
                    self.head = (page[-1].stream_version, page[-1].hash)
                    ended = page[-1].type == "run.finished"  # a failed run can be resumed
                    stopped = ended or page[-1].type == "run.failed"
                    self.live = not stopped and writer_holder(self.db_path) is not None
                    full = len(page) == limit
                    limit = self.page_size
                    if not full and not self.loaded:
                        self._loaded_now(gc_was)
                    self.post_message(EventsLoaded(len(replay), self.loaded))
                    if full:
                        continue
                    if ended:
                        break
                else:
                    if not self.loaded:
                        self._loaded_now(gc_was)
                        self.post_message(EventsLoaded(len(replay), True))
                    was_live = self.live
                    self.live = writer_holder(self.db_path) is not None
                    if was_live != self.live:
                        self.post_message(EventsLoaded(len(replay), True))
                self._stop.wait(self.poll_interval)
        finally:
            store.close()
            if not self.loaded:
                self._loaded_now(gc_was)

    def _loaded_now(self, gc_was: bool) -> None:
        self.loaded = True
        self.loaded_at = time.monotonic()
        if gc_was:
            gc.enable()
            gc.freeze()  # the loaded run is long-lived: keep it out of later collections

    def on_events_loaded(self, message: EventsLoaded) -> None:
        if message.done or self.first_paint is None:
            self.request_refresh()
            return
        # while a big run loads, redraw a few times a second, not once per page
        if self._load_timer is None:
            self._load_timer = self.set_timer(0.5, self._load_redraw)

    def _load_redraw(self) -> None:
        self._load_timer = None
        self.request_refresh()

    # -- the playhead ----------------------------------------------------------------------

    @property
    def cursor(self) -> int:
        return self.replay.cursor

    def move_to(self, k: int, *, user: bool = True) -> None:
        with self.replay.lock:
            k = self.replay.seek(k)
            n = len(self.replay)
        if user:
            self.pinned = self.follow and k == n
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
        self.pinned = self.follow

    def action_play(self) -> None:
        self.playing = not self.playing
        if self.playing:
            if self.cursor >= len(self.replay) and not self.live:
                self.move_to(min(1, len(self.replay)))
            self.pinned = False
            self._acc = 0.0
            self._play_timer.resume()
        else:
            self._play_timer.pause()
        self.request_refresh()

    def action_speed(self, delta: int) -> None:
        self.speed_index = max(0, min(len(SPEEDS) - 1, self.speed_index + delta))
        self.request_refresh()

    @property
    def speed(self) -> int:
        return SPEEDS[self.speed_index]

    def _tick(self) -> None:
        if not self.playing:
            return
        self._acc += self.speed / FPS
        step = int(self._acc)
        if step <= 0:
            return
        self._acc -= step
        n = len(self.replay)
        self.move_to(min(n, self.cursor + step), user=False)
        if self.cursor >= n and not self.live:
            self.playing = False
            self._play_timer.pause()
            self.pinned = self.follow
            self.request_refresh()

    def action_follow(self) -> None:
        self.follow = not self.follow
        if self.follow:
            self.action_jump_end()
        else:
            self.pinned = False
        self.request_refresh()

    @on(JumpTo)
    def _jump(self, message: JumpTo) -> None:
        message.stop()
        self.move_to(message.index + 1)

    # -- drawing ---------------------------------------------------------------------------

    def request_refresh(self, full: bool = False) -> None:
        """Redraw once, after the messages already queued (many moves make one redraw)."""
        self._full = self._full or full
        if not self._pending:
            self._pending = True
            self.call_later(self._redraw)

    def _changed(self, pane: str, k: int) -> set[str] | None:
        """Event types between where ``pane`` was drawn and ``k`` (None: redraw all)."""
        drawn = self._drawn.get(pane)
        if drawn is None or self._full:
            return None
        lo, hi = min(drawn, k), max(drawn, k)
        if hi - lo > DELTA_SCAN:
            return None
        return set(self.replay.index.types[lo:hi])

    def _redraw(self) -> None:
        self._pending = False
        if not self.is_attached:
            return
        replay = self.replay
        with replay.lock:
            n = len(replay)
            k = replay.cursor
            state = replay.state
            index = replay.index
            if self._marks_n != n:
                self._marks += [i + 1 for i in range(self._marks_n, n)
                                if index.types[i] == "iteration.started"]
                self._marks_n = n
            self._draw_title(state, n)
            self._draw_timeline(state, k, n)
            # while a big run is still loading, only the progress moves: the panes show the
            # first page's state until the whole run is folded
            panes = self.loaded or self.first_paint is None
            for pane, draw in () if not panes else (("leaderboard", self._draw_leaderboard),
                               ("iterations", self._draw_iterations),
                               ("plot", self._draw_plot), ("events", self._draw_events)):
                if self.visible(pane):
                    draw(state, k, n)
            self._full = False
        if self.first_paint is None and n:
            self.first_paint = time.monotonic()

    def _status_text(self, n: int) -> str:
        if not self.loaded:
            return f"loading… {n:,} events"
        index = self.replay.index
        last = index.types[-1] if n else ""
        if last == "run.finished":
            return "✓ finished"
        if last == "run.failed":
            return "✗ failed (resumable)"
        if self.live:
            return "● running"
        return "⚠ crashed (resumable)"

    def _draw_title(self, state: Any, n: int) -> None:
        started = state.started
        what = (f"{started.domain}/{started.generator}/{started.optimizer}"
                if started is not None else "")
        head = self.head[1]
        head_short = (head[:14] + "…") if head else "-"
        parts = [self.run_id, self._status_text(n), f"head {head_short}", f"audit {self.audit}"]
        if what:
            parts.append(what)
        self._label("#run-title", " · ".join(parts))

    def _draw_timeline(self, state: Any, k: int, n: int) -> None:
        index = self.replay.index
        if self.playing:
            mode = f"▶ {self.speed} ev/s"
        elif self.pinned and self.live:
            mode = "● following"
        else:
            mode = f"⏸ {self.speed} ev/s"
        its = state.started.iterations if state.started is not None else 0
        it = iteration_of(self._marks, k)
        bits = [mode, f"event {k:,}/{n:,}"]
        if k:
            i = k - 1
            bits.append(f"#{index.positions[i]}")
            bits.append(f"it {it}/{its}" if its else f"it {it}")
            bits.append(index.times[i][11:19])
            bits.append(f"{index.types[i]}  {index.texts[i]}")
        self.query_one(Timeline).set_position(k, n, self._marks, " │ ".join(bits))

    def _draw_leaderboard(self, state: Any, k: int, n: int) -> None:
        changed = self._changed("leaderboard", k)
        board = self.query_one(Leaderboard)
        if changed is None:
            scored = board.show_state(state)
        else:
            drawn = self._drawn["leaderboard"]
            index = self.replay.index
            lo, hi = min(drawn, k), max(drawn, k)
            cids = [index.cids[i] for i in range(lo, hi)
                    if index.types[i] == "candidate.evaluated" and index.cids[i]]
            scored = board.show_state(state, cids) if cids else len(board.ranking)
        shown = board.shown
        more = f" (top {shown} shown)" if shown < scored else ""
        self._label("#leaderboard-label",
                    f"leaderboard as of event {k:,} · {scored:,} scored{more} · "
                    "enter: open candidate")
        self._drawn["leaderboard"] = k

    def _label(self, selector: str, text: str) -> None:
        """Update a one-line label (no relayout: its size never changes)."""
        widget = self.query_one(selector, Static)
        if getattr(widget, "_text", None) != text:
            widget._text = text
            widget.update(text, layout=False)

    def _iteration_stats(self, state: Any, k: int) -> list[dict[str, Any]]:
        if self._iter_at >= 0 and abs(k - self._iter_at) <= DELTA_SCAN and not self._full:
            lo, hi = min(k, self._iter_at), max(k, self._iter_at)
            touched = set(self.replay.index.iters[lo:hi])
        else:
            touched = None
        cache = {t: s for t, s in self._iter_cache.items() if t in state.iterations}
        for t in state.iterations:
            if touched is None or t in touched or t not in cache:
                cache[t] = state.iteration_stats(t)
        self._iter_cache, self._iter_at = cache, k
        return [cache[t] for t in sorted(cache)]

    def _draw_iterations(self, state: Any, k: int, n: int) -> None:
        if self._drawn.get("iterations") == k and not self._full:
            return
        stats = self._iteration_stats(state, k)
        self.query_one(IterationTable).show_stats(stats)
        it = iteration_of(self._marks, k)
        current = next((s for s in stats if s["iteration"] == it), None)
        detail = iteration_detail(current) if current else "no iteration has started yet"
        box = self.query_one("#iteration-detail", Static)
        if getattr(box, "_text", None) != detail:
            box._text = detail
            box.update(detail)
        self._label("#iterations-label", f"iterations as of event {k:,} · {len(stats)} started")
        self._drawn["iterations"] = k

    def _draw_plot(self, state: Any, k: int, n: int) -> None:
        changed = self._changed("plot", k)
        if changed is not None and not changed & {"candidate.evaluated", "baseline.evaluated"}:
            self._drawn["plot"] = k
            return
        now = time.monotonic()
        if self.playing and now - self._plot_time < 0.3:
            if self._plot_timer is None:
                self._plot_timer = self.set_timer(0.3, self._plot_later)
            return
        self._plot_time = now
        legend = self.query_one(ScorePlot).show_state(state)
        self.query_one("#plot-legend", Static).update(legend)
        self._label("#plot-label",
                    f"dev scores as of event {k:,} (x: iteration, candidates in order)")
        self._drawn["plot"] = k

    def _plot_later(self) -> None:
        self._plot_timer = None
        self._drawn.pop("plot", None)
        self.request_refresh()

    def _draw_events(self, state: Any, k: int, n: int) -> None:
        log = self.query_one(EventLog)
        if self._filtered_n != n:
            self._apply_filter(n, grown=True)
        log.set_playhead(k - 1)
        self._drawn["events"] = k

    def _apply_filter(self, n: int | None = None, *, grown: bool = False) -> None:
        """Filter the event log; ``grown``: only events after the last filtering are new."""
        index = self.replay.index
        n = len(index) if n is None else n
        log = self.query_one(EventLog)
        start = self._filtered_n if grown and 0 <= self._filtered_n <= n else 0
        if self.type_filter is None and not self.search:
            rows = list(range(start, n))
        else:
            rows = index.filter(self.type_filter, self.search, start)
        if start:
            rows = log.rows + rows
        self._filtered_n = n
        log.set_rows(rows, reset=not start)
        kinds = "all types" if self.type_filter is None else ", ".join(sorted(self.type_filter))
        if len(kinds) > 40:
            kinds = f"{len(self.type_filter or ())} types"
        search = f" · search “{self.search}”" if self.search else ""
        self._label("#events-label", f"{len(rows):,} of {n:,} events · {kinds}{search} · "
                    "▶ playhead · enter: move it here")

    # -- panes, filters, candidates --------------------------------------------------------

    def action_pane(self, pane: str) -> None:
        self.active = pane
        for name, _ in PANES:
            self.query_one(f"#pane-{name}").set_class(name == pane, "-active")
        self.query_one(TabStrip).active = pane
        focus = {"leaderboard": Leaderboard, "iterations": IterationTable,
                 "events": EventLog}.get(pane)
        if focus is not None:
            self.query_one(focus).focus()
        self.request_refresh()

    @on(TabStrip.Picked)
    def _picked(self, message: TabStrip.Picked) -> None:
        self.action_pane(message.name)

    def action_search(self) -> None:
        if not self.wide:
            self.action_pane("events")
        self.query_one("#event-search", Input).focus()

    @on(Input.Changed, "#event-search")
    def _search_changed(self, message: Input.Changed) -> None:
        self.search = message.value
        with self.replay.lock:
            self._apply_filter()
            self.query_one(EventLog).set_playhead(self.cursor - 1)

    @on(Input.Submitted, "#event-search")
    def _search_submitted(self, message: Input.Submitted) -> None:
        self.query_one(EventLog).focus()

    def action_type_filter(self) -> None:
        from selfdev.tui.screens.pickers import TypeFilterScreen

        with self.replay.lock:
            counts: dict[str, int] = {}
            for t in self.replay.index.types:
                counts[t] = counts.get(t, 0) + 1

        def done(chosen: set[str] | None) -> None:
            if chosen is None:
                return
            self.type_filter = None if chosen == set(counts) else chosen
            with self.replay.lock:
                self._apply_filter()
                self.query_one(EventLog).set_playhead(self.cursor - 1)

        if not self.wide:
            self.action_pane("events")
        self.app.push_screen(TypeFilterScreen(counts, self.type_filter), done)

    def set_type_filter(self, types: set[str] | None) -> None:
        """Keep only events of these types in the log (None: all)."""
        self.type_filter = types
        with self.replay.lock:
            self._apply_filter()
            self.query_one(EventLog).set_playhead(self.cursor - 1)

    @on(DataTable.RowSelected, "#leaderboard")
    def _row_selected(self, message: DataTable.RowSelected) -> None:
        cid = self.query_one(Leaderboard).candidate_at(str(message.row_key.value))
        if cid:
            self.open_candidate(cid)

    @on(OpenCandidate)
    def _open(self, message: OpenCandidate) -> None:
        message.stop()
        self.open_candidate(message.candidate_id)

    def open_candidate(self, candidate_id: str) -> None:
        from selfdev.tui.screens.candidate import CandidateScreen

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
        cid = self.query_one(Leaderboard).selected_candidate
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

    def action_back(self) -> None:
        if isinstance(self.focused, Input):
            self.query_one(EventLog).focus()
            return
        if len(self.app.screen_stack) > 2:
            self.app.pop_screen()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # the playhead's priority keys must not steal the cursor keys of the search box
        if action in ("step", "jump_start", "jump_end") and isinstance(self.focused, Input):
            return False
        return True

    # -- audit -----------------------------------------------------------------------------

    def action_verify(self) -> None:
        self.audit = "checking…"
        self.request_refresh()
        self._verify()

    @work(thread=True, exclusive=True, group="verify", exit_on_error=False)
    def _verify(self) -> None:
        from selfdev.store import EventStore

        with EventStore(self.db_path, readonly=True) as store:
            result = store.verify(self.run_id)
            head = store.head(self.run_id)
        self.post_message(Verified(result, head))

    def on_verified(self, message: Verified) -> None:
        r = message.result
        self.verify_result = r
        if r.ok:
            self.audit = f"intact ✓ ({r.checked:,} events)"
            self.notify(f"hash chain intact: {r.checked:,} events verified; head "
                        f"{message.head[1]}", title="audit", timeout=6)
        else:
            self.audit = f"BROKEN ✗ at #{r.first_broken}"
            self.notify(f"BROKEN at position {r.first_broken}: {r.reason}", title="audit",
                        severity="error", timeout=10)
        self.head = message.head if message.head[1] else self.head
        self.request_refresh()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR:
            error = event.worker.error
            if event.worker.group == "verify":
                self.audit = "could not check"
                self.request_refresh()
            self.notify(f"{type(error).__name__}: {error}", title=f"{event.worker.group} failed",
                        severity="error", timeout=10)

    # -- what tests and the benchmark read -------------------------------------------------

    def describe(self) -> dict[str, Any]:
        with self.replay.lock:
            state = self.replay.state
            best = top_candidates(state, 1)
            return {"cursor": self.replay.cursor, "events": len(self.replay),
                    "status": state_status(state), "candidates": len(state.candidates),
                    "best": best[0].candidate_id if best else None,
                    "best_dev": fmt_score(best[0].dev) if best else None}
