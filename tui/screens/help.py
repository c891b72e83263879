"""The help screen: every key binding of every screen, read from the bindings themselves."""
from __future__ import annotations

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static


def binding_groups() -> list[tuple[str, list[Binding]]]:
    from selfdev.tui.app import SelfdevApp
    from selfdev.tui.screens.candidate import CandidateScreen
    from selfdev.tui.screens.pickers import CandidatePicker, TypeFilterScreen
    from selfdev.tui.screens.run import RunScreen
    from selfdev.tui.screens.runs import RunsScreen
    from selfdev.tui.widgets.eventlog import EventLog

    def of(cls: type) -> list[Binding]:
        return [b for b in cls.BINDINGS if isinstance(b, Binding)]

    return [
        ("everywhere", of(SelfdevApp)),
        ("runs list", of(RunsScreen)),
        ("run (playhead and panes)", of(RunScreen)),
        ("event log pane", of(EventLog)),
        ("candidate view", of(CandidateScreen)),
        ("event type filter", of(TypeFilterScreen)),
        ("candidate picker", of(CandidatePicker)),
    ]


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
    BINDINGS = [Binding("escape,q,question_mark,f1", "close", "Close")]

    def compose(self) -> ComposeResult:
        table = Table(box=None, expand=False, pad_edge=False, show_header=True)
        table.add_column("where", style="bold")
        table.add_column("keys")
        table.add_column("does")
        self.rows: list[tuple[str, str, str]] = []
        for group, bindings in binding_groups():
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
