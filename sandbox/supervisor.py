"""The trusted side: Sandbox (warm parent management, per-candidate runs, L4 validation).

Per candidate: hand the code to an idle pre-forked child, pump what it sends back into a
bounded :class:`~selfdev.sandbox.verdict.ChildRecord` (``_pump``), map that to a result with
:func:`~selfdev.sandbox.verdict.verdict`, and only for an ``ok`` verdict seal and validate the
result buffer (``_take_result``).
"""
from __future__ import annotations

import collections
import ctypes
import dataclasses
import fcntl
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
from typing import Iterable

import torch

from selfdev.sandbox import protocol
from selfdev.sandbox.layers import DEFAULT_REQUIRE
from selfdev.sandbox.policy import screen_and_compile
from selfdev.sandbox.protocol import ALL_LAYERS
from selfdev.sandbox.verdict import OUTPUT_CAP, REASON_CAP, ChildRecord, SandboxResult, clean_text, verdict

# The folder that holds the ``selfdev`` package (site-packages, or the checkout of an editable
# install): the warm parent runs with ``-I``, so it is given this one path and nothing else.
IMPORT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(sys.modules["selfdev"].__file__)))
# what the warm parent runs (``%r``: IMPORT_ROOT, ``%d``: its end of the control socket)
BOOT = "import sys; sys.path.insert(0, %r); from selfdev.sandbox.jail.worker import main; main(%d)"

DTYPE_NAMES = {getattr(torch, name): name for name in protocol.DTYPES}  # dtype -> wire name


class SandboxUnavailable(RuntimeError):
    """A required isolation layer is not available here (the sandbox fails closed)."""


class _Capped:
    """The first ``cap`` bytes of a stream, and a count of the bytes after them."""

    __slots__ = ("cap", "data", "dropped")

    def __init__(self, cap: int):
        self.cap, self.data, self.dropped = cap, bytearray(), 0

    def add(self, chunk: bytes) -> None:
        room = self.cap - len(self.data)
        if room > 0:
            self.data += chunk[:room]
        self.dropped += max(0, len(chunk) - max(room, 0))


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


def _private_map(fd: int, size: int, prot: int = mmap.PROT_READ | mmap.PROT_WRITE,
                 flags: int = mmap.MAP_PRIVATE):
    """A writable MAP_PRIVATE mapping of ``fd`` as a ctypes buffer that unmaps itself when the
    last tensor built on it is gone (Python's mmap would keep a duplicate fd open). ``prot``
    and ``flags`` for other kinds (a stream's shared buffers)."""
    size = max(size, 1)
    addr = _libc.mmap(None, size, prot, flags, fd, 0)
    if addr is None or addr == ctypes.c_void_p(-1).value:
        raise OSError(ctypes.get_errno(), "mmap of a sandbox buffer failed")
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
        self._init_parent_state(start_timeout)
        self._build_inputs(base, task_vectors)
        try:
            self._start()
        except BaseException:
            self.close()
            raise

    def _init_parent_state(self, start_timeout: float) -> None:
        """What the warm parent's management needs (shared with ``StreamSandbox``)."""
        self._lock = threading.RLock()
        self._owner_pid = os.getpid()
        self._proc: subprocess.Popen | None = None
        self._sock: socket.socket | None = None
        self._inputs_fd: int | None = None
        self._unreaped: set[int] = set()
        self._spares: collections.deque = collections.deque()
        self.layers: dict = {}
        self.parent_pid: int | None = None
        self._tainted: str | None = None  # the warm parent said its state changed: replace it
        self.restarts: list[str] = []  # why the warm parent was replaced, oldest first
        # the pid of every child this supervisor handed a candidate to, oldest first (the
        # trusted record of children started: one per candidate, whatever the model size)
        self.children: list[int] = []
        self._start_timeout = start_timeout

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
            hdr = protocol.encode_header({"names": self.names, "experts": self.experts, "tensors": entries,
                                          "result_offsets": self.offsets})
            need = (len(hdr) + 63) // 64 * 64
            if need <= data_start:
                break
            data_start = need
        fd = os.memfd_create("selfdev-sandbox-inputs", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.ftruncate(fd, data_start + off)
            os.pwrite(fd, hdr, 0)
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
        boot = BOOT % (IMPORT_ROOT, child_sock.fileno())
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
        protocol.send(parent_sock, cfg, [self._inputs_fd])
        parent_sock.settimeout(self._start_timeout)
        try:
            msg, _ = protocol.recv(parent_sock)
        except (socket.timeout, OSError) as e:
            raise SandboxUnavailable(f"sandbox warm parent did not start: {e}")
        finally:
            parent_sock.settimeout(None)
        if msg is None:
            rc = self._proc.poll()
            raise SandboxUnavailable(f"sandbox warm parent exited during start-up (exit code {rc})")
        if not msg.get(protocol.READY):
            raise SandboxUnavailable(f"sandbox warm parent failed to start: {msg.get('error')}")
        self.layers = msg.get("layers", {})
        self.parent_pid = msg.get("pid")
        if msg.get("missing"):
            raise SandboxUnavailable(
                f"required sandbox layers are not available on this kernel: {', '.join(msg['missing'])} "
                f"(active: {', '.join(k for k in ALL_LAYERS if self.layers.get(k)) or 'none'}); "
                "refusing to run candidates. Run `selfdev sandbox doctor` for details, or pass a smaller "
                "`require` if you accept weaker isolation.")

    def _restart(self, why: str = "the warm parent is gone") -> None:
        self.restarts.append(why)
        del self.restarts[:-20]
        self._kill_parent()
        self._start()

    def _kill_parent(self) -> None:
        self._tainted = None
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
            self._prepare_to_run()
            # the child gets the code object compiled (with RestrictedPython) right here, so it
            # does not pay for parsing again; it is marshalled trusted -> untrusted only
            blob = marshal.dumps(co) if co is not None else code.encode("utf-8", "surrogatepass")
            res = self._run_locked(blob, timeout, t0)
        if sr is not None:
            res.details.setdefault("ast_hash", sr.ast_hash)
        return res

    def _take_spare(self) -> tuple[int, socket.socket]:
        """An idle pre-forked child and its private channel (waiting for one if needed)."""
        end = time.monotonic() + self._start_timeout
        while not self._spares:
            if self._sock is None:
                raise SandboxUnavailable("sandbox parent process is gone")
            if self._tainted:  # it forks no more; the caller restarts it
                raise SandboxUnavailable(f"sandbox parent was tampered with: {self._tainted}")
            r, _, _ = select.select([self._sock], [], [], max(0.0, end - time.monotonic()))
            if not r:
                raise SandboxUnavailable("sandbox parent process did not provide a child in time")
            self._recv_ctl(None)
        return self._spares.popleft()

    def _hand_to_spare(self, msg: dict, fds: list[int]) -> int:
        """Send ``msg`` and ``fds`` to an idle child; return its pid (recorded in
        ``children``). A warm parent that gives no child is replaced once; a spare that died
        idle is skipped (its exit notice will come)."""
        for attempt in (0, 1):
            for _ in range(2 * protocol.POOL + 2):
                try:
                    pid, chan = self._take_spare()
                except SandboxUnavailable:
                    if attempt:
                        raise
                    self._restart(f"warm parent tampered with: {self._tainted}" if self._tainted
                                  else "no idle child from the warm parent")
                    break
                try:
                    protocol.send(chan, msg, fds)
                except OSError:
                    continue
                finally:
                    chan.close()
                self.children.append(pid)
                try:
                    protocol.send(self._sock, {"op": protocol.OP_USED})  # fork a replacement off the critical path
                except OSError:
                    pass
                return pid
            else:
                break
        raise SandboxUnavailable("no usable sandbox child")

    def _prepare_to_run(self) -> None:
        """Between candidates: a live, untampered warm parent (started again if needed)."""
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
        elif self._tainted:  # between candidates: no running candidate is lost
            self._restart(f"warm parent tampered with: {self._tainted}")

    def _run_locked(self, blob: bytes, timeout: float, t0: float) -> SandboxResult:
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
            msg = {"op": protocol.OP_RUN, "timeout": timeout, "result_bytes": max(self.result_bytes, 1),
                   "os_only": self._os_only}
            try:
                pid = self._hand_to_spare(msg, [out_w, st_w, res_fd, code_fd])
            finally:
                os.close(out_w)
                os.close(st_w)
            res = verdict(self._pump(timeout, t0, out_r, st_r, pid))
            return self._take_result(res, res_fd, pid) if res.ok else res
        finally:
            for fd in fds_local:
                try:
                    os.close(fd)
                except OSError:
                    pass

    def _recv_raw(self):
        """One control message and its fds, or None (fds closed) when the channel broke."""
        try:
            m, fds = protocol.recv(self._sock)
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
        if protocol.SPARE in m and len(fds) == 1:
            pid = int(m[protocol.SPARE])
            self._spares.append((pid, socket.socket(fileno=fds[0])))
            self._unreaped.add(pid)
            return None
        for fd in fds:
            os.close(fd)
        if protocol.TAINTED in m:
            self._tainted = clean_text(str(m[protocol.TAINTED]), 200) or "state changed"
            return None
        if protocol.EXIT in m:
            pid = int(m.get("pid", -1))
            try:  # the child is dead: let the parent reap it (never before: pid reuse)
                protocol.send(self._sock, {"op": protocol.OP_REAP, "pid": pid})
            except OSError:
                pass
            self._unreaped.discard(pid)
            for sp in list(self._spares):
                if sp[0] == pid:
                    self._spares.remove(sp)
                    sp[1].close()
            if pid == current:
                return m[protocol.EXIT]
        return None

    def _drain_ctl(self) -> None:
        """Collect notices (spares, exits of earlier children) without blocking."""
        while self._sock is not None:
            r, _, _ = select.select([self._sock], [], [], 0)
            if not r:
                return
            self._recv_ctl(None)

    def _pump(self, timeout: float, t0: float, out_r: int, st_r: int, pid: int) -> ChildRecord:
        """Read what the child sends (output, report, its exit notice) until it is done or its
        deadline passes; kill it (and the warm parent, if that broke) and return the record.
        Reads are bounded and nothing read is interpreted here: that is :func:`verdict`'s job."""
        sel = selectors.DefaultSelector()
        os.set_blocking(out_r, False)
        os.set_blocking(st_r, False)
        sel.register(out_r, selectors.EVENT_READ, "out")
        sel.register(st_r, selectors.EVENT_READ, "st")
        sel.register(self._sock, selectors.EVENT_READ, "ctl")
        out = _Capped(OUTPUT_CAP)
        report = _Capped(protocol.MAX_REPORT)
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
                        continue
                    try:
                        chunk = os.read(key.fd, 1 << 16)
                    except BlockingIOError:
                        continue
                    except OSError:
                        chunk = b""
                    if not chunk:
                        sel.unregister(key.fd)
                        open_pipes.discard(tag)
                        if tag == "st" and report.data and not report.dropped:
                            status_done = True
                            grace = time.monotonic() + 0.2
                        continue
                    (out if tag == "out" else report).add(chunk)
        finally:
            sel.close()
        if exit_info is None:
            # done with it (status in, or timed out): kill the whole group. It is not reaped
            # until its exit notice has come back, so the pid cannot have been reused.
            self._kill_child(pid)
        if parent_broken:
            self._kill_parent()
        return ChildRecord(pid=pid, timeout=timeout, duration_ms=(time.perf_counter() - t0) * 1e3,
                           output=bytes(out.data), output_dropped=out.dropped,
                           report=bytes(report.data), report_over=report.dropped > 0,
                           exit=exit_info, timed_out=timed_out, parent_died=parent_broken)

    def _take_result(self, res: SandboxResult, res_fd: int, pid: int) -> SandboxResult:
        """An ``ok`` verdict's tensors: seal the result buffer, then rebuild and check them."""
        if not self._seal(res_fd, pid):
            return dataclasses.replace(res, status="killed", reason="could not freeze the result buffer")
        tensors, reason = self._collect(res_fd)
        if reason:
            return dataclasses.replace(res, status="rejected", reason=clean_text(reason, REASON_CAP))
        return dataclasses.replace(res, tensors=tensors)

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
        mm = _private_map(res_fd, size)
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
