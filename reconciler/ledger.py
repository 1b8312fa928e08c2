"""The SQLite ledger (DESIGN §6): jobs, runs, the hash-chained event log and the run lock.

The only sqlite-utils user. Choices a caller relies on:

- **Reads never write.** `Ledger.open_read` connects with `mode=ro` and returns None when the file is
  missing. Writers keep the file in WAL mode only while they are connected and switch it back to a
  rollback journal when the last of them closes, so at rest the ledger is one self-contained file and
  a reader creates no `-wal`/`-shm` files and changes no byte.
- **Writes** are `BEGIN IMMEDIATE` transactions with a 5 s busy timeout; every sqlite error becomes a
  LedgerError naming the file; an UPDATE that should touch one row and touched none raises.
- **`serial` pins a plan**: it is bumped exactly once by every transaction that changes jobs or
  appends an event on their behalf. Lock transactions (acquire, take-over, heartbeat, release, even
  when they append an audit event) and run bookkeeping (`start_run`, `finish_run`) never bump it:
  taking the lock must not make the saved plan the run is about to apply look stale.
- **Events** are only inserted (triggers refuse UPDATE and DELETE) and hash-chained as chain.py
  describes; `meta.head_hash` and `meta.events_count` move in the same transaction. Detail that looks
  like a secret (authorization, token, secret, password, api key, cookie, credential keys; bearer
  values; such query parameters in paths) is replaced by "<redacted>" before it is stored.
- **Threads** share one connection (`check_same_thread=False`) and an RLock serializes every call,
  so the apply command's workers may call one Ledger concurrently; processes coordinate through
  SQLite's own locking.
- **Migrations** are the functions in MIGRATIONS, forward only, run by `open_write` in one
  transaction; MIGRATIONS[i] brings the schema to version i + 1. Every schema version stays readable
  by the current read code, so `open_read` accepts older ledgers; a newer one is refused.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import threading
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from sqlite_utils import Database

from reconciler.chain import GENESIS_HASH, AuditReport, canonical_json, event_hash, verify_chain
from reconciler.errors import LedgerError
from reconciler.locks import LockMethods
from reconciler.model import (
    PHASE_ACTIVE,
    PHASE_CREATED,
    PHASE_DONE,
    PHASE_INTENT,
    PHASE_RETIRED,
    PHASES,
    REJECTED,
    JobRecord,
    Observation,
    RecordedState,
    SpecRecord,
    is_terminal,
)

BUSY_TIMEOUT_SECONDS = 5.0
COUNT_FIELDS = ("total", "processed", "succeeded", "failed")
REDACTED = "<redacted>"
_CHUNK = 1000  # events read per short read transaction while streaming
_SQLITE_MAGIC = b"SQLite format 3\x00"
_SECRET_KEY = re.compile(r"authori[sz]ation|token|secret|passw(or)?d|api[-_]?key|cookie|credential", re.I)
_SECRET_VALUE = re.compile(r"\s*(bearer|basic)\s+\S", re.I)
_SECRET_QUERY = re.compile(r"([?&][^=&#]*(?:token|secret|passw(?:or)?d|api[-_]?key)[^=&#]*=)[^&#]*", re.I)


@dataclass(frozen=True)
class Binding:
    """The environment a ledger belongs to; a ledger refuses to serve any other.

    `environment` is the key used in paths (Settings.env_key: the name, or a URL's host-port), so
    the refusal can point at the right ledger; `base_url` is compared without a trailing slash.
    """

    environment: str
    base_url: str


@dataclass(frozen=True)
class Actor:
    """Who runs a command: OS or CI user, host, process, git commit, CI run URL."""

    user: str
    host: str
    pid: int
    commit: str | None = None
    ci_run_url: str | None = None

    @property
    def label(self) -> str:
        """`user@host`, as events and runs record it."""
        return f"{self.user}@{self.host}"


def redact(value: object) -> object:
    """A JSON value with anything that looks like a secret replaced by "<redacted>"."""
    if isinstance(value, dict):
        return {k: REDACTED if _SECRET_KEY.search(str(k)) else redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    if isinstance(value, str) and _SECRET_VALUE.match(value):
        return REDACTED
    return value


def _clean_detail(detail: Mapping | None) -> object:
    # A JSON round trip first, so the value hashed at insert is exactly the one read back later.
    return redact(json.loads(json.dumps(dict(detail or {}), default=str)))


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def _loads(text: str | None) -> object:
    try:
        return json.loads(text) if text is not None else {}
    except ValueError:  # an edited row: keep the text so history shows it and verify flags it
        return text


# --- schema ---------------------------------------------------------------------------------------


def _v1_tables(db: Database) -> None:
    """Schema version 1: meta, runs, jobs, events (append-only), locks."""
    db["meta"].create(
        {
            "id": int, "lineage": str, "serial": int, "schema_version": int, "environment": str,
            "base_url": str, "head_hash": str, "events_count": int, "created_at": str,
        },
        pk="id",
        not_null=["lineage", "serial", "schema_version", "environment", "base_url", "head_hash"],
    )
    db["runs"].create(
        {
            "id": int, "command": str, "actor": str, "pid": int, "commit": str, "ci_run_url": str,
            "plan_digest": str, "started_at": str, "finished_at": str, "outcome": str,
        },
        pk="id",
        not_null=["command", "actor", "started_at"],
    )
    db["jobs"].create(
        {
            "id": int, "name": str, "kind": str, "generation": int, "fingerprint": str,
            "fingerprint_version": int, "revision": int, "remote_id": str, "idempotency_key": str,
            "phase": str, "remote_status": str, "uploaded": int, "total": int, "processed": int,
            "succeeded": int, "failed": int, "detail": str, "result_path": str, "result_sha256": str,
            "rerun": int, "created_at": str, "updated_at": str, "run_id": int,
        },
        pk="id",
        not_null=["name", "kind", "generation", "fingerprint", "idempotency_key", "phase"],
        foreign_keys=[("run_id", "runs", "id")],
    )
    db["jobs"].create_index(["idempotency_key"], index_name="jobs_by_idempotency_key", unique=True)
    db["jobs"].create_index(["name", "generation"], index_name="jobs_by_name_generation", unique=True)
    db["jobs"].create_index(["remote_id"], index_name="jobs_by_remote_id")
    db["events"].create(
        {
            "id": int, "ts": str, "run_id": int, "name": str, "event_type": str, "method": str,
            "path": str, "http_status": int, "request_id": str, "track_id": str,
            "idempotency_key": str, "outcome": str, "actor": str, "detail": str, "prev_hash": str,
            "hash": str,
        },
        pk="id",
        not_null=["ts", "event_type", "prev_hash", "hash"],
        foreign_keys=[("run_id", "runs", "id")],
    )
    for op in ("UPDATE", "DELETE"):
        db.execute(
            f"CREATE TRIGGER events_no_{op.lower()} BEFORE {op} ON events "
            "BEGIN SELECT RAISE(ABORT, 'events are append-only'); END"
        )
    db["locks"].create(
        {
            "id": str, "user": str, "host": str, "pid": int, "ci_run_url": str,
            "acquired_at": float, "heartbeat_at": float, "lease_seconds": float,
        },
        pk="id",
    )


def _v2_events_by_name(db: Database) -> None:
    """Schema version 2: `history NAME --limit N` reads an index instead of scanning every event."""
    db["events"].create_index(["name"], index_name="events_by_name")


MIGRATIONS = (_v1_tables, _v2_events_by_name)
SCHEMA_VERSION = len(MIGRATIONS)


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
                db = _database(conn)
                for migration in MIGRATIONS[:version]:
                    migration(db)
                db["meta"].insert(
                    {
                        "id": 1, "lineage": str(uuid.uuid4()), "serial": 0, "schema_version": version,
                        "environment": binding.environment, "base_url": binding.base_url,
                        "head_hash": GENESIS_HASH, "events_count": 0, "created_at": _now(),
                    }
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


class Ledger(LockMethods):
    """One open ledger file; build it with `open_read` or `open_write`."""

    def __init__(self, conn: sqlite3.Connection, path: Path, binding: Binding, *, read_only: bool):
        self.path = path
        self.read_only = read_only
        self._conn = conn
        self._db = _database(conn)
        self._lock = threading.RLock()
        self._closed = False
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
            ledger._migrate(migrate_to)
            return ledger
        except BaseException:
            conn.close()
            raise

    def _meta(self, binding: Binding) -> dict:
        """Read and check meta: a ledger, of a schema this code knows, bound to this environment."""
        with self._reading():
            try:
                version = self._conn.execute("SELECT schema_version FROM meta WHERE id = 1").fetchone()
                row = self._row("SELECT * FROM meta WHERE id = 1")
            except sqlite3.OperationalError as exc:
                raise _not_a_ledger(self.path, str(exc)) from exc
        if version is None or row is None or not isinstance(version[0], int):
            raise _not_a_ledger(self.path, "its meta row is missing")
        if version[0] > SCHEMA_VERSION:
            raise LedgerError(
                f"{self.path} has ledger schema version {version[0]}, newer than this reconciler knows "
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
            for version in range(current + 1, target + 1):
                MIGRATIONS[version - 1](self._db)
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

    # --- reads ------------------------------------------------------------------------------------

    @property
    def serial(self) -> int:
        """The current serial, read fresh from meta."""
        with self._reading():
            return self._conn.execute("SELECT serial FROM meta WHERE id = 1").fetchone()[0]

    def recorded_state(self) -> RecordedState:
        """Every name's jobs, oldest first, with the lineage and serial they were read at."""
        with self._reading():
            serial = self._conn.execute("SELECT serial FROM meta WHERE id = 1").fetchone()[0]
            rows = self._rows("SELECT * FROM jobs ORDER BY name, generation, id")
        by_name: dict[str, list[JobRecord]] = {}
        for row in rows:
            by_name.setdefault(row["name"], []).append(_job(row))
        records = tuple(SpecRecord(name, tuple(jobs)) for name, jobs in by_name.items())
        return RecordedState(records=records, lineage=self.lineage, serial=serial)

    def jobs(self, name: str | None = None) -> list[JobRecord]:
        """Jobs in the order they were created, all or one name's."""
        with self._reading():
            if name is None:
                return [_job(r) for r in self._rows("SELECT * FROM jobs ORDER BY id")]
            return [_job(r) for r in self._rows("SELECT * FROM jobs WHERE name = ? ORDER BY id", (name,))]

    def job(self, job_id: int) -> JobRecord:
        """One job by ledger id; LedgerError when there is none."""
        with self._reading():
            return _job(self._job_row(job_id))

    def _job_row(self, job_id: int) -> dict:
        row = self._row("SELECT * FROM jobs WHERE id = ?", (job_id,))
        if row is None:
            raise LedgerError(f"{self.path}: there is no job with ledger id {job_id}")
        return row

    def job_by_remote_id(self, remote_id: str) -> JobRecord | None:
        """The latest job recorded with this remote id (bulk key or custom object job id)."""
        with self._reading():
            row = self._row("SELECT * FROM jobs WHERE remote_id = ? ORDER BY id DESC LIMIT 1", (remote_id,))
        return _job(row) if row else None

    def events(self, name: str | None = None, limit: int | None = None, before_id: int | None = None) -> list[dict]:
        """Events newest first, optionally for one name, at most `limit`, older than `before_id`."""
        sql, params = events_query(name, limit, before_id)
        with self._reading():
            return [_event(r) for r in self._rows(sql, params)]

    def iter_events(self) -> Iterator[dict]:
        """Every event oldest first, streamed in short read transactions (writers are not held up)."""
        with self._reading():
            top = self._conn.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()[0]
        return self._events_upto(top)

    def _events_upto(self, top: int) -> Iterator[dict]:
        last = 0
        while last < top:
            with self._reading():
                chunk = self._rows(
                    "SELECT * FROM events WHERE id > ? AND id <= ? ORDER BY id LIMIT ?", (last, top, _CHUNK)
                )
            if not chunk:
                return
            yield from (_event(r) for r in chunk)
            last = chunk[-1]["id"]

    def verify(self) -> AuditReport:
        """Recompute the event chain and compare it with the head hash and count in meta."""
        with self._reading():
            meta = self._row("SELECT head_hash, events_count FROM meta WHERE id = 1")
            top = self._conn.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()[0]
        return verify_chain(self._events_upto(top), head_hash=meta["head_hash"], events_count=meta["events_count"])

    # --- writes -----------------------------------------------------------------------------------

    def start_run(self, command: str, actor: Actor, plan_digest: str | None = None) -> int:
        """Record the start of a command run; returns its run id (bookkeeping: serial unchanged)."""
        with self._transaction() as tx:
            tx.bump = False
            row = {
                "command": command, "actor": actor.label, "pid": actor.pid, "commit": actor.commit,
                "ci_run_url": actor.ci_run_url, "plan_digest": plan_digest, "started_at": _now(),
            }
            return self._db["runs"].insert(row).last_pk

    def finish_run(self, run_id: int, outcome: str) -> None:
        """Record a run's end and outcome (bookkeeping: serial unchanged)."""
        with self._transaction() as tx:
            tx.bump = False
            self._update(
                "UPDATE runs SET finished_at = ?, outcome = ? WHERE id = ?", (_now(), outcome, run_id), f"run {run_id}"
            )

    def next_generation(self, name: str) -> int:
        """The generation the next job of this name gets (1 for a new name)."""
        with self._reading():
            row = self._conn.execute("SELECT coalesce(max(generation), 0) FROM jobs WHERE name = ?", (name,))
            return row.fetchone()[0] + 1

    def add_intent(
        self, *, run_id: int | None, name: str, kind: str, generation: int, fingerprint: str,
        fingerprint_version: int, revision: int, idempotency_key: str, detail: Mapping, rerun: bool = False,
    ) -> JobRecord:
        """Commit a job in phase intent before its remote call; an existing key returns its job unchanged."""
        with self._transaction() as tx:
            existing = self._row("SELECT * FROM jobs WHERE idempotency_key = ?", (idempotency_key,))
            if existing is not None:
                recorded = (existing["name"], existing["generation"], existing["fingerprint"])
                if recorded != (name, generation, fingerprint):
                    raise LedgerError(
                        f"{self.path}: idempotency key {idempotency_key} already belongs to job {existing['id']} "
                        f"({existing['name']} generation {existing['generation']}); refusing to reuse it"
                    )
                tx.bump = False
                return _job(existing)
            now, detail = _now(), _clean_detail(detail)
            job_id = self._db["jobs"].insert(
                {
                    "name": name, "kind": kind, "generation": generation, "fingerprint": fingerprint,
                    "fingerprint_version": fingerprint_version, "revision": revision, "remote_id": None,
                    "idempotency_key": idempotency_key, "phase": PHASE_INTENT, "remote_status": None,
                    "uploaded": 0, "detail": canonical_json(detail), "rerun": int(rerun),
                    "created_at": now, "updated_at": now, "run_id": run_id,
                }
            ).last_pk
            self._append_event(
                run_id=run_id, event_type="intent", name=name, idempotency_key=idempotency_key,
                detail={**detail, "kind": kind, "generation": generation, "fingerprint": fingerprint,
                        "revision": revision, "rerun": rerun},
            )
            return _job(self._job_row(job_id))

    def record_submitted(
        self, job_id: int, *, remote_id: str, status: str | None, phase: str, counts: Mapping | None = None,
        event: Mapping,
    ) -> JobRecord:
        """Record the remote job a submission created; `event` holds record_event's keywords."""
        _check_phase(phase)
        with self._transaction():
            job = self._job_row(job_id)
            self._set_job(job_id, {"remote_id": remote_id, "remote_status": status, "phase": phase, **_counts(counts)})
            self._job_event(job, event, "submitted", {"remote_id": remote_id, "status": status})
            return _job(self._job_row(job_id))

    def record_uploaded(self, job_id: int, *, status: str | None, event: Mapping) -> JobRecord:
        """Record that a custom object job's file was uploaded."""
        with self._transaction():
            job = self._job_row(job_id)
            phase = job["phase"] if job["phase"] == PHASE_RETIRED else (
                PHASE_DONE if is_terminal(job["kind"], status) else PHASE_ACTIVE
            )
            self._set_job(job_id, {"uploaded": 1, "remote_status": status, "phase": phase})
            self._job_event(job, event, "uploaded", {"remote_id": job["remote_id"], "status": status})
            return _job(self._job_row(job_id))

    def record_rejected(self, job_id: int, *, error: str, event: Mapping) -> JobRecord:
        """Record that Zuora refused an intent's submission (nothing exists remotely): phase done, status rejected."""
        with self._transaction():
            job = self._job_row(job_id)
            if job["phase"] != PHASE_INTENT:
                raise LedgerError(f"{self.path}: job {job_id} is {job['phase']}, not an intent; a rejection "
                                  "can only close an intent")
            detail = _loads(job["detail"])
            detail = {**(detail if isinstance(detail, dict) else {}), "error": error}
            self._set_job(job_id, {"phase": PHASE_DONE, "remote_status": REJECTED,
                                   "detail": canonical_json(_clean_detail(detail))})
            self._job_event(job, event, "rejected", {"status": REJECTED, "error": error})
            return _job(self._job_row(job_id))

    def record_observation(self, job_id: int, obs: Observation, *, run_id: int | None, source: str) -> bool:
        """Store a refreshed remote status and counts; True (plus a status_change event) when the status moved.

        A job missing remotely (404) is left as recorded: the planner turns that into a conflict.
        """
        with self._transaction() as tx:
            job = self._job_row(job_id)
            if job["remote_id"] is not None and obs.remote_id != job["remote_id"]:
                raise ValueError(f"observation of {obs.remote_id} given for job {job_id} ({job['remote_id']})")
            if obs.missing or obs.status is None:
                tx.bump = False
                return False
            changes = {"remote_status": obs.status, "phase": _observed_phase(job, obs.status), **_counts(vars(obs))}
            detail = _loads(job["detail"])
            if isinstance(detail, dict):
                extra = {k: getattr(obs, k) for k in ("output_url", "error") if getattr(obs, k) is not None}
                changes["detail"] = canonical_json(_clean_detail({**detail, **extra}))
            changes = {k: v for k, v in changes.items() if job[k] != v}
            if not changes:
                tx.bump = False
                return False
            self._set_job(job_id, changes)
            moved = "remote_status" in changes
            if moved:
                self._append_event(
                    run_id=run_id, event_type="status_change", name=job["name"],
                    idempotency_key=job["idempotency_key"], outcome=obs.status,
                    detail={"remote_id": job["remote_id"], "from": job["remote_status"], "to": obs.status,
                            "source": source, **_counts(vars(obs))},
                )
            return moved

    def record_retired(self, job_id: int, *, run_id: int | None, reason: str, actor: Actor) -> JobRecord:
        """Move a job to phase retired (ledger only, no remote call); a retired job is left as is."""
        with self._transaction() as tx:
            job = self._job_row(job_id)
            if job["phase"] == PHASE_RETIRED:
                tx.bump = False
                return _job(job)
            self._set_job(job_id, {"phase": PHASE_RETIRED})
            self._append_event(
                run_id=run_id, event_type="retired", name=job["name"], idempotency_key=job["idempotency_key"],
                actor=actor, detail={"reason": reason, "previous_phase": job["phase"], "remote_id": job["remote_id"]},
            )
            return _job(self._job_row(job_id))

    def record_result(self, job_id: int, *, path: str, sha256: str, run_id: int | None) -> None:
        """Record where a job's result file was archived and its sha256."""
        with self._transaction():
            job = self._job_row(job_id)
            self._set_job(job_id, {"result_path": path, "result_sha256": sha256})
            self._append_event(
                run_id=run_id, event_type="result_archived", name=job["name"],
                idempotency_key=job["idempotency_key"], detail={"path": path, "sha256": sha256},
            )

    def record_event(
        self, *, run_id: int | None, event_type: str, name: str | None = None, method: str | None = None,
        path: str | None = None, http_status: int | None = None, request_id: str | None = None,
        track_id: str | None = None, idempotency_key: str | None = None, outcome: str | None = None,
        actor: Actor | None = None, detail: Mapping | None = None,
    ) -> int:
        """Append one event (e.g. a remote call) in its own transaction; returns its id."""
        with self._transaction():
            return self._append_event(
                run_id=run_id, event_type=event_type, name=name, method=method, path=path,
                http_status=http_status, request_id=request_id, track_id=track_id,
                idempotency_key=idempotency_key, outcome=outcome, actor=actor, detail=detail,
            )

    def _set_job(self, job_id: int, changes: Mapping) -> None:
        columns = ", ".join(f"{k} = ?" for k in changes)
        params = (*changes.values(), _now(), job_id)
        self._update(f"UPDATE jobs SET {columns}, updated_at = ? WHERE id = ?", params, f"job {job_id}")

    def _job_event(self, job: Mapping, event: Mapping, default_type: str, facts: Mapping) -> int:
        fields = {
            "run_id": job["run_id"], "event_type": default_type, "name": job["name"],
            "idempotency_key": job["idempotency_key"], **event,
        }
        fields["detail"] = {**facts, **(fields.get("detail") or {})}
        return self._append_event(**fields)

    def _append_event(
        self, *, run_id: int | None, event_type: str, name: str | None = None, method: str | None = None,
        path: str | None = None, http_status: int | None = None, request_id: str | None = None,
        track_id: str | None = None, idempotency_key: str | None = None, outcome: str | None = None,
        actor: Actor | None = None, detail: Mapping | None = None,
    ) -> int:
        """Insert the next chained event inside the caller's transaction and move the head."""
        meta = self._row("SELECT head_hash, events_count FROM meta WHERE id = 1")
        next_id = self._conn.execute("SELECT coalesce(max(id), 0) + 1 FROM events").fetchone()[0]
        if actor is not None:
            label = actor.label
        elif run_id is not None:  # the run's actor, so each event names who caused it
            label = (self._row("SELECT actor FROM runs WHERE id = ?", (run_id,)) or {}).get("actor")
        else:
            label = None
        event = {
            "id": next_id, "ts": _now(), "run_id": run_id, "name": name, "event_type": event_type,
            "method": method, "path": _SECRET_QUERY.sub(rf"\g<1>{REDACTED}", path) if path else path,
            "http_status": http_status, "request_id": request_id, "track_id": track_id,
            "idempotency_key": idempotency_key, "outcome": outcome, "actor": label,
            "detail": _clean_detail(detail), "prev_hash": meta["head_hash"],
        }
        event["hash"] = event_hash(event)
        self._db["events"].insert({**event, "detail": canonical_json(event["detail"])})
        self._conn.execute(
            "UPDATE meta SET head_hash = ?, events_count = events_count + 1 WHERE id = 1", (event["hash"],)
        )
        return next_id


def events_query(name: str | None, limit: int | None, before_id: int | None) -> tuple[str, tuple]:
    """The SQL `Ledger.events` runs: newest first by id, so it walks the primary key or events_by_name."""
    where, params = [], []
    if name is not None:
        where.append("name = ?")
        params.append(name)
    if before_id is not None:
        where.append("id < ?")
        params.append(before_id)
    sql = "SELECT * FROM events" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id DESC"
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    return sql, tuple(params)


def _check_phase(phase: str) -> None:
    if phase not in PHASES:
        raise ValueError(f"unknown phase {phase!r}")


def _counts(values: Mapping | None) -> dict:
    return {k: values[k] for k in COUNT_FIELDS if values and values.get(k) is not None}


def _observed_phase(job: Mapping, status: str) -> str:
    if job["phase"] == PHASE_RETIRED:
        return PHASE_RETIRED
    if is_terminal(job["kind"], status):
        return PHASE_DONE
    if job["phase"] == PHASE_CREATED and not job["uploaded"]:
        return PHASE_CREATED
    return PHASE_ACTIVE


def _event(row: dict) -> dict:
    return {**row, "detail": _loads(row["detail"])}


def _job(row: Mapping) -> JobRecord:
    detail = _loads(row["detail"])
    return JobRecord(
        id=row["id"], name=row["name"], kind=row["kind"], generation=row["generation"],
        fingerprint=row["fingerprint"], fingerprint_version=row["fingerprint_version"], revision=row["revision"],
        idempotency_key=row["idempotency_key"], phase=row["phase"],
        created_at=datetime.fromisoformat(row["created_at"]), updated_at=datetime.fromisoformat(row["updated_at"]),
        remote_id=row["remote_id"], remote_status=row["remote_status"], uploaded=bool(row["uploaded"]),
        total=row["total"], processed=row["processed"], succeeded=row["succeeded"], failed=row["failed"],
        detail=detail if isinstance(detail, dict) else {}, result_path=row["result_path"],
        result_sha256=row["result_sha256"], rerun=bool(row["rerun"]),
    )
