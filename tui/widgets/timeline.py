"""The timeline bar: where the playhead is in the run, with a tick at every iteration."""
from __future__ import annotations

from bisect import bisect_right

from rich.text import Text
from textual import events
from textual.reactive import reactive
from textual.widget import Widget

from selfdev.tui.messages import JumpTo


class Timeline(Widget):
    """Two lines: the bar (heavy line up to the playhead, light after it, ``┃`` / ``│`` at
    iteration starts, ``●`` at the playhead) and a line of text saying where it is.

    Shape carries the meaning, colour only repeats it. Clicking the bar moves the playhead.
    """

    DEFAULT_CSS = """
    Timeline { height: 2; padding: 0 1; }
    """

    COMPONENT_CLASSES = {"timeline--done", "timeline--todo", "timeline--head", "timeline--mark"}

    info: reactive[str] = reactive("", layout=False)

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.total = 0
        self.cursor = 0
        self.marks: list[int] = []  # cursor values at which an iteration starts
        self.labels: list[str] = []

    def set_position(self, cursor: int, total: int, marks: list[int], info: str) -> None:
        if (cursor, total, info) == (self.cursor, self.total, self.info) and marks == self.marks:
            return
        self.cursor, self.total, self.marks = cursor, total, marks
        self.info = info
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
            bar.stylize(self.get_component_rich_style("timeline--done"), 0, head)
        bar.stylize(self.get_component_rich_style("timeline--todo"), max(0, head + 1), width)
        mark = self.get_component_rich_style("timeline--mark")
        for x in marks:
            bar.stylize(mark, x, x + 1)
        if head >= 0:
            bar.stylize(self.get_component_rich_style("timeline--head"), head, head + 1)
        line = Text(self.info, no_wrap=True, overflow="ellipsis")
        return Text("\n").join([bar, line])

    def on_click(self, event: events.Click) -> None:
        if event.y != 0 or self.total <= 0:
            return
        width = max(4, self.size.width)
        cursor = round(event.x * self.total / max(1, width - 1))
        self.post_message(JumpTo(max(0, min(self.total, cursor)) - 1))


def iteration_of(marks: list[int], cursor: int) -> int:
    """Which iteration (1-based; 0 = before the first) the playhead is in."""
    return bisect_right(marks, cursor)
