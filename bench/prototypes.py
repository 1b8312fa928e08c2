"""Run-time prototypes of fixes proposed to other modules' owners, for before/after evidence.

    python bench/prototypes.py PATCH[,PATCH...] RECONCILER-ARGS...

Applies the patches in this process, then runs the reconciler CLI as usual. No file of reconciler
is changed and nothing in reconciler imports this; bench/experiments.py times the commands with and
without them. Patches (each names the module whose owner would make the real change):

  no-numpy      ledger.py: import sqlite_utils with numpy and pandas hidden. sqlite_utils imports
                numpy when it is installed (about 0.14 s here) only to map numpy values on insert,
                which reconciler never passes.
  live-jobs     ledger.py: `recorded_state` reads the jobs of the desired names plus those of names
                whose latest job is not retired, instead of every job. The planner returns nothing
                for a removed name whose latest job is retired, so the plan is the same.
  intent-fsync  ledger.py: PRAGMA synchronous = NORMAL on the WAL ledger, FULL only around the
                intent transaction. The intent is what must be on disk before the POST (DESIGN §5);
                a FULL commit also makes every earlier NORMAL commit durable.
"""

from __future__ import annotations

import sys

_LIVE_SQL = (
    "WITH latest AS (SELECT name, max(generation) AS top FROM jobs GROUP BY name) "
    "SELECT j.* FROM jobs j WHERE j.name IN (SELECT l.name FROM latest l JOIN jobs x ON x.name = l.name "
    "AND x.generation = l.top WHERE x.phase != 'retired') OR j.name IN ({names}) "
    "ORDER BY j.name, j.generation, j.id"
)


def no_numpy() -> None:
    """Hide numpy and pandas while sqlite_utils is imported, then unhide them."""
    hidden = [name for name in ("numpy", "pandas") if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # `import numpy` now raises ImportError
    try:
        import sqlite_utils  # noqa: F401
    finally:
        for name in hidden:
            sys.modules.pop(name, None)


def live_jobs() -> None:
    """Ledger.recorded_state reads only what the planner can act on."""
    from reconciler.ledger import store as ledger
    from reconciler.ledger import rows as ledgerrows
    from reconciler.spec import load as spec
    from reconciler.model import RecordedState, SpecRecord

    wanted: list[str] = []
    load_desired = spec.load_desired

    def remember(settings):
        desired = load_desired(settings)
        wanted[:] = [s.name for s in desired.specs]
        return desired

    def recorded_state(self):
        sql = _LIVE_SQL.format(names=",".join("?" * len(wanted)) or "NULL")
        with self._c.reading():
            serial = self._c.conn.execute("SELECT serial FROM meta WHERE id = 1").fetchone()[0]
            rows = self._c.rows(sql, tuple(wanted))
        by_name: dict = {}
        for row in rows:
            by_name.setdefault(row["name"], []).append(ledgerrows.job_from_row(row))
        records = tuple(SpecRecord(name, tuple(jobs)) for name, jobs in by_name.items())
        return RecordedState(records=records, lineage=self.lineage, serial=serial)

    spec.load_desired = remember
    ledger.Ledger.recorded_state = recorded_state


def intent_fsync() -> None:
    """synchronous = NORMAL on ledger connections, FULL for the intent transaction only."""
    from reconciler.ledger import store as ledger

    connect, add_intent = ledger.connect, ledger.Ledger.add_intent

    def normal_connect(*args, **kwargs):
        conn = connect(*args, **kwargs)
        conn.execute("PRAGMA synchronous = NORMAL")
        return conn

    def durable_intent(self, **kwargs):
        with self._c.lock:
            self._c.conn.execute("PRAGMA synchronous = FULL")
            try:
                return add_intent(self, **kwargs)
            finally:
                self._c.conn.execute("PRAGMA synchronous = NORMAL")

    ledger.connect = normal_connect
    ledger.Ledger.add_intent = durable_intent


PATCHES = {"no-numpy": no_numpy, "live-jobs": live_jobs, "intent-fsync": intent_fsync}


def main() -> None:
    names = {n for n in sys.argv[1].split(",") if n and n != "none"}
    unknown = names - set(PATCHES)
    if unknown:
        sys.exit(f"unknown patch(es) {', '.join(sorted(unknown))}; known: {', '.join(PATCHES)}")
    for name, patch in PATCHES.items():  # in this order: no-numpy must precede any sqlite_utils import
        if name in names:
            patch()
    from reconciler.cli import main as cli

    cli(sys.argv[2:])


if __name__ == "__main__":
    main()
