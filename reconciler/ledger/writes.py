"""The ledger's record-writing API (DESIGN §6): runs, the job lifecycle and the chained event log.

`WriteMethods` is mixed into `Ledger` and runs inside its transactions (plain SQL on its connection;
sqlite-utils stays in ledger.py). Every method that changes jobs or appends an event on their behalf
lets its transaction bump the serial once; run bookkeeping (`start_run`, `finish_run`) and no-op
records (an existing intent, an unchanged observation, an already retired job) do not. Events are
hash-chained as chain.py describes; `meta.head_hash` and `meta.events_count` move in the same
transaction as each insert.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from reconciler.errors import LedgerError
from reconciler.ledger.chain import canonical_json, event_hash
from reconciler.ledger.rows import (
    Actor,
    clean_detail,
    job_from_row,
    loads,
    now,
    redact_path,
)
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
    is_terminal,
)

COUNT_FIELDS = ("total", "processed", "succeeded", "failed")


class WriteMethods:
    """Ledger methods that record runs, jobs and events; they rely on Ledger's transaction and row helpers."""

    def start_run(self, command: str, actor: Actor, plan_digest: str | None = None) -> int:
        """Record the start of a command run; returns its run id (bookkeeping: serial unchanged)."""
        with self._transaction() as tx:
            tx.bump = False
            row = {
                "command": command, "actor": actor.label, "pid": actor.pid, "commit": actor.commit,
                "ci_run_url": actor.ci_run_url, "plan_digest": plan_digest, "started_at": now(),
            }
            return self._insert("runs", row)

    def finish_run(self, run_id: int, outcome: str) -> None:
        """Record a run's end and outcome (bookkeeping: serial unchanged)."""
        with self._transaction() as tx:
            tx.bump = False
            self._update(
                "UPDATE runs SET finished_at = ?, outcome = ? WHERE id = ?", (now(), outcome, run_id), f"run {run_id}"
            )

    def add_intent(
        self, *, run_id: int | None, name: str, kind: str, generation: int, fingerprint: str,
        fingerprint_version: int, revision: int, idempotency_key: str, detail: Mapping, rerun: bool = False,
        lock_id: str | None = None,
    ) -> JobRecord:
        """Commit a job in phase intent before its remote call; an existing key returns its job unchanged.

        Given the run's `lock_id`, the same transaction renews that lock's lease or raises LockHeldError
        when another run took it: no intent is ever committed by a run that no longer holds the lock.
        """
        with self._transaction() as tx:
            if lock_id is not None:
                self._hold_lock(lock_id, time.time())
            existing = self._row("SELECT * FROM jobs WHERE idempotency_key = ?", (idempotency_key,))
            if existing is not None:
                recorded = (existing["name"], existing["generation"], existing["fingerprint"])
                if recorded != (name, generation, fingerprint):
                    raise LedgerError(
                        f"{self.path}: idempotency key {idempotency_key} already belongs to job {existing['id']} "
                        f"({existing['name']} generation {existing['generation']}); refusing to reuse it"
                    )
                tx.bump = False
                return job_from_row(existing)
            stamp, detail = now(), clean_detail(detail)
            job_id = self._insert(
                "jobs",
                {
                    "name": name, "kind": kind, "generation": generation, "fingerprint": fingerprint,
                    "fingerprint_version": fingerprint_version, "revision": revision, "remote_id": None,
                    "idempotency_key": idempotency_key, "phase": PHASE_INTENT, "remote_status": None,
                    "uploaded": 0, "detail": canonical_json(detail), "rerun": int(rerun),
                    "created_at": stamp, "updated_at": stamp, "run_id": run_id,
                },
            )
            self._append_event(
                run_id=run_id, event_type="intent", name=name, idempotency_key=idempotency_key,
                detail={**detail, "kind": kind, "generation": generation, "fingerprint": fingerprint,
                        "revision": revision, "rerun": rerun},
            )
            return job_from_row(self._job_row(job_id))

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
            return job_from_row(self._job_row(job_id))

    def record_uploaded(self, job_id: int, *, status: str | None, event: Mapping) -> JobRecord:
        """Record that a custom object job's file was uploaded."""
        with self._transaction():
            job = self._job_row(job_id)
            phase = _observed_phase({**job, "uploaded": 1}, status)
            self._set_job(job_id, {"uploaded": 1, "remote_status": status, "phase": phase})
            self._job_event(job, event, "uploaded", {"remote_id": job["remote_id"], "status": status})
            return job_from_row(self._job_row(job_id))

    def record_rejected(self, job_id: int, *, error: str, event: Mapping) -> JobRecord:
        """Record that Zuora refused an intent's submission (nothing exists remotely): phase done, status rejected."""
        with self._transaction():
            job = self._job_row(job_id)
            if job["phase"] != PHASE_INTENT:
                raise LedgerError(f"{self.path}: job {job_id} is {job['phase']}, not an intent; a rejection "
                                  "can only close an intent")
            detail = loads(job["detail"])
            detail = {**(detail if isinstance(detail, dict) else {}), "error": error}
            self._set_job(job_id, {"phase": PHASE_DONE, "remote_status": REJECTED,
                                   "detail": canonical_json(clean_detail(detail))})
            self._job_event(job, event, "rejected", {"status": REJECTED, "error": error})
            return job_from_row(self._job_row(job_id))

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
            counts = _counts(vars(obs))
            changes = {"remote_status": obs.status, "phase": _observed_phase(job, obs.status), **counts}
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
            if moved:
                self._append_event(
                    run_id=run_id, event_type="status_change", name=job["name"],
                    idempotency_key=job["idempotency_key"], outcome=obs.status,
                    detail={"remote_id": job["remote_id"], "from": job["remote_status"], "to": obs.status,
                            "source": source, **counts},
                )
            return moved

    def record_retired(self, job_id: int, *, run_id: int | None, reason: str, actor: Actor) -> JobRecord:
        """Move a job to phase retired (ledger only, no remote call); a retired job is left as is."""
        with self._transaction() as tx:
            job = self._job_row(job_id)
            if job["phase"] == PHASE_RETIRED:
                tx.bump = False
                return job_from_row(job)
            self._set_job(job_id, {"phase": PHASE_RETIRED})
            self._append_event(
                run_id=run_id, event_type="retired", name=job["name"], idempotency_key=job["idempotency_key"],
                actor=actor, detail={"reason": reason, "previous_phase": job["phase"], "remote_id": job["remote_id"]},
            )
            return job_from_row(self._job_row(job_id))

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
        actor: Actor | None = None, detail: Mapping | None = None, lock_id: str | None = None,
    ) -> int:
        """Append one event (e.g. a remote call) in its own transaction; returns its id.

        Given `lock_id`, the event is only appended while that lock is still held (see add_intent).
        """
        with self._transaction():
            if lock_id is not None:
                self._hold_lock(lock_id, time.time())
            return self._append_event(
                run_id=run_id, event_type=event_type, name=name, method=method, path=path,
                http_status=http_status, request_id=request_id, track_id=track_id,
                idempotency_key=idempotency_key, outcome=outcome, actor=actor, detail=detail,
            )

    def _insert(self, table: str, row: Mapping) -> int:
        """INSERT one row inside the caller's transaction; returns its id."""
        columns = ", ".join(f'"{column}"' for column in row)
        sql = f"INSERT INTO {table} ({columns}) VALUES ({', '.join('?' * len(row))})"
        return self._conn.execute(sql, tuple(row.values())).lastrowid

    def _set_job(self, job_id: int, changes: Mapping) -> None:
        columns = ", ".join(f"{k} = ?" for k in changes)
        params = (*changes.values(), now(), job_id)
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
        next_id = self._last_event_id() + 1
        if actor is not None:
            label = actor.label
        elif run_id is not None:  # the run's actor, so each event names who caused it (runs never change it)
            if run_id not in self._run_actors:
                self._run_actors[run_id] = (self._row("SELECT actor FROM runs WHERE id = ?", (run_id,)) or {}).get("actor")
            label = self._run_actors[run_id]
        else:
            label = None
        event = {
            "id": next_id, "ts": now(), "run_id": run_id, "name": name, "event_type": event_type,
            "method": method, "path": redact_path(path), "http_status": http_status, "request_id": request_id,
            "track_id": track_id, "idempotency_key": idempotency_key, "outcome": outcome, "actor": label,
            "detail": clean_detail(detail), "prev_hash": meta["head_hash"],
        }
        event["hash"] = event_hash(event)
        self._insert("events", {**event, "detail": canonical_json(event["detail"])})
        self._conn.execute(
            "UPDATE meta SET head_hash = ?, events_count = events_count + 1 WHERE id = 1", (event["hash"],)
        )
        return next_id


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


