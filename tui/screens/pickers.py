"""Small modal pickers: event types for the log filter, a candidate to diff against."""
from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, OptionList, SelectionList, Static
from textual.widgets.option_list import Option


class TypeFilterScreen(ModalScreen[set[str] | None]):
    """Tick the event types the log shows. Enter applies, escape cancels."""

    BINDINGS = [
        Binding("enter", "apply", "Apply", priority=True),
        Binding("a", "all", "All"),
        Binding("n", "none", "None"),
        Binding("escape", "cancel", "Cancel"),
    ]

    def __init__(self, counts: dict[str, int], selected: set[str] | None) -> None:
        super().__init__()
        self.counts = counts
        self.selected = set(counts) if selected is None else set(selected)

    def compose(self) -> ComposeResult:
        with Vertical(id="picker"):
            yield Static("event types · space: toggle · a: all · n: none · enter: apply · "
                         "esc: cancel", classes="picker-title")
            yield SelectionList[str](
                *[(f"{t}  ({n:,})", t, t in self.selected)
                  for t, n in sorted(self.counts.items())],
                id="types",
            )

    def on_mount(self) -> None:
        self.query_one(SelectionList).focus()

    def action_apply(self) -> None:
        self.dismiss(set(self.query_one(SelectionList).selected))

    def action_all(self) -> None:
        self.query_one(SelectionList).select_all()

    def action_none(self) -> None:
        self.query_one(SelectionList).deselect_all()

    def action_cancel(self) -> None:
        self.dismiss(None)


class CandidatePicker(ModalScreen[str | None]):
    """Choose a candidate (best first); type to narrow the list."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, choices: list[tuple[str, str]]) -> None:
        super().__init__()
        self.choices = choices

    def compose(self) -> ComposeResult:
        with Vertical(id="picker"):
            yield Static("diff against… · type to narrow · enter: choose · esc: cancel",
                         classes="picker-title")
            yield Input(placeholder="candidate id", id="pick-filter")
            yield OptionList(*[Option(label, id=cid) for cid, label in self.choices],
                             id="pick-list")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    @on(Input.Changed, "#pick-filter")
    def _narrow(self, message: Input.Changed) -> None:
        q = message.value.strip().lower()
        box = self.query_one(OptionList)
        box.clear_options()
        box.add_options([Option(label, id=cid) for cid, label in self.choices
                         if q in label.lower()])
        if box.option_count:
            box.highlighted = 0

    @on(Input.Submitted, "#pick-filter")
    def _submit(self, message: Input.Submitted) -> None:
        box = self.query_one(OptionList)
        if box.option_count:
            self.dismiss(box.get_option_at_index(box.highlighted or 0).id)

    @on(OptionList.OptionSelected, "#pick-list")
    def _chosen(self, message: OptionList.OptionSelected) -> None:
        self.dismiss(message.option.id)

    def action_cancel(self) -> None:
        self.dismiss(None)
