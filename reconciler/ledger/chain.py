"""The audit log's hash chain: canonical event serialization and its verification.

Standard library only (plus model.canonical_json, spelled out in step 2), so an auditor can read the
whole algorithm here and re-implement it:

1. An event is a flat mapping of the ledger's `events` columns: id, ts, run_id, name, event_type,
   method, path, http_status, request_id, track_id, idempotency_key, outcome, actor, detail,
   prev_hash, hash. `detail` is a JSON value (normally an object), not its text.
2. Its canonical form is the UTF-8 bytes of `json.dumps` over every field except `hash`, with sorted
   keys, `(",", ":")` separators, non-ASCII kept as is and NaN refused.
3. `hash` = lowercase hex sha256 of the canonical form. `prev_hash` is the previous event's hash; the
   first event's is 64 zeros. Ids start at 1 and go up by one.
4. The ledger's `meta` row keeps the last event's hash (`head_hash`) and the number of events
   (`events_count`), written in the same transaction as each insert, so a truncated tail shows.
5. The `jobs` rows the planner decides from are bound to the chain: every event that changes a row
   carries `job_sha256` in its detail, the sha256 of canonical JSON over that row's JOB_FIELDS (stored
   values, `detail` as its text) just after the change, and each job's `intent` event names its spec,
   kind, generation, fingerprint, revision and rerun flag. A row must match both (ledger/audit.py).

An export (`audit export --format jsonl`) carries the same fields, so each line can be checked with
`event_hash(json.loads(line)) == line["hash"]`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from reconciler.model import canonical_json

__all__ = [  # canonical_json stays importable here: the chain is where auditors look for it
    "EVENT_FIELDS", "GENESIS_HASH", "JOB_FIELDS", "AuditReport", "Head", "canonical_event", "canonical_json", "event_hash",
    "job_digest", "verify_chain",
]

GENESIS_HASH = "0" * 64

EVENT_FIELDS = (
    "id",
    "ts",
    "run_id",
    "name",
    "event_type",
    "method",
    "path",
    "http_status",
    "request_id",
    "track_id",
    "idempotency_key",
    "outcome",
    "actor",
    "detail",
    "prev_hash",
    "hash",
)

# The columns of a `jobs` row that decide what the planner does with it (not its progress counts,
# times, or `superseded`, which verify recomputes from the other rows).
JOB_FIELDS = (
    "id",
    "name",
    "kind",
    "generation",
    "fingerprint",
    "fingerprint_version",
    "revision",
    "remote_id",
    "idempotency_key",
    "phase",
    "remote_status",
    "uploaded",
    "detail",
    "result_path",
    "result_sha256",
    "rerun",
    "run_id",
)


def canonical_event(event: Mapping[str, object]) -> bytes:
    """The bytes an event's hash covers: every field except `hash`, canonical JSON."""
    return canonical_json({k: v for k, v in event.items() if k != "hash"}).encode("utf-8")


def event_hash(event: Mapping[str, object]) -> str:
    """sha256 (hex) of the event's canonical form; `prev_hash` must already be set."""
    return hashlib.sha256(canonical_event(event)).hexdigest()


def job_digest(row: Mapping[str, object]) -> str:
    """sha256 (hex) of a stored `jobs` row's JOB_FIELDS, as its latest event's `job_sha256` records it."""
    return hashlib.sha256(canonical_json({k: row.get(k) for k in JOB_FIELDS}).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Head:
    """A chain head seen elsewhere (`audit verify --head HASH[:COUNT]`, what `apply` prints): the event hash, and its id if known."""

    hash: str
    count: int | None = None

    def __str__(self) -> str:
        return self.hash if self.count is None else f"{self.hash}:{self.count}"


@dataclass(frozen=True)
class AuditReport:
    """The outcome of recomputing the chain: ok, or the first bad row and why."""

    ok: bool
    count: int  # events read from the log
    message: str
    first_bad_id: int | None = None
    head_hash: str | None = None  # hash of the last event read
    bad_job: int | None = None  # ledger id of the first job row that does not match the chain


def verify_chain(events: Iterable[Mapping[str, object]], *, head_hash: str, events_count: int) -> AuditReport:
    """Recompute the chain over events (oldest first) and compare with the recorded head and count."""
    expected_id, prev, count = 1, GENESIS_HASH, 0
    for event in events:
        event_id = event.get("id")
        if event_id != expected_id:
            if isinstance(event_id, int) and event_id > expected_id:
                why = f"ids jump from {expected_id - 1} to {event_id}: event {expected_id} was deleted"
            else:
                why = f"event {expected_id} is expected here but the row has id {event_id!r}"
            return _bad(count, expected_id, prev, why)
        if event.get("prev_hash") != prev:
            what = "the chain's start" if expected_id == 1 else f"event {expected_id - 1}'s hash"
            why = (
                f"event {event_id}: prev_hash does not match {what} "
                "(a row before it was deleted, reordered or edited)"
            )
            return _bad(count, expected_id, prev, why)
        try:
            recomputed = event_hash(event)
        except (TypeError, ValueError) as exc:  # a value JSON cannot hold: the row was edited
            return _bad(count, expected_id, prev, f"event {event_id}: unreadable value ({exc})")
        if event.get("hash") != recomputed:
            why = f"event {event_id}: its fields do not match its hash (the row was edited)"
            return _bad(count, expected_id, prev, why)
        prev, count, expected_id = recomputed, count + 1, expected_id + 1
    if count < events_count:
        why = (
            f"the log ends at event {count} but the ledger recorded {events_count} events: "
            f"events {count + 1}..{events_count} were removed"
        )
        return _bad(count, count + 1, prev, why)
    if count > events_count:
        why = f"the log holds {count} events but the ledger recorded only {events_count}: rows were added"
        return _bad(count, events_count + 1, prev, why)
    if prev != head_hash:
        why = f"the last event's hash does not match the head hash the ledger recorded ({head_hash})"
        return _bad(count, count or None, prev, why)
    return AuditReport(ok=True, count=count, message=f"{count} events, chain intact", head_hash=prev)


def _bad(count: int, first_bad_id: int | None, prev: str, why: str) -> AuditReport:
    return AuditReport(ok=False, count=count, message=why, first_bad_id=first_bad_id, head_hash=prev)
