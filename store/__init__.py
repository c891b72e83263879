"""selfdev's event log: an append-only, hash-chained SQLite store (imports nothing else of selfdev).

Every step of a run is an event in the ``events`` table of one SQLite file (WAL mode):
``position`` (global order, the rowid, never reused), ``event_id`` (a UUIDv7: time-sortable),
``run_id``, ``stream_version`` (1..n within the run, unique with ``run_id``), ``type``,
``type_version``, ``occurred_at`` (ISO-8601 UTC with microseconds), ``source`` (the plugin),
``payload`` (canonical JSON), ``prev_hash`` and ``hash``. Triggers reject UPDATE and DELETE on
``events`` and ``blobs``. Content-addressed payloads (code, prompts, completions) live in
``blobs`` (:mod:`.blobs`).

The store is a recorder: it validates, chains and returns events but never interprets a
``type`` or a payload. What a run means (its status, candidates, scores) is the engine's fold
(``selfdev.engine.state``), the one read model. What the store does know of a run is its
stream: :meth:`EventStore.streams` lists each run's first and last position, version (its
event count), head hash and first and last ``occurred_at``, read from the envelopes alone.

The contract (changing any of it changes every stored hash):

* **Canonical JSON** is ``json.dumps(value, sort_keys=True, separators=(",", ":"),
  ensure_ascii=False, allow_nan=False)``, hashed as UTF-8 (:func:`canonical_json`). NaN and
  Infinity are rejected; payloads are JSON objects and are stored in this form.
* **Hashes** carry their algorithm: ``"b2:" + blake2b(data, digest_size=32).hexdigest()``
  (:func:`content_hash`). A blob's ref is the hash of its bytes.
* **An event's hash** is ``content_hash(canonical_json({"prev": prev_hash, "envelope":
  {event_id, run_id, stream_version, type, type_version, occurred_at, source}, "payload":
  payload}))``; ``prev_hash`` is the hash of the run's previous event, ``""`` for its first.
  The stored payload text is hashed as it is (never re-serialized), so any byte edited breaks
  the hash. :meth:`EventStore.verify` (:mod:`.verify`) re-derives every hash, link and
  version from what reads back and names the first broken position; with no run given it
  also catches deleted rows through holes in ``position`` (an AUTOINCREMENT rowid, never
  reused) and ``sqlite_sequence``, and checks every blob against its ref (``first_broken`` is
  then the first event whose payload mentions the blob, or None). A chain cannot tell a run
  whose last events were cut off (with ``sqlite_sequence`` reset) from a shorter run: that
  takes the run's head hash kept elsewhere, ``verify(run_id, head=...)``, which fails unless
  the run still reaches that head.

**One writer per file.** A writable store on a file holds ``flock(LOCK_EX | LOCK_NB)`` on
``<real path>.lock`` for its lifetime; the file holds ``{pid, host, command, since, writer}``. Any
other writer, in this process or another, gets :class:`WriterLockedError` naming the holder.
The kernel releases the lock when the holder dies, even by ``kill -9``. Readers open with
``readonly=True`` (``file:...?mode=ro``; no lock, no migrations) and follow a live run by
calling ``read(after=last_position)`` again. In a read-only folder, where SQLite cannot create
the ``-shm`` file WAL needs, a finished log is opened ``immutable=1`` when no writer can exist
(:func:`.opening.connect_readonly`).

**Only selfdev's files.** A writer marks its file with ``PRAGMA application_id`` "SDEV"
(migration ``m004``). A text file, another application's SQLite file (any other application
id, or tables that are not selfdev's), a read-only file or a file in a read-only folder is
refused with one :class:`StoreError` naming the file, before anything is written to it
(:mod:`.opening`).

Appends are atomic (one ``BEGIN IMMEDIATE`` transaction for all the rows of a batch) and
:class:`ConcurrencyError` guards ``expected_version``. Files use WAL with ``synchronous=NORMAL``:
a committed append survives a crash of the process; a power cut can lose the last commits but
never corrupts the log.

Example::

    with EventStore("runs.db", writer="selfdev run") as es:
        ref = es.put_blob("def f(x): return x")
        es.append("run-1", [NewEvent("run.started", {"domain": "tensors", "seed": 0})])
        es.append("run-1", [NewEvent("candidate.generated",
                                     {"candidate_id": "c1", "iteration": 1, "index": 0,
                                      "completion": ref})], expected_version=1)
        assert es.verify().ok
        assert [(s.run_id, s.version) for s in es.streams()] == [("run-1", 2)]

Existing files open as they are: a writable store applies the pending numbered migrations
(:mod:`.migrations`), none of which touches a row of ``events`` or ``blobs``.
"""

from .canonical import GENESIS_HASH, HASH_PREFIX, canonical_json, content_hash, event_hash
from .errors import (
    BlobNotFoundError,
    ConcurrencyError,
    InvalidEventError,
    ReadOnlyError,
    StoreError,
    WriterLockedError,
)
from .eventstore import EventStore
from .ids import new_event_id, new_event_ids, utc_now
from .migrations import MIGRATIONS
from .records import NewEvent, StoredEvent, Stream
from .verify import VerifyResult

__all__ = [
    "EventStore",
    "NewEvent",
    "StoredEvent",
    "Stream",
    "VerifyResult",
    "StoreError",
    "WriterLockedError",
    "ConcurrencyError",
    "InvalidEventError",
    "ReadOnlyError",
    "BlobNotFoundError",
    "canonical_json",
    "content_hash",
    "event_hash",
    "new_event_id",
    "new_event_ids",
    "utc_now",
    "GENESIS_HASH",
    "HASH_PREFIX",
    "MIGRATIONS",
]
