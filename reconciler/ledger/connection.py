"""The ledger file's SQLite connection and its transactions, handed to every collaborator of the store.

`check_file`, `connect` and `create_file` open and make the file. `LedgerConnection` owns the one
sqlite3 connection of an open ledger: short read snapshots (`reading`), `BEGIN IMMEDIATE` write
transactions that bump the serial once unless told otherwise (`transaction`), plain-SQL row reads and
writes, and, for migrating an older ledger's schema only, a sqlite-utils `Database` over the same
connection (imported then, so no other command pays for it). Every sqlite error becomes a LedgerError
naming the file; an RLock serializes every call so threads may share one ledger.
"""

from __future__ import annotations

import importlib.abc
import os
import sqlite3
import sys
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler.errors import LedgerError

if TYPE_CHECKING:  # imported for migrations only (see database)
    from sqlite_utils import Database

BUSY_TIMEOUT_SECONDS = 5.0
# A writer checkpoints the WAL (see LedgerConnection.bound_wal) once `<ledger>-wal` is bigger than this.
# SQLite's own autocheckpoint (every 1000 pages, ~4 MB) is PASSIVE: it never waits for readers and
# never shrinks the file, so a long-lived reader lets the WAL grow until it stops reading.
WAL_LIMIT_BYTES = 16 * 1024 * 1024
SQLITE_MAGIC = b"SQLite format 3\x00"

Row = dict[str, Any]
Params = tuple[object, ...]


def not_a_ledger(path: Path | str, why: str) -> LedgerError:
    """The refusal of a file that is no ledger: it is left untouched."""
    return LedgerError(
        f"{path} is not a reconciler ledger ({why}); it was left untouched. Point `ledger:` in "
        "reconciler.yaml at the right file, or move this one away to start a new ledger."
    )


@contextmanager
def sqlite_errors(path: Path) -> Iterator[None]:
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
            raise not_a_ledger(path, text) from exc
        raise LedgerError(f"{path}: {text}") from exc


def check_file(path: Path) -> None:
    """Refuse what cannot be a ledger before SQLite sees it: a directory, an empty or foreign file."""
    if path.is_dir():
        raise LedgerError(f"{path} is a directory; the ledger must be a file (see `ledger:` in reconciler.yaml)")
    try:
        with path.open("rb") as fh:
            head = fh.read(len(SQLITE_MAGIC))
    except OSError as exc:
        raise LedgerError(f"cannot read the ledger {path}: {exc.strerror}") from exc
    if not head:
        raise not_a_ledger(path, "the file is empty")
    if head != SQLITE_MAGIC:
        raise not_a_ledger(path, "not an SQLite database")


def connect(target: str, path: Path, *, uri: bool = False) -> sqlite3.Connection:
    """A connection in autocommit mode (we issue BEGIN ourselves) with foreign keys on."""
    with sqlite_errors(path):
        conn = sqlite3.connect(
            target, uri=uri, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None, check_same_thread=False
        )
        conn.execute("PRAGMA foreign_keys = ON")
    return conn


class _NoNumpy(importlib.abc.MetaPathFinder):
    """An import finder that refuses numpy and pandas, while sqlite-utils is imported."""

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> None:
        if fullname.partition(".")[0] in ("numpy", "pandas"):
            raise ModuleNotFoundError(f"{fullname} is hidden while sqlite-utils is imported", name=fullname)
        return None


def _import_sqlite_utils() -> None:
    """Import sqlite-utils without numpy and pandas: it loads them where installed (~0.3 s) only to map
    their values on insert, and the ledger never passes any. Where they are already loaded it uses them."""
    if "sqlite_utils" in sys.modules:
        return
    finder = _NoNumpy()
    sys.meta_path.insert(0, finder)
    try:
        import sqlite_utils  # noqa: F401
    finally:
        sys.meta_path.remove(finder)


def database(conn: sqlite3.Connection) -> Database:
    """sqlite-utils over a connection, imported only here: the read path never pays for it.

    Its writes join the transaction already open on the connection (as savepoints), so they commit
    or roll back with ours.
    """
    _import_sqlite_utils()
    from sqlite_utils import Database

    return Database(conn, recursive_triggers=False, execute_plugins=False)


def create_file(path: Path, build: Callable[[sqlite3.Connection], None]) -> None:
    """Make a new ledger file: `build` fills it in one transaction beside `path`, then it is linked into
    place, so no one ever sees a half-made one (when another process linked one first, theirs stays)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LedgerError(f"cannot create the ledger's directory {path.parent}: {exc.strerror}") from exc
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        conn = connect(str(tmp), tmp)
        try:
            with sqlite_errors(path):
                conn.execute("BEGIN IMMEDIATE")
                build(conn)
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


def rows_of(cursor: sqlite3.Cursor) -> list[Row]:
    """A cursor's rows as dicts keyed by column name."""
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row)) for row in cursor]


class Transaction:
    """An open write transaction; `bump = False` commits without moving the serial."""

    def __init__(self, bump: bool):
        self.bump = bump


def wal_path(path: Path) -> Path:
    """The ledger's write-ahead log, beside it."""
    return path.with_name(path.name + "-wal")


def wal_size(path: Path) -> int:
    """The size in bytes of the ledger's `-wal` file (0 when there is none)."""
    try:
        return wal_path(path).stat().st_size
    except OSError:
        return 0


class Checkpoint:
    """What `PRAGMA wal_checkpoint` reported: whether it was blocked, the WAL's frames and those copied back."""

    def __init__(self, row: tuple[int, int, int] | None):
        busy, log, done = row if row is not None else (0, -1, -1)
        self.busy = bool(busy)
        self.frames = log  # -1 when the file is not in WAL mode (nothing to checkpoint)
        self.copied = done

    @property
    def complete(self) -> bool:
        """Every frame of the WAL is in the database file and the WAL was reset."""
        return not self.busy and self.frames == self.copied


def checkpoint(conn: sqlite3.Connection, mode: str, *, wait: float | None = None) -> Checkpoint:
    """`PRAGMA wal_checkpoint(mode)`; `wait` seconds (None: the connection's busy timeout) for other
    connections' locks. It is safe beside live readers and writers: SQLite only copies the frames no
    reader still needs and never waits longer than the busy timeout."""
    if mode not in ("PASSIVE", "FULL", "RESTART", "TRUNCATE"):
        raise ValueError(f"no checkpoint mode {mode!r}")
    if wait is not None:
        conn.execute(f"PRAGMA busy_timeout = {int(wait * 1000)}")
    try:
        return Checkpoint(conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchone())
    finally:
        if wait is not None:
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_SECONDS * 1000)}")


class LedgerConnection:
    """The connection of one open ledger file, with its read snapshots and write transactions."""

    def __init__(self, conn: sqlite3.Connection, path: Path, *, read_only: bool,
                 wal_limit_bytes: int = WAL_LIMIT_BYTES):
        self.path = path
        self.read_only = read_only
        self.wal_limit_bytes = wal_limit_bytes
        self.conn = conn
        self.lock = threading.RLock()
        self.closed = False
        self._db: Database | None = None

    # --- transactions ---------------------------------------------------------------------------

    @contextmanager
    def reading(self) -> Iterator[None]:
        """A short read transaction: one consistent snapshot, sqlite errors named by file."""
        with self.lock, sqlite_errors(self.path):
            self.check_open()
            self.conn.execute("BEGIN")
            try:
                yield
            finally:
                if self.conn.in_transaction:
                    self.conn.execute("COMMIT")

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """BEGIN IMMEDIATE ... COMMIT, bumping the serial once unless the body says otherwise."""
        if self.read_only:
            raise LedgerError(f"{self.path} was opened read-only; this command must not change it")
        tx = Transaction(bump=True)
        with self.lock, sqlite_errors(self.path):
            self.check_open()
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield tx
                if tx.bump:
                    self.conn.execute("UPDATE meta SET serial = serial + 1 WHERE id = 1")
                self.conn.execute("COMMIT")
            except BaseException:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise
            self.bound_wal()

    def bound_wal(self) -> Checkpoint | None:
        """After a commit: when the `-wal` file outgrew `wal_limit_bytes`, copy it back into the ledger.

        First a TRUNCATE checkpoint that waits for no one (it empties the file when no other
        connection is mid-transaction); when another connection blocks it, a PASSIVE one copies
        every frame no reader still needs, and the next commit tries again. A writer is never held
        up, and the file shrinks as soon as the long-lived reader is gone. None when under the bound.
        """
        if wal_size(self.path) <= self.wal_limit_bytes:
            return None
        with sqlite_errors(self.path):
            done = checkpoint(self.conn, "TRUNCATE", wait=0)
            if not done.complete:
                done = checkpoint(self.conn, "PASSIVE")
        return done

    def check_open(self) -> None:
        if self.closed:
            raise LedgerError(f"{self.path}: the ledger was already closed")

    def close(self) -> None:
        """Close the connection, leaving every commit in the ledger file itself, not only in its WAL.

        A writer checkpoints (TRUNCATE: every frame copied back, the `-wal` file emptied) before it
        lets go, also when other connections are open (git commits `ledger.db`, never `-wal`; see
        `reconciler ledger checkpoint` for a writer that died). The last writer to leave then turns
        WAL off so the file rests alone.
        """
        with self.lock:
            if self.closed:
                return
            self.closed = True
            if not self.read_only:
                try:
                    checkpoint(self.conn, "TRUNCATE")
                except sqlite3.Error:
                    pass  # another writer kept it busy: its own close checkpoints what is left
                try:
                    self.conn.execute("PRAGMA busy_timeout = 0")
                    self.conn.execute("PRAGMA journal_mode = DELETE")
                except sqlite3.OperationalError:
                    pass  # another connection is open; the last one to close does it
            self.conn.close()

    # --- reads (plain SQL: no sqlite-utils on the read path) ------------------------------------

    def meta_row(self) -> Row | None:
        """The meta row, inside the caller's snapshot; not_a_ledger when there is no meta table."""
        try:
            return self.row("SELECT * FROM meta WHERE id = 1")
        except sqlite3.OperationalError as exc:
            raise not_a_ledger(self.path, str(exc)) from exc

    def execute(self, sql: str, params: Params = ()) -> sqlite3.Cursor:
        return self.conn.execute(sql, params)

    def rows(self, sql: str, params: Params = ()) -> list[Row]:
        return rows_of(self.conn.execute(sql, params))

    def iter_rows(self, sql: str, params: Params = ()) -> Iterator[Row]:
        """Rows streamed from one cursor, inside the caller's transaction (for reads of every row)."""
        cursor = self.conn.execute(sql, params)
        names = [d[0] for d in cursor.description]
        for values in cursor:
            yield dict(zip(names, values))

    def row(self, sql: str, params: Params = ()) -> Row | None:
        rows = self.rows(sql, params)
        return rows[0] if rows else None

    def value(self, sql: str, params: Params = ()) -> Any:
        """The first column of the first row (the query must return one)."""
        return self.conn.execute(sql, params).fetchone()[0]

    # --- writes (inside the caller's transaction; sqlite-utils only for migrations) -----------

    @property
    def db(self) -> Database:
        """sqlite-utils over this connection, made when a migration needs it."""
        if self._db is None:
            self._db = database(self.conn)
        return self._db

    def insert(self, table: str, row: Mapping[str, object]) -> int:
        """INSERT one row inside the caller's transaction; returns its rowid.

        Plain SQL, like the PostgreSQL connection's (sqlite-utils' Table.insert reads the table's schema
        again on every call)."""
        names = ", ".join(f'"{k}"' for k in row)
        cursor = self.conn.execute(f'INSERT INTO "{table}" ({names}) VALUES ({", ".join("?" * len(row))})',
                                   tuple(row.values()))
        if cursor.lastrowid is None:
            raise LedgerError(f"{self.path}: inserting into {table} gave no row id")
        return cursor.lastrowid

    def update(self, table: str, pk: str | int, changes: Mapping[str, object], what: str) -> None:
        """UPDATE the row with this primary key; LedgerError naming `what` when there is none."""
        sets = ", ".join(f'"{k}" = ?' for k in changes)
        if self.conn.execute(f'UPDATE "{table}" SET {sets} WHERE "id" = ?', (*changes.values(), pk)).rowcount != 1:
            raise self._not_found(what)

    def delete(self, table: str, pk: str | int, what: str) -> None:
        """DELETE the row with this primary key; LedgerError naming `what` when there is none."""
        if self.conn.execute(f'DELETE FROM "{table}" WHERE "id" = ?', (pk,)).rowcount != 1:
            raise self._not_found(what)

    def _not_found(self, what: str) -> LedgerError:
        return LedgerError(f"{self.path}: {what} was not found (0 rows changed); nothing was recorded")
