"""`reconciler plan`: show what apply would do (the plan is made by engine.planning.compute_plan).

With refresh (the default) and a ledger, plan is a writing run: it records itself in `runs`, fetches
the live status of every non-terminal job, writes status changes to the ledger as events (drift) and
archives finished results. Without a ledger it creates none; with `--no-refresh` it only reads.
"""

from __future__ import annotations

from pathlib import Path

from reconciler.engine.plan import Plan
from reconciler.engine.planfile import write_plan_file
from reconciler.engine.planning import check_filters, compute_plan, has_ledger
from reconciler.engine.run import Session
from reconciler.errors import ConflictError, ExitCode, UsageError
from reconciler.model import Action
from reconciler.views import blocked_named, conflicts_named, render_json, render_markdown, render_text

def plan(settings, out, *, out_file, as_json, markdown, detailed_exitcode, refresh, color, targets, excludes,
         selectors, reruns) -> int:
    """Compute, print (and with --out save) the plan; exit 1 on conflicts or blocked changes, 2 on changes with
    --detailed-exitcode."""
    if as_json and markdown:
        raise UsageError("--json and --markdown: choose one output format")
    from reconciler.spec.load import load_desired

    desired = load_desired(settings)
    check_filters(settings, desired, targets=targets, excludes=excludes, selectors=selectors, reruns=reruns)
    filters = dict(targets=targets, excludes=excludes, selectors=selectors, reruns=reruns, desired=desired)
    audit_head = None
    if refresh and has_ledger(settings):
        session = Session(settings, command="plan")
        outcome = "error"
        try:
            result = compute_plan(settings, session=session, refresh=True, **filters)
            audit_head = str(session.ledger.head()) if markdown else None
            outcome = "planned"
        finally:
            session.close(outcome)
    else:  # nothing recorded yet means nothing to refresh: do not create a ledger just to plan
        result = compute_plan(settings, session=None, refresh=False, **filters)
        audit_head = _read_head(settings) if markdown else None

    if out_file:
        write_plan_file(result, Path(settings.cwd or Path.cwd()) / Path(out_file).expanduser())
    if as_json:
        render_json(result, out)
    elif markdown:
        render_markdown(result, out, audit_head=audit_head)
    else:
        render_text(result, out, color=color)
        if out_file:
            then = ("apply will refuse it while it holds conflicts" if result.has_conflicts
                    else f"apply it with `reconciler apply {out_file}`")
            out.write(f"Saved the plan to {out_file}; {then}.\n")
    if result.has_conflicts:
        raise ConflictError(_conflict_message(result))
    if result.blocked:
        n = len(result.blocked)
        raise ConflictError(f"the plan has {n} blocked change{'s' * (n != 1)}: a dependency failed or was stopped, "
                            f"and waiting will not fix it — {blocked_named(result)}")
    return ExitCode.CHANGES if detailed_exitcode and result.has_changes else ExitCode.OK


def _read_head(settings) -> str | None:
    """The audit head of the environment's ledger, read only (None without one)."""
    from reconciler.engine.run import read_ledger

    ledger = read_ledger(settings)
    if ledger is None:
        return None
    with ledger:
        return str(ledger.head())


def _conflict_message(result: Plan) -> str:
    conflicts = [c for c in result.changes if c.action is Action.CONFLICT]
    noun, them = ("conflict", "it") if len(conflicts) == 1 else ("conflicts", "them")
    return (f"the plan has {len(conflicts)} {noun} a person must resolve — {conflicts_named(result)}. "
            f"Or leave {them} out with --exclude NAME: apply refuses to run while a conflict is in its plan")
