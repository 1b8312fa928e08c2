"""`reconciler history [NAME]`: the audit log, newest first, read through the ledger's indexes.

Only the newest `--limit` events are read (by primary key, or by the events-by-name index), so the
command stays fast on a ledger with millions of events. Without a ledger it prints "no ledger yet"
(`--json`: `{"events": []}`) and exits 0.
"""

from __future__ import annotations

from typing import TextIO

from reconciler.commands._common import (
    EVENT_HEADERS,
    Specs,
    event_row,
    no_ledger,
    write_json,
)
from reconciler.errors import ExitCode
from reconciler.views import render_table


def history(settings, out: TextIO, *, name: str | None = None, limit: int = 50, as_json: bool = False) -> int:
    """Print the newest `limit` events (of NAME only, when given)."""
    from reconciler.engine.run import read_ledger

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
        events = ledger.events(name=name, limit=limit + 1)
        known = bool(events) or name is None or bool(ledger.jobs(name))
    if not known and specs.get(name) is None:
        raise specs.unknown(name)
    more = len(events) > limit
    events = events[:limit]
    if as_json:
        write_json(out, {"events": events, "more": more})
        return ExitCode.OK
    if not events:
        out.write(f"no events{f' for {name}' if name else ''} yet\n")
        return ExitCode.OK
    render_table([event_row(e) for e in events], EVENT_HEADERS, out)
    if more:
        out.write(f"(older events not shown; --limit {limit * 10} shows more, `reconciler audit export` all)\n")
    return ExitCode.OK
