"""`reconciler forget NAME`: retire a spec's latest job in the ledger, without any remote call.

The job is left alone in Zuora; the ledger stops tracking it, and the `retired` event names the
operator and the reason "forgotten by operator". The run holds the ledger lock, so it cannot race an
apply. A name with no job is an error (exit 1); a latest job already retired is left as is (exit 0).
"""

from __future__ import annotations

from typing import TextIO

from reconciler.commands._common import Specs
from reconciler.errors import ExitCode, UsageError
from reconciler.model import (
    Phase,
    latest_by_name,
)

REASON = "forgotten by operator"


def forget(settings, out: TextIO, *, name: str) -> int:
    """Retire NAME's latest job (ledger only) and record who did it."""
    from reconciler.engine.run import Session, read_ledger

    ledger = read_ledger(settings)  # first read-only: a missing name must not create or touch the ledger
    jobs = []
    if ledger is not None:
        with ledger:
            jobs = ledger.jobs(name)
    if not jobs:
        specs = Specs(settings)
        if specs.get(name) is None:
            raise specs.unknown(name)
        raise UsageError(f"{name} has no job in the ledger, so there is nothing to forget")
    session = Session(settings, command="forget", lock_timeout=0)
    outcome = "error"
    try:
        latest = latest_by_name(session.ledger.jobs(name))[name]
        if latest.phase == Phase.RETIRED:
            out.write(f"{name}: its latest job (generation {latest.generation}, {latest.remote_id or 'no remote id'})"
                      " is already retired; nothing to do.\n")
            outcome = "ok"
            return ExitCode.OK
        session.ledger.record_retired(latest.id, run_id=session.run_id, reason=REASON, actor=session.actor)
        outcome = "ok"
    finally:
        session.close(outcome)
    out.write(f"Forgot {name}: generation {latest.generation} ({latest.remote_id or 'no remote id'}, "
              f"{latest.remote_status or latest.phase}) is retired; recorded as {REASON} by {session.actor.label}.\n")
    if latest.phase in (Phase.CREATED, Phase.ACTIVE):
        out.write(f"It was last seen {latest.remote_status or 'running'}: it may still run in Zuora, which was not "
                  "contacted.\n")
    elif latest.phase == Phase.INTENT:
        out.write("Its submission was never confirmed: if Zuora did create the job, "
                  f"`reconciler import {name} ID` records it.\n")
    out.write(f"A spec named {name} now needs a higher revision (or --rerun) to run again.\n")
    return ExitCode.OK
