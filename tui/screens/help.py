"""The help screen: the key bindings it is given, grouped by where they work.

The app builds the groups from the screens' own ``BINDINGS`` (``SelfdevApp.binding_groups``),
so this module knows no screen and the list can never fall behind the keys.
"""
from __future__ import annotations

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

#: (where, bindings) pairs, in the order the help screen lists them
BindingGroups = list[tuple[str, list[Binding]]]


def key_names(binding: Binding) -> str:
    names = []
    for key in binding.key.split(","):
        key = key.strip()
        names.append({"left_square_bracket": "[", "right_square_bracket": "]",
                      "left_curly_bracket": "{", "right_curly_bracket": "}",
                      "slash": "/", "plus": "+", "minus": "-", "equals_sign": "=",
                      "question_mark": "?", "space": "space"}.get(key, key))
    return " / ".join(names)


class HelpScreen(ModalScreen[None]):
    """``HelpScreen(groups)``: one table row per binding, the group named on its first."""

    BINDINGS = [Binding("escape,q,question_mark,f1", "close", "Close")]

    def __init__(self, groups: BindingGroups) -> None:
        super().__init__()
        self.groups = groups

    def compose(self) -> ComposeResult:
        table = Table(box=None, expand=False, pad_edge=False, show_header=True)
        table.add_column("where", style="bold")
        table.add_column("keys")
        table.add_column("does")
        self.rows: list[tuple[str, str, str]] = []
        for group, bindings in self.groups:
            first = True
            for b in bindings:
                row = (group if first else "", key_names(b),
                       b.tooltip or b.description or b.action)
                table.add_row(*row)
                self.rows.append(row)
                first = False
        notes = ("\nThe playhead is the number of events folded (with the engine's own fold). "
                 "Statuses, verdicts and audit results are spelled out in words; colour only "
                 "repeats them. ctrl+p opens the command palette.")
        with VerticalScroll(id="help"):
            yield Static("selfdev tui · keys (esc closes)", classes="picker-title")
            yield Static(table)
            yield Static(notes)

    def action_close(self) -> None:
        self.dismiss(None)
