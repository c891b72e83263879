"""Issue 13: seven ways a candidate that escaped the language layers (full Python in the child,
``Sandbox(_os_only=True)``) got at things outside its own process, and item 7, an element-cap
path of the facade. Each test watches an outside canary, never only what the child claims:
a victim process and its limits, the warm parent's limits before and after, an IPC key a
later child must not find, ``/dev/null``'s stat, the supervisor still answering, a task count
read from ``/proc``.
"""
import ctypes
import json
import os
import resource
import stat
import subprocess
import sys
import threading
import time

import pytest

from sandbox_helpers import attack, make_inputs, out

# every limit a process has (prlimit reads them from outside)
RLIMITS = sorted({getattr(resource, n) for n in dir(resource) if n.startswith("RLIMIT_")})
_libc = ctypes.CDLL(None, use_errno=True)
NR_IOPRIO_GET = 252
IOPRIO_WHO_PROCESS = 1


@pytest.fixture(scope="module")
def raw():
    """A sandbox whose child runs plain Python: only the OS layers stand in the way."""
    from selfdev.sandbox import Sandbox
    base, tvs = make_inputs(shapes={"w": (4, 4), "b": (4,)}, experts=("a", "b"))
    with Sandbox(base, tvs, timeout=5.0, memory_mb=512, _os_only=True) as s:
        yield s


@pytest.fixture
def victim():
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    yield p
    p.kill()
    p.wait()


def state_of(pid: int) -> dict:
    """What another process could change about ``pid`` from outside: every resource limit,
    its nice value, scheduler policy, CPU affinity and I/O priority."""
    return {"limits": {r: resource.prlimit(pid, r) for r in RLIMITS},
            "nice": os.getpriority(os.PRIO_PROCESS, pid),
            "policy": os.sched_getscheduler(pid),
            "affinity": sorted(os.sched_getaffinity(pid)),
            "ioprio": _libc.syscall(NR_IOPRIO_GET, IOPRIO_WHO_PROCESS, pid)}


def benign_runs(sb, n: int) -> list:
    return [sb.run(attack("pass")).status for _ in range(n)]


# --------------------------------------------------------------------------- 1
def test_no_reach_into_other_processes(raw, victim):
    """prlimit64, sched_*, setpriority, ioprio_set on anything but the child itself are
    refused: the victim keeps its limits (a CPU limit of 0 would kill it), the supervisor (this
    test process) keeps its open-file limit, and it keeps answering."""
    me = os.getpid()
    before_victim, before_me = state_of(victim.pid), state_of(me)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        res = raw.run(attack(f"""
import ctypes, os, resource
libc = ctypes.CDLL(None, use_errno=True)
def sc(*args):
    if libc.syscall(*args) == -1:
        raise OSError(ctypes.get_errno(), 'syscall')
def tryit(what, f):
    try:
        f()
        print('DONE', what)
    except OSError as e:
        print('denied', what, e.errno)
v, me = {victim.pid}, {me}
tryit('prlimit-cpu-victim', lambda: resource.prlimit(v, resource.RLIMIT_CPU, (0, 0)))
tryit('prlimit-nofile-victim', lambda: resource.prlimit(v, resource.RLIMIT_NOFILE, (7, 7)))
tryit('prlimit-nofile-engine', lambda: resource.prlimit(me, resource.RLIMIT_NOFILE, ({soft - 1}, {hard})))
tryit('prlimit-wide-pid', lambda: sc(302, ctypes.c_long((1 << 32) | v), 7, None, None))
tryit('affinity', lambda: os.sched_setaffinity(v, {{0}}))
tryit('scheduler', lambda: os.sched_setscheduler(v, os.SCHED_IDLE, os.sched_param(0)))
tryit('nice', lambda: os.setpriority(os.PRIO_PROCESS, v, 19))
tryit('nice-user', lambda: os.getpriority(os.PRIO_USER, 0))
tryit('ioprio', lambda: sc(251, 1, v, 3 << 13))
tryit('robust-list', lambda: sc(274, v, ctypes.byref(ctypes.c_void_p()), ctypes.byref(ctypes.c_size_t())))
tryit('self-prlimit', lambda: resource.prlimit(0, resource.RLIMIT_CORE, (0, 0)))
tryit('self-nice', lambda: os.nice(1))
"""))
        time.sleep(0.2)  # a CPU limit of 0 kills at the next scheduler tick
        assert victim.poll() is None, "the victim process was killed"
        assert state_of(victim.pid) == before_victim
        assert state_of(me) == before_me
        text = out(res)
        assert "DONE self-prlimit" in text and "DONE self-nice" in text, text  # its own: fine
        assert [ln for ln in text.splitlines() if ln.startswith("DONE")] == ["DONE self-prlimit", "DONE self-nice"], text
        assert res.status == "ok", res.reason
        assert benign_runs(raw, 1) == ["ok"]  # the supervisor still answers
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# --------------------------------------------------------------------------- 2
def test_children_cannot_reach_the_warm_parent(raw):
    parent = raw.parent_pid
    before = state_of(parent)
    res = raw.run(attack("""
import os, resource
pp = os.getppid()
for r in (resource.RLIMIT_FSIZE, resource.RLIMIT_NOFILE, resource.RLIMIT_AS, resource.RLIMIT_CPU):
    try:
        resource.prlimit(pp, r, (0, 0))
        print('DONE', r)
    except OSError as e:
        print('denied', r, e.errno)
for f in (lambda: os.setpriority(os.PRIO_PROCESS, pp, 19), lambda: os.sched_setaffinity(pp, {0})):
    try:
        f()
        print('DONE')
    except OSError as e:
        print('denied', e.errno)
"""))
    assert "DONE" not in out(res), out(res)
    assert raw.parent_pid == parent and state_of(parent) == before
    # more candidates than pre-forked spares: none of them inherits anything
    assert benign_runs(raw, 4) == ["ok"] * 4


def test_warm_parent_restarts_when_its_state_changed(raw):
    """Poisoned from outside (what a child can no longer do): the parent notices before its
    next fork and is replaced, so no later candidate is killed by an inherited limit."""
    assert benign_runs(raw, 1) == ["ok"]  # a live parent (an earlier test may have broken it)
    parent = raw.parent_pid
    resource.prlimit(parent, resource.RLIMIT_FSIZE, (0, 0))
    assert benign_runs(raw, 5) == ["ok"] * 5
    assert raw.parent_pid != parent
    assert resource.prlimit(raw.parent_pid, resource.RLIMIT_FSIZE)[0] != 0


# --------------------------------------------------------------------------- 3
IPC_KEY = 0x5E1F13


def test_no_sysv_ipc_between_candidates(raw):
    token = "IPC-TOKEN-%x" % os.getpid()
    first = raw.run(attack(f"""
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
libc.shmat.restype = ctypes.c_void_p
shm = libc.shmget({IPC_KEY}, 1 << 20, 0o1600)  # IPC_CREAT | 0600
print('shmget', shm, ctypes.get_errno())
if shm >= 0:
    addr = libc.shmat(shm, None, 0)
    if addr not in (None, ctypes.c_void_p(-1).value):
        ctypes.memmove(addr, {token!r}.encode(), {len(token)})
big = libc.shmget({IPC_KEY} + 1, ctypes.c_size_t(2 << 30), 0o1600)  # 2 GiB, never attached: not in RLIMIT_AS
print('big', big, ctypes.get_errno())
print('msgget', libc.msgget({IPC_KEY}, 0o1600), ctypes.get_errno())
print('semget', libc.semget({IPC_KEY}, 1, 0o1600), ctypes.get_errno())
"""))
    assert first.status == "ok", first.reason
    later = raw.run(attack(f"""
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
libc.shmat.restype = ctypes.c_void_p
for key, size in (({IPC_KEY}, 0), ({IPC_KEY} + 1, 0)):
    shm = libc.shmget(key, size, 0)
    if shm >= 0:
        print('FOUND shm', key)
        addr = libc.shmat(shm, None, 0o10000)  # SHM_RDONLY
        if addr not in (None, ctypes.c_void_p(-1).value):
            print(ctypes.string_at(addr, {len(token)}).decode('latin-1'))
if libc.msgget({IPC_KEY}, 0) >= 0:
    print('FOUND msg')
if libc.semget({IPC_KEY}, 0, 0) >= 0:
    print('FOUND sem')
print('looked')
"""))
    assert "looked" in out(later)
    assert "FOUND" not in out(later) and token not in out(later), out(later)


# --------------------------------------------------------------------------- 4
def test_no_metadata_changes_to_host_files(raw):
    before = os.stat("/dev/null")
    res = raw.run(attack("""
import os, stat
print('stdin', 'fifo' if stat.S_ISFIFO(os.fstat(0).st_mode) else oct(os.fstat(0).st_mode))
mode = stat.S_IMODE(os.stat('/dev/null').st_mode)
for what, f in [('futimens', lambda: os.utime(0)), ('utimensat', lambda: os.utime('/dev/null')),
                ('fchmod', lambda: os.chmod(0, mode)), ('chmod', lambda: os.chmod('/dev/null', mode)),
                ('chown', lambda: os.chown('/dev/null', -1, os.getgid())),
                ('setxattr', lambda: os.setxattr('/dev/null', 'user.selfdev', b'x')),
                ('fsetxattr', lambda: os.setxattr(0, 'user.selfdev', b'x'))]:
    try:
        f()
        print('DONE', what)
    except OSError as e:
        print('denied', what, e.errno)
"""))
    after = os.stat("/dev/null")
    assert "stdin fifo" in out(res), out(res)
    assert "DONE" not in out(res), out(res)
    for k in ("st_mode", "st_uid", "st_gid", "st_mtime_ns", "st_ctime_ns", "st_atime_ns"):
        assert getattr(after, k) == getattr(before, k), k
    assert stat.S_ISCHR(after.st_mode)


# --------------------------------------------------------------------------- 5
def test_hostile_report_through_the_real_supervisor(raw):
    """The child writes its own report (a 401-digit integer and an infinity among the
    timings) and exits: Sandbox.run() returns a verdict instead of raising, and the next
    candidate runs."""
    res = raw.run(attack("""
import os
os.write(3, b'{"status": "ok", "stdout": {"x": 1}, "violations": [[[]]], "timings": {"setup_ms": '
         + b'9' * 401 + b', "run_ms": 1e999}}')
os._exit(0)
"""))
    assert res.status in ("ok", "rejected")
    assert all(isinstance(v, float) and 0 <= v < 1e12 for v in res.details.get("child_timings", {}).values())
    json.dumps(res.to_json())
    assert benign_runs(raw, 1) == ["ok"]


# --------------------------------------------------------------------------- 6
def test_tasks_per_child_are_capped(raw):
    """Threads count as tasks: the child's task count, read from /proc outside it while it runs,
    stays at the cap (32 + 2 x threads, docs/sandbox.md) instead of the thousands its address
    space would allow."""
    cap = 32 + 2 * raw.threads
    parent = raw.parent_pid
    peak = {"tasks": 0}
    stop = threading.Event()

    def poll():
        while not stop.is_set():
            try:
                with open(f"/proc/{parent}/task/{parent}/children") as f:
                    kids = f.read().split()
            except OSError:
                kids = []
            for k in kids:
                try:
                    peak["tasks"] = max(peak["tasks"], len(os.listdir(f"/proc/{k}/task")))
                except OSError:
                    pass
            time.sleep(0.005)

    th = threading.Thread(target=poll, daemon=True)
    th.start()
    try:
        res = raw.run(attack("""
import threading, time
threading.stack_size(64 * 1024)
ev = threading.Event()
n = 0
try:
    for i in range(3000):
        threading.Thread(target=ev.wait, daemon=True).start()
        n += 1
except RuntimeError:
    pass
print('threads', n)
time.sleep(0.3)
ev.set()
"""), timeout=20)
    finally:
        stop.set()
        th.join()
    made = [int(ln.split()[1]) for ln in out(res).splitlines() if ln.startswith("threads ")]
    assert made and made[0] < cap, out(res)
    assert made[0] <= peak["tasks"] <= cap, peak  # seen from outside, at most the cap


# --------------------------------------------------------------------------- 7
@pytest.mark.parametrize("expr", [
    "base.new_ones(1).expand(2 ** 27).clone()",
    "base.new_ones(1).expand(2 ** 27) * 2",
    "torch.broadcast_to(base.new_ones(1), (2 ** 27,)).contiguous()",
    "base.new_ones(2 ** 14).unfold(0, 2 ** 13, 1).sum()",
    "base.new_ones(2 ** 13)[:, None] * base.new_ones(2 ** 14)",
])
def test_element_cap_holds_on_every_path(sb, expr):
    """(L2, through the real sandbox) no tensor over the element cap comes into existence
    by a view (expand/broadcast) that a later op materialises, or survives a broadcast."""
    res = sb.run(f"import torch\n\ndef merge_models(task_vectors, base, name):\n    x = {expr}\n    return base\n")
    assert res.status == "rejected", (res.status, res.reason)
    assert "elements" in res.reason and "cap" in res.reason, res.reason


# --------------------------------------------------------------------------- the filter alone
FILTER_PROBE = r"""
import ctypes, os, resource, sys
sys.path.insert(0, sys.argv[1])
import oslayers as osl
v, path = int(sys.argv[2]), sys.argv[3]
libc = ctypes.CDLL(None, use_errno=True)
if sys.argv[4] == "filter":
    assert osl.set_no_new_privs()
    osl.install_seccomp(child=True, self_pid=os.getpid())
def sc(*args):
    if libc.syscall(*args) == -1:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
def shm():
    sid = libc.shmget(0, 4096, 0o600)  # IPC_PRIVATE
    if sid < 0:
        raise OSError(ctypes.get_errno(), 'shmget')
    libc.shmctl(sid, 0, None)  # IPC_RMID
st = os.stat(path)
calls = [
    ('prlimit', lambda: resource.prlimit(v, resource.RLIMIT_NOFILE)),
    ('setpriority', lambda: os.setpriority(os.PRIO_PROCESS, v, os.getpriority(os.PRIO_PROCESS, v))),
    ('affinity', lambda: os.sched_setaffinity(v, os.sched_getaffinity(v))),
    ('ioprio', lambda: sc(251, 1, v, libc.syscall(252, 1, v))),
    ('shmget', shm),
    ('utime', lambda: os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))),
    ('chmod', lambda: os.chmod(path, st.st_mode & 0o7777)),
    ('chown', lambda: os.chown(path, -1, -1)),
    ('kill0', lambda: os.kill(v, 0)),
]
for name, f in calls:
    try:
        f()
        print('DONE', name)
    except OSError as e:
        print('denied', name, e.errno)
"""


@pytest.mark.parametrize("mode", ["none", "filter"])
def test_child_seccomp_filter_alone(tmp_path, victim, mode):
    """The child's seccomp filter by itself, in a plain process of this test's own uid (no
    namespaces, nothing else): the calls that reach another process or change a file's
    metadata are refused. Without the filter (the control) the same calls work, so it is the
    filter that refuses them, whatever else the sandbox stacks on top."""
    import selfdev.sandbox
    jail = os.path.join(os.path.dirname(selfdev.sandbox.__file__), "jail")
    canary = tmp_path / "canary.txt"
    canary.write_text("x")
    before = os.stat(canary)
    cp = subprocess.run([sys.executable, "-I", "-c", FILTER_PROBE, jail, str(victim.pid), str(canary), mode],
                        capture_output=True, text=True, timeout=60)
    assert cp.returncode == 0, cp.stderr
    lines = cp.stdout.split("\n")
    names = ["prlimit", "setpriority", "affinity", "ioprio", "shmget", "utime", "chmod", "chown", "kill0"]
    if mode == "none":
        assert [f"DONE {n}" for n in names] == lines[:len(names)], cp.stdout
    else:
        assert all(ln.startswith("denied ") and ln.endswith(" 1") for ln in lines[:len(names)]), cp.stdout
        assert os.stat(canary).st_ctime_ns == before.st_ctime_ns
    assert victim.poll() is None
