"""Content checks for spec data files (standard library only): Mass Updater CSV/zip, custom object CSV.

Files are streamed line by line (a custom object file can be 15 MB); when the caller passes a hashlib
object as `digest`, it is fed the file's bytes on the same single read, and is complete whenever no
problem is returned. What the rows must hold, per action type or operation, is in columns.py.
"""

from __future__ import annotations

import codecs
import csv
import io
import itertools
import os
import zipfile
import zlib
from pathlib import Path

from reconciler.actions import MASS_ACTIONS, OPERATIONS
from reconciler.model import Problem
from reconciler.spec.columns import ObjectTable, mass_table

MB = 1024 * 1024
# Zuora's "4 MB" (Mass Updater, the file uploaded: a zip's own size) and "15 MB" (a custom object CSV) say
# neither 10^6 nor 2^20 bytes; the checks take the smaller reading, so no file they pass is too big either way.
MASS_ACTION_MAX_BYTES = 4_000_000
CUSTOM_OBJECT_MAX_BYTES = 15_000_000
MAX_INFLATED_BYTES = 64 * MB  # a 4 MB zip of CSV never legitimately unpacks past this
MAX_ROW_PROBLEMS = 20
BLOCK = 1024 * 1024
BATCH_ROWS = 4096
ZIP_MAGIC = b"PK\x03\x04"


class _Unreadable(Exception):
    """The rest of the file cannot be read as CSV; the message says why."""


def check_mass_action_file(path: Path, action_type: str, display: str, *, digest=None,
                           observe=None, content: bytes | None = None) -> list[Problem]:
    """Every problem of a Mass Updater upload file (CSV, or a zip holding one CSV) for `action_type`.

    `observe(header)`, when given, returns an object whose `add(rows)` is fed every batch of rows checked
    (a dataset.summary.Tally), so the file's digest needs no second read. `content`: the file's bytes, when
    the caller has read them already (they are checked instead of reading `path`)."""
    if action_type not in MASS_ACTIONS:
        return [Problem(display, f"unknown action type {action_type!r}")]
    return _check_file(os.fspath(path), display, "Mass Updater", MASS_ACTION_MAX_BYTES, True, digest,
                       _observed(lambda header: mass_table(action_type, tuple(header)), observe), content)


def check_custom_object_file(path: Path, operation: str, display: str, *, digest=None,
                             observe=None, content: bytes | None = None) -> list[Problem]:
    """Every problem of a custom object bulk job CSV for `operation` (create or update); `observe` as above."""
    if operation not in OPERATIONS or not OPERATIONS[operation].takes_file:
        return [Problem(display, f"a custom object {operation} job takes no file")]
    return _check_file(os.fspath(path), display, "custom object", CUSTOM_OBJECT_MAX_BYTES, False, digest,
                       _observed(lambda header: ObjectTable(operation, header), observe), content)


class _Observed:
    """A table's checks that also feed each batch of rows to an observer."""

    def __init__(self, table, observer):
        self.table, self.observer = table, observer
        self.header_problems = table.header_problems

    def batch_problems(self, numbers, records: list):
        self.observer.add(records)
        return self.table.batch_problems(numbers, records)


def _observed(make_table, observe):
    if observe is None:
        return make_table
    return lambda header: _Observed(make_table(header), observe(header))


def _check_file(path: str, display: str, what: str, limit: int, zip_ok: bool, digest, table,
                content: bytes | None = None) -> list[Problem]:
    try:
        with open(path, "rb") if content is None else io.BytesIO(content) as stream:
            size = os.fstat(stream.fileno()).st_size if content is None else len(content)
            if size > limit:
                return [Problem(display, f"file is {size:,} bytes; {what} files may be at most {limit // 1_000_000} MB "
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
