"""`ledger copy`: one ledger moved to another store (SQLite <-> PostgreSQL), exactly as it is.

The copy is the same ledger, not a new one: lineage, serial, schema version, environment binding,
every run, job, event (ids, hashes and the chain's head) and a held lock are carried over row for
row, so a saved plan stays valid against it and `audit verify` gives the same result and head on
both. The destination must not hold a ledger yet; it is made in one transaction (or one file linked
into place), so a failed copy leaves nothing behind. The source must verify first: a copy must not
launder a broken chain into a fresh-looking store.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from reconciler.errors import LedgerError
from reconciler.ledger.base import LedgerBase
from reconciler.ledger.chain import Head
from reconciler.ledger.interface import Binding
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


def open_read(location: Location, binding: Binding) -> LedgerBase | None:
    """The ledger at a path or URL, read-only; None when there is none."""
    if isinstance(location, LedgerUrl):
        from reconciler.ledger.postgres import PgLedger

        return PgLedger.open_read(location, binding)
    from reconciler.ledger.store import Ledger

    return Ledger.open_read(location, binding)


def shown(location: Location) -> str:
    return location.display if isinstance(location, LedgerUrl) else str(location)


def copy_ledger(source: Location, destination: Location, binding: Binding) -> Copied:
    """Copy the ledger at `source` to `destination` (which must hold none), then verify the copy."""
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
    if isinstance(destination, LedgerUrl):
        from reconciler.ledger.postgres import create_copy as into_postgres

        into_postgres(destination, meta, tables)
    else:
        from reconciler.ledger.store import create_copy as into_file

        into_file(destination, meta, tables)
    copy = open_read(destination, binding)
    if copy is None:
        raise LedgerError(f"{shown(destination)}: the copy cannot be read back")
    with copy:
        check = copy.verify()
        same = (copy.lineage, copy.serial, copy.head()) == (meta["lineage"], meta["serial"], head)
    if not check.ok or not same:
        raise LedgerError(f"{shown(destination)}: the copy does not verify as the source does "
                          f"({check.message or 'lineage, serial or head differ'}); remove it and report this")
    return Copied(len(tables["runs"]), len(tables["jobs"]), len(tables["events"]), head, meta["lineage"],
                  meta["serial"])
