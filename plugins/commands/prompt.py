"""``selfdev prompt DOMAIN``: show the factory prompt a domain builds, and optionally what a
generator's factory is actually conditioned on for it."""
from __future__ import annotations

import json
from typing import Any

from selfdev import hookimpl


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _command() -> Any:
    import click

    @click.command(name="prompt")
    @click.argument("domain")
    @click.option("--option", "-o", "options", multiple=True, metavar="KEY=VALUE",
                  help="A domain option (repeatable); VALUE is parsed as JSON when it can be.")
    @click.option("--generator", default=None,
                  help="Also show what this factory is conditioned on (tiny, hf, ...).")
    @click.option("--generator-option", "-g", "generator_options", multiple=True,
                  metavar="KEY=VALUE", help="An option of --generator (repeatable).")
    @click.option("--json", "as_json", is_flag=True, help="Print JSON.")
    def prompt(domain: str, options: tuple[str, ...], generator: str | None,
               generator_options: tuple[str, ...], as_json: bool) -> None:
        """Show the paper-style factory prompt of DOMAIN (task description, the candidate
        signature, one worked example, constraints)."""
        from selfdev import Context, NullProgress, get_registry, parse_kv, selfdev_home

        registry = get_registry()
        home = selfdev_home()
        ctx = Context(run_id="prompt", seed=0, home=home, artifacts=home / "artifacts" / "prompt",
                      progress=NullProgress())
        dom_opts = {k: _parse_value(v) for k, v in parse_kv(options).items()}
        dom = registry.get("domain", domain)(ctx, **dom_opts)
        try:
            text = dom.prompt()
        finally:
            dom.close()
        out: dict[str, Any] = {"domain": domain, "prompt": text}
        if generator:
            gen_opts = {k: _parse_value(v) for k, v in parse_kv(generator_options).items()}
            gen = registry.get("generator", generator)(ctx, **gen_opts)
            fmt = getattr(gen, "format_prompt", None)
            out["generator"] = generator
            out["factory_context"] = fmt(text) if fmt else text
        if as_json:
            click.echo(json.dumps(out, indent=2, sort_keys=True))
            return
        click.echo(text, nl=not text.endswith("\n"))
        if generator:
            click.echo(f"\n--- what the {generator!r} factory is conditioned on "
                       f"(repr) ---\n{out['factory_context']!r}")

    return prompt


@hookimpl
def register_commands(cli):
    cli.add_command(_command())
