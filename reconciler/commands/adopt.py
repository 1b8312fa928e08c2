"""`reconciler import NAME REMOTE_ID`: adopt a job that already exists in Zuora as the spec's latest job.

It checks, before writing anything: the spec exists and is valid; the id has the kind's shape (a
32-hex bulk key, a UUID job id); the job exists in Zuora and matches the spec (actionType, or
namespace/object/operation); the id is not recorded yet; and no earlier job of the spec is still
running. An earlier job that cannot be running — an unconfirmed submission (intent), or a job Zuora
no longer knows (404) — is retired as superseded by the import, which is what `plan` suggests for
those conflicts. The job is recorded under the current fingerprint and revision with the key
`import-<remote id>`, an `import` event naming who imported it, and its result archived when it has
ended. The run holds the ledger lock, so it cannot race an apply.
"""

from __future__ import annotations

import re
from typing import TextIO

from reconciler.engine.refresh import archive
from reconciler.errors import ExitCode, StateError, UsageError
from reconciler.model import (
    Phase,
    CUSTOM_OBJECT_JOB,
    MASS_ACTION,
    DesiredSpec,
    JobRecord,
    Observation,
    is_terminal,
    phase_after,
)

BULK_KEY = re.compile(r"[0-9a-fA-F]{32}")
JOB_ID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def adopt(settings, out: TextIO, *, name: str, remote_id: str) -> int:
    """Record an existing bulk key / custom object job id as NAME's latest job."""
    from reconciler.engine.run import Session
    from reconciler.spec.load import load_desired

    remote_id = remote_id.strip()
    spec = load_desired(settings).by_name().get(name)
    if spec is None:
        raise UsageError(f"no spec named {name!r}: import adopts a job for a spec of this repository, so add the "
                         "spec first (`reconciler validate` checks it)")
    _check_shape(spec, remote_id)
    session = Session(settings, command="import", lock_timeout=0)
    outcome = "error"
    try:
        ledger = session.ledger
        recorded = ledger.job_by_remote_id(remote_id)
        if recorded is not None:
            raise UsageError(f"{remote_id} is already recorded as {recorded.name} generation {recorded.generation} "
                             f"({recorded.remote_status or recorded.phase}); there is nothing to import")
        with session.acting_on(name):
            obs = session.client.observe(spec.kind, remote_id)
            if obs.missing:
                raise StateError(f"no job {remote_id} in Zuora ({settings.environment}): check the id, and that "
                                      "reconciler.yaml points at the environment that ran it")
            body = (session.client.get_mass_action(remote_id) if spec.kind == MASS_ACTION
                    else session.client.get_co_job(remote_id))
            _check_kind(spec, remote_id, body)
            superseded = _earlier_jobs(session, ledger.jobs(name), remote_id)
        for job, reason in superseded:
            ledger.record_retired(job.id, run_id=session.run_id, reason=reason, actor=session.actor)
        job = _record(session, spec, remote_id, obs)
        outcome = "ok"
    finally:
        session.close(outcome)
    for old, reason in superseded:
        out.write(f"Retired generation {old.generation} of {name}: {reason}.\n")
    rows = f", {job.processed}/{job.total} rows" if job.total else ""
    what = spec.action_type if spec.kind == MASS_ACTION else f"{spec.namespace}/{spec.object} {spec.operation}"
    out.write(f"Imported {remote_id} ({spec.kind} {what}, {job.remote_status}{rows}) as {name} generation "
              f"{job.generation}, revision {job.revision}; the audit log records it as imported by "
              f"{session.actor.label}.\n")
    if job.result_path:
        out.write(f"Archived its result to {job.result_path}.\n")
    return ExitCode.OK


def _check_shape(spec: DesiredSpec, remote_id: str) -> None:
    if spec.kind == MASS_ACTION and not BULK_KEY.fullmatch(remote_id):
        looks = "looks like a custom object job id" if JOB_ID.fullmatch(remote_id) else "is not a bulk key"
        raise UsageError(f"{remote_id!r} {looks}, but {spec.name} is a MassAction spec: Mass Updater bulk keys are "
                         "32 hexadecimal characters")
    if spec.kind == CUSTOM_OBJECT_JOB and not JOB_ID.fullmatch(remote_id):
        looks = "looks like a Mass Updater bulk key" if BULK_KEY.fullmatch(remote_id) else "is not a job id"
        raise UsageError(f"{remote_id!r} {looks}, but {spec.name} is a CustomObjectJob spec: custom object job ids "
                         "are UUIDs (8-4-4-4-12 hexadecimal characters)")


def _check_kind(spec: DesiredSpec, remote_id: str, body: dict) -> None:
    if spec.kind == MASS_ACTION:
        wanted = {"actionType": spec.action_type}
    else:
        wanted = {"namespace": spec.namespace, "object": spec.object, "operation": spec.operation}
    wrong = [f"{key} is {body.get(key)!r}, not {value!r}" for key, value in wanted.items() if body.get(key) != value]
    if wrong:
        raise UsageError(f"job {remote_id} does not match spec {spec.name}: {'; '.join(wrong)}. Import it for the "
                         "spec it belongs to, or check the id")


def _earlier_jobs(session, jobs: list[JobRecord], remote_id: str) -> list[tuple[JobRecord, str]]:
    """Earlier jobs the import supersedes; refuses while one of them may still be running."""
    superseded = []
    for job in jobs:
        if job.phase == Phase.INTENT:
            if job.idempotency_key != _key(remote_id):  # an interrupted import of this same job is resumed
                superseded.append((job, f"its unconfirmed submission was superseded by the import of {remote_id}"))
        elif job.phase in (Phase.CREATED, Phase.ACTIVE):
            obs = session.client.observe(job.kind, job.remote_id)
            if obs.missing:
                superseded.append((job, f"job {job.remote_id} is missing in Zuora (404); superseded by the import "
                                        f"of {remote_id}"))
            elif is_terminal(job.kind, obs.status):
                session.ledger.record_observation(job.id, obs, run_id=session.run_id, source="import")
            else:
                raise StateError(
                    f"{job.name} already has job {job.remote_id} ({obs.status}) that is still running; wait for it "
                    f"to end (`reconciler status --wait {job.name}`) or stop it, then import"
                )
    return superseded


def _key(remote_id: str) -> str:
    return f"import-{remote_id}"


def _record(session, spec: DesiredSpec, remote_id: str, obs: Observation) -> JobRecord:
    """Intent, then the observed job with an `import` event naming who imported it, then its result."""
    ledger = session.ledger
    session.keep_reads()  # the reads that checked the job: part of the operator's decision
    key = _key(remote_id)
    resumed = next((j for j in ledger.jobs(spec.name) if j.idempotency_key == key and j.phase == Phase.INTENT), None)
    if resumed is not None:
        job = resumed
    else:
        detail = {"file": spec.file, "file_sha256": spec.file_sha256, "imported": True}
        if spec.kind == MASS_ACTION:
            detail["actionType"] = spec.action_type
        else:
            detail.update(namespace=spec.namespace, object=spec.object, operation=spec.operation)
        job = ledger.add_intent(
            run_id=session.run_id, name=spec.name, kind=spec.kind, generation=ledger.next_generation(spec.name),
            fingerprint=spec.fingerprint, fingerprint_version=spec.fingerprint_version, revision=spec.revision,
            idempotency_key=key, detail=detail,
        )
    # a custom object job still pending waits for its file: plan will upload the spec's file
    phase = phase_after(spec.kind, obs.status, awaiting_upload=spec.kind == CUSTOM_OBJECT_JOB and obs.status == "pending")
    job = ledger.record_submitted(
        job.id, remote_id=remote_id, status=obs.status, phase=phase, counts=vars(obs),
        event={"run_id": session.run_id, "event_type": "import", "actor": session.actor, "outcome": obs.status,
               "detail": {"imported_by": session.actor.label, "revision": spec.revision}},
    )
    ledger.record_observation(job.id, obs, run_id=session.run_id, source="import")  # keeps outputURL / error
    job = ledger.job(job.id)
    if phase == Phase.DONE:
        with session.acting_on(spec.name):
            archive(session, job, obs)
        job = ledger.job(job.id)
    return job
