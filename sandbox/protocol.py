"""The wire format between the trusted side and the jail: the one module both sides import.

Three parties speak it (docs/sandbox.md draws the picture):

* the **supervisor** (trusted: ``sandbox/supervisor.py``, in the engine's process);
* the **warm parent** (jail side: ``sandbox/jail/worker.py``; started clean, jailed, never
  receives candidate code);
* one **child** per candidate (jail side: forked by the warm parent, runs the candidate).

No pickle, ever. Every constant that both sides must agree on lives here, and nowhere else.

Control socket, supervisor <-> warm parent (``AF_UNIX``, ``SOCK_SEQPACKET``; one JSON object
per packet, file descriptors attached as ``SCM_RIGHTS``; :func:`send` / :func:`recv`):

==========================  ==================================================================
supervisor -> parent        start-up: ``{"threads", "memory_mb", "require", "disable"}`` + [inputs]
parent -> supervisor        ``{READY: true, "layers": {...}, "missing": [...], "pid": n}``,
                            or ``{READY: false, "error": text}``
parent -> supervisor        ``{SPARE: pid}`` + [the supervisor's end of that child's channel]
parent -> supervisor        ``{EXIT: {"code": int|None, "signal": int|None}, "pid": pid}``
parent -> supervisor        ``{TAINTED: what changed}``: its limits or scheduling changed since
                            start-up; it forks no more children (the supervisor replaces it)
supervisor -> parent        ``{"op": OP_USED}``: a spare got its candidate, fork a replacement
supervisor -> parent        ``{"op": OP_REAP, "pid": pid}``: its exit was seen, reap it now
==========================  ==================================================================

A child's private channel (same framing), supervisor -> child, once:
``{"op": OP_RUN, "timeout", "result_bytes", "os_only"}`` + ``RUN_FDS`` descriptors: the output
pipe, the report pipe, the result memfd, the code memfd (a sealed memfd holding the candidate,
marshalled by the supervisor's own compile; source text under the ``os_only`` test hook).

The report pipe, child -> supervisor: one JSON object of at most ``MAX_REPORT`` bytes whose
``"status"`` is one of ``REPORT_STATUSES``. The supervisor treats every byte of it as hostile
(``sandbox/verdict.py`` is where it is read).

The inputs memfd (sealed, supervisor -> parent): a header (:func:`encode_header`) holding the
names, experts, one entry per tensor (``dtype`` among ``DTYPES``, shape, absolute offset) and
the result offsets, then raw tensor bytes. The result memfd: raw bytes at those offsets.

**Streaming** (``sandbox/stream.py``: models too large to hold, one child per candidate fed one
tensor at a time). The warm parent holds no tensors (its header names none and carries
``max_numel``, the largest tensor a child will see). ``OP_RUN`` carries ``"stream": {
"inputs_bytes", "result_bytes", "tensor_timeout", "idle"}`` and ``RUN_FDS_STREAM`` descriptors:
the four above, then the command pipe's read end and the stream inputs memfd (sealed against
writes by anyone but the supervisor's own earlier mapping: ``F_SEAL_FUTURE_WRITE``; the result
memfd is sealed against resizing). Both directions then speak frames (:func:`encode_frame`: a
``FRAME_LEN``-byte little-endian length and one JSON object of at most ``MAX_REPORT`` bytes):

==========================  ==================================================================
child -> supervisor         ``{READY: true}``: the module ran, ``merge_models`` exists
supervisor -> child         ``{"op": OP_TENSOR, STEP: k, "name", "dtype", "shape", "base": off,
                            "tvs": [off, ...] (one per expert, in order), "result": off}``
child -> supervisor         ``{STEP: k}``: the merged tensor ``k`` is in the result memfd
supervisor -> child         ``{"op": OP_END}``: no more tensors
child -> supervisor         the report (as above, framed); the child exits after it
==========================  ==================================================================

A report may come at any point instead of the expected frame (the candidate raised, or was
rejected at tensor ``k``); anything else is a protocol violation that rejects the candidate.
"""
from __future__ import annotations

import array
import json
import os
import socket

MAX_PACKET = 256 * 1024  # one control message
MAX_FDS = 8  # descriptors attached to one control message

POOL = 2  # idle, pre-forked children the warm parent keeps ready

# the operations the supervisor asks for (the "op" field)
OP_RUN = "run"  # to a child: run this candidate
OP_USED = "used"  # to the parent: a spare was used, fork its replacement
OP_REAP = "reap"  # to the parent: reap this exited child

# the warm parent's notices, told apart by the key they carry
READY = "ready"
SPARE = "spare"
EXIT = "exit"
TAINTED = "tainted"  # the parent's own state changed since start-up: it forks no more

RUN_FDS = 4  # output pipe, report pipe, result memfd, code memfd (in this order)
RUN_FDS_STREAM = 6  # those four, then the command pipe (read end) and the stream inputs memfd

# streaming (see the module docstring)
OP_TENSOR = "tensor"  # to a streaming child: merge this tensor
OP_END = "end"  # to a streaming child: no more tensors, report and exit
STEP = "step"  # the step number in a tensor command and in the child's answer
FRAME_LEN = 4  # bytes of a frame's length prefix

# the child's report
MAX_REPORT = 1 << 20
OK, REJECTED, ERROR, UNAVAILABLE = "ok", "rejected", "error", "unavailable"
REPORT_STATUSES = (OK, REJECTED, ERROR, UNAVAILABLE)

# tensor dtypes that cross the boundary, by their torch attribute name
DTYPES = ("float32", "float64", "float16", "bfloat16", "int8", "int16", "int32", "int64",
          "uint8", "bool", "complex64", "complex128")

# the OS layers the warm parent reports (and a Sandbox may require)
ALL_LAYERS = ("rlimits", "no_new_privs", "userns", "netns", "ipcns", "tasks", "seccomp", "landlock",
              "landlock_net", "landlock_scope")

_HEADER_LEN = 8  # the inputs header starts with its own length, little-endian


def encode_header(header: dict) -> bytes:
    """The inputs header as written at offset 0 of the inputs memfd."""
    data = json.dumps(header).encode()
    return len(data).to_bytes(_HEADER_LEN, "little") + data


def decode_header(buf) -> dict:
    """Read back :func:`encode_header`'s bytes from the start of ``buf``."""
    n = int.from_bytes(buf[:_HEADER_LEN], "little")
    return json.loads(bytes(buf[_HEADER_LEN:_HEADER_LEN + n]).decode())


def encode_frame(msg: dict) -> bytes:
    """One frame: the length of the JSON, then the JSON (a stream's messages, both ways)."""
    data = json.dumps(msg, separators=(",", ":")).encode()
    if len(data) > MAX_REPORT:
        raise ValueError(f"frame too large ({len(data)} bytes)")
    return len(data).to_bytes(FRAME_LEN, "little") + data


def split_frame(buf: bytearray) -> tuple[bytes | None, bool]:
    """Take one whole frame's payload off the front of ``buf``: ``(payload, ok)``. ``(None,
    True)``: not all of it has arrived yet; ``(None, False)``: the length prefix is over
    ``MAX_REPORT`` (the sender is lying or broken). The payload is not parsed here."""
    if len(buf) < FRAME_LEN:
        return None, True
    n = int.from_bytes(buf[:FRAME_LEN], "little")
    if n > MAX_REPORT:
        return None, False
    if len(buf) < FRAME_LEN + n:
        return None, True
    payload = bytes(buf[FRAME_LEN:FRAME_LEN + n])
    del buf[:FRAME_LEN + n]
    return payload, True


def send(sock: socket.socket, msg: dict, fds: list[int] = ()) -> None:
    data = json.dumps(msg, separators=(",", ":")).encode()
    if len(data) > MAX_PACKET:
        raise ValueError(f"control message too large ({len(data)} bytes)")
    if fds:
        sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
    else:
        sock.send(data)


def recv(sock: socket.socket) -> tuple[dict | None, list[int]]:
    """Return (message, fds); (None, []) on EOF."""
    fds = array.array("i")
    data, anc, flags, _ = sock.recvmsg(MAX_PACKET, socket.CMSG_SPACE(MAX_FDS * fds.itemsize))
    for level, typ, cdata in anc:
        if level == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS:
            fds.frombytes(cdata[: len(cdata) - (len(cdata) % fds.itemsize)])
    if not data:
        for fd in fds:
            _close(fd)
        return None, []
    try:
        msg = json.loads(data.decode())
        if not isinstance(msg, dict):
            raise ValueError("bad control message")
    except ValueError:  # UnicodeDecodeError and JSONDecodeError included: keep no fds
        for fd in fds:
            _close(fd)
        raise
    return msg, list(fds)


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass
