"""``python -m selfdev.tui [RUN] [--db PATH]``: the same as ``selfdev tui``."""
from selfdev.tui.cli import tui_cmd

tui_cmd(prog_name="selfdev tui")
