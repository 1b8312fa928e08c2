"""Mass Updater files: read an uploaded CSV or zip (sniffed by content), write the zipped response.

Inflation is capped at INFLATED_LIMIT (16 MiB): a zip whose CSV inflates past it is a file-level
failure ("zip bomb"), like a zip holding anything but exactly one .csv, or text that is not UTF-8.
"""

from __future__ import annotations

import csv
import io
import time
import zipfile
import zlib

INFLATED_LIMIT = 16 * 1024 * 1024
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a local file header, or an empty archive's end record


class FileProblem(Exception):
    """A file-level problem: the mass action fails without processing any row."""


def read_table(data: bytes) -> tuple[list[str], list[list[str]]]:
    """The header and data rows of an uploaded file; raises FileProblem if it cannot be read."""
    text = decode(unzip(data) if data[:4] in ZIP_MAGIC else data)
    try:
        rows = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as err:
        raise FileProblem(f"The file is not a readable CSV: {err}") from None
    rows = [row for row in rows if any(cell.strip() for cell in row)]
    if not rows:
        raise FileProblem("The file has no header row")
    return [cell.strip() for cell in rows[0]], rows[1:]


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
    """UTF-8 text (a BOM is allowed); anything else is a file-level problem."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise FileProblem(f"The file is not UTF-8 encoded (byte {err.start})") from None
    if "\x00" in text:
        raise FileProblem("The file contains NUL characters; it is not a CSV text file")
    return text


def response_zip(name: str, header: list[str], rows: list[list[str]], ended_at: float) -> bytes:
    """A zip holding one CSV: the given header and rows; deterministic bytes for the same input."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows(rows)
    stamp = time.gmtime(max(ended_at, 315532800))[:6]  # zip dates start in 1980
    info = zipfile.ZipInfo(name, date_time=stamp)
    info.compress_type = zipfile.ZIP_DEFLATED
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(info, text.getvalue().encode("utf-8"))
    return buffer.getvalue()
