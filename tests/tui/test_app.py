"""Pilot tests: the runs list, the playhead, the panes, the candidate view, the audit."""
import shutil
import sqlite3

import pytest
from tui_helpers import frozen_clock, open_run, wait_until

from selfdev.engine.state import fold
from selfdev.store import EventStore
from selfdev.tui.app import SelfdevApp
from selfdev.tui.screens.candidate import CandidateScreen
from selfdev.tui.screens.help import HelpScreen, key_names
from selfdev.tui.screens.pickers import CandidatePicker, TypeFilterScreen
from selfdev.tui.screens.run import RunScreen
from selfdev.tui.screens.runs import RunsScreen
from selfdev.tui.widgets.eventlog import EventLog
from selfdev.tui.widgets.iterations import IterationTable
from selfdev.tui.widgets.leaderboard import Leaderboard
from selfdev.tui.widgets.playhead import Playhead


def all_events(path, run_id):
    with EventStore(path, readonly=True) as store:
        return list(store.iter_events(run_id=run_id))


def app_for(path, **kw):
    return SelfdevApp(str(path), clock=frozen_clock, runs_refresh=0, **kw)


class TestRunsScreen:
    async def test_lists_runs_with_status_filter_and_sort(self, demo_db):
        path, (finished, crashed, failed) = demo_db
        app = app_for(path)
        async with app.run_test(size=(100, 30)) as pilot:
            screen = app.screen
            assert isinstance(screen, RunsScreen)
            await wait_until(pilot, lambda: screen.loaded)
            status = {r.run_id: r.status_label for r in screen.rows}
            assert status == {finished: "✓ finished", crashed: "⚠ interrupted (resumable)",
                              failed: "✗ failed (resumable)"}
            # newest first by default; s sorts by the next column, r reverses
            assert [r for r, _ in screen._shown] == [failed, crashed, finished]
            await pilot.press("s", "r")
            assert screen.sort_column == "duration" and not screen.sort_reverse
            await pilot.press("slash", *"interr")
            assert [r for r, _ in screen._shown] == [crashed]
            await pilot.press("escape")
            assert len(screen._shown) == 3
            # the cursor stays on the run it was on (crashed) through filters and sorts
            await pilot.press("s")
            assert screen.selected_run == crashed
            await pilot.press("up", "up", "up")
            top = screen.selected_run
            assert top == screen._shown[0][0]
            # enter opens the run under the cursor
            await pilot.press("enter")
            await wait_until(pilot, lambda: isinstance(app.screen, RunScreen))
            assert app.screen.run_id == top
            await pilot.press("escape")
            assert isinstance(app.screen, RunsScreen)

    async def test_a_live_writer_shows_running(self, tmp_path):
        import synth

        path = tmp_path / "live.db"
        with EventStore(path, writer="test") as store:
            synth.write_run(store, "run-live", iterations=1, candidates=3,
                            stop_after="iteration:1")
            app = app_for(path)
            async with app.run_test(size=(100, 30)) as pilot:
                await wait_until(pilot, lambda: app.screen.loaded)
                assert app.screen.rows[0].status_label == "● running"
                assert app.screen.rows[0].duration is not None


class TestRunScreen:
    async def test_playhead_keys_fold_like_the_engine(self, run_db):
        path, run_id, _ = run_db
        events = all_events(path, run_id)
        n = len(events)
        app = app_for(path)
        async with app.run_test(size=(100, 30)) as pilot:
            screen = await open_run(pilot, run_id)
            assert screen.cursor == n
            assert screen.replay.state == fold(events)

            async def at(k):
                await pilot.pause()
                assert screen.cursor == k
                assert screen.replay.state == fold(events[:k])

            await pilot.press("left", "left", "left")
            await at(n - 3)
            await pilot.press("right")
            await at(n - 2)
            await pilot.press("home")
            await at(1)
            await pilot.press("right_curly_bracket")
            first_iteration = next(i for i, e in enumerate(events) if e.type == "iteration.started")
            await at(first_iteration + 1)
            await pilot.press("right_curly_bracket", "left_curly_bracket")
            await at(first_iteration + 1)
            await pilot.press("right_square_bracket")
            k = screen.cursor
            assert events[k - 1].payload.get("candidate_id")
            await pilot.press("right_square_bracket")
            assert events[screen.cursor - 1].payload["candidate_id"] != events[k - 1].payload["candidate_id"]
            await pilot.press("end")
            await at(n)
            # the timeline says where the playhead is
            assert f"event {n:,}/{n:,}" in screen.query_one(Playhead).info

    async def test_leaderboard_and_iterations_follow_the_playhead(self, run_db):
        path, run_id, _ = run_db
        events = all_events(path, run_id)
        first_dev = next(i for i, e in enumerate(events) if e.type == "candidate.evaluated")
        app = app_for(path)
        async with app.run_test(size=(100, 30)) as pilot:
            screen = await open_run(pilot, run_id)
            board = screen.query_one(Leaderboard)
            final = fold(events).ranked()
            assert board.shown == board.row_count == len(final)
            assert [board.get_row_at(i)[1] for i in range(len(final))] == \
                [c.candidate_id for c in final]
            screen.move_to(first_dev + 1)
            await pilot.pause()
            assert board.shown == 1
            assert board.get_row_at(0)[1] == events[first_dev].payload["candidate_id"]
            assert board.get_row_at(1) == [""] * 7  # ranks with no candidate are blank
            screen.move_to(first_dev)
            await pilot.pause()
            assert board.shown == 0 and board.selected_candidate is None
            await pilot.press("2")
            table = screen.query_one(IterationTable)
            assert table.row_count == 1
            detail = str(screen.query_one("#iteration-detail").render())
            assert "iteration 1" in detail and "executable" in detail
            await pilot.press("end", "3")
            assert "best so far" in str(screen.query_one("#plot-legend").render())

    async def test_play_advances_and_stops_at_the_end(self, run_db):
        path, run_id, _ = run_db
        n = len(all_events(path, run_id))
        app = app_for(path)
        async with app.run_test(size=(80, 24)) as pilot:
            screen = await open_run(pilot, run_id)
            await pilot.press("home")
            await pilot.press("plus", "plus", "minus")
            playhead = screen.query_one(Playhead)
            assert playhead.speed == 100
            await pilot.press("space")
            assert playhead.playing
            await wait_until(pilot, lambda: screen.cursor > 1, what="playback")
            await wait_until(pilot, lambda: not playhead.playing, what="end of playback")
            assert screen.cursor == n

    async def test_follow_pins_the_playhead_and_play_starts_an_ended_run_over(self, demo_db):
        path, (finished, *_rest) = demo_db
        app = app_for(path)
        async with app.run_test(size=(100, 30)) as pilot:
            screen = await open_run(pilot, finished)
            playhead = screen.query_one(Playhead)
            n = len(screen.replay)
            assert playhead.follow and playhead.pinned and screen.cursor == n
            await pilot.press("left")
            assert not playhead.pinned and screen.cursor == n - 1
            await pilot.press("end")
            assert playhead.pinned and screen.cursor == n
            await pilot.press("f")  # follow off: the playhead stays where it is put
            assert not playhead.follow and not playhead.pinned
            await pilot.press("left", "end")
            assert not playhead.pinned
            await pilot.press("left", "f")  # follow on again: to the newest event, pinned
            assert playhead.follow and playhead.pinned and screen.cursor == n
            assert playhead.info.startswith(f"⏸ 50 ev/s │ event {n:,}/{n:,} │ ")
            await pilot.press("space")  # at the end of a run that has ended: from the start
            assert playhead.playing and not playhead.pinned and screen.cursor < 10
            assert playhead.info.startswith("▶ 50 ev/s │ ")
            await pilot.press("space")
            k = screen.cursor
            await pilot.pause(0.2)
            assert not playhead.playing and screen.cursor == k  # paused means paused

    async def test_event_log_filters_search_and_jump(self, run_db):
        path, run_id, _ = run_db
        events = all_events(path, run_id)
        app = app_for(path)
        async with app.run_test(size=(100, 30)) as pilot:
            screen = await open_run(pilot, run_id)
            await pilot.press("4")
            log = screen.query_one(EventLog)
            assert len(log.rows) == len(events)
            assert log.cursor_event == len(events) - 1  # the cursor sits on the playhead
            # type filter through the picker: keep only candidate.evaluated
            await pilot.press("t")
            assert isinstance(app.screen, TypeFilterScreen)
            picker = app.screen
            from textual.widgets import SelectionList

            sel = picker.query_one(SelectionList)
            sel.deselect_all()
            sel.select("candidate.evaluated")
            await pilot.press("enter")
            assert app.screen is screen
            evaluated = [i for i, e in enumerate(events) if e.type == "candidate.evaluated"]
            assert log.rows == evaluated
            # search narrows further, case-insensitively
            cid = events[evaluated[0]].payload["candidate_id"]
            await pilot.press("slash", *cid.upper())
            # in the search box the arrow keys edit the text; they do not move the playhead
            before = screen.cursor
            await pilot.press("left", "home", "end")
            from textual.widgets import Input

            box = screen.query_one("#event-search", Input)
            assert screen.cursor == before and box.cursor_position == len(cid)
            assert log.rows == [i for i in evaluated if events[i].payload["candidate_id"] == cid]
            assert cid.upper() in str(screen.query_one("#events-label").render())
            await pilot.press("enter")  # leaves the search box for the log
            assert screen.focused is log
            assert log.cursor_event == log.rows[-1]  # the match nearest the playhead
            await pilot.press("ctrl+home", "enter")  # playhead onto the first match
            assert screen.cursor == log.rows[0] + 1
            assert screen.replay.state == fold(events[:screen.cursor])
            screen.event_pane.set_type_filter(None)
            await pilot.press("slash", *["backspace"] * 20, "escape")
            assert len(log.rows) == len(events)

    async def test_candidate_view_code_verdicts_and_diffs(self, run_db):
        path, run_id, _ = run_db
        state = fold(all_events(path, run_id))
        ranked = state.ranked()
        with EventStore(path, readonly=True) as store:
            second_code = store.get_text(ranked[1].code)
            best_completion = store.get_text(ranked[0].completion)
        app = app_for(path)
        async with app.run_test(size=(100, 30)) as pilot:
            screen = await open_run(pilot, run_id)
            # enter on the leaderboard's second row opens that candidate
            await pilot.press("down", "enter")
            cand = app.screen
            assert isinstance(cand, CandidateScreen)
            assert cand.candidate_id == ranked[1].candidate_id
            info = cand.shown["info"]
            assert "screening  accepted" in info and "sandbox    ok" in info
            assert "dev " in info
            assert cand.shown["code"] == second_code
            # diff against the best (the default target)
            await pilot.press("2")
            assert cand.diff_against == ranked[0].candidate_id
            assert cand.shown["diff"].startswith(f"--- {ranked[0].candidate_id} (best")
            assert "\n+++ " + ranked[1].candidate_id in cand.shown["diff"]
            # ... and against any other one, picked from a list
            await pilot.press("o")
            assert isinstance(app.screen, CandidatePicker)
            other = ranked[2].candidate_id
            await pilot.press(*other, "enter")
            assert app.screen is cand
            assert cand.diff_against == other
            await pilot.press("escape")
            # b opens the best one; its raw completion is there
            await pilot.press("b")
            best = app.screen
            assert best.candidate_id == ranked[0].candidate_id
            await pilot.press("3")
            assert best.shown["completion"] == best_completion
            # the best one diffs against the runner-up
            assert best.diff_target(ranked) == ranked[1].candidate_id

    async def test_candidate_view_shows_rejections(self, demo_db):
        path, (finished, *_rest) = demo_db
        events = all_events(path, finished)
        rejected = next(e.payload["candidate_id"] for e in events
                        if e.type == "candidate.screened" and e.payload["status"] == "rejected")
        failed = next(e.payload for e in events
                      if e.type == "candidate.executed" and e.payload["status"] != "ok")
        app = app_for(path)
        async with app.run_test(size=(100, 30)) as pilot:
            screen = await open_run(pilot, finished)
            screen.open_candidate(rejected)
            await pilot.pause()
            info = app.screen.shown["info"]
            assert "screening  rejected — " in info and "sandbox    not run" in info
            await pilot.press("escape")
            screen.open_candidate(failed["candidate_id"])
            await pilot.pause()
            info = app.screen.shown["info"]
            assert f"sandbox    {failed['status']}" in info and failed["reason"] in info

    async def test_verify_intact_and_broken(self, run_db, tmp_path):
        path, run_id, _ = run_db
        app = app_for(path)
        async with app.run_test(size=(100, 30)) as pilot:
            screen = await open_run(pilot, run_id)
            title = screen.title_bar
            head = title.head[1]
            assert head.startswith("b2:") and head[:14] in str(screen.query_one("#run-title").render())
            await pilot.press("v")
            await wait_until(pilot, lambda: title.verify_result is not None, what="verify")
            assert title.verify_result.ok
            assert "intact ✓" in str(screen.query_one("#run-title").render())
        # tamper with a copy (triggers dropped first), then audit it
        bad = tmp_path / "tampered.db"
        with sqlite3.connect(path) as src, sqlite3.connect(bad) as dst:
            src.backup(dst)
        with sqlite3.connect(bad) as conn:
            conn.execute("DROP TRIGGER events_no_update")
            pos = conn.execute("SELECT position FROM events WHERE run_id = ? AND type = "
                               "'candidate.evaluated' LIMIT 1", (run_id,)).fetchone()[0]
            conn.execute("UPDATE events SET payload = replace(payload, '\"score\":', "
                         "'\"score\": 99.0, \"was\":') WHERE position = ?", (pos,))
        app = app_for(bad)
        async with app.run_test(size=(100, 30)) as pilot:
            screen = await open_run(pilot, run_id)
            title = screen.title_bar
            await pilot.press("v")
            await wait_until(pilot, lambda: title.verify_result is not None, what="verify")
            assert not title.verify_result.ok
            assert title.verify_result.first_broken == pos
            assert f"BROKEN ✗ at #{pos}" in str(screen.query_one("#run-title").render())

    async def test_narrow_and_wide_layouts(self, run_db):
        path, run_id, _ = run_db
        app = app_for(path)
        async with app.run_test(size=(80, 24)) as pilot:
            screen = await open_run(pilot, run_id)
            assert not screen.wide
            for key in "1234":
                await pilot.press(key)
                shown = [p.id for p in screen.query(".pane") if p.display]
                assert len(shown) == 1
        app = app_for(path)
        async with app.run_test(size=(150, 42)) as pilot:
            screen = await open_run(pilot, run_id)
            assert screen.wide
            assert all(p.display for p in screen.query(".pane"))
            assert not screen.query_one("#panes-tabs").display


class TestHelpAndPalette:
    async def test_help_lists_every_binding(self, demo_db):
        path, runs = demo_db
        app = app_for(path)
        async with app.run_test(size=(100, 30)) as pilot:
            await open_run(pilot, runs[0])
            await pilot.press("question_mark")
            assert isinstance(app.screen, HelpScreen)
            rows = app.screen.rows
            listed = {(keys, does) for _, keys, does in rows}
            for _, bindings in SelfdevApp.binding_groups():
                for b in bindings:
                    assert (key_names(b), b.tooltip or b.description) in listed
            assert any("left" in keys for keys, _ in listed)
            await pilot.press("escape")
            assert isinstance(app.screen, RunScreen)

    async def test_command_palette_runs_the_main_actions(self, demo_db):
        path, runs = demo_db
        app = app_for(path)
        async with app.run_test(size=(100, 30)) as pilot:
            screen = await open_run(pilot, runs[0])
            await pilot.press("ctrl+p")
            await pilot.press(*"verify hash")
            await pilot.pause(0.3)
            await pilot.press("enter")
            title = screen.title_bar
            await wait_until(pilot, lambda: title.verify_result is not None, what="verify")
            assert title.verify_result.ok
            from selfdev.tui.commands import SelfdevCommands

            names = [name for name, _, _ in SelfdevCommands(screen).commands()]
            assert "run: play / pause" in names and "app: help (all keys)" in names


def test_the_app_refuses_a_writable_store(tmp_path):
    with EventStore(tmp_path / "w.db") as store:
        with pytest.raises(ValueError, match="only reads"):
            SelfdevApp(store)


def test_the_tui_never_writes(run_db, tmp_path):
    """Opening, replaying and auditing leave the file byte for byte as it was."""
    import asyncio

    path, run_id, _ = run_db
    copy = tmp_path / "ro.db"
    shutil.copy(path, copy)
    before = copy.read_bytes()

    async def go():
        app = app_for(copy)
        async with app.run_test(size=(80, 24)) as pilot:
            await open_run(pilot, run_id)
            await pilot.press("home", "right", "v", "4")
            await pilot.pause(0.5)

    asyncio.run(go())
    assert copy.read_bytes() == before
