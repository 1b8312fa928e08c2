"""The run lock (DESIGN §5): one lease row in the ledger's `locks` table, and the pure lease rules.

`LeaseLock` runs in transactions on the Connection it is given and appends its audit events
through the EventLog it is given. Lock transactions never bump the ledger serial, even when they
append an audit event (a take-over, a forced release): taking the lock must not make the saved plan
a run is about to apply look stale. A write that precedes a remote change (an intent, a stop or cancel
event) is given the run's lock id and checks and renews the lease inside its own transaction
(`LeaseLock.hold`), so a run that lost the lock commits nothing more; a run that finds its lock gone at
the end gets a `lock_lost` event and a text naming the new holder (`release_own_lock`), not an error.
The functions below are the pure lease rules over a lock row (id, user, host, pid, ci_run_url,
acquired_at, heartbeat_at, lease_seconds; times in epoch seconds).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from reconciler.errors import LedgerError, LockHeldError
from reconciler.ledger.connection import Row
from reconciler.ledger.protocol import Connection
from reconciler.ledger.events import EventLog
from reconciler.ledger.rows import Actor
from reconciler.model import iso

Clock = Callable[[], float]

POLL_SECONDS = 0.25  # how often a waiting run looks at the lock again


def pid_alive(pid: int) -> bool:
    """True when a process with this pid exists on this host (or when that cannot be told)."""
    if os.name == "nt":  # os.kill would terminate the process there: rely on the lease instead
        return True
    if pid <= 0:  # 0 and negatives name process groups, never a holder
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. PermissionError: it exists and belongs to another user
        return True
    return True


def takeover_reason(row: Mapping[str, Any], host: str, now: float) -> str | None:
    """Why a caller on `host` may take this lock over at `now`, or None when it is still held."""
    column = _bad_column(row)
    if column is not None:
        return f"the lock row was edited by hand ({column} {row[column]!r}): no run holds it"
    if row["host"] == host and not pid_alive(int(row["pid"])):
        return f"the holder process {row['pid']} on {host} is gone"
    silent = now - float(row["heartbeat_at"])
    if silent > float(row["lease_seconds"]):
        return f"its lease lapsed: no heartbeat for {silent:.0f}s (lease {float(row['lease_seconds']):.0f}s)"
    return None


def describe_holder(row: Mapping[str, Any]) -> str:
    """`user@host pid N`, plus the CI run when there is one."""
    text = f"{row['user']}@{row['host']} pid {row['pid']}"
    return f"{text} (CI run {row['ci_run_url']})" if row.get("ci_run_url") else text


def held_message(path: object, row: Mapping[str, Any], now: float, waited: float | None = None) -> str:
    """The LockHeldError text: who holds the lock, since when, how long this run waited, and what to do."""
    silent = max(0.0, now - float(row["heartbeat_at"]))
    if waited is None:
        tried = ""
    elif waited < 0.5:
        tried = " Did not wait for it (--lock-timeout 0s);"
    else:
        tried = f" Waited {_span(waited)} for it (--lock-timeout);"
    return (
        f"{path}: the ledger is locked by {describe_holder(row)} since {iso(float(row['acquired_at']))}, "
        f"last heartbeat {iso(float(row['heartbeat_at']))} ({silent:.0f}s ago).{tried} "
        f"{'w' if tried else 'W'}ait for that run to finish (or pass a longer --lock-timeout, e.g. 5m), or, if it "
        f"is gone, run `reconciler lock release {row['id']}`."
    )


def _span(seconds: float) -> str:
    """`45s`, `2m`, `1h30m`: how long, as --lock-timeout spells it."""
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return "".join(f"{n}{unit}" for n, unit in ((hours, "h"), (minutes, "m"), (secs, "s")) if n) or "0s"


def _bad_column(row: Mapping[str, Any]) -> str | None:
    """The first column of a lock row that does not hold what the lease rules read (edited by hand), or None."""
    for column, kind in (("pid", int), ("acquired_at", float), ("heartbeat_at", float), ("lease_seconds", float)):
        if isinstance(row[column], bool) or not isinstance(row[column], (kind, int)):
            return column
    return None


class LeaseLock:
    """The run lock of one ledger, on the connection it is given; its audit events go to `events`."""

    def __init__(self, connection: Connection, events: EventLog):
        self._c = connection
        self._events = events

    def acquire(self, holder: Actor, *, lease_seconds: float = 60, timeout: float = 0, now: Clock = time.time) -> str:
        """Take the ledger lock, waiting up to `timeout` seconds; returns the lock id or raises LockHeldError.

        A holder on this host whose process is gone is taken over at once; any holder whose lease
        lapsed (no heartbeat for its lease_seconds) is taken over too; both leave an event.
        """
        started = time.monotonic()
        deadline = started + timeout
        while True:
            with self._c.transaction() as tx:
                tx.bump = False
                row = self._holder_row()
                moment = now()
                reason = takeover_reason(row, holder.host, moment) if row else None
                if row is None or reason:
                    return self._take(holder, lease_seconds, moment, row, reason)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LockHeldError(held_message(self._c.path, row, moment, waited=time.monotonic() - started))
            time.sleep(min(POLL_SECONDS, remaining))

    def _holder_row(self) -> Row | None:
        """The current lock row (the oldest, were there ever two), or None when the lock is free."""
        return self._c.row("SELECT * FROM locks ORDER BY acquired_at LIMIT 1")

    def _take(self, holder: Actor, lease: float, moment: float, old: Row | None, reason: str | None) -> str:
        if old is not None:
            self._c.delete("locks", old["id"], f"lock {old['id']}")
            self._events.append(
                run_id=None, event_type="lock_takeover", actor=holder,
                detail={"lock_id": old["id"], "holder": describe_holder(old), "reason": reason},
            )
        lock_id = uuid.uuid4().hex
        self._c.insert("locks", {
            "id": lock_id, "user": holder.user, "host": holder.host, "pid": holder.pid,
            "ci_run_url": holder.ci_run_url, "acquired_at": moment, "heartbeat_at": moment,
            "lease_seconds": float(lease),
        })
        return lock_id

    def heartbeat(self, lock_id: str, *, now: Clock = time.time) -> None:
        """Renew the lease; LockHeldError naming the new holder when the lock was released or taken over."""
        with self._c.transaction() as tx:
            tx.bump = False
            self.hold(lock_id, now())

    def hold(self, lock_id: str, moment: float) -> None:
        """Inside the caller's transaction: renew this lease, or raise LockHeldError when it is no longer ours.

        A write that must only happen under the lock (an intent before its remote call) runs this in its
        own transaction, so no other run can take the lock between the check and the write.
        """
        renewed = self._c.execute("UPDATE locks SET heartbeat_at = ? WHERE id = ?", (moment, lock_id))
        if renewed.rowcount != 1:
            raise LockHeldError(self._lost_message(lock_id, self._new_holder(lock_id)))

    def _lost_message(self, lock_id: str, holder: str) -> str:
        return (f"{self._c.path}: this run lost the ledger lock {lock_id} to {holder}; it changes nothing more "
                "remotely. Check `reconciler lock status` and `reconciler status` before running again")

    def _new_holder(self, lock_id: str) -> str:
        """Who has the lock now that `lock_id` is gone: the holder, else who took it over or released it."""
        row = self._holder_row()
        if row is not None:
            return f"{describe_holder(row)} (lock {row['id']}, taken {iso(float(row['acquired_at']))})"
        # Newest first and rare (only a run that lost its lock asks): the event is normally among the last.
        event = self._c.row(
            "SELECT event_type, actor, ts FROM events WHERE event_type IN ('lock_takeover', 'lock_release')"
            " AND instr(detail, ?) > 0 ORDER BY id DESC LIMIT 1", (f'"{lock_id}"',),
        )
        if event is None:
            return "nobody (the lock is free now)"
        verb = "took it over" if event["event_type"] == "lock_takeover" else "released it"
        return f"{event['actor']}, who {verb} at {event['ts']} and has since finished (the lock is free now)"

    def release(self, lock_id: str, *, by: Actor | None = None, forced: bool = False) -> None:
        """Release a lock; `forced` (operator `lock release`) also appends an event naming `by`."""
        with self._c.transaction() as tx:
            tx.bump = False
            row = self._c.row("SELECT * FROM locks WHERE id = ?", (lock_id,))
            if row is None:
                raise LedgerError(
                    f"{self._c.path}: no lock {lock_id} is held; `reconciler lock status` shows the current one"
                )
            self._c.delete("locks", lock_id, f"lock {lock_id}")
            if forced:
                self._events.append(
                    run_id=None, event_type="lock_release", actor=by,
                    detail={"lock_id": lock_id, "holder": describe_holder(row), "forced": True},
                )

    def release_own(self, lock_id: str, *, run_id: int | None) -> str | None:
        """Release a run's own lock at its end; when it was lost meanwhile, append a `lock_lost` event and
        return the LockHeldError text naming the new holder instead of raising (None when released)."""
        with self._c.transaction() as tx:
            tx.bump = False
            if self._c.execute("DELETE FROM locks WHERE id = ?", (lock_id,)).rowcount == 1:
                return None
            holder = self._new_holder(lock_id)
            self._events.append(run_id=run_id, event_type="lock_lost", detail={"lock_id": lock_id, "holder": holder})
            return self._lost_message(lock_id, holder)

    def current(self, *, now: Clock = time.time) -> Row | None:
        """The lock row (times as ISO strings) plus `holder` text and `expired`, or None when free."""
        with self._c.reading():
            row = self._holder_row()
        if row is None:
            return None
        if _bad_column(row):  # shown as it is, and released like any other: it holds nothing any run could use
            return {**row, "holder": f"{describe_holder(row)} (edited by hand)", "expired": True}
        expired = now() - row["heartbeat_at"] > row["lease_seconds"]
        times = {k: iso(row[k]) for k in ("acquired_at", "heartbeat_at")}
        return {**row, **times, "holder": describe_holder(row), "expired": expired}
