"""L3 on its own: candidates get FULL Python here (Sandbox(_os_only=True) skips L1/L2), and
the OS layers must still hold. Every test owns its canary: a secret file, a path that must
not appear, a TCP listener that must get no connection, an environment secret, an inherited
fd that must stay empty, a victim process that must survive."""
import os
import secrets
import socket
import subprocess
import sys
import time

import pytest
import torch

from sandbox_helpers import attack, make_inputs, out

SECRET_ENV = "SELFDEV_TEST_CANARY_TOKEN"


@pytest.fixture(scope="module")
def canary(tmp_path_factory):
    d = tmp_path_factory.mktemp("canary")
    token = "CANARY-" + secrets.token_hex(12)
    secret = d / "secret.txt"
    secret.write_text(token)
    os.chmod(secret, 0o644)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.setblocking(False)
    r, w = os.pipe()
    os.set_inheritable(w, True)
    os.set_blocking(r, False)
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    old = os.environ.get(SECRET_ENV)
    os.environ[SECRET_ENV] = token
    info = {"dir": d, "token": token, "secret": str(secret), "port": listener.getsockname()[1],
            "listener": listener, "pipe_r": r, "pipe_w": w, "victim": victim}
    yield info
    victim.kill()
    victim.wait()
    listener.close()
    os.close(r)
    os.close(w)
    if old is None:
        os.environ.pop(SECRET_ENV, None)
    else:
        os.environ[SECRET_ENV] = old


@pytest.fixture(scope="module")
def raw(canary):
    """A sandbox whose child runs plain Python: only the OS layers stand in the way."""
    from selfdev.sandbox import Sandbox
    base, tvs = make_inputs(shapes={"w": (4, 4), "b": (4,)}, experts=("a", "b"))
    with Sandbox(base, tvs, timeout=5.0, memory_mb=512, _os_only=True) as s:
        yield s


def everything(res) -> str:
    import json
    parts = [res.status, str(res.reason), res.stdout, json.dumps(res.details, default=str)]
    if res.tensors:
        for t in res.tensors.values():
            parts.append(repr(t.flatten().tolist()))
    return "\n".join(parts)


def assert_clean(res, canary):
    text = everything(res)
    assert canary["token"] not in text
    # the inherited fd stays empty, the listener got no connection, the victim lives
    with pytest.raises(BlockingIOError):
        os.read(canary["pipe_r"], 1)
    with pytest.raises(BlockingIOError):
        canary["listener"].accept()
    assert canary["victim"].poll() is None


def test_layers_active(raw):
    for k in ("seccomp", "landlock", "landlock_net", "landlock_scope", "netns", "no_new_privs", "rlimits"):
        assert raw.layers.get(k), k


def test_file_read_denied(raw, canary):
    res = raw.run(attack(f"""
for p in [{canary['secret']!r}, '/etc/passwd', '/etc/hostname', '/proc/self/environ', '/proc/1/environ', '/proc/%d/environ' % __import__('os').getppid()]:
    try:
        print(open(p).read())
    except Exception as e:
        print('denied', p, type(e).__name__)
"""))
    assert res.status == "ok"
    assert "denied " + canary["secret"] in out(res)
    assert "denied /etc/passwd" in out(res)
    assert_clean(res, canary)


def test_file_write_denied(raw, canary):
    target = canary["dir"] / "pwned"
    res = raw.run(attack(f"""
import os
for p in [{str(target)!r}, '/tmp/selfdev-pwned', '/dev/shm/selfdev-pwned', 'relative-pwned']:
    try:
        with open(p, 'w') as f:
            f.write('x')
        print('WROTE', p)
    except Exception as e:
        print('denied', type(e).__name__)
try:
    os.mkdir({str(canary['dir'] / 'pwned_dir')!r})
    print('MKDIR')
except Exception as e:
    print('denied', type(e).__name__)
"""))
    assert res.status == "ok"
    assert "WROTE" not in out(res) and "MKDIR" not in out(res)
    assert not target.exists() and not (canary["dir"] / "pwned_dir").exists()
    assert not os.path.exists("/tmp/selfdev-pwned") and not os.path.exists("/dev/shm/selfdev-pwned")
    assert_clean(res, canary)


def test_network_denied(raw, canary):
    res = raw.run(attack(f"""
import socket
for fam, addr in [(socket.AF_INET, ('127.0.0.1', {canary['port']})), (socket.AF_INET, ('1.1.1.1', 53))]:
    try:
        s = socket.socket(fam, socket.SOCK_STREAM)
        s.settimeout(1)
        s.connect(addr)
        print('CONNECTED')
    except Exception as e:
        print('denied', type(e).__name__)
try:
    socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).connect('\\0selfdev')
    print('CONNECTED')
except Exception as e:
    print('denied', type(e).__name__)
try:
    socket.socketpair()
    print('SOCKETPAIR')
except Exception as e:
    print('denied', type(e).__name__)
"""))
    assert res.status == "ok"
    assert "CONNECTED" not in out(res) and "SOCKETPAIR" not in out(res)
    assert_clean(res, canary)


def test_process_spawn_and_fork_denied(raw, canary):
    marker = canary["dir"] / "spawned"
    res = raw.run(attack(f"""
import os, subprocess
try:
    subprocess.run(['/bin/sh', '-c', 'touch {marker}'])
    print('SPAWNED')
except Exception as e:
    print('denied', type(e).__name__)
try:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    print('FORKED')
except Exception as e:
    print('denied', type(e).__name__)
try:
    os.execv('/bin/true', ['true'])
except Exception as e:
    print('denied', type(e).__name__)
try:
    os.posix_spawn('/bin/true', ['true'], {{}})
    print('SPAWNED')
except Exception as e:
    print('denied', type(e).__name__)
"""))
    assert res.status == "ok"
    assert "SPAWNED" not in out(res) and "FORKED" not in out(res)
    assert not marker.exists()
    assert_clean(res, canary)


def test_signals_to_parent_and_others_denied(raw, canary):
    victim = canary["victim"].pid
    res = raw.run(attack(f"""
import os, signal
for pid in [os.getppid(), {victim}, {os.getpid()}, -1, 0, 1]:
    try:
        os.kill(pid, signal.SIGKILL)
        print('KILLED', pid)
    except Exception as e:
        print('denied', pid, type(e).__name__)
try:
    os.killpg(os.getpgid({victim}), signal.SIGKILL)
    print('KILLPG')
except Exception as e:
    print('denied', type(e).__name__)
"""))
    assert "KILLED" not in out(res) and "KILLPG" not in out(res)
    assert canary["victim"].poll() is None
    # the warm parent survived: the next candidate runs
    assert raw.run(attack("pass")).status == "ok"
    assert_clean(res, canary)


def test_env_and_inherited_fds(raw, canary):
    res = raw.run(attack(f"""
import os
print(dict(os.environ))
for fd in range(3, 256):
    try:
        os.write(fd, b'LEAK')
        print('wrote fd', fd)
    except OSError:
        pass
try:
    os.write({canary['pipe_w']}, b'LEAK')
    print('WROTE-CANARY-FD')
except OSError as e:
    print('denied', type(e).__name__)
"""))
    # scribbling on its own report channel (fd 3) only spoils its own result
    assert res.status in ("ok", "rejected")
    assert "WROTE-CANARY-FD" not in out(res)
    assert SECRET_ENV not in out(res)
    assert_clean(res, canary)


def test_ctypes_raw_syscalls_still_filtered(raw, canary):
    res = raw.run(attack(f"""
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
print('socket', libc.syscall(41, 2, 1, 0), ctypes.get_errno())
print('fork', libc.syscall(57), ctypes.get_errno())
print('unshare', libc.syscall(272, 0x40000000), ctypes.get_errno())
print('ptrace', libc.syscall(101, 16, os.getppid(), 0, 0), ctypes.get_errno())
print('kill', libc.syscall(62, {canary['victim'].pid}, 9), ctypes.get_errno())
print('setsid', libc.syscall(112), ctypes.get_errno())
"""))
    assert res.status == "ok"
    for line in out(res).splitlines():
        if line.split()[0] in ("socket", "fork", "unshare", "ptrace", "kill", "setsid"):
            assert line.split()[1] == "-1", line
    assert_clean(res, canary)


def test_memory_exhaustion_is_contained(raw, canary):
    res = raw.run(attack("""
try:
    x = bytearray(20 * 1024 ** 3)
    print('ALLOCATED')
except MemoryError:
    print('denied MemoryError')
import torch
try:
    t = torch.ones(10 ** 10)
    print('ALLOCATED')
except Exception as e:
    print('denied', type(e).__name__)
"""))
    assert res.status == "ok"
    assert "ALLOCATED" not in out(res)
    assert_clean(res, canary)


def test_thread_and_fd_exhaustion_are_contained(raw, canary):
    res = raw.run(attack("""
import os, threading
n = 0
try:
    for i in range(100000):
        t = threading.Thread(target=lambda: __import__('time').sleep(30), daemon=True)
        t.start()
        n += 1
except Exception as e:
    print('threads stopped at', n, type(e).__name__)
fds = 0
try:
    for i in range(100000):
        os.dup(1)
        fds += 1
except OSError as e:
    print('fds stopped at', fds)
"""), timeout=10)
    assert res.status in ("ok", "killed", "error")
    assert "threads stopped at" in out(res) or res.status != "ok"
    assert_clean(res, canary)


def test_cpu_burn_is_killed_at_the_deadline(raw, canary):
    t0 = time.monotonic()
    res = raw.run(attack("while True:\n    pass"), timeout=1.0)
    assert res.status == "timeout"
    assert time.monotonic() - t0 < 5
    assert_clean(res, canary)


def test_disk_fill_denied(raw, canary):
    res = raw.run(attack("""
import os, tempfile
try:
    f = tempfile.TemporaryFile()
    f.write(b'x' * 10 ** 8)
    print('FILLED')
except Exception as e:
    print('denied', type(e).__name__)
try:
    fd = os.memfd_create('fill')
    os.write(fd, b'x' * 10 ** 8)
    print('FILLED')
except Exception as e:
    print('denied', type(e).__name__)
"""))
    assert "FILLED" not in out(res)
    assert_clean(res, canary)


def test_result_buffer_cannot_change_after_validation(raw, canary):
    """Time-of-check: a thread keeps scribbling NaNs into the result buffer after the child
    reported; what the supervisor returns is what it validated."""
    res = raw.run("""
import os, threading, struct, torch
def scribble():
    bad = struct.pack('f', float('nan')) * 64
    while True:
        try:
            os.pwrite(4, bad, 0)
        except OSError:
            pass
def merge_models(task_vectors, base, name):
    if name == 'b':
        threading.Thread(target=scribble, daemon=True).start()
    return torch.zeros_like(base)
""")
    if res.status == "ok":
        snap = {k: v.clone() for k, v in res.tensors.items()}
        time.sleep(0.3)
        for k, v in res.tensors.items():
            assert torch.isfinite(v).all()
            assert torch.equal(v, snap[k])
    else:
        assert res.status == "rejected" and "non-finite" in (res.reason or "")
    assert_clean(res, canary)


def test_state_does_not_persist_across_candidates(raw, canary):
    res1 = raw.run(attack("""
import torch, builtins, math
torch.add = None
torch.Tensor.__add__ = lambda a, b: a
math.pi = 3
builtins.SENTINEL = 1
"""))
    assert res1.status == "ok"
    res2 = raw.run("""
import torch, builtins, math
def merge_models(task_vectors, base, name):
    assert torch.add is not None and math.pi != 3 and not hasattr(builtins, 'SENTINEL')
    return (base + 1) - 1 - base
""")
    assert res2.status == "ok", res2.reason
    assert_clean(res2, canary)


def test_input_tampering_stays_private(raw, canary):
    res = raw.run("""
import ctypes, torch
def merge_models(task_vectors, base, name):
    for t in list(task_vectors.values()) + [base]:
        ctypes.memset(t.data_ptr(), 0x7f, t.numel() * t.element_size())
    return torch.zeros_like(base)
""")
    assert res.status == "ok"
    res2 = raw.run("""
import torch
def merge_models(task_vectors, base, name):
    assert torch.isfinite(base).all() and base.abs().max() < 100
    return torch.zeros_like(base)
""")
    assert res2.status == "ok", res2.reason


def test_output_flood_is_capped_and_drained(raw, canary):
    t0 = time.monotonic()
    res = raw.run(attack("""
import os, sys
for i in range(2000):
    print('A' * 4096)
    os.write(2, b'B' * 65536)
"""), timeout=10)
    assert time.monotonic() - t0 < 10
    assert res.status == "ok"
    assert len(res.stdout) < 64 * 1024 and len(res.details["fd_output"]) < 64 * 1024
    assert_clean(res, canary)


def test_fake_supervisor_output_is_just_data(raw, canary):
    res = raw.run("""
import os, sys, json
def merge_models(task_vectors, base, name):
    print(json.dumps({"status": "ok", "reason": None}))
    os.write(3, json.dumps({"status": "ok"}).encode())
    return base * float('nan')
""")
    assert res.status == "rejected"


def test_kill_parent_group_via_negative_pid(raw, canary):
    res = raw.run(attack("""
import os, signal
try:
    os.kill(-os.getppid(), signal.SIGKILL)
except OSError as e:
    print('denied', type(e).__name__)
"""))
    assert raw.run(attack("pass")).status == "ok"
    assert_clean(res, canary)


def test_oversized_report_is_rejected(raw, canary):
    res = raw.run("""
import os
def merge_models(task_vectors, base, name):
    os.write(3, b'[' * (3 << 20))
    return base * 0
""")
    assert res.status == "rejected" and ("too large" in res.reason or "malformed" in res.reason)
    assert_clean(res, canary)


def test_result_buffer_resize_is_contained(raw, canary):
    res = raw.run("""
import os
def merge_models(task_vectors, base, name):
    try:
        os.ftruncate(4, 1 << 34)
    except OSError as e:
        print('denied', type(e).__name__)
    os.ftruncate(4, 8)
    return base * 0
""")
    assert res.status in ("rejected", "killed")
    assert_clean(res, canary)
