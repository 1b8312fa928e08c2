"""The ledger's queries (DESIGN §6): the serial, recorded jobs and the event log, each in one read snapshot.

`ReadMethods` is mixed into `Ledger` and runs inside its short read transactions (plain SQL on its
connection; sqlite-utils stays in ledger.py), so a ledger opened read-only serves all of them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from reconciler.errors import LedgerError
from reconciler.ledger.chain import AuditReport, verify_chain
from reconciler.ledger.rows import event_from_row, job_from_row
from reconciler.model import (
    CO_ACTIVE,
    CUSTOM_OBJECT_JOB,
    JobRecord,
    RecordedState,
    SpecRecord,
)

_CHUNK = 1000  # events read per short read transaction while streaming
_NAMES_PER_QUERY = 500  # bound parameters per `name IN (...)`, well under SQLite's oldest limit of 999
LIVE_SCHEMA = 3  # the schema version that has jobs.superseded and the jobs_live index

# A job the planner may still act on or count, whatever the specs say: the latest of its name and not
# retired; not done yet; done with a result refresh would still archive (so its drift shows); or a
# custom object job that may still hold a slot (a forgotten running one). A name with none of these is
# removed and retired for good: the planner gives it no change, no slot and no drift. Schema version 3
# indexes exactly this text (jobs_live); changing it needs a new migration with a new index.
_ACTIVE = ", ".join(f"'{status}'" for status in sorted(CO_ACTIVE))
LIVE_JOB = (
    "(phase != 'retired' AND (superseded = 0 OR phase != 'done' OR (result_path IS NULL AND remote_id IS NOT NULL"
    f" AND (kind = '{CUSTOM_OBJECT_JOB}' OR instr(detail, '\"output_url\":') > 0))))"
    f" OR (kind = '{CUSTOM_OBJECT_JOB}' AND remote_status IN ({_ACTIVE}))"
)


class ReadMethods:
    """Ledger methods that read jobs and events; they rely on Ledger's read guard and row helpers."""

    @property
    def serial(self) -> int:
        """The current serial, read fresh from meta."""
        with self._reading():
            return self._conn.execute("SELECT serial FROM meta WHERE id = 1").fetchone()[0]

    def recorded_state(self, names: Iterable[str] | None = None) -> RecordedState:
        """Names' jobs, oldest first, with the lineage and serial they were read at.

        Every name's by default. Given `names`, their jobs plus those of every name with a LIVE_JOB
        (through the jobs_live index): all the planner needs for those specs, since it gives any other
        name nothing to do. A ledger older than schema 3 (read-only, not migrated yet) is read whole.
        """
        with self._reading():
            serial = self._conn.execute("SELECT serial FROM meta WHERE id = 1").fetchone()[0]
            if names is None or self.schema_version < LIVE_SCHEMA:
                rows = self._rows("SELECT * FROM jobs ORDER BY name, generation, id")
            else:
                rows = self._live_and_named_rows(sorted(set(names)))
        by_name: dict[str, list[JobRecord]] = {}
        for row in rows:
            by_name.setdefault(row["name"], []).append(job_from_row(row))
        records = tuple(SpecRecord(name, tuple(jobs)) for name, jobs in by_name.items())
        return RecordedState(records=records, lineage=self.lineage, serial=serial)

    def _live_and_named_rows(self, names: list[str]) -> list[dict]:
        rows = {r["id"]: r for r in self._rows(f"SELECT * FROM jobs WHERE name IN (SELECT name FROM jobs WHERE {LIVE_JOB})")}
        rows.update((r["id"], r) for r in self._rows_in("name", names))
        return sorted(rows.values(), key=lambda r: (r["name"], r["generation"], r["id"]))

    def _rows_in(self, column: str, values: Iterable) -> list[dict]:
        """Jobs whose `column` (an indexed one: name, id, remote_id) is among `values`, in chunks."""
        values = sorted({v for v in values if v is not None}, key=str)  # the order only groups the chunks
        rows = []
        for start in range(0, len(values), _NAMES_PER_QUERY):
            chunk = tuple(values[start:start + _NAMES_PER_QUERY])
            rows += self._rows(f"SELECT * FROM jobs WHERE {column} IN ({', '.join('?' * len(chunk))})", chunk)
        return rows

    def jobs(self, name: str | None = None) -> list[JobRecord]:
        """Jobs in the order they were created, all or one name's."""
        with self._reading():
            if name is None:
                return [job_from_row(r) for r in self._rows("SELECT * FROM jobs ORDER BY id")]
            return [job_from_row(r) for r in self._rows("SELECT * FROM jobs WHERE name = ? ORDER BY id", (name,))]

    def live_jobs(self) -> list[JobRecord]:
        """Jobs in creation order that LIVE_JOB admits (every job on a ledger older than schema 3).

        Among them is every job a refresh looks at (not done yet, or a result still to archive).
        """
        return self.jobs_matching(live=True)

    def jobs_matching(self, *, ids: Iterable[int] = (), remote_ids: Iterable[str] = (), live: bool = False,
                      ) -> list[JobRecord]:
        """Jobs in creation order with one of these ledger ids or remote ids, plus every LIVE_JOB one when `live`.

        Read through indexes, so its cost follows the jobs asked for, not every job ever recorded.
        """
        with self._reading():
            rows = {}
            if live:
                where = f" WHERE {LIVE_JOB}" if self.schema_version >= LIVE_SCHEMA else ""
                rows.update((r["id"], r) for r in self._rows(f"SELECT * FROM jobs{where}"))
            for column, values in (("id", ids), ("remote_id", remote_ids)):
                rows.update((r["id"], r) for r in self._rows_in(column, values))
        return [job_from_row(rows[job_id]) for job_id in sorted(rows)]

    def next_generation(self, name: str) -> int:
        """The generation the next job of this name gets (1 for a new name)."""
        with self._reading():
            row = self._conn.execute("SELECT coalesce(max(generation), 0) FROM jobs WHERE name = ?", (name,))
            return row.fetchone()[0] + 1

    def job(self, job_id: int) -> JobRecord:
        """One job by ledger id; LedgerError when there is none."""
        with self._reading():
            return job_from_row(self._job_row(job_id))

    def _job_row(self, job_id: int) -> dict:
        row = self._row("SELECT * FROM jobs WHERE id = ?", (job_id,))
        if row is None:
            raise LedgerError(f"{self.path}: there is no job with ledger id {job_id}")
        return row

    def job_by_remote_id(self, remote_id: str) -> JobRecord | None:
        """The latest job recorded with this remote id (bulk key or custom object job id)."""
        with self._reading():
            row = self._row("SELECT * FROM jobs WHERE remote_id = ? ORDER BY id DESC LIMIT 1", (remote_id,))
        return job_from_row(row) if row else None

    def events(self, name: str | None = None, limit: int | None = None, before_id: int | None = None) -> list[dict]:
        """Events newest first, optionally for one name, at most `limit`, older than `before_id`."""
        sql, params = events_query(name, limit, before_id)
        with self._reading():
            return [event_from_row(r) for r in self._rows(sql, params)]

    def iter_events(self) -> Iterator[dict]:
        """Every event oldest first, streamed in short read transactions (writers are not held up)."""
        with self._reading():
            top = self._last_event_id()
        return self._events_upto(top)

    def _last_event_id(self) -> int:
        return self._conn.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()[0]

    def _events_upto(self, top: int) -> Iterator[dict]:
        last = 0
        while last < top:
            with self._reading():
                chunk = self._rows(
                    "SELECT * FROM events WHERE id > ? AND id <= ? ORDER BY id LIMIT ?", (last, top, _CHUNK)
                )
            if not chunk:
                return
            yield from (event_from_row(r) for r in chunk)
            last = chunk[-1]["id"]

    def verify(self) -> AuditReport:
        """Recompute the event chain and compare it with the head hash and count in meta."""
        with self._reading():
            meta = self._row("SELECT head_hash, events_count FROM meta WHERE id = 1")
            top = self._last_event_id()
        return verify_chain(self._events_upto(top), head_hash=meta["head_hash"], events_count=meta["events_count"])


def events_query(name: str | None, limit: int | None, before_id: int | None) -> tuple[str, tuple]:
    """The SQL `Ledger.events` runs: newest first by id, so it walks the primary key or events_by_name."""
    where, params = [], []
    if name is not None:
        where.append("name = ?")
        params.append(name)
    if before_id is not None:
        where.append("id < ?")
        params.append(before_id)
    sql = "SELECT * FROM events" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id DESC"
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    return sql, tuple(params)
