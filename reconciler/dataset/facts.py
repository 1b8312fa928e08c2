"""What a change does to Zuora's data (model.DataFacts), and the exact file a new-rows change sends.

For a spec with a file: its rows; against the file the latest earlier generation sent, the rows
added, changed (paired by the action type's key, actions.pairing_key) and removed; in `new-rows`
mode (the default of the action types Zuora does not run idempotently: MPU, CreateRevenueSchedule,
custom object create) the rows earlier generations already applied are left out of what is sent. A
row applied twice in a file counts twice: a file with two identical payments, one applied, sends one.
The file sent is then the spec's header and the remaining rows, in their order; the same inputs
always give the same bytes, so a resumed submission sends what its intent recorded.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from reconciler.actions import MASS_ACTIONS, OPERATIONS
from reconciler.dataset.applied import Archive, Unknown, applied_rows, ran, sent_rows
from reconciler.dataset.blobs import Blobs
from reconciler.dataset.summary import Digest, Tally
from reconciler.dataset.table import Identity, identity, key_of, parse, render
from reconciler.errors import ResultError
from reconciler.model import (
    MASS_ACTION,
    RESEND_ALL,
    RESEND_NEW_ROWS,
    DataFacts,
    DesiredSpec,
    JobRecord,
    Since,
)


@dataclass(frozen=True)
class Outgoing:
    """A change's data facts, and in new-rows mode the bytes of the file it sends."""

    facts: DataFacts
    payload: bytes | None = None


def resend_mode(spec: DesiredSpec) -> str:
    """spec.resend, else the action type's default: new-rows where Zuora would create records twice."""
    return resend_of(spec.kind, spec.action_type, spec.operation, spec.resend)


def resend_of(kind: str, action_type: str | None, operation: str | None, resend: str | None) -> str:
    """resend_mode from a spec's parts (the spec checks use it before the DesiredSpec exists)."""
    if resend is not None:
        return resend
    return RESEND_ALL if _rules(kind, action_type, operation)[0] else RESEND_NEW_ROWS


def outgoing(spec: DesiredSpec, jobs: Sequence[JobRecord], root: Path, blobs: Blobs) -> Outgoing:
    """The data facts of running `spec` now, after `jobs` (its earlier jobs, any order, their results in `blobs`)."""
    if not spec.file:
        return Outgoing(DataFacts(rows=None, send=None, summary=_filter_summary(spec)))
    mode = resend_mode(spec)
    earlier = ran(jobs)
    if not earlier and spec.file_facts is not None:  # no history: the digest the checks made (first_run_facts)
        return Outgoing(spec.file_facts)
    try:
        data = (root / spec.file).read_bytes()
        table = parse(data, spec.file)
    except OSError as exc:
        raise ResultError(f"{spec.file}: cannot read the file ({exc.strerror or exc})") from exc
    _, key = _rules(spec.kind, spec.action_type, spec.operation)
    records = table.records()
    archive = Archive(root, spec.file, spec.file_sha256, blobs)
    added, changed, removed = _diff(sent_rows(earlier[-1], archive, spec.action_type), records, key) if earlier \
        else (None, None, None)
    since = Since(earlier[-1].generation, earlier[-1].revision, earlier[-1].remote_id) if earlier else None

    def facts(chosen: list[int] | None, *, sha: str | None = None, missing: str | None = None) -> DataFacts:
        tally = tally_of(spec, table.header)
        tally.add(table.rows if chosen is None else [table.rows[i] for i in chosen])
        return DataFacts(rows=len(records), send=None if missing else tally.rows,
                         already_applied=len(records) - tally.rows if sha else 0, added=added, changed=changed,
                         removed=removed, since=since, totals=tally.totals(), summary=tally.summary(), resend=mode,
                         sent_sha256=sha, missing=missing)

    if mode == RESEND_ALL:
        return Outgoing(facts(None))
    try:
        applied = applied_rows(earlier, archive, spec.action_type)
    except Unknown as why:
        return Outgoing(facts(None, missing=str(why)))
    chosen = _not_applied(records, applied)
    payload = data if len(chosen) == len(records) else render(table.header, (table.rows[i] for i in chosen))
    return Outgoing(facts(chosen, sha=hashlib.sha256(payload).hexdigest()), payload)


def tally_of(spec: DesiredSpec, header) -> Tally:
    """A Tally for this spec's rows under `header`."""
    if spec.kind == MASS_ACTION:
        return Tally(spec.kind, header, action_type=spec.action_type)
    return Tally(spec.kind, header, namespace=spec.namespace, object=spec.object, operation=spec.operation)


def first_run_facts(mode: str, file_sha256: str | None, digest: Digest) -> DataFacts:
    """What a run with no earlier job does: every row of the spec's own file (archived in new-rows mode)."""
    return DataFacts(rows=digest.rows, send=digest.rows, totals=digest.totals, summary=digest.summary, resend=mode,
                     sent_sha256=file_sha256 if mode == RESEND_NEW_ROWS else None)


def _rules(kind: str, action_type: str | None, operation: str | None) -> tuple[bool, tuple[str, ...]]:
    """(idempotent, pairing key) of the action type or operation."""
    if kind == MASS_ACTION:
        action = MASS_ACTIONS.get(action_type or "")
        return (True, ()) if action is None else (action.idempotent, action.pairing_key)
    found = OPERATIONS.get(operation or "")
    return (True, ()) if found is None else (found.idempotent, found.natural_key)


def _not_applied(records: list[dict[str, str]], applied: Counter[Identity]) -> list[int]:
    """Indexes of the rows to send: each applied identity leaves out one row that has it, first ones first."""
    left, chosen = Counter(applied), []
    for index, record in enumerate(records):
        ident = identity(record)
        if left[ident] > 0:
            left[ident] -= 1
        else:
            chosen.append(index)
    return chosen


def _diff(before: list[dict[str, str]] | None, after: list[dict[str, str]], key: tuple[str, ...]):
    """(added, changed, removed) from `before` to `after`; (None, None, None) without a `before`."""
    if before is None:
        return None, None, None
    old, new = Counter(identity(r) for r in before), Counter(identity(r) for r in after)
    gone, came = old - new, new - old
    keys_of = {identity(r): key_of(r, key) for r in (*before, *after)}
    gone_keys = Counter(k for ident, n in gone.items() for k in [keys_of[ident]] * n if k is not None)
    came_keys = Counter(k for ident, n in came.items() for k in [keys_of[ident]] * n if k is not None)
    changed = sum((gone_keys & came_keys).values())
    return sum(came.values()) - changed, changed, sum(gone.values()) - changed


def _filter_summary(spec: DesiredSpec) -> tuple[tuple[str, str | tuple[str, ...]], ...]:
    """A job without a file (custom object delete): what it selects, in words."""
    what = f"{spec.namespace}.{spec.object}"
    if spec.allow_delete_all and not spec.conditions:
        return (("object", what), ("operation", spec.operation or ""), ("selects", f"every {spec.object} record"))
    words = " and ".join(f"{c.field} {c.operator} {c.value!r}" for c in spec.conditions) or "no filter"
    return (("object", what), ("operation", spec.operation or ""), ("selects", f"{spec.object} records where {words}"))
