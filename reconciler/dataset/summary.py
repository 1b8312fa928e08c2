"""A data file's digest for a reviewer: its row count, MPU totals per currency, and a per-type summary.

`Tally` takes the rows a batch at a time (lists of cells under one header), so the spec checks can
feed it on their one pass over each file and a plan needs no second read where there is no history;
dataset.facts feeds it the rows a change sends. It keeps counts, sums and key values only: FX
currency pairs and date range; payments' accounts and dates; accounting codes' object types and
codes; revenue schedules and charges counted; a custom object's object, operation and columns.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from operator import itemgetter

from reconciler.model import MASS_ACTION

LISTED = 5  # key values a summary names before it only counts

Summary = tuple[tuple[str, str | tuple[str, ...]], ...]

# Per action type: (summary key, how it shows, the columns it reads)
_KEYS: dict[str, tuple[tuple[str, str, tuple[str, ...]], ...]] = {
    "ImportFXRate": (("pairs", "listed", ("Currency (From)", "Currency (To)")),
                     ("dates", "span", ("Provider Exchange Rate Date",))),
    "MPU": (("accounts", "counted", ("Billing Account ID",)), ("dates", "span", ("Payment Date",))),
    "UpdateAccountingCode": (("object_types", "listed", ("Object Type",)),
                             ("accounting_codes", "listed", ("Deferred Revenue Accounting Code",))),
    "UpdateRevenueSchedule": (("revenue_schedules", "counted", ("Revenue Schedule Number",)),),
    "DeleteRevenueSchedule": (("revenue_schedules", "counted", ("Revenue Schedule Number",)),),
    "CreateRevenueSchedule": (("charges", "counted", ("Subscription Charge Key", "Linked Transaction Key")),),
}


@dataclass(frozen=True)
class Digest:
    """What a Tally found, once every row is in: what a plan shows of a file (and spec.cache remembers)."""

    rows: int
    totals: tuple[tuple[str, str], ...]
    summary: Summary


class Tally:
    """The digest of the rows added so far, for one spec's kind and action type or object/operation."""

    def __init__(self, kind: str, header: Sequence[str], *, action_type: str | None = None,
                 namespace: str | None = None, object: str | None = None, operation: str | None = None):
        self.kind, self.action_type = kind, action_type
        self.what = (namespace, object, operation)
        self.columns, getters, self.money = _layout(kind, action_type, tuple(header))
        self.keys: list[tuple[str, str, itemgetter | None, set]] = [(*g, set()) for g in getters]
        self.sums: dict[str, Decimal] = {}
        self.rows = 0

    def add(self, rows: Iterable[Sequence[str]]) -> None:
        """Count these rows (each as long as the header) into the digest."""
        batch = rows if isinstance(rows, list) else list(rows)
        self.rows += len(batch)
        for _, _, get, seen in self.keys:
            if get is not None:
                seen.update(map(get, batch))  # raw cells (a tuple for several columns); trimmed in summary()
        if self.money is not None:
            amount_at, currency_at = self.money
            for row in batch:
                self._add_amount(row, amount_at, currency_at)

    def _add_amount(self, row: Sequence[str], amount_at: int | None, currency_at: int | None) -> None:
        if amount_at is None or currency_at is None:
            return
        try:
            amount = Decimal(row[amount_at].strip())
        except InvalidOperation:
            return  # validation refuses such a file; nothing to add up
        currency = row[currency_at].strip().upper()
        self.sums[currency] = self.sums.get(currency, Decimal(0)) + amount

    def totals(self) -> tuple[tuple[str, str], ...]:
        """(currency, exact decimal sum) of MPU rows, sorted by currency."""
        return tuple((currency, format(total, "f")) for currency, total in sorted(self.sums.items()))

    def digest(self) -> Digest:
        """The rows counted so far, their totals and summary."""
        return Digest(self.rows, self.totals(), self.summary())

    def summary(self) -> Summary:
        """The per-type digest, in its documented key order."""
        if self.kind != MASS_ACTION:
            namespace, obj, operation = self.what
            return (("object", f"{namespace}.{obj}"), ("operation", operation or ""), ("columns", self.columns))
        out: list[tuple[str, str | tuple[str, ...]]] = []
        for key, how, _, seen in self.keys:
            values = _trimmed(seen)
            if how == "counted":
                out.append((key, str(len(values))))
            elif how == "span":
                out.append((key, "" if not values else min(values) if len(values) == 1
                            else f"{min(values)}..{max(values)}"))
            else:
                out.append((key, _listed(values)))
        return tuple(out)


@functools.lru_cache(maxsize=256)
def _layout(kind: str, action_type: str | None, header: tuple[str, ...]):
    """(columns, (summary key, how, getter) per key, MPU amount and currency indexes) for one header: files of
    one shape (a repository's are) share it, so a Tally costs its sets alone."""
    names = [c.strip() for c in header]
    columns = tuple(c for c in names if c and not c.startswith("#"))
    index = {name: i for i, name in enumerate(names)}
    getters = []
    for key, how, cols in _KEYS.get(action_type or "", ()) if kind == MASS_ACTION else ():
        at = [index[c] for c in cols if c in index]
        getters.append((key, how, itemgetter(*at) if at else None))
    money = (index.get("Payment Amount"), index.get("Currency")) if action_type == "MPU" else None
    return columns, tuple(getters), money


def _trimmed(seen: set) -> set[str]:
    """The distinct non-blank values seen, trimmed; several columns' values joined with `->`."""
    if not seen:
        return set()
    if isinstance(next(iter(seen)), tuple):
        joined = {"->".join(map(str.strip, v)) for v in seen}
        return {j for j in joined if j.replace("->", "")}  # not a row whose key columns are all blank
    values = set(map(str.strip, seen))
    values.discard("")
    return values


def _listed(values: set[str]) -> tuple[str, ...]:
    distinct = sorted(values)
    return tuple(distinct[:LISTED]) + ((f"… {len(distinct) - LISTED} more",) if len(distinct) > LISTED else ())
