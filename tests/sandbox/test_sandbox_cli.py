"""`selfdev sandbox run|doctor`: through click's CliRunner and as a real process."""
import json
import os
import secrets
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file, save_file

from sandbox_helpers import ROOT, make_inputs

GOOD = "import torch\n\ndef merge_models(task_vectors, base, name):\n    return sum(task_vectors.values()) / len(task_vectors)\n"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    base, tvs = make_inputs(shapes={"a.weight": (16, 8), "a.bias": (16,)}, experts=("x", "y"))
    save_file(base, str(d / "base.safetensors"))
    for e, tv in tvs.items():
        save_file(tv, str(d / f"{e}.safetensors"))
    (d / "good.py").write_text(GOOD)
    (d / "nan.py").write_text("import torch\ndef merge_models(task_vectors, base, name):\n    return base * float('nan')\n")
    (d / "evil.py").write_text("import os\ndef merge_models(task_vectors, base, name):\n    return os.system('touch /tmp/x')\n")
    (d / "loop.py").write_text("def merge_models(task_vectors, base, name):\n    while True:\n        pass\n")
    (d / "raise.py").write_text("def merge_models(task_vectors, base, name):\n    raise RuntimeError('nope')\n")
    return d, base, tvs


def args(d, cand, out="out.safetensors", extra=()):
    return ["run", str(d / cand), "--base", str(d / "base.safetensors"), "--expert", f"x={d / 'x.safetensors'}",
            "--expert", f"y={d / 'y.safetensors'}", "--out", str(d / out), "--json", *extra]


def test_cli_run_ok_writes_output(files):
    from selfdev.sandbox.cli import sandbox_cli
    d, base, tvs = files
    r = CliRunner().invoke(sandbox_cli, args(d, "good.py"))
    assert r.exit_code == 0, r.output
    obj = json.loads(r.output.strip().splitlines()[-1])
    assert obj["status"] == "ok" and obj["reason"] is None and "duration_ms" in obj and "stdout" in obj
    out = load_file(str(d / "out.safetensors"))
    for k in base:
        assert torch.equal(out[k], (tvs["x"][k] + tvs["y"][k]) / 2)


@pytest.mark.parametrize("cand, status", [("nan.py", "rejected"), ("evil.py", "rejected"), ("raise.py", "error"),
                                          ("loop.py", "timeout")])
def test_cli_run_failures_write_nothing(files, cand, status):
    from selfdev.sandbox.cli import sandbox_cli
    d, _, _ = files
    out = f"out-{cand}.safetensors"
    r = CliRunner().invoke(sandbox_cli, args(d, cand, out, ("--timeout", "1")))
    assert r.exit_code == 1, r.output
    obj = json.loads(r.output.strip().splitlines()[-1])
    assert obj["status"] == status and obj["reason"]
    assert not (d / out).exists()


@pytest.mark.parametrize("mutate, fragment", [
    (lambda a: a[:4] + ["--expert", "bad"] + a[6:], "NAME=FILE"),
    (lambda a: [x.replace("base.safetensors", "missing.safetensors") for x in a], "not found"),
    (lambda a: [x.replace("good.py", "nope.py") for x in a], "not found"),
    (lambda a: [x.replace("x.safetensors", "good.py") for x in a], "safetensors"),
])
def test_cli_bad_input_is_one_clear_line(files, mutate, fragment):
    from selfdev.sandbox.cli import sandbox_cli
    d, _, _ = files
    r = CliRunner().invoke(sandbox_cli, mutate(args(d, "good.py", "bad.safetensors")))
    assert r.exit_code not in (0, None)
    text = r.output + (r.stderr if hasattr(r, "stderr") and r.stderr_bytes is not None else "")
    assert fragment in text and "Traceback" not in text
    assert not (d / "bad.safetensors").exists()


def test_cli_doctor_json():
    from selfdev.sandbox.cli import sandbox_cli
    r = CliRunner().invoke(sandbox_cli, ["doctor", "--json"])
    assert r.exit_code == 0
    rep = json.loads(r.output)
    assert rep["layers"]["static"] and "landlock_abi" in rep
    r = CliRunner().invoke(sandbox_cli, ["doctor"])
    assert r.exit_code == 0 and "seccomp" in r.output


def test_real_process_with_env_secret(files, tmp_path):
    """`python -m sandbox run` as a real process whose environment holds a secret: the
    candidate's output (and everything else printed) never contains it."""
    d, _, _ = files
    token = "SECRET-" + secrets.token_hex(8)
    cand = tmp_path / "peek.py"
    cand.write_text("import torch\ndef merge_models(task_vectors, base, name):\n"
                    "    print(repr(torch), repr(base.device))\n    return base * 0\n")
    env = dict(os.environ, OPENAI_API_KEY=token, HF_TOKEN=token, PYTHONPATH=ROOT)
    a = args(d, "good.py", "real.safetensors")
    a[1] = str(cand)
    p = subprocess.run([sys.executable, "-m", "selfdev.sandbox", *a], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    obj = json.loads(p.stdout.strip().splitlines()[-1])
    assert obj["status"] == "ok" and "sandboxed module" in obj["stdout"]
    assert token not in p.stdout and token not in p.stderr
    p = subprocess.run([sys.executable, "-m", "selfdev.sandbox", "run", str(cand), "--base", str(d / "nope"), "--expert",
                        "a=b", "--out", str(tmp_path / "o")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode != 0 and "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1
