"""Start-up, failing closed, doctor, restart after the parent dies, close()."""
import os
import signal
import time

import pytest
import torch

from sandbox_helpers import make_inputs, src


def small():
    return make_inputs(shapes={"w": (3, 3)}, experts=("a",))


def test_doctor_reports_layers():
    from selfdev.sandbox import doctor
    rep = doctor()
    for k in ("static", "facade", "process", "rlimits", "seccomp", "landlock", "netns"):
        assert k in rep["layers"]
    assert rep["default_require"]
    # on this project's machine kind every default-required layer is available
    missing = rep["missing_for_default"]
    if missing:
        pytest.skip(f"kernel lacks {missing}")
    assert rep["ok"]


@pytest.mark.parametrize("layer", ["landlock", "seccomp", "netns"])
def test_missing_required_layer_fails_closed(layer):
    from selfdev.sandbox import Sandbox, SandboxUnavailable
    base, tvs = small()
    with pytest.raises(SandboxUnavailable) as ei:
        Sandbox(base, tvs, _disable_layers=[layer])
    assert layer in str(ei.value) and "refusing" in str(ei.value)
    if layer == "landlock":  # explicitly accepting weaker isolation works
        req = ("rlimits", "no_new_privs", "netns", "seccomp")
        with Sandbox(base, tvs, require=req, _disable_layers=[layer]) as sb:
            assert sb.run(src("return base * 0")).status == "ok"


def test_unknown_layer_and_bad_inputs():
    from selfdev.sandbox import Sandbox
    base, tvs = small()
    with pytest.raises(ValueError):
        Sandbox(base, tvs, require=["nonsense"])
    with pytest.raises(ValueError):
        Sandbox(base, {"a": {"w": torch.zeros(2, 2)}})
    with pytest.raises(ValueError):
        Sandbox(base, {"a": {}})
    with pytest.raises(ValueError):
        Sandbox(base, tvs, names=["missing"])


def test_parent_is_restarted_if_it_dies_and_close_kills_it():
    from selfdev.sandbox import Sandbox
    base, tvs = small()
    sb = Sandbox(base, tvs)
    try:
        assert sb.run(src("return base * 0")).status == "ok"
        os.kill(sb.parent_pid, signal.SIGKILL)
        time.sleep(0.2)
        res = sb.run(src("return base * 0"))
        if res.status != "ok":  # the death may be noticed mid-run; the next run must work
            res = sb.run(src("return base * 0"))
        assert res.status == "ok"
        pid = sb.parent_pid
    finally:
        sb.close()
    time.sleep(0.2)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(RuntimeError):
        sb.run(src("return base"))


def test_names_subset_and_timeout_override():
    from selfdev.sandbox import Sandbox
    base, tvs = make_inputs(shapes={"w": (2, 2), "skip": (2,)}, experts=("a", "b"))
    with Sandbox(base, tvs, names=["w"], timeout=5) as sb:
        res = sb.run(src("assert name == 'w'\nreturn base * 0"))
        assert res.status == "ok" and list(res.tensors) == ["w"]
        t0 = time.monotonic()
        assert sb.run(src("while True:\n    pass"), timeout=0.5).status == "timeout"
        assert time.monotonic() - t0 < 3
        assert sb.run(src("return base * 0")).status == "ok"


def test_multithreaded_children_keep_every_layer():
    """threads > 1: the warm parent stays single-threaded (namespaces and Landlock need it);
    the child's intra-op threads are created after seccomp, through clone(CLONE_THREAD)."""
    from selfdev.sandbox import Sandbox
    base, tvs = make_inputs(shapes={"w": (256, 256)}, experts=("a", "b"))
    with Sandbox(base, tvs, threads=2) as sb:
        assert all(sb.layers.get(k) for k in ("landlock", "seccomp", "netns"))
        res = sb.run(src("print(torch.get_num_threads())\nx = task_vectors['a'] @ task_vectors['b']\nreturn base * 0 + 0 * x.sum()"))
        assert res.status == "ok", res.reason
        assert res.stdout.strip() == "2"


def test_many_tensors_and_a_large_candidate():
    from selfdev.sandbox import Sandbox
    shapes = {f"layer.{i}.w": (3,) for i in range(3000)}
    base, tvs = make_inputs(shapes=shapes, experts=("a", "b"))
    table = "TABLE = [" + ",".join(f"'{'ab' * 40}'" for _ in range(600)) + "]\n"
    code = "import torch\n" + table + "def merge_models(task_vectors, base, name):\n    return base * 0 + len(TABLE) * 0\n"
    assert 40_000 < len(code) < 64 * 1024
    with Sandbox(base, tvs) as sb:
        res = sb.run(code)
        assert res.status == "ok", res.reason
        assert len(res.tensors) == 3000


def test_use_after_fork_of_the_owner_starts_a_separate_parent():
    from selfdev.sandbox import Sandbox
    base, tvs = small()
    with Sandbox(base, tvs) as sb:
        assert sb.run(src("return base * 0")).status == "ok"
        first = sb.parent_pid
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the forked copy
            try:
                ok = sb.run(src("return base * 0")).status == "ok" and sb.parent_pid != first
                sb.close()
                os.write(w, b"1" if ok else b"0")
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        assert os.read(r, 1) == b"1"
        os.close(r)
        os.close(w)
        # the original still works, its warm parent untouched
        assert sb.parent_pid == first and sb.run(src("return base * 0")).status == "ok"


def _collapse_available() -> bool:
    """Whether this kernel collapses anonymous memory into huge pages on request
    (MADV_COLLAPSE, Linux >= 6.1, transparent huge pages not "never")."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    huge = 2 << 20
    buf = ctypes.create_string_buffer(b"x" * (2 * huge))  # private anonymous memory
    start = -(-ctypes.addressof(buf) // huge) * huge
    return libc.madvise(start, huge, 25) == 0


def test_warm_parent_memory_is_on_huge_pages():
    """Every candidate's fork copies the warm parent's page tables, and its exit tears the
    copy down: with torch's ~150 MB of private memory on 4 KiB pages that was most of the
    system time per candidate. The warm parent collapses it into 2 MiB pages (one entry each)
    where the kernel allows."""
    from selfdev.sandbox import Sandbox
    if not _collapse_available():
        pytest.skip("this kernel does not collapse memory into huge pages on request")
    base, tvs = small()
    with Sandbox(base, tvs) as sb:
        try:
            with open(f"/proc/{sb.parent_pid}/smaps_rollup") as f:
                fields = {ln.split(":")[0]: int(ln.split()[1]) for ln in f if ln.endswith("kB\n")}
        except PermissionError:
            pytest.skip("cannot read the warm parent's memory map here")
        assert fields["AnonHugePages"] >= fields["Anonymous"] // 2, fields
        assert sb.run(src("return base * 0")).status == "ok"
