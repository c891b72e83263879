"""``selfdev sweep CONFIG.toml --seeds 0-4 --set temperature.beta=0,0.1,0.2,0.4``: a grid
of runs into one database, resumable as a whole, then the ``compare`` table of the grid.

The planning, the single-writer design and the resuming are ``selfdev.plan_sweep`` and
``selfdev.run_sweep`` (``engine/sweep.py``); this module is the command line.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from selfdev import hookimpl


def _command() -> Any:
    import click

    @click.command(name="sweep")
    @click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
    @click.option("--seeds", default=None, metavar="0-4|0,1,5",
                  help="The seeds of every grid point (default: the configuration's seed).")
    @click.option("--set", "sets", multiple=True, metavar="SECTION.KEY=V1,V2,...",
                  help="A configuration key and the values to sweep (repeatable: the grid is "
                       "their product with the seeds), e.g. temperature.beta=0,0.1,0.2,0.4.")
    @click.option("--workers", default=1, show_default=True, type=click.IntRange(1),
                  help="Runs computed at once, each in its own worker process (this process "
                       "records them all: the database keeps one writer).")
    @click.option("--name", "name", default=None, metavar="NAME",
                  help="The sweep's name (default: the config file's name); its runs are "
                       "tagged sweep:NAME and named 'NAME: seed=.. KEY=..'.")
    @click.option("--quiet", is_flag=True, help="No progress lines.")
    @click.option("--json", "as_json", is_flag=True, help="Print JSON.")
    @click.option("--db", "db", type=click.Path(dir_okay=False, path_type=Path), default=None,
                  help="Event database (default: $SELFDEV_HOME/runs.db).")
    def sweep(config: Path, seeds: str | None, sets: tuple[str, ...], workers: int,
              name: str | None, quiet: bool, as_json: bool, db: Path | None) -> None:
        """Run the grid of CONFIG over --seeds and every --set value into one database, then
        print the compare table grouped by the swept keys (mean ± sd, 95 % interval).

        Running the same command again skips the finished runs, resumes the interrupted or
        failed ones and starts the rest. Find the runs later with
        `selfdev compare --sweep NAME --group-by KEY` or `selfdev runs --tag sweep:NAME`."""
        from selfdev import SelfdevError, plan_sweep, render_comparison, run_sweep

        planned = plan_sweep(config, seeds, sets, name)
        echo = None if quiet else (lambda line: click.echo(line, err=True))
        try:
            result = run_sweep(planned, db, workers=workers, echo=echo)
        except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (selfdev raises Terminated)
            term = type(exc).__name__ == "Terminated"
            click.echo(f"{'terminated (SIGTERM)' if term else 'interrupted'}: sweep "
                       f"{planned.name} stopped; every event it recorded is kept, and the same "
                       "command continues where it stopped", err=True)
            raise SystemExit(143 if term else 130) from None
        if as_json:
            click.echo(json.dumps(result, indent=2, sort_keys=True, default=str))
        elif result["comparison"] is not None:
            from rich.console import Console

            render_comparison(result["comparison"], Console())
        unfinished = [p for p in result["points"] if p["status"] != "finished"]
        if unfinished:
            first = unfinished[0]
            raise SelfdevError(
                f"{len(unfinished)} of {len(result['points'])} runs of sweep {planned.name} did "
                f"not finish (first: {first['run_id']}, {first['status']}: {first['reason']}); "
                "`selfdev show RUN` tells why; the same command resumes them")

    return sweep


@hookimpl
def register_commands(cli: Any) -> None:
    cli.add_command(_command())
