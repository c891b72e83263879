"""How a path becomes a connection: refuse what is not selfdev's, say plainly what cannot be done.

A user can point ``--db`` at anything: a text file, another application's SQLite file, a file or a
folder they may not write. Each of these must end in one :class:`StoreError` that names the file
and what is wrong *before* anything is written, so that nothing already in the file changes.

Which file is selfdev's: every file a writer opens gets SQLite's ``application_id`` set to
:data:`APPLICATION_ID` (migration ``m004``). Files written before that migration carry
application id 0 and only selfdev's own tables, so they are recognised by their table set. A
file with no table at all is new (an empty file, or one SQLite has just created). Anything else
belongs to another application and is refused, by readers and writers alike: a writer would
otherwise add selfdev's tables to it, and a reader could misread a foreign ``events`` table.
"""

from __future__ import annotations

import os
import sqlite3
import urllib.parse
from .errors import StoreError
from .lock import current_holder

#: ``PRAGMA application_id`` of a selfdev event log: "SDEV" in ASCII
APPLICATION_ID = 0x53444556
#: what the first 16 bytes of every SQLite 3 database file are
SQLITE_HEADER = b"SQLite format 3\x00"
#: every table selfdev ever created (``runs`` and ``candidates``: projections dropped by m003)
OWN_TABLES = frozenset({"events", "blobs", "_migrations", "runs", "candidates", "sqlite_sequence"})


def check_path(path: str, *, must_exist: bool) -> bool:
    """Refuse a folder or a file that is not SQLite; returns whether the file exists.

    Reads at most the 16-byte header, so a text file is named as such instead of failing later
    with SQLite's "file is not a database" from inside a query.
    """
    if os.path.isdir(path):
        raise StoreError(f"{path} is a directory; the database must be a file")
    if not os.path.exists(path):
        if must_exist:
            raise StoreError(f"no such database: {path}")
        return False
    try:
        with open(path, "rb") as f:
            head = f.read(len(SQLITE_HEADER))
    except OSError as exc:
        raise StoreError(f"cannot read {path}: {exc.strerror}") from None
    if head and head != SQLITE_HEADER:
        raise StoreError(
            f"{path} is not a SQLite database (it does not start with the SQLite header); "
            "selfdev keeps its runs in a SQLite file of its own"
        )
    return True


def check_ours(conn: sqlite3.Connection, path: str) -> set[str]:
    """Refuse another application's SQLite file; returns the file's table names.

    Only reads (two pragmas' worth of the schema), so it is safe before any migration.
    """
    try:
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"cannot read {path} as a SQLite database: {exc}") from None
    if app_id == APPLICATION_ID:
        return tables
    if app_id == 0 and tables <= OWN_TABLES and (not tables or "_migrations" in tables):
        return tables  # new, or written by a selfdev from before the application id (m004)
    if app_id != 0:
        what = f"SQLite application_id {app_id:#010x}"
    else:
        shown = sorted(tables - OWN_TABLES) or sorted(tables)
        more = f" and {len(shown) - 5} more" if len(shown) > 5 else ""
        what = "tables " + ", ".join(shown[:5]) + more
    raise StoreError(
        f"{path} is not an event store: it belongs to another application ({what}); "
        "selfdev keeps its runs in a file of its own, so give it a new file"
    )


def check_writable(path: str, exists: bool) -> None:
    """Refuse a writer where SQLite would fail half-way: a read-only file, or a folder in which
    the ``.lock``, ``-wal`` and ``-shm`` files beside the database cannot be created."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise StoreError(f"cannot create {path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise StoreError(
            f"cannot write the database {path}: its folder {folder} is read-only (a writer "
            "creates the .lock, -wal and -shm files beside the database); readers can still "
            "open it read-only"
        )
    if exists and not os.access(path, os.R_OK | os.W_OK):
        raise StoreError(
            f"cannot write the database {path}: the file is read-only; "
            "readers can still open it read-only"
        )


def _uri(path: str, **params: str) -> str:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return "file:" + urllib.parse.quote(os.path.abspath(path)) + "?" + query


def connect_readonly(path: str) -> sqlite3.Connection:
    """A read-only connection to an existing selfdev file, in a writable folder or not.

    ``mode=ro`` is the normal way. A WAL database needs its ``-shm`` file even to be read, and
    in a read-only folder (an archive, a read-only mount) that file cannot be created, so
    SQLite refuses. Then, and only when no writer can exist, the file is opened with
    ``immutable=1``, which reads it without any locking or shared memory:

    * no process holds the writer lock (:func:`.lock.current_holder`), and
    * there is no ``-wal`` file with content: a writer that died leaves its last commits
      there, and an immutable open would silently leave them out.

    If either fails the open is refused with the reason, rather than showing a log that could
    change underneath the reader or that misses committed events. While the folder stays
    read-only for everyone no writer can start later either (it must create ``-wal``, ``-shm``
    and ``.lock`` there); a folder read-only only for this user is the one case where another
    user's writer could start after the open, and an immutable reader would not see its
    appends: fine for an archive, which is what this fallback is for.
    """
    conn = sqlite3.connect(_uri(path, mode="ro"), uri=True, check_same_thread=False)
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError as exc:
        conn.close()
        folder = os.path.dirname(os.path.abspath(path))
        if os.access(folder, os.W_OK) or not _wants_shm(exc):
            raise StoreError(f"cannot read {path} as a SQLite database: {exc}") from None
        conn = _connect_immutable(path)
    try:
        check_ours(conn, path)
    except BaseException:
        conn.close()
        raise
    return conn


def _connect_immutable(path: str) -> sqlite3.Connection:
    """``immutable=1`` once :func:`connect_readonly`'s conditions hold, else the reason."""
    folder = os.path.dirname(os.path.abspath(path))
    wal = path + "-wal"
    if os.path.exists(wal) and os.path.getsize(wal) > 0:
        raise StoreError(
            f"cannot read {path}: its last commits are still in {os.path.basename(wal)} and "
            f"its folder {folder} is read-only, so SQLite cannot open them; copy the database "
            "with its -wal file into a writable folder and read the copy"
        )
    holder = current_holder(path)
    if holder is not None:
        raise StoreError(
            f"cannot read {path}: pid {holder.get('pid', '?')} is writing it and its folder "
            f"{folder} is read-only for this user, so SQLite cannot share its -shm file"
        )
    return sqlite3.connect(_uri(path, mode="ro", immutable="1"), uri=True,
                           check_same_thread=False)  # fmt: skip


def _wants_shm(exc: sqlite3.DatabaseError) -> bool:
    """Whether SQLite refused a read-only open for want of its ``-shm`` file: it says
    SQLITE_READONLY_DIRECTORY or SQLITE_READONLY_CANTINIT, or SQLITE_CANTOPEN when a ``-wal``
    file is there but its ``-shm`` cannot be made."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    return name.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN"))
