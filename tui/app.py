"""The Textual app: a runs list at the bottom of the stack, run screens pushed on top."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from textual.app import App
from textual.binding import Binding

from selfdev.store import EventStore
from selfdev.tui.commands import SelfdevCommands
from selfdev.tui.data import Clock, utc_now
from selfdev.tui.screens.candidate import CandidateScreen
from selfdev.tui.screens.help import BindingGroups, HelpScreen
from selfdev.tui.screens.pickers import CandidatePicker, TypeFilterScreen
from selfdev.tui.screens.run import RunScreen
from selfdev.tui.screens.runs import RunsScreen
from selfdev.tui.widgets.eventlog import EventLog


class SelfdevApp(App[None]):
    """``SelfdevApp(store_or_path, run_id=None)``.

    ``store_or_path``: an ``EventStore`` opened read-only, or a database path (opened
    read-only here and closed on exit). ``clock`` returns the current time (aware UTC
    datetime); tests pass a frozen one. ``poll_interval``: seconds between two looks for new
    events of a live run; ``runs_refresh``: seconds between two reloads of the runs list
    (0: never).
    """

    CSS_PATH = "app.tcss"
    TITLE = "selfdev"
    COMMANDS = App.COMMANDS | {SelfdevCommands}
    BINDINGS = [
        Binding("q", "quit", "Quit"),
        Binding("question_mark,f1", "help", "Help", key_display="?"),
    ]

    def __init__(self, store: Any, run_id: str | None = None, *, clock: Clock = utc_now,
                 poll_interval: float = 0.5, runs_refresh: float = 2.0) -> None:
        super().__init__()
        if isinstance(store, (str, os.PathLike)):
            store = EventStore(store, readonly=True)
            self._owns_store = True
        else:
            self._owns_store = False
        if not getattr(store, "readonly", False):
            raise ValueError("the TUI only reads: open the store with readonly=True")
        self.store = store
        self.start_run = run_id
        self.clock = clock
        self.poll_interval = poll_interval
        self.runs_refresh = runs_refresh

    @property
    def db_label(self) -> str:
        return Path(self.store.path).name

    def on_mount(self) -> None:
        self.push_screen(RunsScreen(self.store, refresh_every=self.runs_refresh,
                                    load_now=not self.start_run))
        if self.start_run:
            self.open_run(self.start_run)

    def on_unmount(self) -> None:
        if self._owns_store:
            self.store.close()

    def open_run(self, run_id: str) -> None:
        self.push_screen(RunScreen(self.store, run_id, poll_interval=self.poll_interval))

    @classmethod
    def binding_groups(cls) -> BindingGroups:
        """Every key of every screen, read from their ``BINDINGS``, for the help screen."""

        def of(owner: type) -> list[Binding]:
            return [b for b in owner.BINDINGS if isinstance(b, Binding)]

        return [
            ("everywhere", of(cls)),
            ("runs list", of(RunsScreen)),
            ("run (playhead and panes)", of(RunScreen)),
            ("event log pane", of(EventLog)),
            ("candidate view", of(CandidateScreen)),
            ("event type filter", of(TypeFilterScreen)),
            ("candidate picker", of(CandidatePicker)),
        ]

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.binding_groups()))
