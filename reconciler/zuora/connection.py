"""The HTTP session with Zuora (with deadline.py, the package's httpx user): headers, retries, errors -> RemoteError.

`Connection` sends one logical call: it attaches the bearer token (`reconciler.zuora.auth`), asks
`reconciler.zuora.retry.decide` after each failed attempt whether to send again, sleeps through the
policy's injectable `sleep`, reports every attempt to `on_call` and maps answers and network failures to
`RemoteError`. client.py's `ZuoraClient` puts it together with the operations.
"""

from __future__ import annotations

import json
import logging
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence, TypeVar, cast

import httpx

from reconciler.zuora import deadline

from reconciler import __version__
from reconciler.errors import AuthError, RemoteError
from reconciler.zuora.auth import TOKEN_PATH, Auth, Credentials
from reconciler.zuora.operations import CHUNK, Body, file_error
from reconciler.zuora.retry import (
    RETRYABLE_CATEGORIES,
    Pacer,
    RETRYABLE_STATUSES,
    Attempted,
    Call,
    Failure,
    GiveUp,
    RetryPolicy,
    code_category,
    decide,
    error_details,
    outcome_of,
    retry_after_seconds,
)
from reconciler.zuora.wire import (
    Redactor,
    describe_body,
    new_track_id,
    validate_base_url,
    validate_header_value,
    validate_idempotency_key,
    validate_track_id,
)

__all__ = ["DEFAULT_CALL_TIMEOUT", "DEFAULT_TIMEOUT", "MAX_JSON_BYTES", "Connection"]

log = logging.getLogger("reconciler.zuora")

T = TypeVar("T")
Handle = Callable[[httpx.Response, str], T]  # (2xx response, "METHOD /path") -> the call's value
DEFAULT_TIMEOUT = httpx.Timeout(120.0, connect=10.0)  # Zuora's gateway gives up after 120 s
DEFAULT_CALL_TIMEOUT = 120.0  # the wall-clock bound of one attempt, whole body included (zuora.call_timeout)
MAX_JSON_BYTES = 8 * 1024 * 1024  # no JSON answer of these APIs comes near it; a hostile one stops here
_RESENDABLE_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
_KEYED_METHODS = frozenset({"POST", "PATCH"})
_NO_CONNECTION = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)  # nothing was sent
_HOPELESS = (httpx.UnsupportedProtocol, httpx.LocalProtocolError)  # sending again cannot help


class Connection:
    """One thread-safe HTTP session with Zuora: every call goes through `request` or `stream`."""

    def __init__(self, *, base_url: str, credentials: Credentials | None = None,
                 transport: httpx.BaseTransport | None = None, entity_ids: str | Sequence[str] | None = None,
                 org_ids: str | Sequence[str] | None = None, zuora_version: str | None = None,
                 track_id: str | None = None, parallelism: int = 16, on_call: Callable[[Call], None] | None = None,
                 retry: RetryPolicy | None = None, timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
                 clock: Callable[[], float] = time.monotonic, call_timeout: float = DEFAULT_CALL_TIMEOUT):
        self.base_url = validate_base_url(base_url)
        if not call_timeout > 0:
            raise ValueError(f"call_timeout must be above 0 seconds, got {call_timeout!r}")
        self.call_timeout = float(call_timeout)
        self.deadline: float | None = None  # time.monotonic() past which no call is sent or waited on (apply --timeout)
        self.track_id = validate_track_id(track_id) if track_id is not None else new_track_id()
        credentials = credentials or Credentials()
        self._redact = Redactor(credentials.client_secret, credentials.access_token)
        self.auth = Auth(credentials, base_url=self.base_url, request_token=self._request_token, clock=clock,
                         redactor=self._redact)
        self._on_call = on_call
        self._retry = retry or RetryPolicy()
        self._pacer = Pacer(clock=self._retry.clock, max_wait=self._retry.max_elapsed)
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
        limits = httpx.Limits(max_connections=size + 2, max_keepalive_connections=size)  # +2: token refresh, polling
        if transport is None:
            transport = deadline.deadline_transport(verify=verify, limits=limits)
        self._http = httpx.Client(
            base_url=self.base_url, headers=headers, transport=transport, timeout=timeout, follow_redirects=False,
            verify=verify, limits=limits,
        )

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def request(self, method: str, path: str, *, params: Mapping[str, Any] | None = None, body: Body | None = None,
                idempotency_key: str | None = None) -> dict[str, Any]:
        """One logical call, retried per the policy; the JSON object of its 2xx answer, or RemoteError."""
        return self._call(method, path, self._json_of, params=params, body=body, idempotency_key=idempotency_key)

    def stream(self, path: str, consume: Callable[[Iterator[bytes]], T]) -> T:
        """GET `path` and return `consume(chunks of the 2xx body)`; retried as a whole like `request`."""

        def handle(response: httpx.Response, endpoint: str) -> T:
            if "json" in response.headers.get("content-type", "").lower():
                self._json_of(response, endpoint)  # a JSON answer here is an error body in disguise
            return consume(deadline.on_time(response.iter_bytes(CHUNK)))  # network failures here are httpx errors

        return self._call("GET", path, handle)

    def spacing(self, share: float) -> float:
        """Seconds between calls for them to spend at most `share` of the rate limit the answers so far report."""
        return self._pacer.spacing(share)

    def authenticate(self) -> None:
        """Check the credentials before anything is written: fetch the OAuth token (kept for the calls that
        follow), or try a static token on one cheap GET. AuthError when Zuora refuses them; other failures
        of that GET say nothing about the token and are left to the calls that follow."""
        if not self.auth.static:
            self.auth.bearer()
            return
        try:
            self._call("GET", "/objects/jobs", self._json_of, params={"pageSize": 1})
        except AuthError:
            raise
        except RemoteError:
            pass

    def _request_token(self, form: dict[str, str]) -> dict[str, Any]:
        """POST /oauth/token with `form`, without a bearer; resent freely (a token request acts on nothing)."""
        return self._call("POST", TOKEN_PATH, self._json_of, body=lambda stack: {"data": form}, bearer=False,
                          resendable=True)

    # The one request path: auth, headers, retries, error mapping

    def _call(self, method: str, path: str, handle: Handle[T], *, params: Mapping[str, Any] | None = None,
              body: Body | None = None, idempotency_key: str | None = None, bearer: bool = True,
              resendable: bool | None = None) -> T:
        """One logical call, retried per the policy; returns `handle(response, endpoint)` for a 2xx answer."""
        if idempotency_key is not None:
            if method not in _KEYED_METHODS:
                raise ValueError(f"Zuora accepts an Idempotency-Key only on POST and PATCH, not {method}")
            validate_idempotency_key(idempotency_key)
        if resendable is None:
            resendable = method in _RESENDABLE_METHODS or idempotency_key is not None
        endpoint = f"{method} {path}"
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise RemoteError("the run's time limit (--timeout) ran out before this call was sent", endpoint=endpoint,
                              retryable=True)
        policy = self._retry
        started = policy.clock()
        refreshed = False
        attempt = 0
        acted = False  # an earlier attempt may have taken effect (it reached Zuora, no answer says otherwise)
        while True:
            attempt += 1
            headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
            # Getting (or refreshing, between two attempts) the token is part of this call: its failure is
            # an AuthError, which ends the run and never counts as Zuora's answer to this request (which
            # this attempt did not send; an earlier attempt of a keyed call may have, so its outcome stays
            # unknown and the next run resumes it with the same key).
            token = self.auth.bearer() if bearer else None
            if token:
                headers["Authorization"] = f"Bearer {token}"
            pause = self._pacer.wait() if bearer else 0.0  # the token endpoint has windows of its own
            if pause:
                if self.deadline is not None and time.monotonic() + pause >= self.deadline:
                    raise RemoteError("the run's time limit (--timeout) ends before Zuora's rate limit resets",
                                      endpoint=endpoint, retryable=True)
                log.debug("%s: no request left in Zuora's rate-limit window; waiting %.1f s", endpoint, pause)
                policy.sleep(pause)
            t0 = time.monotonic()
            try:
                value, status, request_id = self._attempt(method, path, endpoint, params, body, headers, handle)
            except Failure as failure:
                decision = decide(policy, failure, Attempted(
                    method=method, attempt=attempt, elapsed=policy.clock() - started, resendable=resendable,
                    keyed=idempotency_key is not None, acted=acted, bearer=bearer, static_token=self.auth.static,
                    refreshed=refreshed))
                acted = acted or failure.reached_server
                error = decision.error if isinstance(decision, GiveUp) else failure.error
                self._report(method, path, error.status, error.request_id, idempotency_key,
                             outcome_of(failure, decision), attempt, t0, str(error),
                             retry_in=None if isinstance(decision, GiveUp) else (decision.after or 0.0),
                             max_attempts=policy.max_attempts)
                if isinstance(decision, GiveUp):
                    if failure.unauthorized and bearer:  # the token was refused, not the request
                        raise _refused_token(decision.error, static=self.auth.static) from failure.__cause__
                    raise decision.error from failure.__cause__
                if self.deadline is not None and time.monotonic() + (decision.after or 0) >= self.deadline:
                    raise failure.error from failure.__cause__  # another attempt would outlive the run's limit
                if decision.refresh:
                    refreshed = True
                    self.auth.invalidate(token)
                if decision.after:
                    policy.sleep(decision.after)
                continue
            self._report(method, path, status, request_id, idempotency_key, "ok", attempt, t0, None)
            return value

    def _attempt(self, method: str, path: str, endpoint: str, params: Mapping[str, Any] | None,
                 body: Body | None, headers: dict[str, str], handle: Handle[T]) -> tuple[T, int, str | None]:
        """Send once; return (value, status, request id) or raise `Failure`.

        The attempt, body included, ends by its deadline: `call_timeout` from now, or the run's `deadline` if
        sooner. Every socket read and write is bounded by what is left of it (a server trickling bytes gets a
        timeout, not a hang), and so is every chunk of the body whatever the transport.
        """
        limit = self.call_timeout
        at = time.monotonic() + limit
        if self.deadline is not None and self.deadline < at:
            at, limit = self.deadline, -1.0
        with ExitStack() as stack:
            stack.enter_context(deadline.bounded(at))
            try:
                kwargs = body(stack) if body else {}
            except OSError as exc:
                raise file_error(Path(exc.filename or "?"), exc) from exc
            headers = {**headers, **kwargs.pop("headers", {})}
            request = self._http.build_request(method, path, params=params, headers=headers, **kwargs)
            try:
                response = self._http.send(request, stream=True)
            except (httpx.TransportError, OSError) as exc:  # OSError: the WSGI sandbox dropped us
                raise self._transport_failure(exc, endpoint, overdue=deadline.overdue(at, limit)) from exc
            stack.callback(response.close)
            if "Authorization" in headers:
                self._pacer.observe(response.headers)
            request_id = response.headers.get("zuora-request-id")
            try:
                keyed = "Idempotency-Key" in headers
                if keyed and response.status_code == 409:
                    # Zuora's error-handling guide: a retry with the same key may answer 409 with the original
                    # result in its body. One that carries a result is that answer; one without is "in flight".
                    raw = self._read_capped(response, endpoint)
                    data = _loads(raw, response)
                    if _carries_result(data):  # keyed calls are `request`'s: their value is the JSON object
                        value = cast(T, self._checked(data, raw, response, endpoint))
                        return value, response.status_code, request_id
                    raise self._http_failure(response, endpoint, keyed=True, raw=raw)
                if not response.is_success:
                    raise self._http_failure(response, endpoint, keyed=keyed)
                return handle(response, endpoint), response.status_code, request_id
            except httpx.DecodingError as exc:
                raise Failure(self._error(f"undecodable response body: {exc}", response, endpoint)) from exc
            except httpx.TransportError as exc:  # the body was cut off
                raise self._transport_failure(exc, endpoint, response, overdue=deadline.overdue(at, limit)) from exc

    def _transport_failure(self, exc: Exception, endpoint: str, response: httpx.Response | None = None, *,
                           overdue: str | None = None) -> Failure:
        timed_out = isinstance(exc, httpx.TimeoutException) or overdue is not None
        what = ("timed out" if timed_out else f"connection to {self.base_url} failed" if response is None
                else f"connection to {self.base_url} lost mid-answer")
        text = overdue or f"{what} ({type(exc).__name__}: {exc})"
        error = RemoteError(
            self._redact(text), endpoint=endpoint,
            status=response.status_code if response is not None else None,
            request_id=response.headers.get("zuora-request-id") if response is not None else None,
            retryable=not isinstance(exc, _HOPELESS),
        )
        return Failure(error, "timeout" if timed_out else "dropped", reached_server=not isinstance(exc, _NO_CONNECTION))

    def _http_failure(self, response: httpx.Response, endpoint: str, *, keyed: bool, raw: bytes | None = None) -> Failure:
        status = response.status_code
        raw = self._read_capped(response, endpoint) if raw is None else raw
        details = error_details(_loads(raw, response))
        message, code = details or (describe_body(raw, response.headers.get("content-type"), "a Zuora error body"),
                                    None)
        # 409 without a result: the same Idempotency-Key is still in flight; wait, then ask again with that key.
        retryable = status in RETRYABLE_STATUSES or (status == 409 and keyed)
        error = self._error(message, response, endpoint, code=code, retryable=retryable)
        retry_after = None
        if status in (429, 503):
            retry_after = retry_after_seconds(response.headers, rate_limited=status == 429)
        rejected_early = status in (401, 429)  # decided before any processing: nothing took effect
        return Failure(error, reached_server=not rejected_early, retry_after=retry_after, unauthorized=status == 401)

    def _json_of(self, response: httpx.Response, endpoint: str) -> dict[str, Any]:
        """The JSON object of a 2xx answer; `success: false` inside it is an error too."""
        raw = self._read_capped(response, endpoint)
        return self._checked(_loads(raw, response), raw, response, endpoint)

    def _checked(self, data: Any, raw: bytes, response: httpx.Response, endpoint: str) -> dict[str, Any]:
        """`data` if it is a JSON object that is not Zuora's `success: false` (which v1 operations often send
        with HTTP 200: a definitive refusal with its reasons, unless its category says retry)."""
        if not isinstance(data, dict):
            message = describe_body(raw, response.headers.get("content-type"), "a JSON object")
            raise Failure(self._error(message, response, endpoint))
        if data.get("success") is False or data.get("Success") is False:
            message, code = error_details(data) or ("success: false without a reason", None)
            retryable = code_category(code) in RETRYABLE_CATEGORIES
            raise Failure(self._error(message, response, endpoint, code=code, retryable=retryable))
        return data

    def _read_capped(self, response: httpx.Response, endpoint: str) -> bytes:
        """The whole (decoded) body, refused past MAX_JSON_BYTES: an endless or huge answer never fills memory."""
        declared = response.headers.get("content-length", "")
        too_big = Failure(self._error(f"the answer is larger than {MAX_JSON_BYTES >> 20} MB, far above any Zuora "
                                      "JSON answer; refusing it", response, endpoint))
        if declared.isdigit() and int(declared) > MAX_JSON_BYTES:
            raise too_big
        body = bytearray()
        for chunk in deadline.on_time(response.iter_bytes(CHUNK)):
            body += chunk
            if len(body) > MAX_JSON_BYTES:
                raise too_big
        return bytes(body)

    def _error(self, message: str, response: httpx.Response, endpoint: str, *, code: str | int | None = None,
               retryable: bool = False) -> RemoteError:
        return RemoteError(self._redact(message), status=response.status_code, code=code, endpoint=endpoint,
                           request_id=response.headers.get("zuora-request-id"), retryable=retryable)

    def _report(self, method: str, path: str, status: int | None, request_id: str | None, key: str | None,
                outcome: str, attempt: int, t0: float, error: str | None, *, retry_in: float | None = None,
                max_attempts: int | None = None) -> None:
        ms = int((time.monotonic() - t0) * 1000)
        call = Call(method, path, status, request_id, self.track_id, key, outcome, attempt, ms,
                    self._redact(error) if error else None, retry_in=retry_in, max_attempts=max_attempts)
        log.debug("%s %s -> %s %s in %d ms (attempt %d, Zuora-Request-Id %s)",
                  method, path, status if status is not None else "-", outcome, ms, attempt, request_id)
        if self._on_call is not None:
            self._on_call(call)


def _refused_token(error: RemoteError, *, static: bool) -> AuthError:
    """Zuora's 401 to a call as the run-level AuthError it is: the token was refused, not the request."""
    message = error.remote_message
    if not static and "ZUORA_" not in message:
        message = (f"Zuora refused a freshly issued OAuth token ({message}): the token was revoked or the client "
                   "lost its access; check ZUORA_CLIENT_ID and ZUORA_CLIENT_SECRET")
    return AuthError(message, status=error.status, code=error.code, request_id=error.request_id,
                     endpoint=error.endpoint, retryable=error.retryable)



def _carries_result(data: Any) -> bool:
    """True for a keyed 409 whose body is the original answer: a mass action's `bulkKey` or a custom object
    job's `Id`, and no `success: false`. Zuora's "still in flight" 409 is an error body with neither."""
    if not isinstance(data, dict) or data.get("success") is False or data.get("Success") is False:
        return False
    return any(isinstance(data.get(key), str) and data[key] for key in ("bulkKey", "Id", "id"))


def _loads(raw: bytes, response: httpx.Response) -> Any:
    """The parsed JSON body, or None when it is not JSON (wrong content type, empty, truncated)."""
    if "json" not in response.headers.get("content-type", "").lower() or not raw.strip():
        return None
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return None
