"""``selfdev config template``: print a commented run configuration with every key, its
default and what it accepts, for the components named (each left out: the default one).

The text comes from the engine (``selfdev.config_template``), which derives it from the same
declarations the engine validates a run against, so the template cannot drift from them."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from selfdev import SelfdevError, config_template, hookimpl


def _config_command() -> Any:
    import click

    @click.group(name="config")
    def config() -> None:
        """Run configurations: `selfdev config template` writes a commented one."""

    @config.command(name="template")
    @click.option("--domain", default=None, metavar="NAME", help="Domain (default: digits).")
    @click.option("--generator", default=None, metavar="NAME",
                  help="Generator (default: grammar).")
    @click.option("--evaluator", default=None, metavar="NAME",
                  help="Evaluator (default: the domain's own).")
    @click.option("--optimizer", default=None, metavar="NAME", help="Optimizer (default: none).")
    @click.option("--executor", default=None, metavar="NAME", help="Executor (default: local).")
    @click.option("--out", default=None, type=click.Path(dir_okay=False, path_type=Path),
                  help="Write the template to this file (default: stdout).")
    @click.option("--force", is_flag=True, help="Overwrite --out if it exists.")
    @click.option("--json", "as_json", is_flag=True,
                  help="Print the template as data (sections, keys, defaults, allowed values).")
    def template(domain: str | None, generator: str | None, evaluator: str | None,
                 optimizer: str | None, executor: str | None, out: Path | None, force: bool,
                 as_json: bool) -> None:
        """A commented TOML configuration with every key, its default and allowed values.

        It loads as it is (`selfdev run` it) and runs the defaults; keys marked REQUIRED hold
        a placeholder to replace."""
        import json

        names = dict(domain=domain, generator=generator, evaluator=evaluator,
                     optimizer=optimizer, executor=executor)
        if as_json:
            text = json.dumps(config_template(**names, as_data=True), indent=2, sort_keys=True,
                              default=str) + "\n"
        else:
            text = config_template(**names)
        if out is None:
            click.echo(text, nl=False)
            return
        if out.exists() and not force:
            raise SelfdevError(f"--out {out} exists; pass --force to overwrite it")
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise SelfdevError(f"cannot write --out {out}: {exc.strerror}") from None
        click.echo(f"wrote {out} (run it with `selfdev run {out}`)", err=True)

    return config


@hookimpl
def register_commands(cli):
    cli.add_command(_config_command())
