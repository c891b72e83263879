"""A one-line strip naming the panes; the active one is bracketed (and highlighted)."""
from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual import events
from textual.message import Message
from textual.reactive import reactive
from textual.widget import Widget


class TabStrip(Widget):
    DEFAULT_CSS = """
    TabStrip { height: 1; padding: 0 1; }
    TabStrip > .tab-strip--active { text-style: bold reverse; }
    """
    COMPONENT_CLASSES = {"tab-strip--active"}

    active: reactive[str] = reactive("")

    @dataclass
    class Picked(Message):
        strip: "TabStrip"
        name: str

    def __init__(self, tabs: list[tuple[str, str]], *, id: str | None = None,
                 suffix: str = "") -> None:
        """``tabs``: (name, label) pairs; labels are numbered 1, 2, ... (the keys)."""
        super().__init__(id=id)
        self.tabs = tabs
        self.suffix = suffix
        self.active = tabs[0][0] if tabs else ""
        self._spans: list[tuple[int, int, str]] = []

    def render(self) -> Text:
        text = Text(no_wrap=True, overflow="ellipsis")
        style = self.get_component_rich_style("tab-strip--active")
        self._spans = []
        for n, (name, label) in enumerate(self.tabs, 1):
            start = len(text)
            if name == self.active:
                text.append(f"[{n} {label}]", style)
            else:
                text.append(f" {n} {label} ")
            self._spans.append((start, len(text), name))
            text.append(" ")
        if self.suffix:
            text.append(self.suffix)
        return text

    def set_suffix(self, suffix: str) -> None:
        if suffix != self.suffix:
            self.suffix = suffix
            self.refresh()

    def on_click(self, event: events.Click) -> None:
        x = event.x - 1
        for start, end, name in self._spans:
            if start <= x < end:
                self.post_message(self.Picked(self, name))
