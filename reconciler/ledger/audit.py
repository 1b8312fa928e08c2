"""`audit verify`: the hash chain, then the records the planner decides from, checked against it.

The chain (chain.py) proves the events were not edited, reordered or cut since the head in `meta`.
The planner, though, reads the `jobs` table, so verify also proves each job row is the one its events
describe (chain.py step 5): every row has its `intent` event and agrees with it, matches the
`job_sha256` of its latest event that carries one, and every intent has its row. `superseded` is
recomputed from the rows, and every run an event or a job names must exist. Rows recorded before
job_sha256 existed are checked against their intent only.

What no recomputation can prove: someone who rewrites events, hashes and `meta` together makes a
ledger that verifies. `verify_head` closes that with an external witness: a head (count and hash)
printed earlier, e.g. in a CI log, which the ledger must still extend.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from reconciler.ledger.chain import AuditReport, Head, job_digest, verify_chain
from reconciler.ledger.connection import Row
from reconciler.ledger.protocol import Connection
from reconciler.ledger.rows import event_from_row
from reconciler.ledger.schema import LIVE_SCHEMA

EDITED = "edited by hand"
_INTENT_FACTS = ("kind", "generation", "fingerprint", "revision", "rerun")


class _Bindings:
    """What the events say each job row must be, collected as the events stream past."""

    def __init__(self, witness: Head | None) -> None:
        self.witness = witness
        self.witnessed = False  # the witness's event went past with the witness's hash
        self.intents: dict[str, tuple[int, Mapping[str, object]]] = {}  # key -> (event id, facts)
        self.digests: dict[str, tuple[int, str]] = {}  # key -> (event id, job_sha256) of the latest
        self.run_ids: set[int] = set()

    def watch(self, events: Iterable[Row]) -> Iterator[Row]:
        for event in events:
            self._see(event)
            yield event

    def _see(self, event: Row) -> None:
        if self.witness is not None and event.get("hash") == self.witness.hash:
            self.witnessed = self.witness.count in (None, event.get("id"))
        if isinstance(event.get("run_id"), int):
            self.run_ids.add(event["run_id"])
        key, detail = event.get("idempotency_key"), event.get("detail")
        if not isinstance(key, str) or not isinstance(detail, dict):
            return
        if event.get("event_type") == "intent" and key not in self.intents:
            facts = {k: detail[k] for k in _INTENT_FACTS if k in detail}  # older ledgers recorded fewer
            self.intents[key] = (event["id"], {"name": event.get("name"), **facts})
        digest = detail.get("job_sha256")
        if isinstance(digest, str):
            self.digests[key] = (event["id"], digest)

    def check_job(self, row: Row) -> str | None:
        """Why this row does not match its events, or None."""
        key = row["idempotency_key"]
        intent = self.intents.pop(key, None)
        if intent is None:
            return f"no intent event has its idempotency key {key!r}: the row was added or its key {EDITED}"
        event_id, facts = intent
        stored = {"name": row["name"], **{k: row[k] for k in _INTENT_FACTS}, "rerun": bool(row["rerun"])}
        differ = [k for k in facts if facts[k] != stored[k]]
        if differ:
            return f"its {', '.join(differ)} differ{'s' * (len(differ) == 1)} from its intent event {event_id} ({EDITED})"
        bound = self.digests.get(key)
        if bound is not None and bound[1] != job_digest(row):
            return f"the row is not the one its latest event {bound[0]} recorded ({EDITED})"
        return None


def verify_ledger(c: Connection, schema_version: int, witness: Head | None = None) -> AuditReport:
    """Verify the chain, the job rows and runs bound to it and (given) that it extends `witness`, in one snapshot."""
    with c.reading():
        head_hash, events_count = c.execute("SELECT head_hash, events_count FROM meta WHERE id = 1").fetchone()
        bindings = _Bindings(witness)
        events = (event_from_row(r) for r in c.iter_rows("SELECT * FROM events ORDER BY id"))
        report = verify_chain(bindings.watch(events), head_hash=head_hash, events_count=events_count)
        if not report.ok:
            return report
        problem = _check_jobs(c, bindings, schema_version) or _check_runs(c, bindings)
    if problem is None and witness is not None and not bindings.witnessed:
        problem = None, (f"the chain does not extend the head {witness} seen before: its history was rewritten "
                         "since, or this is another ledger")
    if problem is None:
        return report
    bad_job, why = problem
    return AuditReport(ok=False, count=report.count, message=why, head_hash=report.head_hash, bad_job=bad_job)


def _check_jobs(c: Connection, bindings: _Bindings, schema_version: int) -> tuple[int | None, str] | None:
    for row in c.iter_rows("SELECT * FROM jobs ORDER BY id"):
        why = bindings.check_job(row)
        if why is not None:
            return row["id"], f"job {row['id']} ({row['name']} generation {row['generation']}): {why}"
    for key, (event_id, facts) in bindings.intents.items():
        return None, (f"{facts['name']} generation {facts['generation']} has an intent (event {event_id}, key {key}) "
                      "but no job row: the row was deleted by hand")
    if schema_version >= LIVE_SCHEMA:
        wrong = c.row("SELECT id, name, generation FROM jobs j WHERE superseded != CASE WHEN EXISTS (SELECT 1 FROM jobs "
                      "later WHERE later.name = j.name AND later.generation > j.generation) THEN 1 ELSE 0 END "
                      "ORDER BY id LIMIT 1")
        if wrong is not None:
            return wrong["id"], (f"job {wrong['id']} ({wrong['name']} generation {wrong['generation']}): its superseded "
                                 f"flag does not match the later generations recorded ({EDITED})")
    return None


def _check_runs(c: Connection, bindings: _Bindings) -> tuple[int | None, str] | None:
    runs = {r["id"] for r in c.iter_rows("SELECT id FROM runs")}
    missing = sorted(bindings.run_ids - runs)
    if missing:
        return None, f"run {missing[0]} is named by its events but has no row in runs: the row was deleted by hand"
    orphan = c.row("SELECT id, run_id FROM jobs WHERE run_id IS NOT NULL AND run_id NOT IN (SELECT id FROM runs) "
                   "ORDER BY id LIMIT 1")
    if orphan is not None:
        return orphan["id"], f"job {orphan['id']} names run {orphan['run_id']}, which has no row in runs ({EDITED})"
    return None
