"""The playhead: the timeline bar that shows where it is, and the clock that plays it.

One widget owns playback: play / pause, the speed, the 20 Hz clock, and follow mode (whether
the playhead stays on the newest event while a live run grows). It never moves the cursor
itself: it posts :class:`Playhead.Advance`, and the run screen folds the run that far and
shows the widget the new :class:`~selfdev.tui.widgets.pane.Frame`.
"""
from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual import events
from textual.message import Message
from textual.reactive import reactive
from textual.widget import Widget

from selfdev.tui.messages import JumpTo
from selfdev.tui.widgets.pane import Frame

#: playback speeds, events per second (``+`` / ``-`` step through them)
SPEEDS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
FPS = 20


class Playhead(Widget):
    """Two lines: the bar (heavy line up to the playhead, light after it, ``┃`` / ``│`` at
    iteration starts, ``●`` at the playhead) and a line saying how it moves and where it is.

    Shape carries the meaning, colour only repeats it. Clicking the bar moves the playhead.
    """

    DEFAULT_CSS = """
    Playhead { height: 2; padding: 0 1; }
    """

    COMPONENT_CLASSES = {"playhead--done", "playhead--todo", "playhead--head", "playhead--mark"}

    playing: reactive[bool] = reactive(False, init=False)
    speed_index: reactive[int] = reactive(SPEEDS.index(50))
    follow: reactive[bool] = reactive(True)

    @dataclass
    class Advance(Message):
        """Playback moves the playhead ``step`` events on."""

        step: int

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.total = 0
        self.cursor = 0
        self.marks: list[int] = []  # cursor values at which an iteration starts
        self.where: list[str] = []  # the info line after the mode
        #: the playhead stays on the newest event as events arrive. A plain attribute, not a
        #: reactive: the loader thread reads it, and every move that changes it is followed
        #: by a redraw (a repaint of its own would cost a second frame per key)
        self.pinned = True
        self.live = False  # as of the last frame
        self._drawn: tuple = ()
        self._acc = 0.0

    def on_mount(self) -> None:
        self._clock = self.set_interval(1 / FPS, self._tick, pause=True)

    # -- playback --------------------------------------------------------------------------

    @property
    def speed(self) -> int:
        return SPEEDS[self.speed_index]

    def validate_speed_index(self, index: int) -> int:
        return max(0, min(len(SPEEDS) - 1, index))

    def toggle(self) -> bool:
        """Play or pause; returns whether it plays now. Playing unpins the playhead."""
        self.playing = not self.playing
        if self.playing:
            self.pinned = False
        return self.playing

    def stop(self) -> None:
        """The end of a run that has ended: pause, and stay there if following."""
        self.playing = False
        self.pinned = self.follow

    def watch_playing(self, playing: bool) -> None:
        if playing:
            self._acc = 0.0
            self._clock.resume()
        else:
            self._clock.pause()

    def watch_follow(self, follow: bool) -> None:
        if not follow:
            self.pinned = False

    def put(self, cursor: int, total: int) -> None:
        """The user put the playhead at ``cursor`` of ``total`` events: it stays on the
        newest event only at the end, with follow on."""
        self.pinned = self.follow and cursor == total

    def _tick(self) -> None:
        if not self.playing:
            return
        self._acc += self.speed / FPS
        step = int(self._acc)
        if step > 0:
            self._acc -= step
            self.post_message(self.Advance(step))

    # -- drawing ---------------------------------------------------------------------------

    @property
    def mode(self) -> str:
        if self.playing:
            return f"▶ {self.speed} ev/s"
        if self.pinned and self.live:
            return "● following"
        return f"⏸ {self.speed} ev/s"

    @property
    def info(self) -> str:
        """The line under the bar: how the playhead moves, and the event it is on."""
        return " │ ".join([self.mode, *self.where])

    def show(self, frame: Frame) -> None:
        index, k, n = frame.index, frame.cursor, frame.total
        marks = [i + 1 for i in index.iteration_starts]
        its = frame.state.started.iterations if frame.state.started is not None else 0
        where = [f"event {k:,}/{n:,}"]
        if k:
            i, it = k - 1, frame.iteration
            where += [f"#{index.positions[i]}", f"it {it}/{its}" if its else f"it {it}",
                      index.times[i][11:19], f"{index.types[i]}  {index.texts[i]}"]
        self.cursor, self.total, self.where, self.marks = k, n, where, marks
        self.live = frame.live
        drawn = (k, n, self.info, marks)  # the mode too: pinned may have changed since
        if drawn != self._drawn:
            self._drawn = drawn
            self.refresh()

    def _cell(self, cursor: int, width: int) -> int:
        if self.total <= 0:
            return 0
        return min(width - 1, (cursor * (width - 1)) // self.total)

    def render(self) -> Text:
        width = max(4, self.size.width)
        head = self._cell(self.cursor, width) if self.total else -1
        cells = ["━"] * max(0, head) + ["─"] * (width - max(0, head))
        marks = sorted({self._cell(m, width) for m in self.marks} - {head})
        for x in marks:
            cells[x] = "┃" if x < head else "│"
        if head >= 0:
            cells[head] = "●"
        bar = Text("".join(cells), no_wrap=True, overflow="crop")
        if head > 0:
            bar.stylize(self.get_component_rich_style("playhead--done"), 0, head)
        bar.stylize(self.get_component_rich_style("playhead--todo"), max(0, head + 1), width)
        mark = self.get_component_rich_style("playhead--mark")
        for x in marks:
            bar.stylize(mark, x, x + 1)
        if head >= 0:
            bar.stylize(self.get_component_rich_style("playhead--head"), head, head + 1)
        line = Text(self.info, no_wrap=True, overflow="ellipsis")
        return Text("\n").join([bar, line])

    def on_click(self, event: events.Click) -> None:
        if event.y != 0 or self.total <= 0:
            return
        width = max(4, self.size.width)
        cursor = round(event.x * self.total / max(1, width - 1))
        self.post_message(JumpTo(max(0, min(self.total, cursor)) - 1))
