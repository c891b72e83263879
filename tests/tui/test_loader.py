"""The run screen's loader, without Textual: pages, folding while pinned, following, stopping."""
import threading

import pytest
import synth

from selfdev.engine.state import fold
from selfdev.store import EventStore
from selfdev.tui.loader import RunLoader
from selfdev.tui.replay import Replay


def loader_for(path, run_id, *, pinned=True, page_size=5000, poll_interval=0.05):
    store = EventStore(path, readonly=True)
    replay = Replay.for_store(store, run_id)
    posted = []
    loader = RunLoader(path, run_id, replay, posted.append, pinned=lambda: pinned,
                       poll_interval=poll_interval, page_size=page_size)
    return store, replay, loader, posted


def run_in_thread(loader, stop, timeout):
    thread = threading.Thread(target=loader.run, args=(stop,), daemon=True)
    thread.start()
    thread.join(timeout)
    return thread


@pytest.mark.parametrize("pages", [1, 3])
def test_a_finished_run_is_read_in_pages_folded_and_left(tmp_path, pages):
    path = tmp_path / "runs.db"
    with EventStore(path, writer="test") as store:
        run_id = synth.write_run(store, "run-done", iterations=2, candidates=6)
        events = list(store.iter_events(run_id=run_id))
        head = store.head(run_id)
    page_size = -(-len(events) // pages)  # pages=1: run.finished ends a full page
    store, replay, loader, posted = loader_for(path, run_id, page_size=page_size)
    stop = threading.Event()
    try:
        thread = run_in_thread(loader, stop, 10)
        assert not thread.is_alive(), "a finished run is read once and left"
        assert len(replay) == len(events)
        # pinned: the playhead followed every page, folded exactly like the engine
        assert replay.cursor == len(events) and replay.state == fold(events)
        # one message per page, each saying everything: only the last page ends the loading
        assert [m.done for m in posted] == [False] * (pages - 1) + [True]
        last = posted[-1]
        assert (last.total, last.live, last.head) == (len(events), False, head)
    finally:
        stop.set()
        store.close()


def test_unpinned_the_playhead_stays_and_a_crashed_run_is_followed_until_stopped(tmp_path):
    path = tmp_path / "runs.db"
    with EventStore(path, writer="test") as store:
        run_id = synth.write_run(store, "run-crash", iterations=2, candidates=4,
                                 stop_after="iteration:1")
        n = len(list(store.iter_events(run_id=run_id)))
    store, replay, loader, posted = loader_for(path, run_id, pinned=False)
    stop = threading.Event()
    try:
        thread = run_in_thread(loader, stop, 1.0)
        assert thread.is_alive(), "an unfinished run is followed, not left"
        assert loader.loaded and len(replay) == n and replay.cursor == 0
        assert posted and posted[-1].done and not posted[-1].live  # nobody writes it
    finally:
        stop.set()
        thread.join(5)
        store.close()
    assert not thread.is_alive()
