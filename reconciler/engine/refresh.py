"""Refresh: fetch the live status of every job that may still move, record it, archive finished results.

A refresh writes only what it observed (drift events included) through the session's ledger, with
the read that observed it only when it changed something (a poll that saw nothing new leaves no
event); a finished job's result (a Mass Updater response file, a custom object job's error list) is stored
as state/<env>/results/<name>/... (a file beside a SQLite ledger, a blob in a PostgreSQL one: dataset.blobs)
with its sha256 in the ledger.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

from reconciler.dataset.blobs import UnsafeRef
from reconciler.engine.run import Session
from reconciler.errors import RemoteError
from reconciler.model import CUSTOM_OBJECT_JOB, JobRecord, Observation, ObservedState, Phase

log = logging.getLogger("reconciler.session")

REFRESHABLE = (Phase.CREATED, Phase.ACTIVE)
# One path component that cannot climb or hide: letters, digits, `.`, `_`, `-`, not starting with a dot.
_SAFE_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def refresh(session: Session, names: Iterable[str] | None = None) -> ObservedState:
    """Fetch live status of every non-terminal recorded job (concurrently), record drift, archive results."""
    wanted = set(names) if names is not None else None
    jobs = [
        j for j in session.ledger.live_jobs()
        if j.remote_id and (wanted is None or j.name in wanted)
        and (j.phase in REFRESHABLE or result_pending(j))
    ]
    if not jobs:
        return ObservedState()
    with ThreadPoolExecutor(max_workers=min(session.settings.parallelism, len(jobs))) as pool:
        observations = list(pool.map(lambda job: _observe(session, job), jobs))
    return ObservedState(tuple(observations))


def _observe(session: Session, job: JobRecord) -> Observation:
    assert job.remote_id is not None
    with session.acting_on(job.name):
        obs = session.client.observe(job.kind, job.remote_id)
        record_observation(session, job, obs, source="refresh")
    return obs


def record_observation(session: Session, job: JobRecord, obs: Observation, *, source: str) -> JobRecord:
    """Store a job's live status (drift events included) and archive its result once it has ended."""
    if job.phase in REFRESHABLE:
        session.ledger.record_observation(job.id, obs, run_id=session.run_id, source=source,
                                          calls=session.take_reads())
    fresh = session.ledger.job(job.id)
    if result_pending(fresh):
        archive(session, fresh, obs)
    return fresh


def archive(session: Session, job: JobRecord, obs: Observation) -> str | None:
    """Store a finished job's result where its ledger keeps blobs, then its ref and sha256 in the ledger."""
    assert job.remote_id is not None
    try:
        suffix = ".errors.json" if job.kind == CUSTOM_OBJECT_JOB else ".csv.zip"
        ref = archive_path(session.settings, job.name, job.generation, job.remote_id, suffix).relative_to(
            session.settings.root).as_posix()
        if job.kind == CUSTOM_OBJECT_JOB:
            errors = session.client.co_job_errors(job.remote_id)
            session.keep_reads()
            payload = json.dumps({"job": job.remote_id, "errors": errors}, indent=2, sort_keys=True).encode()
            digest = session.blobs.put(ref, lambda dest: dest.write_bytes(payload))
            if obs.status is not None and not obs.missing:
                session.ledger.record_observation(job.id, _row_counts(obs, errors), run_id=session.run_id,
                                                  source="errors")
        else:
            url = obs.output_url or job.detail.get("output_url")
            if not url:  # Failed, or stopped while Pending: Zuora makes no response file
                return None
            # streamed to a file (bounded memory), which the store keeps (files) or copies in by parts (database)
            digest = session.blobs.put(ref, lambda dest: session.client.download_file(url, dest))
            session.keep_reads()
    except (RemoteError, OSError, UnsafePath, UnsafeRef) as err:
        log.warning("could not archive the result of %s (%s): %s", job.name, job.remote_id, err)
        session.ledger.record_event(
            run_id=session.run_id, event_type="result_archive_failed", name=job.name,
            idempotency_key=job.idempotency_key, outcome="error", detail={"error": str(err)},
        )
        return None
    session.ledger.record_result(job.id, path=ref, sha256=digest, run_id=session.run_id)
    return ref


class UnsafePath(ValueError):
    """An archive path that would not be a plain file under state/ (a hostile name or remote id)."""


def archive_path(settings, name: str, generation: int, remote_id: str, suffix: str) -> Path:
    """state/<env>/results/<name>/g<generation>-<remote id><suffix>, built only from plain path parts and
    checked to resolve inside state/ (symlinks followed): a remote id like `x/../../tmp/PWNED` never
    becomes a path. Raises UnsafePath otherwise."""
    stem = f"g{int(generation)}-{remote_id}"
    for part in (name, remote_id):
        if not isinstance(part, str) or not _SAFE_PART.fullmatch(part) or ".." in part:
            raise UnsafePath(f"{part!r} cannot be part of a result file's path; not archiving it")
    dest = settings.results_dir / name / f"{stem}{suffix}"
    state = (settings.root / "state").resolve()
    if not dest.resolve().is_relative_to(state):
        raise UnsafePath(f"{dest} resolves outside {state}; not archiving it")
    return dest


def _row_counts(obs: Observation, errors: list) -> Observation:
    """A custom object job's body has no success/error counts; its /errors list gives them."""
    failed = len({e.get("row") for e in errors if isinstance(e, dict) and isinstance(e.get("row"), int)})
    processed = obs.processed
    succeeded = max(processed - failed, 0) if processed is not None else None
    return replace(obs, total=processed if processed is not None else obs.total, failed=failed, succeeded=succeeded)


def result_pending(job: JobRecord) -> bool:
    """A finished job whose result exists remotely but is not archived yet."""
    if job.phase != Phase.DONE or job.result_path:
        return False
    return job.kind == CUSTOM_OBJECT_JOB or bool(job.detail.get("output_url"))
