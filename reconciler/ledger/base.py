"""What every ledger store shares (DESIGN §6): the meta check on open and the operations of `LedgerStore`.

A store (store.Ledger on SQLite, postgres.PgLedger on PostgreSQL) opens its connection, which offers
the same reads, writes and transactions either way (protocol.Connection), and hands it here; the
job book, the event log and the lease lock then run on it unchanged, so both stores keep one set of
semantics: serial, lineage, binding, the chain and the lock.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from reconciler.dataset.blobs import Blobs
from reconciler.errors import LedgerError
from reconciler.ledger.audit import verify_ledger
from reconciler.ledger.chain import AuditReport, Head
from reconciler.ledger.connection import Row, not_a_ledger
from reconciler.ledger.protocol import Connection
from reconciler.ledger.events import EventLog
from reconciler.ledger.interface import Binding
from reconciler.ledger.jobs import JobBook
from reconciler.ledger.lock import Clock, LeaseLock
from reconciler.ledger.rows import Actor
from reconciler.ledger.schema import SCHEMA_VERSION
from reconciler.model import JobRecord, JobTip, Observation, RecordedState

_Store = TypeVar("_Store", bound="LedgerBase")
COPIED_TABLES = ("runs", "jobs", "events", "locks")  # in an order their references allow


class LedgerBase:
    """An open ledger over a checked connection; subclasses open it (open_read, open_write)."""

    path: Path | str  # the file, or the PostgreSQL URL with its password redacted

    def __init__(self, c: Connection, binding: Binding):
        self.path = c.path
        self.read_only = c.read_only
        self._c = c
        meta = self._meta(binding)
        self.lineage: str = meta["lineage"]
        self.schema_version: int = meta["schema_version"]
        self._events = EventLog(self._c)
        self._lease = LeaseLock(self._c, self._events)
        self._jobs = JobBook(self._c, self._events, self._lease, self.schema_version)
        self._blobs: Blobs | None = None

    def _elsewhere(self, environment: str) -> str:
        """Where the ledger of `environment` would be, for the refusal of another environment's ledger."""
        return f"use the ledger path for {environment}, e.g. state/{environment}/ledger.db"

    def _meta(self, binding: Binding) -> Row:
        """Read and check meta: a ledger, of a schema this code knows, bound to this environment."""
        with self._c.reading():
            row = self._c.meta_row()
        version = row.get("schema_version") if row is not None else None
        if row is None or not isinstance(version, int):
            raise not_a_ledger(self.path, "it has no meta row with a schema version")
        if not {"environment", "base_url"} <= row.keys():
            raise not_a_ledger(self.path, "its meta row names no environment")
        if version > SCHEMA_VERSION:
            raise LedgerError(
                f"{self.path} has ledger schema version {version}, newer than this reconciler knows "
                f"({SCHEMA_VERSION}); upgrade reconciler to use it. The ledger was left untouched."
            )
        expected = binding.identity(binding.environment, binding.base_url)
        if binding.identity(row["environment"], row["base_url"] or "") != expected:
            raise LedgerError(
                f"{self.path}: this ledger belongs to environment {row['environment']} ({row['base_url']}), "
                f"not {binding.environment} ({binding.base_url}); {self._elsewhere(binding.environment)}"
            )
        return row

    def _migrate(self, target: int) -> None:
        """Bring the ledger forward to schema `target`, one version at a time, in one transaction."""
        if self.schema_version >= target:
            return
        with self._c.transaction() as tx:
            tx.bump = False  # the schema changed, not the records: a saved plan stays valid
            current: int = self._c.value("SELECT schema_version FROM meta WHERE id = 1")
            for version in range(current + 1, target + 1):
                self._migrate_to(version)
                self._c.update("meta", 1, {"schema_version": version}, "the meta row")
        self.schema_version = max(self.schema_version, target)
        self._jobs.schema_version = self.schema_version

    def _migrate_to(self, version: int) -> None:
        """The schema changes from version - 1 to `version`, in the store's dialect (inside _migrate's transaction)."""
        raise NotImplementedError

    def snapshot(self) -> tuple[Row, dict[str, list[Row]]]:
        """The meta row and every row of COPIED_TABLES, oldest first, from one consistent snapshot."""
        with self._c.reading():
            meta = self._c.meta_row() or {}
            return meta, {t: self._c.rows(f"SELECT * FROM {t} ORDER BY id") for t in COPIED_TABLES}

    def blobs(self, root: Path) -> Blobs:
        """Where this ledger keeps results and sent files, `root` being the repository's (one per open ledger)."""
        if self._blobs is None:
            self._blobs = self._blob_store(root)
        return self._blobs

    def _blob_store(self, root: Path) -> Blobs:
        raise NotImplementedError

    def close(self) -> None:
        """Close the blobs and the connection (see the store's connection for what a closing writer does)."""
        try:
            if self._blobs is not None:
                self._blobs.close()
        finally:
            self._c.close()

    def __enter__(self: _Store) -> _Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- jobs and runs (jobs.py) ----------------------------------------------------------------

    @property
    def serial(self) -> int:
        """The current serial, read fresh from meta."""
        with self._c.reading():
            return self._jobs.serial()

    def recorded_state(self, names: Iterable[str] | None = None,
                       brief: Callable[[JobTip], bool] | None = None) -> RecordedState:
        """Names' jobs, oldest first, with the lineage and serial they were read at (JobBook.recorded_state)."""
        return self._jobs.recorded_state(self.lineage, names, brief)

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

