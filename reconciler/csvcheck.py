"""Content checks for spec data files (standard library only): Mass Updater CSV/zip, custom object CSV.

Files are streamed line by line (a custom object file can be 15 MB); when the caller passes a hashlib
object as `digest`, it is fed the file's bytes on the same single read, and is complete whenever no
problem is returned.
"""

from __future__ import annotations

import csv
import io
import os
import re
import zipfile
import zlib
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from difflib import get_close_matches
from pathlib import Path

from reconciler.model import Problem

MB = 1024 * 1024
MASS_ACTION_MAX_BYTES = 4 * MB
CUSTOM_OBJECT_MAX_BYTES = 15 * MB
MAX_INFLATED_BYTES = 64 * MB  # a 4 MB zip of CSV never legitimately unpacks past this
MAX_ROW_PROBLEMS = 20
ZIP_MAGIC = b"PK\x03\x04"
SYSTEM_FIELDS = ("CreatedDate", "UpdatedDate", "CreatedById", "UpdatedById")
OBJECT_TYPES = (
    "Credit Balance Adjustment", "Invoice Adjustment", "Invoice Item", "Invoice Item Adjustment", "Taxation Item",
    "Payment", "Product Rate Plan Charge", "Refund", "Revenue Schedule", "Credit Memo Item", "Debit Memo Item",
)
LINKED_TRANSACTION_TYPES = ("Invoice Item", "Invoice Item Adjustment", "Credit Memo Item", "Debit Memo Item")
PAYMENT_TYPES = ("External", "Electronic")

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}\Z")
_DECIMAL = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)\Z")
_CURRENCY = re.compile(r"[A-Za-z]{3}\Z")
_ZUORA_ID = re.compile(r"[0-9a-fA-F]{32}\Z")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z")


@dataclass(frozen=True)
class _Column:
    max_len: int | None = None
    kind: str | None = None  # date | amount | currency | currency_or_id | invoices | enum
    values: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Action:
    required: tuple[str, ...] = ()
    one_of: tuple[str, ...] = ()  # at least one of these columns, and a value in one of them per row
    columns: dict = field(default_factory=dict)


_GROUP = {"Group ID": _Column(255)}
ACTIONS = {
    "ImportFXRate": _Action(
        required=("Provider Exchange Rate Date", "Currency (From)", "Currency (To)", "Exchange Rate"),
        columns={**_GROUP, "Provider Exchange Rate Date": _Column(kind="date"), "Currency (From)": _Column(kind="currency"),
                 "Currency (To)": _Column(kind="currency"), "Exchange Rate": _Column(kind="amount")},
    ),
    "UpdateAccountingCode": _Action(
        required=("Object Key", "Object Type"),
        columns={**_GROUP, "Object Key": _Column(32), "Object Type": _Column(kind="enum", values=OBJECT_TYPES),
                 "Deferred Revenue Accounting Code": _Column(100)},
    ),
    "CreateRevenueSchedule": _Action(
        one_of=("Subscription Charge Key", "Linked Transaction Key"),
        columns={**_GROUP, "Subscription Charge Key": _Column(32),
                 "Linked Transaction Type": _Column(kind="enum", values=LINKED_TRANSACTION_TYPES)},
    ),
    "UpdateRevenueSchedule": _Action(
        required=("Revenue Schedule Number",),
        columns={**_GROUP, "Revenue Schedule Number": _Column(100), "Revenue Schedule Reference ID": _Column(60),
                 "Revenue Schedule Notes": _Column(2000)},
    ),
    "DeleteRevenueSchedule": _Action(required=("Revenue Schedule Number",),
                                     columns={**_GROUP, "Revenue Schedule Number": _Column(50)}),
    "MPU": _Action(
        required=("Payment Amount", "Currency", "Payment Date", "Payment Method ID"),
        columns={**_GROUP, "Payment Amount": _Column(kind="amount"), "Currency": _Column(kind="currency_or_id"),
                 "Payment Date": _Column(kind="date"), "Payment Method ID": _Column(32), "Billing Account ID": _Column(32),
                 "Payment Invoice": _Column(kind="invoices"), "Payment Comment": _Column(255),
                 "Payment Type": _Column(kind="enum", values=PAYMENT_TYPES), "Gateway ID": _Column(32)},
    ),
}


class _Unreadable(Exception):
    """The rest of the file cannot be read as CSV; the message says why."""


def check_mass_action_file(path: Path, action_type: str, display: str, *, digest=None) -> list[Problem]:
    """Every problem of a Mass Updater upload file (CSV, or a zip holding one CSV) for `action_type`."""
    action = ACTIONS.get(action_type)
    if action is None:
        return [Problem(display, f"unknown action type {action_type!r}")]
    return _check_file(Path(path), display, MASS_ACTION_MAX_BYTES, "Mass Updater", digest,
                       lambda header: _MassTable(action, header))


def check_custom_object_file(path: Path, operation: str, display: str, *, digest=None) -> list[Problem]:
    """Every problem of a custom object bulk job CSV for `operation` (create or update)."""
    if operation not in ("create", "update"):
        return [Problem(display, f"a custom object {operation} job takes no file")]
    return _check_file(Path(path), display, CUSTOM_OBJECT_MAX_BYTES, "custom object", digest,
                       lambda header: _ObjectTable(operation, header))


def _check_file(path: Path, display: str, limit: int, what: str, digest, table) -> list[Problem]:
    try:
        size = os.stat(path).st_size
        if size > limit:
            return [Problem(display, f"file is {size / MB:.1f} MB; {what} files may be at most {limit // MB} MB")]
        with open(path, "rb") as stream:
            head = stream.read(4)
            if head == ZIP_MAGIC:
                if what != "Mass Updater":
                    return [Problem(display, "is a zip archive; custom object jobs take a plain UTF-8 CSV file")]
                data = head + stream.read()
                if digest is not None:
                    digest.update(data)
                return _check_zip(data, display, table)
            if path.suffix.lower() == ".zip":
                return [Problem(display, "is named .zip but is not a zip archive")]
            stream.seek(0)
            return _check_table(_lines(stream, digest, None), display, table)
    except OSError as err:
        return [Problem(display, f"cannot read the file: {err.strerror or err}")]


def _check_zip(data: bytes, display: str, table) -> list[Problem]:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = [m for m in archive.infolist() if not m.is_dir()]
            if len(members) != 1 or not members[0].filename.lower().endswith(".csv"):
                names = ", ".join(m.filename for m in members[:5]) or "nothing"
                return [Problem(display, f"a zip must hold exactly one .csv file (it holds {names}); "
                                         "an Excel workbook must be saved as CSV first")]
            if members[0].flag_bits & 0x1:
                return [Problem(display, "the zip is encrypted; Zuora cannot read it")]
            with archive.open(members[0]) as member:
                return _check_table(_lines(member, None, MAX_INFLATED_BYTES), display, table)
    except (zipfile.BadZipFile, zlib.error, NotImplementedError, RuntimeError, EOFError, ValueError, OSError) as err:
        return [Problem(display, f"not a readable zip archive ({err})")]


def _lines(stream, digest, cap: int | None):
    """Decoded text lines; raises _Unreadable for non-UTF-8 or binary content, or past `cap` bytes."""
    total = 0
    number = 0
    while True:
        raw = stream.readline() if cap is None else stream.readline(cap - total + 1)
        if not raw:
            return
        number += 1
        total += len(raw)
        if cap is not None and total > cap:
            raise _Unreadable(f"unpacks to more than {cap // MB} MB")
        if digest is not None:
            digest.update(raw)
        if b"\0" in raw:
            raise _Unreadable(f"line {number} contains NUL bytes: a binary file, not a CSV")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise _Unreadable(f"not UTF-8 (invalid byte 0x{raw[err.start]:02x} on line {number}); "
                              "save the file as UTF-8") from None
        yield text[1:] if number == 1 and text.startswith("\ufeff") else text


def _check_table(lines, display: str, make_table) -> list[Problem]:
    problems: list[Problem] = []
    more = rows = reported = 0
    reader = csv.reader(lines, strict=True)
    try:
        header = next(reader, None)
        if header is None or not any(name.strip() for name in header):
            return [Problem(display, "the file is empty; the first row must be the header", row=1)]
        table = make_table(header)
        problems.extend(Problem(display, message, row=1, path=column) for column, message in table.header_problems)
        for number, record in enumerate(reader, start=2):
            if not record:
                continue  # a blank line
            rows += 1
            if len(record) != len(header):
                found = [(None, f"has {len(record)} fields, the header has {len(header)}")]
            else:
                found = table.row_problems(record)
            for column, message in found:
                if reported < MAX_ROW_PROBLEMS:
                    problems.append(Problem(display, message, row=number, path=column or ""))
                    reported += 1
                else:
                    more += 1
    except csv.Error as err:
        problems.append(Problem(display, f"malformed CSV near line {reader.line_num}: {err}"))
        return problems
    except _Unreadable as err:
        problems.append(Problem(display, str(err)))
        return problems
    if rows == 0:
        problems.append(Problem(display, "no data rows: the file holds only a header"))
    if more:
        problems.append(Problem(display, f"and {more} more row problem{'s' * (more != 1)}"))
    return problems


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
    def __init__(self, action: _Action, header: list[str]):
        self.action = action
        names = [n.strip() for n in header]
        self.index = {n: i for i, n in reversed(list(enumerate(names))) if n and not n.startswith("#")}
        self.header_problems = _header_basics(header, skip_comments=True)
        for column in action.required:
            if column not in self.index:
                self.header_problems.append((column, "required column is missing" + _did_you_mean(column, header)))
        if action.one_of and not any(c in self.index for c in action.one_of):
            a, b = action.one_of
            self.header_problems.append((a, f"needs a {a!r} or a {b!r} column"))

    def row_problems(self, record: list[str]) -> list[tuple[str | None, str]]:
        found = []
        for column in self.action.required:
            if column in self.index and not record[self.index[column]].strip():
                found.append((column, "required value is empty"))
        for column, rule in self.action.columns.items():
            if column in self.index and record[self.index[column]].strip():
                message = _check_value(record[self.index[column]], rule)
                if message:
                    found.append((column, message))
        get = {c: record[i].strip() for c, i in self.index.items()}.get
        if self.action.one_of and any(c in self.index for c in self.action.one_of):
            if not any(get(c) for c in self.action.one_of):
                found.append((None, f"needs a {self.action.one_of[0]} or a {self.action.one_of[1]}"))
        if get("Currency (From)") and get("Currency (From)") == get("Currency (To)"):
            found.append(("Currency (To)", "is the same currency as Currency (From)"))
        if get("Payment Invoice") and "Billing Account ID" in self.action.columns and not get("Billing Account ID"):
            found.append(("Payment Invoice", "must be empty when Billing Account ID is empty (an unassigned payment)"))
        return found


def _check_value(value: str, rule: _Column) -> str | None:
    if rule.max_len is not None and len(value) > rule.max_len:
        return f"is {len(value)} characters long; at most {rule.max_len} are allowed"
    if rule.kind == "date":
        if not _DATE.match(value) or not _real_date(value):
            return f"must be a date written YYYY-MM-DD (got {value!r})"
    elif rule.kind == "amount":
        if not _DECIMAL.match(value) or Decimal(value) <= 0:
            return f"must be a positive plain decimal such as 1234.56, without thousands separators (got {value!r})"
    elif rule.kind == "currency":
        if not _CURRENCY.match(value):
            return f"must be a 3-letter currency code such as USD (got {value!r})"
    elif rule.kind == "currency_or_id":
        if not (_CURRENCY.match(value) or _ZUORA_ID.match(value)):
            return f"must be a 3-letter currency code or a 32-character currency id (got {value!r})"
    elif rule.kind == "enum":
        if value not in rule.values:
            return f"must be one of {', '.join(rule.values)} (got {value!r}){_did_you_mean(value, rule.values)}"
    elif rule.kind == "invoices":
        for part in value.split("|"):
            invoice, _, amount = part.partition(":")
            if not invoice.strip() or not _DECIMAL.match(amount):
                return f"must be written InvoiceID1:amount|InvoiceID2:amount (got {value!r})"
    return None


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


class _ObjectTable:
    def __init__(self, operation: str, header: list[str]):
        names = [n.strip() for n in header]
        self.header_problems = _header_basics(header, skip_comments=False)
        self.id_index = next((i for i, n in enumerate(names) if n.lower() == "id"), None)
        system = {f.lower() for f in SYSTEM_FIELDS}
        for name in names:
            if name.lower() in system:
                self.header_problems.append((name, "is a system field; Zuora sets it, so it cannot be in the file"))
        if operation == "update" and self.id_index is None:
            self.header_problems.append(("Id", "an update file needs an Id column holding each record's id"))
        if operation == "create" and self.id_index is not None:
            self.header_problems.append((names[self.id_index], "not allowed in a create file: Zuora assigns record ids"))
            self.id_index = None

    def row_problems(self, record: list[str]) -> list[tuple[str | None, str]]:
        if self.id_index is not None and not _UUID.match(record[self.id_index].strip()):
            return [("Id", f"must be a record id, a 36-character UUID (got {record[self.id_index]!r})")]
        return []
