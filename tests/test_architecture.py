"""The dependency rules of DESIGN.md, read from the code (every import, function-local ones too).

* ``store`` and ``sandbox`` import nothing else of selfdev;
* ``engine`` imports ``store`` and ``sandbox``, and reaches plugins and the TUI only by name,
  through ``DEFAULT_PLUGINS``;
* built-in ``plugins`` import the public door (``selfdev``) and each other, nothing deeper;
* ``tui`` imports ``store``, the door and the engine's read side;
* no import cycle between packages (folders);
* ``docs/architecture.md`` draws exactly the folder-to-folder edges the code has.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("engine", "plugins", "sandbox", "store", "tui")
DOOR = "selfdev"

#: what each folder may import (folder names, "door" for ``selfdev`` itself)
ALLOWED = {
    "store": {"store"},
    "sandbox": {"sandbox"},
    "engine": {"engine", "store", "sandbox"},
    "plugins": {"plugins", "door"},
    "tui": {"tui", "door", "store", "engine"},
}
#: the engine modules the TUI may use: its read side, never the CLI or the loop
TUI_ENGINE = {"selfdev.engine.api", "selfdev.engine.runs", "selfdev.engine.state",
              "selfdev.engine.report", "selfdev.engine.events", "selfdev.engine.hookspecs"}


def _modules() -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is package __init__)."""
    out = {DOOR: (ROOT / "selfdev" / "__init__.py", True)}
    for folder in FOLDERS:
        for path in (ROOT / folder).rglob("*.py"):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [DOOR, folder, *rel.parts]
            is_pkg = parts[-1] == "__init__"
            if is_pkg:
                parts.pop()
            out[".".join(parts)] = (path, is_pkg)
    return out


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(module: str, path: Path, is_pkg: bool, known: set[str]) -> set[str]:
    """selfdev modules that ``module`` imports, resolved to the longest known module name."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if is_pkg else module.rpartition(".")[0]
    names: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # ``from pkg import sub`` depends on the submodule; ``from pkg import name`` on pkg
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                names.add(sub if sub in known else target)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    resolved = set()
    for name in names:
        if name != DOOR and not name.startswith(DOOR + "."):
            continue
        while name not in known and "." in name:
            name = name.rpartition(".")[0]
        if name in known and name != module:
            resolved.add(name)
    return resolved


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    graph = {m: _imports(m, path, is_pkg, known) for m, (path, is_pkg) in mods.items()}
    graph[DOOR] |= _door_exports() & known
    return graph


def _folder(module: str) -> str:
    return "door" if module == DOOR else module.split(".")[1]


def _door_exports() -> set[str]:
    """The modules the door resolves its names from, lazily (its ``_EXPORTS`` table)."""
    tree = ast.parse((ROOT / "selfdev" / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", "") == "_EXPORTS":
            return {v.value for v in node.value.values}
    raise AssertionError("selfdev/__init__.py has no _EXPORTS table")


def test_every_import_follows_the_dependency_rules():
    bad = []
    for module, targets in _graph().items():
        src = _folder(module)
        if src == "door":
            continue
        for target in targets:
            dst = _folder(target)
            if dst not in ALLOWED[src]:
                bad.append(f"{module} -> {target}")
            elif src == "tui" and dst == "engine" and target not in TUI_ENGINE:
                bad.append(f"{module} -> {target} (the TUI uses the engine's read side only)")
    assert not bad, "\n".join(sorted(bad))


def test_the_door_imports_nothing_when_imported():
    """``import selfdev`` must stay free (the jailed sandbox child imports through it): its
    module-level statements import nothing of selfdev; names resolve on first use."""
    tree = ast.parse((ROOT / "selfdev" / "__init__.py").read_text())
    eager = [ast.unparse(node) for node in tree.body
             if isinstance(node, (ast.Import, ast.ImportFrom))
             and any("selfdev" in (getattr(node, "module", None) or a.name) for a in node.names)]
    assert not eager, eager
    known = set(_modules())
    assert _door_exports() <= known, sorted(_door_exports() - known)


def test_no_import_cycle():
    """Between modules, function-local imports included (they hide cycles, not remove them):
    a cycle inside one folder is as much a tangle as one across folders."""
    graph = _graph()
    cycles = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                dfs(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            dfs(node)
    assert not cycles, "\n".join(cycles)


def folder_edges() -> set[tuple[str, str]]:
    out = set()
    for module, targets in _graph().items():
        for target in targets:
            a, b = _folder(module), _folder(target)
            if a != b:
                out.add((a, b))
    return out


def test_architecture_doc_draws_the_edges_the_code_has():
    text = (ROOT / "docs" / "architecture.md").read_text()
    block = re.search(r"```text\n# imports\n(.*?)```", text, re.S)
    assert block, "docs/architecture.md needs a ```text block starting with '# imports'"
    drawn = set()
    for line in block.group(1).splitlines():
        if "->" not in line:
            continue
        src, dsts = (part.strip() for part in line.split("->", 1))
        drawn.update((src, d.strip()) for d in dsts.split(",") if d.strip())
    assert drawn == folder_edges(), (sorted(drawn - folder_edges()), sorted(folder_edges() - drawn))
