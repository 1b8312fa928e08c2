"""A data file as rows: reading a spec's CSV (or a Mass Updater zip of one), row identity, derived files.

A row's identity is what Zuora acts on: the values of every column but the informational ones (a
header starting with `#`, which Zuora ignores), whitespace-trimmed, blanks left out, so the same
payment is the same row whatever the column order, an extra empty column or a changed comment. A
row's key, when the action type has one (actions.row_key), pairs an edited row with its earlier
version. A derived file (the rows not applied yet) keeps the header and the rows' order and bytes
as csv writes them, so deriving it twice gives the same bytes.
"""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from reconciler.errors import ResultError

ZIP_MAGIC = b"PK\x03\x04"
MAX_INFLATED_BYTES = 64 * 1024 * 1024

Identity = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Table:
    """A CSV's header and data rows (blank lines left out), cells as written."""

    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]

    def columns(self) -> tuple[str, ...]:
        """The header's names, trimmed."""
        return tuple(c.strip() for c in self.header)

    def records(self) -> list[dict[str, str]]:
        """Each row as {column: value}, informational columns included."""
        names = self.columns()
        return [dict(zip(names, row)) for row in self.rows]


def identity(record: dict[str, str]) -> Identity:
    """The row's identity: (column, trimmed value) of every non-informational, non-blank cell, sorted."""
    return tuple(sorted((k, v.strip()) for k, v in record.items()
                        if k and not k.startswith("#") and v is not None and v.strip()))


def key_of(record: dict[str, str], key: Sequence[str]) -> tuple[str, ...] | None:
    """The row's key values, or None when the action type has no key or the row leaves one blank."""
    if not key:
        return None
    values = tuple((record.get(c) or "").strip() for c in key)
    return values if all(values) else None


def parse(data: bytes, display: str) -> Table:
    """The table in a file's bytes: a UTF-8 CSV (a byte order mark is fine), or a zip holding one."""
    if data[:4] == ZIP_MAGIC:
        data = _unzip(data, display)
    try:
        text = data.decode("utf-8-sig")
        rows = [tuple(r) for r in csv.reader(io.StringIO(text, newline="")) if any(c.strip() for c in r)]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ResultError(f"{display}: cannot read it as a UTF-8 CSV ({exc})") from exc
    if not rows:
        return Table((), ())
    width = len(rows[0])
    return Table(rows[0], tuple(r + ("",) * (width - len(r)) for r in rows[1:]))


def read(path: Path, display: str) -> Table:
    """The table in a file (ResultError when it cannot be read)."""
    try:
        return parse(path.read_bytes(), display)
    except OSError as exc:
        raise ResultError(f"{display}: cannot read the file ({exc.strerror or exc})") from exc


def render(header: Sequence[str], rows: Iterable[Sequence[str]]) -> bytes:
    """A CSV of these rows under this header: UTF-8, comma-separated, CRLF, quoted as needed."""
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue().encode("utf-8")


def _unzip(data: bytes, display: str) -> bytes:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = [m for m in archive.infolist() if not m.is_dir() and m.filename.lower().endswith(".csv")]
            if len(members) != 1 or members[0].file_size > MAX_INFLATED_BYTES:
                raise ResultError(f"{display}: a zip must hold exactly one CSV of at most 64 MB")
            return archive.read(members[0])
    except (zipfile.BadZipFile, OSError, ValueError, RuntimeError) as exc:
        raise ResultError(f"{display}: not a readable zip archive ({exc})") from exc
