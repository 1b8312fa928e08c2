"""`reconciler show NAME`: one spec as the repo declares it, every job the ledger holds for it, its events."""

from __future__ import annotations

import io

from typing import TextIO

from reconciler.commands._common import (
    EVENT_HEADERS,
    Specs,
    count,
    event_row,
    job_document,
    result_states,
    when,
    write_json,
)
from reconciler.errors import ExitCode
from reconciler.model import MASS_ACTION, DesiredSpec, JobRecord, latest_by_name
from reconciler.views import fit_line, render_table, terminal_width

EVENTS_SHOWN = 50


def show(settings, out: TextIO, *, name: str, as_json: bool = False, events_shown: int = EVENTS_SHOWN) -> int:
    """Print the spec (or that it was removed), its jobs oldest first and its newest events."""
    from reconciler.engine.run import read_ledger

    specs = Specs(settings)
    ledger = read_ledger(settings)
    jobs: list[JobRecord] = []
    events: list[dict] = []
    states: dict[int, str | None] = {}
    if ledger is not None:
        with ledger:
            jobs = ledger.jobs(name)
            events = ledger.events(name=name, limit=events_shown + 1)
            states = result_states(ledger.blobs(settings.root), jobs)
    spec = specs.get(name)
    if spec is None and not jobs and not events:
        raise specs.unknown(name)
    more = len(events) > events_shown
    events = events[:events_shown]
    state = "present" if spec is not None else ("unknown" if specs.problems else "removed")
    if as_json:
        write_json(out, {
            "name": name, "spec_state": state, "spec": _spec_document(spec) if spec else None,
            "jobs": [job_document(j, states) for j in jobs], "events": events, "more_events": more,
        })
        return ExitCode.OK
    width = terminal_width(out)
    text = io.StringIO()
    _spec_text(text, name, spec, state, specs.problems, jobs)
    text.write("\n")
    _jobs_text(text, states, jobs, ledger is not None)
    for line in text.getvalue().splitlines():  # long hashes, keys and paths are cut to the terminal, like tables
        out.write(fit_line(line, width) + "\n")
    out.write("\n")
    if not events:
        out.write("Events: none\n")
        return ExitCode.OK
    out.write(f"Events (newest first{f', the latest {events_shown}' if more else ''}):\n")
    render_table([event_row(e) for e in events], EVENT_HEADERS, out, width=terminal_width(out),
                 cut_first=(5, 2))  # the call's path, then the actor
    if more:
        out.write(f"(older events not shown: `reconciler history {name} --limit N` lists more)\n")
    return ExitCode.OK


def _spec_document(spec: DesiredSpec) -> dict:
    document = {
        "kind": spec.kind, "source": spec.source, "line": spec.line, "description": spec.description,
        "labels": dict(spec.labels), "depends_on": list(spec.depends_on), "revision": spec.revision,
        "fingerprint": spec.fingerprint, "fingerprint_version": spec.fingerprint_version,
        "file": spec.file, "file_sha256": spec.file_sha256, "file_size": spec.file_size,
    }
    if spec.kind == MASS_ACTION:
        document["action_type"] = spec.action_type
    else:
        document.update(namespace=spec.namespace, object=spec.object, operation=spec.operation,
                        conditions=[{"field": c.field, "operator": c.operator, "value": c.value}
                                    for c in spec.conditions],
                        allow_delete_all=spec.allow_delete_all)
    return document


def _spec_text(out: TextIO, name: str, spec: DesiredSpec | None, state: str, problems: int,
               jobs: list[JobRecord]) -> None:
    if spec is None:
        if state == "unknown":
            out.write(f"Spec {name}: not known — the specs are invalid ({count(problems, 'problem')}); "
                      "run `reconciler validate`\n")
        else:
            out.write(f"Spec {name}: removed from the specs (only its ledger record remains)\n")
        return
    lines = [("kind", spec.kind), ("defined in", f"{spec.source}:{spec.line}")]
    if spec.description:
        lines.append(("description", spec.description))
    if spec.labels:
        lines.append(("labels", ", ".join(f"{k}={v}" for k, v in spec.labels)))
    if spec.depends_on:
        lines.append(("depends on", ", ".join(spec.depends_on)))
    if spec.kind == MASS_ACTION:
        lines.append(("action type", spec.action_type))
    else:
        lines.append(("object", f"{spec.namespace}/{spec.object}, operation {spec.operation}"))
        for condition in spec.conditions:
            lines.append(("filter", f"{condition.field} {condition.operator} {condition.value!r}"))
        if spec.allow_delete_all:
            lines.append(("filter", "none: deletes every record (allowDeleteAll)"))
    if spec.file:
        lines.append(("file", f"{spec.file} ({spec.file_size} bytes, sha256 {spec.file_sha256})"))
    lines.append(("revision", str(spec.revision)))
    lines.append(("fingerprint", f"{spec.fingerprint} (version {spec.fingerprint_version})"))
    latest = latest_by_name(jobs).get(name)
    if latest is not None:
        same = (latest.fingerprint, latest.revision) == (spec.fingerprint, spec.revision)
        lines.append(("latest job", f"generation {latest.generation}: "
                                    + ("same fingerprint and revision" if same else
                                       f"recorded at revision {latest.revision}, fingerprint {latest.fingerprint[:12]}"
                                       " — differs from the spec; `reconciler plan` shows what apply would do")))
    out.write(f"Spec {name}\n")
    width = max(len(label) for label, _ in lines)
    for label, value in lines:
        out.write(f"  {label.ljust(width)}  {value}\n")


def _jobs_text(out: TextIO, states: dict[int, str | None], jobs: list[JobRecord], has_ledger: bool) -> None:
    if not jobs:
        out.write("Jobs: none" + ("" if has_ledger else " (no ledger yet)") + "\n")
        return
    out.write(f"Jobs ({len(jobs)}, oldest first):\n")
    for job in jobs:
        status = job.remote_status or "-"
        out.write(f"  generation {job.generation}  {job.remote_id or '(no remote id: submission unconfirmed)'}  "
                  f"{status}  phase {job.phase}  revision {job.revision}{'  (rerun)' if job.rerun else ''}\n")
        counts = ", ".join(f"{label} {value}" for label, value in (
            ("total", job.total), ("processed", job.processed), ("succeeded", job.succeeded), ("failed", job.failed))
            if value is not None)
        if counts:
            out.write(f"    rows: {counts}\n")
        out.write(f"    fingerprint {job.fingerprint}\n")
        out.write(f"    idempotency key {job.idempotency_key}\n")
        out.write(f"    created {when(job.created_at)}, updated {when(job.updated_at)} (UTC)\n")
        if job.detail.get("error"):
            out.write(f"    error: {job.detail['error']}\n")
        if job.result_path:
            check = {"ok": "file matches", "missing": "FILE MISSING", "changed": "FILE CHANGED since archived",
                     "unreadable": "file unreadable"}[states[job.id]]
            out.write(f"    result {job.result_path} (sha256 {job.result_sha256}; {check})\n")
