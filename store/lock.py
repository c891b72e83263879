"""The single-writer lock: ``<database>.lock`` held with ``flock(LOCK_EX | LOCK_NB)``.

The kernel drops an flock when its file description is closed, so a holder that dies (even
with ``kill -9``) frees the lock at once; there is no stale-lock cleanup. Locks belong to the
open file description, so a second :class:`WriterLock` in the same process is refused too.
The file is never deleted (deleting a lock file races with a process that has just opened it);
the holder writes ``{pid, host, command, since, writer}`` into it after taking the lock and
empties it before letting go, so a refused writer can say who is holding it.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from typing import Any

from .errors import WriterLockedError
from .ids import utc_now


def lock_path(db_path: str | os.PathLike[str]) -> str:
    """Where the writer lock of ``db_path`` lives: the database's real path plus ``.lock``."""
    return os.path.realpath(os.fspath(db_path)) + ".lock"


def read_holder(path: str, attempts: int = 5) -> dict[str, Any]:
    """The holder's JSON from the lock file ``path``, or ``{}`` when unreadable.

    Retries briefly, since the holder writes the file just after taking the lock.
    """
    for attempt in range(attempts):
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
            holder = json.loads(text)
            if isinstance(holder, dict):
                return holder
        except (OSError, ValueError):
            pass
        if attempt + 1 < attempts:
            time.sleep(0.01)
    return {}


def _flock_holders(path: str) -> dict[int, bool] | None:
    """Pids holding an flock on ``path`` according to /proc/locks (pid -> whether the device
    matched too, not only the inode); None when unknowable.

    Reading /proc/locks never takes a lock, so it cannot make a starting writer fail (a
    probing ``flock`` from a reader could, for the instant it holds it).
    """
    try:
        st = os.stat(path)
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            lines = f.readlines()
    except OSError:
        return None
    dev = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    pids: dict[int, bool] = {}
    for line in lines:
        parts = line.split()
        # "3: FLOCK  ADVISORY  WRITE 9206 fe:00:2146519 0 EOF" (a "->" marks waiters)
        if "->" in parts or len(parts) < 6 or parts[1] != "FLOCK":
            continue
        where = parts[5]
        if where == dev or where.rsplit(":", 1)[-1] == str(st.st_ino):
            try:
                pids[int(parts[4])] = where == dev
            except ValueError:
                pass
    return pids


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def current_holder(db_path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """Who holds the database's writer lock (``{pid, host, command, since, writer}``), or
    None when no live writer holds it.

    The lock file is read, never locked (a probing ``flock`` from a reader could make a starting
    writer fail for the instant it holds it). On
    Linux /proc/locks says whether anyone holds the flock; elsewhere the pid in the lock file
    is checked (same host only).
    """
    path = lock_path(db_path)
    if not os.path.exists(path):
        return None
    # one look, no retries: an empty file is the common case (no writer), not a race
    info = read_holder(path, attempts=1)
    holders = _flock_holders(path)
    if holders is not None:
        # an inode match on another device counts only for the pid the lock file names
        held = [pid for pid, exact in holders.items() if exact or pid == info.get("pid")]
        if not held:
            return None
        return info or {"pid": min(held)}
    pid = info.get("pid")
    if isinstance(pid, int) and info.get("host") in (None, socket.gethostname()):
        return info if _pid_alive(pid) else None
    return None


class WriterLock:
    """An acquired writer lock; :meth:`release` (or process exit) gives it back."""

    def __init__(self, db_path: str | os.PathLike[str], writer: str | None = None) -> None:
        self.db_path = os.path.abspath(os.fspath(db_path))
        self.path = lock_path(db_path)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise WriterLockedError(self.db_path, read_holder(self.path)) from None
        except BaseException:
            os.close(fd)
            raise
        self._fd: int | None = fd
        self.info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": " ".join(sys.argv)[:500] or sys.executable,
            "since": utc_now(),
            "writer": writer,
        }
        data = json.dumps(self.info, ensure_ascii=False).encode("utf-8")
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def note(self, **fields: Any) -> None:
        """Add ``fields`` to what the lock file tells readers (a writer of several runs at
        once names them: ``runs=[...]``). Written over the old text, then cut to length, so a
        reader sees the old or the new JSON, or (for an instant) text it cannot parse and
        treats as no note."""
        if self._fd is None:
            return
        self.info.update(fields)
        data = json.dumps(self.info, ensure_ascii=False).encode("utf-8")
        os.pwrite(self._fd, data, 0)
        os.ftruncate(self._fd, len(data))

    def release(self) -> None:
        """Empty the lock file and unlock it. Safe to call twice."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)
        except OSError:
            pass
        finally:
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)

    def __del__(self) -> None:  # the fd would otherwise keep the lock until exit
        try:
            self.release()
        except Exception:
            pass
