"""The events pane: every event of the run (or those a filter keeps), drawn lazily.

A run can hold 100k events, so the log is a ScrollView that renders only the visible lines
from the replay's index (the Line API, like toolong's LogLines), never a widget per row.
"""
from __future__ import annotations

from bisect import bisect_right

from rich.segment import Segment
from rich.style import Style
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.geometry import Size
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.widgets import Input

from selfdev.tui.messages import JumpTo, OpenCandidate
from selfdev.tui.replay import EventIndex, Replay
from selfdev.tui.widgets.pane import Frame, Pane


class EventLog(ScrollView, can_focus=True):
    """Rows: marker, log position, time, type, summary. ``▶`` marks the playhead's event;
    the cursor row is drawn reversed. Enter moves the playhead to the cursor's event."""

    DEFAULT_CSS = """
    EventLog { height: 1fr; scrollbar-size-vertical: 1; overflow-x: hidden; }
    EventLog > .event-log--cursor { text-style: reverse; }
    EventLog > .event-log--playhead { text-style: bold; }
    EventLog > .event-log--dim { color: $text-muted; }
    """

    COMPONENT_CLASSES = {"event-log--cursor", "event-log--playhead", "event-log--dim"}

    BINDINGS = [
        Binding("up,k", "cursor(-1)", "Up", show=False),
        Binding("down,j", "cursor(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("ctrl+home", "cursor_to(0)", "First event", show=False),
        Binding("ctrl+end", "cursor_to(-1)", "Last event", show=False),
        Binding("enter", "select", "Playhead here"),
        Binding("c", "candidate", "Candidate", show=False),
    ]

    cursor: reactive[int] = reactive(0, always_update=True, repaint=False)

    def __init__(self, index: EventIndex, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.index = index
        self.rows: list[int] = []  # event indices shown, ascending
        self.playhead = -1  # index of the last folded event
        self.follow_playhead = True

    # -- data ------------------------------------------------------------------------------

    def set_rows(self, rows: list[int], *, reset: bool = True) -> None:
        """Show these event indices; ``reset=False`` (more events arrived) keeps the cursor
        where the user put it."""
        self.rows = rows
        self.virtual_size = Size(self.scrollable_content_region.width, len(rows))
        if reset:
            self.follow_playhead = True
        if self.follow_playhead:
            self.sync_to_playhead()
        self.refresh()

    def set_playhead(self, event_index: int) -> None:
        if event_index == self.playhead:
            return
        self.playhead = event_index
        if self.follow_playhead:
            self.sync_to_playhead()
        self.refresh()

    def playhead_row(self) -> int:
        """Row of the last shown event at or before the playhead (-1: none)."""
        return bisect_right(self.rows, self.playhead) - 1

    def sync_to_playhead(self) -> None:
        row = self.playhead_row()
        self.cursor = max(0, row)
        self.scroll_to_cursor()
        # the size may change with this refresh (a pane just shown): scroll again after it
        self.call_after_refresh(self.scroll_to_cursor)

    @property
    def cursor_event(self) -> int | None:
        if 0 <= self.cursor < len(self.rows):
            return self.rows[self.cursor]
        return None

    # -- drawing ---------------------------------------------------------------------------

    def watch_cursor(self) -> None:
        self.refresh()

    def scroll_to_cursor(self) -> None:
        height = max(1, self.scrollable_content_region.height)
        top = self.scroll_offset.y
        if self.cursor < top:
            self.scroll_to(y=self.cursor, animate=False, immediate=True)
        elif self.cursor >= top + height:
            self.scroll_to(y=self.cursor - height + 1, animate=False, immediate=True)

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        row = scroll_y + y
        width = self.scrollable_content_region.width
        if row >= len(self.rows):
            return Strip.blank(width, self.rich_style)
        i = self.rows[row]
        idx = self.index
        base = self.rich_style
        mark = "▶" if i == self.playhead else ("·" if i > self.playhead else " ")
        time = idx.times[i][11:19]
        text = f"{mark}{idx.positions[i]:>8} {time} {idx.types[i]:<20} {idx.texts[i]}"
        style = base
        if i == self.playhead:
            style = style + self.get_component_rich_style("event-log--playhead")
        elif i > self.playhead:
            style = style + self.get_component_rich_style("event-log--dim")
        if row == self.cursor and self.has_focus:
            style = style + self.get_component_rich_style("event-log--cursor")
        elif row == self.cursor:
            style = style + Style(underline=True)
        strip = Strip([Segment(text, style)])
        return strip.crop_extend(scroll_x, scroll_x + width, style)

    def on_resize(self) -> None:
        self.virtual_size = Size(self.scrollable_content_region.width, len(self.rows))
        if self.follow_playhead:
            self.call_after_refresh(self.scroll_to_cursor)

    def on_focus(self) -> None:
        self.refresh()

    def on_blur(self) -> None:
        self.refresh()

    # -- actions ---------------------------------------------------------------------------

    def _move(self, row: int) -> None:
        if not self.rows:
            return
        self.follow_playhead = False
        self.cursor = max(0, min(len(self.rows) - 1, row))
        self.scroll_to_cursor()

    def action_cursor(self, delta: int) -> None:
        self._move(self.cursor + delta)

    def action_page(self, direction: int) -> None:
        self._move(self.cursor + direction * max(1, self.scrollable_content_region.height - 1))

    def action_cursor_to(self, row: int) -> None:
        self._move(row if row >= 0 else len(self.rows) - 1)

    def action_select(self) -> None:
        event = self.cursor_event
        if event is not None:
            self.follow_playhead = True
            self.post_message(JumpTo(event))

    def action_candidate(self) -> None:
        event = self.cursor_event
        if event is not None and self.index.cids[event]:
            self.post_message(OpenCandidate(self.index.cids[event]))

    def on_click(self, event) -> None:
        row = self.scroll_offset.y + event.y
        if 0 <= row < len(self.rows):
            self._move(row)
            if event.chain >= 2:
                self.action_select()


class EventsPane(Pane):
    """A search box, a label and the event log. The filter (event types and a search text)
    belongs to the pane; when it changes, the log is filtered again at once."""

    def __init__(self, replay: Replay, *, active: bool = False) -> None:
        super().__init__("events", active=active)
        self.replay = replay
        self.search_box = Input(placeholder="search events: / · types: t", id="event-search")
        self.event_log = EventLog(replay.index, id="events")
        self.type_filter: set[str] | None = None  # None: every type
        self.search = ""  # case-insensitive, in type, summary and source
        self._filtered = -1  # how many events the log's rows were filtered from

    def compose(self) -> ComposeResult:
        yield self.search_box
        yield self.label
        yield self.event_log

    def focus_body(self) -> None:
        self.event_log.focus()

    def show(self, frame: Frame) -> None:
        if self._filtered != frame.total:
            self._filter(frame.index, frame.total, grown=True)
        self.event_log.set_playhead(frame.cursor - 1)
        self.drawn = frame.cursor

    def _filter(self, index: EventIndex, n: int, *, grown: bool = False) -> None:
        """Filter the first ``n`` events; ``grown``: only those after the last filtering are
        new. The caller holds the replay's lock."""
        log, query = self.event_log, self.search
        start = self._filtered if grown and 0 <= self._filtered <= n else 0
        if self.type_filter is None and not query:
            rows = list(range(start, n))
        else:
            rows = index.filter(self.type_filter, query, start)
        if start:
            rows = log.rows + rows
        self._filtered = n
        log.set_rows(rows, reset=not start)
        kinds = "all types" if self.type_filter is None else ", ".join(sorted(self.type_filter))
        if len(kinds) > 40:
            kinds = f"{len(self.type_filter or ())} types"
        search = f" · search “{query}”" if query else ""
        self.label.text = (f"{len(rows):,} of {n:,} events · {kinds}{search} · "
                           "▶ playhead · enter: move it here")

    def refilter(self) -> None:
        """Filter the whole log again (the filter changed)."""
        replay = self.replay
        with replay.lock:
            self._filter(replay.index, len(replay))
            self.event_log.set_playhead(replay.cursor - 1)

    def set_type_filter(self, types: set[str] | None) -> None:
        """Keep only events of these types in the log (None: all)."""
        self.type_filter = types
        self.refilter()

    def focus_search(self) -> None:
        self.search_box.focus()

    @on(Input.Changed, "#event-search")
    def _search_changed(self, message: Input.Changed) -> None:
        self.search = message.value
        self.refilter()

    @on(Input.Submitted, "#event-search")
    def _search_submitted(self, message: Input.Submitted) -> None:
        self.event_log.focus()
