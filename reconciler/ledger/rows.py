"""Ledger rows <-> values: actors, timestamps, stored detail JSON and its secret redaction.

Standard library only (reads must not import sqlite-utils). Detail is stored as canonical JSON after a
JSON round trip, so the value hashed at insert is exactly the one read back. Anything that looks like
a secret (authorization, token, secret, password, api key, cookie, credential keys; bearer or basic
values; such query parameters in paths) becomes "<redacted>" before it is stored.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone

from reconciler.errors import LedgerError
from reconciler.model import REDACTED, JobRecord

_SECRET_KEY = re.compile(r"authori[sz]ation|token|secret|passw(or)?d|api[-_]?key|cookie|credential", re.I)
_SECRET_VALUE = re.compile(r"\s*(bearer|basic)\s+\S", re.I)
_SECRET_QUERY = re.compile(r"([?&][^=&#]*(?:token|secret|passw(?:or)?d|api[-_]?key)[^=&#]*=)[^&#]*", re.I)


@dataclass(frozen=True)
class Actor:
    """Who runs a command: OS or CI user, host, process, git commit, CI run URL."""

    user: str
    host: str
    pid: int
    commit: str | None = None
    ci_run_url: str | None = None

    @property
    def label(self) -> str:
        """`user@host`, as events and runs record it."""
        return f"{self.user}@{self.host}"


def redact(value: object) -> object:
    """A JSON value with anything that looks like a secret replaced by "<redacted>"."""
    if isinstance(value, dict):
        return {k: REDACTED if _SECRET_KEY.search(str(k)) else redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    if isinstance(value, str) and _SECRET_VALUE.match(value):
        return REDACTED
    return value


def redact_path(path: str | None) -> str | None:
    """A request path with the values of secret-looking query parameters replaced by "<redacted>"."""
    return _SECRET_QUERY.sub(rf"\g<1>{REDACTED}", path) if path else path


def clean_detail(detail: Mapping | None) -> object:
    """Detail as it is stored and hashed: JSON-round-tripped (odd values as text), then redacted."""
    return redact(json.loads(json.dumps(dict(detail or {}), default=str)))


def now() -> str:
    """The current UTC time as the ledger stores it (ISO 8601, microseconds)."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def loads(text: str | None) -> object:
    """A stored detail column's JSON value ({} for NULL)."""
    try:
        return json.loads(text) if text is not None else {}
    except ValueError:  # an edited row: keep the text so history shows it and verify flags it
        return text


def event_from_row(row: dict) -> dict:
    """An `events` row with its detail parsed, as history, export and verify read it."""
    return {**row, "detail": loads(row["detail"])}


def stored_time(row: Mapping, table: str, column: str) -> datetime:
    """A timestamp column as the datetime it must hold; a hand-edited value is a LedgerError naming the row."""
    value = row[column]
    try:
        return datetime.fromisoformat(value)
    except (TypeError, ValueError):
        raise LedgerError(f"the ledger's {table} row {row['id']} has {column} {value!r}, not an ISO 8601 time: the "
                          "ledger was edited by hand; restore it (e.g. `git checkout` its file)") from None


def job_from_row(row: Mapping) -> JobRecord:
    """A `jobs` row as the model's JobRecord."""
    detail = loads(row["detail"])
    return JobRecord(
        id=row["id"], name=row["name"], kind=row["kind"], generation=row["generation"],
        fingerprint=row["fingerprint"], fingerprint_version=row["fingerprint_version"], revision=row["revision"],
        idempotency_key=row["idempotency_key"], phase=row["phase"],
        created_at=stored_time(row, "jobs", "created_at"), updated_at=stored_time(row, "jobs", "updated_at"),
        remote_id=row["remote_id"], remote_status=row["remote_status"], uploaded=bool(row["uploaded"]),
        total=row["total"], processed=row["processed"], succeeded=row["succeeded"], failed=row["failed"],
        detail=detail if isinstance(detail, dict) else {}, result_path=row["result_path"],
        result_sha256=row["result_sha256"], rerun=bool(row["rerun"]),
    )
