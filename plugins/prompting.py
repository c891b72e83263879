"""Prompts and completions: the ``selfdev prompt DOMAIN`` command and completion helpers.

Parsing a completion is the sandbox's job (``sandbox.extract_candidate``: fenced or bare code,
the first block that defines a parseable ``merge_models``, everything else ignored); this module
wraps it with the helpers the factories and their measurements need:

* ``candidate_code(text)``: the ``merge_models`` program in a completion, or None;
* ``screen_code(code)``: ``(ok, reason)`` from the sandbox's static screen (never executes);
* ``program_keys(code)``: two normalised-AST keys used to measure novelty against a corpus:
  ``exact`` ignores formatting, comments and docstrings; ``structure`` also renames local
  variables and abstracts numeric constants, so a program that only renames variables or
  changes a coefficient is not counted as structurally new.
"""
from __future__ import annotations

import ast
import hashlib
import json
import warnings
from typing import Any

import selfdev
from selfdev import hookimpl

KNOWN_GLOBALS = {"torch", "math", "task_vectors", "base", "name", "merge_models"}


def candidate_code(text: str) -> str | None:
    """The first valid ``merge_models`` program in a completion (fenced or bare), or None."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntaxWarning)  # "invalid decimal literal" and friends
        return selfdev.extract_candidate(text)


def screen_code(code: str) -> tuple[bool, str | None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntaxWarning)
        verdict = selfdev.screen(code)
    return bool(verdict.ok), verdict.reason


class _Normalise(ast.NodeTransformer):
    """Rename locals/arguments to v0, v1, ... in order of appearance; constants to 0."""

    def __init__(self, abstract: bool) -> None:
        self.abstract = abstract
        self.names: dict[str, str] = {}

    def _rename(self, name: str) -> str:
        if not self.abstract or name in KNOWN_GLOBALS or name in dir(__builtins__):
            return name
        return self.names.setdefault(name, f"v{len(self.names)}")

    def visit_Name(self, node: ast.Name) -> ast.AST:
        node.id = self._rename(node.id)
        return node

    def visit_arg(self, node: ast.arg) -> ast.AST:
        node.arg = self._rename(node.arg)
        node.annotation = None
        return node

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        if node.name != "merge_models":
            node.name = self._rename(node.name)
        node.returns = None
        body = node.body
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                and isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]
        self.generic_visit(node)
        return node

    def visit_Constant(self, node: ast.Constant) -> ast.AST:
        if self.abstract and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            return ast.copy_location(ast.Constant(value=0), node)
        return node


def program_keys(code: str) -> tuple[str, str] | None:
    """``(exact, structure)`` normalised-AST hashes of a program, or None if it does not parse."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SyntaxWarning)
            trees = [ast.parse(code), ast.parse(code)]
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    out = []
    for abstract, tree in zip((False, True), trees):
        t = _Normalise(abstract).visit(tree)
        dumped = ast.dump(t, annotate_fields=False, include_attributes=False)
        out.append(hashlib.blake2b(dumped.encode(), digest_size=12).hexdigest())
    return out[0], out[1]


# --------------------------------------------------------------------------------------------
# selfdev prompt DOMAIN


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
        from selfdev import Context, NullProgress, parse_kv, selfdev_home
        from selfdev import get_registry

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
