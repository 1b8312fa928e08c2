"""Where a ledger keeps the files it archives: job results (Mass Updater response files, custom object
error lists) and the files new-rows changes sent. `Blobs` is the seam; `FileBlobs` keeps them as files.

A blob is named by its `ref`, the path it has under the repository's state/
(`state/<env>/results/<name>/g1-<id>.csv.zip`, `state/<env>/sent/<name>/g2.csv`), which the ledger
records (jobs.result_path, an intent's sent_file) beside the blob's sha256. The name is the same
whichever store holds the bytes, so `ledger copy` moves blobs without changing a hash-chained row.
- `FileBlobs`: the files themselves, under the repository root (a SQLite ledger's, committed with it).
- ledger.blobs.TableBlobs: the ledger's `blobs` table (a PostgreSQL ledger's: every runner reads what
  another archived, and no state/ directory is needed).
`put` returns only once the blob is durable (fsynced, or committed), so the crash-safety order holds:
the sent file before its intent, the result before `result_archived`. Reads hand back a local file
holding exactly the bytes whose sha256 the ledger recorded, so nothing holds a whole result in memory
beyond what its reader does, and a changed or missing blob is never read as if it were the one archived.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Literal, Protocol

BlobState = Literal["ok", "missing", "changed", "unreadable"]
CHUNK = 1 << 20


class Blobs(Protocol):
    """Results and sent files by ref, with their sha256 checked on every read."""

    def put(self, ref: str, write: Callable[[Path], object]) -> str:
        """Store what `write` puts in the file it is given as `ref`; its sha256, once durable."""
        ...

    def check(self, ref: str, sha256: str | None) -> BlobState:
        """Whether `ref` still holds the bytes with this sha256."""
        ...

    def fetch(self, ref: str, sha256: str | None) -> Path | None:
        """A local file holding exactly `ref`'s bytes when their sha256 is this one; else None."""
        ...

    def close(self) -> None:
        """Let go of the local copies `fetch` made (a file store has none)."""
        ...


def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes, read in chunks; OSError when it cannot be read."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def state_of(path: Path, sha256: str | None) -> BlobState:
    """ok, missing, changed or unreadable: the file at `path` against the sha256 the ledger recorded."""
    try:
        digest = file_sha256(path)
    except FileNotFoundError:
        return "missing"
    except OSError:
        return "unreadable"
    return "ok" if digest == sha256 else "changed"


class UnsafeRef(ValueError):
    """A ref that is not a plain relative path under state/ (a hostile name, or an edited ledger row)."""


class FileBlobs:
    """Blobs as files under the repository root: `ref` is the file's path relative to it."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def path(self, ref: str) -> Path:
        """The file of `ref`; UnsafeRef unless it resolves inside the repository's state/ (symlinks followed)."""
        state = (self.root / "state").resolve()
        dest = self.root / ref
        if not ref.startswith("state/") or ".." in Path(ref).parts or not dest.resolve().is_relative_to(state):
            raise UnsafeRef(f"{ref} is not a file under {state}; refusing to use it")
        return dest

    def put(self, ref: str, write: Callable[[Path], object]) -> str:
        dest = self.path(ref)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
        os.close(fd)
        temp = Path(name)
        try:
            write(temp)
            with open(temp, "rb+") as handle:
                os.fsync(handle.fileno())
            digest = file_sha256(temp)
            os.replace(temp, dest)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        return digest

    def check(self, ref: str, sha256: str | None) -> BlobState:
        try:
            return state_of(self.path(ref), sha256)
        except UnsafeRef:
            return "unreadable"

    def fetch(self, ref: str, sha256: str | None) -> Path | None:
        return self.path(ref) if self.check(ref, sha256) == "ok" else None

    def close(self) -> None:
        pass
