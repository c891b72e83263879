"""Snapshots of the main screens at fixed sizes, on a deterministic database (fixed event ids
and times) with a frozen clock. Update with ``pytest tests/tui --snapshot-update``."""
import pytest
from tui_helpers import frozen_clock, wait_until

from selfdev.tui.app import SelfdevApp
from selfdev.tui.screens.run import RunScreen


@pytest.fixture
def app(demo_db):
    path, _ = demo_db
    return SelfdevApp(str(path), clock=frozen_clock, runs_refresh=0)


def opened(run_index: int, *keys: str):
    """A run_before hook: open the demo's run ``run_index`` (0: finished, 1: crashed), wait
    until it is loaded and drawn, then press ``keys``."""

    async def run_before(pilot):
        app = pilot.app
        await wait_until(pilot, lambda: getattr(app.screen, "loaded", False)
                         and len(app.screen._shown) == len(app.screen.rows) > 0)
        if run_index is not None:
            run_id = sorted(r.run_id for r in app.screen.rows)[run_index]
            app.open_run(run_id)
            await wait_until(pilot, lambda: isinstance(app.screen, RunScreen)
                             and app.screen.loaded and app.screen.first_paint is not None)
        await pilot.pause()
        if keys:
            await pilot.press(*keys)
        await pilot.pause(0.2)

    return run_before


class TestSnapshots:
    def test_runs_screen(self, snap_compare, app):
        """Three runs: finished, interrupted (resumable), failed (resumable)."""
        assert snap_compare(app, terminal_size=(100, 30), run_before=opened(None))

    def test_run_leaderboard_80x24(self, snap_compare, app):
        """The finished run at its last event, in the smallest supported terminal."""
        assert snap_compare(app, terminal_size=(80, 24), run_before=opened(0))

    def test_run_playhead_moved_events(self, snap_compare, app):
        """Playhead back to the previous iteration, then the event log pane."""
        assert snap_compare(app, terminal_size=(100, 30),
                            run_before=opened(0, "left_curly_bracket", "left_curly_bracket",
                                              "right_square_bracket", "4"))

    def test_run_iterations(self, snap_compare, app):
        """The per-iteration pane of a crashed run."""
        assert snap_compare(app, terminal_size=(100, 30), run_before=opened(1, "2"))

    def test_run_plot(self, snap_compare, app):
        """Dev scores by iteration with the baselines as reference lines."""
        assert snap_compare(app, terminal_size=(100, 30), run_before=opened(0, "3"))

    def test_candidate_diff(self, snap_compare, app):
        """The runner-up's code diffed against the best candidate."""
        assert snap_compare(app, terminal_size=(100, 30),
                            run_before=opened(0, "down", "enter", "2"))

    def test_wide_layout(self, snap_compare, app):
        """All four panes at once in a large terminal."""
        assert snap_compare(app, terminal_size=(150, 42), run_before=opened(0))

    def test_help(self, snap_compare, app):
        """Every binding, in the help screen."""
        assert snap_compare(app, terminal_size=(100, 30), run_before=opened(0, "question_mark"))
