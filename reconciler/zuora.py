"""The Zuora HTTP client, and the only httpx user: auth, headers, retries, errors -> RemoteError.

Retry safety: a GET or PUT may be sent again after any transient failure. A POST or PATCH is sent
again only when it carries an Idempotency-Key (Zuora then replays its stored answer instead of acting
twice) or when the server cannot have acted on it: the connection was never established, the token
was refused (401) or the call was rate limited (429 is decided before any processing). A POST without
a key that fails after it may have reached Zuora (5xx, timeout, dropped connection) is reported, not
repeated: repeating it could create a second job.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import httpx

from reconciler import __version__
from reconciler.errors import ConfigError, ReconcilerError, RemoteError
from reconciler.model import CUSTOM_OBJECT_JOB, MASS_ACTION, Condition, Observation
from reconciler.redact import (Redactor, TokenCache, describe_body, file_id_of, new_track_id, path_segment,
                               validate_header_value, validate_idempotency_key, validate_track_id)
from reconciler.retry import (RETRYABLE_CATEGORIES, RETRYABLE_STATUSES, Call, Failure, RetryPolicy, code_category,
                              error_details, next_delay, retry_after_seconds)

__all__ = ["Call", "Credentials", "RetryPolicy", "ZuoraClient", "parse_count"]

log = logging.getLogger("reconciler.zuora")

DEFAULT_TIMEOUT = httpx.Timeout(120.0, connect=10.0)  # Zuora's gateway gives up after 120 s
CHUNK = 1 << 16
CO_PAGE_SIZE_MAX = 40  # the SDK's bound for GET /objects/jobs (the docs say 100)
_RESENDABLE_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
_KEYED_METHODS = frozenset({"POST", "PATCH"})
_NO_CONNECTION = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)  # nothing was sent
_HOPELESS = (httpx.UnsupportedProtocol, httpx.LocalProtocolError)  # sending again cannot help


@dataclass(frozen=True)
class Credentials:
    """OAuth client credentials or a static access token (settings may pass any look-alike)."""

    client_id: str | None = None
    client_secret: str | None = None
    access_token: str | None = None


class ZuoraClient:
    """A thread-safe client for the Mass Updater and Custom Object bulk job APIs (one per run)."""

    def __init__(self, *, base_url: str, credentials=None, transport: httpx.BaseTransport | None = None,
                 entity_ids=None, org_ids=None, zuora_version=None, track_id: str | None = None,
                 parallelism: int = 16, on_call: Callable[[Call], None] | None = None,
                 retry: RetryPolicy | None = None, timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
                 clock: Callable[[], float] = time.monotonic):
        if not re.match(r"(?i)https?://[^/]", base_url or ""):
            raise ConfigError(f"Zuora base URL {base_url!r} must start with https:// (or http:// for a local sandbox)")
        self.base_url = base_url.rstrip("/")
        self.track_id = validate_track_id(track_id) if track_id is not None else new_track_id()
        self._credentials = credentials or Credentials()
        self._static_token = getattr(self._credentials, "access_token", None) or None
        self._redact = Redactor(getattr(self._credentials, "client_secret", None), self._static_token)
        self._on_call = on_call
        self._retry = retry or RetryPolicy()
        self._tokens = TokenCache(self._fetch_token, clock=clock, redactor=self._redact)
        headers = {"User-Agent": f"reconciler/{__version__}", "Accept-Encoding": "gzip",
                   "Zuora-Track-Id": self.track_id}
        optional = {"Zuora-Entity-Ids": entity_ids, "Zuora-Org-Ids": org_ids, "Zuora-Version": zuora_version}
        for name, value in optional.items():
            if value:
                text = ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
                headers[name] = validate_header_value(name, text)
        size = max(1, int(parallelism))
        self._http = httpx.Client(
            base_url=self.base_url, headers=headers, transport=transport, timeout=timeout, follow_redirects=False,
            limits=httpx.Limits(max_connections=size + 2, max_keepalive_connections=size),  # +2: token refresh, polling
        )

    @classmethod
    def from_settings(cls, settings, *, on_call=None, track_id=None, retry=None, **kw) -> "ZuoraClient":
        """A client for `settings`: the embedded sandbox as transport when local, the network otherwise."""
        credentials = settings.credentials
        transport = None
        loopback = re.match(r"(?i)http://(127\.\d+\.\d+\.\d+|localhost|\[::1\])(:\d+)?(/|$)", settings.base_url or "")
        if settings.is_local or loopback:
            from reconciler.sandbox import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, make_app

            if not _has_credentials(credentials):  # a sandbox accepts its documented defaults
                credentials = Credentials(DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET)
            if settings.is_local:
                db = settings.sandbox_db
                if db is not None:
                    Path(db).parent.mkdir(parents=True, exist_ok=True)
                transport = httpx.WSGITransport(app=make_app(db_path=str(db) if db is not None else None))
        return cls(base_url=settings.base_url, credentials=credentials, transport=transport,
                   entity_ids=settings.entity_ids, org_ids=settings.org_ids, zuora_version=settings.zuora_version,
                   track_id=track_id, parallelism=settings.parallelism, on_call=on_call, retry=retry, **kw)

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> "ZuoraClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # Mass Updater

    def submit_mass_action(self, action_type: str, file_path: Path, *, idempotency_key: str | None) -> str:
        """POST /v1/bulk (multipart `file` streamed from disk + `params`); returns the bulkKey."""
        path = Path(file_path)
        params = json.dumps({"actionType": action_type, "checksum": _md5_of(path)})
        content_type = "application/zip" if path.suffix.lower() == ".zip" else "text/csv"

        def body(stack: ExitStack) -> dict:
            handle = stack.enter_context(path.open("rb"))
            return {"data": {"params": params}, "files": {"file": (path.name, handle, content_type)}}

        data = self._request("POST", "/v1/bulk", body=body, idempotency_key=idempotency_key)
        return _required_str(data, "bulkKey", "POST /v1/bulk")

    def get_mass_action(self, bulk_key: str) -> dict:
        """GET /v1/bulk/{key}: the raw mass action body."""
        return self._request("GET", f"/v1/bulk/{path_segment(bulk_key)}")

    def stop_mass_action(self, bulk_key: str) -> None:
        """PUT /v1/bulk/{key}/stop; a job already Stopping or Stopped counts as stopped."""
        try:
            self._request("PUT", f"/v1/bulk/{path_segment(bulk_key)}/stop")
        except RemoteError as exc:
            # A stop whose answer was lost is refused when sent again: the job is no longer stoppable.
            if exc.retryable or exc.status in (401, 404):
                raise
            if self.get_mass_action(bulk_key).get("status") not in ("Stopping", "Stopped"):
                raise

    def download_file(self, url_or_id: str, dest: Path) -> str:
        """GET /v1/files/{id} on our base URL, streamed to `dest`; returns the file's sha256 hex."""
        path = f"/v1/files/{path_segment(file_id_of(url_or_id))}"
        dest = Path(dest)
        part = dest.with_name(dest.name + ".part")

        def save(response: httpx.Response, endpoint: str) -> str:
            if "json" in response.headers.get("content-type", "").lower():
                self._json_of(response, endpoint)  # a JSON answer here is an error body in disguise
            digest = hashlib.sha256()
            try:
                dest.parent.mkdir(parents=True, exist_ok=True)
                with part.open("wb") as handle:
                    for chunk in response.iter_bytes(CHUNK):  # network failures here are httpx errors
                        digest.update(chunk)
                        handle.write(chunk)
                os.replace(part, dest)
            except OSError as exc:
                raise _file_error(Path(exc.filename or dest), exc) from exc
            return digest.hexdigest()

        try:
            return self._request("GET", path, handle=save)
        finally:
            part.unlink(missing_ok=True)

    # Custom object bulk jobs

    def create_co_job(self, *, namespace: str, object: str, operation: str, conditions: Sequence[Condition] = (),
                      idempotency_key: str | None) -> dict:
        """POST /objects/jobs; returns the job (its `Id` is the remote id)."""
        payload: dict[str, Any] = {"namespace": namespace, "object": object, "operation": operation}
        if conditions:
            payload["filter"] = {
                "conditions": [{"field": c.field, "operator": c.operator, "value": c.value} for c in conditions]
            }
        data = self._request("POST", "/objects/jobs", body=lambda stack: {"json": payload},
                             idempotency_key=idempotency_key)
        return _job(data, "POST /objects/jobs")

    def upload_co_file(self, job_id: str, file_path: Path, *, idempotency_key: str | None) -> dict:
        """POST /objects/jobs/{id}/files: the raw CSV streamed from disk; returns the job."""
        path = Path(file_path)
        endpoint = f"/objects/jobs/{path_segment(job_id)}/files"

        def body(stack: ExitStack) -> dict:
            handle = stack.enter_context(path.open("rb"))
            size = os.fstat(handle.fileno()).st_size
            headers = {"Content-Type": "text/csv", "Content-Length": str(size)}
            return {"content": _chunks(handle), "headers": headers}

        return _job(self._request("POST", endpoint, body=body, idempotency_key=idempotency_key), f"POST {endpoint}")

    def get_co_job(self, job_id: str) -> dict:
        """GET /objects/jobs/{id}: the job."""
        path = f"/objects/jobs/{path_segment(job_id)}"
        return _job(self._request("GET", path), f"GET {path}")

    def list_co_jobs(self, *, status: str | None = None, page_size: int = CO_PAGE_SIZE_MAX) -> Iterator[dict]:
        """GET /objects/jobs, following the cursor: every job, newest first."""
        params: dict[str, Any] = {"pageSize": max(1, min(int(page_size), CO_PAGE_SIZE_MAX))}
        if status:
            params["status"] = status
        seen: set[str] = set()
        while True:
            data = self._request("GET", "/objects/jobs", params=params)
            jobs = data.get("jobs")
            if not isinstance(jobs, list):
                raise RemoteError("the answer has no `jobs` list", endpoint="GET /objects/jobs")
            yield from (job for job in jobs if isinstance(job, dict))
            cursor = data.get("cursor")
            if not jobs or not isinstance(cursor, str) or not cursor or cursor in seen:
                return
            seen.add(cursor)  # a server repeating a cursor must not loop us forever
            params["cursor"] = cursor

    def co_job_errors(self, job_id: str) -> list[dict]:
        """GET /objects/jobs/{id}/errors: the rejected rows ({code, message, row, record})."""
        path = f"/objects/jobs/{path_segment(job_id)}/errors"
        errors = self._request("GET", path).get("errors")
        if not isinstance(errors, list):
            raise RemoteError("the answer has no `errors` list", endpoint=f"GET {path}")
        return [e for e in errors if isinstance(e, dict)]

    def cancel_co_job(self, job_id: str, *, idempotency_key: str | None) -> dict:
        """PATCH /objects/jobs/{id}/cancel; returns the job."""
        path = f"/objects/jobs/{path_segment(job_id)}/cancel"
        return _job(self._request("PATCH", path, idempotency_key=idempotency_key), f"PATCH {path}")

    # Common

    def observe(self, kind: str, remote_id: str) -> Observation:
        """The live status and counts of one job; `missing=True` when Zuora does not know it."""
        if kind not in (MASS_ACTION, CUSTOM_OBJECT_JOB):
            raise ValueError(f"unknown kind {kind!r}")
        try:
            body = self.get_mass_action(remote_id) if kind == MASS_ACTION else self.get_co_job(remote_id)
        except RemoteError as exc:
            # Only a Zuora error body counts as "not found": a stray 404 page (wrong base URL) does not.
            if exc.code is not None and (exc.status == 404 or code_category(exc.code) == 40):
                return Observation(remote_id=remote_id, kind=kind, status=None, missing=True)
            raise
        status = body.get("status")
        if not isinstance(status, str) or not status:
            where = f"/v1/bulk/{remote_id}" if kind == MASS_ACTION else f"/objects/jobs/{remote_id}"
            raise RemoteError("the answer has no `status`", endpoint=f"GET {where}")
        if kind == MASS_ACTION:
            reasons = error_details(body)
            return Observation(
                remote_id=remote_id, kind=kind, status=status,
                total=parse_count(body.get("totalCount")), processed=parse_count(body.get("processedCount")),
                succeeded=parse_count(body.get("successCount")), failed=parse_count(body.get("errorCount")),
                output_url=body.get("outputURL") or None, error=reasons[0] if reasons else None,
            )
        # A custom object job only reports recordsProcessed (rejected rows included); its rejected
        # rows are listed by /errors, so succeeded and failed stay unknown here.
        error = body.get("error")
        return Observation(
            remote_id=remote_id, kind=kind, status=status, processed=parse_count(body.get("recordsProcessed")),
            error=str(error.get("message")) if isinstance(error, dict) and error.get("message") else None,
        )

    # The one request path: auth, headers, retries, error mapping

    def _request(self, method: str, path: str, *, params=None, body: Callable[[ExitStack], dict] | None = None,
                 idempotency_key: str | None = None, handle: Callable | None = None, auth: bool = True,
                 resendable: bool | None = None) -> Any:
        """One logical call, retried per the policy; returns `handle(response, endpoint)` for a 2xx answer."""
        if idempotency_key is not None:
            if method not in _KEYED_METHODS:
                raise ValueError(f"Zuora accepts an Idempotency-Key only on POST and PATCH, not {method}")
            validate_idempotency_key(idempotency_key)
        if resendable is None:
            resendable = method in _RESENDABLE_METHODS or idempotency_key is not None
        handle = handle or self._json_of
        endpoint = f"{method} {path}"
        policy = self._retry
        started = policy.clock()
        refreshed = False
        attempt = 0
        while True:
            attempt += 1
            headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
            token = self._bearer() if auth else None
            if token:
                headers["Authorization"] = f"Bearer {token}"
            t0 = time.monotonic()
            try:
                value, status, request_id = self._attempt(method, path, endpoint, params, body, headers, handle)
            except Failure as failure:
                error, delay = failure.error, None
                if failure.unauthorized and auth:
                    if self._static_token:
                        error = _restate(error, "ZUORA_ACCESS_TOKEN was rejected: set a valid token, or set "
                                                "ZUORA_CLIENT_ID and ZUORA_CLIENT_SECRET so tokens are refreshed")
                    elif not refreshed and attempt < policy.max_attempts:
                        refreshed, delay = True, 0.0  # the token expired early or was revoked: once more
                        self._tokens.invalidate(token)
                else:
                    delay = next_delay(policy, failure, attempt=attempt, elapsed=policy.clock() - started,
                                       resendable=resendable)
                    if delay is None and error.retryable:
                        why = (f"gave up after {attempt} attempt(s)" if resendable or not failure.reached_server
                               else f"not retried: a {method} without an Idempotency-Key may already have taken effect")
                        error = _restate(error, f"{error.remote_message} ({why})")
                outcome = failure.kind if failure.kind != "http" else "error" if delay is None else "retry"
                self._report(method, path, error.status, error.request_id, idempotency_key, outcome, attempt, t0,
                             str(error))
                if delay is None:
                    raise error from failure.__cause__
                if delay:
                    policy.sleep(delay)
                continue
            self._report(method, path, status, request_id, idempotency_key, "ok", attempt, t0, None)
            return value

    def _attempt(self, method, path, endpoint, params, body, headers, handle):
        """Send once; return (value, status, request id) or raise `Failure`."""
        with ExitStack() as stack:
            try:
                kwargs = body(stack) if body else {}
            except OSError as exc:
                raise _file_error(Path(exc.filename or "?"), exc) from exc
            headers = {**headers, **kwargs.pop("headers", {})}
            request = self._http.build_request(method, path, params=params, headers=headers, **kwargs)
            try:
                response = self._http.send(request, stream=True)
            except (httpx.TransportError, OSError) as exc:  # OSError: the WSGI sandbox dropped us
                raise self._transport_failure(exc, endpoint) from exc
            stack.callback(response.close)
            request_id = response.headers.get("zuora-request-id")
            try:
                if not response.is_success:
                    raise self._http_failure(response, endpoint, keyed="Idempotency-Key" in headers)
                return handle(response, endpoint), response.status_code, request_id
            except httpx.DecodingError as exc:
                raise Failure(self._error(f"undecodable response body: {exc}", response, endpoint)) from exc
            except httpx.TransportError as exc:  # the body was cut off
                raise self._transport_failure(exc, endpoint, response) from exc

    def _transport_failure(self, exc: Exception, endpoint: str, response: httpx.Response | None = None) -> Failure:
        timed_out = isinstance(exc, httpx.TimeoutException)
        what = "timed out" if timed_out else "connection failed" if response is None else "connection lost mid-answer"
        error = RemoteError(
            self._redact(f"{what} ({type(exc).__name__}: {exc})"), endpoint=endpoint,
            status=response.status_code if response is not None else None,
            request_id=response.headers.get("zuora-request-id") if response is not None else None,
            retryable=not isinstance(exc, _HOPELESS),
        )
        return Failure(error, "timeout" if timed_out else "dropped", reached_server=not isinstance(exc, _NO_CONNECTION))

    def _http_failure(self, response: httpx.Response, endpoint: str, *, keyed: bool) -> Failure:
        status = response.status_code
        raw = response.read()
        details = error_details(_loads(raw, response))
        message, code = details or (describe_body(raw, response.headers.get("content-type"), "a Zuora error body"),
                                    None)
        # 409: the same Idempotency-Key is still in flight; wait, then ask again with that key.
        retryable = status in RETRYABLE_STATUSES or (status == 409 and keyed)
        error = self._error(message, response, endpoint, code=code, retryable=retryable)
        retry_after = None
        if status in (429, 503):
            retry_after = retry_after_seconds(response.headers, rate_limited=status == 429)
        rejected_early = status in (401, 429)  # decided before any processing: nothing took effect
        return Failure(error, reached_server=not rejected_early, retry_after=retry_after, unauthorized=status == 401)

    def _json_of(self, response: httpx.Response, endpoint: str) -> dict:
        """The JSON object of a 2xx answer; `success: false` inside it is an error too."""
        raw = response.read()
        data = _loads(raw, response)
        if not isinstance(data, dict):
            message = describe_body(raw, response.headers.get("content-type"), "a JSON object")
            raise Failure(self._error(message, response, endpoint))
        if data.get("success") is False or data.get("Success") is False:
            message, code = error_details(data) or ("success: false without a reason", None)
            retryable = code_category(code) in RETRYABLE_CATEGORIES
            raise Failure(self._error(message, response, endpoint, code=code, retryable=retryable))
        return data

    def _error(self, message: str, response: httpx.Response, endpoint: str, *, code=None,
               retryable: bool = False) -> RemoteError:
        return RemoteError(self._redact(message), status=response.status_code, code=code, endpoint=endpoint,
                           request_id=response.headers.get("zuora-request-id"), retryable=retryable)

    def _report(self, method, path, status, request_id, key, outcome, attempt, t0, error) -> None:
        ms = int((time.monotonic() - t0) * 1000)
        call = Call(method, path, status, request_id, self.track_id, key, outcome, attempt, ms,
                    self._redact(error) if error else None)
        log.debug("%s %s -> %s %s in %d ms (attempt %d, Zuora-Request-Id %s)",
                  method, path, status if status is not None else "-", outcome, ms, attempt, request_id)
        if self._on_call is not None:
            self._on_call(call)

    # OAuth

    def _bearer(self) -> str:
        """The access token to send now, fetched or refreshed first when it is missing or near expiry."""
        return self._static_token or self._tokens.get()

    def _fetch_token(self) -> tuple[str, float]:
        """POST /oauth/token with the client credentials: (access token, lifetime in seconds)."""
        client_id = getattr(self._credentials, "client_id", None)
        client_secret = getattr(self._credentials, "client_secret", None)
        if not (client_id and client_secret):
            raise ConfigError(f"no Zuora credentials for {self.base_url}: set ZUORA_CLIENT_ID and "
                              "ZUORA_CLIENT_SECRET (OAuth client credentials), or ZUORA_ACCESS_TOKEN")
        form = {"client_id": client_id, "client_secret": client_secret, "grant_type": "client_credentials"}
        try:
            data = self._request("POST", "/oauth/token", body=lambda stack: {"data": form}, auth=False, resendable=True)
        except RemoteError as exc:
            if exc.status not in (400, 401, 403):
                raise
            raise _restate(exc, f"Zuora refused the OAuth client credentials ({exc.remote_message}): "
                                "check ZUORA_CLIENT_ID and ZUORA_CLIENT_SECRET") from exc
        token = data.get("access_token")
        if not isinstance(token, str) or not token:
            raise RemoteError("the token answer has no access_token", endpoint="POST /oauth/token")
        expires_in = data.get("expires_in")
        valid = isinstance(expires_in, (int, float)) and not isinstance(expires_in, bool) and expires_in > 0
        return token, float(expires_in) if valid else 3600.0  # Zuora documents one hour


def parse_count(value) -> int | None:
    """A count given as a number or a string (Mass Updater); None when absent, blank or not a count."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str):
        text = value.strip()
        try:
            value = int(text) if text.isascii() and text.isdigit() else float(text)
        except ValueError:
            return None
    if isinstance(value, float):
        if not value.is_integer():
            return None
        value = int(value)
    return value if isinstance(value, int) and value >= 0 else None


def _loads(raw: bytes, response: httpx.Response):
    """The parsed JSON body, or None when it is not JSON (wrong content type, empty, truncated)."""
    if "json" not in response.headers.get("content-type", "").lower() or not raw.strip():
        return None
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return None


def _restate(error: RemoteError, message: str) -> RemoteError:
    """The same error with a clearer message."""
    return RemoteError(message, status=error.status, code=error.code, request_id=error.request_id,
                       endpoint=error.endpoint, retryable=error.retryable)


def _job(data: dict, endpoint: str) -> dict:
    _required_str(data, "Id", endpoint)
    return data


def _required_str(data: dict, key: str, endpoint: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise RemoteError(f"the answer has no `{key}`", endpoint=endpoint)
    return value


def _md5_of(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)  # Zuora's integrity checksum, not a security use
    try:
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(CHUNK), b""):
                digest.update(block)
    except OSError as exc:
        raise _file_error(path, exc) from exc
    return digest.hexdigest()


def _chunks(handle) -> Iterator[bytes]:
    yield from iter(lambda: handle.read(CHUNK), b"")


def _file_error(path: Path, exc: OSError) -> ReconcilerError:
    return ReconcilerError(f"{path}: {exc.strerror or exc}; check that the file exists and is readable")


def _has_credentials(credentials) -> bool:
    return bool(getattr(credentials, "access_token", None)
                or (getattr(credentials, "client_id", None) and getattr(credentials, "client_secret", None)))
