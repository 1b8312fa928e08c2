"""Making a plan from a repository: the specs, the ledger (refreshed or only read), the pure planner, then
what each change does to the data (engine.data).

`compute_plan` is the one way `plan` and `apply` make a plan; `replan_saved` is what `apply FILE`
compares a saved plan with.
"""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from contextlib import nullcontext
from datetime import datetime, timezone

from reconciler.engine.refresh import refresh as refresh_jobs, result_pending
from reconciler import __version__
from reconciler.dataset.blobs import FileBlobs
from reconciler.engine.data import with_data
from reconciler.engine.plan import Plan, PlanOptions
from reconciler.engine.planner import judged_by_latest, make_plan
from reconciler.engine.rules import check_names
from reconciler.engine.run import Session, read_ledger
from reconciler.errors import PlanFileError, UsageError
from reconciler.model import DesiredState, JobTip, ObservedState, RecordedState


def compute_plan(settings, *, session: Session | None, refresh: bool, targets=(), excludes=(), selectors=(),
                 reruns=(), desired: DesiredState | None = None, refresh_only=None) -> Plan:
    """Load the specs (unless `desired` is given), read the ledger, optionally refresh, and plan.

    With a `session` the plan reads its ledger and, when `refresh`, refreshes through it first; the
    plan is classified on, and pinned to, the ledger as the refresh left it, while its drift lists
    what the refresh found against the state read before. Without a session the ledger is only
    read (no ledger: an empty state, lineage None, serial 0) and `refresh` must be False. `refresh_only`
    (names) limits the refresh to those jobs: `apply --wait` polls each job on its own schedule.
    Bad filters raise UsageError before anything is written; invalid specs raise SpecError.
    """
    if refresh and session is None:
        raise ValueError("compute_plan: refresh writes drift to the ledger, so it needs a session")
    if desired is None:
        from reconciler.spec.load import load_desired

        desired = load_desired(settings)
    options = PlanOptions.from_cli(targets=targets, excludes=excludes, selectors=selectors, reruns=reruns,
                                   now=datetime.now(timezone.utc), custom_object_slots=settings.custom_object_slots)
    # The ledger's live names come too; every other name is retired for good and changes no plan. Of a
    # spec the planner can judge by its latest job alone, only that job is read.
    names = {s.name for s in desired.specs} | options.targets | options.excludes | options.reruns
    specs = desired.by_name()

    def brief(tip: JobTip) -> bool:
        return judged_by_latest(specs.get(tip.latest.name), tip, options)

    if session is not None:
        before = session.ledger.recorded_state(names, brief)
        check_names(desired, before, options)
        if refresh and refresh_only is not None:  # plus every finished job whose result is still to archive
            refresh_only = set(refresh_only) | {j.name for j in session.ledger.live_jobs() if result_pending(j)}
        observed = refresh_jobs(session, refresh_only) if refresh else ObservedState()
        recorded = session.ledger.recorded_state(names, brief) if refresh else before
        plan = make_plan(desired, recorded, observed, options, environment=settings.environment,
                         reconciler_version=__version__, drift_since=before)
        return with_data(plan, desired, recorded, settings.root, session.blobs)
    ledger = read_ledger(settings)  # kept open while the data is read: a PostgreSQL ledger holds the results
    with ledger if ledger is not None else nullcontext():
        recorded = ledger.recorded_state(names, brief) if ledger is not None else RecordedState()
        plan = make_plan(desired, recorded, ObservedState(), options, environment=settings.environment,
                         reconciler_version=__version__, drift_since=recorded)
        blobs = ledger.blobs(settings.root) if ledger is not None else FileBlobs(settings.root)  # nothing to read
        return with_data(plan, desired, recorded, settings.root, blobs)


def check_filters(settings, desired: DesiredState, *, targets=(), excludes=(), selectors=(), reruns=()) -> None:
    """Refuse a bad --selector, or a --target/--exclude/--rerun naming nothing, before anything is opened for
    writing (UsageError): the names are checked against the specs, and those no spec has against a read of
    the ledger (only they: a plan reads the ledger's records of every spec anyway)."""
    options = PlanOptions.from_cli(targets=targets, excludes=excludes, selectors=selectors, reruns=reruns,
                                   now=datetime.now(timezone.utc))
    unknown = (options.targets | options.excludes) - {s.name for s in desired.specs}
    check_names(desired, read_only(settings, unknown) if unknown else RecordedState(), options)


def replan_saved(settings, ledger, desired: DesiredState, saved: Plan) -> Plan:
    """The plan of a saved plan's names from the ledger as it is now (what its refresh had recorded)."""
    names = {c.name for c in saved.changes}
    reruns = {c.name for c in saved.changes if c.rerun}
    options = PlanOptions.from_cli(targets=names, reruns=reruns, now=datetime.now(timezone.utc),
                                   custom_object_slots=settings.custom_object_slots)
    try:
        recorded = ledger.recorded_state({s.name for s in desired.specs} | names)
        plan = make_plan(desired, recorded, ObservedState(), options,
                         environment=settings.environment, reconciler_version=__version__)
        return with_data(plan, desired, recorded, settings.root, ledger.blobs(settings.root))
    except UsageError as err:  # it names a spec that is not there
        raise PlanFileError(f"plan is stale: {err}. Make a new plan with `reconciler plan --out FILE`") from err


def has_ledger(settings) -> bool:
    """True when the environment's ledger exists; a corrupt or foreign one raises LedgerError here."""
    ledger = read_ledger(settings)
    if ledger is None:
        return False
    ledger.close()
    return True


def read_only(settings, names: AbstractSet[str]) -> RecordedState:
    """The recorded state of `names`, read without writing anything (empty when there is no ledger)."""
    ledger = read_ledger(settings)
    if ledger is None:
        return RecordedState()
    with ledger:
        return ledger.recorded_state(names)
