"""The ``selfdev`` command line.

Every read command takes ``--json``; every command takes ``--db PATH`` (default
``$SELFDEV_HOME/runs.db``). Errors the user can fix print one line and exit 2.
"""
from __future__ import annotations

import json
import os
import signal
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import click

from selfdev.engine.api import SelfdevError
from selfdev.engine.runs import (load_state, open_store, resolve_run, run_summaries,
                                 writer_status, writer_statuses)


db_option = click.option("--db", "db", type=click.Path(dir_okay=False, path_type=Path),
                         default=None, help="Event database (default: $SELFDEV_HOME/runs.db).")
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def executor_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--executor NAME``, ``--ray-local`` and ``--ray-address ADDR`` (``demo`` and ``run``)."""
    command = click.option("--ray-address", default=None, metavar="auto|ray://HOST:PORT",
                           help="Join a running Ray cluster (implies --executor ray).")(command)
    command = click.option("--ray-local", is_flag=True,
                           help="Start a Ray cluster on this machine (implies --executor ray).")(command)
    return click.option("--executor", default=None, metavar="NAME",
                        help="Where candidate work runs: local (default) or ray, or a "
                             "plugin's executor.")(command)


def with_executor(data: dict[str, Any], executor: str | None, ray_local: bool,
                  ray_address: str | None) -> dict[str, Any]:
    """The config ``data`` with its ``[executor]`` table replaced as the options ask."""
    if ray_local and ray_address:
        raise SelfdevError("--ray-local starts a cluster and --ray-address joins one: give one")
    if (ray_local or ray_address) and executor not in (None, "ray"):
        raise SelfdevError(f"--ray-local/--ray-address need the ray executor, not {executor!r}")
    section = dict(data.get("executor") or {})
    name = "ray" if (ray_local or ray_address) else executor or section.get("name", "local")
    if name != section.get("name", "local"):
        section = {k: v for k, v in section.items() if k == "workers"}  # other keys are per kind
    section["name"] = name
    if ray_local or ray_address:
        section["address"] = "local" if ray_local else ray_address
    return {**data, "executor": section}


@contextmanager
def console_listener(quiet: bool) -> Iterator[Any]:
    """Rich progress bars + per-iteration lines while a run goes (stderr)."""
    from selfdev.engine.api import NullProgress
    from selfdev.engine.plugins import load_plugins, pm

    load_plugins()
    display = None if quiet else pm.hook.console_display()
    if display is None:
        yield NullProgress()
        return
    pm.register(display, name="console")
    try:
        with display:
            yield display
    finally:
        pm.unregister(name="console")


class SelfdevGroup(click.Group):
    """Turns user-fixable errors into one line instead of a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        from selfdev.engine.plugins import debug_enabled
        from selfdev.store import StoreError

        try:
            return super().invoke(ctx)
        except (SelfdevError, StoreError) as exc:
            if debug_enabled():  # the one line hides where it came from; --debug shows it
                import traceback

                traceback.print_exception(exc, file=sys.stderr)
            click.echo(f"error: {exc}", err=True)
            ctx.exit(2)
        except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (see main)
            click.echo(interrupted_line(exc), err=True)
            ctx.exit(128 + signal.SIGTERM if isinstance(exc, Terminated) else 130)
        except click.UsageError as exc:
            # click would print usage, a hint and the error on three lines; selfdev's rule for
            # anything the user can fix is one line that names what is wrong (a group given
            # no subcommand still shows its help, as click does)
            if isinstance(exc, getattr(click.exceptions, "NoArgsIsHelpError", ())):
                raise
            where = exc.ctx.command_path if exc.ctx is not None else ctx.command_path
            click.echo(f"error: {exc.format_message()} (see `{where} --help`)", err=True)
            ctx.exit(exc.exit_code)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the main thread is, so a terminated run stops exactly as one
    interrupted with Ctrl-C: the event being appended is committed whole or not at all,
    components are closed (sandbox children killed), and the user is told how to resume."""


#: the run this process is driving, for the line printed when it is interrupted
_active_run: str | None = None


def interrupted_line(exc: BaseException) -> str:
    what = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
    if _active_run is None:
        return what
    return (f"{what}: run {_active_run} stopped; every event it recorded is kept, and "
            f"`selfdev resume {_active_run}` continues where its log stops")


def _on_sigterm(signum: int, frame: Any) -> None:
    # once: a second SIGTERM during the clean-up ends the process at once (whatever was
    # committed stays committed; an append in flight is rolled back by SQLite)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    raise Terminated()


def _debug_option(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    """``--debug`` sets ``SELFDEV_DEBUG=1`` for the command, so engine code and plugins see one
    switch; plugins loaded before the option was parsed get their tracebacks printed now."""
    if value:
        from selfdev.engine.plugins import print_load_tracebacks

        os.environ["SELFDEV_DEBUG"] = "1"
        print_load_tracebacks()


@click.group(cls=SelfdevGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="selfdev", prog_name="selfdev")
@click.option("--debug", is_flag=True, envvar="SELFDEV_DEBUG", expose_value=False, is_eager=True,
              callback=_debug_option,
              help="Print the traceback of errors (plugin code included); or SELFDEV_DEBUG=1.")
def cli() -> None:
    """selfdev: LLM-driven discovery of model-merging algorithms, with every step in an
    append-only, hash-chained event log.

    \b
    Quick start:
      selfdev demo                 # the whole loop on tiny models, on this CPU
      selfdev show latest          # its tables again
      selfdev tui                  # replay and audit it in the terminal
    """
    if _load_refusal is not None:  # SELFDEV_LOAD_PLUGINS names a plugin that is not installed
        raise _load_refusal


def drive(store: Any, cfg: Any, quiet: bool, as_json: bool) -> None:
    """Start a run from ``cfg`` and drive it to the end."""
    from selfdev.engine.loop import start_run

    def start() -> str:
        global _active_run
        run_id = _active_run = start_run(store, cfg)
        if as_json and not quiet:  # no display to announce it: say how to resume
            click.echo(f"run {run_id} (resume with `selfdev resume {run_id}`)", err=True)
        return run_id

    finish(store, start, quiet, as_json)


def finish(store: Any, run: str | Callable[[], str], quiet: bool, as_json: bool) -> None:
    """Drive ``run`` (a run id, or a function that starts one) to its end and print the tables.

    The display is attached before a new run starts, so it sees ``run.started`` too."""
    from selfdev.engine.loop import Runner
    from selfdev.engine.report import render, summary

    global _active_run
    with console_listener(quiet or as_json) as progress:
        run_id = _active_run = run() if callable(run) else run
        state = Runner(store, run_id, progress=progress).run()
    data = summary(state, head=store.head(run_id)[1])
    if as_json:
        echo_json(data)
    else:
        from rich.console import Console

        render(data, Console())


@cli.command()
@click.option("--domain", default="digits", show_default=True, help="Merge domain.")
@click.option("--generator", default="tiny", show_default=True,
              help="Algorithm factory (grammar = the random-search control).")
@click.option("--optimizer", default="dpo", show_default=True, help="Factory refiner (none = control).")
@click.option("--iterations", default=3, show_default=True, type=click.IntRange(1))
@click.option("--candidates", default=60, show_default=True, type=click.IntRange(1),
              help="Completions sampled per iteration.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1),
              help="Candidates in flight at once.")
@executor_options
@click.option("--quiet", is_flag=True, help="No progress output.")
@json_option
@db_option
def demo(domain: str, generator: str, optimizer: str, iterations: int, candidates: int,
         seed: int, workers: int, executor: str | None, ray_local: bool, ray_address: str | None,
         quiet: bool, as_json: bool, db: Path | None) -> None:
    """Run the whole loop on the embedded tiny models (no configuration needed): the tiny
    factory writes candidates, the sandbox runs them, DPO refines the factory."""
    from selfdev.engine.config import from_dict

    data = {"run": {"seed": seed, "iterations": iterations, "candidates": candidates},
            "domain": {"name": domain}, "generator": {"name": generator},
            "optimizer": {"name": optimizer}, "executor": {"name": "local", "workers": workers}}
    cfg = from_dict(with_executor(data, executor, ray_local, ray_address))
    with open_store(db, readonly=False) as store:
        drive(store, cfg, quiet, as_json)


@cli.command()
@click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
@executor_options
@click.option("--quiet", is_flag=True, help="No progress output.")
@json_option
@db_option
def run(config: Path, executor: str | None, ray_local: bool, ray_address: str | None, quiet: bool,
        as_json: bool, db: Path | None) -> None:
    """Start a run from a TOML configuration (the executor options override its [executor])."""
    from selfdev.engine.config import from_dict, load

    cfg = load(config)
    if executor or ray_local or ray_address:
        cfg = from_dict(with_executor(cfg.to_dict(), executor, ray_local, ray_address))
    with open_store(db, readonly=False) as store:
        drive(store, cfg, quiet, as_json)


@cli.command()
@click.argument("run_ref", metavar="RUN")
@click.option("--quiet", is_flag=True, help="No progress output.")
@json_option
@db_option
def resume(run_ref: str, quiet: bool, as_json: bool, db: Path | None) -> None:
    """Continue a run from its log (after a crash, kill or failure)."""
    with open_store(db, readonly=False, create=False) as store:
        finish(store, resolve_run(store, run_ref), quiet, as_json)


RUN_STATUSES = ("running", "interrupted", "finished", "failed")


@cli.command()
@click.option("--status", "statuses", multiple=True, type=click.Choice(RUN_STATUSES),
              help="Only runs with this status (repeatable).")
@click.option("--domain", "domains", multiple=True, metavar="NAME",
              help="Only runs of this domain (repeatable).")
@click.option("--name", "name", default=None, metavar="TEXT",
              help="Only runs whose [run] name contains TEXT (any case).")
@click.option("--tag", "tags", multiple=True, metavar="TAG",
              help="Only runs tagged TAG in [run] tags (repeatable: all of them).")
@click.option("--sort", "sort", default=None, metavar="[-]COLUMN",
              help="Order by a column of `--json` (e.g. best_dev, seed, started_at); "
                   "a leading '-' sorts descending. Default: the order the runs began.")
@click.option("-n", "--limit", default=None, type=click.IntRange(1),
              help="At most N runs: the first N in --sort's order, else the N latest.")
@json_option
@db_option
def runs(statuses: tuple[str, ...], domains: tuple[str, ...], name: str | None,
         tags: tuple[str, ...], sort: str | None, limit: int | None, as_json: bool,
         db: Path | None) -> None:
    """List the runs in the database (filter, sort and cut the list with the options)."""
    with open_store(db, readonly=True) as store:
        rows = writer_statuses(store, run_summaries(store))
    rows = filter_runs(rows, statuses, domains, name, tags, sort, limit)
    if as_json:
        echo_json(rows)
        return
    from rich.console import Console

    from selfdev.engine.report import runs_table

    console = Console()
    # piped: no width to fit, so nothing is left out (rich would otherwise assume 80 columns)
    table, dropped = runs_table(rows, console.width if console.is_terminal else None)
    if not console.is_terminal:
        console = Console(width=10_000)
    console.print(table)
    if dropped:
        console.print(f"(not shown at {console.width} columns: {', '.join(dropped)}; "
                      "`--json` has all)", highlight=False)
    for r in rows:  # [run] name and tags, under the table that has no room for free text
        if r.get("name") or r.get("tags"):
            tagged = f"  [{', '.join(r['tags'])}]" if r.get("tags") else ""
            console.print(f"{r['run_id']}  {r.get('name') or ''}{tagged}", highlight=False,
                          markup=False)


def filter_runs(rows: list[dict[str, Any]], statuses: tuple[str, ...] = (),
                domains: tuple[str, ...] = (), name: str | None = None,
                tags: tuple[str, ...] = (), sort: str | None = None,
                limit: int | None = None) -> list[dict[str, Any]]:
    """``selfdev runs``' filters: status, domain, name (substring), tags (all), then the sort
    (missing values last, whatever the direction) and ``limit`` rows: the first of the
    sorted order, or the latest begun when unsorted (as ``git log -n``)."""
    if statuses:
        rows = [r for r in rows if r.get("status") in statuses]
    if domains:
        rows = [r for r in rows if r.get("domain") in domains]
    if name is not None:
        rows = [r for r in rows if name.casefold() in (r.get("name") or "").casefold()]
    if tags:
        rows = [r for r in rows if set(tags) <= set(r.get("tags") or ())]
    if sort:
        column, reverse = sort.removeprefix("-"), sort.startswith("-")
        allowed = sorted({k for r in rows for k, v in r.items()
                          if not isinstance(v, (dict, list))}
                         | {"run_id", "status", "domain", "best_dev", "best_test", "seed"})
        if column not in allowed:
            raise SelfdevError(f"--sort {sort!r}: no such column; sort by one of "
                               f"{', '.join(allowed)} (a leading '-' sorts descending)")
        present = [r for r in rows if r.get(column) is not None]
        missing = [r for r in rows if r.get(column) is None]
        rows = sorted(present, key=lambda r: (str(type(r[column])), r[column]),
                      reverse=reverse) + missing
    if limit is not None:  # sorted: the first N (the best with -best_dev); else the latest N
        rows = rows[:limit] if sort else rows[-limit:]
    return rows


@cli.command()
@click.argument("run_ref", metavar="RUN")
@json_option
@db_option
def show(run_ref: str, as_json: bool, db: Path | None) -> None:
    """Configuration, per-iteration stats, leaderboard and baselines of a run."""
    from selfdev.engine.report import render, summary

    with open_store(db, readonly=True) as store:
        run_id = resolve_run(store, run_ref)
        data = summary(load_state(store, run_id), head=store.head(run_id)[1])
        data["status"] = writer_status(store, run_id, data["status"])
    run_section = (data.get("config") or {}).get("run") or {}
    data["name"] = run_section.get("name") or None
    data["tags"] = list(run_section.get("tags") or [])
    if as_json:
        echo_json(data)
    else:
        from rich.console import Console

        console = Console()
        if data["name"] or data["tags"]:
            tagged = f"  tags: {', '.join(data['tags'])}" if data["tags"] else ""
            console.print(f"name: {data['name'] or '-'}{tagged}", highlight=False, markup=False)
        render(data, console)


@cli.command()
@click.argument("run_ref", metavar="RUN")
@click.option("--type", "types", multiple=True, help="Event type, or a prefix ending in '.'.")
@click.option("--after", default=0, type=click.IntRange(0), help="Only events after this position.")
@click.option("--limit", default=None, type=click.IntRange(1), help="At most this many events.")
@json_option
@db_option
def events(run_ref: str, types: tuple[str, ...], after: int, limit: int | None, as_json: bool,
           db: Path | None) -> None:
    """The events of a run, in log order."""
    with open_store(db, readonly=True) as store:
        run_id = resolve_run(store, run_ref)
        check_types(store, run_id, types)
        found = store.read(run_id=run_id, after=after, types=list(types) or None, limit=limit)
    if as_json:
        echo_json([{"position": e.position, "event_id": e.event_id, "run_id": e.run_id,
                    "stream_version": e.stream_version, "type": e.type,
                    "type_version": e.type_version, "occurred_at": e.occurred_at,
                    "source": e.source, "payload": e.payload, "hash": e.hash} for e in found])
        return
    for e in found:
        text = json.dumps(e.payload, sort_keys=True)
        click.echo(f"{e.position:>8}  {e.type:<22} {e.source:<32} {text[:100]}")


def check_types(store: Any, run_id: str, types: tuple[str, ...]) -> None:
    """Refuse a ``--type`` that names no event type selfdev knows and none in the run: an
    empty answer would read as "no such events yet" when the name is simply wrong."""
    from selfdev.engine.events import EVENT_TYPES

    if not types:
        return
    known = sorted(set(EVENT_TYPES) | set(store.types(run_id=run_id)))
    for t in types:
        if not any(k == t or (t.endswith(".") and k.startswith(t)) for k in known):
            raise SelfdevError(f"--type {t!r} matches no event type; the types are "
                               f"{', '.join(known)} (or a prefix ending in '.', e.g. 'candidate.')")


@cli.command()
@click.argument("run_ref", metavar="[RUN]", required=False)
@click.option("--head", "head", metavar="HASH", default=None,
              help="The run's head hash recorded earlier (`selfdev show`, export's report.json): "
                   "fail unless the run's log still reaches it.")
@json_option
@db_option
def verify(run_ref: str | None, head: str | None, as_json: bool, db: Path | None) -> None:
    """Re-derive every hash; exit 0 when intact, else name the first broken position.

    A hash chain cannot tell a run whose last events were deleted from a shorter run; with
    `--head HASH` (the head printed by `selfdev show` when the run finished) it can."""
    if head is not None and not run_ref:
        raise SelfdevError("--head needs the RUN it belongs to: selfdev verify RUN --head HASH")
    with open_store(db, readonly=True) as store:
        run_id = resolve_run(store, run_ref) if run_ref else None
        result = store.verify(run_id, head=head)
    if as_json:
        echo_json({"ok": result.ok, "checked": result.checked, "first_broken": result.first_broken,
                   "reason": result.reason, "heads": result.heads, "head": head,
                   "head_reached_at": result.reached})
    elif result.ok:
        click.echo(f"intact: {result.checked} events verified")
        for rid, last in sorted(result.heads.items()):
            click.echo(f"  {rid}  head {last}")
        if head is not None:
            click.echo(f"  {run_id} reaches head {head} (event {result.reached})")
    elif result.first_broken is None:
        click.echo(f"BROKEN: {result.reason}")
    else:
        click.echo(f"BROKEN at position {result.first_broken}: {result.reason}")
    if not result.ok:
        sys.exit(1)


EXPORT_FORMATS = ("py", "csv", "jsonl", "parquet")


@cli.command()
@click.argument("run_ref", metavar="RUN")
@click.option("--format", "fmt", type=click.Choice(EXPORT_FORMATS), default="py",
              show_default=True,
              help="py: the top algorithms as .py files plus report.json (--out is a folder); "
                   "csv, jsonl, parquet: one table of --what (--out is a file).")
@click.option("--what", type=click.Choice(("candidates", "events")), default=None,
              help="The table csv/jsonl/parquet write: every candidate (ids, iteration, "
                   "temperature, status and reason, code hash, dev, test, timings; the "
                   "default) or every event.")
@click.option("--out", default=None, type=click.Path(path_type=Path),
              help="Where to write (py: a folder, required; csv/jsonl: a file, default "
                   "stdout; parquet: a file, required).")
@click.option("--top", default=15, show_default=True, type=click.IntRange(1),
              help="How many algorithms --format py writes.")
@json_option
@db_option
def export(run_ref: str, fmt: str, what: str | None, out: Path | None, top: int,
           as_json: bool, db: Path | None) -> None:
    """Write a run out: its top algorithms (.py + report.json), or every candidate or event as
    CSV, JSON lines or Parquet (for pandas, DuckDB, a spreadsheet, datasette)."""
    if fmt == "py" and what is not None:
        raise SelfdevError("--what picks the table of --format csv, jsonl or parquet; "
                           "--format py writes the top algorithms")
    if out is None and fmt in ("py", "parquet"):
        raise SelfdevError(f"--format {fmt} needs --out "
                           f"{'FOLDER' if fmt == 'py' else 'FILE.parquet'}")
    if out is not None and fmt != "py" and out.is_dir():
        raise SelfdevError(f"--out {out} is a folder; --format {fmt} writes one file: "
                           f"give its path, e.g. {out / ('table.' + fmt)}")
    if fmt == "parquet":
        _require_pyarrow()
    with open_store(db, readonly=True) as store:
        run_id = resolve_run(store, run_ref)
        if fmt == "py":
            assert out is not None
            written = _export_algorithms(store, run_id, out, top)
            if as_json:
                echo_json({"run_id": run_id, "format": fmt, "out": str(out),
                           "files": [*written, "report.json"]})
            else:
                click.echo(f"wrote {len(written)} algorithms and report.json to {out}")
            return
        from selfdev.engine.runs import (CANDIDATE_COLUMNS, EVENT_COLUMNS, candidate_rows,
                                         event_rows)

        what = what or "candidates"
        if what == "candidates":
            rows, columns = candidate_rows(store, run_id), CANDIDATE_COLUMNS
        else:
            rows, columns = event_rows(store, run_id), EVENT_COLUMNS
    write_table(rows, columns, fmt, out)
    if out is None:
        return  # the table went to stdout; a summary line would corrupt it
    if as_json:
        echo_json({"run_id": run_id, "format": fmt, "what": what, "out": str(out),
                   "rows": len(rows), "columns": list(columns)})
    else:
        click.echo(f"wrote {len(rows)} {what} of {run_id} to {out}")


def _export_algorithms(store: Any, run_id: str, out: Path, top: int) -> list[str]:
    """``--format py``: the ``top`` algorithms by dev score as .py files, and report.json."""
    from selfdev.engine.report import summary

    state = load_state(store, run_id)
    if out.exists() and not out.is_dir():
        raise SelfdevError(f"--out {out} is a file; --format py writes a folder of .py files")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for rank, c in enumerate(state.ranked()[:top], 1):
        path = out / f"{rank:02d}_{c.candidate_id}.py"
        header = (f"# selfdev run {run_id}, candidate {c.candidate_id} (iteration {c.iteration})\n"
                  f"# dev {c.dev}  test {c.test}  ast {c.ast_hash}\n")
        path.write_text(header + store.get_text(c.code))
        written.append(path.name)
    report = summary(state, head=store.head(run_id)[1])
    report["files"] = written
    (out / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True, default=str))
    return written


def _require_pyarrow() -> None:
    import importlib.util

    if importlib.util.find_spec("pyarrow") is None:
        raise SelfdevError("--format parquet needs pyarrow: pip install pyarrow "
                           "(or use --format csv or jsonl)")


def write_table(rows: list[dict[str, Any]], columns: tuple[str, ...], fmt: str,
                out: Path | None) -> None:
    """``rows`` as CSV, JSON lines or Parquet at ``out`` (csv/jsonl: stdout when None).

    Nested values (an event's payload) stay objects in JSON lines and become canonical JSON
    text in CSV and Parquet, whose cells are flat; a CSV's empty cell is a missing value."""
    def flat(value: Any) -> Any:
        return json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else value

    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pylist([{k: flat(r.get(k)) for k in columns} for r in rows],
                                     schema=None) if rows else pa.table({k: [] for k in columns})
        pq.write_table(table, out)
        return
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
    stream = open(out, "w", newline="", encoding="utf-8") if out is not None else sys.stdout
    try:
        if fmt == "csv":
            import csv

            writer = csv.DictWriter(stream, fieldnames=list(columns), extrasaction="ignore")
            writer.writeheader()
            for r in rows:
                writer.writerow({k: flat(r.get(k)) for k in columns})
        else:
            for r in rows:
                stream.write(json.dumps({k: r.get(k) for k in columns}, sort_keys=True,
                                        default=str) + "\n")
    finally:
        if out is not None:
            stream.close()


@cli.group(invoke_without_command=True)
@click.option("--options", "with_options", is_flag=True,
              help="List every component with its description and options instead.")
@json_option
@click.pass_context
def plugins(ctx: click.Context, with_options: bool, as_json: bool) -> None:
    """Installed plugins, their hooks and the components they register.

    Subcommands: `selfdev plugins new KIND NAME` scaffolds a plugin package."""
    if ctx.invoked_subcommand is not None:
        return
    from selfdev.engine.plugins import components_info, plugins_info

    if with_options:
        comps = components_info()
        if as_json:
            echo_json(comps)
        else:
            for line in options_lines(comps):
                click.echo(line)
        return
    info = plugins_info()
    if as_json:
        echo_json(info)
        return
    for p in info:
        comps = "; ".join(f"{k}: {', '.join(v)}" for k, v in p["components"].items())
        click.echo(f"{p['name']:<36} {comps or ', '.join(p['hooks'])}")


def _toml_value(value: Any) -> str:
    """A default as it would be written in the TOML config."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def options_lines(comps: list[dict[str, Any]]) -> list[str]:
    """``selfdev plugins --options`` as text: one block per component; per option a line with
    its name and default (as TOML) and what it accepts, then its description, indented."""
    import textwrap

    lines: list[str] = []
    for comp in comps:
        if lines:
            lines.append("")
        lines.append(f"[{comp['kind']}] name = {comp['name']!r}    ({comp['plugin']})")
        if comp["doc"]:
            lines.extend(textwrap.wrap(comp["doc"], width=96, initial_indent="  ",
                                       subsequent_indent="  "))
        if not comp["options"]:
            lines.append("  (no options)")
            continue
        heads = []
        for o in comp["options"]:
            if o["required"]:
                heads.append(f"{o['name']} (required)")
            elif o["default"] is None:
                heads.append(f"{o['name']} (unset)")
            else:
                heads.append(f"{o['name']} = {_toml_value(o['default'])}")
        width = min(max(len(h) for h in heads), 36)
        for head, o in zip(heads, comp["options"]):
            lines.append(f"  {head:<{width}}  {o['must_be'] or o['type']}".rstrip())
            if o["description"]:
                lines.extend(textwrap.wrap(o["description"], width=96, initial_indent="      ",
                                           subsequent_indent="      "))
    return lines


def _attach_plugin_commands() -> None:
    from selfdev.engine.plugins import call_commands
    from selfdev.sandbox.cli import sandbox_cli

    cli.add_command(sandbox_cli)

    global _load_refusal
    try:
        call_commands(cli)
    except SelfdevError as exc:  # refused when a command runs, so --help still works
        _load_refusal = exc


_load_refusal: SelfdevError | None = None
_attach_plugin_commands()


def main() -> None:
    # OpenMP's default spin-waiting makes torch several times slower on a busy 2-core machine.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # `kill`, systemd, a batch scheduler: stop as Ctrl-C does, saying which run to resume
    signal.signal(signal.SIGTERM, _on_sigterm)
    cli(prog_name="selfdev")


if __name__ == "__main__":
    main()
