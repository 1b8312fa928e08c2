"""Reading archived job results: the rows of a Mass Updater response file, the failed rows of it or of a
custom object /errors.

Row numbers count the header as row 1, as Zuora's custom object /errors does; for a Mass Updater
response file, data row i (from 0) is row i + 2. The response file repeats every input column and
appends Success, Error Message and the action type's own columns (reference A.4, A.5), so the input
columns are the response file's columns minus those.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from reconciler.actions import DEFAULT_RESULT_COLUMNS, MASS_ACTIONS
from reconciler.errors import ResultError

RESPONSE_COLUMNS = {name: action.result_columns for name, action in MASS_ACTIONS.items()}
DEFAULT_RESPONSE_COLUMNS = DEFAULT_RESULT_COLUMNS
# The columns that say which record a row is about, shown beside each failed row.
KEY_COLUMNS = {name: action.natural_key for name, action in MASS_ACTIONS.items()}
SYSTEM_FIELDS = frozenset({"CreatedById", "CreatedDate", "UpdatedById", "UpdatedDate", "type"})
MAX_CSV_BYTES = 64 * 1024 * 1024  # a 4 MB Mass Updater upload never legitimately inflates past this


@dataclass(frozen=True)
class FailedRow:
    """One rejected row: where it was in the input file, which record, and why."""

    row: int
    key: dict
    message: str
    code: object = None
    values: dict = field(default_factory=dict)  # Mass Updater: the row's input columns
    record: dict | None = None  # custom object: the record as /errors returned it


@dataclass(frozen=True)
class Failures:
    """Every failed row of one job's result, with the input columns when the result holds them."""

    rows: tuple[FailedRow, ...]
    total: int | None  # rows in the result file (Mass Updater)
    unprocessed: int = 0  # Mass Updater rows with a blank Success: the job stopped before them
    columns: tuple[str, ...] = ()


def mass_updater_rows(path: Path, action_type: str) -> tuple[tuple[str, ...], list[tuple[dict[str, str], str]]]:
    """The input columns of a zipped Mass Updater response file, and each row's input values with its Success."""
    header, data, added, inputs = _response_layout(path, action_type)
    rows = []
    for cells in data:
        cells = cells + [""] * (len(header) - len(cells))
        rows.append(({header[i]: cells[i] for i in inputs}, cells[added["Success"]].strip()))
    return tuple(header[i] for i in inputs), rows


def _response_layout(path: Path, action_type: str):
    header, data = _read_response(path)
    wanted = RESPONSE_COLUMNS.get(action_type, DEFAULT_RESPONSE_COLUMNS)
    # The response columns are appended, so the last column of each name is the response's own.
    added = {name: max(i for i, column in enumerate(header) if column == name) for name in wanted if name in header}
    if "Success" not in added:
        raise ResultError(f"{path}: the response file has no Success column; it is not a Mass Updater result")
    return header, data, added, [i for i in range(len(header)) if i not in added.values()]


def mass_updater_failures(path: Path, action_type: str) -> Failures:
    """Rows whose Success is N in a zipped Mass Updater response file."""
    header, data, added, inputs = _response_layout(path, action_type)
    columns = tuple(header[i] for i in inputs)
    keys = [c for c in ("Group ID", *KEY_COLUMNS.get(action_type, ())) if c in columns]
    rows, unprocessed = [], 0
    for number, cells in enumerate(data, start=2):
        cells = cells + [""] * (len(header) - len(cells))
        success = cells[added["Success"]].strip()
        if not success:
            unprocessed += 1
        if success != "N":
            continue
        values = {header[i]: cells[i] for i in inputs}
        message = cells[added["Error Message"]] if "Error Message" in added else ""
        rows.append(FailedRow(number, {k: values[k] for k in keys if values[k].strip()}, message, values=values))
    return Failures(tuple(rows), len(data), unprocessed, columns)


def custom_object_failures(path: Path) -> Failures:
    """The rejected rows of an archived custom object /errors file."""
    try:
        document = json.loads(path.read_bytes())
    except OSError as exc:
        raise ResultError(f"{path}: cannot read the archived result ({exc.strerror or exc})") from exc
    except ValueError as exc:
        raise ResultError(f"{path}: the archived result is not JSON ({exc}); move it away so it is fetched "
                              "again") from exc
    errors = document.get("errors") if isinstance(document, dict) else None
    if not isinstance(errors, list):
        raise ResultError(f"{path}: the archived result has no `errors` list")
    rows = []
    for item in errors:
        if not isinstance(item, dict):
            continue
        record = item["record"] if isinstance(item.get("record"), dict) else {}
        row = item["row"] if isinstance(item.get("row"), int) else 0
        rows.append(FailedRow(row, _record_key(record), str(item.get("message") or ""), item.get("code"),
                              record=record))
    return Failures(tuple(sorted(rows, key=lambda r: r.row)), None)


def _record_key(record: dict) -> dict:
    if record.get("Id"):
        return {"Id": record["Id"]}
    fields = [(k, v) for k, v in record.items() if k not in SYSTEM_FIELDS and k != "Id" and v not in (None, "")]
    return dict(fields[:2])


def failed_rows_table(failures: Failures, *, kind_is_mass: bool, operation: str | None,
                      input_file: Path | None, input_sha256: str | None) -> tuple[list[str], list[list[str]], str]:
    """The header and rows to write for --failed-rows, and where the columns came from."""
    if kind_is_mass:
        shown = list(failures.columns)
        return shown, [[r.values.get(c, "") for c in shown] for r in failures.rows], "the response file"
    if input_file is not None and input_sha256 and _sha256(input_file) == input_sha256:
        header, by_number = _read_input(input_file)
        if all(r.row in by_number for r in failures.rows):
            return header, [by_number[r.row] for r in failures.rows], "the original input file"
    # The input file changed or is gone: rebuild the rows from the records /errors returned.
    columns: list[str] = []
    for r in failures.rows:
        for name in r.record or {}:
            if name not in SYSTEM_FIELDS and name not in columns and (name != "Id" or operation == "update"):
                columns.append(name)
    rows = [[_text((r.record or {}).get(c)) for c in columns] for r in failures.rows]
    return columns, rows, "the records in the job's errors (the input file changed since the job ran)"


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _read_response(path: Path) -> tuple[list[str], list[list[str]]]:
    try:
        with zipfile.ZipFile(path) as archive:
            entries = [i for i in archive.infolist() if not i.is_dir() and i.filename.lower().endswith(".csv")]
            if len(entries) != 1 or entries[0].file_size > MAX_CSV_BYTES:
                raise ResultError(f"{path}: the response file should hold exactly one CSV of at most "
                                      f"{MAX_CSV_BYTES // (1024 * 1024)} MB")
            text = archive.read(entries[0]).decode("utf-8-sig")
        rows = list(csv.reader(io.StringIO(text, newline="")))
    except ResultError:
        raise
    except (OSError, zipfile.BadZipFile, UnicodeDecodeError, csv.Error, ValueError) as exc:
        raise ResultError(f"{path}: cannot read the archived response file ({exc}); move it away so it is "
                              "fetched again") from exc
    rows = [row for row in rows if any(cell.strip() for cell in row)]
    if not rows:
        raise ResultError(f"{path}: the response file is empty")
    return [cell.strip() for cell in rows[0]], rows[1:]


def _read_input(path: Path) -> tuple[list[str], dict[int, list[str]]]:
    """A custom object input CSV: its header and its rows by row number (header = 1), as Zuora numbers them."""
    try:
        table = list(csv.reader(io.StringIO(path.read_bytes().decode("utf-8-sig"), newline="")))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ResultError(f"{path}: cannot read the input file ({exc})") from exc
    if not table:
        return [], {}
    return table[0], dict(enumerate(table[1:], start=2))


def _sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None
