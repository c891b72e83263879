"""What a completion holds: its ``merge_models`` program, the program's screen and its keys.

Parsing a completion is the sandbox's job (``selfdev.extract_candidate``: fenced or bare code,
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
import warnings

import selfdev

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
