"""Control-channel framing between the supervisor and the warm parent (no pickle, ever).

The channel is an AF_UNIX SOCK_SEQPACKET socketpair: one JSON document per packet, with
file descriptors attached as SCM_RIGHTS when needed.
"""
from __future__ import annotations

import array
import json
import socket

MAX_PACKET = 256 * 1024
MAX_FDS = 8


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
    msg = json.loads(data.decode())
    if not isinstance(msg, dict):
        raise ValueError("bad control message")
    return msg, list(fds)


def _close(fd: int) -> None:
    import os
    try:
        os.close(fd)
    except OSError:
        pass
