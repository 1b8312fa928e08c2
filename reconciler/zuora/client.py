"""The Zuora client the rest of the code uses: one `Connection` (connection.py) and the operations over it.

`ZuoraClient` is a thin facade: the HTTP session, retries and error mapping are `Connection`'s, each
operation is `ZuoraOperations`' (operations.py) with that connection as its transport.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import httpx

from reconciler.errors import ConfigError
from reconciler.model import Condition, Observation
from reconciler.zuora.auth import Credentials, credentials_for
from reconciler.zuora.connection import DEFAULT_CALL_TIMEOUT, DEFAULT_TIMEOUT, Connection
from reconciler.zuora.operations import CO_PAGE_SIZE_MAX, ZuoraOperations, parse_count
from reconciler.zuora.retry import Call, RetryPolicy
from reconciler.zuora.wire import is_sandbox

__all__ = ["Call", "Credentials", "RetryPolicy", "ZuoraClient", "parse_count"]


class ZuoraClient:
    """A thread-safe client for the Mass Updater and Custom Object bulk job APIs (one per run).

    Its arguments are `Connection`'s; each operation is `ZuoraOperations`' over that connection.
    """

    def __init__(self, *, base_url: str, credentials: Credentials | None = None,
                 transport: httpx.BaseTransport | None = None, entity_ids: str | Sequence[str] | None = None,
                 org_ids: str | Sequence[str] | None = None, zuora_version: str | None = None,
                 track_id: str | None = None, parallelism: int = 16, on_call: Callable[[Call], None] | None = None,
                 retry: RetryPolicy | None = None, timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
                 clock: Callable[[], float] = time.monotonic, call_timeout: float = DEFAULT_CALL_TIMEOUT):
        self._connection = Connection(
            base_url=base_url, credentials=credentials, transport=transport, entity_ids=entity_ids, org_ids=org_ids,
            zuora_version=zuora_version, track_id=track_id, parallelism=parallelism, on_call=on_call, retry=retry,
            timeout=timeout, clock=clock, call_timeout=call_timeout)
        self._ops = ZuoraOperations(self._connection)

    @classmethod
    def from_settings(cls, settings: Any, *, on_call: Callable[[Call], None] | None = None,
                      track_id: str | None = None, retry: RetryPolicy | None = None, **kw: Any) -> "ZuoraClient":
        """A client for `settings`: the embedded sandbox as transport when local, the network otherwise."""
        credentials = settings.credentials  # a real Zuora without any fails at the first call (lazily)
        transport = None
        if is_sandbox(settings):
            credentials = credentials_for(settings, credentials)  # local: the defaults, whatever is exported
            if settings.is_local:
                from reconciler.sandbox import make_app

                db = settings.sandbox_db
                if db is not None:
                    Path(db).parent.mkdir(parents=True, exist_ok=True)
                # `local` uses the repo's definitions/ as its custom object definitions (the demo set without).
                definitions = Path(settings.root) / "definitions" if getattr(settings, "root", None) else None
                try:
                    app = make_app(db_path=str(db) if db is not None else None,
                                   definitions=str(definitions) if definitions and definitions.is_dir() else None,
                                   replay_status=getattr(settings, "sandbox_replay_status", 200),
                                   v1_errors=getattr(settings, "sandbox_v1_errors", "http"),
                                   job_limit=getattr(settings, "sandbox_job_limit", "400"),
                                   tenant_type=getattr(settings, "sandbox_tenant_type", "production"))
                except ValueError as err:  # a malformed definitions/ file, or an unusable sandbox.db
                    raise ConfigError(f"the local sandbox cannot start: {err}") from None
                transport = httpx.WSGITransport(app=app)
        return cls(base_url=settings.base_url, credentials=credentials, transport=transport,
                   entity_ids=settings.entity_ids, org_ids=settings.org_ids, zuora_version=settings.zuora_version,
                   track_id=track_id, parallelism=settings.parallelism, on_call=on_call, retry=retry,
                   **{"call_timeout": getattr(settings, "call_timeout", DEFAULT_CALL_TIMEOUT), **kw})

    @property
    def base_url(self) -> str:
        """Zuora's (or a sandbox's) base URL, without a trailing slash."""
        return self._connection.base_url

    @property
    def track_id(self) -> str:
        """The `Zuora-Track-Id` sent with every call of this client."""
        return self._connection.track_id

    def close(self) -> None:
        """Close the connection pool."""
        self._connection.close()

    def spacing(self, share: float) -> float:
        """Seconds between calls for them to spend at most `share` of Zuora's rate limit (RateLimit-* headers)."""
        return self._connection.spacing(share)

    def set_deadline(self, deadline: float | None) -> None:
        """No call is sent, or waited on, past `deadline` (a time.monotonic() value; None: no limit)."""
        self._connection.deadline = deadline

    def __enter__(self) -> "ZuoraClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # The operations (reconciler.zuora.operations says what each sends and checks)

    def authenticate(self) -> None:
        """Fetch the OAuth token, or check a static one, before anything is written (AuthError if refused)."""
        self._connection.authenticate()

    def submit_mass_action(self, action_type: str, file_path: Path, *, idempotency_key: str | None) -> str:
        return self._ops.submit_mass_action(action_type, file_path, idempotency_key=idempotency_key)

    def get_mass_action(self, bulk_key: str) -> dict:
        return self._ops.get_mass_action(bulk_key)

    def stop_mass_action(self, bulk_key: str) -> None:
        self._ops.stop_mass_action(bulk_key)

    def download_file(self, url_or_id: str, dest: Path) -> str:
        return self._ops.download_file(url_or_id, dest)

    def create_co_job(self, *, namespace: str, object: str, operation: str, conditions: Sequence[Condition] = (),
                      idempotency_key: str | None) -> dict:
        return self._ops.create_co_job(namespace=namespace, object=object, operation=operation,
                                       conditions=conditions, idempotency_key=idempotency_key)

    def upload_co_file(self, job_id: str, file_path: Path, *, idempotency_key: str | None) -> dict:
        return self._ops.upload_co_file(job_id, file_path, idempotency_key=idempotency_key)

    def get_co_job(self, job_id: str) -> dict:
        return self._ops.get_co_job(job_id)

    def list_co_jobs(self, *, status: str | None = None, page_size: int = CO_PAGE_SIZE_MAX) -> Iterator[dict]:
        return self._ops.list_co_jobs(status=status, page_size=page_size)

    def co_job_errors(self, job_id: str) -> list[dict]:
        return self._ops.co_job_errors(job_id)

    def cancel_co_job(self, job_id: str, *, idempotency_key: str | None) -> dict:
        return self._ops.cancel_co_job(job_id, idempotency_key=idempotency_key)

    def list_co_definitions(self) -> dict[str, dict]:
        return self._ops.list_co_definitions()

    def get_co_definition(self, object_name: str) -> dict:
        return self._ops.get_co_definition(object_name)

    def observe(self, kind: str, remote_id: str) -> Observation:
        return self._ops.observe(kind, remote_id)
