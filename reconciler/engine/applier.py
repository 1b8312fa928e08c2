"""Execute a plan's actionable changes through a client protocol, reporting every step to a journal.

The applier knows Zuora's two bulk APIs only through `Remote` (ZuoraClient satisfies it) and keeps
no records itself: every intent and result goes to a `Journal` (the apply command implements it on
the ledger; this module never imports the ledger). The order of calls is the crash-safety contract
of DESIGN §5:

- submit: file re-hashed and compared with the plan (a new-rows change sends the file its `outbox`
  writes: the rows not applied yet) -> `journal.intent` (committed) -> POST with the
  deterministic Idempotency-Key -> `journal.submitted`, or `journal.rejected` when Zuora definitively
  refused it (a 4xx other than 408/409/429, or a 200 with `success: false`: nothing was created). A
  custom object job refused for want of a slot (a 400, or created `failed` with 71012560) is rejected
  too, and its Result is `deferred`, not failed: like the planner's slot wait, the next apply submits it. Any other failure leaves the intent
  as it is: the outcome is unknown, and the next plan resumes it with the same key, so Zuora replays
  the original answer instead of creating a second job.
- custom object create/update: the upload is its own resumable step (key + "-upload"), preceded by
  `journal.upload_intent`, like every other remote mutation.
- stop / cancel: events before and after; a cancel sends key + "-cancel-g<generation>". The job of a
  removed spec is then polled a few times until it ends (its result archived) and retired in the
  same apply, so the next plan is empty; one still stopping is left for the next plan to retire.
- replace: stop or cancel, confirm it took (a few quick polls), submit the new generation, then retire
  the old job once it has ended.
- retire: journal only.

Changes in one call to `run` are independent (the planner holds dependents back as `wait`), so they
run concurrently on `parallelism` threads. A failed change is a `Result`, never an exception, except
an `AuthError`: the run cannot authenticate, so it ends (changes under way finish, queued ones never
start) and no intent is closed on its account.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Sequence

from reconciler.engine.answers import (
    NO_SLOT_CODES,
    ChangeFailed,
    Result,
    idempotency_key,
    is_definitive,
    service_limit,
)
from reconciler.dataset.blobs import file_sha256
from reconciler.engine.plan import Change, MassTarget
from reconciler.engine.ports import Journal, Outbox, Remote
from reconciler.errors import AuthError, ReconcilerError, RemoteError
from reconciler.model import (
    CUSTOM_OBJECT_JOB,
    MASS_ACTION,
    Action,
    Observation,
    Outcome,
    Phase,
    is_terminal,
    phase_after,
)

STOPPED_OR_STOPPING = frozenset({"Stopping", "Stopped", "cancelled"})
UNKNOWN_HINT = "outcome unknown; run apply again to resume it with the same Idempotency-Key"
NO_SLOT_HINT = "run apply again once one of the tenant's active custom object jobs has ended"


def _job_of(change: Change) -> str:
    """The remote job a change acts on; a plan made by the planner always names it."""
    if not change.remote_id:
        raise ChangeFailed(f"{change.action} names no remote job", "make the plan again")
    return change.remote_id


def _named(path: Path | None) -> Path:
    """A custom object job's file; create and update jobs always have one."""
    if path is None:
        raise ChangeFailed("the change names no data file to upload", "make the plan again")
    return path


class Applier:
    """Carries out changes against `remote`, reporting to `journal`; `root` resolves spec files."""

    def __init__(self, remote: Remote, journal: Journal, *, root: Path, lineage: str, parallelism: int = 16,
                 sleep: Callable[[float], None] = time.sleep, confirm_polls: int = 8, outbox: Outbox | None = None):
        self.remote = remote
        self.journal = journal
        self.outbox = outbox
        self.root = Path(root)
        self.lineage = lineage
        self.parallelism = max(1, int(parallelism))
        self.sleep = sleep
        self.confirm_polls = confirm_polls
        self._auth_failed: AuthError | None = None  # once set, no further change starts (no intent is written)

    def run(self, changes: Sequence[Change]) -> list[Result]:
        """Carry out every actionable change concurrently; one Result per change, in plan order."""
        todo = [c for c in changes if c.action.actionable]
        if not todo:
            return []
        pool = ThreadPoolExecutor(max_workers=min(self.parallelism, len(todo)), thread_name_prefix="apply")
        try:
            futures = [pool.submit(self.one, change) for change in todo]
            return [future.result() for future in futures]
        except BaseException:
            # ^C: changes already under way finish and record their results; queued ones never start.
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        finally:
            pool.shutdown(wait=True)

    def one(self, change: Change) -> Result:
        """Carry out one change; failures come back as a failed Result."""
        handlers = {Action.SUBMIT: self._submit, Action.UPLOAD: self._upload, Action.REPLACE: self._replace,
                    Action.STOP: self._stop, Action.CANCEL: self._cancel, Action.RETIRE: self._retire}
        if self._auth_failed is not None:
            raise self._auth_failed  # the run cannot authenticate: a change not yet started writes no intent
        with self.journal.working_on(change.name):
            try:
                return handlers[change.action](change)
            except AuthError as err:
                self._auth_failed = err
                raise  # the run cannot authenticate: it ends (Applier.run), nothing is judged by it
            except ChangeFailed as err:
                return Result(change.name, change.action, Outcome.FAILED, err.remote_id or change.remote_id,
                              error=str(err), hint=err.hint)
            except (ReconcilerError, OSError) as err:
                return Result(change.name, change.action, Outcome.FAILED, change.remote_id, error=str(err),
                              hint="run apply again once the cause is fixed; an interrupted step resumes safely")

    # --- submit and upload --------------------------------------------------------------------------

    def _key(self, change: Change) -> str:
        if change.idempotency_key:  # resuming a recorded intent or job: the key it was sent with
            return change.idempotency_key
        return idempotency_key(self.lineage, change.name, change.fingerprint or "", change.generation or 1)

    def _file(self, change: Change) -> Path | None:
        """The change's data file, checked against the hash the plan was made with."""
        relative = change.file.path if change.file else None
        if not relative:
            return None
        path = self.root / relative
        try:
            actual = file_sha256(path)
        except OSError as err:
            raise ChangeFailed(f"cannot read {relative}: {err.strerror or err}",
                               "restore the file, then run plan and apply again") from err
        if change.file is None or actual != change.file.sha256:
            raise ChangeFailed(f"{relative}: file changed since the plan; run plan again",
                               "review the new plan, then apply it")
        sent = self.outbox.file_for(change) if self.outbox is not None else None
        return path if sent is None else sent  # new-rows: the rows not applied yet, written before the intent

    def _submit(self, change: Change, *, replacing: tuple[str, str] | None = None) -> Result:
        """Submit the change; `replacing` is the (remote id, kind) of the job it replaces, retired after."""
        path = self._file(change)
        key = self._key(change)
        target = change.target
        if target is None or (isinstance(target, MassTarget) and path is None):
            raise ChangeFailed("the change names no target or no data file", "make the plan again")
        job = self.journal.intent(change, key)
        try:
            if isinstance(target, MassTarget):
                assert path is not None
                remote_id = self.remote.submit_mass_action(target.action_type, path, idempotency_key=key)
                status: str | None = "Pending"
            else:
                body = self.remote.create_co_job(namespace=target.namespace, object=target.object,
                                                 operation=target.operation, conditions=target.conditions,
                                                 idempotency_key=key)
                remote_id, status = body["Id"], body.get("status")
                limit = service_limit(body)
                if limit is not None:  # created already `failed`: it holds no slot and never ran
                    return self._no_slot(change, job, f"job {remote_id} was created failed: {limit}")
            phase = phase_after(change.kind, status, awaiting_upload=change.awaiting_upload)
        except AuthError:
            raise  # not Zuora's answer to this submission: the intent stays, resumed with the same key
        except RemoteError as err:
            if is_definitive(err) and str(err.code) in NO_SLOT_CODES:
                return self._no_slot(change, job, str(err))
            if is_definitive(err):
                self.journal.rejected(job, change, error=str(err))
                raise ChangeFailed(f"Zuora rejected the submission: {err}",
                                   "fix the spec or its file; the next apply submits a new generation") from err
            raise ChangeFailed(f"submission failed: {err}", UNKNOWN_HINT) from err
        self.journal.submitted(job, change, remote_id=remote_id, status=status, phase=phase)
        if phase is Phase.CREATED:
            status = self._send_file(change, remote_id, key, _named(path))
        if replacing is not None:
            self._retire_replaced(change, *replacing)
        outcome = Outcome.REPLACED if replacing is not None else Outcome.SUBMITTED
        return Result(change.name, change.action, outcome, remote_id, status)

    def _no_slot(self, change: Change, job: int, error: str) -> Result:
        """Zuora's answer "no free custom object job slot": like the planner's slot wait, not a failed change.
        The intent is closed as rejected (nothing holds a slot or needs resuming), so the next apply submits
        the spec again."""
        self.journal.rejected(job, change, error=f"no free custom object job slot: {error}")
        return Result(change.name, change.action, Outcome.DEFERRED, error=f"Zuora has no free custom object job "
                      f"slot (at most 5 active jobs per tenant): {error}", hint=NO_SLOT_HINT)

    def _upload(self, change: Change) -> Result:
        path = _named(self._file(change))
        status = self._send_file(change, _job_of(change), self._key(change), path)
        return Result(change.name, change.action, Outcome.UPLOADED, change.remote_id, status)

    def _send_file(self, change: Change, remote_id: str, key: str, path: Path) -> str | None:
        """Upload a custom object job's one file; a refused file cancels the job so it holds no slot."""
        upload_key = key + "-upload"
        try:
            self.journal.upload_intent(change, remote_id=remote_id, key=upload_key)
        except ChangeFailed as err:  # not sent (e.g. the lock is lost); the result still names the created job
            raise ChangeFailed(str(err), err.hint, err.remote_id or remote_id) from err
        try:
            body = self.remote.upload_co_file(remote_id, path, idempotency_key=upload_key)
        except AuthError:
            raise
        except RemoteError as err:
            if not is_definitive(err):
                raise ChangeFailed(f"job {remote_id} created, but the upload failed: {err}",
                                   "upload " + UNKNOWN_HINT, remote_id) from err
            status = self._cancel_refused(change, remote_id, key)
            raise ChangeFailed(f"Zuora refused the file of job {remote_id}: {err} (job now {status})",
                               "fix the file, then plan and apply again", remote_id) from err
        status = body.get("status")
        self.journal.uploaded(change, remote_id=remote_id, status=status)
        return status

    def _cancel_refused(self, change: Change, remote_id: str, key: str) -> str | None:
        obs = self._observe(change, remote_id)
        if obs.status in ("accepted", "pending"):
            cancel_key = f"{key}-cancel-g{change.generation}"
            self.journal.cancel_intent(change, remote_id=remote_id, key=cancel_key)
            try:
                self.remote.cancel_co_job(remote_id, idempotency_key=cancel_key)
            except AuthError:
                raise
            except RemoteError:
                pass  # reported below through the job's observed status
            obs = self._observe(change, remote_id)
        return obs.status

    # --- stop, cancel, replace, retire ------------------------------------------------------------

    def _observe(self, change: Change, remote_id: str) -> Observation:
        obs = self.remote.observe(change.kind, remote_id)
        self.journal.observed(change, obs)
        return obs

    def _halt(self, change: Change, remote_id: str, kind: str, cancel_key: str) -> Observation:
        """Stop (Mass Updater) or cancel (custom object) a job; the observation after it."""
        try:
            if kind == MASS_ACTION:
                self.journal.stop_requested(change, remote_id=remote_id)
                self.remote.stop_mass_action(remote_id)
                self.journal.stop_answered(change, remote_id=remote_id)
            else:
                self.journal.cancel_intent(change, remote_id=remote_id, key=cancel_key)
                self.remote.cancel_co_job(remote_id, idempotency_key=cancel_key)
        except AuthError:
            raise
        except RemoteError as err:
            try:
                obs = self._observe(change, remote_id)
            except AuthError:
                raise
            except RemoteError:
                obs = None
            if obs is not None and obs.status in STOPPED_OR_STOPPING:
                return obs  # an earlier attempt whose answer was lost got through
            verb = "stop" if kind == MASS_ACTION else "cancel"
            if obs is not None and is_terminal(kind, obs.status):
                raise ChangeFailed(f"job {remote_id} ended {obs.status} before the {verb} took effect",
                                   "run plan again: it shows the real situation", remote_id) from err
            raise ChangeFailed(f"could not {verb} job {remote_id}: {err}", "run apply again", remote_id) from err
        return self._observe(change, remote_id)

    def _stop(self, change: Change) -> Result:
        obs = self._retire_halted(change, MASS_ACTION, self._halt(change, _job_of(change), MASS_ACTION, ""))
        return Result(change.name, change.action, Outcome.STOPPED, change.remote_id, obs.status)

    def _cancel(self, change: Change) -> Result:
        key = f"{self._key(change)}-cancel-g{change.generation}"
        obs = self._halt(change, _job_of(change), CUSTOM_OBJECT_JOB, key)
        obs = self._retire_halted(change, CUSTOM_OBJECT_JOB, obs)
        return Result(change.name, change.action, Outcome.CANCELLED, change.remote_id, obs.status)

    def _retire_halted(self, change: Change, kind: str, obs: Observation) -> Observation:
        """Poll a halted job of a removed spec until it ends (Stopping turns Stopped within seconds), then retire
        it. The stop was accepted, so nothing here may fail the change: a poll that fails leaves it to the next plan."""
        if change.then is not None:
            return obs  # the spec is there: its job stays, and the next plan submits what it did not apply
        remote_id = _job_of(change)
        try:
            for attempt in range(self.confirm_polls):
                if is_terminal(kind, obs.status):
                    break
                self.sleep(min(1.0, 0.05 * 2 ** attempt))
                obs = self._observe(change, remote_id)
            if is_terminal(kind, obs.status):
                self.journal.retire_ended(change, remote_id=remote_id, reason=f"spec removed; job {obs.status} "
                                                                              f"after the {change.action}")
        except AuthError:
            raise
        except ReconcilerError:
            pass  # the job stays as recorded; the next plan retires it once it has ended
        return obs

    def _replace(self, change: Change) -> Result:
        self._file(change)  # a changed file must fail before the old job is stopped
        old = change.replaces
        old_id = change.remote_id or (old.remote_id if old else None) or _job_of(change)
        kind = old.kind if old else change.kind
        cancel_key = f"{self._key(change)}-cancel-g{old.generation if old else change.generation}"
        obs = self._halt(change, old_id, kind, cancel_key)
        for attempt in range(self.confirm_polls):
            # Stopping confirms the stop; a few polls more usually reach Stopped, whose result is archived.
            if obs.status in ("Stopped", "cancelled") or (obs.status == "Stopping" and attempt >= 3):
                break
            if is_terminal(kind, obs.status):
                raise ChangeFailed(f"job {old_id} ended {obs.status} before it could be stopped",
                                   "run plan again: it shows the real situation", old_id)
            self.sleep(min(1.0, 0.05 * 2 ** attempt))
            obs = self._observe(change, old_id)
        if obs.status not in STOPPED_OR_STOPPING:
            raise ChangeFailed(f"job {old_id} did not confirm the stop (still {obs.status})",
                               "run apply again once it has stopped", old_id)
        return self._submit(change, replacing=(old_id, kind))

    def _retire_replaced(self, change: Change, old_id: str, kind: str) -> None:
        """Retire the replaced job once it has ended; one still Stopping stays followed by refresh.

        The new job is already recorded, so nothing here may fail the change.
        """
        try:
            obs = self._observe(change, old_id)
            if is_terminal(kind, obs.status):
                self.journal.retired(change, remote_id=old_id, reason=f"replaced by generation {change.generation}")
        except AuthError:
            raise
        except ReconcilerError:
            pass  # the old job stays as recorded; refresh keeps following it

    def _retire(self, change: Change) -> Result:
        self.journal.retired(change, remote_id=change.remote_id, reason=change.reason)
        return Result(change.name, change.action, Outcome.RETIRED, change.remote_id)
