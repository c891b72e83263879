"""``selfdev tui [RUN] [--db PATH]``: the click command, a built-in plugin.

The engine reaches it only through ``DEFAULT_PLUGINS``; its ``register_commands`` hook adds the
command to the root CLI. textual is imported when the command runs, not before.
"""
from __future__ import annotations

from pathlib import Path

import click

from selfdev import hookimpl

INSTALL_HINT = "the TUI needs the `tui` extra: pip install 'selfdev[tui]'"


@click.command("tui")
@click.argument("run_ref", metavar="[RUN]", required=False)
@click.option("--db", "db", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Event database (default: $SELFDEV_HOME/runs.db).")
def tui_cmd(run_ref: str | None, db: Path | None) -> None:
    """Browse, replay, follow and audit runs in the terminal (read-only).

    With RUN (an id, a unique prefix, or `latest`) the run opens directly; escape goes back
    to the runs list. Press ? inside for every key.
    """
    try:
        import textual  # noqa: F401
        import textual_plotext  # noqa: F401
    except ImportError:
        click.echo(INSTALL_HINT, err=True)
        raise SystemExit(1)
    import sqlite3

    from selfdev.engine.api import SelfdevError
    from selfdev.engine.runs import open_store, resolve_run
    from selfdev.store import StoreError

    try:
        store = open_store(db, readonly=True)
    except (SelfdevError, StoreError) as exc:
        raise click.ClickException(str(exc)) from exc
    except sqlite3.DatabaseError as exc:
        raise click.ClickException(f"{db}: not an event database ({exc})") from exc
    try:
        run_id = resolve_run(store, run_ref) if run_ref else None
    except SelfdevError as exc:
        store.close()
        raise click.ClickException(str(exc)) from exc
    from selfdev.tui.app import SelfdevApp

    app = SelfdevApp(store, run_id)
    try:
        app.run()
    finally:
        store.close()


@hookimpl
def register_commands(cli):
    cli.add_command(tui_cmd)
