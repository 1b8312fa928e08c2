"""The tenant's state in SQLite: schema, transactions shared safely by threads and processes, clock."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from contextlib import contextmanager

SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tokens (token_hash TEXT PRIMARY KEY, expires_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS mass_actions (
    bulk_key TEXT PRIMARY KEY, seq INTEGER NOT NULL, action_type TEXT NOT NULL, uploaded_by TEXT NOT NULL,
    uploaded_at REAL NOT NULL, pending_seconds REAL NOT NULL, rows_per_second REAL NOT NULL,
    input_size INTEGER NOT NULL, total INTEGER NOT NULL, file_error TEXT, flags TEXT NOT NULL, outcomes TEXT NOT NULL,
    content TEXT NOT NULL, stop_at REAL, file_id TEXT NOT NULL, idempotency_key TEXT, stopped_at REAL);
CREATE INDEX IF NOT EXISTS mass_actions_order ON mass_actions (seq);
CREATE INDEX IF NOT EXISTS mass_actions_file ON mass_actions (file_id);
CREATE TABLE IF NOT EXISTS output_files (file_id TEXT PRIMARY KEY, content BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS co_jobs (
    id TEXT PRIMARY KEY, seq INTEGER NOT NULL, namespace TEXT NOT NULL, object TEXT NOT NULL,
    operation TEXT NOT NULL, filter TEXT, status TEXT NOT NULL, created_at REAL NOT NULL,
    updated_at REAL NOT NULL, created_by TEXT NOT NULL, started_at REAL, ended_at REAL,
    has_file INTEGER NOT NULL DEFAULT 0, header TEXT, file_error TEXT, error TEXT,
    total INTEGER NOT NULL DEFAULT 0, applied INTEGER NOT NULL DEFAULT 0,
    pending_seconds REAL NOT NULL, rows_per_second REAL NOT NULL, idempotency_key TEXT);
CREATE INDEX IF NOT EXISTS co_jobs_order ON co_jobs (created_at, seq);
CREATE INDEX IF NOT EXISTS co_jobs_status ON co_jobs (status);
CREATE TABLE IF NOT EXISTS co_items (job_id TEXT NOT NULL, idx INTEGER NOT NULL, data TEXT NOT NULL,
    PRIMARY KEY (job_id, idx));
CREATE TABLE IF NOT EXISTS co_errors (job_id TEXT NOT NULL, row INTEGER NOT NULL, code INTEGER NOT NULL,
    message TEXT NOT NULL, record TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS co_errors_job ON co_errors (job_id, row);
CREATE TABLE IF NOT EXISTS records (namespace TEXT NOT NULL, object TEXT NOT NULL, id TEXT NOT NULL,
    fields TEXT NOT NULL, created_at REAL NOT NULL, updated_at REAL NOT NULL, created_by TEXT NOT NULL,
    updated_by TEXT NOT NULL, PRIMARY KEY (namespace, object, id));
CREATE TABLE IF NOT EXISTS idempotency (key TEXT PRIMARY KEY, method TEXT NOT NULL, path TEXT NOT NULL,
    state TEXT NOT NULL, owner TEXT NOT NULL, started_wall REAL NOT NULL, created_at REAL NOT NULL,
    status INTEGER, headers TEXT, body BLOB, content_type TEXT);
CREATE TABLE IF NOT EXISTS rate_windows (key TEXT PRIMARY KEY, start INTEGER NOT NULL, count INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS co_definitions (namespace TEXT NOT NULL, object TEXT NOT NULL, body TEXT NOT NULL,
    PRIMARY KEY (namespace, object));
"""

# Columns added since schema 1, added to an older tenant db when it is opened (all nullable).
ADDED_COLUMNS = (("mass_actions", "stopped_at", "REAL"),)  # when a stop's Stopping ends

# Tables emptied by POST /_sandbox/reset; tokens, the clock offset and the custom object definitions (the
# tenant's schema, which each app writes when it starts) survive so clients keep working.
TENANT_TABLES = ("mass_actions", "output_files", "co_jobs", "co_items", "co_errors", "records", "idempotency",
                 "rate_windows")


class Store:
    """One SQLite connection per app, serialised by a lock; SQLite's own locks order the processes."""

    def __init__(self, db_path: str | None):
        """Open (creating if needed) the tenant at `db_path`; ValueError if it is not a usable sandbox db."""
        self._lock = threading.RLock()
        try:
            if db_path:
                os.makedirs(os.path.dirname(os.path.abspath(db_path)), exist_ok=True)
            self._open(db_path)
        except (sqlite3.Error, OSError) as err:
            raise ValueError(f"cannot use {db_path} as the sandbox database: {err}") from None
        version = int(self._conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise ValueError(f"{db_path} was written by a newer sandbox (schema {version}); upgrade reconciler")

    def _open(self, db_path: str | None) -> None:
        self._conn = sqlite3.connect(db_path or ":memory:", timeout=30, isolation_level=None, check_same_thread=False)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA busy_timeout = 30000")
        if db_path:
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA synchronous = NORMAL")
        with self.write() as conn:
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            for table, column, kind in ADDED_COLUMNS:  # a tenant db written before the column existed
                if column not in {row["name"] for row in conn.all(f"PRAGMA table_info({table})")}:
                    conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
            conn.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
            )

    @contextmanager
    def write(self):
        """A read-modify-write transaction (BEGIN IMMEDIATE), committed on success."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield _Conn(self._conn)
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._conn.close()


class _Conn:
    """The transaction handle handlers get: sqlite execution plus small meta helpers."""

    def __init__(self, conn: sqlite3.Connection):
        self._conn = conn

    def execute(self, sql: str, params=()):
        """Run one statement."""
        return self._conn.execute(sql, params)

    def executemany(self, sql: str, rows):
        """Run one statement for each row."""
        return self._conn.executemany(sql, rows)

    def one(self, sql: str, params=()):
        """The first result row, or None."""
        return self._conn.execute(sql, params).fetchone()

    def all(self, sql: str, params=()):
        """Every result row."""
        return self._conn.execute(sql, params).fetchall()

    @contextmanager
    def savepoint(self):
        """Undo the block's writes if it raises (an error response must leave no half effect)."""
        self._conn.execute("SAVEPOINT handler")
        try:
            yield
        except BaseException:
            self._conn.execute("ROLLBACK TO handler")
            self._conn.execute("RELEASE handler")
            raise
        self._conn.execute("RELEASE handler")

    def meta(self, key: str, default=None):
        """A JSON value from the meta table."""
        row = self.one("SELECT value FROM meta WHERE key = ?", (key,))
        return json.loads(row["value"]) if row else default

    def set_meta(self, key: str, value) -> None:
        """Store a JSON value in the meta table."""
        self.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, json.dumps(value)))

    def next_counter(self, key: str) -> int:
        """Increment and return a persisted counter."""
        value = int(self.meta(key, 0)) + 1
        self.set_meta(key, value)
        return value


def sandbox_now(conn: _Conn, clock) -> float:
    """The sandbox's time: the process clock plus the persisted offset POST /_sandbox/clock advanced."""
    return clock() + float(conn.meta("clock_offset", 0.0))
