"""The trusted side: Sandbox (warm parent management, per-candidate runs, L4 validation)."""
from __future__ import annotations

import collections
import ctypes
import fcntl
import json
import marshal
import math
import mmap
import os
import select
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Iterable

import torch

from selfdev.sandbox import _proto
from selfdev.sandbox._policy import screen_and_compile

# The folder that holds the ``selfdev`` package (site-packages, or the checkout of an editable
# install): the warm parent runs with ``-I``, so it is given this one path and nothing else.
IMPORT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(sys.modules["selfdev"].__file__)))

ALL_LAYERS = ("rlimits", "no_new_privs", "userns", "netns", "ipcns", "seccomp", "landlock",
              "landlock_net", "landlock_scope")
# the strictest set that works on this project's machine kind (kernel 6.18, rootless userns)
DEFAULT_REQUIRE = ("rlimits", "no_new_privs", "netns", "seccomp", "landlock", "landlock_net",
                   "landlock_scope")

Parent_POOL = 2  # must match _worker.Parent.POOL
STDOUT_CAP = 16 * 1024
STDERR_CAP = 16 * 1024
STATUS_CAP = 1 << 20
REASON_CAP = 1000

DTYPE_NAMES = {
    torch.float32: "float32", torch.float64: "float64", torch.float16: "float16",
    torch.bfloat16: "bfloat16", torch.int8: "int8", torch.int16: "int16", torch.int32: "int32",
    torch.int64: "int64", torch.uint8: "uint8", torch.bool: "bool",
    torch.complex64: "complex64", torch.complex128: "complex128",
}


class SandboxUnavailable(RuntimeError):
    """A required isolation layer is not available here (the sandbox fails closed)."""


@dataclass
class SandboxResult:
    status: str  # "ok" | "rejected" | "error" | "timeout" | "killed"
    reason: str | None
    tensors: dict[str, torch.Tensor] | None
    stdout: str
    duration_ms: float
    details: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_json(self) -> dict:
        return {"status": self.status, "reason": self.reason, "duration_ms": round(self.duration_ms, 3),
                "stdout": self.stdout, "details": self.details}


def clean_text(s: str, cap: int) -> str:
    """Untrusted text: strip control characters (keep \\n and \\t) and cap its length."""
    if not isinstance(s, str):
        s = str(s)
    extra = len(s) - cap
    if extra > 0:
        s = s[:cap]
    s = "".join(ch if (ch in "\n\t" or (ord(ch) >= 32 and ord(ch) != 127 and not 0x80 <= ord(ch) < 0xA0)) else "\ufffd" for ch in s)
    if extra > 0:
        s += f"\n... [{extra} more characters dropped]"
    return s


def _tensor_bytes(t: torch.Tensor) -> memoryview:
    n = t.numel() * t.element_size()
    if n == 0:
        return memoryview(b"")
    buf = (ctypes.c_char * n).from_address(t.data_ptr())
    return memoryview(buf).cast("B")


_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]


class _Unmap:
    __slots__ = ("addr", "size")

    def __init__(self, addr: int, size: int):
        self.addr, self.size = addr, size

    def __del__(self):
        _libc.munmap(self.addr, self.size)


def _PrivateMap(fd: int, size: int):
    """A writable MAP_PRIVATE mapping of ``fd`` as a ctypes buffer that unmaps itself when the
    last tensor built on it is gone (Python's mmap would keep a duplicate fd open)."""
    size = max(size, 1)
    addr = _libc.mmap(None, size, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_PRIVATE, fd, 0)
    if addr is None or addr == ctypes.c_void_p(-1).value:
        raise OSError(ctypes.get_errno(), "mmap of the result buffer failed")
    buf = type("_ResultBuffer", (ctypes.c_char * size,), {})
    obj = buf.from_address(addr)
    obj._owner = _Unmap(addr, size)
    return obj


def _all_finite(t: torch.Tensor) -> bool:
    """One reduction pass: min/max propagate NaN and expose +-inf (much cheaper than
    materialising isfinite() for 100M-element results)."""
    if t.is_complex():
        return bool(torch.isfinite(t).all())
    lo, hi = torch.aminmax(t)
    return bool(torch.isfinite(lo)) and bool(torch.isfinite(hi))


def _signame(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def _minimal_env(threads: int) -> dict:
    t = "1"  # the warm parent is single-threaded; each child calls torch.set_num_threads(threads)
    return {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
            "OMP_NUM_THREADS": t, "MKL_NUM_THREADS": t, "OPENBLAS_NUM_THREADS": t,
            "TORCH_SHOW_CPP_STACKTRACES": "0"}


class Sandbox:
    """A warm, clean parent process holding the inputs; one forked child per candidate."""

    def __init__(self, base: dict[str, torch.Tensor], task_vectors: dict[str, dict[str, torch.Tensor]], *,
                 names: list[str] | None = None, timeout: float = 10.0, memory_mb: int = 4096,
                 require: Iterable[str] = DEFAULT_REQUIRE, threads: int = 1, start_timeout: float = 120.0,
                 _os_only: bool = False, _disable_layers: Iterable[str] = ()):
        if not isinstance(base, dict) or not base:
            raise ValueError("base must be a non-empty dict of parameter name -> tensor")
        if not isinstance(task_vectors, dict) or not task_vectors:
            raise ValueError("task_vectors must be a non-empty dict of expert name -> {parameter name -> tensor}")
        self.names = list(base.keys()) if names is None else list(names)
        if len(set(self.names)) != len(self.names):
            raise ValueError("names contains duplicates")
        self.experts = list(task_vectors.keys())
        self.timeout = float(timeout)
        self.memory_mb = int(memory_mb)
        self.threads = max(1, int(threads))
        self.require = tuple(require)
        # test hook: run candidates as plain Python (no L1/L2) to exercise the OS layers alone
        self._os_only = bool(_os_only)
        # test hook: pretend these layers are missing on this kernel (to test failing closed)
        self._disable = [str(x) for x in _disable_layers]
        unknown = [r for r in self.require if r not in ALL_LAYERS]
        if unknown:
            raise ValueError(f"unknown sandbox layers in require: {unknown} (known: {list(ALL_LAYERS)})")
        self.meta: list[tuple[str, torch.dtype, tuple[int, ...]]] = []
        for n in self.names:
            if not isinstance(n, str):
                raise ValueError(f"parameter names must be str, got {type(n).__name__}")
            if n not in base:
                raise ValueError(f"parameter {n!r} is not in base")
            b = base[n]
            self._check_input(b, f"base[{n!r}]")
            for e in self.experts:
                if not isinstance(e, str):
                    raise ValueError("expert names must be str")
                tv = task_vectors[e]
                if n not in tv:
                    raise ValueError(f"expert {e!r} has no task vector for {n!r}")
                self._check_input(tv[n], f"task_vectors[{e!r}][{n!r}]")
                if tuple(tv[n].shape) != tuple(b.shape):
                    raise ValueError(f"task_vectors[{e!r}][{n!r}] has shape {tuple(tv[n].shape)}; base has {tuple(b.shape)}")
            self.meta.append((n, b.dtype, tuple(b.shape)))
        self.offsets: list[int] = []
        off = 0
        for _n, dt, shape in self.meta:
            off = (off + 63) // 64 * 64
            self.offsets.append(off)
            off += math.prod(shape) * dt.itemsize
        self.result_bytes = off
        self._lock = threading.RLock()
        self._owner_pid = os.getpid()
        self._proc: subprocess.Popen | None = None
        self._sock: socket.socket | None = None
        self._inputs_fd: int | None = None
        self._unreaped: set[int] = set()
        self._spares: collections.deque = collections.deque()
        self.layers: dict = {}
        self.parent_pid: int | None = None
        self._start_timeout = start_timeout
        self._build_inputs(base, task_vectors)
        try:
            self._start()
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _check_input(t, what: str) -> None:
        if type(t) is not torch.Tensor and not isinstance(t, torch.Tensor):
            raise ValueError(f"{what} is not a torch.Tensor")
        if t.layout != torch.strided or t.device.type != "cpu":
            raise ValueError(f"{what} must be a dense CPU tensor")
        if t.dtype not in DTYPE_NAMES:
            raise ValueError(f"{what} has unsupported dtype {t.dtype}")

    # ------------------------------------------------------------------ setup
    def _build_inputs(self, base, task_vectors) -> None:
        entries = []
        tensors = []
        off = 0
        for n in self.names:
            items = [("base", None, base[n])] + [("tv", e, task_vectors[e][n]) for e in self.experts]
            for kind, e, t in items:
                t = t.detach().contiguous()
                nbytes = t.numel() * t.element_size()
                off = (off + 63) // 64 * 64
                ent = {"kind": kind, "name": n, "dtype": DTYPE_NAMES[t.dtype], "shape": list(t.shape), "offset": off}
                if e is not None:
                    ent["expert"] = e
                entries.append(ent)
                tensors.append((off, t))
                off += nbytes
        rel = [e["offset"] for e in entries]
        data_start = 64
        while True:  # absolute offsets in the header; grow the header slot until it fits
            for ent, r in zip(entries, rel):
                ent["offset"] = data_start + r
            hdr = json.dumps({"names": self.names, "experts": self.experts, "tensors": entries,
                              "result_offsets": self.offsets}).encode()
            need = (8 + len(hdr) + 63) // 64 * 64
            if need <= data_start:
                break
            data_start = need
        fd = os.memfd_create("selfdev-sandbox-inputs", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.ftruncate(fd, data_start + off)
            os.pwrite(fd, len(hdr).to_bytes(8, "little") + hdr, 0)
            for o, t in tensors:
                view = _tensor_bytes(t)
                done = 0
                while done < len(view):
                    done += os.pwrite(fd, view[done:], data_start + o + done)
            seals = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
        except BaseException:
            os.close(fd)
            raise
        self._inputs_fd = fd

    def _start(self) -> None:
        parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        boot = ("import sys; sys.path.insert(0, %r); from selfdev.sandbox._worker import main; main(%d)"
                % (IMPORT_ROOT, child_sock.fileno()))
        log = os.environ.get("SELFDEV_SANDBOX_LOG")  # operator debugging: the warm parent's stderr
        err = open(log, "ab") if log else subprocess.DEVNULL
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-I", "-c", boot], pass_fds=(child_sock.fileno(),), close_fds=True,
                env=_minimal_env(self.threads), cwd="/", stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
        finally:
            child_sock.close()
            if log:
                err.close()
        self._sock = parent_sock
        cfg = {"threads": self.threads, "memory_mb": self.memory_mb, "require": list(self.require),
               "disable": self._disable}
        _proto.send(parent_sock, cfg, [self._inputs_fd])
        parent_sock.settimeout(self._start_timeout)
        try:
            msg, _ = _proto.recv(parent_sock)
        except (socket.timeout, OSError) as e:
            raise SandboxUnavailable(f"sandbox warm parent did not start: {e}")
        finally:
            parent_sock.settimeout(None)
        if msg is None:
            rc = self._proc.poll()
            raise SandboxUnavailable(f"sandbox warm parent exited during start-up (exit code {rc})")
        if not msg.get("ready"):
            raise SandboxUnavailable(f"sandbox warm parent failed to start: {msg.get('error')}")
        self.layers = msg.get("layers", {})
        self.parent_pid = msg.get("pid")
        if msg.get("missing"):
            raise SandboxUnavailable(
                f"required sandbox layers are not available on this kernel: {', '.join(msg['missing'])} "
                f"(active: {', '.join(k for k in ALL_LAYERS if self.layers.get(k)) or 'none'}); "
                "refusing to run candidates. Run `selfdev sandbox doctor` for details, or pass a smaller "
                "`require` if you accept weaker isolation.")

    def _restart(self) -> None:
        self._kill_parent()
        self._start()

    def _kill_parent(self) -> None:
        self._unreaped = set()
        while self._spares:
            self._spares.popleft()[1].close()
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
            self._sock = None
        p = self._proc
        if os.getpid() != self._owner_pid:
            # we are a fork of the process that owns this warm parent: drop our copies of its
            # descriptors, never kill it (it still serves the original process)
            self._proc = None
            return
        if p is not None and p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except OSError:
                pass
            try:
                p.kill()
            except OSError:
                pass
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self._proc = None

    def close(self) -> None:
        with self._lock:
            self._kill_parent()
            if self._inputs_fd is not None:
                try:
                    os.close(self._inputs_fd)
                except OSError:
                    pass
                self._inputs_fd = None

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    # ------------------------------------------------------------------ run
    def run(self, code: str, timeout: float | None = None) -> SandboxResult:
        t0 = time.perf_counter()
        timeout = self.timeout if timeout is None else float(timeout)
        sr, co = screen_and_compile(code) if not self._os_only else (None, None)
        if sr is not None and not sr.ok:
            return SandboxResult("rejected", sr.reason, None, "", (time.perf_counter() - t0) * 1e3,
                                 {"stage": "screen"})
        with self._lock:
            if self._inputs_fd is None:
                raise RuntimeError("Sandbox is closed")
            if os.getpid() != self._owner_pid:  # used after a fork of the owner: start our own
                self._kill_parent()
                self._owner_pid = os.getpid()
            if self._proc is None or self._proc.poll() is not None or self._sock is None:
                self._restart()
            self._drain_ctl()
            if self._proc is None or self._sock is None:
                self._restart()
            # the child gets the code object compiled (with RestrictedPython) right here, so it
            # does not pay for parsing again; it is marshalled trusted -> untrusted only
            blob = marshal.dumps(co) if co is not None else code.encode("utf-8", "surrogatepass")
            res = self._run_locked(blob, co is not None, timeout, t0)
        if sr is not None:
            res.details.setdefault("ast_hash", sr.ast_hash)
        return res

    def _take_spare(self) -> tuple[int, socket.socket]:
        """An idle pre-forked child and its private channel (waiting for one if needed)."""
        end = time.monotonic() + self._start_timeout
        while not self._spares:
            if self._sock is None:
                raise SandboxUnavailable("sandbox parent process is gone")
            r, _, _ = select.select([self._sock], [], [], max(0.0, end - time.monotonic()))
            if not r:
                raise SandboxUnavailable("sandbox parent process did not provide a child in time")
            self._recv_ctl(None)
        return self._spares.popleft()

    def _run_locked(self, blob: bytes, compiled: bool, timeout: float, t0: float,
                    attempt: int = 0) -> SandboxResult:
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        st_r, st_w = os.pipe2(os.O_CLOEXEC)
        res_fd = os.memfd_create("selfdev-sandbox-result", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        # the candidate travels in its own sealed memfd (no size limit on the control packet)
        code_fd = os.memfd_create("selfdev-sandbox-code", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        fds_local = [out_r, st_r, res_fd, code_fd]
        try:
            os.ftruncate(res_fd, self.result_bytes)
            os.write(code_fd, blob)
            fcntl.fcntl(code_fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SHRINK |
                        fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL)
            # "marshal": a code object compiled (with RestrictedPython) by the supervisor's own
            # screen, marshalled trusted -> untrusted only; the child does not parse again
            msg = {"op": "run", "timeout": timeout, "result_bytes": max(self.result_bytes, 1),
                   "os_only": self._os_only, "code_kind": "marshal" if compiled else "source"}
            pid = None
            for _ in range(2 * Parent_POOL + 2):
                try:
                    pid, chan = self._take_spare()
                except SandboxUnavailable:
                    if attempt:
                        raise
                    os.close(out_w)
                    os.close(st_w)
                    self._restart()
                    return self._run_locked(blob, compiled, timeout, t0, attempt + 1)
                try:
                    _proto.send(chan, msg, [out_w, st_w, res_fd, code_fd])
                except OSError:
                    pid = None  # that spare died idle; its exit notice will come
                    continue
                finally:
                    chan.close()
                break
            os.close(out_w)
            os.close(st_w)
            if pid is None:
                raise SandboxUnavailable("no usable sandbox child")
            try:
                _proto.send(self._sock, {"op": "used"})  # fork a replacement off the critical path
            except OSError:
                pass
            return self._supervise(timeout, t0, out_r, st_r, res_fd, pid)
        finally:
            for fd in fds_local:
                try:
                    os.close(fd)
                except OSError:
                    pass

    def _recv_raw(self):
        """One control message and its fds, or None (fds closed) when the channel broke."""
        try:
            m, fds = _proto.recv(self._sock)
        except (OSError, ValueError):
            m, fds = None, []
        if m is None:
            for fd in fds:
                os.close(fd)
            return None
        return m, fds

    def _recv_ctl(self, current: int | None):
        """Receive and process one control message (blocking)."""
        got = self._recv_raw()
        if got is None:
            self._kill_parent()
            return None
        return self._handle_ctl(*got, current)

    def _handle_ctl(self, m: dict, fds: list[int], current: int | None):
        """Process one control message; returns the exit info if it concerns ``current``."""
        if "spare" in m and len(fds) == 1:
            pid = int(m["spare"])
            self._spares.append((pid, socket.socket(fileno=fds[0])))
            self._unreaped.add(pid)
            return None
        for fd in fds:
            os.close(fd)
        if "exit" in m:
            pid = int(m.get("pid", -1))
            try:  # the child is dead: let the parent reap it (never before: pid reuse)
                _proto.send(self._sock, {"op": "reap", "pid": pid})
            except OSError:
                pass
            self._unreaped.discard(pid)
            for sp in list(self._spares):
                if sp[0] == pid:
                    self._spares.remove(sp)
                    sp[1].close()
            if pid == current:
                return m["exit"]
        return None

    def _drain_ctl(self) -> None:
        """Collect notices (spares, exits of earlier children) without blocking."""
        while self._sock is not None:
            r, _, _ = select.select([self._sock], [], [], 0)
            if not r:
                return
            self._recv_ctl(None)

    def _supervise(self, timeout, t0, out_r, st_r, res_fd, pid) -> SandboxResult:
        sel = selectors.DefaultSelector()
        os.set_blocking(out_r, False)
        os.set_blocking(st_r, False)
        sel.register(out_r, selectors.EVENT_READ, "out")
        sel.register(st_r, selectors.EVENT_READ, "st")
        sel.register(self._sock, selectors.EVENT_READ, "ctl")
        out_buf = bytearray()
        out_dropped = 0
        st_buf = bytearray()
        st_over = False
        exit_info = None
        timed_out = False
        parent_broken = False
        status_done = False
        deadline = time.monotonic() + timeout + 0.25
        grace = None  # short wait for the remaining pipe output once the status is in
        hard_deadline = None
        open_pipes = {"out", "st"}
        try:
            while True:
                now = time.monotonic()
                if exit_info is not None and not open_pipes:
                    break
                if status_done and ("out" not in open_pipes or (grace is not None and now >= grace)):
                    break
                if not timed_out and exit_info is None and not status_done and now >= deadline:
                    timed_out = True
                    if pid is not None:
                        self._kill_child(pid)
                    hard_deadline = now + 5.0
                if hard_deadline is not None and now >= hard_deadline:
                    if exit_info is None:
                        parent_broken = True
                    break
                if "st" not in open_pipes and not status_done and exit_info is None and hard_deadline is None:
                    hard_deadline = now + 5.0  # status pipe closed without a status: wait for the exit
                if exit_info is not None and hard_deadline is None:
                    hard_deadline = now + 1.0  # drain what is left in the pipes
                waits = [deadline if not timed_out else hard_deadline]
                if hard_deadline is not None:
                    waits.append(hard_deadline)
                if grace is not None:
                    waits.append(grace)
                wait_until = min(w for w in waits if w is not None)
                events = sel.select(max(0.0, wait_until - now))
                for key, _ in events:
                    tag = key.data
                    if tag == "ctl":
                        got = self._recv_raw()
                        if got is None:
                            parent_broken = True
                            sel.unregister(key.fileobj)
                            hard_deadline = min(hard_deadline or 1e18, time.monotonic() + 0.5)
                            continue
                        ex = self._handle_ctl(*got, pid)
                        if ex is not None:
                            exit_info = ex
                    else:
                        fd = key.fd
                        try:
                            chunk = os.read(fd, 1 << 16)
                        except BlockingIOError:
                            continue
                        except OSError:
                            chunk = b""
                        if not chunk:
                            sel.unregister(fd)
                            open_pipes.discard(tag)
                            if tag == "st" and st_buf and not st_over:
                                status_done = True
                                grace = time.monotonic() + 0.2
                            continue
                        if tag == "out":
                            room = STDERR_CAP - len(out_buf)
                            if room > 0:
                                out_buf += chunk[:room]
                            out_dropped += max(0, len(chunk) - max(room, 0))
                        else:
                            room = STATUS_CAP - len(st_buf)
                            if room > 0:
                                st_buf += chunk[:room]
                            if len(chunk) > room:
                                st_over = True
        finally:
            sel.close()
        if pid is not None and exit_info is None:
            # done with it (status in, or timed out): kill the whole group. It is not reaped
            # until its exit notice has come back, so the pid cannot have been reused.
            self._kill_child(pid)
        if parent_broken:
            self._kill_parent()
        duration = (time.perf_counter() - t0) * 1e3
        stderr_text = clean_text(out_buf.decode("utf-8", "replace"), STDERR_CAP)
        if out_dropped:
            stderr_text += f"\n... [{out_dropped} more bytes dropped]"
        details: dict = {"fd_output": stderr_text, "pid": pid}
        if exit_info:
            details["exit_code"] = exit_info.get("code")
            if exit_info.get("signal"):
                details["signal"] = _signame(int(exit_info["signal"]))
        status_msg = None
        if st_buf and not st_over:
            try:
                status_msg = json.loads(st_buf.decode("utf-8"))
                if not isinstance(status_msg, dict):
                    status_msg = None
            except Exception:  # ValueError, RecursionError (deeply nested JSON), ...
                status_msg = None
        stdout = ""
        if status_msg is not None:
            stdout = clean_text(status_msg.get("stdout", "") or "", STDOUT_CAP)
            tm = status_msg.get("timings")
            if isinstance(tm, dict):
                details["child_timings"] = {k: float(tm[k]) for k in ("setup_ms", "run_ms")
                                            if isinstance(tm.get(k), (int, float))}
            if isinstance(status_msg.get("violations"), list):
                details["violations"] = [clean_text(str(v), 300) for v in status_msg["violations"][:20]]

        def result(status, reason, tensors=None):
            return SandboxResult(status, None if reason is None else clean_text(reason, REASON_CAP),
                                 tensors, stdout, duration, details)

        if timed_out:
            return result("timeout", f"candidate exceeded the {timeout:g} s wall-clock limit and was killed")
        if parent_broken and exit_info is None:
            return result("killed", "sandbox parent process died; candidate killed")
        if st_over:
            return result("rejected", "status message from the candidate process is too large")
        if status_msg is None and st_buf:
            return result("rejected", "malformed result report from the candidate process")
        if status_msg is None:
            sig = exit_info.get("signal") if exit_info else None
            if sig:
                why = {signal.SIGXCPU: "CPU time limit exceeded", signal.SIGXFSZ: "file size limit exceeded",
                       signal.SIGKILL: "killed (CPU hard limit or out of memory)", signal.SIGSEGV: "crashed (segmentation fault)",
                       signal.SIGSYS: "blocked system call", signal.SIGALRM: "wall-clock backstop",
                       signal.SIGBUS: "crashed (bus error)", signal.SIGABRT: "aborted"}.get(int(sig), "killed by a signal")
                return result("killed", f"candidate process {why} ({_signame(int(sig))})")
            code = exit_info.get("code") if exit_info else None
            return result("killed", f"candidate process exited (code {code}) without reporting a result")
        st = status_msg.get("status")
        if st == "unavailable":
            # the child refused to run the candidate because a layer could not be applied
            # (fail closed). Not raised: a report is untrusted, it must not be able to abort
            # the caller.
            details["sandbox_error"] = True
            return result("killed", "sandbox refused to run the candidate: " + str(status_msg.get("reason")))
        if st == "rejected":
            return result("rejected", str(status_msg.get("reason") or "rejected"))
        if st == "error":
            et = clean_text(str(status_msg.get("etype") or "Exception"), 100)
            details["exception_type"] = et
            line = status_msg.get("line")
            where = f" (line {int(line)})" if isinstance(line, int) else ""
            return result("error", f"{et}{where}: {status_msg.get('message', '')}")
        if st != "ok":
            return result("rejected", "malformed status from the candidate process")
        if exit_info is not None and exit_info.get("code") != 0:
            return result("killed", "candidate process did not exit cleanly after reporting")
        if not self._seal(res_fd, pid):
            return result("killed", "could not freeze the result buffer")
        tensors, reason = self._collect(res_fd)
        if reason:
            return result("rejected", reason)
        return result("ok", None, tensors)

    def _seal(self, res_fd: int, pid: int | None) -> bool:
        """Make the result buffer immutable before validating it (no time-of-check races)."""
        seals = fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL
        for _ in range(2):
            try:
                fcntl.fcntl(res_fd, fcntl.F_ADD_SEALS, seals)
                return True
            except OSError:
                # a writable shared mapping still exists: wait until the child is gone
                if pid is not None:
                    self._wait_exit(pid, 5.0)
        return False

    def _wait_exit(self, pid: int, limit: float) -> None:
        end = time.monotonic() + limit
        while pid in self._unreaped and self._sock is not None and time.monotonic() < end:
            r, _, _ = select.select([self._sock], [], [], max(0.0, end - time.monotonic()))
            if not r:
                break
            self._recv_ctl(None)

    def _kill_child(self, pid: int) -> None:
        # the child is never reaped before we acknowledge, so its pid/pgid cannot be reused
        for f in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
            try:
                f()
            except OSError:
                pass

    def _collect(self, res_fd: int):
        """Copy the sealed result buffer into private memory and rebuild the tensors."""
        size = os.fstat(res_fd).st_size
        if size != self.result_bytes:
            return None, f"result buffer has {size} bytes; expected {self.result_bytes}"
        # map the sealed (immutable) buffer copy-on-write: no copy, no fd kept open; the
        # returned tensors share this private mapping, never anything of the child's
        mm = _PrivateMap(res_fd, size)
        out: dict[str, torch.Tensor] = {}
        for (name, dt, shape), off in zip(self.meta, self.offsets):
            numel = math.prod(shape)
            if numel == 0:
                out[name] = torch.zeros(shape, dtype=dt)
                continue
            if dt == torch.bool:  # never let arbitrary bytes masquerade as bools
                t = torch.frombuffer(mm, dtype=torch.uint8, count=numel, offset=off).view(shape) != 0
            else:
                t = torch.frombuffer(mm, dtype=dt, count=numel, offset=off).view(shape)
            if (dt.is_floating_point or dt.is_complex) and not _all_finite(t):
                bad = int((~torch.isfinite(t)).sum())
                return None, f"result for {name!r} has {bad} non-finite value(s) (NaN/inf)"
            out[name] = t
        return out, None
