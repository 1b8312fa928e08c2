"""The SQLite ledger (DESIGN §6): jobs, runs, the hash-chained event log and the run lock.

The only sqlite-utils user: this module opens, validates, creates and migrates the file and owns its
connection and transactions. `Ledger` gets its queries from ledgerreads.py, its records from
ledgerwrites.py and the run lock from locks.py (mixins in plain SQL on this connection); rows map to
values in ledgerrows.py and events chain as chain.py describes. Choices a caller relies on:

- **Reads never write.** `Ledger.open_read` connects with `mode=ro` and returns None when the file is
  missing. Writers keep the file in WAL mode only while they are connected and switch it back to a
  rollback journal when the last of them closes, so at rest the ledger is one self-contained file and
  a reader creates no `-wal`/`-shm` files and changes no byte.
- **Writes** are `BEGIN IMMEDIATE` transactions with a 5 s busy timeout; every sqlite error becomes a
  LedgerError naming the file; an UPDATE that should touch one row and touched none raises.
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
  like a secret is replaced by "<redacted>" before it is stored (ledgerrows.py says what counts).
- **Threads** share one connection (`check_same_thread=False`) and an RLock serializes every call,
  so the apply command's workers may call one Ledger concurrently; processes coordinate through
  SQLite's own locking.
- **Migrations** are the functions in MIGRATIONS (ledgerschema.py), forward only, run by `open_write`
  in one transaction on a sqlite-utils Database made here; MIGRATIONS[i] brings the schema to version
  i + 1. A new ledger is made from CURRENT_SCHEMA, the same schema in plain SQL. Every schema version stays readable
  by the current read code, so `open_read` accepts older ledgers; a newer one is refused.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from reconciler.errors import LedgerError
from reconciler.ledger.chain import GENESIS_HASH
from reconciler.ledger.lock import LockMethods
from reconciler.ledger.reads import ReadMethods, events_query
from reconciler.ledger.rows import REDACTED, Actor, now, redact
from reconciler.ledger.schema import CURRENT_SCHEMA, MIGRATIONS, SCHEMA_VERSION
from reconciler.ledger.writes import COUNT_FIELDS, WriteMethods

if TYPE_CHECKING:  # imported when a schema is built (see _database): it pulls in numpy when installed
    from sqlite_utils import Database

# Actor, redact, REDACTED, COUNT_FIELDS and events_query live in the stdlib-only parts and are
# re-exported so `reconciler.ledger.store` stays the one import for the ledger's whole public API.
__all__ = [
    "BUSY_TIMEOUT_SECONDS", "COUNT_FIELDS", "MIGRATIONS", "REDACTED", "SCHEMA_VERSION", "Actor", "Binding",
    "Ledger", "events_query", "redact",
]

BUSY_TIMEOUT_SECONDS = 5.0
_SQLITE_MAGIC = b"SQLite format 3\x00"


@dataclass(frozen=True)
class Binding:
    """The environment a ledger belongs to; a ledger refuses to serve any other.

    `environment` is the key used in paths (Settings.env_key: the name, or a URL's host-port), so
    the refusal can point at the right ledger; `base_url` is compared without a trailing slash.
    """

    environment: str
    base_url: str


# --- opening --------------------------------------------------------------------------------------


def _not_a_ledger(path: Path, why: str) -> LedgerError:
    return LedgerError(
        f"{path} is not a reconciler ledger ({why}); it was left untouched. Point `ledger:` in "
        "reconciler.yaml at the right file, or move this one away to start a new ledger."
    )


@contextmanager
def _sqlite_errors(path: Path) -> Iterator[None]:
    """Turn sqlite errors into LedgerError naming the file."""
    try:
        yield
    except sqlite3.Error as exc:
        text = str(exc)
        if "locked" in text or "busy" in text:
            raise LedgerError(
                f"{path}: the ledger stayed busy for {BUSY_TIMEOUT_SECONDS:.0f}s (another reconciler "
                "process is writing to it); try again"
            ) from exc
        if "not a database" in text or "malformed" in text:
            raise _not_a_ledger(path, text) from exc
        raise LedgerError(f"{path}: {text}") from exc


def _check_file(path: Path) -> None:
    """Refuse what cannot be a ledger before SQLite sees it: a directory, an empty or foreign file."""
    if path.is_dir():
        raise LedgerError(f"{path} is a directory; the ledger must be a file (see `ledger:` in reconciler.yaml)")
    try:
        with path.open("rb") as fh:
            head = fh.read(len(_SQLITE_MAGIC))
    except OSError as exc:
        raise LedgerError(f"cannot read the ledger {path}: {exc.strerror}") from exc
    if not head:
        raise _not_a_ledger(path, "the file is empty")
    if head != _SQLITE_MAGIC:
        raise _not_a_ledger(path, "not an SQLite database")


def _connect(target: str, path: Path, *, uri: bool = False) -> sqlite3.Connection:
    with _sqlite_errors(path):
        conn = sqlite3.connect(
            target, uri=uri, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None, check_same_thread=False
        )
        conn.execute("PRAGMA foreign_keys = ON")
    return conn


def _database(conn: sqlite3.Connection) -> Database:
    """sqlite-utils over our connection, imported only here: reads and already-current writers never pay for it."""
    from sqlite_utils import Database

    return Database(conn, recursive_triggers=False, execute_plugins=False)


def _create(path: Path, binding: Binding, version: int) -> None:
    """Build a new ledger beside `path` and link it into place, so no one ever sees a half-made one."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LedgerError(f"cannot create the ledger's directory {path.parent}: {exc.strerror}") from exc
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        conn = _connect(str(tmp), tmp)
        try:
            with _sqlite_errors(path):
                conn.execute("BEGIN IMMEDIATE")
                if version == SCHEMA_VERSION:  # the usual case: the current schema, without sqlite-utils
                    for statement in CURRENT_SCHEMA:
                        conn.execute(statement)
                else:  # an older version (tests build old ledgers): its migrations
                    db = _database(conn)
                    for migration in MIGRATIONS[:version]:
                        migration(db)
                conn.execute(
                    "INSERT INTO meta (id, lineage, serial, schema_version, environment, base_url, head_hash, "
                    "events_count, created_at) VALUES (1, ?, 0, ?, ?, ?, ?, 0, ?)",
                    (str(uuid.uuid4()), version, binding.environment, binding.base_url, GENESIS_HASH, now()),
                )
                conn.execute("COMMIT")
        finally:
            conn.close()
        try:
            os.link(tmp, path)
        except FileExistsError:  # another process created it first: theirs is the ledger
            return
        if os.name == "posix":  # make the new name as durable as the intents soon written under it
            fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    except OSError as exc:
        raise LedgerError(f"cannot create the ledger {path}: {exc.strerror or exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)


class _Tx:
    """An open write transaction; `bump = False` commits without moving the serial."""

    def __init__(self, bump: bool):
        self.bump = bump


class Ledger(ReadMethods, WriteMethods, LockMethods):
    """One open ledger file; build it with `open_read` or `open_write`."""

    def __init__(self, conn: sqlite3.Connection, path: Path, binding: Binding, *, read_only: bool):
        self.path = path
        self.read_only = read_only
        self._conn = conn
        self._lock = threading.RLock()
        self._closed = False
        self._run_actors: dict[int, str | None] = {}  # run id -> actor label, for events (ledgerwrites)
        meta = self._meta(binding)
        self.lineage: str = meta["lineage"]
        self.schema_version: int = meta["schema_version"]

    @classmethod
    def open_read(cls, path: Path, binding: Binding) -> Ledger | None:
        """Open for reading only; None when there is no ledger yet. Never creates or changes a byte."""
        path = Path(path)
        if not path.exists():
            return None
        _check_file(path)
        conn = _connect(path.resolve().as_uri() + "?mode=ro", path, uri=True)
        try:
            return cls(conn, path, binding, read_only=True)
        except BaseException:
            conn.close()
            raise

    @classmethod
    def open_write(cls, path: Path, binding: Binding, *, migrate_to: int = SCHEMA_VERSION) -> Ledger:
        """Open for writing: create the file (and its directories) if needed, then migrate it.

        `migrate_to` stops at an older schema version; tests use it to build old ledgers.
        """
        path = Path(path)
        if not 1 <= migrate_to <= SCHEMA_VERSION:
            raise ValueError(f"schema version {migrate_to} does not exist")
        if not path.exists():
            _create(path, binding, migrate_to)
        _check_file(path)
        conn = _connect(str(path), path)
        try:
            ledger = cls(conn, path, binding, read_only=False)
            with _sqlite_errors(path):
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = NORMAL")  # why this is safe: the module docstring
            ledger._migrate(migrate_to)
            return ledger
        except BaseException:
            conn.close()
            raise

    def _meta(self, binding: Binding) -> dict:
        """Read and check meta: a ledger, of a schema this code knows, bound to this environment."""
        with self._reading():
            try:
                row = self._row("SELECT * FROM meta WHERE id = 1")
            except sqlite3.OperationalError as exc:
                raise _not_a_ledger(self.path, str(exc)) from exc
        version = row.get("schema_version") if row is not None else None
        if not isinstance(version, int):
            raise _not_a_ledger(self.path, "it has no meta row with a schema version")
        if not {"environment", "base_url"} <= row.keys():
            raise _not_a_ledger(self.path, "its meta row names no environment")
        if version > SCHEMA_VERSION:
            raise LedgerError(
                f"{self.path} has ledger schema version {version}, newer than this reconciler knows "
                f"({SCHEMA_VERSION}); upgrade reconciler to use it. The file was left untouched."
            )
        expected = (binding.environment, binding.base_url.rstrip("/"))
        if (row["environment"], (row["base_url"] or "").rstrip("/")) != expected:
            raise LedgerError(
                f"{self.path}: this ledger belongs to environment {row['environment']} ({row['base_url']}), "
                f"not {binding.environment} ({binding.base_url}); use the ledger path for "
                f"{binding.environment}, e.g. state/{binding.environment}/ledger.db"
            )
        return row

    def _migrate(self, target: int) -> None:
        if self.schema_version >= target:
            return
        with self._transaction() as tx:
            tx.bump = False  # the schema changed, not the records: a saved plan stays valid
            current = self._conn.execute("SELECT schema_version FROM meta WHERE id = 1").fetchone()[0]
            db = _database(self._conn)
            for version in range(current + 1, target + 1):
                MIGRATIONS[version - 1](db)
                self._conn.execute("UPDATE meta SET schema_version = ? WHERE id = 1", (version,))
        self.schema_version = max(self.schema_version, target)

    def close(self) -> None:
        """Close the connection; the last writer to leave turns WAL off so the file rests alone."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if not self.read_only:
                try:
                    self._conn.execute("PRAGMA busy_timeout = 0")
                    self._conn.execute("PRAGMA journal_mode = DELETE")
                except sqlite3.OperationalError:
                    pass  # another connection is open; the last one to close does it
            self._conn.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- plumbing ---------------------------------------------------------------------------------

    @contextmanager
    def _reading(self) -> Iterator[None]:
        """A short read transaction: one consistent snapshot, sqlite errors named by file."""
        with self._lock, _sqlite_errors(self.path):
            self._check_open()
            self._conn.execute("BEGIN")
            try:
                yield
            finally:
                if self._conn.in_transaction:
                    self._conn.execute("COMMIT")

    @contextmanager
    def _transaction(self) -> Iterator[_Tx]:
        """BEGIN IMMEDIATE ... COMMIT, bumping the serial once unless the body says otherwise."""
        if self.read_only:
            raise LedgerError(f"{self.path} was opened read-only; this command must not change it")
        tx = _Tx(bump=True)
        with self._lock, _sqlite_errors(self.path):
            self._check_open()
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield tx
                if tx.bump:
                    self._conn.execute("UPDATE meta SET serial = serial + 1 WHERE id = 1")
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise

    def _check_open(self) -> None:
        if self._closed:
            raise LedgerError(f"{self.path}: the ledger was already closed")

    def _rows(self, sql: str, params: tuple = ()) -> list[dict]:
        cursor = self._conn.execute(sql, params)
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row)) for row in cursor]

    def _row(self, sql: str, params: tuple = ()) -> dict | None:
        rows = self._rows(sql, params)
        return rows[0] if rows else None

    def _update(self, sql: str, params: tuple, what: str) -> None:
        """Run an UPDATE/DELETE that must touch exactly one row."""
        count = self._conn.execute(sql, params).rowcount
        if count != 1:
            raise LedgerError(f"{self.path}: {what} was not found ({count} rows changed); nothing was recorded")
