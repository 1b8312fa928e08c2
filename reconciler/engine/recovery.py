"""In-doubt recovery: adopt the one remote job a custom object submission left in doubt for over 24 h.

An intent whose POST's outcome stayed unknown past Zuora's 24 h idempotency window can no longer be
resumed with its key; GET /objects/jobs may still show the job it created. Mass Updater has no list,
so its intents wait for a person (`reconciler import` or `forget`).
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta, timezone

from reconciler.engine.answers import service_limit
from reconciler.engine.run import Session
from reconciler.model import CUSTOM_OBJECT_JOB, IN_DOUBT_SECONDS, JobRecord, Phase, phase_after

# How far a remote job's CreatedDate may sit from its intent's created_at and still be that intent's
# job: the POST follows the intent at once, but retries run for up to two minutes and clocks drift.
ADOPT_BEFORE = timedelta(minutes=5)
ADOPT_AFTER = timedelta(minutes=15)


def recover_in_doubt(session: Session, *, now: datetime | None = None) -> list[str]:
    """Adopt the one remote job of each custom object intent in doubt for over 24 h; lines to print.

    GET /objects/jobs lists jobs newest first. An intent is adopted when exactly one listed job has
    its namespace, object and operation, was created close to the intent, and is claimed by no
    other ledger row nor fits another doubtful intent; when that one job was created failed for want
    of a slot (71012560), the intent is closed as rejected instead, so the spec is submitted again. Anything else is left to the planner, which
    reports the intent as a conflict. Mass Updater offers no list, so its intents always wait for a person.
    """
    now = now or datetime.now(timezone.utc)
    doubtful = [j for j in session.ledger.live_jobs() if j.phase == Phase.INTENT and j.kind == CUSTOM_OBJECT_JOB
                and (now - j.created_at).total_seconds() >= IN_DOUBT_SECONDS]
    if not doubtful:
        return []
    oldest = min(j.created_at for j in doubtful) - ADOPT_BEFORE
    recent = []
    with session.acting_on(None):
        for body in session.client.list_co_jobs():
            created = _parse_time(body.get("CreatedDate"))
            if created is not None and created < oldest:
                break  # newest first: the rest are older than every doubtful intent
            if created is not None:
                recent.append((body, created))
    claimed = {j.remote_id for j in session.ledger.jobs_matching(remote_ids=[b["Id"] for b, _ in recent
                                                                                 if isinstance(b.get("Id"), str)])}
    listed = [(body, created) for body, created in recent if body.get("Id") not in claimed]
    # A job Zuora created already failed for want of a slot never ran: it is the intent's answer only
    # when no job that ran fits, and then it closes the intent as rejected (the spec may go again).
    fits = {j.id: _prefer_ran([b for b, created in listed if _fits(j, b, created)]) for j in doubtful}
    uses = Counter(b["Id"] for found in fits.values() for b in found)
    lines = []
    for job in doubtful:
        found = fits[job.id]
        if len(found) != 1 or uses[found[0]["Id"]] != 1:
            ids = ", ".join(b["Id"] for b in found) or "none"
            lines.append(f"{job.name}: submission in doubt for over 24 h; custom object jobs that fit it: {ids} "
                         f"(not adopted: exactly one unclaimed job must fit)")
            continue
        body = found[0]
        limit = service_limit(body)
        if limit is not None:
            session.ledger.record_rejected(job.id, error=f"no free custom object job slot: job {body['Id']} was "
                                           f"created failed: {limit}", event={"run_id": session.run_id})
            lines.append(f"{job.name}: in-doubt submission was refused for want of a slot (job {body['Id']} "
                         f"created failed: {limit}); it is submitted again")
            continue
        status = body.get("status")
        phase = phase_after(CUSTOM_OBJECT_JOB, status,
                            awaiting_upload=status == "pending" and job.detail.get("operation") != "delete")
        session.keep_reads()  # the listing this recovery rests on
        session.ledger.record_submitted(
            job.id, remote_id=body["Id"], status=status, phase=phase,
            event={"run_id": session.run_id, "event_type": "recovered_in_doubt",
                   "detail": {"note": "recovered in-doubt submission", "created": body.get("CreatedDate")}},
        )
        lines.append(f"{job.name}: recovered in-doubt submission as job {body['Id']} "
                     f"(created {body.get('CreatedDate')}, {status})")
    return lines


def _prefer_ran(found: list[dict]) -> list[dict]:
    ran = [b for b in found if service_limit(b) is None]
    return ran or found


def _fits(job: JobRecord, body: dict, created: datetime) -> bool:
    same = all(body.get(k) == job.detail.get(k) for k in ("namespace", "object", "operation"))
    return same and job.created_at - ADOPT_BEFORE <= created <= job.created_at + ADOPT_AFTER


def _parse_time(text) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        value = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
