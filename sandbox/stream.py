"""Streaming: one jailed child per candidate, fed one tensor at a time (trusted side).

Why: a 7B model's task vectors do not fit in a warm parent's memory, and starting a sandbox per
group of tensors costs seconds each. A :class:`StreamSandbox` is a warm parent that holds no
tensors; each candidate gets one pre-forked child (:meth:`StreamSandbox.session`) and the
caller hands it one tensor after another:

```python
with StreamSandbox(["math", "code"], max_numel) as sb:
    with sb.session(code, tensor_timeout=60, total_timeout=600) as s:
        for name in names:
            base_buf, tv_bufs = s.buffers(shape)   # float32 views into the shared inputs
            base_buf.copy_(seed_tensor); ...       # the caller's I/O: not the candidate's time
            merged = s.merge(name)                 # a private, validated tensor, or None
            if merged is None:
                break                              # s.result says why (timeout, rejected, ...)
        res = s.finish()                           # the verdict (SandboxResult)
```

The channel (``protocol`` has the frames):

* **inputs**: a memfd the supervisor maps shared and writable, then seals with
  ``F_SEAL_FUTURE_WRITE`` (plus no resizing) before the child gets it: the child can map it
  only copy-on-write and can never change what the supervisor wrote;
* **result**: a memfd of exactly one tensor slot, sealed against shrinking and growing (the
  supervisor's mapping can never fault), which the child writes; the supervisor copies the
  bytes of the one tensor it asked for into private memory and validates the copy (finite).
  The child never states a size or a shape: the supervisor reads exactly the tensor it
  requested, so a child cannot lie about one;
* **frames**: commands down a pipe, answers up the report pipe, each a length-prefixed JSON
  object of at most ``MAX_REPORT`` bytes, read here (bounded) and judged in ``verdict.py``
  (``stream_answer``, ``verdict``), the one place where what a child sends is parsed. An answer out of turn,
  a malformed or oversized frame, a report of success before the end: the candidate is
  rejected; a child that dies gets the verdict of its death.

Time: the clock runs only while the child has a tensor (from the command to its answer) or is
running its module; the caller's reads, conversions and writes between tensors are not counted.
Each tensor has ``tensor_timeout`` seconds; the candidate's compute in all has
``total_timeout``. The child is killed at whichever comes first and the verdict says which.
"""
from __future__ import annotations

import fcntl
import marshal
import math
import mmap
import os
import selectors
import time
from typing import Iterable

import torch

from selfdev.sandbox import protocol
from selfdev.sandbox.layers import DEFAULT_REQUIRE
from selfdev.sandbox.policy import screen_and_compile
from selfdev.sandbox.supervisor import (DTYPE_NAMES, OUTPUT_CAP, Sandbox, SandboxUnavailable, _all_finite, _Capped,
                                        _private_map)
from selfdev.sandbox.verdict import REASON_CAP, ChildRecord, SandboxResult, clean_text, stream_answer, verdict

F_SEAL_FUTURE_WRITE = getattr(fcntl, "F_SEAL_FUTURE_WRITE", 0x0010)  # Linux >= 5.1
_ALIGN = 64

__all__ = ["StreamSandbox", "StreamSession", "SandboxUnavailable"]


def _align(n: int) -> int:
    return (n + _ALIGN - 1) // _ALIGN * _ALIGN


class StreamSandbox(Sandbox):
    """A warm, clean parent that holds no tensors; one child per candidate, fed tensor by
    tensor (see the module docstring). ``max_numel``: the largest tensor any session will
    hand over; ``experts``: the task vectors' names, in the order buffers are filled."""

    def __init__(self, experts: Iterable[str], max_numel: int, *, dtype: torch.dtype = torch.float32,
                 memory_mb: int | None = None, require: Iterable[str] = DEFAULT_REQUIRE, threads: int = 1,
                 start_timeout: float = 120.0, idle_timeout: float = 3600.0,
                 _os_only: bool = False, _disable_layers: Iterable[str] = ()):
        experts = list(experts)
        if not experts or not all(isinstance(e, str) for e in experts) or len(set(experts)) != len(experts):
            raise ValueError("experts must be a non-empty list of distinct names")
        if type(max_numel) is not int or max_numel < 1:
            raise ValueError(f"max_numel must be a positive int, got {max_numel!r}")
        if dtype not in DTYPE_NAMES:
            raise ValueError(f"unsupported dtype {dtype}")
        self.names: list[str] = []
        self.meta: list = []
        self.offsets: list[int] = []
        self.experts = experts
        self.max_numel = max_numel
        self.dtype = dtype
        self.slot = _align(max_numel * dtype.itemsize)
        self.inputs_bytes = self.slot * (1 + len(experts))
        self.result_bytes = self.slot
        # the child maps the inputs and result slots; room for a few tensor-sized temporaries
        need = int((self.inputs_bytes + self.slot) * 3 / 2**20) + 2048
        self.memory_mb = max(4096, need) if memory_mb is None else int(memory_mb)
        self.timeout = 0.0
        self.threads = max(1, int(threads))
        self.require = tuple(require)
        self.idle_timeout = float(idle_timeout)
        self._os_only = bool(_os_only)
        self._disable = [str(x) for x in _disable_layers]
        unknown = [r for r in self.require if r not in protocol.ALL_LAYERS]
        if unknown:
            raise ValueError(f"unknown sandbox layers in require: {unknown} (known: {list(protocol.ALL_LAYERS)})")
        self._init_parent_state(start_timeout)
        self._build_header()
        try:
            self._start()
        except BaseException:
            self.close()
            raise

    def _build_header(self) -> None:
        """The warm parent's inputs: a header naming the experts and the largest tensor, and
        no tensors at all."""
        hdr = protocol.encode_header({"names": [], "experts": self.experts, "tensors": [],
                                      "result_offsets": [], "max_numel": self.max_numel})
        fd = os.memfd_create("selfdev-sandbox-inputs", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.pwrite(fd, hdr, 0)
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK |
                        fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE)
        except BaseException:
            os.close(fd)
            raise
        self._inputs_fd = fd

    def run(self, code: str, timeout: float | None = None) -> SandboxResult:
        raise TypeError("a StreamSandbox holds no tensors: run candidates with session()")

    def session(self, code: str, *, tensor_timeout: float, total_timeout: float) -> "StreamSession":
        """One candidate: its own child, until :meth:`StreamSession.finish` (or ``close``)."""
        return StreamSession(self, code, float(tensor_timeout), float(total_timeout))


class StreamSession:
    """One candidate's child, fed tensor by tensor (see the module docstring). Holds the
    sandbox's lock from start to end: one session at a time per StreamSandbox."""

    def __init__(self, sb: StreamSandbox, code: str, tensor_timeout: float, total_timeout: float):
        if not (tensor_timeout > 0 and total_timeout > 0):
            raise ValueError("tensor_timeout and total_timeout must be positive")
        self.sb = sb
        self.tensor_timeout, self.total_timeout = tensor_timeout, total_timeout
        self.result: SandboxResult | None = None  # set once the session is over
        self.pid: int | None = None
        self.steps = 0  # tensors merged
        self.compute_s = 0.0  # the child's time: module start-up + every tensor
        self.slowest = (0.0, None)  # (seconds, name)
        self._t0 = time.perf_counter()
        self._fds: list[int] = []
        self._sel: selectors.DefaultSelector | None = None
        self._buf = bytearray()
        self._out = _Capped(OUTPUT_CAP)
        self._st_open = False
        self._exit: dict | None = None
        self._parent_broken = False
        self._locked = False
        self._shape: tuple[int, ...] | None = None
        self._in_map = self._res_map = None
        sr, co = screen_and_compile(code) if not sb._os_only else (None, None)
        self.ast_hash = sr.ast_hash if sr is not None else None
        if sr is not None and not sr.ok:
            self.result = SandboxResult("rejected", sr.reason, None, "", self._ms(),
                                        {"stage": "screen", "ast_hash": sr.ast_hash})
            return
        blob = marshal.dumps(co) if co is not None else code.encode("utf-8", "surrogatepass")
        sb._lock.acquire()
        self._locked = True
        try:
            self._open(blob)
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ set-up
    def _ms(self) -> float:
        return (time.perf_counter() - self._t0) * 1e3

    def _open(self, blob: bytes) -> None:
        sb = self.sb
        sb._prepare_to_run()
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        st_r, st_w = os.pipe2(os.O_CLOEXEC)
        cmd_r, cmd_w = os.pipe2(os.O_CLOEXEC)
        self._fds = [out_r, st_r, cmd_w]
        child_ends = [out_w, st_w, cmd_r]
        memfds = []
        try:
            flags = os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING
            res_fd = os.memfd_create("selfdev-stream-result", flags)
            memfds.append(res_fd)
            os.ftruncate(res_fd, sb.result_bytes)
            fcntl.fcntl(res_fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL)
            self._res_map = _private_map(res_fd, sb.result_bytes, mmap.PROT_READ, mmap.MAP_SHARED)
            in_fd = os.memfd_create("selfdev-stream-inputs", flags)
            memfds.append(in_fd)
            os.ftruncate(in_fd, sb.inputs_bytes)
            # our writable mapping first; after the seal nobody can make another one
            self._in_map = _private_map(in_fd, sb.inputs_bytes, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_SHARED)
            fcntl.fcntl(in_fd, fcntl.F_ADD_SEALS, F_SEAL_FUTURE_WRITE | fcntl.F_SEAL_SHRINK |
                        fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL)
            code_fd = os.memfd_create("selfdev-sandbox-code", flags)
            memfds.append(code_fd)
            os.write(code_fd, blob)
            fcntl.fcntl(code_fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SHRINK |
                        fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL)
            msg = {"op": protocol.OP_RUN, "timeout": self.total_timeout, "result_bytes": sb.result_bytes,
                   "os_only": sb._os_only,
                   "stream": {"inputs_bytes": sb.inputs_bytes, "result_bytes": sb.result_bytes,
                              "tensor_timeout": self.tensor_timeout, "idle": sb.idle_timeout}}
            self.pid = sb._hand_to_spare(msg, [out_w, st_w, res_fd, code_fd, cmd_r, in_fd])
        finally:
            for fd in child_ends + memfds:
                os.close(fd)
        os.set_blocking(out_r, False)
        os.set_blocking(st_r, False)
        os.set_blocking(cmd_w, False)
        self._sel = selectors.DefaultSelector()
        self._sel.register(out_r, selectors.EVENT_READ, "out")
        self._sel.register(st_r, selectors.EVENT_READ, "st")
        self._sel.register(sb._sock, selectors.EVENT_READ, "ctl")
        self._st_open = True
        # the module runs first (its own start-up counts as the candidate's time)
        self._answer(None, -1, expect_ready=True)

    # ------------------------------------------------------------------ per tensor
    def buffers(self, shape) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Writable views (the sandbox's dtype, ``shape``) into the shared inputs: the seed
        value and one task vector per expert, in ``experts`` order. Fill them, then call
        :meth:`merge`. They are valid until the next call."""
        if self.result is not None:
            raise RuntimeError("the session is over")
        shape = tuple(int(s) for s in shape)
        numel = math.prod(shape)
        if numel > self.sb.max_numel:
            raise ValueError(f"a tensor of {numel} elements; this sandbox takes at most {self.sb.max_numel}")
        self._shape = shape
        views = []
        for i in range(1 + len(self.sb.experts)):
            if numel == 0:
                views.append(torch.zeros(shape, dtype=self.sb.dtype))
            else:
                views.append(torch.frombuffer(self._in_map, dtype=self.sb.dtype, count=numel,
                                              offset=i * self.sb.slot).view(shape))
        return views[0], views[1:]

    def merge(self, name: str, base: torch.Tensor | None = None,
              task_vectors: dict[str, torch.Tensor] | None = None) -> torch.Tensor | None:
        """The candidate's merged task vector for ``name``: a private tensor, checked (the
        shape and dtype asked for, finite). With ``base`` and ``task_vectors`` they are copied
        into the buffers first; without, :meth:`buffers` must have been filled. None when the
        session ended here (``result`` says why)."""
        if self.result is not None:
            return None
        if base is not None:
            b, tvs = self.buffers(base.shape)
            b.copy_(base)
            for view, e in zip(tvs, self.sb.experts):
                view.copy_(task_vectors[e])
        if self._shape is None:
            raise RuntimeError("fill buffers() before merge()")
        shape, self._shape = self._shape, None
        numel = math.prod(shape)
        step = self.steps
        dt = DTYPE_NAMES[self.sb.dtype]
        slot = self.sb.slot
        cmd = {"op": protocol.OP_TENSOR, protocol.STEP: step, "name": name, "dtype": dt, "shape": list(shape),
               "base": 0, "tvs": [slot * (i + 1) for i in range(len(self.sb.experts))], "result": 0}
        if not self._answer(cmd, step, name=name):
            return None
        self.steps += 1
        if numel == 0:
            return torch.zeros(shape, dtype=self.sb.dtype)
        # a private copy of exactly the bytes asked for, checked after the copy: the child may
        # still write to the shared page, never to what we validate and return
        if self.sb.dtype == torch.bool:
            out = torch.frombuffer(self._res_map, dtype=torch.uint8, count=numel).view(shape) != 0
        else:
            out = torch.frombuffer(self._res_map, dtype=self.sb.dtype, count=numel).view(shape).clone()
            if (out.is_floating_point() or out.is_complex()) and not _all_finite(out):
                bad = int((~torch.isfinite(out)).sum())
                self._end(reason=f"result for {name!r} has {bad} non-finite value(s) (NaN/inf)", status="rejected",
                          name=name)
                return None
        return out

    def finish(self) -> SandboxResult:
        """No more tensors: the child reports and exits; the verdict (``tensors`` is None:
        each merged tensor was returned by :meth:`merge`)."""
        if self.result is None:
            self._answer({"op": protocol.OP_END}, None, final=True)
        return self.result

    # ------------------------------------------------------------------ the channel
    def _answer(self, cmd: dict | None, step: int | None, name: str | None = None,
                expect_ready: bool = False, final: bool = False) -> bool:
        """Send ``cmd`` (if any), wait for the child's answer under the limits, check it.
        True when it is the expected one; otherwise the session ends (``result``)."""
        if self._buf:
            return self._end(reason="candidate process sent a message it was not asked for",
                             status="rejected", name=name)
        left = self.total_timeout - self.compute_s
        limit, which = ((self.tensor_timeout, "tensor") if final or self.tensor_timeout <= left
                        else (left, "total"))
        if limit <= 0:
            return self._end(timed_out=which, name=name)
        t = time.monotonic()
        if cmd is not None:
            data = protocol.encode_frame(cmd)
            try:
                n = os.write(self._fds[2], data)
            except (BrokenPipeError, BlockingIOError):
                n = -1
            if n != len(data):
                return self._wait_death(name)
        kind, payload = self._read_frame(t + limit)
        dt = time.monotonic() - t
        if not final:
            self.compute_s += dt
            if name is not None and dt > self.slowest[0]:
                self.slowest = (dt, name)
        if kind == "timeout":
            return self._end(timed_out=which, name=name)
        if kind == "bad":
            return self._end(reason="candidate process sent a frame over the size limit", status="rejected",
                             name=name)
        if kind == "gone":
            return self._wait_death(name)
        want = None if final else {protocol.READY: True} if expect_ready else {protocol.STEP: step}
        kind, why = stream_answer(payload, want)
        if kind == "report":  # at the end, or the candidate stopped here
            early = not final and verdict(ChildRecord(pid=None, timeout=0, duration_ms=0, report=payload)).ok
            return self._end(report=payload, name=None if final else name,
                             reason="candidate process reported success before all tensors were merged"
                             if early else None, status="rejected" if early else None)
        if kind == "bad":
            return self._end(reason=why, status="rejected", name=name)
        return True

    def _read_frame(self, deadline: float) -> tuple[str, bytes | None]:
        """One frame from the report pipe: ("frame", payload), or "timeout", "bad" (oversized)
        or "gone" (the pipe closed, or the warm parent broke). Meanwhile: output is read and
        capped, the warm parent's notices handled."""
        while True:
            payload, ok = protocol.split_frame(self._buf)
            if not ok:
                return "bad", None
            if payload is not None:
                return "frame", payload
            if not self._st_open or self._parent_broken:
                return "gone", None
            now = time.monotonic()
            if now >= deadline:
                return "timeout", None
            self._poll(deadline - now)

    def _poll(self, wait: float) -> None:
        for key, _ in self._sel.select(max(0.0, wait)):
            tag = key.data
            if tag == "ctl":
                got = self.sb._recv_raw()
                if got is None:
                    self._parent_broken = True
                    self._sel.unregister(key.fileobj)
                    continue
                ex = self.sb._handle_ctl(*got, self.pid)
                if ex is not None:
                    self._exit = ex
                continue
            try:
                chunk = os.read(key.fd, 1 << 16)
            except BlockingIOError:
                continue
            except OSError:
                chunk = b""
            if not chunk:
                self._sel.unregister(key.fd)
                if tag == "st":
                    self._st_open = False
                continue
            if tag == "out":
                self._out.add(chunk)
            else:
                self._buf += chunk

    def _wait_death(self, name: str | None) -> bool:
        """The child stopped talking without a report: its exit says why."""
        return self._end(name=name)

    # ------------------------------------------------------------------ the end
    def _end(self, report: bytes | None = None, reason: str | None = None, status: str | None = None,
             timed_out: str | None = None, name: str | None = None) -> bool:
        """Stop the child, collect its exit, and set ``result`` (always returns False)."""
        sb = self.sb
        limit = None
        if timed_out == "tensor":
            where = f" at tensor {name!r} (number {self.steps + 1})" if name else " while its module started"
            limit = (f"candidate exceeded the per-tensor limit of {self.tensor_timeout:g} s{where} and was killed")
        elif timed_out:
            limit = (f"candidate exceeded its total compute budget of {self.total_timeout:g} s after "
                     f"{self.steps} tensor(s) and was killed")
        if report is not None and not timed_out:
            end = time.monotonic() + 1.0  # it exits right after reporting
            while self._exit is None and not self._parent_broken and time.monotonic() < end:
                self._poll(end - time.monotonic())
        if self._exit is None and self.pid is not None:
            sb._kill_child(self.pid)
            end = time.monotonic() + 5.0
            while self._exit is None and not self._parent_broken and time.monotonic() < end:
                self._poll(end - time.monotonic())
        # what is left of its output
        while self._sel is not None and any(k.data == "out" for k in self._sel.get_map().values()):
            before = len(self._out.data) + self._out.dropped
            self._poll(0)
            if len(self._out.data) + self._out.dropped == before:
                break
        rec = ChildRecord(pid=self.pid, timeout=self.total_timeout, duration_ms=self._ms(),
                          output=bytes(self._out.data), output_dropped=self._out.dropped,
                          report=report or b"", exit=self._exit, timed_out=bool(timed_out),
                          parent_died=self._parent_broken and self._exit is None, limit=limit)
        res = verdict(rec)
        if self._parent_broken:  # replaced before the next candidate (as Sandbox.run does)
            sb._kill_parent()
        if status is not None:  # the trusted side's own finding is the cause, not the kill
            res.status, res.reason = status, clean_text(reason, REASON_CAP)
        elif name and res.status != "ok" and res.reason and name not in res.reason:
            res.reason = clean_text(f"{res.reason} (at tensor {name!r})", REASON_CAP + 100)
        res.details.update({"tensors": self.steps, "compute_ms": round(self.compute_s * 1e3, 3),
                            "tensor_timeout": self.tensor_timeout, "total_timeout": self.total_timeout})
        if self.slowest[1] is not None:
            res.details["slowest"] = {"name": self.slowest[1], "ms": round(self.slowest[0] * 1e3, 3)}
        if timed_out:
            res.details["limit"] = timed_out
        if name is not None and res.status != "ok":
            res.details["tensor"] = name
        if self.ast_hash is not None:
            res.details.setdefault("ast_hash", self.ast_hash)
        self.result = res
        self._release()
        return False

    def _release(self) -> None:
        if self._sel is not None:
            self._sel.close()
            self._sel = None
        for fd in self._fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self._fds = []
        self._in_map = self._res_map = None  # unmapped once no tensor views them
        if self._locked:
            self._locked = False
            self.sb._lock.release()

    def close(self) -> None:
        """End the session: a child that has not finished is killed (its verdict: killed)."""
        if self.result is None and self.pid is not None and self._sel is not None:
            self._end(reason="the session was closed before the candidate finished", status="killed")
        self._release()

    def __enter__(self) -> "StreamSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
