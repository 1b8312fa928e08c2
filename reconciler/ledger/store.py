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
- **Writes** are `BEGIN IMMEDIATE` transactions with a 5 s busy timeout; sqlite-utils makes the rows
  inside them; every sqlite error becomes a LedgerError naming the file; an update that should touch
  one row and finds none raises.
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
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler.errors import LedgerError
from reconciler.ledger import schema
from reconciler.ledger.audit import verify_ledger
from reconciler.ledger.chain import GENESIS_HASH, AuditReport, Head
from reconciler.ledger.connection import (
    BUSY_TIMEOUT_SECONDS,
    WAL_LIMIT_BYTES,
    Checkpoint,
    LedgerConnection,
    Row,
    check_file,
    checkpoint,
    connect,
    create_file,
    not_a_ledger,
    sqlite_errors,
    wal_path,
    wal_size,
)
from reconciler.ledger.events import CALL_EVENTS, EVENT_TYPES, EventLog, events_query
from reconciler.ledger.interface import Binding
from reconciler.ledger.jobs import COUNT_FIELDS, JobBook
from reconciler.ledger.lock import Clock, LeaseLock
from reconciler.ledger.rows import REDACTED, Actor, now, redact
from reconciler.ledger.schema import SCHEMA_VERSION
from reconciler.model import JobRecord, Observation, RecordedState

if TYPE_CHECKING:
    from sqlite_utils import Database

    from reconciler.ledger.interface import LedgerStore

# Actor, redact, REDACTED, COUNT_FIELDS, the event types and events_query live in the collaborators, re-exported so
# `reconciler.ledger.store` stays the one import for the ledger's whole public API.
__all__ = [
    "BUSY_TIMEOUT_SECONDS", "COUNT_FIELDS", "WAL_LIMIT_BYTES", "Checkpoint", "wal_path", "wal_size", "REDACTED", "SCHEMA_VERSION", "Actor", "Binding", "Ledger",
    "events_query", "redact", "CALL_EVENTS", "EVENT_TYPES",
]


def _new_ledger(db: Database, binding: Binding, version: int) -> None:
    """The schema of `version` and the meta row of a new ledger bound to this environment."""
    schema.create(db, version)
    db.table("meta").insert({
        "id": 1, "lineage": str(uuid.uuid4()), "serial": 0, "schema_version": version,
        "environment": binding.environment, "base_url": binding.base_url, "head_hash": GENESIS_HASH,
        "events_count": 0, "created_at": now(),
    })


# --- the SQLite store -----------------------------------------------------------------------------


class Ledger:
    """One open SQLite ledger file (a LedgerStore); build it with `open_read` or `open_write`."""

    def __init__(self, conn: sqlite3.Connection, path: Path, binding: Binding, *, read_only: bool,
                 wal_limit_bytes: int = WAL_LIMIT_BYTES):
        self.path = path
        self.read_only = read_only
        self._c = LedgerConnection(conn, path, read_only=read_only, wal_limit_bytes=wal_limit_bytes)
        meta = self._meta(binding)
        self.lineage: str = meta["lineage"]
        self.schema_version: int = meta["schema_version"]
        self._events = EventLog(self._c)
        self._lease = LeaseLock(self._c, self._events)
        self._jobs = JobBook(self._c, self._events, self._lease, self.schema_version)

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
            create_file(path, lambda db: _new_ledger(db, binding, migrate_to))
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

    def _meta(self, binding: Binding) -> Row:
        """Read and check meta: a ledger, of a schema this code knows, bound to this environment."""
        with self._c.reading():
            try:
                row = self._c.row("SELECT * FROM meta WHERE id = 1")
            except sqlite3.OperationalError as exc:
                raise not_a_ledger(self.path, str(exc)) from exc
        version = row.get("schema_version") if row is not None else None
        if row is None or not isinstance(version, int):
            raise not_a_ledger(self.path, "it has no meta row with a schema version")
        if not {"environment", "base_url"} <= row.keys():
            raise not_a_ledger(self.path, "its meta row names no environment")
        if version > SCHEMA_VERSION:
            raise LedgerError(
                f"{self.path} has ledger schema version {version}, newer than this reconciler knows "
                f"({SCHEMA_VERSION}); upgrade reconciler to use it. The file was left untouched."
            )
        expected = binding.identity(binding.environment, binding.base_url)
        if binding.identity(row["environment"], row["base_url"] or "") != expected:
            raise LedgerError(
                f"{self.path}: this ledger belongs to environment {row['environment']} ({row['base_url']}), "
                f"not {binding.environment} ({binding.base_url}); use the ledger path for "
                f"{binding.environment}, e.g. state/{binding.environment}/ledger.db"
            )
        return row

    def _migrate(self, target: int) -> None:
        if self.schema_version >= target:
            return
        with self._c.transaction() as tx:
            tx.bump = False  # the schema changed, not the records: a saved plan stays valid
            current: int = self._c.value("SELECT schema_version FROM meta WHERE id = 1")
            for version in range(current + 1, target + 1):
                schema.migrate(self._c.db, version)
                self._c.update("meta", 1, {"schema_version": version}, "the meta row")
        self.schema_version = max(self.schema_version, target)
        self._jobs.schema_version = self.schema_version

    def close(self) -> None:
        """Close the connection; the last writer to leave turns WAL off so the file rests alone."""
        self._c.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- jobs and runs (jobs.py) ----------------------------------------------------------------

    @property
    def serial(self) -> int:
        """The current serial, read fresh from meta."""
        with self._c.reading():
            return self._jobs.serial()

    def recorded_state(self, names: Iterable[str] | None = None) -> RecordedState:
        """Names' jobs, oldest first, with the lineage and serial they were read at (JobBook.recorded_state)."""
        return self._jobs.recorded_state(self.lineage, names)

    def jobs(self, name: str | None = None) -> list[JobRecord]:
        """Jobs in the order they were created, all or one name's."""
        return self._jobs.jobs(name)

    def last_refresh(self) -> str | None:
        """When a run that fetched live status (plan, apply, status --refresh/--wait) last finished, ISO 8601."""
        return self._jobs.last_refresh()

    def live_jobs(self) -> list[JobRecord]:
        """Jobs in creation order that LIVE_JOB admits (every job on a ledger older than schema 3).

        Among them is every job a refresh looks at (not done yet, or a result still to archive).
        """
        return self._jobs.jobs_matching(live=True)

    def jobs_matching(self, *, ids: Iterable[int] = (), remote_ids: Iterable[str] = (), live: bool = False,
                      ) -> list[JobRecord]:
        """Jobs in creation order with one of these ledger ids or remote ids, plus every LIVE_JOB one when `live`."""
        return self._jobs.jobs_matching(ids=ids, remote_ids=remote_ids, live=live)

    def next_generation(self, name: str) -> int:
        """The generation the next job of this name gets (1 for a new name)."""
        return self._jobs.next_generation(name)

    def job(self, job_id: int) -> JobRecord:
        """One job by ledger id; LedgerError when there is none."""
        return self._jobs.job(job_id)

    def job_by_remote_id(self, remote_id: str) -> JobRecord | None:
        """The latest job recorded with this remote id (bulk key or custom object job id)."""
        return self._jobs.job_by_remote_id(remote_id)

    def start_run(self, command: str, actor: Actor, plan_digest: str | None = None) -> int:
        """Record the start of a command run; returns its run id (bookkeeping: serial unchanged)."""
        return self._jobs.start_run(command, actor, plan_digest)

    def finish_run(self, run_id: int, outcome: str) -> None:
        """Record a run's end and outcome (bookkeeping: serial unchanged)."""
        self._jobs.finish_run(run_id, outcome)

    def add_intent(
        self, *, run_id: int | None, name: str, kind: str, generation: int, fingerprint: str,
        fingerprint_version: int, revision: int, idempotency_key: str, detail: Mapping[str, object],
        rerun: bool = False, lock_id: str | None = None,
    ) -> JobRecord:
        """Commit a job in phase intent before its remote call, under the run's lock (JobBook.add_intent)."""
        return self._jobs.add_intent(
            run_id=run_id, name=name, kind=kind, generation=generation, fingerprint=fingerprint,
            fingerprint_version=fingerprint_version, revision=revision, idempotency_key=idempotency_key,
            detail=detail, rerun=rerun, lock_id=lock_id,
        )

    def record_submitted(
        self, job_id: int, *, remote_id: str, status: str | None, phase: str,
        counts: Mapping[str, Any] | None = None, event: Mapping[str, Any],
    ) -> JobRecord:
        """Record the remote job a submission created; `event` holds record_event's keywords."""
        return self._jobs.record_submitted(job_id, remote_id=remote_id, status=status, phase=phase, counts=counts,
                                           event=event)

    def record_uploaded(self, job_id: int, *, status: str | None, event: Mapping[str, Any]) -> JobRecord:
        """Record that a custom object job's file was uploaded."""
        return self._jobs.record_uploaded(job_id, status=status, event=event)

    def record_rejected(self, job_id: int, *, error: str, event: Mapping[str, Any]) -> JobRecord:
        """Record that Zuora refused an intent's submission: phase done, status rejected."""
        return self._jobs.record_rejected(job_id, error=error, event=event)

    def record_observation(self, job_id: int, obs: Observation, *, run_id: int | None, source: str,
                           calls: Sequence[Mapping[str, Any]] = ()) -> bool:
        """Store a refreshed status and counts (with `calls`, remote_call keywords, only if an event is written)."""
        return self._jobs.record_observation(job_id, obs, run_id=run_id, source=source, calls=calls)

    def record_retired(self, job_id: int, *, run_id: int | None, reason: str, actor: Actor) -> JobRecord:
        """Move a job to phase retired (ledger only, no remote call); a retired job is left as is."""
        return self._jobs.record_retired(job_id, run_id=run_id, reason=reason, actor=actor)

    def record_result(self, job_id: int, *, path: str, sha256: str, run_id: int | None) -> None:
        """Record where a job's result file was archived and its sha256."""
        self._jobs.record_result(job_id, path=path, sha256=sha256, run_id=run_id)

    # --- the event log (events.py) --------------------------------------------------------------

    def record_event(
        self, *, run_id: int | None, event_type: str, name: str | None = None, method: str | None = None,
        path: str | None = None, http_status: int | None = None, request_id: str | None = None,
        track_id: str | None = None, idempotency_key: str | None = None, outcome: str | None = None,
        actor: Actor | None = None, detail: Mapping[str, object] | None = None, lock_id: str | None = None,
    ) -> int:
        """Append one event (e.g. a remote call) in its own transaction; returns its id.

        Given `lock_id`, the event is only appended while that lock is still held (see add_intent).
        """
        with self._c.transaction():
            if lock_id is not None:
                self._lease.hold(lock_id, time.time())
            return self._events.append(
                run_id=run_id, event_type=event_type, name=name, method=method, path=path,
                http_status=http_status, request_id=request_id, track_id=track_id,
                idempotency_key=idempotency_key, outcome=outcome, actor=actor, detail=detail,
            )

    def events(self, name: str | None = None, limit: int | None = None, before_id: int | None = None,
               types: Sequence[str] | None = None, exclude: Sequence[str] = ()) -> list[Row]:
        """Events newest first, of one name, at most `limit`, older than `before_id`, of `types`, not of `exclude`."""
        return self._events.events(name, limit, before_id, types, exclude)

    def iter_events(self) -> Iterator[Row]:
        """Every event oldest first, streamed in short read transactions (writers are not held up)."""
        return self._events.iter_events()

    def head(self) -> Head:
        """The chain's head as meta records it: the last event's hash and the number of events."""
        with self._c.reading():
            row = self._c.row("SELECT head_hash, events_count FROM meta WHERE id = 1")
        assert row is not None  # _meta checked the row when the ledger was opened
        return Head(row["head_hash"], row["events_count"])

    def verify(self, witness: Head | None = None) -> AuditReport:
        """Recompute the event chain, check the job rows and runs against it and that it extends `witness`."""
        return verify_ledger(self._c, self._jobs.schema_version, witness)

    # --- the run lock (lock.py) -----------------------------------------------------------------

    def acquire_lock(self, holder: Actor, *, lease_seconds: float = 60, timeout: float = 0,
                     now: Clock = time.time) -> str:
        """Take the ledger lock, waiting up to `timeout` seconds; returns the lock id or raises LockHeldError."""
        return self._lease.acquire(holder, lease_seconds=lease_seconds, timeout=timeout, now=now)

    def heartbeat(self, lock_id: str, *, now: Clock = time.time) -> None:
        """Renew the lease; LockHeldError naming the new holder when the lock was released or taken over."""
        self._lease.heartbeat(lock_id, now=now)

    def release_lock(self, lock_id: str, *, by: Actor | None = None, forced: bool = False) -> None:
        """Release a lock; `forced` (operator `lock release`) also appends an event naming `by`."""
        self._lease.release(lock_id, by=by, forced=forced)

    def release_own_lock(self, lock_id: str, *, run_id: int | None) -> str | None:
        """Release a run's own lock at its end; the lost-lock text instead of raising when it was taken."""
        return self._lease.release_own(lock_id, run_id=run_id)

    def current_lock(self, *, now: Clock = time.time) -> Row | None:
        """The lock row (times as ISO strings) plus `holder` text and `expired`, or None when free."""
        return self._lease.current(now=now)


if TYPE_CHECKING:

    def _is_a_store(ledger: Ledger) -> LedgerStore:  # mypy checks here that Ledger implements the protocol
        return ledger
