"""The ledger's store interface: the environment a ledger is bound to, and every operation the engine and the
commands use on an open ledger.

`store.Ledger` is the SQLite store and is checked against it by mypy; a PostgreSQL store implements
the same protocol.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from reconciler.dataset.blobs import Blobs
from reconciler.ledger.chain import AuditReport, Head
from reconciler.ledger.connection import Row
from reconciler.ledger.lock import Clock
from reconciler.ledger.rows import Actor
from reconciler.model import JobRecord, JobTip, Observation, RecordedState


def _as_spelled(environment: str, base_url: str) -> object:
    return environment, base_url.rstrip("/")


@dataclass(frozen=True)
class Binding:
    """The environment a ledger belongs to; a ledger refuses to serve any other.

    `environment` is the key used in paths (Settings.env_key: the name, or a URL's host-port), so
    the refusal can point at the right ledger. `identity` maps an (environment, base_url) to what is
    compared, the stored one and this one alike, so that a ledger bound under another spelling of the
    same environment still opens; the engine passes its canonical form (engine.config), and the
    default compares both as spelled, the base URL without a trailing slash.
    """

    environment: str
    base_url: str
    identity: Callable[[str, str], object] = field(default=_as_spelled, compare=False, repr=False)


class LedgerStore(Protocol):
    """The operations the engine and the commands use on an open ledger; `Ledger` is the SQLite one."""

    @property
    def path(self) -> Path | str: ...  # the SQLite file, or the PostgreSQL URL with its password redacted
    read_only: bool
    lineage: str
    schema_version: int

    @property
    def serial(self) -> int: ...

    # jobs and runs
    def recorded_state(self, names: Iterable[str] | None = None,
                       brief: Callable[[JobTip], bool] | None = None) -> RecordedState: ...
    def jobs(self, name: str | None = None) -> list[JobRecord]: ...
    def live_jobs(self) -> list[JobRecord]: ...
    def jobs_matching(self, *, ids: Iterable[int] = (), remote_ids: Iterable[str] = (), live: bool = False,
                      ) -> list[JobRecord]: ...
    def next_generation(self, name: str) -> int: ...
    def job(self, job_id: int) -> JobRecord: ...
    def job_by_remote_id(self, remote_id: str) -> JobRecord | None: ...
    def start_run(self, command: str, actor: Actor, plan_digest: str | None = None) -> int: ...
    def finish_run(self, run_id: int, outcome: str) -> None: ...
    def add_intent(
        self, *, run_id: int | None, name: str, kind: str, generation: int, fingerprint: str,
        fingerprint_version: int, revision: int, idempotency_key: str, detail: Mapping[str, object],
        rerun: bool = False, lock_id: str | None = None,
    ) -> JobRecord: ...
    def record_submitted(
        self, job_id: int, *, remote_id: str, status: str | None, phase: str,
        counts: Mapping[str, Any] | None = None, event: Mapping[str, Any],
    ) -> JobRecord: ...
    def record_uploaded(self, job_id: int, *, status: str | None, event: Mapping[str, Any]) -> JobRecord: ...
    def record_rejected(self, job_id: int, *, error: str, event: Mapping[str, Any]) -> JobRecord: ...
    def last_refresh(self) -> str | None: ...
    def record_observation(self, job_id: int, obs: Observation, *, run_id: int | None, source: str,
                           calls: Sequence[Mapping[str, Any]] = ()) -> bool: ...
    def record_retired(self, job_id: int, *, run_id: int | None, reason: str, actor: Actor) -> JobRecord: ...
    def record_result(self, job_id: int, *, path: str, sha256: str, run_id: int | None) -> None: ...

    # the event log
    def record_event(
        self, *, run_id: int | None, event_type: str, name: str | None = None, method: str | None = None,
        path: str | None = None, http_status: int | None = None, request_id: str | None = None,
        track_id: str | None = None, idempotency_key: str | None = None, outcome: str | None = None,
        actor: Actor | None = None, detail: Mapping[str, object] | None = None, lock_id: str | None = None,
    ) -> int: ...
    def events(self, name: str | None = None, limit: int | None = None, before_id: int | None = None,
               types: Sequence[str] | None = None, exclude: Sequence[str] = ()) -> list[Row]: ...
    def iter_events(self) -> Iterator[Row]: ...
    def head(self) -> Head: ...
    def verify(self, witness: Head | None = None) -> AuditReport: ...

    # the run lock
    def acquire_lock(self, holder: Actor, *, lease_seconds: float = 60, timeout: float = 0,
                     now: Clock = time.time) -> str: ...
    def heartbeat(self, lock_id: str, *, now: Clock = time.time) -> None: ...
    def release_lock(self, lock_id: str, *, by: Actor | None = None, forced: bool = False) -> None: ...
    def release_own_lock(self, lock_id: str, *, run_id: int | None) -> str | None: ...
    def current_lock(self, *, now: Clock = time.time) -> Row | None: ...

    # results and sent files: files under `root`'s state/ (SQLite) or the blobs table (PostgreSQL)
    def blobs(self, root: Path) -> Blobs: ...

    def close(self) -> None: ...
    def __enter__(self) -> LedgerStore: ...
    def __exit__(self, *exc: object) -> None: ...
