"""``selfdev compare RUN RUN ... [--group-by seed|KEY] [--json]``: runs side by side.

The tables and the JSON come from ``selfdev.compare_runs`` (``engine/compare.py``), the same
read model as ``selfdev show``; this module only turns the command line into run ids.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from selfdev import hookimpl


def _command() -> Any:
    import click

    @click.command(name="compare")
    @click.argument("run_refs", metavar="RUN...", nargs=-1)
    @click.option("--tag", "tags", multiple=True, metavar="TAG",
                  help="Also compare every run tagged TAG in [run] tags (repeatable: runs "
                       "with all of them).")
    @click.option("--sweep", "sweep", default=None, metavar="NAME",
                  help="Also compare the runs of `selfdev sweep --name NAME` (tag sweep:NAME).")
    @click.option("--group-by", "group_by", multiple=True, metavar="seed|SECTION.KEY",
                  help="Group runs by seed or by a configuration key (e.g. temperature.beta; "
                       "repeatable: by their combination) and report mean ± sd and a 95 % "
                       "t-interval per group.")
    @click.option("--json", "as_json", is_flag=True, help="Print JSON.")
    @click.option("--db", "db", type=click.Path(dir_okay=False, path_type=Path), default=None,
                  help="Event database (default: $SELFDEV_HOME/runs.db).")
    def compare(run_refs: tuple[str, ...], tags: tuple[str, ...], sweep: str | None,
                group_by: tuple[str, ...], as_json: bool, db: Path | None) -> None:
        """Compare runs: the configuration keys that differ, iterations side by side
        (executable rate of new programs, repeats, unique programs, mean and best dev),
        baselines and the best discovered's test score; with --group-by, mean ± sd and a
        95 % interval per group.

        RUN is a run id, a unique prefix of one, or `latest`."""
        from selfdev import (SelfdevError, compare_runs, open_store, render_comparison,
                             resolve_run, tagged_runs)

        with open_store(db, readonly=True) as store:
            ids = [resolve_run(store, ref) for ref in run_refs]
            selectors = [list(tags)] if tags else []
            if sweep is not None:
                selectors.append([f"sweep:{sweep}"])
            for wanted in selectors:
                found = tagged_runs(store, wanted)
                if not found:
                    what = (f"sweep {sweep!r} (tag sweep:{sweep})" if wanted == [f"sweep:{sweep}"]
                            else "tag " + " and ".join(map(repr, wanted)))
                    raise SelfdevError(f"no run has {what}; `selfdev runs --tag TAG` lists "
                                       "tagged runs")
                ids += found
            ids = list(dict.fromkeys(ids))
            if len(ids) < 2:
                raise SelfdevError("compare needs two runs or more: give run ids (or unique "
                                   "prefixes), --tag TAG or --sweep NAME")
            data = compare_runs(store, ids, list(group_by) or None)
        if as_json:
            click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))
            return
        from rich.console import Console

        render_comparison(data, Console())

    return compare


@hookimpl
def register_commands(cli: Any) -> None:
    cli.add_command(_command())
