"""The ledger's event log (DESIGN §6): appending chained events and reading, streaming and verifying them.

Events are only inserted (triggers refuse UPDATE and DELETE) and hash-chained as chain.py describes;
`meta.head_hash` and `meta.events_count` move in the same transaction as each insert. `EventLog.append`
runs inside a transaction its caller opened on the shared Connection, so a job change and its
event commit together. Detail is stored as canonical JSON after redaction (rows.py).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

from reconciler.ledger.chain import event_hash
from reconciler.ledger.connection import Params, Row
from reconciler.ledger.protocol import Connection
from reconciler.ledger.rows import Actor, clean_detail, event_from_row, now, redact_path
from reconciler.model import canonical_json

_CHUNK = 1000  # events read per short read transaction while streaming

# Every event type the ledger writes, the decisions first; `history --event` accepts these.
EVENT_TYPES = (
    "intent", "submitted", "rejected", "uploaded", "upload_intent", "stop_requested", "stop_answered",
    "cancel_intent", "recovered_in_doubt", "import", "retired", "status_change", "detail_change",
    "result_archived", "result_archive_failed", "lock_takeover", "lock_release", "lock_lost", "remote_call",
)
# What `history` shows by default: everything a person decided or saw change; the HTTP calls behind them
# (mutations and failures, and reads that changed something) are shown with `--all` or `--event remote_call`.
CALL_EVENTS = ("remote_call",)


def events_query(name: str | None, limit: int | None, before_id: int | None,
                 types: Sequence[str] | None = None, exclude: Sequence[str] = ()) -> tuple[str, Params]:
    """The SQL `Ledger.events` runs: newest first by id, so it walks the primary key or events_by_name;
    `types` keeps only those event types, `exclude` leaves those out."""
    where: list[str] = []
    params: list[object] = []
    if name is not None:
        where.append("name = ?")
        params.append(name)
    if types is not None:
        where.append(f"event_type IN ({', '.join('?' * len(types))})" if types else "0")
        params.extend(types)
    if exclude:
        where.append(f"event_type NOT IN ({', '.join('?' * len(exclude))})")
        params.extend(exclude)
    if before_id is not None:
        where.append("id < ?")
        params.append(before_id)
    sql = "SELECT * FROM events" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id DESC"
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    return sql, tuple(params)


class EventLog:
    """The `events` table of one ledger, on the connection it is given."""

    def __init__(self, connection: Connection):
        self._c = connection
        self._run_actors: dict[int, str | None] = {}  # run id -> actor label (runs never change it)

    # --- reads ----------------------------------------------------------------------------------

    def events(self, name: str | None = None, limit: int | None = None, before_id: int | None = None,
               types: Sequence[str] | None = None, exclude: Sequence[str] = ()) -> list[Row]:
        """Events newest first, optionally for one name, at most `limit`, older than `before_id`, of `types`
        only (when given) and not of `exclude`."""
        sql, params = events_query(name, limit, before_id, types, exclude)
        with self._c.reading():
            return [event_from_row(r) for r in self._c.rows(sql, params)]

    def iter_events(self) -> Iterator[Row]:
        """Every event oldest first, streamed in short read transactions (writers are not held up)."""
        with self._c.reading():
            top = self.last_id()
        return self._events_upto(top)

    def last_id(self) -> int:
        """The id of the newest event (0 when there is none), inside the caller's transaction."""
        last: int = self._c.value("SELECT coalesce(max(id), 0) FROM events")
        return last

    def _events_upto(self, top: int) -> Iterator[Row]:
        last = 0
        while last < top:
            with self._c.reading():
                chunk = self._c.rows(
                    "SELECT * FROM events WHERE id > ? AND id <= ? ORDER BY id LIMIT ?", (last, top, _CHUNK)
                )
            if not chunk:
                return
            yield from (event_from_row(r) for r in chunk)
            last = chunk[-1]["id"]

    # --- writes ---------------------------------------------------------------------------------

    def append(
        self, *, run_id: int | None, event_type: str, name: str | None = None, method: str | None = None,
        path: str | None = None, http_status: int | None = None, request_id: str | None = None,
        track_id: str | None = None, idempotency_key: str | None = None, outcome: str | None = None,
        actor: Actor | None = None, detail: Mapping[str, object] | None = None,
    ) -> int:
        """Insert the next chained event inside the caller's transaction and move the head; returns its id."""
        prev_hash: str = self._c.value("SELECT head_hash FROM meta WHERE id = 1")
        next_id = self.last_id() + 1
        event: dict[str, object] = {
            "id": next_id, "ts": now(), "run_id": run_id, "name": name, "event_type": event_type,
            "method": method, "path": redact_path(path), "http_status": http_status, "request_id": request_id,
            "track_id": track_id, "idempotency_key": idempotency_key, "outcome": outcome,
            "actor": self._label(actor, run_id), "detail": clean_detail(detail), "prev_hash": prev_hash,
        }
        event["hash"] = event_hash(event)
        self._c.insert("events", {**event, "detail": canonical_json(event["detail"])})
        self._c.execute(
            "UPDATE meta SET head_hash = ?, events_count = events_count + 1 WHERE id = 1", (event["hash"],)
        )
        return next_id

    def _label(self, actor: Actor | None, run_id: int | None) -> str | None:
        """Who caused an event: the actor given, else the run's actor, so each event names someone."""
        if actor is not None:
            return actor.label
        if run_id is None:
            return None
        if run_id not in self._run_actors:
            row = self._c.row("SELECT actor FROM runs WHERE id = ?", (run_id,))
            self._run_actors[run_id] = row["actor"] if row is not None else None
        return self._run_actors[run_id]
