"""The job lifecycle (DESIGN §6): command runs and each remote job from intent to result, read and recorded.

`JobBook` reads in the short snapshots and writes in the transactions of the Connection it is
given; the event each change leaves goes through the EventLog it is given in the same transaction, and
writes made under the run lock renew it through the LeaseLock it is given. Every method that changes
jobs or appends an event on their behalf lets its transaction bump the serial once; run bookkeeping
(`start_run`, `finish_run`) and no-op records (an existing intent, an unchanged observation, an already
retired job) do not.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from reconciler.errors import LedgerError
from reconciler.ledger.chain import job_digest
from reconciler.ledger.connection import Row
from reconciler.ledger.protocol import Connection
from reconciler.ledger.events import EventLog
from reconciler.ledger.lock import LeaseLock
from reconciler.ledger.rows import Actor, clean_detail, job_from_row, loads, now
from reconciler.ledger.schema import LIVE_SCHEMA, live_job
from reconciler.model import (
    Phase,
    phase_after,
    REJECTED,
    JobRecord,
    JobTip,
    Observation,
    RecordedState,
    SpecRecord,
    canonical_json,
)

COUNT_FIELDS = ("total", "processed", "succeeded", "failed")
_NAMES_PER_QUERY = 500  # bound parameters per `name IN (...)`, well under SQLite's oldest limit of 999


class JobBook:
    """The `runs` and `jobs` tables of one ledger of schema `schema_version`, on the connection given."""

    def __init__(self, connection: Connection, events: EventLog, lease: LeaseLock, schema_version: int):
        self._c = connection
        self._events = events
        self._lease = lease
        self.schema_version = schema_version  # the store moves it when it migrates

    # --- reads ----------------------------------------------------------------------------------

    def serial(self) -> int:
        """The current serial, read fresh from meta (inside the caller's snapshot)."""
        serial: int = self._c.value("SELECT serial FROM meta WHERE id = 1")
        return serial

    def _live_job(self) -> str | None:
        """The LIVE_JOB condition this ledger indexes, or None before schema LIVE_SCHEMA (read whole then)."""
        return live_job(self.schema_version) if self.schema_version >= LIVE_SCHEMA else None

    def recorded_state(self, lineage: str, names: Iterable[str] | None = None,
                       brief: Callable[[JobTip], bool] | None = None) -> RecordedState:
        """Names' jobs, oldest first, with the lineage and serial they were read at.

        Every name's by default. Given `names`, their jobs plus those of every name with a LIVE_JOB
        (through the live-jobs index): all the planner needs for those specs, since it gives any other
        name nothing to do. Given `brief` as well, a name whose JobTip it accepts gets only its latest
        job, so a plan's cost follows its specs and live jobs, not every generation ever recorded. A
        ledger older than schema 3 (read-only, not migrated yet) is read whole.
        """
        by_name: dict[str, list[JobRecord]] = {}
        with self._c.reading():
            serial = self.serial()
            live = self._live_job()
            if names is None or live is None:
                rows = self._c.rows("SELECT * FROM jobs ORDER BY name, generation, id")
            else:
                wanted = set(names) | {r["name"] for r in self._c.rows(f"SELECT DISTINCT name FROM jobs WHERE {live}")}
                if brief is not None:
                    for row in self._tip_rows(live, wanted):
                        tip = JobTip(job_from_row(row), row["top_revision"], row["live_jobs"])
                        if brief(tip):
                            by_name[tip.latest.name] = [tip.latest]
                wanted.difference_update(by_name)
                rows = sorted(self._rows_in("name", wanted), key=lambda r: (r["generation"], r["id"]))
        for row in rows:
            by_name.setdefault(row["name"], []).append(job_from_row(row))
        records = tuple(SpecRecord(name, tuple(by_name[name])) for name in sorted(by_name))
        return RecordedState(records=records, lineage=lineage, serial=serial)

    def _tip_rows(self, live: str, names: Iterable[str]) -> list[Row]:
        """The latest job of each of these names, with its name's `top_revision` and `live_jobs` (JobTip)."""
        distinct = sorted(names)
        rows: list[Row] = []
        for start in range(0, len(distinct), _NAMES_PER_QUERY):
            chunk = tuple(distinct[start:start + _NAMES_PER_QUERY])
            rows += self._c.rows(
                "SELECT j.*, (SELECT max(CASE WHEN x.remote_status = ? THEN NULL ELSE x.revision END) FROM jobs x "
                f"WHERE x.name = j.name) AS top_revision, (SELECT count(*) FROM jobs x WHERE x.name = j.name AND ({live})"
                f") AS live_jobs FROM jobs j WHERE j.superseded = 0 AND j.name IN ({', '.join('?' * len(chunk))})",
                (REJECTED, *chunk))
        return rows

    def _rows_in(self, column: str, values: Iterable[object]) -> list[Row]:
        """Jobs whose `column` (an indexed one: name, id, remote_id) is among `values`, in chunks."""
        distinct = sorted({v for v in values if v is not None}, key=str)  # the order only groups the chunks
        rows: list[Row] = []
        for start in range(0, len(distinct), _NAMES_PER_QUERY):
            chunk = tuple(distinct[start:start + _NAMES_PER_QUERY])
            rows += self._c.rows(f"SELECT * FROM jobs WHERE {column} IN ({', '.join('?' * len(chunk))})", chunk)
        return rows

    def jobs(self, name: str | None = None) -> list[JobRecord]:
        """Jobs in the order they were created, all or one name's."""
        with self._c.reading():
            if name is None:
                return [job_from_row(r) for r in self._c.rows("SELECT * FROM jobs ORDER BY id")]
            return [job_from_row(r) for r in self._c.rows("SELECT * FROM jobs WHERE name = ? ORDER BY id", (name,))]

    def jobs_matching(self, *, ids: Iterable[int] = (), remote_ids: Iterable[str] = (), live: bool = False,
                      ) -> list[JobRecord]:
        """Jobs in creation order with one of these ledger ids or remote ids, plus every LIVE_JOB one when `live`.

        Read through indexes, so its cost follows the jobs asked for, not every job ever recorded.
        """
        with self._c.reading():
            rows: dict[int, Row] = {}
            if live:
                condition = self._live_job()
                where = f" WHERE {condition}" if condition is not None else ""
                rows.update((r["id"], r) for r in self._c.rows(f"SELECT * FROM jobs{where}"))
            wanted: tuple[tuple[str, Iterable[object]], ...] = (("id", ids), ("remote_id", remote_ids))
            for column, values in wanted:
                rows.update((r["id"], r) for r in self._rows_in(column, values))
        return [job_from_row(rows[job_id]) for job_id in sorted(rows)]

    def next_generation(self, name: str) -> int:
        """The generation the next job of this name gets (1 for a new name)."""
        with self._c.reading():
            top: int = self._c.value("SELECT coalesce(max(generation), 0) FROM jobs WHERE name = ?", (name,))
            return top + 1

    def job(self, job_id: int) -> JobRecord:
        """One job by ledger id; LedgerError when there is none."""
        with self._c.reading():
            return job_from_row(self._job_row(job_id))

    def _job_row(self, job_id: int) -> Row:
        row = self._c.row("SELECT * FROM jobs WHERE id = ?", (job_id,))
        if row is None:
            raise LedgerError(f"{self._c.path}: there is no job with ledger id {job_id}")
        return row

    def job_by_remote_id(self, remote_id: str) -> JobRecord | None:
        """The latest job recorded with this remote id (bulk key or custom object job id)."""
        with self._c.reading():
            row = self._c.row("SELECT * FROM jobs WHERE remote_id = ? ORDER BY id DESC LIMIT 1", (remote_id,))
        return job_from_row(row) if row else None

    # --- runs -----------------------------------------------------------------------------------

    def start_run(self, command: str, actor: Actor, plan_digest: str | None = None) -> int:
        """Record the start of a command run; returns its run id (bookkeeping: serial unchanged)."""
        with self._c.transaction() as tx:
            tx.bump = False
            return self._c.insert("runs", {
                "command": command, "actor": actor.label, "pid": actor.pid, "commit": actor.commit,
                "ci_run_url": actor.ci_run_url, "plan_digest": plan_digest, "started_at": now(),
            })

    def last_refresh(self) -> str | None:
        """When a run that fetched live status (plan, apply, status --refresh/--wait) last finished, ISO 8601."""
        with self._c.reading():
            value = self._c.value(
                "SELECT max(finished_at) FROM runs WHERE outcome IS NOT NULL AND outcome != 'error' "
                "AND (command IN ('plan', 'apply') OR command LIKE 'status --%')")
        return value if isinstance(value, str) else None

    def finish_run(self, run_id: int, outcome: str) -> None:
        """Record a run's end and outcome (bookkeeping: serial unchanged)."""
        with self._c.transaction() as tx:
            tx.bump = False
            self._c.update("runs", run_id, {"finished_at": now(), "outcome": outcome}, f"run {run_id}")

    # --- the job lifecycle ----------------------------------------------------------------------

    def add_intent(
        self, *, run_id: int | None, name: str, kind: str, generation: int, fingerprint: str,
        fingerprint_version: int, revision: int, idempotency_key: str, detail: Mapping[str, object],
        rerun: bool = False, lock_id: str | None = None,
    ) -> JobRecord:
        """Commit a job in phase intent before its remote call; an existing key returns its job unchanged.

        Given the run's `lock_id`, the same transaction renews that lock's lease or raises LockHeldError
        when another run took it: no intent is ever committed by a run that no longer holds the lock.
        """
        with self._c.transaction() as tx:
            if lock_id is not None:
                self._lease.hold(lock_id, time.time())
            existing = self._c.row("SELECT * FROM jobs WHERE idempotency_key = ?", (idempotency_key,))
            if existing is not None:
                recorded = (existing["name"], existing["generation"], existing["fingerprint"])
                if recorded != (name, generation, fingerprint):
                    raise LedgerError(
                        f"{self._c.path}: idempotency key {idempotency_key} already belongs to job {existing['id']} "
                        f"({existing['name']} generation {existing['generation']}); refusing to reuse it"
                    )
                tx.bump = False
                return job_from_row(existing)
            self._refuse_a_deleted_generation(name, generation)
            stamp, cleaned = now(), clean_detail(detail)
            job_id = self._c.insert("jobs", {
                "name": name, "kind": kind, "generation": generation, "fingerprint": fingerprint,
                "fingerprint_version": fingerprint_version, "revision": revision, "remote_id": None,
                "idempotency_key": idempotency_key, "phase": Phase.INTENT, "remote_status": None,
                "uploaded": 0, "detail": canonical_json(cleaned), "rerun": int(rerun),
                "created_at": stamp, "updated_at": stamp, "run_id": run_id,
            })
            facts = cleaned if isinstance(cleaned, dict) else {}
            row = self._row_event(
                job_id, run_id=run_id, event_type="intent", name=name, idempotency_key=idempotency_key,
                detail={**facts, "kind": kind, "generation": generation, "fingerprint": fingerprint,
                        "revision": revision, "rerun": rerun},
            )
            return job_from_row(row)

    def _refuse_a_deleted_generation(self, name: str, generation: int) -> None:
        """LedgerError when the audit log holds an intent of this generation or later but the jobs table does not.

        A new generation is the next after the rows recorded, so a deleted row would otherwise make its
        spec run again; the events (append-only, indexed by name) still say it ran.
        """
        seen = self._c.row(
            "SELECT id, json_extract(detail, '$.generation') AS generation FROM events WHERE name = ? "
            "AND event_type = 'intent' AND json_valid(detail) ORDER BY id DESC LIMIT 1", (name,),
        )
        if seen is None or not isinstance(seen["generation"], int) or seen["generation"] < generation:
            return
        recorded = self._c.value("SELECT coalesce(max(generation), 0) FROM jobs WHERE name = ?", (name,))
        if seen["generation"] > recorded:  # else the row is there, and the unique index refuses a second one
            raise LedgerError(
                f"{self._c.path}: refusing to record {name} generation {generation}: the audit log holds the intent of "
                f"generation {seen['generation']} (event {seen['id']}) but the jobs table has no such row, so it was "
                "edited by hand; restore the ledger (e.g. `git checkout` its file) and run `reconciler audit verify`"
            )

    def record_submitted(
        self, job_id: int, *, remote_id: str, status: str | None, phase: str,
        counts: Mapping[str, Any] | None = None, event: Mapping[str, Any],
    ) -> JobRecord:
        """Record the remote job a submission created; `event` holds record_event's keywords."""
        _check_phase(phase)
        with self._c.transaction():
            job = self._job_row(job_id)
            self._set_job(job_id, {"remote_id": remote_id, "remote_status": status, "phase": phase, **_counts(counts)})
            return job_from_row(self._job_event(job, event, "submitted", {"remote_id": remote_id, "status": status}))

    def record_uploaded(self, job_id: int, *, status: str | None, event: Mapping[str, Any]) -> JobRecord:
        """Record that a custom object job's file was uploaded."""
        with self._c.transaction():
            job = self._job_row(job_id)
            phase = _observed_phase({**job, "uploaded": 1}, status)
            self._set_job(job_id, {"uploaded": 1, "remote_status": status, "phase": phase})
            return job_from_row(self._job_event(job, event, "uploaded", {"remote_id": job["remote_id"], "status": status}))

    def record_rejected(self, job_id: int, *, error: str, event: Mapping[str, Any]) -> JobRecord:
        """Record that Zuora refused an intent's submission (nothing exists remotely): phase done, status rejected."""
        with self._c.transaction():
            job = self._job_row(job_id)
            if job["phase"] != Phase.INTENT:
                raise LedgerError(f"{self._c.path}: job {job_id} is {job['phase']}, not an intent; a rejection "
                                  "can only close an intent")
            detail = loads(job["detail"])
            detail = {**(detail if isinstance(detail, dict) else {}), "error": error}
            self._set_job(job_id, {"phase": Phase.DONE, "remote_status": REJECTED,
                                   "detail": canonical_json(clean_detail(detail))})
            return job_from_row(self._job_event(job, event, "rejected", {"status": REJECTED, "error": error}))

    def record_observation(self, job_id: int, obs: Observation, *, run_id: int | None, source: str,
                           calls: Sequence[Mapping[str, Any]] = ()) -> bool:
        """Store a refreshed remote status and counts; True (plus a status_change event) when the status moved.

        A job missing remotely (404) is left as recorded: the planner turns that into a conflict.
        `calls` (the reads that made the observation, as event keywords) are appended just before the
        event, in its transaction, and only when there is one: a poll that changed nothing leaves no trace.
        """
        with self._c.transaction() as tx:
            job = self._job_row(job_id)
            if job["remote_id"] is not None and obs.remote_id != job["remote_id"]:
                raise ValueError(f"observation of {obs.remote_id} given for job {job_id} ({job['remote_id']})")
            if obs.missing or obs.status is None:
                tx.bump = False
                return False
            counts = _counts(vars(obs))
            changes: dict[str, object] = {
                "remote_status": obs.status, "phase": _observed_phase(job, obs.status), **counts,
            }
            detail = loads(job["detail"])
            if isinstance(detail, dict):
                extra = {k: getattr(obs, k) for k in ("output_url", "error") if getattr(obs, k) is not None}
                changes["detail"] = canonical_json(clean_detail({**detail, **extra}))
            changes = {k: v for k, v in changes.items() if job[k] != v}
            if not changes:
                tx.bump = False
                return False
            self._set_job(job_id, changes)
            moved = "remote_status" in changes
            if moved or changes.keys() - set(COUNT_FIELDS):  # progress alone is not a decision: no event
                for call in calls:
                    self._events.append(**call)
                self._row_event(
                    job_id, run_id=run_id, event_type="status_change" if moved else "detail_change",
                    name=job["name"], idempotency_key=job["idempotency_key"], outcome=obs.status,
                    detail={"remote_id": job["remote_id"], "from": job["remote_status"], "to": obs.status,
                            "source": source, **counts},
                )
            return moved

    def record_retired(self, job_id: int, *, run_id: int | None, reason: str, actor: Actor) -> JobRecord:
        """Move a job to phase retired (ledger only, no remote call); a retired job is left as is."""
        with self._c.transaction() as tx:
            job = self._job_row(job_id)
            if job["phase"] == Phase.RETIRED:
                tx.bump = False
                return job_from_row(job)
            self._set_job(job_id, {"phase": Phase.RETIRED})
            return job_from_row(self._row_event(
                job_id, run_id=run_id, event_type="retired", name=job["name"], idempotency_key=job["idempotency_key"],
                actor=actor, detail={"reason": reason, "previous_phase": job["phase"], "remote_id": job["remote_id"]},
            ))

    def record_result(self, job_id: int, *, path: str, sha256: str, run_id: int | None) -> None:
        """Record where a job's result file was archived and its sha256."""
        with self._c.transaction():
            job = self._job_row(job_id)
            self._set_job(job_id, {"result_path": path, "result_sha256": sha256})
            self._row_event(
                job_id, run_id=run_id, event_type="result_archived", name=job["name"],
                idempotency_key=job["idempotency_key"], detail={"path": path, "sha256": sha256},
            )

    def _set_job(self, job_id: int, changes: Mapping[str, object]) -> None:
        self._c.update("jobs", job_id, {**changes, "updated_at": now()}, f"job {job_id}")

    def _job_event(self, job: Row, event: Mapping[str, Any], default_type: str, facts: Mapping[str, object]) -> Row:
        fields: dict[str, Any] = {
            "run_id": job["run_id"], "event_type": default_type, "name": job["name"],
            "idempotency_key": job["idempotency_key"], **event,
        }
        fields["detail"] = {**facts, **(fields.get("detail") or {})}
        return self._row_event(job["id"], **fields)

    def _row_event(self, job_id: int, **fields: Any) -> Row:
        """Append the event of a change to job `job_id`, binding the changed row to the chain; returns the row.

        The event's detail gets `job_sha256`, the digest of the row as it now is (chain.job_digest), which
        `audit verify` recomputes: a row changed without an event, or by hand, no longer matches.
        """
        row = self._job_row(job_id)
        fields["detail"] = {**(fields.get("detail") or {}), "job_sha256": job_digest(row)}
        self._events.append(**fields)
        return row


def _check_phase(phase: str) -> None:
    if phase not in tuple(Phase):
        raise ValueError(f"unknown phase {phase!r}")


def _counts(values: Mapping[str, Any] | None) -> dict[str, Any]:
    return {k: values[k] for k in COUNT_FIELDS if values and values.get(k) is not None}


def _observed_phase(job: Mapping[str, Any], status: str | None) -> Phase:
    if job["phase"] == Phase.RETIRED:
        return Phase.RETIRED
    return phase_after(job["kind"], status, awaiting_upload=job["phase"] == Phase.CREATED and not job["uploaded"])
