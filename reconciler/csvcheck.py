"""Content checks for spec data files (standard library only): Mass Updater CSV/zip, custom object CSV.

Files are streamed line by line (a custom object file can be 15 MB); when the caller passes a hashlib
object as `digest`, it is fed the file's bytes on the same single read, and is complete whenever no
problem is returned.
"""

from __future__ import annotations

import codecs
import csv
import functools
import io
import itertools
import os
import re
import zipfile
import zlib
from dataclasses import dataclass, field
from datetime import date
from difflib import get_close_matches
from operator import itemgetter
from pathlib import Path

from reconciler.model import Problem

MB = 1024 * 1024
MASS_ACTION_MAX_BYTES = 4 * MB
CUSTOM_OBJECT_MAX_BYTES = 15 * MB
MAX_INFLATED_BYTES = 64 * MB  # a 4 MB zip of CSV never legitimately unpacks past this
MAX_ROW_PROBLEMS = 20
BLOCK = 1024 * 1024
BATCH_ROWS = 4096
ZIP_MAGIC = b"PK\x03\x04"
SYSTEM_FIELDS = ("CreatedDate", "UpdatedDate", "CreatedById", "UpdatedById")
OBJECT_TYPES = (
    "Credit Balance Adjustment", "Invoice Adjustment", "Invoice Item", "Invoice Item Adjustment", "Taxation Item",
    "Payment", "Product Rate Plan Charge", "Refund", "Revenue Schedule", "Credit Memo Item", "Debit Memo Item",
)
LINKED_TRANSACTION_TYPES = ("Invoice Item", "Invoice Item Adjustment", "Credit Memo Item", "Debit Memo Item")
PAYMENT_TYPES = ("External", "Electronic")

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
# A whole column in one regex call: values joined by NUL, which _lines has already refused in the file.
_COLUMNS = {kind: re.compile(rf"(?:{p.pattern})(?:\0(?:{p.pattern}))*") for kind, p in _PATTERNS.items()}
_REAL_DATES: set[str] = set()  # values that passed the date checks, written YYYY-MM-DD
MAX_REMEMBERED_DATES = 100_000
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_UUIDS = re.compile(rf"{_UUID.pattern}(?:\0{_UUID.pattern})*")


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
        columns={**_GROUP, "Provider Exchange Rate Date": _Column(kind="date"),
                 "Currency (From)": _Column(kind="currency"),
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
                 "Payment Date": _Column(kind="date"), "Payment Method ID": _Column(32),
                 "Billing Account ID": _Column(32),
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
    return _check_file(os.fspath(path), display, "Mass Updater", MASS_ACTION_MAX_BYTES, True, digest,
                       lambda header: _mass_table(action_type, tuple(header)))


def check_custom_object_file(path: Path, operation: str, display: str, *, digest=None) -> list[Problem]:
    """Every problem of a custom object bulk job CSV for `operation` (create or update)."""
    if operation not in ("create", "update"):
        return [Problem(display, f"a custom object {operation} job takes no file")]
    return _check_file(os.fspath(path), display, "custom object", CUSTOM_OBJECT_MAX_BYTES, False, digest,
                       lambda header: _ObjectTable(operation, header))


def _check_file(path: str, display: str, what: str, limit: int, zip_ok: bool, digest, table) -> list[Problem]:
    try:
        with open(path, "rb") as stream:
            size = os.fstat(stream.fileno()).st_size
            if size > limit:
                return [Problem(display, f"file is {size:,} bytes; {what} files may be at most {limit // MB} MB "
                                         f"({limit:,} bytes)")]
            # Asking for one byte more than the size tells whether this read reached the end; a 1 MB
            # read of a small file would allocate the whole megabyte first.
            first = stream.read(min(BLOCK, size + 1))
            if first[:4] == ZIP_MAGIC:
                if not zip_ok:
                    return [Problem(display, "is a zip archive; custom object jobs take a plain UTF-8 CSV file")]
                data = first + stream.read()
                if digest is not None:
                    digest.update(data)
                return _check_zip(data, display, table)
            if os.path.splitext(path)[1].lower() == ".zip":
                return [Problem(display, "is named .zip but is not a zip archive")]
            if len(first) <= size < BLOCK:  # the whole file, as most are: no incremental decoding
                return _check_table(lambda: _whole_lines(first, digest), display, table)
            return _check_table(lambda: _lines(stream, digest, None, first), display, table)
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
                return _check_table(lambda: _lines(member, None, MAX_INFLATED_BYTES), display, table)
    except (zipfile.BadZipFile, zlib.error, NotImplementedError, RuntimeError, EOFError, ValueError, OSError) as err:
        return [Problem(display, f"not a readable zip archive ({err})")]


def _whole_lines(data: bytes, digest):
    """_lines for a file read whole (data shorter than BLOCK): the same lines from one decode."""
    if digest is not None:
        digest.update(data)
    if b"\0" in data:
        line = data.count(b"\n", 0, data.index(b"\0")) + 1
        raise _Unreadable(f"line {line} contains NUL bytes: a binary file, not a CSV")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:  # _lines tells where, after the rows before it, as always
        return _lines(io.BytesIO(data), None, None)
    if text.startswith("\ufeff"):
        text = text[1:]  # a byte order mark is fine
    return io.StringIO(text, newline="\n")  # lines end at "\n" only and keep it, as _lines yields them


def _lines(stream, digest, cap: int | None, first: bytes = b""):
    """Decoded text lines, read a block at a time; _Unreadable for binary or non-UTF-8 content, or past `cap`."""
    decoder = codecs.getincrementaldecoder("utf-8")()  # strict: Zuora wants UTF-8
    total = newlines = 0
    carry = ""
    block = first or stream.read(BLOCK)
    while True:
        total += len(block)
        if cap is not None and total > cap:
            raise _Unreadable(f"unpacks to more than {cap // MB} MB" if cap >= MB else f"unpacks to more than {cap:,} bytes")
        if digest is not None:
            digest.update(block)
        if b"\0" in block:
            line = newlines + block.count(b"\n", 0, block.index(b"\0")) + 1
            raise _Unreadable(f"line {line} contains NUL bytes: a binary file, not a CSV")
        try:
            text = decoder.decode(block, final=not block)
        except UnicodeDecodeError as err:
            line = newlines + block.count(b"\n", 0, err.start) + 1
            raise _Unreadable(f"not UTF-8 (invalid byte 0x{err.object[err.start]:02x} on line {line}); "
                              "save the file as UTF-8") from None
        if newlines == 0 and not carry and text.startswith("\ufeff"):
            text = text[1:]  # a byte order mark is fine
        newlines += block.count(b"\n")
        if not block:
            break
        # csv.reader ends a record at the end of each string, so hand it whole lines only.
        *lines, carry = (carry + text).split("\n")
        for line in lines:
            yield line + "\n"
        block = stream.read(BLOCK if cap is None else min(BLOCK, cap - total + 1))
    if carry + text:
        yield carry + text


def _check_table(open_lines, display: str, make_table) -> list[Problem]:
    """Every problem of a CSV whose text lines `open_lines()` returns (it may raise _Unreadable)."""
    problems: list[Problem] = []
    counts = {"rows": 0, "reported": 0, "more": 0}
    reader = None

    def report(found: list) -> None:
        for number, column, message in sorted(found, key=lambda f: f[0]):
            if counts["reported"] < MAX_ROW_PROBLEMS:
                problems.append(Problem(display, message, row=number, path=column or ""))
                counts["reported"] += 1
            else:
                counts["more"] += 1

    try:
        reader = csv.reader(open_lines(), strict=True)
        header = next(reader, None)
        if header is None or not any(name.strip() for name in header):
            return [Problem(display, "the file is empty; the first row must be the header", row=1)]
        table = make_table(header)
        problems.extend(Problem(display, message, row=1, path=column) for column, message in table.header_problems)
        number = 2  # of the next record: the header is row 1
        while True:
            # Rows are checked a batch at a time, column by column, so the all-valid case stays fast.
            chunk = list(itertools.islice(reader, BATCH_ROWS))
            if chunk and len(set(map(len, chunk))) == 1 and len(chunk[0]) == len(header):
                counts["rows"] += len(chunk)  # no blank line, no short or long record: one batch
                report(table.batch_problems(range(number, number + len(chunk)), chunk))
                number += len(chunk)
            else:  # the batches from here on are those the row-by-row walk below forms
                if chunk:
                    _walk(itertools.chain(chunk, reader), number, len(header), table, counts, report)
                break
    except csv.Error as err:
        problems.append(Problem(display, f"malformed CSV near line {reader.line_num}: {err}"))
        return problems
    except _Unreadable as err:
        problems.append(Problem(display, str(err)))
        return problems
    if counts["rows"] == 0:
        problems.append(Problem(display, "no data rows: the file holds only a header"))
    if counts["more"]:
        problems.append(Problem(display, f"and {counts['more']} more row problem{'s' * (counts['more'] != 1)}"))
    return problems


def _walk(records, number: int, width: int, table, counts: dict, report) -> None:
    """Records one at a time: blank lines skipped, wrong field counts reported, the rest checked in batches."""
    numbers: list[int] = []
    batch: list = []
    pending: list = []
    for number, record in enumerate(records, start=number):
        if not record:
            continue  # a blank line
        counts["rows"] += 1
        if len(record) != width:
            pending.append((number, None, f"has {len(record)} fields, the header has {width}"))
        else:
            numbers.append(number)
            batch.append(record)
        if len(batch) >= BATCH_ROWS:
            report(pending + table.batch_problems(numbers, batch))
            numbers, batch, pending = [], [], []
    report(pending + table.batch_problems(numbers, batch))


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
        names = [n.strip() for n in header]
        index = {n: i for i, n in reversed(list(enumerate(names))) if n and not n.startswith("#")}
        self.header_problems = _header_basics(header, skip_comments=True)
        for column in action.required:
            if column not in index:
                self.header_problems.append((column, "required column is missing" + _did_you_mean(column, header)))
        if action.one_of and not any(c in index for c in action.one_of):
            a, b = action.one_of
            self.header_problems.append((a, f"needs a {a!r} or a {b!r} column"))
        self.columns = [(index[c], c, rule, c in action.required) for c, rule in action.columns.items() if c in index]
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
def _mass_table(action_type: str, header: tuple[str, ...]) -> _MassTable:
    """One table per header seen: many files of a repo share theirs. Tables are never changed after init."""
    return _MassTable(ACTIONS[action_type], list(header))


def _column_valid(values: list[str], rule: _Column, required: bool) -> bool:
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


def _valid(value: str, rule: _Column) -> bool:
    if rule.max_len is not None and len(value) > rule.max_len:
        return False
    if rule.kind == "enum":
        return value in rule.values
    pattern = _PATTERNS.get(rule.kind)
    if pattern is not None and not pattern.fullmatch(value):
        return False
    return rule.kind != "date" or _real_date(value)


def _explain(value: str, rule: _Column) -> str:
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
