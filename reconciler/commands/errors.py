"""`reconciler errors NAME`: the failed rows of a spec's latest job, from its archived result.

The latest job is the newest one with a remote id. When its result is not archived yet (or the
archived file is gone), it is fetched and archived first through a Session, which records the calls;
a job the ledger still shows running is refreshed first. An archived file whose sha256 no longer
matches the ledger is refused rather than trusted. `--failed-rows FILE` writes just the failed rows
with the input file's columns, ready to become a follow-up spec's file.
"""

from __future__ import annotations

import csv
from typing import TextIO

from reconciler.engine.refresh import archive, refresh
from reconciler.commands._common import (
    Specs,
    atomic_file,
    count,
    display_path,
    job_document,
    result_state,
    user_path,
    write_json,
)
from reconciler.dataset.results import (
    Failures,
    custom_object_failures,
    failed_rows_table,
    mass_updater_failures,
)
from reconciler.actions import MASS_ACTIONS, OPERATIONS
from reconciler.errors import ExitCode, ResultError, StateError
from reconciler.model import (
    Phase,
    MASS_ACTION,
    JobRecord,
    is_terminal,
    latest_by_name,
)
from reconciler.views import render_table, terminal_width


def errors(settings, out: TextIO, *, name: str, failed_rows: str | None = None, as_json: bool = False) -> int:
    """Print the failed rows of NAME's latest job; exit 0 when there are none, 1 when the job failed whole."""
    from reconciler.engine.run import read_ledger

    ledger = read_ledger(settings)
    jobs: list[JobRecord] = []
    if ledger is not None:
        with ledger:
            jobs = ledger.jobs(name)
    submitted = [j for j in jobs if j.remote_id]
    if not submitted:
        specs = Specs(settings)
        if not jobs and specs.get(name) is None:
            raise specs.unknown(name)
        raise StateError(f"{name} has no submitted job yet, so there are no failed rows; "
                              "`reconciler status` shows its state")
    job = _result_ready(settings, latest_by_name(submitted)[name])
    failures = _failures(settings, job)
    written, origin = (_write_failed_rows(settings, job, failures, failed_rows) if failed_rows and failures.rows
                       else (None, None))
    if as_json:
        write_json(out, {
            "name": name, "job": job_document(job, {job.id: "ok"}), "result_path": job.result_path,
            "failed": [{"row": r.row, "key": r.key, "message": r.message, "code": r.code,
                        **({"values": r.values} if job.kind == MASS_ACTION else {"record": r.record})}
                       for r in failures.rows],
            "unprocessed": failures.unprocessed,
            "failed_rows_file": written,
        })
        return ExitCode.OK
    _render(out, job, failures)
    if failed_rows and not failures.rows:
        out.write(f"(nothing written to {failed_rows}: there are no failed rows)\n")
    elif written:
        out.write(f"Wrote {count(len(failures.rows), 'failed row')} to {written} (rows from {origin}).\n"
                  "Point a new spec's `file:` at it (or fix the rows first), then `reconciler validate` and plan.\n")
    return ExitCode.OK


def _stored(settings, job: JobRecord) -> str | None:
    """result_state of the job's result where its ledger keeps it (read only)."""
    from reconciler.engine.run import read_ledger

    ledger = read_ledger(settings)
    if ledger is None:
        return None
    with ledger:
        return result_state(ledger.blobs(settings.root), job)


def _failures(settings, job: JobRecord) -> Failures:
    """The failed rows in the job's archived result, read where its ledger keeps it."""
    from reconciler.engine.run import read_ledger

    ledger = read_ledger(settings)
    assert ledger is not None  # _result_ready found the result in it
    with ledger:
        assert job.result_path is not None
        path = ledger.blobs(settings.root).fetch(job.result_path, job.result_sha256)
        if path is None:
            raise _changed(job)
        if job.kind == MASS_ACTION:
            return mass_updater_failures(path, job.detail.get("actionType", ""))
        return custom_object_failures(path)


def _changed(job: JobRecord) -> ResultError:
    return ResultError(
        f"{job.result_path}: the archived result of {job.name} was changed or cannot be read: its sha256 no "
        f"longer matches the ledger's {job.result_sha256}. Restore it (a file from git; a PostgreSQL ledger's blob "
        "from a backup of its database), or remove it so `reconciler errors` fetches it again"
    )


def _result_ready(settings, job: JobRecord) -> JobRecord:
    """The job with its result archived and intact, fetching it through a Session when needed."""
    state = _stored(settings, job)
    if state == "ok":
        return job
    if state in ("changed", "unreadable"):
        raise _changed(job)
    if _no_response_file(job):
        raise _whole_job_failed(job)
    from reconciler.engine.run import Session

    session = Session(settings, command="errors")
    outcome = "error"
    try:
        if job.phase in (Phase.ACTIVE, Phase.CREATED):
            refresh(session, [job.name])
            job = session.ledger.job(job.id)
        if not is_terminal(job.kind, job.remote_status):
            raise StateError(
                f"job {job.remote_id} of {job.name} is still {job.remote_status or job.phase}; its failed rows are "
                f"known when it ends: `reconciler status --wait {job.name}`"
            )
        if _no_response_file(job):
            raise _whole_job_failed(job)
        if result_state(session.blobs, job) != "ok":
            with session.acting_on(job.name):
                obs = session.client.observe(job.kind, job.remote_id)
                if obs.missing:
                    raise StateError(f"job {job.remote_id} of {job.name} is missing in Zuora (404); its "
                                          "result cannot be fetched")
                archive(session, job, obs)
            job = session.ledger.job(job.id)
        outcome = "ok"
    finally:
        session.close(outcome)
    if _stored(settings, job) != "ok":
        raise ResultError(f"the result of job {job.remote_id} of {job.name} could not be fetched; "
                              f"`reconciler history {job.name}` shows the failed calls")
    return job


def _no_response_file(job: JobRecord) -> bool:
    """A finished Mass Updater job without a response file: Failed, or Stopped before it started."""
    return job.kind == MASS_ACTION and is_terminal(job.kind, job.remote_status) and not job.detail.get("output_url")


def _whole_job_failed(job: JobRecord) -> StateError:
    if job.remote_status == "Failed":
        reason = job.detail.get("error") or "no reason given"
        return StateError(f"job {job.remote_id} of {job.name} Failed as a whole ({reason}): no row was "
                               "processed and Zuora made no response file; fix the file, then apply again")
    return StateError(f"job {job.remote_id} of {job.name} ended {job.remote_status} before processing any "
                           "row, so Zuora made no response file and no row failed")


def _render(out: TextIO, job: JobRecord, failures: Failures) -> None:
    total = f" of {failures.total}" if failures.total is not None else ""
    out.write(f"{job.name}: job {job.remote_id} (generation {job.generation}, {job.remote_status}): "
              f"{count(len(failures.rows), 'failed row')}{total}\n")
    if job.detail.get("error"):
        out.write(f"  job error: {job.detail['error']}\n")
    if failures.rows:
        key_text = [", ".join(f"{k}={v}" for k, v in r.key.items()) or None for r in failures.rows]
        if job.kind == MASS_ACTION:
            table = [[r.row, key, r.message] for r, key in zip(failures.rows, key_text)]
            render_table(table, ("ROW", "KEY", "MESSAGE"), out, width=terminal_width(out), cut_first=(1,))
        else:
            table = [[r.row, r.code, key, r.message] for r, key in zip(failures.rows, key_text)]
            render_table(table, ("ROW", "CODE", "KEY", "MESSAGE"), out, width=terminal_width(out), cut_first=(2,))
    if failures.unprocessed:
        out.write(f"{count(failures.unprocessed, 'row')} not processed: the job was stopped before reaching them\n")
    out.write(f"(from {job.result_path})\n")
    if failures.rows or failures.unprocessed:
        out.write(_way_out(job) + "\n")


def _way_out(job: JobRecord) -> str:
    """How to send the failed rows again, by what a bump sends for this action type (dataset.facts)."""
    rule = MASS_ACTIONS.get(str(job.detail.get("actionType"))) or OPERATIONS.get(str(job.detail.get("operation")))
    once = rule is not None and not rule.idempotent
    sends = ("only the rows not applied yet are sent (resend: new-rows), so nothing that succeeded is sent twice"
             if once else "every row is sent again, which is harmless here: Zuora applies this idempotently")
    return (f"To fix them: correct the rows in the spec's file and bump its `revision`; {sends}. `plan` shows "
            "how many rows it sends. Or write them out with --failed-rows FILE for a spec of their own.")


def _write_failed_rows(settings, job: JobRecord, failures: Failures, given: str) -> tuple[str, str]:
    """Write the failed rows as CSV with the input's columns; returns the path and where the rows came from."""
    source = job.detail.get("file")
    header, rows, origin = failed_rows_table(
        failures, kind_is_mass=job.kind == MASS_ACTION, operation=job.detail.get("operation"),
        input_file=settings.root / source if source else None, input_sha256=job.detail.get("file_sha256"),
    )
    target = user_path(settings, given)
    with atomic_file(target, newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return display_path(settings, target), origin
