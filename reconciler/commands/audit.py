"""`reconciler audit verify | export`: recompute the event log's hash chain, or export it for an auditor.

`verify` checks the chain, the job rows and runs bound to it (ledger/audit.py) and, given `--head`, that
the ledger still extends a head printed before (by an apply, in a CI log).

`export --format jsonl` writes one event per line and nothing else: the canonical JSON of every
field, `prev_hash` and `hash` included, so `sha256(chain.canonical_event(event)) == event["hash"]`
can be checked line by line outside the tool (see the ops README). `--format csv` is for
spreadsheets: a header row, then one row per event, `detail` as canonical JSON, null as an empty
cell, and text a spreadsheet would run as a formula defused with a leading `'`. Events are streamed oldest first in short read transactions; `--output FILE` is written
whole or not at all. Without a ledger, verify and an export to a file print "no ledger yet"; an
export to standard output prints nothing (csv: the header row) so a pipe stays well-formed.
"""

from __future__ import annotations

import csv
import json
import re
from typing import TextIO

from reconciler.commands._common import (
    atomic_file,
    count,
    display_path,
    ledger_location,
    no_ledger,
    user_path,
)
from reconciler.errors import ExitCode, UsageError
from reconciler.ledger.chain import EVENT_FIELDS, Head, canonical_json


def verify(settings, out: TextIO, *, head: str | None = None) -> int:
    """Recompute the chain and check the records it binds; exit 0 with `OK: N events, head <hash>`, 1 naming
    the first bad row. Given `head` (HASH[:COUNT], as apply prints it), the chain must also extend it."""
    from reconciler.engine.run import read_ledger

    witness = parse_head(head) if head is not None else None
    ledger = read_ledger(settings)
    if ledger is None:
        out.write(no_ledger(settings) + "\n")
        return ExitCode.OK if witness is None else ExitCode.ERROR
    with ledger:
        report = ledger.verify(witness)
    where = ledger_location(settings)
    if report.ok:
        extends = f"; it extends {witness}" if witness is not None else ""
        out.write(f"OK: {count(report.count, 'event')} and the job rows they bind, head {report.head_hash}:{report.count}"
                  f"{extends} ({where})\n")
        return ExitCode.OK
    if report.first_bad_id is None:  # the chain holds; a record bound to it does not
        out.write(f"FAILED: {report.message} ({where}; its {count(report.count, 'event')} verified)\n")
        return ExitCode.ERROR
    message = report.message.removeprefix(f"event {report.first_bad_id}: ")  # said once is enough
    out.write(f"FAILED: event {report.first_bad_id}: {message} ({where}; {count(report.count, 'event')} "
              "before it verified)\n")
    return ExitCode.ERROR


_HEAD = re.compile(r"([0-9a-f]{64})(?::([1-9][0-9]{0,17}))?")


def parse_head(text: str) -> Head:
    """`HASH[:COUNT]` as `apply` and `audit verify` print it (UsageError otherwise)."""
    match = _HEAD.fullmatch(text.strip().lower())
    if match is None:
        raise UsageError(f"--head {text!r}: expected the 64-hex-digit hash of an event, optionally with its count "
                         "(HASH:COUNT), as `reconciler apply` and `reconciler audit verify` print it")
    return Head(match[1], int(match[2]) if match[2] else None)


def export(settings, out: TextIO, *, fmt: str = "jsonl", output: str | None = None) -> int:
    """Write every event with its hashes as JSONL or CSV, to `output` or standard output."""
    from reconciler.engine.run import read_ledger

    if fmt not in ("jsonl", "csv"):
        raise ValueError(f"unknown export format {fmt!r}")
    ledger = read_ledger(settings)
    if ledger is None:
        if output is not None:
            out.write(no_ledger(settings) + "; nothing exported\n")
        elif fmt == "csv":
            csv.writer(out, lineterminator="\n").writerow(EVENT_FIELDS)
        return ExitCode.OK
    with ledger:
        if output is None:
            _write(ledger.iter_events(), out, fmt)
            return ExitCode.OK
        target = user_path(settings, output)
        with atomic_file(target, newline="") as handle:
            written = _write(ledger.iter_events(), handle, fmt)
    out.write(f"Exported {count(written, 'event')} to {display_path(settings, target)}\n")
    return ExitCode.OK


def _write(events, stream: TextIO, fmt: str) -> int:
    written = 0
    if fmt == "jsonl":
        for event in events:
            stream.write(_canonical({k: event[k] for k in EVENT_FIELDS}) + "\n")
            written += 1
        return written
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(EVENT_FIELDS)
    for event in events:
        writer.writerow([_cell(k, event[k]) for k in EVENT_FIELDS])
        written += 1
    return written


def _canonical(value: object) -> str:
    try:
        return canonical_json(value)
    except ValueError:  # NaN in an edited row: export it anyway; verification flags the row
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _cell(key: str, value: object) -> object:
    if key == "detail":
        value = value if isinstance(value, str) else _canonical(value)
    if value is None:
        return ""
    return _defused(value) if isinstance(value, str) else value


_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def _defused(text: str) -> str:
    """A spreadsheet never runs a cell as a formula: text starting with = + - @ (or a tab, CR) gets a leading '."""
    return "'" + text if text.startswith(_FORMULA) else text
