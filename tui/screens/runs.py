"""The runs screen: every run in the database, filtered and sorted; Enter opens one."""
from __future__ import annotations

from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Input, Static
from textual.worker import Worker, WorkerState

from selfdev.store import EventStore
from selfdev.tui.data import COLUMNS, RunRow, list_runs

HEADERS = {"run": "run", "status": "status", "domain": "domain", "generator": "generator",
           "iters": "iters", "dev": "best dev", "test": "best test", "started": "started (UTC)",
           "duration": "duration", "events": "events"}


class RunsScreen(Screen):
    BINDINGS = [
        Binding("enter", "open", "Open run", show=True),
        Binding("slash", "filter", "Filter", key_display="/"),
        Binding("s", "sort", "Sort column"),
        Binding("r", "reverse", "Reverse"),
        Binding("ctrl+r,f5", "reload", "Reload", show=False),
        Binding("escape", "clear_filter", "Clear filter", show=False),
    ]

    def __init__(self, store: Any, *, refresh_every: float = 2.0, load_now: bool = True) -> None:
        super().__init__()
        self.store = store
        self.refresh_every = refresh_every
        # False when a run screen goes over the list at once (``selfdev tui RUN``): the list is
        # then read when it first comes into view, not while the run's own loader works
        self.load_now = load_now
        self._resumes = 0
        self.rows: list[RunRow] = []
        self.sort_column = "started"
        self.sort_reverse = True
        self.query_text = ""
        self._shown: list[tuple] = []
        self.loaded = False

    def compose(self) -> ComposeResult:
        yield Static(id="runs-title")
        yield Input(placeholder="filter runs: / (any column)", id="runs-filter")
        yield DataTable(id="runs-table", cursor_type="row", zebra_stripes=True)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        for key in COLUMNS:
            table.add_column(HEADERS[key], key=key)
        table.focus()
        if self.load_now:
            self.reload()
        if self.refresh_every:
            self.set_interval(self.refresh_every, self._tick)

    def on_screen_resume(self) -> None:
        """Coming back into view (escape from a run), read the runs at once."""
        self._resumes += 1
        if (self._resumes > 1 or not self.load_now) and self.is_current:
            self.reload()

    def _tick(self) -> None:
        # a hidden list is not polled: under a run screen it would fold every run again,
        # competing with the run screen's own loader for the two cores
        if self.is_current:
            self.reload()

    @work(thread=True, exclusive=True, group="runs", exit_on_error=False)
    def reload(self) -> None:
        """Fold the runs listing in a worker (its own read-only connection)."""
        with EventStore(self.store.path, readonly=True) as store:
            rows = list_runs(store, self.app.clock)
        try:
            self.app.call_from_thread(self._show, rows)
        except RuntimeError:  # the app is closing
            pass

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR:
            error = event.worker.error
            self.notify(f"{type(error).__name__}: {error}", title="reading the runs failed",
                        severity="error", timeout=10)

    def _show(self, rows: list[RunRow]) -> None:
        self.rows = rows
        self.loaded = True
        self._render_rows()

    def _render_rows(self) -> None:
        table = self.query_one(DataTable)
        rows = [r for r in self.rows if r.matches(self.query_text)]
        rows.sort(key=lambda r: r.sort_key(self.sort_column), reverse=self.sort_reverse)
        shown = [(r.run_id, r.cells()) for r in rows]
        if shown != self._shown:
            selected = self.selected_run
            self._shown = shown
            table.clear()
            for run_id, cells in shown:
                table.add_row(*cells, key=run_id)
            if selected is not None:
                for i, (run_id, _) in enumerate(shown):
                    if run_id == selected:
                        table.move_cursor(row=i, animate=False)
        arrow = "↓" if self.sort_reverse else "↑"
        live = sum(1 for r in self.rows if r.status == "running")
        filt = f" · filter “{self.query_text}”" if self.query_text else ""
        self.query_one("#runs-title", Static).update(
            f"selfdev · {self.app.db_label} · {len(rows)} of {len(self.rows)} runs"
            f"{' · ' + str(live) + ' running' if live else ''} · sorted by "
            f"{HEADERS[self.sort_column]} {arrow}{filt}")

    @property
    def selected_run(self) -> str | None:
        table = self.query_one(DataTable)
        if not self._shown or not (0 <= table.cursor_row < len(self._shown)):
            return None
        return self._shown[table.cursor_row][0]

    # -- actions ---------------------------------------------------------------------------

    def action_open(self) -> None:
        run_id = self.selected_run
        if run_id is not None:
            self.app.open_run(run_id)

    @on(DataTable.RowSelected, "#runs-table")
    def _selected(self, message: DataTable.RowSelected) -> None:
        if message.row_key.value:
            self.app.open_run(str(message.row_key.value))

    @on(DataTable.HeaderSelected, "#runs-table")
    def _header(self, message: DataTable.HeaderSelected) -> None:
        key = str(message.column_key.value)
        if key == self.sort_column:
            self.sort_reverse = not self.sort_reverse
        else:
            self.sort_column = key
        self._render_rows()

    def action_sort(self) -> None:
        i = COLUMNS.index(self.sort_column)
        self.sort_column = COLUMNS[(i + 1) % len(COLUMNS)]
        self._render_rows()

    def action_reverse(self) -> None:
        self.sort_reverse = not self.sort_reverse
        self._render_rows()

    def action_filter(self) -> None:
        self.query_one("#runs-filter", Input).focus()

    def action_clear_filter(self) -> None:
        box = self.query_one("#runs-filter", Input)
        if box.value:
            box.value = ""
        self.query_one(DataTable).focus()

    def action_reload(self) -> None:
        self.reload()

    @on(Input.Changed, "#runs-filter")
    def _filter_changed(self, message: Input.Changed) -> None:
        self.query_text = message.value
        self._render_rows()

    @on(Input.Submitted, "#runs-filter")
    def _filter_submitted(self, message: Input.Submitted) -> None:
        self.query_one(DataTable).focus()
