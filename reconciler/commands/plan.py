"""`reconciler plan`: show what apply would do; and `compute_plan`, the one way a plan is made from a repo.

With refresh (the default) and a ledger, plan is a writing run: it records itself in `runs`, fetches
the live status of every non-terminal job, writes status changes to the ledger as events (drift) and
archives finished results. Without a ledger it creates none; with `--no-refresh` it only reads.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from reconciler import __version__
from reconciler.engine.plan import Plan, PlanOptions, write_plan_file
from reconciler.engine.planner import make_plan
from reconciler.engine.rules import check_names
from reconciler.engine.run import Session, read_ledger
from reconciler.errors import ConflictError, ExitCode, UsageError
from reconciler.model import DesiredState, ObservedState, RecordedState
from reconciler.views import render_json, render_markdown, render_text

_CONFLICTS_NAMED = 5  # in the error message; the plan above lists every one with its way out


def compute_plan(settings, *, session: Session | None, refresh: bool, targets=(), excludes=(), selectors=(),
                 reruns=(), desired: DesiredState | None = None) -> Plan:
    """Load the specs (unless `desired` is given), read the ledger, optionally refresh, and plan.

    With a `session` the plan reads its ledger and, when `refresh`, refreshes through it first; the
    plan is classified on, and pinned to, the ledger as the refresh left it, while its drift lists
    what the refresh found against the state read before. Without a session the ledger is only
    read (no ledger: an empty state, lineage None, serial 0) and `refresh` must be False.
    Bad filters raise UsageError before anything is written; invalid specs raise SpecError.
    """
    if refresh and session is None:
        raise ValueError("compute_plan: refresh writes drift to the ledger, so it needs a session")
    if desired is None:
        from reconciler.spec.load import load_desired

        desired = load_desired(settings)
    options = PlanOptions.from_cli(targets=targets, excludes=excludes, selectors=selectors, reruns=reruns,
                                   now=datetime.now(timezone.utc), custom_object_slots=settings.custom_object_slots)
    # The ledger's live names come too; every other name is retired for good and changes no plan.
    names = {s.name for s in desired.specs} | options.targets | options.excludes | options.reruns
    if session is not None:
        before = session.ledger.recorded_state(names)
        check_names(desired, before, options)
        observed = session.refresh() if refresh else ObservedState()
        recorded = session.ledger.recorded_state(names) if refresh else before
    else:
        recorded, observed = _read_only(settings, names), ObservedState()
        before = recorded
    return make_plan(desired, recorded, observed, options, environment=settings.environment,
                     reconciler_version=__version__, drift_since=before)


def plan(settings, out, *, out_file, as_json, markdown, detailed_exitcode, refresh, color, targets, excludes,
         selectors, reruns) -> int:
    """Compute, print (and with --out save) the plan; exit 1 on conflicts, 2 on changes with --detailed-exitcode."""
    if as_json and markdown:
        raise UsageError("--json and --markdown: choose one output format")
    from reconciler.spec.load import load_desired

    desired = load_desired(settings)
    filters = dict(targets=targets, excludes=excludes, selectors=selectors, reruns=reruns, desired=desired)
    if refresh and _has_ledger(settings):
        session = Session(settings, command="plan")
        outcome = "error"
        try:
            result = compute_plan(settings, session=session, refresh=True, **filters)
            outcome = "planned"
        finally:
            session.close(outcome)
    else:  # nothing recorded yet means nothing to refresh: do not create a ledger just to plan
        result = compute_plan(settings, session=None, refresh=False, **filters)

    if out_file:
        write_plan_file(result, Path(settings.cwd or Path.cwd()) / Path(out_file).expanduser())
    if as_json:
        render_json(result, out)
    elif markdown:
        render_markdown(result, out)
    else:
        render_text(result, out, color=color)
        if out_file:
            then = ("apply will refuse it while it holds conflicts" if result.has_conflicts
                    else f"apply it with `reconciler apply {out_file}`")
            out.write(f"Saved the plan to {out_file}; {then}.\n")
    if result.has_conflicts:
        raise ConflictError(_conflict_message(result))
    return ExitCode.CHANGES if detailed_exitcode and result.has_changes else ExitCode.OK


def _has_ledger(settings) -> bool:
    """True when the environment's ledger exists; a corrupt or foreign one raises LedgerError here."""
    ledger = read_ledger(settings)
    if ledger is None:
        return False
    ledger.close()
    return True


def _read_only(settings, names: set[str]) -> RecordedState:
    ledger = read_ledger(settings)
    if ledger is None:
        return RecordedState()
    with ledger:
        return ledger.recorded_state(names)


def _conflict_message(result: Plan) -> str:
    conflicts = [c for c in result.changes if c.action == "conflict"]
    ways = "; ".join(f"{c.name}: {c.detail.get('resolve', c.reason)}" for c in conflicts[:_CONFLICTS_NAMED])
    more = f"; and {len(conflicts) - _CONFLICTS_NAMED} more (see the plan)" if len(conflicts) > _CONFLICTS_NAMED else ""
    noun, them = ("conflict", "it") if len(conflicts) == 1 else ("conflicts", "them")
    return (f"the plan has {len(conflicts)} {noun} a person must resolve — {ways}{more}. "
            f"Or leave {them} out with --exclude NAME: apply refuses to run while a conflict is in its plan")
