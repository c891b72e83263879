"""In a real terminal: under tmux, ``selfdev tui`` on a database made by a real run shows the
runs screen, opens the run, and ``q`` exits cleanly. Skipped where tmux is not installed."""
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


def command(db: Path) -> str:
    """``selfdev tui`` when the root CLI has it, else ``python -m selfdev.tui``."""
    from selfdev.engine.cli import cli

    if "tui" in cli.commands:
        argv = [sys.executable, "-m", "selfdev.engine", "tui", "--db", str(db)]
    else:
        argv = [sys.executable, "-m", "selfdev.tui", "--db", str(db)]
    return shlex.join(argv)


def test_tui_in_tmux(run_db, tmp_path):
    db, run_id, _ = run_db
    sock = str(tmp_path / "tmux.sock")
    done = tmp_path / "exit-status"

    def tmux(*args: str) -> str:
        return subprocess.run(["tmux", "-S", sock, *args], capture_output=True, text=True,
                              timeout=20).stdout

    def screen() -> str:
        return tmux("capture-pane", "-p", "-t", "tui")

    def wait_for(text: str, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            shown = screen()
            if text in shown:
                return shown
            time.sleep(0.2)
        raise AssertionError(f"{text!r} never appeared; the pane shows:\n{screen()}")

    shell = f"{command(db)}; echo $? > {shlex.quote(str(done))}; sleep 30"
    subprocess.run(["tmux", "-S", sock, "new-session", "-d", "-s", "tui", "-x", "100", "-y",
                    "30", "-c", str(REPO), shell], check=True, timeout=20)
    try:
        shown = wait_for(run_id)
        assert "finished" in shown and "runs" in shown
        tmux("send-keys", "-t", "tui", "Enter")
        shown = wait_for("leaderboard as of event")
        assert "head b2:" in shown
        tmux("send-keys", "-t", "tui", "q")
        deadline = time.monotonic() + 20
        while not done.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert done.exists(), f"the app did not exit; the pane shows:\n{screen()}"
        assert done.read_text().strip() == "0"
    finally:
        tmux("kill-server")
