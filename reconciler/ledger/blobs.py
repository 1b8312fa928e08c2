"""A ledger's `blobs` table as a dataset.blobs.Blobs store: where a PostgreSQL ledger keeps results and sent files.

A blob is its rows `(ref, part, data)`, in parts of schema.BLOB_PART_BYTES, so neither writing nor reading
one holds more than a part in memory: `put` copies the file it was written to into the table part by
part in one transaction (a crash leaves the old blob or the new one whole, never a mix), and `fetch`
copies the parts into a local file of its own, which it checks against the sha256 the ledger recorded
and keeps until `close`. Reads run in a read snapshot, so a read-only ledger reads its blobs too; a
ledger older than schema BLOBS_SCHEMA has no table and so no blob.
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from reconciler.dataset.blobs import BlobState, file_sha256, state_of
from reconciler.ledger.protocol import Connection
from reconciler.ledger.schema import BLOB_PART_BYTES, BLOBS_SCHEMA


def parts_of(path: Path) -> Iterator[bytes]:
    """A file's bytes in parts of BLOB_PART_BYTES (one empty part for an empty file)."""
    with open(path, "rb") as handle:
        part = handle.read(BLOB_PART_BYTES)
        yield part
        while part := handle.read(BLOB_PART_BYTES):
            yield part


class TableBlobs:
    """The blobs of one open ledger, in its `blobs` table, read and written on its connection."""

    def __init__(self, connection: Connection, schema_version: int):
        self._c = connection
        self._schema_version = schema_version
        self._dir: Path | None = None
        self._fetched: dict[str, Path] = {}
        self._numbers = itertools.count()
        self._lock = threading.Lock()  # refresh archives from several threads

    def _local(self, ref: str) -> Path:
        with self._lock:
            if self._dir is None:
                self._dir = Path(tempfile.mkdtemp(prefix="reconciler-blobs-"))
            # the ref's own file name (Zuora sees a sent file's), in a directory of its own
            folder = self._dir / str(next(self._numbers))
        folder.mkdir()
        return folder / Path(ref).name

    def put(self, ref: str, write: Callable[[Path], object]) -> str:
        temp = self._local(ref)
        try:
            write(temp)
            digest = file_sha256(temp)
            with self._c.transaction() as tx:
                tx.bump = False  # a blob alone records nothing: the job row that names it does (and bumps)
                self._c.execute("DELETE FROM blobs WHERE ref = ?", (ref,))
                for number, data in enumerate(parts_of(temp)):
                    self._c.insert("blobs", {"ref": ref, "part": number, "data": data})
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        with self._lock:
            self._fetched[ref] = temp  # what was stored is what a later fetch would read back
        return digest

    def _copy_out(self, ref: str) -> Path | None:
        """The blob in a local file of its own (made once per ref), or None when there is none."""
        with self._lock:
            if ref in self._fetched:
                return self._fetched[ref]
        if self._schema_version < BLOBS_SCHEMA:
            return None
        dest = self._local(ref)
        with self._c.reading():
            parts = [r["part"] for r in self._c.rows("SELECT part FROM blobs WHERE ref = ? ORDER BY part", (ref,))]
            if not parts:
                return None
            with open(dest, "wb") as handle:  # one part per round trip: memory stays at one part
                handle.writelines(bytes(self._c.value("SELECT data FROM blobs WHERE ref = ? AND part = ?", (ref, n)))
                                  for n in parts)
        with self._lock:
            self._fetched[ref] = dest
        return dest

    def check(self, ref: str, sha256: str | None) -> BlobState:
        local = self._copy_out(ref)
        return "missing" if local is None else state_of(local, sha256)

    def fetch(self, ref: str, sha256: str | None) -> Path | None:
        return self._fetched[ref] if self.check(ref, sha256) == "ok" else None

    def refs(self) -> list[str]:
        """Every ref the table holds."""
        if self._schema_version < BLOBS_SCHEMA:
            return []
        with self._c.reading():
            return [r["ref"] for r in self._c.rows("SELECT DISTINCT ref FROM blobs ORDER BY ref")]

    def close(self) -> None:
        with self._lock:
            if self._dir is not None:
                shutil.rmtree(self._dir, ignore_errors=True)
                self._dir = None
            self._fetched.clear()
