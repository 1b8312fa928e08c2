"""The Plan value (DESIGN §4): typed changes, drift, and what the plan was computed from.

A plan is pinned to what it was computed from — the environment, the ledger's lineage and serial,
and the digest of every spec and file — so `apply FILE` can refuse a stale one (planfile.check_fresh).
A plan never holds secrets or CSV contents: only names, hashes, remote ids, reasons and, per change,
row counts, totals and key values (model.DataFacts).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from reconciler.errors import UsageError
from reconciler.model import (
    CUSTOM_OBJECT_JOB,
    MASS_ACTION,
    Action,
    Condition,
    DataFacts,
    DesiredSpec,
)

FORMAT_VERSION = 1
ROLLBACK_NOTE = "rows already processed will not be rolled back"


@dataclass(frozen=True, kw_only=True)
class PlanOptions:
    """What the user asked the planner for: filters, reruns, the clock and the slot limit."""

    targets: frozenset[str] = frozenset()
    excludes: frozenset[str] = frozenset()
    selectors: tuple[tuple[str, str], ...] = ()  # label key=value pairs, ANDed
    reruns: frozenset[str] = frozenset()
    now: datetime
    custom_object_slots: int = 5

    def __post_init__(self):
        if self.now.tzinfo is None:
            raise ValueError("PlanOptions.now must be timezone-aware (UTC)")

    @classmethod
    def from_cli(
        cls,
        *,
        targets: Iterable[str] = (),
        excludes: Iterable[str] = (),
        selectors: Sequence[str] = (),
        reruns: Iterable[str] = (),
        now: datetime,
        custom_object_slots: int = 5,
    ) -> PlanOptions:
        """Build options from the raw --target/--exclude/--selector/--rerun values."""
        pairs = []
        for raw in selectors:
            key, sep, value = raw.partition("=")
            if not sep or not key.strip():
                raise UsageError(f"--selector {raw!r}: expected KEY=VALUE, e.g. --selector team=finance")
            pairs.append((key.strip(), value.strip()))
        return cls(
            targets=frozenset(targets),
            excludes=frozenset(excludes),
            selectors=tuple(sorted(set(pairs))),
            reruns=frozenset(reruns),
            now=now,
            custom_object_slots=custom_object_slots,
        )


@dataclass(frozen=True)
class MassTarget:
    """What a Mass Updater job runs: its action type."""

    action_type: str


@dataclass(frozen=True)
class ObjectTarget:
    """What a custom object bulk job runs: the object, the operation and (delete) its filter."""

    namespace: str
    object: str
    operation: str
    conditions: tuple[Condition, ...] = ()
    allow_delete_all: bool | None = None  # stated for delete only

    @property
    def awaiting_upload(self) -> bool:
        """Create and update jobs take their file in a second call; delete jobs run on their filter."""
        return self.operation in ("create", "update")


@dataclass(frozen=True)
class FileRef:
    """The data file a submission sends, relative to the repository root, and its digest."""

    path: str | None
    sha256: str | None


@dataclass(frozen=True)
class Replaced:
    """The running job a replace halts before it submits again."""

    remote_id: str
    kind: str
    generation: int
    status: str | None

    @property
    def halt(self) -> Action:
        """How the old job is halted: Mass Updater jobs are stopped, custom object jobs cancelled."""
        return halt_action(self.kind)


@dataclass(frozen=True)
class Progress:
    """How far a Processing job got; its stop or cancel leaves those rows in place."""

    processed: int | None
    total: int | None


def halt_action(kind: str) -> Action:
    """The action that halts a running job of this kind."""
    return Action.STOP if kind == MASS_ACTION else Action.CANCEL


def target_of(spec: DesiredSpec) -> MassTarget | ObjectTarget:
    """A spec's target, as a change carries it."""
    if spec.kind == MASS_ACTION:
        return MassTarget(spec.action_type or "")
    return ObjectTarget(spec.namespace or "", spec.object or "", spec.operation or "", tuple(spec.conditions),
                        spec.allow_delete_all if spec.operation == "delete" else None)


@dataclass(frozen=True, kw_only=True)
class Change:
    """One planned action on one spec name; `reason` explains it to a person, the fields say it to apply."""

    name: str
    kind: str
    action: Action
    reason: str
    fingerprint: str | None = None
    revision: int | None = None
    remote_id: str | None = None  # the job acted on (upload, replace, stop, cancel, retire)
    generation: int | None = None  # the generation the applier records the (new or resumed) job under
    idempotency_key: str | None = None  # set only when resuming an existing intent or upload
    depends_on: tuple[str, ...] = ()
    target: MassTarget | ObjectTarget | None = None  # what a submit, upload or replace runs
    file: FileRef | None = None
    status: str | None = None  # the job's observed status a wait, stop, cancel or retire is about
    replaces: Replaced | None = None
    progress: Progress | None = None
    resume: bool = False  # an interrupted submission, resumed with its recorded key
    rerun: bool = False  # --rerun asked for it
    previous_status: str | None = None  # how the job this one follows ended, when that matters
    resolve: str | None = None  # a conflict: what a person can do
    waiting_for: str | None = None  # "job", "dependency" or "slot"
    dependencies: tuple[str, ...] = ()  # waiting_for "dependency": the ones not done
    then: Action | None = None  # what a held change becomes once it may go; after a stop, what follows it
    data: DataFacts | None = None  # what it does to the data (engine.data adds it after planning)

    @property
    def detail(self) -> dict:
        """The kind-specific facts as the plan document's `detail` object, keys in their documented order."""
        out: dict = {}
        target = self.target
        file = self.file or FileRef(None, None)
        if isinstance(target, MassTarget):
            out.update(actionType=target.action_type, file=file.path, file_sha256=file.sha256)
        elif isinstance(target, ObjectTarget):
            out.update(namespace=target.namespace, object=target.object, operation=target.operation,
                       file=file.path, file_sha256=file.sha256,
                       conditions=[{"field": c.field, "operator": c.operator, "value": c.value}
                                   for c in target.conditions])
            if target.allow_delete_all is not None:
                out["allowDeleteAll"] = target.allow_delete_all
        if self.waiting_for == "job":
            out.update(waiting_for="job", status=self.status)
        elif self.status is not None:
            out["status"] = self.status
        if self.replaces is not None:
            old = self.replaces
            out["remote_action"] = str(old.halt)
            out["replaces"] = {"remote_id": old.remote_id, "kind": old.kind, "generation": old.generation,
                               "status": old.status}
        if self.progress is not None:
            out.update(processed=self.progress.processed, total=self.progress.total, note=ROLLBACK_NOTE)
        if self.resume:
            out["resume"] = True
        if self.rerun:
            out["rerun"] = True
        if self.previous_status is not None:
            out["previous_status"] = self.previous_status
        if self.resolve is not None:
            out["resolve"] = self.resolve
        if self.waiting_for in ("dependency", "slot"):
            out["waiting_for"] = self.waiting_for
            if self.waiting_for == "dependency":
                out["dependencies"] = list(self.dependencies)
            out["then"] = None if self.then is None else str(self.then)
        elif self.then is not None:  # a stop that a submit follows once the job has ended (engine.data)
            out["then"] = str(self.then)
        if self.data is not None:
            out["data"] = self.data.document()
        return out

    @property
    def awaiting_upload(self) -> bool:
        """True when the job this change creates takes its file in a second step (custom object create/update)."""
        return self.kind == CUSTOM_OBJECT_JOB and isinstance(self.target, ObjectTarget) and self.target.awaiting_upload


@dataclass(frozen=True)
class Drift:
    """A recorded remote status that differs from the observed one; reported, never acted on."""

    name: str
    remote_id: str
    recorded: str | None
    observed: str | None  # None when the job is missing remotely


@dataclass(frozen=True, kw_only=True)
class Plan:
    """Everything `apply` needs, pinned to the states it was computed from."""

    format_version: int = FORMAT_VERSION
    reconciler_version: str
    created_at: datetime
    environment: str
    lineage: str | None
    serial: int
    spec_digest: str
    changes: tuple[Change, ...] = ()
    drift: tuple[Drift, ...] = ()
    unchanged: int = 0
    notes: tuple[tuple[str, str], ...] = ()  # (name, why it needs nothing) for specs whose change sends no row

    @property
    def summary(self) -> dict[str, int]:
        """Counts per action in DESIGN §4's order, then `unchanged`."""
        counts = {str(a): 0 for a in Action}
        for change in self.changes:
            counts[str(change.action)] += 1
        counts["unchanged"] = self.unchanged
        return counts

    @property
    def actionable(self) -> tuple[Change, ...]:
        """The changes apply would carry out now (everything but wait and conflict)."""
        return tuple(c for c in self.changes if c.action.actionable)

    @property
    def has_changes(self) -> bool:
        """True when Zuora differs from the specs: any change, including wait and conflict."""
        return bool(self.changes)

    @property
    def blocked(self) -> tuple[Change, ...]:
        """The changes held by a dependency that failed or was stopped: waiting never frees them."""
        return tuple(c for c in self.changes if c.action is Action.BLOCKED)

    @property
    def has_conflicts(self) -> bool:
        """True when a person must resolve something before apply may touch those specs."""
        return any(c.action is Action.CONFLICT for c in self.changes)
