"""The ledger's PostgreSQL store (DESIGN §6): the same ledger as store.Ledger, on a shared server.

`PgLedger` implements `LedgerStore` through base.LedgerBase, so the job book, the event log (the same
hash chain), the lease lock and the audit are the SQLite store's, run on a pgconnection.PgConnection.
What differs is only how it is opened:

- **Where**: a `postgresql://` URL (`ledger:` or RECONCILER_LEDGER), its tables in the database's
  first `search_path` schema: `?options=-csearch_path%3D{environment}` gives every environment a
  schema of its own in one database, created on the first write.
- **Reads never write**: `open_read` connects read-only (the server refuses writes) and returns None
  when the schema holds no ledger yet; it creates nothing, not even the schema.
- **Creation** of a new ledger (schema, functions, tables, indexes, triggers and the meta row, all
  from schema.py's one definition) is one transaction under an advisory lock, so two runners that
  start at once make one ledger; **migrations** are forward only, in one transaction, as on SQLite.
- Nothing of the URL is stored: the binding is the environment and its base URL, as on SQLite.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from reconciler.errors import LedgerError

try:
    import psycopg
except ImportError as missing:  # the SQLite ledger needs no driver, so psycopg is an optional extra
    raise LedgerError(
        "the ledger is a postgresql:// URL, which needs the PostgreSQL driver: "
        "pip install 'zuora-reconciler[postgres]' (psycopg 3)"
    ) from missing

from reconciler.dataset.blobs import Blobs
from reconciler.ledger import schema
from reconciler.ledger.base import LedgerBase
from reconciler.ledger.blobs import TableBlobs, parts_of
from reconciler.ledger.chain import GENESIS_HASH
from reconciler.ledger.connection import Row
from reconciler.ledger.interface import Binding
from reconciler.ledger.pgconnection import PgConnection, connect, pg_errors
from reconciler.ledger.rows import now
from reconciler.ledger.schema import SCHEMA_VERSION
from reconciler.ledger.url import LedgerUrl

if TYPE_CHECKING:
    from reconciler.ledger.interface import LedgerStore

_CREATE_LOCK = 0x7265636F6E63  # pg_advisory_xact_lock key held while a ledger is created ("reconc")


def _first_schema(conn: psycopg.Connection) -> str | None:
    """The schema new tables go to: the first of `search_path` that is not `$user`, or None."""
    path = conn.execute("SELECT current_setting('search_path')").fetchone()
    for item in (path[0] if path else "").split(","):
        name = item.strip()
        if name and name != '"$user"' and name != "$user":
            return name[1:-1].replace('""', '"') if name.startswith('"') else name.lower()
    return None


def _has_ledger(conn: psycopg.Connection) -> bool:
    found = conn.execute("SELECT to_regclass('meta') IS NOT NULL").fetchone()
    return bool(found and found[0])


def _new_meta(binding: Binding, version: int) -> Row:
    return {"id": 1, "lineage": str(uuid.uuid4()), "serial": 0, "schema_version": version,
            "environment": binding.environment, "base_url": binding.base_url, "head_hash": GENESIS_HASH,
            "events_count": 0, "created_at": now()}


def _insert(conn: psycopg.Connection, table: str, rows: Sequence[Row]) -> None:
    if not rows:
        return
    names = list(rows[0])
    sql = f'INSERT INTO "{table}" ({", ".join(chr(34) + n + chr(34) for n in names)}) ' \
          f'VALUES ({", ".join("%s" for _ in names)})'
    with conn.cursor() as cursor:
        cursor.executemany(sql, [tuple(r[n] for n in names) for r in rows])


def _create(conn: psycopg.Connection, meta: Row, shown: str, tables: Mapping[str, Sequence[Row]] | None = None,
            blobs: Sequence[tuple[str, Path]] = ()) -> bool:
    """Make a new ledger (with these rows, for a copy) in one transaction; False when one was there already.

    The advisory lock is taken before the transaction begins, so the check inside it sees the
    catalog as the process that held the lock before left it: two runners starting at once make one.
    """
    conn.execute("SELECT pg_advisory_lock(%s)", (_CREATE_LOCK,))
    try:
        conn.execute("BEGIN")
        try:
            made = not _has_ledger(conn)
            if made:
                _make(conn, meta, shown, tables or {}, blobs)
            conn.execute("COMMIT")
            return made
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (_CREATE_LOCK,))


def _make(conn: psycopg.Connection, meta: Row, shown: str, tables: Mapping[str, Sequence[Row]],
          blobs: Sequence[tuple[str, Path]] = ()) -> None:
    _refuse_foreign_tables(conn, shown)
    target = _first_schema(conn)
    current = conn.execute("SELECT current_schema()").fetchone()
    if target is not None and (current is None or current[0] is None):
        conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{target.replace(chr(34), chr(34) * 2)}"')
    for statement in schema.postgres_create(meta["schema_version"]):
        conn.execute(statement)
    _insert(conn, "meta", [meta])
    for name, rows in tables.items():
        _insert(conn, name, rows)
        if rows and name != "locks":  # ids were given: the next one the database picks follows them
            conn.execute(f"SELECT setval(pg_get_serial_sequence('\"{name}\"', 'id'), (SELECT max(id) FROM \"{name}\"))")
    if blobs and meta["schema_version"] < schema.BLOBS_SCHEMA:  # a copy of an older ledger: give it the table
        for version in range(meta["schema_version"] + 1, schema.BLOBS_SCHEMA + 1):
            for statement in schema.postgres_migrate(version):
                conn.execute(statement)
        conn.execute("UPDATE meta SET schema_version = %s WHERE id = 1", (schema.BLOBS_SCHEMA,))
    for ref, path in blobs:
        for number, data in enumerate(parts_of(path)):
            _insert(conn, "blobs", [{"ref": ref, "part": number, "data": data}])


def create_copy(url: LedgerUrl, meta: Row, tables: Mapping[str, Sequence[Row]],
                blobs: Sequence[tuple[str, Path]] = ()) -> None:
    """Make a new ledger holding exactly these rows and these blobs (ref, the file holding its bytes), for
    `ledger copy`, in one transaction; LedgerError when one is there already."""
    conn = connect(url, read_only=False)
    try:
        with pg_errors(url):
            if not _create(conn, dict(meta), url.display, tables, blobs):
                raise LedgerError(f"{url.display} already holds a ledger; `ledger copy` only makes a new one "
                                  "(point it at an empty schema or database)")
    finally:
        conn.close()


def _refuse_foreign_tables(conn: psycopg.Connection, shown: str) -> None:
    """A schema that already holds tables but no ledger is someone else's: refuse to mix ours in."""
    found = conn.execute("SELECT string_agg(tablename, ', ' ORDER BY tablename) FROM pg_tables "
                         "WHERE schemaname = current_schema()").fetchone()
    if found and found[0]:
        raise LedgerError(f"{shown}: the schema holds tables ({found[0]}) but no reconciler ledger; point the URL at an "
                          "empty schema (?options=-csearch_path%3DNAME) or database. Nothing was created.")


class PgLedger(LedgerBase):
    """One open PostgreSQL ledger (a LedgerStore); build it with `open_read` or `open_write`."""

    path: str
    _c: PgConnection

    def __init__(self, c: PgConnection, binding: Binding):
        super().__init__(c, binding)
        self.url = c.url

    def _elsewhere(self, environment: str) -> str:
        return (f"give {environment} a ledger of its own, e.g. with {{environment}} in the URL's schema "
                "(?options=-csearch_path%3D{environment})")

    @classmethod
    def open_read(cls, url: LedgerUrl, binding: Binding) -> PgLedger | None:
        """Open for reading only; None when there is no ledger yet. Creates and changes nothing."""
        conn = connect(url, read_only=True)
        try:
            with pg_errors(url):
                present = _has_ledger(conn)
            if not present:
                conn.close()
                return None
            return cls(PgConnection(conn, url, read_only=True), binding)
        except BaseException:
            conn.close()
            raise

    @classmethod
    def open_write(cls, url: LedgerUrl, binding: Binding, *, migrate_to: int = SCHEMA_VERSION) -> PgLedger:
        """Open for writing: create the ledger (and its schema) if needed, then migrate it."""
        if not 1 <= migrate_to <= SCHEMA_VERSION:
            raise ValueError(f"schema version {migrate_to} does not exist")
        conn = connect(url, read_only=False)
        try:
            with pg_errors(url):
                if not _has_ledger(conn):
                    _create(conn, _new_meta(binding, migrate_to), url.display)
            ledger = cls(PgConnection(conn, url, read_only=False), binding)
            ledger._migrate(migrate_to)
            return ledger
        except BaseException:
            conn.close()
            raise

    def _migrate_to(self, version: int) -> None:
        for statement in schema.postgres_migrate(version):
            self._c.conn.execute(statement)

    def _blob_store(self, root: Path) -> Blobs:
        return TableBlobs(self._c, self.schema_version)  # in the database: every runner reads them, no state/


if TYPE_CHECKING:

    def _is_a_store(ledger: PgLedger) -> LedgerStore:  # mypy checks here that PgLedger implements the protocol
        return ledger
