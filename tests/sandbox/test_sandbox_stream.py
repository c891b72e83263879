"""StreamSandbox: one child per candidate, fed one tensor at a time; its clock counts only the
child's compute; a child that lies, sends garbage, stalls or dies gets a verdict, never a hang.

Hostile children are written in full Python (``_os_only=True``: no L1/L2), so they can speak
the frame protocol themselves (fd 3 is their report pipe)."""
import os
import time

import pytest
import torch

from sandbox_helpers import src

EXPERTS = ["a", "b"]
N = 12  # tensors per candidate
SHAPE = (6, 5)

AVERAGE = src("""
merged = torch.zeros_like(base)
for tau in task_vectors.values():
    merged = merged + tau
return merged / len(task_vectors)
""")


def tensors(k: int):
    g = torch.Generator().manual_seed(k)
    base = torch.randn(SHAPE, generator=g)
    return base, {e: 0.1 * torch.randn(SHAPE, generator=g) for e in EXPERTS}


def names():
    return [f"layers.{i}.mlp.weight" for i in range(N)]


@pytest.fixture(scope="module")
def ssb():
    from selfdev.sandbox import StreamSandbox
    with StreamSandbox(EXPERTS, 64) as s:
        yield s


@pytest.fixture(scope="module")
def raw():
    """Full Python in the child: the OS layers and the channel's checks hold on their own."""
    from selfdev.sandbox import StreamSandbox
    with StreamSandbox(EXPERTS, 64, memory_mb=1024, _os_only=True) as s:
        yield s


def feed(session, between: float = 0.0):
    """Merge every tensor; returns the merged ones (up to where the session ended)."""
    out = []
    for k, name in enumerate(names()):
        if between:
            time.sleep(between)  # the engine's I/O: not the candidate's time
        base, tvs = tensors(k)
        m = session.merge(name, base, tvs)
        if m is None:
            break
        out.append(m)
    return out


def test_one_child_merges_every_tensor_exactly(ssb):
    before, parent = list(ssb.children), ssb.parent_pid
    with ssb.session(AVERAGE, tensor_timeout=10, total_timeout=30) as s:
        got = feed(s)
        res = s.finish()
    assert res.status == "ok", res.reason
    assert len(got) == N and res.details["tensors"] == N
    for k, m in enumerate(got):
        base, tvs = tensors(k)
        expected = torch.zeros_like(base)
        for e in EXPERTS:
            expected = expected + tvs[e]
        assert torch.equal(m, expected / 2), k
    # the supervisor's own record: exactly one child got this candidate, from the same parent
    assert ssb.children == before + [res.details["pid"]]
    assert ssb.parent_pid == parent and not ssb.restarts
    # the merged tensors are private copies: the next candidate does not change them
    kept = got[0].clone()
    with ssb.session(src("return base * 0 + 7"), tensor_timeout=10, total_timeout=30) as s:
        feed(s)
        assert s.finish().ok
    assert torch.equal(got[0], kept) and len(ssb.children) == len(before) + 2


def test_wrong_shape_at_tensor_k_rejects_naming_it(ssb):
    k = 5
    bad = src(f"""
if name == "layers.{k}.mlp.weight":
    return torch.zeros(3)
return base * 0
""")
    with ssb.session(bad, tensor_timeout=10, total_timeout=30) as s:
        got = feed(s)
        res = s.finish()
    assert len(got) == k
    assert res.status == "rejected" and "shape" in res.reason and f"layers.{k}.mlp.weight" in res.reason
    assert res.details["tensor"] == f"layers.{k}.mlp.weight" and res.details["tensors"] == k


def test_stall_at_tensor_k_is_killed_at_the_per_tensor_limit(ssb):
    k = 3
    stall = src(f"""
if name == "layers.{k}.mlp.weight":
    n = 0
    while True:
        n = n + 1
return base * 0
""")
    t = time.monotonic()
    with ssb.session(stall, tensor_timeout=1.0, total_timeout=60) as s:
        got = feed(s)
        res = s.finish()
    assert time.monotonic() - t < 10
    assert len(got) == k and res.status == "timeout"
    assert "per-tensor limit of 1 s" in res.reason and f"layers.{k}.mlp.weight" in res.reason
    assert res.details["limit"] == "tensor"
    assert res.details.get("signal") == "SIGKILL"  # stopped by the supervisor, not left running


def test_total_budget_counts_compute_not_the_callers_io(raw):
    slow = "import time\ndef merge_models(task_vectors, base, name):\n    time.sleep(0.3)\n    return base * 0\n"
    with raw.session(slow, tensor_timeout=5, total_timeout=1.0) as s:
        got = feed(s)
        res = s.finish()
    assert res.status == "timeout" and res.details["limit"] == "total"
    assert "total compute budget of 1 s" in res.reason and 2 <= len(got) <= 4
    # the caller sleeping 0.2 s before every tensor (2.4 s in all) is not the candidate's time
    quick = "def merge_models(task_vectors, base, name):\n    return base * 0\n"
    with raw.session(quick, tensor_timeout=5, total_timeout=1.0) as s:
        got = feed(s, between=0.2)
        res = s.finish()
    assert res.status == "ok", res.reason
    assert len(got) == N and res.details["compute_ms"] < 1000


LIE = """import json, os
def frame(msg):
    data = json.dumps(msg).encode() if isinstance(msg, dict) else msg
    os.write(3, len(data).to_bytes(4, "little") + data)
def merge_models(task_vectors, base, name):
    if name == "layers.4.mlp.weight":
        %s
    return base * 0
"""


@pytest.mark.parametrize("act, status, words", [
    ('frame({"step": 99})', "rejected", "out of turn"),  # lies about the step
    ('frame({"step": 4, "shape": [1]})', "rejected", "out of turn"),  # claims a size
    ('frame(b"\\xff\\x00garbage")', "rejected", "malformed"),  # not JSON
    ('os.write(3, (1 << 31).to_bytes(4, "little"))', "rejected", "size limit"),  # huge length
    ('frame({"status": "ok"})', "rejected", "before all tensors"),  # claims it is done
    ('os._exit(3)', "killed", "exited (code 3)"),  # dies mid-stream
    ('import time; time.sleep(60)', "timeout", "per-tensor limit"),  # stalls without answering
    ('return base * float("nan")', "rejected", "non-finite"),  # garbage values
])
def test_a_lying_child_gets_a_verdict_naming_tensor_k(raw, act, status, words):
    with raw.session(LIE % act, tensor_timeout=2.0, total_timeout=30) as s:
        got = feed(s)
        res = s.finish()
    assert res.status == status and words in res.reason, res
    assert "layers.4.mlp.weight" in res.reason or res.details.get("tensor") == "layers.4.mlp.weight"
    assert len(got) == 4
    # the sandbox still serves the next candidate
    with raw.session("def merge_models(task_vectors, base, name):\n    return base * 0\n",
                     tensor_timeout=5, total_timeout=30) as s:
        assert len(feed(s)) == N and s.finish().ok


def test_the_child_cannot_resize_its_buffers_or_write_its_inputs(raw):
    probe = """import mmap, os
for what, call in [("write inputs", lambda: os.pwrite(6, b"x" * 8, 0)),
                   ("map inputs shared", lambda: mmap.mmap(6, 64, flags=mmap.MAP_SHARED, prot=mmap.PROT_WRITE)),
                   ("shrink result", lambda: os.ftruncate(4, 0))]:  # (growing it: SIGXFSZ, RLIMIT_FSIZE)
    try:
        call()
        print(what, "ALLOWED")
    except OSError as e:
        print(what, "refused", type(e).__name__)
def merge_models(task_vectors, base, name):
    return base * 0
"""
    with raw.session(probe, tensor_timeout=5, total_timeout=30) as s:
        got = feed(s)
        res = s.finish()
    out = res.stdout + res.details.get("fd_output", "")
    assert res.ok and len(got) == N, res
    assert "ALLOWED" not in out and out.count("refused") == 3, out


def test_early_verdicts_and_closing_a_session(ssb):
    res = ssb.session("import os\n" + AVERAGE, tensor_timeout=5, total_timeout=5).result
    assert res.status == "rejected" and res.details["stage"] == "screen"
    s = ssb.session(src("return undefined_name"), tensor_timeout=5, total_timeout=5)
    base, tvs = tensors(0)
    assert s.merge("w", base, tvs) is None and s.result.status == "error"
    missing = ssb.session("import torch\nx = 1\n", tensor_timeout=5, total_timeout=5).result
    assert missing.status == "rejected" and "merge_models" in missing.reason
    s = ssb.session(AVERAGE, tensor_timeout=5, total_timeout=5)
    assert s.merge("w", base, tvs) is not None
    pid = s.pid
    s.close()  # the caller gave up: the child is killed, the lock released
    assert s.result.status == "killed"
    with pytest.raises(ProcessLookupError):
        for _ in range(50):
            os.kill(pid, 0)
            time.sleep(0.1)
            ssb._drain_ctl()
    with ssb.session(AVERAGE, tensor_timeout=5, total_timeout=5) as s2:
        assert len(feed(s2)) == N and s2.finish().ok
    with pytest.raises(TypeError):
        ssb.run(AVERAGE)
    with ssb.session(AVERAGE, tensor_timeout=5, total_timeout=5) as s3:
        with pytest.raises(ValueError):
            s3.buffers((100, 100))  # larger than the sandbox was made for


def test_warm_parent_dying_mid_stream_is_a_verdict_and_it_is_replaced(raw):
    import signal

    quick = "def merge_models(task_vectors, base, name):\n    return base * 0\n"
    with raw.session(quick, tensor_timeout=5, total_timeout=30) as s:
        base, tvs = tensors(0)
        assert s.merge("w0", base, tvs) is not None
        os.kill(raw.parent_pid, signal.SIGKILL)  # the child dies with it (PDEATHSIG)
        raw._proc.wait(timeout=10)
        time.sleep(0.2)
        t = time.monotonic()
        assert s.merge("w1", base, tvs) is None
        res = s.finish()
    assert time.monotonic() - t < 10
    assert res.status == "killed" and ("parent" in res.reason or "SIGKILL" in res.reason), res
    with raw.session(quick, tensor_timeout=5, total_timeout=30) as s:
        assert len(feed(s)) == N and s.finish().ok
    assert raw.restarts


def test_stream_answers_are_judged_strictly():
    from selfdev.sandbox.verdict import stream_answer

    assert stream_answer(b'{"step":3}', {"step": 3}) == ("answer", None)
    assert stream_answer(b'{"ready":true}', {"ready": True}) == ("answer", None)
    for bad in (b'{"step":3.0}', b'{"step":true}', b'{"step":3,"shape":[1]}', b'{"step":4}', b"[3]", b"\xff",
                b"[" * 100000, b'{"step":1e999}', b"{}"):
        assert stream_answer(bad, {"step": 3})[0] == "bad", bad[:20]
    assert stream_answer(b'{"ready":1}', {"ready": True})[0] == "bad"
    assert stream_answer(b'{"status":"error","etype":"X"}', {"step": 3}) == ("report", None)
    assert stream_answer(b'{"step":3}', None)[0] == "bad"  # after OP_END only the report may come
