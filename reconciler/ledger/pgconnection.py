"""The connection of one PostgreSQL ledger: protocol.Connection's reads and writes on psycopg 3.

The twin of connection.LedgerConnection, so the job book, the event log, the lease lock and the audit
run on either store unchanged. Choices a caller relies on:

- **One writer at a time**, as SQLite's BEGIN IMMEDIATE gives: every write transaction starts by
  locking the meta row (`SELECT ... FOR UPDATE`), so intents, the lease lock and the serial bump are
  serialized across every process on every host, and each writer sees what the one before committed
  (READ COMMITTED reads afresh once the row lock is granted). A writer waits up to `LOCK_WAIT_SECONDS`.
- **Reads are snapshots**: REPEATABLE READ transactions, READ ONLY on a reader's connection, which the
  server itself opens with `default_transaction_read_only`, so a read command cannot write.
- SQL arrives with `?` placeholders (the dialect both stores share); every psycopg error becomes a
  LedgerError naming the ledger by its redacted URL and the setting it came from, never the password.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

import psycopg
from psycopg import errors as pg
from psycopg.pq import TransactionStatus
from psycopg.rows import dict_row

from reconciler.errors import LedgerError
from reconciler.ledger.connection import Params, Row, Transaction, not_a_ledger
from reconciler.ledger.url import LedgerUrl

LOCK_WAIT_SECONDS = 60.0
CONNECT_TIMEOUT_SECONDS = 10


@lru_cache(maxsize=512)
def dialect(sql: str) -> str:
    """Shared SQL in psycopg's spelling: `?` becomes `%s`, a literal `%` is doubled."""
    return sql.replace("%", "%%").replace("?", "%s")


def _message(exc: BaseException) -> str:
    primary = getattr(getattr(exc, "diag", None), "message_primary", None)
    return (primary or str(exc)).strip().splitlines()[0] if (primary or str(exc)).strip() else type(exc).__name__


def ledger_error(url: LedgerUrl, exc: BaseException, *, connecting: bool = False) -> LedgerError:
    """The LedgerError a psycopg error becomes: what happened, which ledger, which setting."""
    shown, text = url.display, url.scrub(_message(exc))
    if isinstance(exc, pg.LockNotAvailable | pg.QueryCanceled) and not connecting:
        return LedgerError(f"{shown}: the ledger stayed busy for {LOCK_WAIT_SECONDS:.0f}s (another reconciler "
                           "process is writing to it); try again")
    if connecting or isinstance(exc, psycopg.OperationalError):
        verb = "cannot connect to" if connecting else "lost the connection to"
        return LedgerError(f"{verb} the PostgreSQL ledger {shown} (set by {url.source}): {text}; check the URL, "
                           "that the server is up and the password (in the URL, PGPASSWORD or ~/.pgpass)")
    if isinstance(exc, pg.InsufficientPrivilege):
        return LedgerError(f"{shown}: {text}; the ledger's role needs to create, read and write its tables "
                           "(README: The ledger on PostgreSQL)")
    if isinstance(exc, pg.UndefinedTable | pg.UndefinedColumn):
        return not_a_ledger(shown, text)
    return LedgerError(f"{shown}: {text}")


@contextmanager
def pg_errors(url: LedgerUrl) -> Iterator[None]:
    try:
        yield
    except psycopg.Error as exc:
        raise ledger_error(url, exc) from exc


def connect(url: LedgerUrl, *, read_only: bool) -> psycopg.Connection:
    """An autocommit connection (we issue BEGIN ourselves); a reader's refuses every write."""
    options = f"-c lock_timeout={int(LOCK_WAIT_SECONDS * 1000)}"
    if read_only:
        options += " -c default_transaction_read_only=on"
    try:
        given = psycopg.conninfo.conninfo_to_dict(url.url).get("options")
        if given:
            options = f"{given} {options}"
        return psycopg.connect(url.url, autocommit=True, options=options, connect_timeout=CONNECT_TIMEOUT_SECONDS,
                               application_name="reconciler")
    except psycopg.Error as exc:
        raise ledger_error(url, exc, connecting=True) from exc


class PgConnection:
    """One PostgreSQL ledger's connection, with its read snapshots and write transactions."""

    def __init__(self, conn: psycopg.Connection, url: LedgerUrl, *, read_only: bool):
        self.url = url
        self.path = url.display
        self.read_only = read_only
        self.conn = conn
        self.lock = threading.RLock()
        self.closed = False

    def _begin(self, sql: str) -> None:
        # PostgreSQL only warns about a BEGIN inside a transaction, and the inner COMMIT would end the
        # outer one early: refuse nesting outright (SQLite raises for it on its own).
        status = self.conn.info.transaction_status
        if status in (TransactionStatus.INTRANS, TransactionStatus.ACTIVE):
            raise LedgerError(f"{self.path}: a ledger transaction was opened inside another one")
        if status == TransactionStatus.INERROR:  # an earlier cleanup failed part-way: finish it
            self.conn.execute("ROLLBACK")
        self.conn.execute(sql)  # on a lost connection (status UNKNOWN) this raises: pg_errors names it

    def _end(self, ok: bool) -> None:
        status = self.conn.info.transaction_status
        if status == TransactionStatus.INTRANS and ok:
            self.conn.execute("COMMIT")
        elif status in (TransactionStatus.INTRANS, TransactionStatus.INERROR):
            self.conn.execute("ROLLBACK")

    @contextmanager
    def reading(self) -> Iterator[None]:
        """A short read transaction: one consistent snapshot."""
        with self.lock, pg_errors(self.url):
            self.check_open()
            self._begin("BEGIN ISOLATION LEVEL REPEATABLE READ" + (" READ ONLY" if self.read_only else ""))
            ok = False
            try:
                yield
                ok = True
            finally:
                self._end_quietly(ok)

    def _end_quietly(self, ok: bool) -> None:
        try:
            self._end(ok)
        except psycopg.Error:
            if ok:
                raise

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """BEGIN; lock the meta row; ...; bump the serial once unless the body says otherwise; COMMIT."""
        if self.read_only:
            raise LedgerError(f"{self.path} was opened read-only; this command must not change it")
        tx = Transaction(bump=True)
        with self.lock, pg_errors(self.url):
            self.check_open()
            # one round trip each way: BEGIN with the row lock, and the bump with the COMMIT
            self._begin("BEGIN; SELECT serial FROM meta WHERE id = 1 FOR UPDATE")
            ok = False
            try:
                yield tx
                self.conn.execute("UPDATE meta SET serial = serial + 1 WHERE id = 1; COMMIT" if tx.bump else "COMMIT")
                ok = True
            finally:
                self._end_quietly(ok)

    def check_open(self) -> None:
        if self.closed:
            raise LedgerError(f"{self.path}: the ledger was already closed")

    def close(self) -> None:
        with self.lock:
            if not self.closed:
                self.closed = True
                self.conn.close()

    # --- reads ----------------------------------------------------------------------------------

    def meta_row(self) -> Row | None:
        """The meta row, inside the caller's snapshot; not_a_ledger when there is no meta table."""
        if self.value("SELECT to_regclass('meta') IS NOT NULL") is not True:
            raise not_a_ledger(self.path, "it has no meta table")
        return self.row("SELECT * FROM meta WHERE id = 1")

    def execute(self, sql: str, params: Params = ()) -> psycopg.Cursor[Any]:
        return self.conn.cursor().execute(dialect(sql), params)

    def rows(self, sql: str, params: Params = ()) -> list[Row]:
        return self.conn.cursor(row_factory=dict_row).execute(dialect(sql), params).fetchall()

    def iter_rows(self, sql: str, params: Params = ()) -> Iterator[Row]:
        yield from self.conn.cursor(row_factory=dict_row).execute(dialect(sql), params)

    def row(self, sql: str, params: Params = ()) -> Row | None:
        rows = self.rows(sql, params)
        return rows[0] if rows else None

    def value(self, sql: str, params: Params = ()) -> Any:
        return self.execute(sql, params).fetchone()[0]  # type: ignore[index]

    # --- writes ---------------------------------------------------------------------------------

    def insert(self, table: str, row: Mapping[str, object]) -> int:
        """INSERT one row inside the caller's transaction; returns its id."""
        names = ", ".join(f'"{k}"' for k in row)
        marks = ", ".join("%s" for _ in row)
        cursor = self.conn.cursor().execute(f'INSERT INTO "{table}" ({names}) VALUES ({marks}) RETURNING "id"',
                                            tuple(row.values()))
        found = cursor.fetchone()
        if found is None:
            raise LedgerError(f"{self.path}: inserting into {table} gave no row id")
        return found[0]

    def update(self, table: str, pk: str | int, changes: Mapping[str, object], what: str) -> None:
        """UPDATE the row with this id; LedgerError naming `what` when there is none."""
        sets = ", ".join(f'"{k}" = %s' for k in changes)
        cursor = self.conn.cursor().execute(f'UPDATE "{table}" SET {sets} WHERE "id" = %s', (*changes.values(), pk))
        if cursor.rowcount != 1:
            raise self._not_found(what)

    def delete(self, table: str, pk: str | int, what: str) -> None:
        """DELETE the row with this id; LedgerError naming `what` when there is none."""
        if self.conn.cursor().execute(f'DELETE FROM "{table}" WHERE "id" = %s', (pk,)).rowcount != 1:
            raise self._not_found(what)

    def _not_found(self, what: str) -> LedgerError:
        return LedgerError(f"{self.path}: {what} was not found (0 rows changed); nothing was recorded")
