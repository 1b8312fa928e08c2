"""The Zuora HTTP client, and the only httpx user: auth, headers, retries, errors -> RemoteError.

The operations themselves (Mass Updater, custom object jobs, observe) are in `reconciler.zuora.operations`;
`ZuoraClient` inherits them and supplies the `_request` and `_stream` they call.

Retry safety: a GET or PUT may be sent again after any transient failure. A POST or PATCH is sent
again only when it carries an Idempotency-Key (Zuora then replays its stored answer instead of acting
twice) or when the server cannot have acted on it: the connection was never established, the token
was refused (401) or the call was rate limited (429 is decided before any processing). A POST without
a key that fails after it may have reached Zuora (5xx, timeout, dropped connection) is reported, not
repeated: repeating it could create a second job.
"""

from __future__ import annotations

import json
import logging
import re
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx

from reconciler import __version__
from reconciler.errors import ConfigError, RemoteError
from reconciler.zuora.operations import CHUNK, ZuoraOperations, file_error, parse_count
from reconciler.zuora.retry import (
    RETRYABLE_CATEGORIES,
    RETRYABLE_STATUSES,
    Call,
    Failure,
    RetryPolicy,
    code_category,
    error_details,
    next_delay,
    retry_after_seconds,
)
from reconciler.zuora.wire import (
    Redactor,
    TokenCache,
    describe_body,
    new_track_id,
    validate_header_value,
    validate_idempotency_key,
    validate_track_id,
)

__all__ = ["Call", "Credentials", "RetryPolicy", "ZuoraClient", "parse_count"]

log = logging.getLogger("reconciler.zuora")

DEFAULT_TIMEOUT = httpx.Timeout(120.0, connect=10.0)  # Zuora's gateway gives up after 120 s
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


class ZuoraClient(ZuoraOperations):
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
        # Plain http (a loopback sandbox) never does TLS: skip loading the CA bundle (~0.15 s at start-up).
        verify = not self.base_url.lower().startswith("http://")
        self._http = httpx.Client(
            base_url=self.base_url, headers=headers, transport=transport, timeout=timeout, follow_redirects=False,
            verify=verify,
            limits=httpx.Limits(max_connections=size + 2, max_keepalive_connections=size),  # +2: token refresh, polling
        )

    @classmethod
    def from_settings(cls, settings, *, on_call=None, track_id=None, retry=None, **kw) -> "ZuoraClient":
        """A client for `settings`: the embedded sandbox as transport when local, the network otherwise."""
        credentials = settings.credentials
        transport = None
        loopback = re.match(r"(?i)http://(127\.\d+\.\d+\.\d+|localhost|\[::1\])(:\d+)?(/|$)", settings.base_url or "")
        if settings.is_local or loopback:
            # Only the defaults: a served sandbox needs no simulator code in this process.
            from reconciler.sandbox.defaults import (
                DEFAULT_CLIENT_ID,
                DEFAULT_CLIENT_SECRET,
            )

            if not _has_credentials(credentials):  # a sandbox accepts its documented defaults
                credentials = Credentials(DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET)
            if settings.is_local:
                from reconciler.sandbox import make_app

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

    # The one request path: auth, headers, retries, error mapping

    def _stream(self, path: str, consume: Callable[[Iterator[bytes]], Any]) -> Any:
        """GET `path` and return `consume(chunks of the 2xx body)`; retried as a whole like `_request`."""

        def handle(response: httpx.Response, endpoint: str) -> Any:
            if "json" in response.headers.get("content-type", "").lower():
                self._json_of(response, endpoint)  # a JSON answer here is an error body in disguise
            return consume(response.iter_bytes(CHUNK))  # network failures here are httpx errors

        return self._request("GET", path, handle=handle)

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
        acted = False  # an earlier attempt may have taken effect (it reached Zuora, no answer says otherwise)
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
                if delay is None and acted and idempotency_key is not None and not error.retryable:
                    # This refusal (an expired token, a proxy's page) answers only the last attempt; an
                    # earlier one may have created the job, so the outcome stays unknown: resume with the key.
                    error = _restate(error, f"{error.remote_message} (after an earlier attempt that may have taken "
                                            "effect: outcome unknown)", retryable=True)
                acted = acted or failure.reached_server
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
                raise file_error(Path(exc.filename or "?"), exc) from exc
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


def _loads(raw: bytes, response: httpx.Response):
    """The parsed JSON body, or None when it is not JSON (wrong content type, empty, truncated)."""
    if "json" not in response.headers.get("content-type", "").lower() or not raw.strip():
        return None
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return None


def _restate(error: RemoteError, message: str, *, retryable: bool | None = None) -> RemoteError:
    """The same error with a clearer message (and, when given, another `retryable`)."""
    return RemoteError(message, status=error.status, code=error.code, request_id=error.request_id,
                       endpoint=error.endpoint, retryable=error.retryable if retryable is None else retryable)


def _has_credentials(credentials) -> bool:
    return bool(getattr(credentials, "access_token", None)
                or (getattr(credentials, "client_id", None) and getattr(credentials, "client_secret", None)))
