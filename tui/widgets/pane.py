"""What every pane of the run screen shares: the frame it is drawn from, a base class that
remembers where it was drawn, and a one-line text widget.

The run screen moves the playhead and hands each visible pane a :class:`Frame`; the pane
decides what to redraw. A pane remembers the playhead it last drew (``drawn``), so a step of
one event looks only at that event instead of redrawing from the whole state.
"""
from __future__ import annotations

from dataclasses import dataclass

from textual.containers import Vertical
from textual.message import Message
from textual.reactive import var
from textual.widgets import Static

from selfdev.engine.state import RunState
from selfdev.tui.replay import EventIndex

#: a playhead jump longer than this redraws everything instead of looking at what changed
DELTA_SCAN = 5000


@dataclass(frozen=True)
class Frame:
    """The run as of the playhead: the state after the first ``cursor`` of ``total`` events.

    Valid only while the caller holds the replay's lock (``state`` is the live fold).
    ``full``: redraw everything, whatever changed (the terminal was resized)."""

    state: RunState
    index: EventIndex
    cursor: int
    total: int
    loaded: bool = True  # the whole run is read (then followed)
    live: bool = False  # a writer holds the database and the run has not ended
    playing: bool = False
    full: bool = False

    @property
    def iteration(self) -> int:
        """The iteration the playhead is in (1-based; 0 before the first)."""
        return self.index.iteration_at(self.cursor)


class Line(Static):
    """Text that is replaced as a whole: setting :attr:`text` to what it already shows costs
    nothing. ``fixed``: its size never changes, so an update repaints without a relayout."""

    text: var[str] = var("", init=False)

    def __init__(self, *, fixed: bool = True, id: str | None = None,
                 classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.fixed = fixed

    def watch_text(self, text: str) -> None:
        self.update(text, layout=not self.fixed)


class Pane(Vertical):
    """One pane of the run screen (``#pane-NAME``): a label line over what it shows.

    Subclasses compose their widgets (``self.label`` among them) and implement :meth:`show`,
    which the run screen calls, under the replay's lock, while the pane is visible."""

    class Stale(Message):
        """A pane that put off a redraw wants the current frame now."""

    def __init__(self, name: str, *, active: bool = False) -> None:
        super().__init__(name=name, id=f"pane-{name}",
                         classes="pane -active" if active else "pane")
        self.label = Line(id=f"{name}-label", classes="pane-label")
        self.drawn: int | None = None  # the playhead this pane was last drawn at

    def span(self, frame: Frame) -> tuple[int, int] | None:
        """The events (``lo``, ``hi``: indices) between where this pane was drawn and the
        playhead; None: redraw everything (never drawn, a full redraw, or a long jump)."""
        if self.drawn is None or frame.full:
            return None
        lo, hi = sorted((self.drawn, frame.cursor))
        return None if hi - lo > DELTA_SCAN else (lo, hi)

    def show(self, frame: Frame) -> None:
        raise NotImplementedError

    def focus_body(self) -> None:
        """Focus the widget this pane's keys drive (the plot has none)."""

    def request_redraw(self) -> None:
        """Forget where this pane was drawn and ask the screen for a frame."""
        self.drawn = None
        self.post_message(self.Stale())
