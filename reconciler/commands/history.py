"""`reconciler history [NAME]`: the audit log, newest first, read through the ledger's indexes.

By default it shows the decisions (intents, submissions, status changes, results, operator actions,
locks) and leaves out the HTTP calls behind them; `--event TYPE` (repeatable) shows only those types,
`--all` everything.

Only the newest `--limit` events are read (by primary key, or by the events-by-name index), so the
command stays fast on a ledger with millions of events. Without a ledger it prints "no ledger yet"
(`--json`: `{"events": []}`) and exits 0.
"""

from __future__ import annotations

from typing import Sequence, TextIO

from reconciler.commands._common import (
    EVENT_HEADERS,
    Specs,
    event_row,
    no_ledger,
    write_json,
)
from reconciler.errors import ExitCode, UsageError
from reconciler.ledger.store import CALL_EVENTS, EVENT_TYPES
from reconciler.views import render_table, terminal_width


def history(settings, out: TextIO, *, name: str | None = None, limit: int = 50, as_json: bool = False,
            event_types: Sequence[str] = (), every: bool = False) -> int:
    """Print the newest `limit` events (of NAME only, when given; of `event_types` only, when given;
    remote calls only with `every` or when asked for by type)."""
    from reconciler.engine.run import read_ledger

    unknown = sorted(set(event_types) - set(EVENT_TYPES))
    if unknown:
        raise UsageError(f"--event {unknown[0]}: no such event type; use one of {', '.join(EVENT_TYPES)}")
    if every and event_types:
        raise UsageError("--all shows every event type; give it or --event, not both")
    types = tuple(dict.fromkeys(event_types)) or None
    exclude = () if every or types else CALL_EVENTS

    ledger = read_ledger(settings)
    specs = Specs(settings)
    if ledger is None:
        if name is not None and specs.get(name) is None:
            raise specs.unknown(name)
        if as_json:
            write_json(out, {"events": []})
        else:
            out.write(no_ledger(settings) + "\n")
        return ExitCode.OK
    with ledger:
        events = ledger.events(name=name, limit=limit + 1, types=types, exclude=exclude)
        known = bool(events) or name is None or bool(ledger.jobs(name))
    if not known and specs.get(name) is None:
        raise specs.unknown(name)
    more = len(events) > limit
    events = events[:limit]
    if as_json:
        write_json(out, {"events": events, "more": more})
        return ExitCode.OK
    if not events:
        kinds = f" of type {', '.join(types)}" if types else ""
        out.write(f"no events{kinds}{f' for {name}' if name else ''} yet\n")
        return ExitCode.OK
    render_table([event_row(e) for e in events], EVENT_HEADERS, out, width=terminal_width(out),
                 cut_first=(5, 2))  # the call's path, then the actor
    if more:
        out.write(f"(older events not shown; --limit {limit * 10} shows more, `reconciler audit export` all)\n")
    if exclude:
        out.write("(remote calls not shown: --all shows every event, --event remote_call only the calls)\n")
    return ExitCode.OK
