"""Mass Updater files: read an uploaded CSV or zip (sniffed by content), write the zipped response.

Inflation is capped at INFLATED_LIMIT (16 MiB): a zip whose CSV inflates past it is a file-level
failure ("zip bomb"), like a zip holding anything but exactly one .csv, or text that is not UTF-8.

The response file is "identical to the file you uploaded, with additional columns" (reference A.4):
each record keeps its own text (a byte order mark, the quoting of every field, its CRLF, LF or CR and
a missing final newline) and gets the result columns appended before its line ending. Blank lines stay
as they are; a record with fewer fields than the header is padded with empty ones, and one with more
is cut to the header's width (written again, the only record whose text changes), so every result
column stays under its name.
"""

from __future__ import annotations

import csv
import io
import re
import time
import zipfile
import zlib

INFLATED_LIMIT = 16 * 1024 * 1024
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a local file header, or an empty archive's end record
_LINES = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+\Z")  # physical lines, each with its own ending


class FileProblem(Exception):
    """A file-level problem: the mass action fails without processing any row."""


def read_table(data: bytes) -> tuple[list[str], list[list[str]], str]:
    """The header, data rows and CSV text (a BOM kept) of an uploaded file; FileProblem if it cannot be read."""
    text = decode(unzip(data) if data[:4] in ZIP_MAGIC else data)
    try:
        rows = [cells for cells, _, _ in records(text)]
    except csv.Error as err:
        raise FileProblem(f"The file is not a readable CSV: {err}") from None
    rows = [row for row in rows if _filled(row)]
    if not rows:
        raise FileProblem("The file has no header row")
    return [cell.strip() for cell in rows[0]], rows[1:], text


def records(text: str) -> list[tuple[list[str], str, str]]:
    """Each CSV record of `text` as (cells, its text without the line ending, the line ending); a quoted
    field's newlines stay inside its record. A leading byte order mark is in the first record's text only."""
    lines = _LINES.findall(text)
    reader = csv.reader(iter(lines))
    found, used = [], 0
    for cells in reader:
        raw = "".join(lines[used:reader.line_num])
        used = reader.line_num
        body = raw.rstrip("\r\n")
        if cells and not found:
            cells[0] = cells[0].removeprefix("\ufeff")
        found.append((cells, body, raw[len(body):]))
    return found


def _filled(cells: list[str]) -> bool:
    return any(cell.strip() for cell in cells)


def unzip(data: bytes) -> bytes:
    """The single CSV inside a zip archive, inflated at most INFLATED_LIMIT bytes."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            entries = [
                info for info in archive.infolist()
                if not info.is_dir() and not info.filename.startswith("__MACOSX/")
            ]
            if len(entries) != 1 or not entries[0].filename.lower().endswith(".csv"):
                names = ", ".join(info.filename for info in entries) or "nothing"
                raise FileProblem(f"The zip file must contain exactly one .csv file; it contains {names}")
            entry = entries[0]
            if entry.flag_bits & 0x1:
                raise FileProblem("The zip file is encrypted")
            if entry.file_size > INFLATED_LIMIT:
                raise FileProblem(f"The zipped CSV inflates past {INFLATED_LIMIT} bytes")
            with archive.open(entry) as handle:
                content = handle.read(INFLATED_LIMIT + 1)
    except FileProblem:
        raise
    except (zipfile.BadZipFile, zlib.error, NotImplementedError, RuntimeError, EOFError, OSError, ValueError) as err:
        raise FileProblem(f"The zip file cannot be read: {err}") from None
    if len(content) > INFLATED_LIMIT:
        raise FileProblem(f"The zipped CSV inflates past {INFLATED_LIMIT} bytes")
    return content


def decode(data: bytes) -> str:
    """UTF-8 text (a BOM is allowed, and kept); anything else is a file-level problem."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise FileProblem(f"The file is not UTF-8 encoded (byte {err.start})") from None
    if "\x00" in text:
        raise FileProblem("The file contains NUL characters; it is not a CSV text file")
    return text


def response_csv(text: str, added: list[str], results: list[list[str]]) -> str:
    """The uploaded CSV `text` with the `added` columns appended: `results[i]` for data row i (blank
    lines and whitespace-only records, which are not rows, kept as they are)."""
    out, rows, width = [], iter(results), None
    for cells, body, ending in records(text):
        if not _filled(cells):
            out.append(body + ending)
            continue
        if width is None:  # the header
            width, values = len(cells), added
        else:
            values = next(rows, [""] * len(added))
            if len(cells) > width:  # the only record whose own text cannot stay: cut to the header's width
                body = _joined(cells[:width])
            else:
                body += "," * (width - len(cells))
        out.append(f"{body},{_joined(values)}{ending}")
    return "".join(out)


def _joined(values: list[str]) -> str:
    """Fields as csv quotes them when needed (commas, quotes, line breaks)."""
    line = io.StringIO()
    csv.writer(line, lineterminator="").writerow(values)
    return line.getvalue()


def legacy_csv(header: list[str], rows: list[list[str]]) -> str:
    """A CSV written afresh (CRLF, minimal quoting): the response of a job stored before its text was kept."""
    text = io.StringIO()
    csv.writer(text, lineterminator="\r\n").writerows([header, *rows])
    return text.getvalue()


def response_zip(name: str, text: str, ended_at: float) -> bytes:
    """A zip holding one CSV of `text` (UTF-8); deterministic bytes for the same input."""
    stamp = time.gmtime(max(ended_at, 315532800))[:6]  # zip dates start in 1980
    info = zipfile.ZipInfo(name, date_time=stamp)
    info.compress_type = zipfile.ZIP_DEFLATED
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(info, text.encode("utf-8"))
    return buffer.getvalue()
