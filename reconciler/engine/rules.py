"""The planner's rules that look across names or over a whole record (DESIGN §4); pure, no I/O.

How a job is seen (observed over recorded; rejected submissions left out), which names a plan covers
(filters), their order (dependency depth), and which submits must wait (a dependency not completed,
no free custom object slot) or are blocked (a dependency that failed or was stopped, which waiting
never fixes). planner.py classifies each name on its own and calls these.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, replace

from reconciler.engine.plan import Change, PlanOptions
from reconciler.errors import UsageError
from reconciler.model import (
    Phase,
    COMPLETED,
    CUSTOM_OBJECT_JOB,
    REJECTED,
    Action,
    UNSUCCESSFUL,
    DesiredSpec,
    DesiredState,
    JobRecord,
    ObservedState,
    RecordedState,
    SpecRecord,
    is_terminal,
)


@dataclass(frozen=True)
class Seen:
    """A job's status as the planner sees it: observed when refreshed, else recorded."""

    status: str | None
    missing: bool
    processed: int | None
    total: int | None


class Observer:
    """Looks up the observed status of a recorded job (observed overrides recorded)."""

    def __init__(self, observed: ObservedState):
        self.observations = observed.by_remote_id()

    def __call__(self, job: JobRecord) -> Seen:
        obs = self.observations.get(job.remote_id) if job.remote_id else None
        if obs is None:
            return Seen(job.remote_status, False, job.processed, job.total)
        return Seen(obs.status, obs.missing, job.processed if obs.processed is None else obs.processed,
                    job.total if obs.total is None else obs.total)


def without_rejected(rec: SpecRecord) -> SpecRecord | None:
    """The record without rejected submissions (None when every submission was rejected)."""
    jobs = tuple(j for j in rec.jobs if j.remote_status != REJECTED)
    return SpecRecord(rec.name, jobs) if jobs else None


def check_names(desired: DesiredState, recorded: RecordedState, options: PlanOptions) -> None:
    """Refuse a --target/--exclude naming nothing, a --rerun naming no spec and a --selector matching no
    spec (UsageError)."""
    specs, records = desired.by_name(), {r.name for r in recorded.records if r.jobs}
    for flag, names in (("--target", options.targets), ("--exclude", options.excludes)):
        for name in sorted(names):
            if name not in specs and name not in records:
                raise UsageError(f"{flag} {name}: no spec named {name!r} in the specs or the ledger; "
                                 "check the name with `reconciler validate` or `reconciler status`")
    for name in sorted(options.reruns):
        if name not in specs:
            raise UsageError(f"--rerun {name}: no spec named {name!r}; a rerun needs the spec in the repository")
    if options.selectors and not any(_matches(spec, options) for spec in desired.specs):
        asked = " ".join(f"--selector {k}={v}" for k, v in options.selectors)
        labels = sorted({f"{k}={v}" for spec in desired.specs for k, v in spec.label_dict().items()})
        known = f"labels in use: {', '.join(labels[:20])}{' …' if len(labels) > 20 else ''}" if labels else \
            "no spec has labels (metadata.labels)"
        raise UsageError(f"{asked}: matches no spec; {known}")


def selected(name: str, spec: DesiredSpec | None, options: PlanOptions) -> bool:
    """True when --target/--exclude/--selector leave the name in the plan."""
    if (options.targets and name not in options.targets) or name in options.excludes:
        return False
    return _matches(spec, options)


def _matches(spec: DesiredSpec | None, options: PlanOptions) -> bool:
    """True when the spec's labels satisfy every --selector (always, without selectors)."""
    if options.selectors:
        labels = spec.label_dict() if spec else {}
        return all(labels.get(key) == value for key, value in options.selectors)
    return True


def depths(specs: dict[str, DesiredSpec]) -> dict[str, int]:
    """Longest dependsOn chain below each spec (Kahn's algorithm; validate refuses cycles)."""
    deps = {n: {d for d in s.depends_on if d in specs} for n, s in specs.items()}
    dependents = defaultdict(list)
    for name, ds in deps.items():
        for d in ds:
            dependents[d].append(name)
    remaining = {n: set(ds) for n, ds in deps.items()}  # consumed as dependencies get their depth
    ready = [n for n, ds in deps.items() if not ds]
    depth: dict[str, int] = {}
    while ready:
        name = ready.pop()
        depth[name] = 1 + max((depth[d] for d in deps[name]), default=-1)
        for other in dependents[name]:
            remaining[other].discard(name)
            if not remaining[other]:
                ready.append(other)
    return depth


def hold_for_dependencies(result, specs, records, base, seen: Observer, held=None, options=None):
    """Turn a submit/replace into a wait while any dependency has not completed, or into `blocked` when a
    dependency failed or was stopped (or is blocked itself): only a person can move those on.

    `held` holds the dependencies' own results already decided (plan order puts them first); `options`
    names the filters, so a dependency left out of the plan says so.
    """
    if not isinstance(result, Change) or result.action not in (Action.SUBMIT, Action.REPLACE) or result.resume:
        return result
    pending, why, roots = [], [], []
    for dep in specs[result.name].depends_on:
        reason, stuck = _dependency_pending(dep, specs, records, base, seen, held or {}, options)
        if reason:
            pending.append(dep)
            why.append(reason)
            roots += [r for r in stuck if r not in roots]
    if not pending:
        return result
    if roots:  # `dependencies` names the specs a person must fix: the ones that failed or stopped
        names = ", ".join(roots)
        reruns = " ".join(f"--rerun {d}" for d in roots)
        return replace(result, action=Action.BLOCKED, reason=f"{result.reason}; {'; '.join(why)}",
                       waiting_for="dependency", dependencies=tuple(roots), then=result.action,
                       resolve=f"fix {names} and bump its revision, or run with {reruns}")
    return replace(result, action=Action.WAIT, reason=f"{result.reason}; {'; '.join(why)}",
                   waiting_for="dependency", dependencies=tuple(pending), then=result.action)


def _dependency_pending(dep: str, specs, records, base, seen: Observer, held, options) -> tuple[str | None, tuple]:
    """Why `dep` holds its dependent back (None when it does not), and the failed or stopped specs behind it
    when waiting can never free it (empty otherwise)."""
    if dep not in specs:
        return f"dependency {dep} has no spec", ()
    mine = held.get(dep, base[dep])
    if isinstance(mine, Change):
        if mine.action is Action.CONFLICT:
            return f"dependency {dep} has a conflict", ()
        if mine.action is Action.BLOCKED:
            return f"dependency {dep} is blocked ({', '.join(mine.dependencies)} not completed)", mine.dependencies
        if options is not None and dep not in held and mine.action.actionable:
            return f"dependency {dep} is {_left_out(dep, options)}", ()
        return f"waiting for dependency {dep} ({'itself waiting' if mine.action is Action.WAIT else f'{mine.action} planned'})", ()
    ran = without_rejected(records[dep])
    assert ran is not None  # in sync, so a job of it ran
    status = seen(ran.latest).status
    if status in COMPLETED:
        return None, ()
    if status in UNSUCCESSFUL:
        return f"dependency {dep} {status.lower()}", (dep,)
    return f"waiting for dependency {dep} ({status})", ()


def _left_out(dep: str, options) -> str:
    """How the filters leave a dependency out, and how to put it back."""
    if options.targets and dep not in options.targets:
        return "outside --target; add it (--target " + dep + ")"
    if dep in options.excludes:
        return "excluded from this plan"  # by --exclude, or by apply after its change failed
    return "not matched by --selector; add it with --target " + dep


def hold_for_slots(results: dict, ordered: list[str], recorded: RecordedState, seen: Observer, slots: int):
    """Hand free custom object slots to new submits in plan order; the rest wait."""
    active = sum(1 for rec in recorded.records for job in rec.jobs if _holds_slot(job, seen))
    planned = 0
    for name in ordered:
        change = results[name]
        needs_slot = (isinstance(change, Change) and change.kind == CUSTOM_OBJECT_JOB
                      and change.action is Action.SUBMIT and not change.resume)
        if not needs_slot:
            continue
        if active + planned < slots:
            planned += 1
            continue
        use = f"{active} of {slots} active" if not planned else f"{active} active + {planned} planned, of {slots}"
        results[name] = replace(change, action=Action.WAIT, reason=f"{change.reason}; no free custom object slot ({use})",
                                waiting_for="slot", then=Action.SUBMIT)


def _holds_slot(job: JobRecord, seen: Observer) -> bool:
    if job.kind != CUSTOM_OBJECT_JOB:
        return False
    now = seen(job)
    if now.missing:
        return False
    if now.status is not None:  # a rejected submission created nothing; an undocumented status may be running
        return now.status != REJECTED and not is_terminal(job.kind, now.status)
    return job.phase in (Phase.INTENT, Phase.CREATED, Phase.ACTIVE)  # it may exist remotely: count it
