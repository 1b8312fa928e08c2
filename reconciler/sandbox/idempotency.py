"""Idempotency-Key (reference D): replay for 24 sandbox hours, 409 while in flight, 422 on mismatch.

A key is claimed in its own committed transaction (an "in flight" marker naming the owning
process), then the handler's effect and the stored response commit together, so a crash can never
leave an effect without its stored response. A marker whose owner process is gone is taken over.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid

from .web import LOCKING, ApiError, Response

TTL_SECONDS = 24 * 3600
MAX_KEY_LENGTH = 255
# A marker older than this (wall clock) is abandoned even if its pid was reused.
STALE_WALL_SECONDS = 120

NEW, REPLAY = "new", "replay"

_INSTANCE = uuid.uuid4().hex  # tells this process's markers from a dead process that had our pid
_LIVE: set = set()  # keys this process is handling right now
_LIVE_LOCK = threading.Lock()


def owner_tag() -> str:
    """Who holds an in-flight marker: pid plus a per-process-run id."""
    return f"{os.getpid()}:{_INSTANCE}"


def validate_key(key: str) -> None:
    """Reject keys the API would refuse (reference D: at most 255 characters)."""
    if not key.strip() or len(key) > MAX_KEY_LENGTH:
        raise ApiError(400, f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} characters")


def _owner_alive(key: str, owner: str) -> bool:
    pid_text, _, instance = owner.partition(":")
    if instance == _INSTANCE:
        with _LIVE_LOCK:
            return key in _LIVE
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return False
    except (ValueError, OSError):  # not ours to signal (PermissionError) or no pid: assume it is alive
        pass
    return True


def claim(conn, key: str, method: str, path: str, now: float):
    """Claim `key` for this request; returns (NEW, None), (REPLAY, stored Response) or raises 409/422."""
    conn.execute("DELETE FROM idempotency WHERE created_at <= ?", (now - TTL_SECONDS,))
    row = conn.one("SELECT * FROM idempotency WHERE key = ?", (key,))
    if row is not None:
        abandoned = row["state"] == "inflight" and (
            not _owner_alive(key, row["owner"]) or time.time() - row["started_wall"] > STALE_WALL_SECONDS
        )
        if abandoned:
            conn.execute("DELETE FROM idempotency WHERE key = ?", (key,))
            row = None
    if row is None:
        conn.execute(
            "INSERT INTO idempotency (key, method, path, state, owner, started_wall, created_at)"
            " VALUES (?, ?, ?, 'inflight', ?, ?, ?)",
            (key, method, path, owner_tag(), time.time(), now),
        )
        with _LIVE_LOCK:
            _LIVE.add(key)
        return NEW, None
    if row["method"] != method or row["path"] != path:
        raise ApiError(
            422, f"Idempotency-Key was already used with {row['method']} {row['path']}; use a new key",
        )
    if row["state"] == "inflight":
        raise ApiError(
            409, "A request with this Idempotency-Key is still in progress; retry later with the same key",
            category=LOCKING,
        )
    stored = Response(
        row["status"], row["body"], content_type=row["content_type"],
        headers=[tuple(h) for h in json.loads(row["headers"])] + [("Idempotent-Replayed", "true")],
    )
    return REPLAY, stored


def save(conn, key: str, response: Response) -> None:
    """Store the first response for `key` (status, headers, body), whatever its outcome."""
    kept = [h for h in response.headers if h[0].lower() in ("zuora-request-id", "location", "www-authenticate")]
    conn.execute(
        "UPDATE idempotency SET state = 'done', status = ?, headers = ?, body = ?, content_type = ? WHERE key = ?",
        (response.status, json.dumps(kept), response.body, response.content_type, key),
    )


def release(conn, key: str) -> None:
    """Forget an in-flight claim whose request had no effect (an injected error before the effect)."""
    conn.execute("DELETE FROM idempotency WHERE key = ? AND state = 'inflight'", (key,))


def forget(key: str) -> None:
    """This process no longer handles `key` (its marker, if left in flight, is now abandoned)."""
    with _LIVE_LOCK:
        _LIVE.discard(key)
