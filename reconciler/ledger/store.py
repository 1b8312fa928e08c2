"""The ledger's SQLite store (DESIGN §6): jobs, runs, events, the run lock.

`Ledger` implements `LedgerStore` (interface.py), the operations the engine and the commands use,
which a future PostgreSQL store implements too. `Ledger` it opens, validates, creates and migrates
the file and composes three collaborators over one LedgerConnection (connection.py): the job book
(jobs.py: runs and the job lifecycle), the event log (events.py; chain.py keeps the hash chain) and
the lease lock (lock.py). Rows map to values in rows.py; the schema is schema.py's one definition.
Choices a caller relies on:

- **Reads never write.** `Ledger.open_read` connects with `mode=ro` and returns None when the file is
  missing. Writers keep the file in WAL mode only while they are connected and switch it back to a
  rollback journal when the last of them closes, so at rest the ledger is one self-contained file and
  a reader creates no `-wal`/`-shm` files and changes no byte. Reads never import sqlite-utils.
- **Checkpoints**: git commits `ledger.db`, never its `-wal` (state/.gitignore), so every commit must
  reach the file itself. A closing writer checkpoints (TRUNCATE) even when other connections stay
  open; a writer that died (SIGKILL) leaves its last commits only in the `-wal`, which
  `open_checkpoint` + `checkpoint` (`reconciler ledger checkpoint`, run by CI before `git add`) copy
  back. After each write transaction a writer also checkpoints once the `-wal` outgrows
  `wal_limit_bytes` (connection.py: bound_wal), so a long-lived reader cannot make it grow forever.
- **Writes** are `BEGIN IMMEDIATE` transactions with a 5 s busy timeout and plain-SQL rows (sqlite-utils
  only migrates an older ledger's schema); every sqlite error becomes a LedgerError naming the file; an
  update that should touch one row and finds none raises.
- **Durability**: writers run WAL with `synchronous = NORMAL`, so a commit is one append to the WAL
  without an fsync (the WAL is synced at checkpoints). A committed transaction survives the process
  dying at any point (SIGKILL, a crash: the data is in the OS's hands), which is what the intent-
  before-POST rule guards against. Only an OS crash or power loss can drop the last commits; a lost
  intent is then harmless, because its idempotency key is derived from (lineage, name, fingerprint,
  generation): the next run recomputes the same generation and key, and Zuora replays the job the
  lost intent had created instead of making a second one (within its key's retention, 24 h). A lost
  result just leaves the intent in doubt, which the next run resolves the same way.
- **`serial` pins a plan**: it is bumped exactly once by every transaction that changes jobs or
  appends an event on their behalf. Lock transactions (acquire, take-over, heartbeat, release, even
  when they append an audit event) and run bookkeeping (`start_run`, `finish_run`) never bump it:
  taking the lock must not make the saved plan the run is about to apply look stale.
- **Events** are only inserted (triggers refuse UPDATE and DELETE) and hash-chained as chain.py
  describes; `meta.head_hash` and `meta.events_count` move in the same transaction. Detail that looks
  like a secret is replaced by "<redacted>" before it is stored (rows.py says what counts).
- **Threads** share one connection (`check_same_thread=False`) and an RLock serializes every call,
  so the apply command's workers may call one Ledger concurrently; processes coordinate through
  SQLite's own locking.
- **Migrations** come from schema.py, forward only, run by `open_write` in one transaction; a new
  ledger is made from the same definition. Every schema version stays readable by the current read
  code, so `open_read` accepts older ledgers; a newer one is refused.
- **Results and sent files** are files under the repository's state/ (dataset.blobs.FileBlobs),
  committed with the ledger; the schema's `blobs` table (a PostgreSQL ledger's) stays empty here.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from reconciler.dataset.blobs import Blobs, FileBlobs
from reconciler.errors import LedgerError
from reconciler.ledger import schema
from reconciler.ledger.base import LedgerBase
from reconciler.ledger.chain import GENESIS_HASH
from reconciler.ledger.connection import (
    BUSY_TIMEOUT_SECONDS,
    WAL_LIMIT_BYTES,
    Checkpoint,
    LedgerConnection,
    check_file,
    Row,
    checkpoint,
    connect,
    create_file,
    sqlite_errors,
    wal_path,
    wal_size,
)
from reconciler.ledger.events import CALL_EVENTS, EVENT_TYPES, events_query
from reconciler.ledger.interface import Binding
from reconciler.ledger.jobs import COUNT_FIELDS
from reconciler.ledger.rows import REDACTED, Actor, now, redact
from reconciler.ledger.schema import SCHEMA_VERSION

if TYPE_CHECKING:
    from reconciler.ledger.interface import LedgerStore

# Actor, redact, REDACTED, COUNT_FIELDS, the event types and events_query live in the collaborators, re-exported so
# `reconciler.ledger.store` stays the one import for the ledger's whole public API.
__all__ = [
    "BUSY_TIMEOUT_SECONDS", "COUNT_FIELDS", "WAL_LIMIT_BYTES", "Checkpoint", "wal_path", "wal_size", "REDACTED", "SCHEMA_VERSION", "Actor", "Binding", "Ledger",
    "events_query", "redact", "CALL_EVENTS", "EVENT_TYPES",
]


def _new_ledger(conn: sqlite3.Connection, binding: Binding, version: int) -> None:
    """The schema of `version` and the meta row of a new ledger bound to this environment."""
    _fill(conn, version, {"meta": [{
        "id": 1, "lineage": str(uuid.uuid4()), "serial": 0, "schema_version": version,
        "environment": binding.environment, "base_url": binding.base_url, "head_hash": GENESIS_HASH,
        "events_count": 0, "created_at": now(),
    }]})


def _fill(conn: sqlite3.Connection, version: int, tables: Mapping[str, list[Row]]) -> None:
    """Make the schema of `version` on a new file's connection and insert these rows (each table's rows
    have the same columns, as a snapshot reads them)."""
    for statement in schema.create(version):
        conn.execute(statement)
    for name, rows in tables.items():
        if rows:
            columns = list(rows[0])
            names = ", ".join(f'"{c}"' for c in columns)
            conn.executemany(f'INSERT INTO "{name}" ({names}) VALUES ({", ".join("?" * len(columns))})',
                             [tuple(row[c] for c in columns) for row in rows])


def create_copy(path: Path, meta: Row, tables: Mapping[str, list[Row]]) -> None:
    """Make a new ledger file holding exactly these rows (`ledger copy`); LedgerError when `path` exists."""
    path = Path(path)
    if path.exists():
        raise LedgerError(f"{path} already exists; `ledger copy` only makes a new ledger (move that one away first)")

    create_file(path, lambda conn: _fill(conn, meta["schema_version"], {"meta": [dict(meta)], **tables}))


# --- the SQLite store -----------------------------------------------------------------------------


class Ledger(LedgerBase):
    """One open SQLite ledger file (a LedgerStore); build it with `open_read` or `open_write`."""

    path: Path
    _c: LedgerConnection

    def __init__(self, conn: sqlite3.Connection, path: Path, binding: Binding, *, read_only: bool,
                 wal_limit_bytes: int = WAL_LIMIT_BYTES):
        super().__init__(LedgerConnection(conn, path, read_only=read_only, wal_limit_bytes=wal_limit_bytes), binding)
        self.path = path

    @classmethod
    def open_read(cls, path: Path, binding: Binding) -> Ledger | None:
        """Open for reading only; None when there is no ledger yet. Never creates or changes a byte."""
        path = Path(path)
        if not path.exists():
            return None
        check_file(path)
        return cls._over(connect(path.resolve().as_uri() + "?mode=ro", path, uri=True), path, binding, read_only=True)

    @classmethod
    def open_write(cls, path: Path, binding: Binding, *, migrate_to: int = SCHEMA_VERSION,
                   wal_limit_bytes: int = WAL_LIMIT_BYTES) -> Ledger:
        """Open for writing: create the file (and its directories) if needed, then migrate it.

        `migrate_to` stops at an older schema version; tests use it to build old ledgers.
        `wal_limit_bytes` bounds the `-wal` file (LedgerConnection.bound_wal); tests make it small.
        """
        path = Path(path)
        if not 1 <= migrate_to <= SCHEMA_VERSION:
            raise ValueError(f"schema version {migrate_to} does not exist")
        if not path.exists():
            create_file(path, lambda conn: _new_ledger(conn, binding, migrate_to))
        check_file(path)
        conn = connect(str(path), path)
        try:
            ledger = cls(conn, path, binding, read_only=False, wal_limit_bytes=wal_limit_bytes)
            with sqlite_errors(path):
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = NORMAL")  # why this is safe: the module docstring
            ledger._migrate(migrate_to)
            return ledger
        except BaseException:
            conn.close()
            raise

    @classmethod
    def open_checkpoint(cls, path: Path, binding: Binding) -> Ledger:
        """Open an existing ledger only to checkpoint it (`checkpoint`): never created, never migrated.

        Connecting runs SQLite's recovery of a WAL that a dead writer left behind; the meta row
        (environment binding included) is checked through that WAL before anything is written.
        """
        path = Path(path)
        if not path.exists():
            raise LedgerError(f"there is no ledger at {path}: nothing to checkpoint (check `ledger:` in "
                              "reconciler.yaml and the environment)")
        check_file(path)
        return cls._over(connect(path.resolve().as_uri() + "?mode=rw", path, uri=True), path, binding, read_only=False)

    @classmethod
    def _over(cls, conn: sqlite3.Connection, path: Path, binding: Binding, *, read_only: bool) -> Ledger:
        """A Ledger over `conn`; the connection is closed when the file is no ledger of this environment."""
        try:
            return cls(conn, path, binding, read_only=read_only)
        except BaseException:
            conn.close()
            raise

    def checkpoint(self) -> Checkpoint:
        """Copy every commit in the WAL back into the ledger file and empty the `-wal` file (TRUNCATE).

        Safe beside live readers and writers (SQLite's locking); it waits up to the busy timeout for
        them. The result says whether it completed (`complete`): a run writing all along can keep it
        from finishing, and what that run commits afterwards lands in the WAL again until it closes.
        """
        with self._c.lock, sqlite_errors(self.path):
            self._c.check_open()
            return checkpoint(self._c.conn, "TRUNCATE")

    def _migrate_to(self, version: int) -> None:
        schema.migrate(self._c.db, version)

    def _blob_store(self, root: Path) -> Blobs:
        return FileBlobs(root)  # beside the ledger under state/, committed with it; the blobs table stays empty


if TYPE_CHECKING:

    def _is_a_store(ledger: Ledger) -> LedgerStore:  # mypy checks here that Ledger implements the protocol
        return ledger
