"""The pure planner: desired + recorded + observed + options -> Plan (DESIGN §4). No I/O.

It pairs by spec name, classifies each name on its own, then applies the two rules that look across
names — dependencies and custom object slots, in rules.py — and sorts: dependency depth first (a spec comes after
everything it depends on), then name. The applier may walk the changes in that order.

Choices the table of DESIGN §4 leaves open, decided here:
- Any fingerprint change while the latest job is still running — a revision bump included — is a
  `replace` when the job can be stopped or cancelled and a `wait` otherwise: one name never has two
  running jobs.
- A dependency counts as done only when its latest job Completed and its own spec is in sync. A
  dependency that Failed, Stopped or was cancelled blocks its dependents ("dependency X failed",
  action `blocked`, transitively) until it is fixed and completes: waiting would never end. A
  dependency the filters leave out holds its dependents waiting and says how to add it.
- Filtered-out names get no change and are not counted, but their jobs still hold custom object
  slots and still gate their dependents. Selectors match labels, so they leave removed specs out.
- Slots freed by cancels in the same plan are not handed out again: those submits wait one run.
- Fingerprints are compared only between equal `fingerprint_version`s; across versions only the
  revision counts, so a new algorithm never makes old records look edited.
- A rejected submission (Zuora refused it with a 4xx; nothing exists remotely) is judged as if it
  never happened, except that generations keep counting and a spec whose latest job was rejected
  is submitted again as "previous submission was rejected". So it never holds a slot nor counts as
  completed, and a spec reverted to what already ran is not run again. Retiring a removed spec
  whose latest job was rejected retires that job: a name is retired when its latest job is.
"""

from __future__ import annotations

from dataclasses import replace

from reconciler.engine.plan import (Change, Drift, FileRef, Plan, PlanOptions, Progress, Replaced, halt_action,
                                    target_of)
from reconciler.engine.rules import (
    Observer,
    Seen,
    check_names,
    depths,
    hold_for_dependencies,
    hold_for_slots,
    selected,
    without_rejected,
)
from reconciler.model import (
    Phase,
    COMPLETED,
    IN_DOUBT_SECONDS,
    REJECTED,
    Action,
    DesiredSpec,
    DesiredState,
    JobRecord,
    JobTip,
    ObservedState,
    RecordedState,
    SpecRecord,
    is_stoppable,
    is_terminal,
)

UNCHANGED = "unchanged"  # classification of a name in sync; None means "not even counted"


def make_plan(
    desired: DesiredState,
    recorded: RecordedState,
    observed: ObservedState,
    options: PlanOptions,
    *,
    environment: str,
    reconciler_version: str,
    drift_since: RecordedState | None = None,
) -> Plan:
    """Compute the plan: a pure function of the three states and the options.

    Drift is `observed` against `drift_since` (default `recorded`): a refresh that already wrote the
    new statuses into the ledger passes the state it read before, so the plan still shows them.
    """
    specs = desired.by_name()
    records = {name: rec for name, rec in recorded.by_name().items() if rec.jobs}
    seen = Observer(observed)
    check_names(desired, recorded, options)

    names = sorted(set(specs) | set(records))
    base = {n: _classify(specs.get(n), records.get(n), seen, options) for n in names}
    depth = depths(specs)
    ordered = sorted((n for n in names if selected(n, specs.get(n), options)), key=lambda n: (depth.get(n, 0), n))

    results: dict = {}
    for n in ordered:  # dependencies first, so a blocked one blocks its dependents
        results[n] = hold_for_dependencies(base[n], specs, records, base, seen, results, options)
    hold_for_slots(results, ordered, recorded, seen, options.custom_object_slots)

    return Plan(
        reconciler_version=reconciler_version,
        created_at=options.now,
        environment=environment,
        lineage=recorded.lineage,
        serial=recorded.serial,
        spec_digest=desired.digest,
        changes=tuple(results[n] for n in ordered if isinstance(results[n], Change)),
        drift=_drift(recorded if drift_since is None else drift_since, seen),
        unchanged=sum(1 for n in ordered if results[n] == UNCHANGED),
    )


def judged_by_latest(spec: DesiredSpec | None, tip: JobTip, options: PlanOptions) -> bool:
    """True when `make_plan` needs only the latest of the spec's jobs to judge it, whatever their live status.

    That is when the spec is unchanged since its latest job, which was not rejected, is neither an
    intent nor retired, ran at the spec's revision and that revision is the top one; no other job of
    the name is live and no --rerun asks for a new run. `_judge` then reads the earlier jobs only for
    the top revision (given) and for a completed run of a changed spec (not changed); drift, slots
    and refresh concern live jobs only. Such a spec is never a change, so engine.data, which reads a
    change's earlier results, always has all of a change's jobs. Every other spec is judged on all.
    """
    latest = tip.latest
    return (spec is not None and spec.name not in options.reruns and tip.live_jobs == 1
            and latest.phase not in (Phase.INTENT, Phase.RETIRED) and latest.remote_status != REJECTED
            and spec.revision == latest.revision == tip.top_revision and not _changed(spec, latest))


def _classify(spec: DesiredSpec | None, rec: SpecRecord | None, seen: Observer, options: PlanOptions):
    """One name on its own: a Change, UNCHANGED, or None (removed and already retired)."""
    if spec is None:
        assert rec is not None  # the name came from the specs or the records
        return _classify_removed(rec, seen, options)
    if rec is None:
        return _submit(spec, "new", generation=1)
    latest, ran = rec.latest, without_rejected(rec)
    if latest.phase != Phase.RETIRED and latest.remote_status == REJECTED:
        return _resubmit(_judge(spec, ran, _next(rec), False, seen, options), latest)
    return _judge(spec, ran, _next(rec), latest.phase == Phase.RETIRED, seen, options)


def _judge(spec: DesiredSpec, rec: SpecRecord | None, gen: int, retired: bool, seen: Observer,
           options: PlanOptions):
    """A spec against the jobs that ran (rejected ones left out); `gen` numbers a new job."""
    if rec is None:
        return _submit(spec, "new", generation=gen)
    latest = rec.latest
    top = max(j.revision for j in rec.jobs)
    rerun = spec.name in options.reruns
    if latest.phase == Phase.INTENT:
        return _classify_intent(spec, latest, options)
    if retired or latest.phase == Phase.RETIRED:
        if spec.revision > top:
            return _submit(spec, f"revision {top} -> {spec.revision}", generation=gen)
        if rerun:
            return _submit(spec, "rerun requested", generation=gen, rerun=True)
        return _conflict(spec.name, spec.kind, f"re-added retired spec (retired at revision {top})",
                         f"bump revision above {top} or run with --rerun {spec.name}", spec=spec)
    now = seen(latest)
    if now.missing:
        return _missing(spec.name, latest, spec)
    if spec.revision < top:
        return _conflict(spec.name, spec.kind, f"revision went down ({top} -> {spec.revision})",
                         f"set revision to {top + 1} or more, or back to {top}", spec=spec, job=latest)
    changed = _changed(spec, latest)
    ran = None if rerun else _completed(rec, spec.revision, seen)
    if changed and ran:  # never a second run of a completed (name, revision) without --rerun
        return _conflict(spec.name, spec.kind, f"revision {spec.revision} already completed once (job {ran})",
                         f"revert the change, bump revision to {top + 1}, or run with --rerun {spec.name}",
                         spec=spec, job=latest)
    if not is_terminal(latest.kind, now.status):
        return _classify_running(spec, rec, gen, now, changed, rerun)
    if spec.revision > top:
        return _submit(spec, f"revision {top} -> {spec.revision}", generation=gen)
    if now.status in COMPLETED:
        if rerun:
            return _submit(spec, "rerun requested", generation=gen, rerun=True)
        if changed:
            return _conflict(spec.name, spec.kind, "spec changed after its job completed",
                             f"revert the change, bump revision to {top + 1}, or run with --rerun {spec.name}",
                             spec=spec, job=latest)
        return UNCHANGED
    if changed:  # the job ended Failed, Stopped or cancelled: the edited spec may run
        return _submit(spec, f"retry after change (last job {now.status})", generation=gen, rerun=rerun,
                       previous_status=now.status)
    if rerun:
        return _submit(spec, "rerun requested", generation=gen, rerun=True)
    return UNCHANGED  # an unsuccessful job is never retried by itself: only a change, bump or --rerun


def _classify_running(spec: DesiredSpec, rec: SpecRecord, gen: int, now: Seen, changed: bool, rerun: bool):
    latest = rec.latest
    if not changed:
        if latest.phase == Phase.CREATED and not latest.uploaded and now.status in (None, "pending"):
            return _for_spec(spec, Action.UPLOAD, "job created, file not uploaded yet", remote_id=latest.remote_id,
                             generation=latest.generation, idempotency_key=latest.idempotency_key)
        if rerun:
            return _wait_for_job(spec.name, spec.kind, f"rerun requested; job is still {now.status}: plan again when "
                                 "it ends", now.status, spec=spec, job=latest)
        return UNCHANGED
    what = f"revision {latest.revision} -> {spec.revision}" if spec.revision != latest.revision else "spec changed"
    verb = halt_action(latest.kind)
    if not is_stoppable(latest.kind, now.status):
        done = {Action.STOP: "stopped", Action.CANCEL: "cancelled"}[verb]
        return _wait_for_job(spec.name, spec.kind, f"{what}; job is {now.status} and can no longer be {done}: plan "
                             "again when it ends", now.status, spec=spec, job=latest)
    return _for_spec(spec, Action.REPLACE, f"{what}: {verb} job ({now.status}), then submit again",
                     remote_id=latest.remote_id, generation=gen, rerun=rerun, progress=_rows_kept(now),
                     replaces=Replaced(latest.remote_id or "", latest.kind, latest.generation, now.status))


def _classify_intent(spec: DesiredSpec, intent: JobRecord, options: PlanOptions):
    name = spec.name
    if _in_doubt(intent, options):
        return _conflict(name, spec.kind, "submission in doubt for more than 24 h", _doubt_way_out(name), spec=spec)
    if _changed(spec, intent):
        return _conflict(name, spec.kind, "spec changed while a submission is in doubt",
                         f"revert the change so the interrupted submission can finish, or check Zuora, then "
                         f"`reconciler import {name} ID` or `reconciler forget {name}`", spec=spec)
    return _for_spec(spec, Action.SUBMIT, "resume interrupted submission", remote_id=intent.remote_id,
                     generation=intent.generation, idempotency_key=intent.idempotency_key, resume=True)


def _resubmit(result, rejected: JobRecord):
    """A new submission after a rejected one says so: nothing was created remotely, so it may go again."""
    if not isinstance(result, Change) or result.action is not Action.SUBMIT or result.resume:
        return result
    error = rejected.detail.get("error")
    reason = f"previous submission was rejected: {error}" if error else "previous submission was rejected"
    if result.rerun:
        reason += " (rerun requested)"
    return replace(result, reason=reason, previous_status=REJECTED)


def _classify_removed(rec: SpecRecord, seen: Observer, options: PlanOptions):
    latest = rec.latest
    name, kind = rec.name, latest.kind
    if latest.phase == Phase.RETIRED:
        return None
    if latest.remote_status == REJECTED:
        ran = without_rejected(rec)
        earlier = _classify_removed(ran, seen, options) if ran else None
        if isinstance(earlier, Change) and earlier.action is not Action.RETIRE:  # a job that ran still needs handling
            return earlier
        return _on_job(latest, Action.RETIRE, "spec removed; its last submission was rejected", status=REJECTED)
    if latest.phase == Phase.INTENT:
        if _in_doubt(latest, options):
            return _conflict(name, kind, "spec removed; submission in doubt for more than 24 h",
                             _doubt_way_out(name), job=latest)
        return _wait_for_job(name, kind, "spec removed while its submission is unconfirmed: restore the spec to "
                             f"finish it, or check Zuora, then `reconciler import {name} ID` or "
                             f"`reconciler forget {name}`", None, job=latest)
    now = seen(latest)
    if now.missing:
        return _missing(name, latest, None)
    if is_stoppable(kind, now.status):
        action = halt_action(kind)
        return _on_job(latest, action, f"spec removed: {action} job ({now.status})", status=now.status,
                       progress=_rows_kept(now))
    if is_terminal(kind, now.status):
        return _on_job(latest, Action.RETIRE, f"spec removed; job ended {now.status}", status=now.status)
    return _wait_for_job(name, kind, f"spec removed; job is {now.status}: retire it once it ends", now.status,
                         job=latest)


def _rows_kept(now: Seen) -> Progress | None:
    """A Processing job's progress, which its stop or cancel leaves in place (rows are not rolled back)."""
    return Progress(now.processed, now.total) if now.status == "Processing" else None


def _drift(recorded: RecordedState, seen: Observer) -> tuple[Drift, ...]:
    found = []
    for rec in sorted(recorded.records, key=lambda r: r.name):
        for job in rec.jobs:
            if not job.remote_id:
                continue
            obs = seen.observations.get(job.remote_id)
            if obs is None:
                continue
            observed = None if obs.missing else obs.status
            if observed != job.remote_status:
                found.append(Drift(rec.name, job.remote_id, job.remote_status, observed))
    return tuple(found)


def _changed(spec: DesiredSpec, job: JobRecord) -> bool:
    if spec.fingerprint_version != job.fingerprint_version:
        return spec.revision != job.revision
    return spec.fingerprint != job.fingerprint


def _completed(rec: SpecRecord, revision: int, seen: Observer) -> str | None:
    """The remote id of an earlier job of this revision that completed, if any (the latest is judged apart)."""
    return next((j.remote_id for j in rec.jobs[:-1] if j.revision == revision and seen(j).status in COMPLETED), None)


def _in_doubt(job: JobRecord, options: PlanOptions) -> bool:
    return (options.now - job.created_at).total_seconds() >= IN_DOUBT_SECONDS


def _doubt_way_out(name: str) -> str:
    return (f"check Zuora for the job, then `reconciler import {name} ID` if it exists "
            f"or `reconciler forget {name}` if it does not")


def _next(rec: SpecRecord) -> int:
    return max(j.generation for j in rec.jobs) + 1


def _for_spec(spec: DesiredSpec, action: Action, reason: str, **fields) -> Change:
    """A change that runs the spec: its target, file and pins, plus what `fields` add."""
    return Change(name=spec.name, kind=spec.kind, action=action, reason=reason, fingerprint=spec.fingerprint,
                  revision=spec.revision, depends_on=spec.depends_on, target=target_of(spec),
                  file=FileRef(spec.file, spec.file_sha256), data=spec.file_facts, **fields)


def _submit(spec: DesiredSpec, reason: str, *, generation: int, rerun: bool = False,
            previous_status: str | None = None) -> Change:
    return _for_spec(spec, Action.SUBMIT, reason, generation=generation, rerun=rerun, previous_status=previous_status)


def _on_job(job: JobRecord, action: Action, reason: str, **fields) -> Change:
    return Change(name=job.name, kind=job.kind, action=action, reason=reason, fingerprint=job.fingerprint,
                  revision=job.revision, remote_id=job.remote_id, generation=job.generation, **fields)


def _wait_for_job(name: str, kind: str, reason: str, status: str | None, *, spec: DesiredSpec | None = None,
                  job: JobRecord | None = None) -> Change:
    return _unactionable(Action.WAIT, name, kind, reason, spec, job, waiting_for="job", status=status)


def _conflict(name, kind, reason, resolve, *, spec: DesiredSpec | None = None, job: JobRecord | None = None):
    return _unactionable(Action.CONFLICT, name, kind, reason, spec, job, resolve=resolve)


def _missing(name: str, job: JobRecord, spec: DesiredSpec | None) -> Change:
    return _conflict(name, job.kind, "job is recorded but missing remotely (404)",
                     f"`reconciler forget {name}` to drop the record, or `reconciler import {name} ID` "
                     "to adopt the right job", spec=spec, job=job)


def _unactionable(action: Action, name: str, kind: str, reason: str, spec: DesiredSpec | None,
                  job: JobRecord | None, **fields) -> Change:
    pins = spec or job
    assert pins is not None
    return Change(name=name, kind=kind, action=action, reason=reason, fingerprint=pins.fingerprint,
                  revision=pins.revision, remote_id=job.remote_id if job else None,
                  generation=job.generation if job else None, depends_on=spec.depends_on if spec else (), **fields)
