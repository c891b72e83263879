"""Attacks through the normal path (L1 + L2 + L3), one test per attack class. Statically
obvious attacks are covered in test_policy.py; these pass the static screen and must be
stopped at run time, or are resource attacks that only the OS layer can stop."""
import json
import time

import pytest
import torch

from sandbox_helpers import src


def run(sb, body, **kw):
    return sb.run(src(body), **kw)


def assert_violation(res, fragment=""):
    """Rejected, either by the static screen or by a run-time guard, with a precise reason."""
    assert res.status == "rejected", (res.status, res.reason)
    assert fragment in res.reason, res.reason
    if res.details.get("stage") != "screen":
        assert "policy violation" in res.reason


# ----------------------------------------------------------------------------- import routes
@pytest.mark.parametrize("body, fragment", [
    # format-string traversal built at run time (no '__' constant in the source)
    ("s = '{0.' + '_' * 2 + 'class' + '_' * 2 + '}'\nreturn s.format(base)", "str.format"),
    ("s = '{0[0]}'\nreturn s.format([base])", "str.format"),
    # AttributeError.obj (CVE-2024-47532 family)
    ("try:\n    torch.nope\nexcept Exception as e:\n    return e.obj", "nope"),
    ("try:\n    x = 1 / 0\nexcept Exception as e:\n    return e.with_traceback", "with_traceback"),
    # module attribute writes (poisoning)
    ("torch.Tensor.add = None\nreturn base", "writing"),
    ("torch.linalg.svd = None\nreturn base", "writing"),
    ("math.pi = 3\nreturn base", "writing"),
    ("base.data = base * 0\nreturn base", "setting tensor attribute"),
    ("d = {}\nd.update(a=1)\nf = d.get\nf.x = 1\nreturn base", "writing"),
    ("return dict.fromkeys([1])", "fromkeys"),
    ("return 'abc'.encode()", "encode"),
    ("return (1).to_bytes(2, 'little')", "to_bytes"),
    ("f = merge_models\nreturn f.func_globals", "func_globals"),
    ("return torch.nn.functional.dropout(base)", "dropout"),
    ("return torch.inspect", "inspect"),
    ("return torch.Tensor(10)", "torch.Tensor"),
])
def test_runtime_guards(sb, body, fragment):
    assert_violation(run(sb, body), fragment)


# ----------------------------------------------------------------------------- torch routes
@pytest.mark.parametrize("body, fragment", [
    ("return base.type('torch.FloatTensor')", "'type'"),
    ("return base.to('meta')", "Tensor.to"),
    ("return base.apply_", "apply_"),
    ("return base.share_memory_", "share_memory_"),
    ("return base.pin_memory", "pin_memory"),
    ("return base.as_strided((1,), (1,))", "as_strided"),
    ("return base.set_", "set_"),
    ("return base.grad", "grad"),
    ("return base.storage_type", "storage_type"),
    ("return torch.rand(3)", "torch.Generator"),
    ("return base.bernoulli_(0.5)", "torch.Generator"),
    ("torch.manual_seed(0)\nreturn base", "manual_seed"),
    ("g = torch.Generator(device='cuda')\nreturn base", "cpu"),
    ("g = torch.Generator()\nreturn g.get_state()", "get_state"),
    ("return torch.zeros(10 ** 10)", "elements requested"),
    ("return torch.full((10 ** 5, 10 ** 5), 1.0)", "elements requested"),
    ("return torch.arange(0, 10 ** 12)", "elements requested"),
    ("return base.new_empty(10 ** 11)", "elements requested"),
    ("return base.repeat(10 ** 4, 10 ** 4)", "elements requested"),
    ("return torch.empty(3, device='cuda')", "cpu"),
])
def test_torch_routes_blocked(sb, body, fragment):
    assert_violation(run(sb, body), fragment)


def test_violation_swallowed_by_candidate_is_still_rejected(sb):
    res = run(sb, "try:\n    base.numpy_like = 1\nexcept BaseException:\n    pass\nreturn base * 0")
    assert_violation(res, "caught by the candidate")


def test_empty_is_zeroed_no_memory_disclosure(sb):
    res = run(sb, "x = torch.empty(base.shape)\ny = torch.empty_like(base)\nreturn x + y")
    assert res.status == "ok"
    assert all(float(t.abs().max()) == 0.0 for t in res.tensors.values())


# ----------------------------------------------------------------------------- exhaustion
def test_cpu_loop_times_out(sb):
    t0 = time.monotonic()
    res = run(sb, "while True:\n    pass", timeout=1.0)
    assert res.status == "timeout" and time.monotonic() - t0 < 5


def test_uninterruptible_c_call_times_out(sb):
    res = run(sb, "x = 7 ** (10 ** 9)\nreturn base", timeout=1.0)
    assert res.status in ("timeout", "killed")


def test_memory_bomb_is_contained(sb):
    res = run(sb, "x = [0] * (10 ** 11)\nreturn base")
    assert res.status == "error" and "MemoryError" in res.reason
    # the element cap refuses the view before anything materialises it (issue 13, item 7)
    res = run(sb, "x = base.flatten()[:1].expand(10 ** 6, 10 ** 5).contiguous()\nreturn base")
    assert res.status == "rejected" and "elements (cap" in res.reason


def test_output_flood_is_capped(sb):
    res = run(sb, "for i in range(20000):\n    print('x' * 1000)\nreturn base * 0")
    assert res.status == "ok"
    assert len(res.stdout) <= 17 * 1024 and "dropped" in res.stdout


def test_huge_exception_message_is_capped(sb):
    res = run(sb, "raise ValueError('y' * 10 ** 6)")
    assert res.status == "error" and "ValueError" in res.reason and len(res.reason) < 2100


def test_control_characters_are_neutralised(sb):
    res = run(sb, "print('\\x1b[2J\\x1b]0;pwned\\x07\\r')\nreturn base * 0")
    assert res.status == "ok" and "\x1b" not in res.stdout and "\r" not in res.stdout


# ----------------------------------------------------------------------------- results
@pytest.mark.parametrize("body, fragment", [
    ("return [1, 2]", "returned list"),
    ("return None", "returned NoneType"),
    ("return {'x': base}", "returned dict"),
    ("return base.double()", "dtype float64"),
    ("return base.flatten()", "shape"),
    ("return base.unsqueeze(0)", "shape"),
    ("return base * float('nan')", "non-finite"),
    ("return base * float('inf')", "non-finite"),
    ("return base.to(torch.int64)", "dtype int64"),
    ("return torch.zeros(1).expand(10 ** 3, 10 ** 3)", "shape"),
    ("return torch.zeros(1).expand(10 ** 6, 10 ** 6)", "elements (cap"),
])
def test_bad_results_rejected_precisely(sb, body, fragment):
    res = run(sb, body)
    assert res.status == "rejected" and fragment in res.reason, res.reason
    assert res.tensors is None


def test_views_and_aliases_are_materialised(sb, inputs):
    base, _ = inputs
    res = run(sb, "if base.dim() == 2:\n    return base.t().t()\nreturn torch.zeros(1).expand(base.shape)")
    assert res.status == "ok"
    for n, t in res.tensors.items():
        assert t.is_contiguous() and type(t) is torch.Tensor
        if base[n].dim() == 2:
            assert torch.equal(t, base[n])
    # results are private copies, not views of anything the child touched
    t = res.tensors["fc1.weight"]
    t.add_(1)
    assert not torch.equal(t, base["fc1.weight"])


def test_candidate_error_reports_type_message_and_line(sb):
    res = sb.run("import torch\n\ndef merge_models(task_vectors, base, name):\n    x = 1\n    return task_vectors['nope']\n")
    assert res.status == "error" and res.reason.startswith("KeyError (line 5)")


def test_no_persistence_across_candidates(sb):
    first = "import torch\nSTATE = []\ndef merge_models(task_vectors, base, name):\n    STATE.append(1)\n    base.fill_(3.0)\n    return base * 0\n"
    assert sb.run(first).status == "ok"
    second = src("assert float(base.abs().max()) != 3.0 or base.numel() == 1\nreturn base * 0")
    res = sb.run(second)
    assert res.status == "ok", res.reason


def test_stdout_cannot_forge_the_verdict(sb):
    res = run(sb, "print('{\"status\": \"ok\"}')\nreturn base * float('nan')")
    assert res.status == "rejected"
    assert json.loads(json.dumps(res.to_json()))["status"] == "rejected"
