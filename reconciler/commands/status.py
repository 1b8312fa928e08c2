"""`reconciler status [NAME...]`: one row per spec name with its latest job, from the ledger.

Choices:
- Without NAMEs every name whose latest job is not retired is listed (retired ones are counted in a
  footer); a NAME lists that name even when retired, and a spec that has no job yet shows as
  "(not applied)" (in JSON: remote_id, status, phase, counts and updated_at null).
- Without a ledger the text output is one line, "no ledger yet (...)", on standard output, and
  `--json` prints `{"jobs": []}`; the exit code is 0 and nothing is created.
- `--refresh` and `--wait` fetch live status through a Session (recording drift and archiving
  results, like `plan` does); `--wait` polls (like `apply --wait`: engine.waiter.poll_seconds, doubling
  while nothing moves up to longest_poll, stretched so polls keep to their share of the rate limit:
  engine.waiter.quota_spacing) until each listed job is terminal.
  Jobs that polling cannot move are not waited for, with a note: an unconfirmed submission (intent),
  a custom object job whose file is not uploaded yet, a job missing remotely (404).
- Exit 1 when a listed job's status is Failed (Mass Updater) or failed (custom object), or when
  `--wait` reaches `--timeout` (after printing the table). The timeout bounds the calls too: one
  still unanswered when it passes is cut (zuora.client.set_deadline).
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import TextIO

from reconciler.engine.refresh import refresh
from reconciler.engine.waiter import CLEAR_LINE, HEARTBEAT_SECONDS, progress_bar, waiting
from reconciler.engine.waiter import longest_poll, quota_spacing, stretched
from reconciler.engine.waiter import poll_seconds as default_poll_seconds  # `status` takes a poll_seconds too
from reconciler.commands._common import (
    Specs,
    age,
    count,
    is_retired,
    no_ledger,
    when,
    write_json,
)
from reconciler.errors import ExitCode, RemoteError, UsageError, WaitTimedOut
from reconciler.model import (
    Phase,
    JOB_FAILED,
    DesiredSpec,
    JobRecord,
    ObservedState,
    iso,
    latest_by_name,
)
from reconciler.views import render_table, terminal_width

JSON_FIELDS = ("name", "kind", "remote_id", "status", "phase", "revision", "fingerprint", "total", "processed",
               "succeeded", "failed", "updated_at")
HEADERS = ("NAME", "KIND", "REMOTE ID", "STATUS", "PROGRESS", "SUCCEEDED", "FAILED", "AGE")
# Every status cell gets a 5-character color code and a reset, so the columns stay aligned.
_COLORS = {"Completed": "\x1b[32m", "completed": "\x1b[32m", "Failed": "\x1b[31m", "failed": "\x1b[31m",
           "Stopped": "\x1b[33m", "cancelled": "\x1b[33m"}
_PLAIN, _RESET = "\x1b[39m", "\x1b[0m"


def status(settings, out: TextIO, *, names=(), refresh: bool = False, wait: bool = False,
           timeout: float | None = None, as_json: bool = False, color: bool = False,
           poll_seconds: float | None = None, sleep=time.sleep, clock=time.monotonic) -> int:
    """Print the latest job of each spec (or of NAMEs); exit 1 when a listed job failed."""
    from reconciler.engine.run import read_ledger

    if timeout is not None and (not wait or timeout < 0):
        raise UsageError("--timeout SECONDS limits --wait: pass --wait too, with a timeout of 0 or more")
    longest = poll_seconds if poll_seconds is not None else longest_poll(settings)
    if poll_seconds is None:
        poll_seconds = default_poll_seconds(settings)

    names = tuple(dict.fromkeys(names))
    specs = Specs(settings)
    ledger = read_ledger(settings)
    if ledger is None:
        for name in names:
            if specs.get(name) is None:
                raise specs.unknown(name)
        if as_json:
            write_json(out, {"jobs": []})
        else:
            out.write(no_ledger(settings) + "\n")
        return ExitCode.OK
    with ledger:
        latest = latest_by_name(ledger.jobs())
        refreshed = ledger.last_refresh()
    for name in names:
        if name not in latest and specs.get(name) is None:
            raise specs.unknown(name)

    listed = list(names) if names else sorted({n for n, job in latest.items() if not is_retired(job)}
                                              | (set(specs.load().by_name) - set(latest)))
    still_running: list[JobRecord] = []
    targets = [n for n in listed if n in latest]
    if (refresh or wait) and targets:
        latest, still_running = _follow(
            settings, out, targets, wait=wait, timeout=timeout, progress=not as_json, poll_seconds=poll_seconds,
            longest=longest, sleep=sleep, clock=clock,
        )

    rows = [(name, latest.get(name), specs.get(name) if name not in latest else None) for name in listed]
    if as_json:
        write_json(out, {"jobs": [_json_row(name, job, spec) for name, job, spec in rows]})
    else:
        _render(out, rows, hidden=0 if names else sum(1 for j in latest.values() if is_retired(j)), color=color)
        if any(job is not None for _, job, _ in rows):
            out.write(_freshness(refreshed, live=bool((refresh or wait) and targets)) + "\n")
    if still_running:
        running = ", ".join(f"{j.name} ({j.remote_status or j.phase})" for j in still_running)
        raise WaitTimedOut(f"timed out after {timeout:g}s; still running: {running}. "
                              "Run `reconciler status --wait` again to keep following them")
    failed = any(job is not None and job.remote_status in JOB_FAILED for _, job, _ in rows)
    return ExitCode.ERROR if failed else ExitCode.OK


def _follow(settings, out: TextIO, targets: list[str], *, wait: bool, timeout: float | None, progress: bool,
            poll_seconds: float, longest: float, sleep, clock) -> tuple[dict[str, JobRecord], list[JobRecord]]:
    """Refresh through a Session; with `wait`, until every target is terminal or the timeout passes."""
    from reconciler.engine.run import Session

    session = Session(settings, command="status --wait" if wait else "status --refresh")
    # --timeout bounds every call too: one that would end past it is cut, and the wait ends as timed out
    deadline = time.monotonic() + timeout if wait and timeout is not None else None
    if deadline is not None:
        session.client.set_deadline(deadline)
    outcome = "error"
    tty = progress and wait and _isatty(out)
    seen: dict[str, str | None] = {}
    noted: set[str] = set()
    started = clock()
    interval, last, said = poll_seconds, None, 0.0
    spacing = quota_spacing(session.client)
    try:
        out_of_time = False
        while True:
            try:
                observed = refresh(session, targets)
            except RemoteError:
                if deadline is None or time.monotonic() < deadline:
                    raise
                observed, out_of_time = ObservedState(), True  # cut inside a call: what is recorded is the answer
            missing = {o.remote_id for o in observed.observations if o.missing}
            latest = latest_by_name(session.ledger.jobs())
            jobs = [latest[n] for n in targets]
            if not wait:
                outcome = "ok"
                return latest, []
            pending = []
            for job in jobs:
                why = _unwaitable(job, missing)
                if why is None and waiting(job):
                    pending.append(job)
                elif why is not None and job.name not in noted and progress:
                    noted.add(job.name)
                    out.write(f"{CLEAR_LINE if tty else ''}{job.name}: {why}; not waiting for it\n")
            elapsed = clock() - started
            if progress:
                if _report(out, jobs, seen, tty=tty, elapsed=elapsed):
                    said = elapsed
                elif elapsed - said >= HEARTBEAT_SECONDS:  # nothing moved for a minute: say so, on a terminal too
                    running = ", ".join(f"{j.name} {j.remote_status or j.phase}{_progress_suffix(j)}"
                                        for j in pending[:5])
                    out.write(f"{CLEAR_LINE if tty else ''}still waiting after {elapsed:.0f}s: {running}\n")
                    said = elapsed
            if not pending or out_of_time or (timeout is not None and elapsed >= timeout):
                if tty:
                    out.write("\n")
                outcome = "timeout" if pending else "ok"
                return latest, pending
            now = [(j.remote_status, j.processed) for j in jobs]
            interval = poll_seconds if now != last else min(interval * 2, max(poll_seconds, longest))
            last = now
            pause = stretched(interval, spacing(), len(pending))  # polls keep to their share of the rate limit
            delay = pause if timeout is None else min(pause, max(0.0, timeout - elapsed))
            sleep(delay)
    finally:
        session.close(outcome)


def _freshness(refreshed: str | None, *, live: bool) -> str:
    """When the statuses shown were last fetched from Zuora, and how to fetch them now."""
    if live:
        return "(status fetched from Zuora just now)"
    if refreshed is None:
        return "(as recorded; never refreshed from Zuora: --refresh fetches it live)"
    try:
        ago = age(datetime.fromisoformat(refreshed))
    except ValueError:
        ago = "?"
    return f"(as of the last refresh, {when(refreshed)} UTC, {ago} ago; --refresh fetches it live)"


def _unwaitable(job: JobRecord, missing: set[str]) -> str | None:
    """Why polling can never move this job to a terminal status, or None."""
    if job.phase == Phase.INTENT:
        return "its submission is unconfirmed (no remote id yet); `reconciler plan` shows how it resumes"
    if job.remote_id in missing:
        return f"job {job.remote_id} is missing in Zuora (404); `reconciler plan` says how to resolve it"
    if job.phase == Phase.CREATED and not job.uploaded:
        return "its file is not uploaded yet; `reconciler apply` uploads it"
    return None


def _report(out: TextIO, jobs: list[JobRecord], seen: dict[str, str | None], *, tty: bool, elapsed: float) -> bool:
    """A progress bar rewritten in place on a terminal; otherwise a line per status change (True when one was)."""
    if tty:
        out.write(CLEAR_LINE + progress_bar(jobs, elapsed))
        out.flush()
        return False
    said = False
    for job in jobs:
        now = job.remote_status or job.phase
        if job.name not in seen or seen[job.name] != now:
            before = seen.get(job.name)
            moved = f"{before} -> {now}" if job.name in seen else now
            out.write(f"{job.name}: {moved}{_progress_suffix(job)}\n")
            out.flush()
            seen[job.name] = now
            said = True
    return said


def _progress_suffix(job: JobRecord) -> str:
    text = _progress(job)
    return "" if text == "-" else f" ({text} rows)"


def _render(out: TextIO, rows, *, hidden: int, color: bool) -> None:
    if not rows:
        out.write("no jobs in the ledger" + (f" ({count(hidden, 'retired job')} hidden)" if hidden else "") + "\n")
        return
    table = []
    for name, job, spec in rows:
        if job is None:
            table.append([name, spec.kind if spec else None, None, _paint("(not applied)", None, color),
                          None, None, None, None])
            continue
        table.append([name, job.kind, job.remote_id, _paint(_status_text(job), job.remote_status, color),
                      _progress(job), job.succeeded, job.failed, age(job.created_at)])
    headers = [_paint(h, None, color) if h == "STATUS" else h for h in HEADERS]  # same width as the cells
    render_table(table, headers, out, width=terminal_width(out), cut_first=(2, 1))  # remote id, kind, then the widest
    if hidden:
        out.write(f"({count(hidden, 'retired job')} hidden; name it to see it)\n")


def _status_text(job: JobRecord) -> str:
    if job.phase == Phase.INTENT:
        return "(unconfirmed submission)"
    text = job.remote_status or f"({job.phase})"
    return f"{text} (retired)" if is_retired(job) else text


def _paint(text: str, status: str | None, color: bool) -> str:
    return f"{_COLORS.get(status, _PLAIN)}{text}{_RESET}" if color else text


def _progress(job: JobRecord) -> str:
    if job.processed is None:
        return "-"
    if job.total:
        return f"{job.processed}/{job.total}"
    return str(job.processed)


def _json_row(name: str, job: JobRecord | None, spec: DesiredSpec | None) -> dict:
    if job is None:
        row = dict.fromkeys(JSON_FIELDS)
        row.update(name=name, kind=spec.kind if spec else None, revision=spec.revision if spec else None,
                   fingerprint=spec.fingerprint if spec else None)
        return row
    return {
        "name": name, "kind": job.kind, "remote_id": job.remote_id, "status": job.remote_status,
        "phase": job.phase, "revision": job.revision, "fingerprint": job.fingerprint, "total": job.total,
        "processed": job.processed, "succeeded": job.succeeded, "failed": job.failed,
        "updated_at": iso(job.updated_at, "auto"),
    }


def _isatty(out: TextIO) -> bool:
    try:
        return bool(out.isatty())
    except (AttributeError, ValueError):
        return False
