"""What each change does to the data, added to a plan after the pure planner; the files new-rows changes send.

`with_data` reads each changed spec's file and the results its earlier jobs left (dataset.facts) and
gives each change its DataFacts. Then, in `new-rows` mode:
- a change with nothing left to send is not a change: the spec counts as unchanged, with a note;
- a change whose earlier results are not all archived is a conflict, never a silent full resend;
- a replace of a running job becomes a stop (or cancel): which rows that job applies is known only
  once it has ended, so the rest is submitted by the next plan;
- a conflict that a revision bump resolves says what the bump would send.
A resumed submission or upload keeps the file its intent recorded. `SentFiles` is the applier's
Outbox: it stores the file a new-rows change sends (state/<env>/sent/<name>/g<generation>.csv, a
file or a database blob: dataset.blobs) durably before the intent, and gives an interrupted one
back byte for byte.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

from reconciler.dataset.blobs import Blobs
from reconciler.dataset.applied import ran
from reconciler.dataset.facts import Outgoing, outgoing, resend_mode
from reconciler.engine.answers import ChangeFailed
from reconciler.engine.plan import Change, Plan, halt_action
from reconciler.errors import ResultError
from reconciler.model import (
    RESEND_NEW_ROWS,
    Action,
    DataFacts,
    DesiredState,
    JobRecord,
    RecordedState,
)

CHANGED_AFTER = "spec changed after its job completed"
ALREADY_COMPLETED = "already completed once"
_RUNS = (Action.SUBMIT, Action.REPLACE)


def sent_path(settings, name: str, generation: int) -> Path:
    """Where the file a new-rows change of `name` generation `generation` sends is archived."""
    return settings.sent_dir / name / f"g{int(generation)}.csv"


def sent_ref(settings, name: str, generation: int) -> str:
    """sent_path relative to the repository: the file's name in the ledger and in its blobs."""
    return sent_path(settings, name, generation).relative_to(settings.root).as_posix()


def with_data(plan: Plan, desired: DesiredState, recorded: RecordedState, root: Path, blobs: Blobs) -> Plan:
    """The plan with each change's DataFacts (earlier results read from `blobs`), and the new-rows rules of the
    module docstring applied."""
    specs = desired.by_name()
    records = recorded.by_name()
    changes, notes, unchanged = [], list(plan.notes), plan.unchanged
    for change in plan.changes:
        spec = specs.get(change.name)
        jobs = records[change.name].jobs if change.name in records else ()
        if spec is None or change.fingerprint != spec.fingerprint:
            changes.append(change)  # about a job, not the spec (a removed spec's stop, retire or wait)
            continue
        if change.resume or change.action is Action.UPLOAD:
            changes.append(replace(change, data=_recorded(jobs, change)))
            continue
        try:
            out = outgoing(spec, jobs if change.action is not Action.REPLACE else _without_running(jobs, change), root,
                           blobs)
        except ResultError as err:
            changes.append(replace(change, action=Action.CONFLICT, reason=f"cannot read the data file: {err}",
                                   resolve="restore the file, then plan again"))
            continue
        new = _judged(change, out.facts)
        if new is None:
            unchanged += 1
            notes.append((change.name, f"nothing new to send ({out.facts.already_applied} of {out.facts.rows} rows "
                                       "already applied)"))
        else:
            changes.append(new)
    return replace(plan, changes=tuple(changes), notes=tuple(notes), unchanged=unchanged)


def _judged(change: Change, facts: DataFacts) -> Change | None:
    """The change given its data: itself, a conflict, a stop first, or None when it sends nothing."""
    if change.action is Action.CONFLICT:
        return replace(change, data=facts, resolve=_bump_words(change, facts))
    if change.action not in _RUNS or facts.resend != RESEND_NEW_ROWS:
        return _with(change, facts)
    if change.action is Action.REPLACE and change.replaces is not None:
        old = change.replaces
        return replace(change, action=halt_action(old.kind), data=facts, target=None, file=None, replaces=None,
                       remote_id=old.remote_id, generation=old.generation, status=old.status, then=Action.SUBMIT,
                       reason=f"{change.reason.split(':')[0]}: {halt_action(old.kind)} job ({old.status}) first; "
                              "the rows it did not apply are sent once it has ended")
    if facts.missing is not None:
        return replace(change, action=Action.CONFLICT, data=facts, reason=f"rows already applied are unknown: "
                       f"{facts.missing}", resolve=_missing_way_out(change))
    if facts.send == 0:
        return None
    return _with(change, facts)


def _with(change: Change, facts: DataFacts) -> Change:
    """The change with these facts; the planner already gave a new spec's change the checks' digest."""
    return change if change.data is facts else replace(change, data=facts)


def _bump_words(change: Change, facts: DataFacts) -> str | None:
    """A completed spec's conflict, with what each way out sends."""
    if facts.rows is None or (CHANGED_AFTER not in change.reason and ALREADY_COMPLETED not in change.reason):
        return change.resolve  # a delete sends no rows
    every = f"all {facts.rows} rows"
    if facts.resend != RESEND_NEW_ROWS:
        return f"{change.resolve} (a bump or --rerun sends {every} again)"
    if facts.send is None:
        return f"{change.resolve}; set `resend: all` to send {every} again"
    new = "nothing" if facts.send == 0 else f"the {facts.send} rows not applied yet"
    return (f"{change.resolve}. A bump or --rerun sends {new} ({facts.already_applied} already applied); with "
            f"`resend: all` it sends {every} again")


def _missing_way_out(change: Change) -> str:
    return (f"`reconciler status --refresh {change.name}` archives the result while Zuora still has it, then plan "
            "again; or set `resend: all` in the spec (and bump its revision) to send every row again")


def _without_running(jobs, change: Change) -> tuple[JobRecord, ...]:
    """A replace's earlier jobs without the running one it halts (its rows are not known yet)."""
    old = change.replaces.remote_id if change.replaces else None
    return tuple(j for j in jobs if j.remote_id != old)


def _recorded(jobs, change: Change) -> DataFacts | None:
    """A resumed submission or upload: the file its intent recorded (None: the spec's file, whole)."""
    job = next((j for j in jobs if j.idempotency_key == change.idempotency_key), None)
    if job is None or not isinstance(job.detail.get("sent_sha256"), str):
        return None
    send = job.detail.get("send")
    return DataFacts(rows=None, send=send if isinstance(send, int) else None, resend=RESEND_NEW_ROWS,
                     sent_sha256=job.detail["sent_sha256"])


def intent_facts(settings, change: Change) -> dict:
    """What an intent records of the file a new-rows change sends (nothing for one sending the spec's file)."""
    data = change.data
    if data is None or data.sent_sha256 is None:
        return {}
    return {"sent_file": sent_ref(settings, change.name, change.generation or 1), "sent_sha256": data.sent_sha256,
            "send": data.send, "resend": data.resend}


class SentFiles:
    """The applier's Outbox: the file a new-rows change sends, stored durably (or found) before its intent."""

    def __init__(self, settings, ledger, desired: DesiredState, blobs: Blobs):
        self.settings = settings
        self.ledger = ledger
        self.blobs = blobs
        self.specs = desired.by_name()

    def file_for(self, change: Change) -> Path | None:
        """The file to send instead of the spec's, or None to send the spec's file."""
        data = change.data
        if data is None or data.sent_sha256 is None:
            return None
        ref = sent_ref(self.settings, change.name, change.generation or 1)
        stored = self.blobs.fetch(ref, data.sent_sha256)
        if stored is not None:
            return stored  # stored before an intent that was interrupted, or by an earlier attempt
        spec = self.specs.get(change.name)
        if spec is None:
            raise ChangeFailed(f"{change.name}: its spec is gone, so the file its submission sent cannot be made again",
                               "restore the spec, then plan and apply again")
        jobs = tuple(self.ledger.jobs(change.name))
        if resend_mode(spec) != data.resend:
            raise self._stale(change)
        payload: bytes | None = None  # a first run sends the spec's own file as it is
        source = self.settings.root / str(spec.file)
        if ran(jobs):
            try:  # without the checks' digest, so the file's bytes are read and the payload made
                out: Outgoing = outgoing(replace(spec, file_facts=None), jobs, self.settings.root, self.blobs)
            except ResultError as err:
                raise ChangeFailed(str(err), "restore the file, then plan and apply again") from err
            if out.payload is None or out.facts.sent_sha256 != data.sent_sha256:
                raise self._stale(change)
            payload = out.payload

        def write(dest: Path) -> None:
            if payload is None:  # copied, never parsed or held whole (it may be 15 MB of custom objects)
                shutil.copyfile(source, dest)
            else:
                dest.write_bytes(payload)

        try:
            stored_sha = self.blobs.put(ref, write)
        except OSError as err:
            raise ChangeFailed(f"{ref}: cannot store the file to send ({err.strerror or err})",
                               "check the disk and state/'s permissions, then apply again") from err
        if stored_sha != data.sent_sha256:  # the spec's file changed since the plan
            raise self._stale(change)
        stored = self.blobs.fetch(ref, data.sent_sha256)
        if stored is None:
            raise ChangeFailed(f"{ref}: the file to send did not read back as stored", "apply again")
        return stored

    @staticmethod
    def _stale(change: Change) -> ChangeFailed:
        what = "the interrupted submission sent" if change.resume or change.action is Action.UPLOAD else "the plan"
        return ChangeFailed(f"{change.name}: the rows to send are no longer those {what} named (a result was "
                            "archived or a file changed since)", "run plan again and review what it sends")
