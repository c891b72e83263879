"""The two sides of the sandbox stay apart: the jail imports only the wire format of ours, the
trusted side never imports the jail, wire constants live in the protocol module only, and
``import selfdev.sandbox`` stays light (no torch)."""
import ast
import os
import subprocess
import sys

from sandbox_helpers import ROOT

SANDBOX = os.path.join(ROOT, "sandbox")
JAIL = os.path.join(SANDBOX, "jail")
PROTOCOL = "selfdev.sandbox.protocol"


def modules(folder):
    return sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.endswith(".py"))


def imported(path):
    """Every module an ``import`` in the file names, function-local ones included, as
    (lineno, dotted name); ``from X import y`` yields both X and X.y (y may be a module)."""
    out = []
    for node in ast.walk(ast.parse(open(path).read(), path)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}:{node.lineno}: relative import"
            out.append((node.lineno, node.module))
            out += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
    return out


def test_the_layout_exists():
    assert {os.path.basename(p) for p in modules(JAIL)} == {"__init__.py", "worker.py", "facade.py", "oslayers.py"}
    for name in ("protocol.py", "supervisor.py", "verdict.py", "policy.py", "layers.py", "cli.py"):
        assert os.path.isfile(os.path.join(SANDBOX, name)), name


def test_jail_imports_only_the_protocol_of_selfdev():
    bad = []
    for path in modules(JAIL):
        for line, name in imported(path):
            if name.split(".")[0] != "selfdev":
                continue
            # ``from selfdev.sandbox import protocol`` names the package, then the module
            if name in ("selfdev.sandbox", PROTOCOL) or name.startswith("selfdev.sandbox.jail"):
                continue
            bad.append(f"{os.path.relpath(path, ROOT)}:{line}: {name}")
    assert not bad, "the jail may import only selfdev.sandbox.protocol:\n" + "\n".join(bad)


def test_jail_package_imports_of_the_sandbox_package_are_the_protocol_only():
    """``from selfdev.sandbox import X`` in the jail: X must be ``protocol``."""
    for path in modules(JAIL):
        for node in ast.walk(ast.parse(open(path).read())):
            if isinstance(node, ast.ImportFrom) and node.module == "selfdev.sandbox":
                assert [a.name for a in node.names] == ["protocol"], (path, node.lineno)


def test_oslayers_runs_stand_alone():
    """doctor runs jail/oslayers.py as a script under ``python -I``: stdlib only."""
    names = {n.split(".")[0] for _, n in imported(os.path.join(JAIL, "oslayers.py"))}
    assert names <= set(sys.stdlib_module_names) | {"__future__"}, names


def test_trusted_side_never_imports_the_jail():
    for path in modules(SANDBOX):
        for line, name in imported(path):
            assert not name.startswith("selfdev.sandbox.jail"), f"{path}:{line}: {name}"


def test_wire_constants_are_defined_in_the_protocol_only():
    proto = os.path.join(SANDBOX, "protocol.py")
    consts = {t.id for node in ast.parse(open(proto).read()).body if isinstance(node, ast.Assign)
              for t in ast.walk(node) if isinstance(t, ast.Name) and t.id.isupper()}
    assert {"POOL", "MAX_PACKET", "MAX_REPORT", "DTYPES", "ALL_LAYERS", "OP_RUN"} <= consts
    for path in modules(SANDBOX) + modules(JAIL):
        if path == proto:
            continue
        for node in ast.walk(ast.parse(open(path).read())):
            if isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for t in targets:
                    for n in ast.walk(t):
                        if isinstance(n, ast.Name):
                            assert n.id not in consts, f"{path}:{node.lineno}: {n.id} is the protocol's"


def test_import_sandbox_does_not_import_torch():
    code = ("import sys, selfdev.sandbox as s\n"
            "s.screen('def merge_models(task_vectors, base, name):\\n    return base\\n')\n"
            "s.SandboxResult, s.DEFAULT_REQUIRE, s.ALL_LAYERS\n"
            "import selfdev.sandbox.cli, selfdev.sandbox.layers, selfdev.sandbox.verdict\n"
            "print(sorted(m for m in ('torch', 'selfdev.engine', 'selfdev.sandbox.jail') if m in sys.modules))\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "[]", p.stdout
