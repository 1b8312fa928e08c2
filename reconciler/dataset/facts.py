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
from decimal import Decimal, InvalidOperation
from pathlib import Path

from reconciler.actions import MASS_ACTIONS, OPERATIONS
from reconciler.dataset.applied import Archive, Unknown, applied_rows, ran, sent_rows
from reconciler.dataset.table import Identity, Table, identity, key_of, parse, render
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

LISTED = 5  # key values a summary names before it only counts


@dataclass(frozen=True)
class Outgoing:
    """A change's data facts, and in new-rows mode the bytes of the file it sends."""

    facts: DataFacts
    payload: bytes | None = None


def resend_mode(spec: DesiredSpec) -> str:
    """spec.resend, else the action type's default: new-rows where Zuora would create records twice."""
    if spec.resend is not None:
        return spec.resend
    return RESEND_ALL if _rules(spec)[0] else RESEND_NEW_ROWS


def outgoing(spec: DesiredSpec, jobs: Sequence[JobRecord], root: Path) -> Outgoing:
    """The data facts of running `spec` now, after `jobs` (its earlier jobs, any order)."""
    if not spec.file:
        return Outgoing(DataFacts(rows=None, send=None, summary=_filter_summary(spec)))
    try:
        data = (root / spec.file).read_bytes()
        table = parse(data, spec.file)
    except OSError as exc:
        raise ResultError(f"{spec.file}: cannot read the file ({exc.strerror or exc})") from exc
    _, key = _rules(spec)
    mode = resend_mode(spec)
    records = table.records()
    earlier = ran(jobs)
    archive = Archive(root, spec.file, spec.file_sha256)
    added, changed, removed = _diff(sent_rows(earlier[-1], archive, spec.action_type), records, key) if earlier \
        else (None, None, None)
    since = Since(earlier[-1].generation, earlier[-1].revision, earlier[-1].remote_id) if earlier else None

    def facts(send: int | None, sent: list[dict[str, str]], *, sha: str | None = None,
              missing: str | None = None) -> DataFacts:
        return DataFacts(rows=len(records), send=send, already_applied=len(records) - len(sent) if sha else 0,
                         added=added, changed=changed, removed=removed, since=since,
                         totals=_totals(sent) if spec.action_type == "MPU" else (),
                         summary=tuple(_summary(spec, table, sent)), resend=mode, sent_sha256=sha, missing=missing)

    if mode == RESEND_ALL:
        return Outgoing(facts(len(records), records))
    try:
        applied = applied_rows(earlier, archive, spec.action_type)
    except Unknown as why:
        return Outgoing(facts(None, records, missing=str(why)))
    chosen = _not_applied(records, applied)
    payload = data if len(chosen) == len(records) else render(table.header, (table.rows[i] for i in chosen))
    kept = [records[i] for i in chosen]
    return Outgoing(facts(len(chosen), kept, sha=hashlib.sha256(payload).hexdigest()), payload)


def _rules(spec: DesiredSpec) -> tuple[bool, tuple[str, ...]]:
    """(idempotent, pairing key) of the spec's action type or operation."""
    if spec.kind == MASS_ACTION:
        action = MASS_ACTIONS.get(spec.action_type or "")
        return (True, ()) if action is None else (action.idempotent, action.pairing_key)
    operation = OPERATIONS.get(spec.operation or "")
    return (True, ()) if operation is None else (operation.idempotent, operation.natural_key)


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


# --- totals and summaries: counts, sums and key values, never other cell contents ------------------


def _totals(rows: list[dict[str, str]]) -> tuple[tuple[str, str], ...]:
    sums: dict[str, Decimal] = {}
    for row in rows:
        currency = (row.get("Currency") or "").strip().upper()
        try:
            amount = Decimal((row.get("Payment Amount") or "").strip())
        except InvalidOperation:
            continue  # validation refuses such a file; nothing to add up
        sums[currency] = sums.get(currency, Decimal(0)) + amount
    return tuple((currency, format(total, "f")) for currency, total in sorted(sums.items()))


def _summary(spec: DesiredSpec, table: Table, rows: list[dict[str, str]]):
    columns = tuple(c for c in table.columns() if c and not c.startswith("#"))
    if spec.kind != MASS_ACTION:
        yield "object", f"{spec.namespace}.{spec.object}"
        yield "operation", spec.operation or ""
        yield "columns", columns
        return
    action = spec.action_type
    if action == "ImportFXRate":
        yield "pairs", _listed(f"{r.get('Currency (From)', '').strip()}->{r.get('Currency (To)', '').strip()}"
                               for r in rows)
        yield "dates", _span(r.get("Provider Exchange Rate Date", "") for r in rows)
    elif action == "MPU":
        yield "accounts", str(len({r.get("Billing Account ID", "").strip() for r in rows} - {""}))
        yield "dates", _span(r.get("Payment Date", "") for r in rows)
    elif action == "UpdateAccountingCode":
        yield "object_types", _listed(r.get("Object Type", "") for r in rows)
        yield "accounting_codes", _listed(r.get("Deferred Revenue Accounting Code", "") for r in rows)
    elif action in ("UpdateRevenueSchedule", "DeleteRevenueSchedule"):
        yield "revenue_schedules", str(len({r.get("Revenue Schedule Number", "").strip() for r in rows} - {""}))
    elif action == "CreateRevenueSchedule":
        yield "charges", str(len({(r.get("Subscription Charge Key", "").strip(),
                                   r.get("Linked Transaction Key", "").strip()) for r in rows}))


def _filter_summary(spec: DesiredSpec) -> tuple[tuple[str, str | tuple[str, ...]], ...]:
    """A job without a file (custom object delete): what it selects, in words."""
    what = f"{spec.namespace}.{spec.object}"
    if spec.allow_delete_all and not spec.conditions:
        return (("object", what), ("operation", spec.operation or ""), ("selects", f"every {spec.object} record"))
    words = " and ".join(f"{c.field} {c.operator} {c.value!r}" for c in spec.conditions) or "no filter"
    return (("object", what), ("operation", spec.operation or ""), ("selects", f"{spec.object} records where {words}"))


def _listed(values) -> tuple[str, ...]:
    distinct = sorted({v.strip() for v in values} - {""})
    return tuple(distinct[:LISTED]) + ((f"… {len(distinct) - LISTED} more",) if len(distinct) > LISTED else ())


def _span(values) -> str:
    dates = sorted({v.strip() for v in values} - {""})
    if not dates:
        return ""
    return dates[0] if len(dates) == 1 else f"{dates[0]}..{dates[-1]}"
