"""The apply command's side of the applier: its Journal on the ledger (in-doubt recovery is in recovery.py).

Every Journal call commits its own ledger transaction before it returns, so a process killed at any
moment leaves at worst an intent whose outcome is unknown; the next run resumes it with the same
Idempotency-Key.

Test-only crash hook: `RECONCILER_TEST_CRASH_AT=<point>` or `<point>:<spec name>` makes the process
SIGKILL itself at that point (for crash tests; never set it anywhere else). Points:
`after-intent` (intent committed, before the POST), `after-post` (POST answered, result not yet
committed), `after-record` (the change's final result committed), `after-create` (custom object job
created and recorded, before its upload), `after-upload-post` (upload answered, not yet recorded),
`after-stop-post` (stop answered, not yet recorded).
"""

from __future__ import annotations

import os
import signal
from datetime import datetime, timedelta, timezone
from typing import Mapping

from reconciler.engine.refresh import record_observation, result_pending
from reconciler.engine.answers import ChangeFailed
from reconciler.engine.data import intent_facts
from reconciler.engine.plan import Change
from reconciler.errors import LockHeldError, StateError, UsageError
from reconciler.model import (
    Phase,
    IN_DOUBT_SECONDS,
    JobRecord,
    latest_by_name,
)
from reconciler.spec.rules import FINGERPRINT_VERSION

CRASH_ENV = "RECONCILER_TEST_CRASH_AT"
CRASH_POINTS = ("after-intent", "after-post", "after-record", "after-create", "after-upload-post", "after-stop-post")
INTENT_DETAIL = ("actionType", "namespace", "object", "operation", "file", "file_sha256", "conditions",
                 "allowDeleteAll", "replaces", "rerun", "previous_status")
# An interrupted submission is sent again only while Zuora surely still holds its key: the key lives
# 24 h from the first POST (which followed the intent), and a resend may retry for minutes and the
# clocks of two runners drift. A saved plan or a slow confirmation can reach this point hours after
# the plan said "resume"; past this age a resend could create a second job, so it is refused.
RESEND_LIMIT = timedelta(seconds=IN_DOUBT_SECONDS) - timedelta(minutes=30)


def crash_point(env: Mapping[str, str] = os.environ) -> tuple[str, str | None] | None:
    """The test-only crash point asked for by RECONCILER_TEST_CRASH_AT, or None."""
    raw = env.get(CRASH_ENV)
    if not raw:
        return None
    point, _, name = raw.partition(":")
    if point not in CRASH_POINTS:
        raise UsageError(f"{CRASH_ENV}={raw!r}: unknown crash point; use one of {', '.join(CRASH_POINTS)} "
                         "(this variable is for crash tests only)")
    return point, name or None


class LedgerJournal:
    """The applier's Journal on a Session's ledger: intents, results and events, each committed at once."""

    def __init__(self, session, *, crash: tuple[str, str | None] | None = None):
        self.session = session
        self.ledger = session.ledger
        self.crash = crash
        self.jobs: set[int] = set()  # the ledger ids of the jobs this run sent (or was about to send)

    def _crash(self, point: str, name: str) -> None:
        if self.crash and self.crash[0] == point and self.crash[1] in (None, name):
            os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))

    def _event(self, change: Change, **detail) -> dict:
        return {"run_id": self.session.run_id,
                "detail": {"action": str(change.action), "reason": change.reason, **detail}}

    def working_on(self, name: str):
        """Attribute this thread's remote calls to spec `name`."""
        return self.session.acting_on(name)

    def intent(self, change: Change, key: str) -> int:
        """Commit the intent row (phase intent, with its key) before the POST; an existing key is reused."""
        job = self._holding(lambda lock_id: self.ledger.add_intent(
            run_id=self.session.run_id, name=change.name, kind=change.kind, generation=change.generation or 1,
            fingerprint=change.fingerprint, fingerprint_version=FINGERPRINT_VERSION, revision=change.revision or 1,
            idempotency_key=key, detail={**{k: change.detail[k] for k in INTENT_DETAIL if k in change.detail},
                                         **intent_facts(self.session.settings, change)},
            rerun=change.rerun, lock_id=lock_id,
        ))
        self.jobs.add(job.id)
        if job.phase != Phase.INTENT:
            raise StateError(f"{change.name}: the ledger already records job {job.remote_id} (generation "
                                  f"{job.generation}, phase {job.phase}) for this submission; run plan again")
        age = datetime.now(timezone.utc) - job.created_at
        if age >= RESEND_LIMIT:
            raise ChangeFailed(f"the interrupted submission is {age.total_seconds() / 3600:.1f} h old; Zuora keeps "
                               "its Idempotency-Key for 24 h only, so sending it again could create a second job, "
                               "and it was not sent",
                               "check Zuora for the job, then `reconciler import "
                               f"{change.name} ID` if it exists or `reconciler forget {change.name}` if it does not")
        self._crash("after-intent", change.name)
        return job.id

    def submitted(self, job: int, change: Change, *, remote_id: str, status: str | None, phase: str) -> None:
        """Record the remote job the POST created."""
        self._crash("after-post", change.name)
        self.ledger.record_submitted(job, remote_id=remote_id, status=status, phase=phase, event=self._event(change))
        self._crash("after-create" if phase == Phase.CREATED else "after-record", change.name)

    def rejected(self, job: int, change: Change, *, error: str) -> None:
        """Record Zuora's definitive refusal: the intent is closed, nothing exists remotely."""
        self._crash("after-post", change.name)
        self.ledger.record_rejected(job, error=error, event=self._event(change))
        self._crash("after-record", change.name)

    def uploaded(self, change: Change, *, remote_id: str, status: str | None) -> None:
        """Record that the custom object job's file was uploaded."""
        self._crash("after-upload-post", change.name)
        job = self._job(change, remote_id)
        self.ledger.record_uploaded(job.id, status=status, event=self._event(change))
        self._crash("after-record", change.name)

    def stop_requested(self, change: Change, *, remote_id: str) -> None:
        """Event before PUT stop (Zuora takes no Idempotency-Key there; a repeated stop is harmless)."""
        self._holding(lambda lock_id: self._note(change, "stop_requested", remote_id, lock_id=lock_id))

    def stop_answered(self, change: Change, *, remote_id: str) -> None:
        """Event after Zuora accepted the stop."""
        self._crash("after-stop-post", change.name)
        self._note(change, "stop_answered", remote_id)

    def upload_intent(self, change: Change, *, remote_id: str, key: str) -> None:
        """Event before POST .../files, naming the key it is sent with (refused once the lock is lost)."""
        self._holding(lambda lock_id: self._note(change, "upload_intent", remote_id, key, lock_id=lock_id))

    def cancel_intent(self, change: Change, *, remote_id: str, key: str) -> None:
        """Event before PATCH cancel, naming the key it is sent with."""
        self._holding(lambda lock_id: self._note(change, "cancel_intent", remote_id, key, lock_id=lock_id))

    def _note(self, change: Change, event_type: str, remote_id: str, key: str | None = None,
              lock_id: str | None = None) -> None:
        self.ledger.record_event(run_id=self.session.run_id, event_type=event_type, name=change.name,
                                 idempotency_key=key, detail={"remote_id": remote_id, "action": str(change.action)},
                                 lock_id=lock_id)

    def _holding(self, write):
        """Run a write that precedes a remote change, passing the run's lock id so the ledger commits it only
        while this run still holds the lock (a run that stalled past its lease may have lost it to a run
        planning from other specs). Once the lock is lost, nothing more is written or sent."""
        if self.session.lock_lost is None:
            try:
                return write(self.session.lock_id)
            except LockHeldError as err:  # the session keeps the full text, naming the new holder
                self.session.lose_lock(err)
        raise ChangeFailed("not sent: this run no longer holds the ledger lock (another run may be applying)",
                           "`reconciler lock status` names the holder; once it has finished, run plan and apply again")

    def observed(self, change: Change, obs) -> None:
        """Record a job's live status; a job that ended gets its result archived."""
        job = self.ledger.job_by_remote_id(obs.remote_id)
        if job is not None:
            record_observation(self.session, job, obs, source="apply")

    def retired(self, change: Change, *, remote_id: str | None, reason: str) -> None:
        """Retire the job (ledger only)."""
        job = self._job(change, remote_id)
        self.ledger.record_retired(job.id, run_id=self.session.run_id, reason=reason, actor=self.session.actor)

    def retire_ended(self, change: Change, *, remote_id: str, reason: str) -> bool:
        """Retire the job once it has ended and nothing is left to archive: a retired job is no longer
        refreshed, so one still stopping, or whose result could not be archived yet, stays for the next plan."""
        job = self._job(change, remote_id)
        if job.phase != Phase.DONE or result_pending(job):
            return False
        self.ledger.record_retired(job.id, run_id=self.session.run_id, reason=reason, actor=self.session.actor)
        return True

    def _job(self, change: Change, remote_id: str | None) -> JobRecord:
        job = self.ledger.job_by_remote_id(remote_id) if remote_id else None
        if job is None and remote_id is None:
            job = latest_by_name(self.ledger.jobs(change.name)).get(change.name)
        if job is None:
            raise StateError(f"{change.name}: the ledger has no job {remote_id or ''}; run plan again")
        return job
