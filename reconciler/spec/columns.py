"""What a spec data file's rows must hold (standard library only): the header and value checks of each Mass
Updater action type and custom object operation, run on a whole batch of rows, column by column.

The columns and their rules are reconciler/actions.py's; datafiles.py reads the files (size limits, zip,
UTF-8, CSV records) and hands each batch of records here.
"""

from __future__ import annotations

import functools
import re
from datetime import date
from difflib import get_close_matches
from operator import itemgetter

from reconciler.actions import MASS_ACTIONS, OPERATIONS, SYSTEM_FIELDS, ActionType, Column

_DECIMAL = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)"
_INVOICE = rf"[^:|\0]*[^:|\s\0][^:|\0]*:{_DECIMAL}"
_PATTERNS = {  # full-match patterns of the value kinds (dates are also checked against the calendar)
    "date": re.compile(r"\d{4}-\d{2}-\d{2}"),
    # positive and plain: no 1,000 or 1e5 (the lookahead is lazy: it stops at the first non-zero digit)
    "amount": re.compile(r"\+?(?=[\d.]*?[1-9])(?:\d+(?:\.\d*)?|\.\d+)"),
    "currency": re.compile(r"[A-Za-z]{3}"),
    "currency_or_id": re.compile(r"[A-Za-z]{3}|[0-9a-fA-F]{32}"),
    "invoices": re.compile(rf"{_INVOICE}(?:\|{_INVOICE})*"),
}
# A whole column in one regex call: values joined by NUL, which datafiles.py has already refused in the file.
_COLUMNS = {kind: re.compile(rf"(?:{p.pattern})(?:\0(?:{p.pattern}))*") for kind, p in _PATTERNS.items()}
_REAL_DATES: set[str] = set()  # values that passed the date checks, written YYYY-MM-DD
MAX_REMEMBERED_DATES = 100_000
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_UUIDS = re.compile(rf"{_UUID.pattern}(?:\0{_UUID.pattern})*")


def _header_basics(header: list[str], skip_comments: bool) -> list[tuple[str, str]]:
    problems, seen = [], {}
    for index, raw in enumerate(header, start=1):
        name = raw.strip()
        if skip_comments and name.startswith("#"):
            continue  # informational columns: Zuora ignores them
        if not name:
            problems.append((f"column {index}", "column has no name"))
        elif name.lower() in seen:
            problems.append((name, f"duplicate column (also column {seen[name.lower()]})"))
        else:
            seen[name.lower()] = index
    return problems


class _MassTable:
    def __init__(self, action: ActionType, header: list[str]):
        names = [n.strip() for n in header]
        index = {n: i for i, n in reversed(list(enumerate(names))) if n and not n.startswith("#")}
        self.header_problems = _header_basics(header, skip_comments=True)
        for column in action.required:
            if column not in index:
                self.header_problems.append((column, "required column is missing" + _did_you_mean(column, header)))
        if action.one_of and not any(c in index for c in action.one_of):
            a, b = action.one_of
            self.header_problems.append((a, f"needs a {a!r} or a {b!r} column"))
        self.columns = [(index[c], c, rule, c in action.required) for c, rule in action.columns.items()
                        if c in index and (rule.checks or c in action.required)]
        self.one_of = [index[c] for c in action.one_of if c in index]
        self.need = " or a ".join(action.one_of)
        pair = ("Currency (From)", "Currency (To)")
        self.pair = tuple(index[c] for c in pair) if all(c in index and c in action.columns for c in pair) else None
        self.invoice = index.get("Payment Invoice") if "Billing Account ID" in action.columns else None
        self.account = index.get("Billing Account ID")

    def batch_problems(self, numbers, records: list) -> list[tuple[int, str | None, str]]:
        """(row number, column, message) of every bad value in records (all of the header's width)."""
        found = []
        for index, column, rule, required in self.columns:
            values = list(map(itemgetter(index), records))
            if _column_valid(values, rule, required):
                continue
            for number, value in zip(numbers, values):
                if not value.strip():
                    if required:
                        found.append((number, column, "required value is empty"))
                elif not _valid(value, rule):
                    found.append((number, column, _explain(value, rule)))
        rows = zip(numbers, records)
        if self.one_of:
            found += [(n, None, f"needs a {self.need}") for n, r in rows if not any(r[i].strip() for i in self.one_of)]
        if self.pair:
            froms = list(map(str.strip, map(itemgetter(self.pair[0]), records)))
            tos = list(map(str.strip, map(itemgetter(self.pair[1]), records)))
            if not set(froms).isdisjoint(tos):  # else no row can name one currency twice
                found += [(n, "Currency (To)", "is the same currency as Currency (From)")
                          for n, x, y in zip(numbers, froms, tos) if x and x == y]
        if self.invoice is not None:
            has_account = (lambda r: False) if self.account is None else (lambda r: bool(r[self.account].strip()))
            found += [(n, "Payment Invoice", "must be empty when Billing Account ID is empty (an unassigned payment)")
                      for n, r in zip(numbers, records) if r[self.invoice].strip() and not has_account(r)]
        return found


@functools.lru_cache(maxsize=64)
def mass_table(action_type: str, header: tuple[str, ...]) -> _MassTable:
    """The checks of an `action_type` file with this header, cached: many files share one, and tables never change."""
    return _MassTable(MASS_ACTIONS[action_type], list(header))


def _column_valid(values: list[str], rule: Column, required: bool) -> bool:
    """True when every value of a column is fine, in C-level loops only; _valid and _explain then find which."""
    if required and not all(map(str.strip, values)):
        return False
    present = values if required else list(filter(None, values))
    if not present:
        return True
    if rule.max_len is not None and max(map(len, present)) > rule.max_len:
        return False
    if rule.kind == "enum":
        return set(present) <= set(rule.values)
    if rule.kind == "date" and _REAL_DATES.issuperset(present):
        return True  # a file's dates are mostly the few days already seen in other files
    pattern = _COLUMNS.get(rule.kind)
    if pattern is not None and not pattern.fullmatch("\0".join(present)):
        return False
    if rule.kind == "date":
        try:
            list(map(date.fromisoformat, present))
        except ValueError:
            return False
        if len(_REAL_DATES) < MAX_REMEMBERED_DATES:
            _REAL_DATES.update(present)
    return True


def _valid(value: str, rule: Column) -> bool:
    if rule.max_len is not None and len(value) > rule.max_len:
        return False
    if rule.kind == "enum":
        return value in rule.values
    pattern = _PATTERNS.get(rule.kind)
    if pattern is not None and not pattern.fullmatch(value):
        return False
    return rule.kind != "date" or _real_date(value)


def _explain(value: str, rule: Column) -> str:
    if rule.max_len is not None and len(value) > rule.max_len:
        return f"is {len(value)} characters long; at most {rule.max_len} are allowed"
    return {
        "date": f"must be a date written YYYY-MM-DD (got {value!r})",
        "amount": f"must be a positive plain decimal such as 1234.56, without thousands separators (got {value!r})",
        "currency": f"must be a 3-letter currency code such as USD (got {value!r})",
        "currency_or_id": f"must be a 3-letter currency code or a 32-character currency id (got {value!r})",
        "enum": f"must be one of {', '.join(rule.values)} (got {value!r}){_did_you_mean(value, rule.values)}",
        "invoices": f"must be written InvoiceID1:amount|InvoiceID2:amount (got {value!r})",
    }[rule.kind]


def _real_date(value: str) -> bool:
    try:
        date.fromisoformat(value)
    except ValueError:
        return False
    return True


def _did_you_mean(value: str, choices) -> str:
    by_lower = {c.strip().lower(): c.strip() for c in choices}
    close = get_close_matches(value.lower(), by_lower, n=1, cutoff=0.8)
    match = by_lower.get(value.lower()) or (by_lower[close[0]] if close else None)
    return f"; did you mean {match!r}?" if match and match != value else ""


class ObjectTable:
    """The header problems and per-batch row checks of a custom object bulk job file."""

    def __init__(self, operation: str, header: list[str]):
        names = [n.strip() for n in header]
        self.header_problems = _header_basics(header, skip_comments=False)
        self.id_index = next((i for i, n in enumerate(names) if n.lower() == "id"), None)
        system = {f.lower() for f in SYSTEM_FIELDS}
        for name in names:
            if name.lower() in system:
                self.header_problems.append((name, "is a system field; Zuora sets it, so it cannot be in the file"))
        record_id = OPERATIONS[operation].record_id
        if record_id == "required" and self.id_index is None:
            self.header_problems.append(("Id", "an update file needs an Id column holding each record's id"))
        if record_id == "forbidden" and self.id_index is not None:
            self.header_problems.append((names[self.id_index], "not allowed in a create file: "
                                                                "Zuora assigns record ids"))
            self.id_index = None

    def batch_problems(self, numbers, records: list) -> list[tuple[int, str | None, str]]:
        """(row number, "Id", message) of every Id that is not a record id."""
        column = self.id_index
        if column is None:
            return []
        values = list(map(itemgetter(column), records))
        if _UUIDS.fullmatch("\0".join(values)):
            return []
        return [(n, "Id", f"must be a record id, a 36-character UUID (got {v!r})")
                for n, v in zip(numbers, values) if not _UUID.fullmatch(v)]
