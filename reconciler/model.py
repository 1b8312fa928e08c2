"""Frozen values for the three states: desired (specs), recorded (ledger), observed (remote).

Standard library only: every other layer speaks in these types.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from typing import overload

MASS_ACTION = "MassAction"
CUSTOM_OBJECT_JOB = "CustomObjectJob"
KINDS = (MASS_ACTION, CUSTOM_OBJECT_JOB)

# Remote statuses, as Zuora spells them.
MASS_STOPPABLE = frozenset({"Pending", "Processing"})
MASS_TERMINAL = frozenset({"Stopped", "Completed", "Failed"})
CO_CANCELLABLE = frozenset({"accepted", "pending"})
CO_TERMINAL = frozenset({"completed", "failed", "cancelled"})
CO_ACTIVE = frozenset({"accepted", "pending", "in_progress"})  # these hold one of the 5 slots
COMPLETED = frozenset({"Completed", "completed"})
REJECTED = "rejected"  # ours, not Zuora's: a submission refused with a 4xx (phase done, nothing exists remotely)
UNSUCCESSFUL = frozenset({"Failed", "Stopped", "failed", "cancelled", REJECTED})
JOB_FAILED = frozenset({"Failed", "failed"})  # the job itself failed in Zuora (not a row, not a stop)

class _Name(str, Enum):
    """A str-valued enum that prints, formats and serializes as its value (JSON, f-strings, the ledger)."""

    def __str__(self) -> str:
        return str.__str__(self)

    def __format__(self, spec: str) -> str:
        return str.__format__(self, spec)

    def __hash__(self) -> int:  # a member and its value are one dict key
        return str.__hash__(self)


class Phase(_Name):
    """The ledger phase of one remote job (one row per remote job ever attempted)."""

    INTENT = "intent"  # intent committed, the POST's outcome is not known yet
    CREATED = "created"  # custom object job exists remotely, its file is not uploaded yet
    ACTIVE = "active"  # running remotely (non-terminal remote status)
    DONE = "done"  # terminal remote status recorded
    RETIRED = "retired"  # spec removed / forgotten / superseded: ledger history only


class Action(_Name):
    """A plan action; the declaration order is the order of the plan's summary line (DESIGN §4)."""

    SUBMIT = "submit"
    UPLOAD = "upload"
    REPLACE = "replace"
    STOP = "stop"
    CANCEL = "cancel"
    RETIRE = "retire"
    WAIT = "wait"
    BLOCKED = "blocked"
    CONFLICT = "conflict"

    @property
    def symbol(self) -> str:
        """The one-character mark of the human plan."""
        return _ACTION_SYMBOLS[self]

    @property
    def actionable(self) -> bool:
        """False for wait, blocked and conflict: apply carries out every other action."""
        return self not in (Action.WAIT, Action.BLOCKED, Action.CONFLICT)


class Outcome(_Name):
    """What became of one applied change."""

    SUBMITTED = "submitted"
    UPLOADED = "uploaded"
    REPLACED = "replaced"
    STOPPED = "stopped"
    CANCELLED = "cancelled"
    RETIRED = "retired"
    DEFERRED = "deferred"  # Zuora had no free custom object job slot: nothing holds one, the next apply submits it
    FAILED = "failed"

    @property
    def symbol(self) -> str:
        """The mark apply prints beside the change."""
        return _OUTCOME_SYMBOLS[self]


_ACTION_SYMBOLS = {Action.SUBMIT: "+", Action.UPLOAD: "↑", Action.REPLACE: "~", Action.STOP: "-",
                   Action.CANCEL: "-", Action.RETIRE: "x", Action.WAIT: "…", Action.BLOCKED: "⊘",
                   Action.CONFLICT: "!"}
_OUTCOME_SYMBOLS = {Outcome.SUBMITTED: "+", Outcome.UPLOADED: "↑", Outcome.REPLACED: "~", Outcome.STOPPED: "-",
                    Outcome.CANCELLED: "-", Outcome.RETIRED: "x", Outcome.DEFERRED: "…", Outcome.FAILED: "!"}

REDACTED = "<redacted>"  # what stands where a secret was, in output, logs, plan files and the ledger

IN_DOUBT_SECONDS = 24 * 3600  # Zuora keeps idempotency keys for 24 h


def is_terminal(kind: str, status: str | None) -> bool:
    """True when a remote status can no longer change."""
    return status in (MASS_TERMINAL if kind == MASS_ACTION else CO_TERMINAL)


def is_stoppable(kind: str, status: str | None) -> bool:
    """True when the job can still be stopped (Mass Updater) or cancelled (custom object)."""
    return status in (MASS_STOPPABLE if kind == MASS_ACTION else CO_CANCELLABLE)


def phase_after(kind: str, status: str | None, *, awaiting_upload: bool) -> Phase:
    """The ledger phase of a job Zuora reports in `status`: done once terminal, else created while its
    file is still to be uploaded, else active."""
    if is_terminal(kind, status):
        return Phase.DONE
    return Phase.CREATED if awaiting_upload else Phase.ACTIVE


@dataclass(frozen=True)
class Problem:
    """One validation problem, located in a file."""

    file: str  # path relative to the repo root (or as given)
    message: str
    line: int | None = None
    path: str = ""  # field path inside the document, e.g. "spec.filter.conditions[0].operator"
    row: int | None = None  # CSV row (header = 1) for content problems

    def render(self) -> str:
        """`file:line: path: message` (parts left out when unknown)."""
        where = self.file + (f":{self.line}" if self.line else "")
        if self.row is not None:
            where += f": row {self.row}"
        return f"{where}: {self.path + ': ' if self.path else ''}{self.message}"


@dataclass(frozen=True)
class Condition:
    """One delete-filter condition (ANDed with the others)."""

    field: str
    operator: str
    value: str | int | float | bool


RESEND_ALL, RESEND_NEW_ROWS = "all", "new-rows"  # spec.resend: what a run after an earlier one sends


@dataclass(frozen=True)
class Since:
    """The earlier job a change's data is compared with: the latest generation that ran."""

    generation: int
    revision: int | None
    remote_id: str | None


@dataclass(frozen=True)
class DataFacts:
    """What a change does to Zuora's data, from the spec's file and the rows earlier jobs applied.

    `send` is None when it cannot be known yet (a result is missing, or a running job is being
    replaced); `added`/`changed`/`removed` are None without an earlier file to compare with.
    `sent_sha256` is the file a new-rows change sends (the rows not applied yet, archived under
    state/<env>/sent/); None when the spec's file goes whole. Counts, totals and key values only.
    """

    rows: int | None  # data rows in the spec's file; None for a job without a file (delete)
    send: int | None
    already_applied: int = 0
    added: int | None = None
    changed: int | None = None
    removed: int | None = None
    since: Since | None = None
    totals: tuple[tuple[str, str], ...] = ()  # (currency, exact decimal sum) over the rows sent
    summary: tuple[tuple[str, str | tuple[str, ...]], ...] = ()
    resend: str = RESEND_ALL
    sent_sha256: str | None = None
    missing: str | None = None  # why the rows already applied are not known

    def document(self) -> dict:
        """The plan document's `detail.data` object, keys in their documented order."""
        since = self.since
        return {
            "rows": self.rows, "send": self.send, "already_applied": self.already_applied, "added": self.added,
            "changed": self.changed, "removed": self.removed,
            "since": None if since is None else {"generation": since.generation, "revision": since.revision,
                                                 "remote_id": since.remote_id},
            "totals": dict(self.totals), "summary": {k: v if isinstance(v, str) else list(v) for k, v in self.summary},
            "resend": self.resend, "sent_sha256": self.sent_sha256, "missing": self.missing,
        }


@dataclass(frozen=True)
class DesiredSpec:
    """One validated spec: what should have run, exactly once per revision."""

    name: str
    kind: str
    source: str  # spec file, relative to the repo root
    line: int  # line of the document in that file
    fingerprint: str
    fingerprint_version: int
    revision: int = 1
    description: str | None = None
    labels: tuple[tuple[str, str], ...] = ()
    depends_on: tuple[str, ...] = ()
    # MassAction
    action_type: str | None = None
    # CustomObjectJob
    namespace: str | None = None
    object: str | None = None
    operation: str | None = None
    conditions: tuple[Condition, ...] = ()
    allow_delete_all: bool = False
    # The data file (both kinds; None for custom object delete)
    file: str | None = None  # relative to the repo root
    file_sha256: str | None = None
    file_size: int | None = None
    resend: str | None = None  # spec.resend as written; None: the action type's default (dataset.facts)
    file_facts: DataFacts | None = None  # the file's rows, totals and summary, from the checks' one pass over it

    def label_dict(self) -> dict[str, str]:
        return dict(self.labels)


@dataclass(frozen=True)
class DesiredState:
    """All specs of a repo, keyed by name, plus a digest over specs and files."""

    specs: tuple[DesiredSpec, ...]
    digest: str  # sha256 over every spec document and file hash: pins a saved plan

    def by_name(self) -> dict[str, DesiredSpec]:
        return {s.name: s for s in self.specs}


@dataclass(frozen=True)
class JobRecord:
    """One remote job (or attempt at one) as the ledger recorded it."""

    id: int  # ledger row id
    name: str
    kind: str
    generation: int  # 1, 2, ... per name: each new remote job gets the next
    fingerprint: str
    fingerprint_version: int
    revision: int
    idempotency_key: str
    phase: str  # one of PHASES
    created_at: datetime
    updated_at: datetime
    remote_id: str | None = None  # bulkKey or custom object job Id
    remote_status: str | None = None
    uploaded: bool = False  # custom object file uploaded
    total: int | None = None
    processed: int | None = None
    succeeded: int | None = None
    failed: int | None = None
    detail: dict = field(default_factory=dict, compare=False, hash=False)
    result_path: str | None = None
    result_sha256: str | None = None
    rerun: bool = False  # created by an explicit --rerun


@dataclass(frozen=True)
class SpecRecord:
    """Every job the ledger holds for one spec name, oldest first."""

    name: str
    jobs: tuple[JobRecord, ...]

    @property
    def latest(self) -> JobRecord:
        return self.jobs[-1]


@dataclass(frozen=True)
class JobTip:
    """A name's latest job and what its other jobs add up to: enough to tell whether the rest is needed."""

    latest: JobRecord
    top_revision: int | None  # the highest revision of its jobs that were not rejected
    live_jobs: int  # how many of its jobs the ledger's live-jobs condition admits (the latest among them)


@dataclass(frozen=True)
class RecordedState:
    """The ledger's view: records by name, plus the lineage/serial that pins a plan.

    A record may hold only its name's latest job where the reader was told the others change nothing
    (`Ledger.recorded_state`'s `brief`); every other record holds all of them.
    """

    records: tuple[SpecRecord, ...] = ()
    lineage: str | None = None
    serial: int = 0

    def by_name(self) -> dict[str, SpecRecord]:
        return {r.name: r for r in self.records}


@dataclass(frozen=True)
class Observation:
    """The live remote status of one recorded job, as fetched by refresh."""

    remote_id: str
    kind: str
    status: str | None  # None when missing remotely
    missing: bool = False  # the remote answered 404
    total: int | None = None
    processed: int | None = None
    succeeded: int | None = None
    failed: int | None = None
    output_url: str | None = None
    error: str | None = None  # job-level error message, if any


@dataclass(frozen=True)
class ObservedState:
    """Observations keyed by remote id; empty with --no-refresh."""

    observations: tuple[Observation, ...] = ()

    def by_remote_id(self) -> dict[str, Observation]:
        return {o.remote_id: o for o in self.observations}


def latest_by_name(jobs: list[JobRecord]) -> dict[str, JobRecord]:
    """Each name's latest job (highest generation), as the planner pairs them."""
    latest: dict[str, JobRecord] = {}
    for job in jobs:
        current = latest.get(job.name)
        if current is None or (job.generation, job.id) > (current.generation, current.id):
            latest[job.name] = job
    return latest


def canonical_json(value: object) -> str:
    """The one JSON spelling used for hashing and for stored detail: sorted keys, compact, UTF-8 kept, no NaN.

    The audit chain hashes these bytes (ledger/chain.py), so its output must never change.
    """
    return _CANONICAL(value)


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


@overload
def iso(value: None, timespec: str = ...) -> None: ...
@overload
def iso(value: datetime | float, timespec: str = ...) -> str: ...
def iso(value: datetime | float | None, timespec: str = "seconds") -> str | None:
    """A time (a datetime, or epoch seconds taken as UTC) as ISO 8601; None stays None."""
    if value is None:
        return None
    moment = value if isinstance(value, datetime) else datetime.fromtimestamp(value, timezone.utc)
    return moment.isoformat(timespec=timespec)
