"""`ledger copy`: one ledger moved to another store (SQLite <-> PostgreSQL), exactly as it is.

The copy is the same ledger, not a new one: lineage, serial, schema version, environment binding,
every run, job, event (ids, hashes and the chain's head) and a held lock are carried over row for
row, so a saved plan stays valid against it and `audit verify` gives the same result and head on
both. The destination must not hold a ledger yet; it is made in one transaction (or one file linked
into place), so a failed copy leaves nothing behind. The source must verify first: a copy must not
launder a broken chain into a fresh-looking store.

The results and sent files the jobs name go along (dataset.blobs): from the repository's state/ into
a PostgreSQL destination's blobs table (in the same transaction), and from a PostgreSQL source out to
state/ beside a SQLite destination. Each is checked against the sha256 its job recorded first; a
changed one stops the copy before anything is made, and one that is missing is left out and counted
(the ledger then reports it missing, as it would have on the source).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from reconciler.dataset.blobs import Blobs, FileBlobs
from reconciler.errors import LedgerError
from reconciler.ledger.base import LedgerBase
from reconciler.ledger.chain import Head
from reconciler.ledger.connection import Row
from reconciler.ledger.interface import Binding
from reconciler.ledger.rows import loads
from reconciler.ledger.url import LedgerUrl

Location = Path | LedgerUrl


@dataclass(frozen=True)
class Copied:
    """What `copy_ledger` carried over, and the head both ledgers verify to."""

    runs: int
    jobs: int
    events: int
    head: Head
    lineage: str
    serial: int
    blobs: int = 0  # results and sent files carried over
    missing: tuple[str, ...] = field(default=())  # those the jobs name that the source does not hold


def open_read(location: Location, binding: Binding) -> LedgerBase | None:
    """The ledger at a path or URL, read-only; None when there is none."""
    if isinstance(location, LedgerUrl):
        from reconciler.ledger.postgres import PgLedger

        return PgLedger.open_read(location, binding)
    from reconciler.ledger.store import Ledger

    return Ledger.open_read(location, binding)


def shown(location: Location) -> str:
    return location.display if isinstance(location, LedgerUrl) else str(location)


def referenced(jobs: list[Row]) -> dict[str, str | None]:
    """Every result and sent file the job rows name, with the sha256 each recorded."""
    refs: dict[str, str | None] = {}
    for job in jobs:
        if job["result_path"]:
            refs[job["result_path"]] = job["result_sha256"]
        detail = loads(job["detail"])
        if isinstance(detail, dict) and isinstance(detail.get("sent_file"), str):
            sha = detail.get("sent_sha256")
            refs[detail["sent_file"]] = sha if isinstance(sha, str) else None
    return refs


def _carried(blobs: Blobs, refs: dict[str, str | None], where: str) -> tuple[list[tuple[str, Path]], list[str]]:
    """The (ref, local file) of every named blob the source holds intact, and the refs it lacks."""
    found, missing = [], []
    for ref, sha in sorted(refs.items()):
        state = blobs.check(ref, sha)
        if state == "missing":
            missing.append(ref)
            continue
        path = blobs.fetch(ref, sha) if state == "ok" else None
        if path is None:
            raise LedgerError(f"{ref} ({where}) is {state}: its sha256 is not the one the ledger recorded; restore "
                              "it (e.g. from git) or move it away, then copy again. Nothing was copied.")
        found.append((ref, path))
    return found, missing


def copy_ledger(source: Location, destination: Location, binding: Binding, *, root: Path) -> Copied:
    """Copy the ledger at `source` to `destination` (which must hold none) with the results and sent files its
    jobs name (files under `root`'s state/ for a SQLite side), then verify the copy."""
    ledger = open_read(source, binding)
    if ledger is None:
        raise LedgerError(f"there is no ledger at {shown(source)}: nothing to copy")
    with ledger:
        report = ledger.verify()
        if not report.ok:
            raise LedgerError(f"{shown(source)} does not verify ({report.message}); `reconciler audit verify` "
                              "shows where. Nothing was copied.")
        meta, tables = ledger.snapshot()
        head = Head(meta["head_hash"], meta["events_count"])
        blobs, missing = _carried(ledger.blobs(root), referenced(tables["jobs"]), shown(source))
        _make_copy(destination, meta, tables, blobs, root)  # while the source's blobs are still at hand
    copy = open_read(destination, binding)
    if copy is None:
        raise LedgerError(f"{shown(destination)}: the copy cannot be read back")
    with copy:
        check = copy.verify()
        same = (copy.lineage, copy.serial, copy.head()) == (meta["lineage"], meta["serial"], head)
        target = copy.blobs(root)
        intact = all(target.check(ref, sha) == "ok" for ref, sha in referenced(tables["jobs"]).items()
                     if ref not in missing)
    if not check.ok or not same or not intact:
        raise LedgerError(f"{shown(destination)}: the copy does not verify as the source does "
                          f"({check.message or 'lineage, serial, head or a result differ'}); remove it and report this")
    return Copied(len(tables["runs"]), len(tables["jobs"]), len(tables["events"]), head, meta["lineage"],
                  meta["serial"], len(blobs), tuple(missing))


def _make_copy(destination: Location, meta: Row, tables: dict[str, list[Row]], blobs: list[tuple[str, Path]],
               root: Path) -> None:
    if isinstance(destination, LedgerUrl):
        from reconciler.ledger.postgres import create_copy as into_postgres

        into_postgres(destination, meta, tables, blobs)
        return
    from reconciler.ledger.store import create_copy as into_file

    files = FileBlobs(root)
    wanted = referenced(tables["jobs"])
    clash = [ref for ref, _ in blobs if files.check(ref, wanted[ref]) not in ("ok", "missing")]
    if clash:
        raise LedgerError(f"{clash[0]} already exists in state/ with other bytes than the ledger recorded; move it "
                          "away, then copy again. Nothing was copied.")
    into_file(Path(destination), meta, tables)
    try:
        for ref, path in blobs:
            if files.check(ref, wanted[ref]) != "ok":  # a SQLite ledger's results are its repository's files
                files.put(ref, partial(shutil.copyfile, path))
    except BaseException:
        Path(destination).unlink(missing_ok=True)
        raise
