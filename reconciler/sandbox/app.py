"""The WSGI app: routing, rate limits, auth, faults, idempotency, common headers and the never-a-traceback wrapper."""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from dataclasses import dataclass
from http import HTTPStatus

from . import admin, auth, bulk, customobjects, definitions, faults, idempotency, limits
from .store import Store, sandbox_now
from .web import (
    ADMIN,
    INTERNAL,
    METHOD,
    NOT_FOUND,
    OAUTH,
    OBJECTS,
    TEMPORARY,
    V1,
    ApiError,
    Context,
    DroppedConnection,
    Request,
    Response,
    family_of,
    json_response,
    maybe_gzip,
)

log = logging.getLogger(__name__)

CONCURRENCY_LIMIT = 40
CONCURRENCY_MESSAGE = ("The total number of concurrent requests has exceeded the limit allowed by the system."
                       " Please resubmit your request later.")
TRACK_ID_FORBIDDEN = set(":;\"'")

ZUORA, TOKEN, ADMIN_ROUTE = "zuora", "token", "admin"
ROUTES = [
    ("POST", "/oauth/token", TOKEN, None),
    ("POST", "/v1/bulk", ZUORA, bulk.submit),
    ("GET", "/v1/bulk/{bulk_key}", ZUORA, bulk.get),
    ("PUT", "/v1/bulk/{bulk_key}/stop", ZUORA, bulk.stop),
    ("GET", "/v1/files/{file_id}", ZUORA, bulk.download),
    ("POST", "/objects/jobs", ZUORA, customobjects.create),
    ("GET", "/objects/jobs", ZUORA, customobjects.listing),
    ("GET", "/objects/jobs/{job_id}", ZUORA, customobjects.get),
    ("GET", "/objects/jobs/{job_id}/errors", ZUORA, customobjects.errors),
    ("PATCH", "/objects/jobs/{job_id}/cancel", ZUORA, customobjects.cancel),
    ("POST", "/objects/jobs/{job_id}/files", ZUORA, customobjects.upload),
    ("GET", "/objects/definitions/default", ZUORA, definitions.listing),
    ("GET", "/objects/definitions/default/{object_name}", ZUORA, definitions.get),
    ("GET", "/_sandbox/state", ADMIN_ROUTE, admin.state),
    ("POST", "/_sandbox/clock", ADMIN_ROUTE, admin.clock),
    ("GET", "/_sandbox/faults", ADMIN_ROUTE, admin.get_faults),
    ("POST", "/_sandbox/faults", ADMIN_ROUTE, admin.set_faults),
    ("POST", "/_sandbox/reset", ADMIN_ROUTE, admin.reset),
    ("POST", "/_sandbox/tokens", ADMIN_ROUTE, admin.tokens),
    ("GET", "/_sandbox/records", ADMIN_ROUTE, admin.list_records),
    ("POST", "/_sandbox/fail", ADMIN_ROUTE, admin.fail),
    ("POST", "/_sandbox/rate", ADMIN_ROUTE, admin.rate),
    ("GET", "/_sandbox/rate", ADMIN_ROUTE, admin.rate_usage),
    ("POST", "/_sandbox/permissions", ADMIN_ROUTE, admin.permissions),
]
COMPILED = [
    (method, re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern) + "$"), kind, handler)
    for method, pattern, kind, handler in ROUTES
]


@dataclass(frozen=True)
class Settings:
    """What one app accepts and how fast its jobs move."""

    client_id: str
    client_secret: str
    pending_seconds: float
    rows_per_second: float
    token_seconds: int
    # Zuora's other documented answers (README "The sandbox"): how a replayed Idempotency-Key answers
    # (200: the stored status; 409: the stored body with status 409), whether v1 errors come as their
    # HTTP status or as 200 + `success: false`, and how the 6th active custom object job is refused
    # (400, or created `failed` with 71012560).
    replay_status: int = 200
    v1_errors: str = "http"
    job_limit: str = "400"
    tenant_type: str = "production"  # whose rate limits apply (limits.TENANT_TYPES)
    stopping_seconds: float = 0.0  # how long a stopped mass action stays Stopping (at least one row's time)
    # The Custom Objects permissions the API user lacks (definitions.PERMISSIONS): their calls get a 403.
    denied_permissions: frozenset = frozenset()

    @property
    def user_id(self) -> str:
        """The 32-hex id jobs are attributed to."""
        return auth.user_id(self.client_id)

    @property
    def user_email(self) -> str:
        """The uploader shown as uploadedBy."""
        return auth.user_email(self.client_id)


def match(method: str, path: str):
    """(kind, handler, params) for a request; 404 or 405 (with Allow) when nothing fits."""
    allowed = []
    for route_method, pattern, kind, handler in COMPILED:
        found = pattern.match(path)
        if found:
            if route_method == method:
                return kind, handler, found.groupdict()
            allowed.append(route_method)
    if allowed:
        raise ApiError(405, f"Method {method} is not allowed on {path}; allowed: {', '.join(allowed)}",
                       category=METHOD, headers=[("Allow", ", ".join(allowed))])
    raise ApiError(404, f"No such endpoint: {path}", category=NOT_FOUND)


class SandboxApp:
    """The Zuora simulator as a thread-safe WSGI callable."""

    def __init__(self, store: Store, settings: Settings, clock):
        self.store = store
        self.settings = settings
        self.clock = clock
        # Injected latency waits on the clock: one with its own sleep (a test's fake clock) says how;
        # a plain callable such as time.time gets a real sleep.
        self.sleep = getattr(clock, "sleep", None) or time.sleep
        self._lock = threading.Lock()
        self._in_flight = 0

    def install_definitions(self, found: dict) -> None:
        """Make `found` (object name -> definition) the tenant's custom object definitions."""
        with self.store.write() as conn:
            definitions.install(conn, found)

    def __call__(self, environ, start_response):
        request_id = str(uuid.uuid4())
        family = family_of(environ.get("PATH_INFO") or "/")
        # Only /v1 calls count towards (and report) the Default concurrency limit; token calls are
        # not counted (reference C.3).
        counted = family == V1
        with self._lock:
            self._in_flight += counted
            over_limit = counted and self._in_flight > CONCURRENCY_LIMIT
        try:
            request = Request(environ)
            spent = None
            try:
                if family != ADMIN:  # every call counts towards the tenant's rate limits, refused ones too
                    spent = self._spend(request, family)
                if over_limit:
                    raise ApiError(429, CONCURRENCY_MESSAGE, code=50000070, headers=[("Retry-After", "120")])
                if spent is not None and spent.exceeded:
                    raise spent.error(family)
                response = self._dispatch(request, family, request_id)
            except ApiError as err:
                response = json_response(err.status, err.payload(family), err.headers)
            except ConnectionResetError:  # ours (DroppedConnection) or the client hung up mid-body: no answer
                raise
            except Exception:  # the one place an unexpected error becomes a 500 in the family's shape
                log.exception("sandbox: unexpected error on %s %s", request.method, request.path)
                err = ApiError(500, "Internal error in the sandbox", category=INTERNAL)
                response = json_response(500, err.payload(family))
            headers = self._headers(request, response, family, request_id, spent, over_limit)
            start_response(f"{response.status} {HTTPStatus(response.status).phrase}", headers)
            return response.chunks if response.chunks is not None else [response.body]
        finally:
            with self._lock:
                self._in_flight -= counted

    def _dispatch(self, req: Request, family: str, request_id: str) -> Response:
        track_id = req.header("zuora-track-id")
        if track_id is not None and family != ADMIN and not _valid_track_id(track_id):
            raise ApiError(400, "Zuora-Track-Id must be at most 64 US-ASCII characters without : ; \" or '")
        if family in (V1, OBJECTS):
            return self._zuora(req, family, request_id)
        kind, handler, params = match(req.method, req.path)
        with self.store.write() as conn:
            ctx = Context(conn, sandbox_now(conn, self.clock), self.settings, req)
            if kind == TOKEN:
                return auth.issue_token(conn, req, ctx.now, self.settings)
            return handler(ctx, **params)

    def _zuora(self, req: Request, family: str, request_id: str) -> Response:
        """A Zuora endpoint: bearer auth, faults, Idempotency-Key, then the handler's one transaction."""
        try:
            route = match(req.method, req.path)
        except ApiError as err:
            route, route_error = None, err
        with self.store.write() as conn:
            auth.check_bearer(conn, req, sandbox_now(conn, self.clock))
            decision = faults.draw(conn) if route else None
        if route is None:
            raise route_error
        _, handler, params = route
        if decision.rate_limited:
            raise faults.rate_limited(family, decision.retry_after)
        key = req.header("idempotency-key") if req.method in ("POST", "PATCH") else None
        outcome, stored = None, None
        if key is not None:
            idempotency.validate_key(key)
            with self.store.write() as conn:
                outcome, stored = idempotency.claim(conn, key, req.method, req.path, sandbox_now(conn, self.clock))
        claimed = outcome == idempotency.NEW
        # Faults hit replays too: a storm does not spare a client retrying with its key.
        try:
            if decision.latency_ms:
                self.sleep(decision.latency_ms / 1000.0)
            if decision.error_before:
                if claimed:
                    with self.store.write() as conn:
                        idempotency.release(conn, key)
                raise ApiError(503, "Service temporarily unavailable (injected fault, nothing was done)",
                               category=TEMPORARY)
            response = self._replay(stored) if outcome == idempotency.REPLAY else self._run(
                req, family, request_id, handler, params, key)
        finally:
            if claimed:
                idempotency.forget(key)
        if decision.error_after:
            raise ApiError(500, "Internal error (injected fault; the request took effect)", category=INTERNAL)
        if decision.drop:
            raise DroppedConnection("sandbox fault injection: connection dropped after the effect")
        return response

    def _run(self, req, family, request_id, handler, params, key) -> Response:
        """Run the handler; its effect and the stored idempotent response commit together."""
        with self.store.write() as conn:
            ctx = Context(conn, sandbox_now(conn, self.clock), self.settings, req, key)
            try:
                with conn.savepoint():
                    response = handler(ctx, **params)
            except ApiError as err:
                # A v1 operation's own refusal; with v1_errors "200" it comes as Zuora's HTTP 200 + success: false.
                status = 200 if family == V1 and self.settings.v1_errors == "200" and err.status < 500 else err.status
                response = json_response(status, err.payload(family), err.headers)
            response.headers.append(("Zuora-Request-Id", request_id))
            if key is not None:
                idempotency.save(conn, key, response)
        return response

    def _replay(self, stored: Response) -> Response:
        """The stored answer to a repeated key: as stored, or (replay_status 409) a stored success's body
        with status 409, the form Zuora's error-handling guide tells clients to read the result from."""
        if self.settings.replay_status == 409 and 200 <= stored.status < 300:
            return Response(409, stored.body, content_type=stored.content_type, headers=list(stored.headers))
        return stored

    def _spend(self, req: Request, family: str) -> limits.Spent:
        request_class = limits.AUTH if family == OAUTH else limits.API
        with self.store.write() as conn:
            return limits.spend(conn, self.settings.tenant_type, request_class, sandbox_now(conn, self.clock),
                                req.environ.get("REMOTE_ADDR"))

    def _headers(self, req: Request, response: Response, family: str, request_id: str, spent,
                 over_limit: bool) -> list:
        """Common headers: request id, track id echo, rate and concurrency limits, gzip, lengths."""
        response = maybe_gzip(response, req.header("accept-encoding") or "")
        headers = list(response.headers)
        names = {name.lower() for name, _ in headers}
        if "zuora-request-id" not in names:
            headers.append(("Zuora-Request-Id", request_id))
        track_id = req.header("zuora-track-id")
        if track_id is not None and _valid_track_id(track_id):
            headers.append(("Zuora-Track-Id", track_id))
        if spent is not None:
            rate = spent.headers()
            if response.status == 429 and not spent.exceeded and not over_limit:  # an injected 429
                retry = dict((name.lower(), value) for name, value in response.headers).get("retry-after", "1")
                rate = [rate[0], ("RateLimit-Remaining", "0"), ("RateLimit-Reset", retry)]
            headers += rate
        if family == V1:
            with self._lock:
                remaining = max(0, CONCURRENCY_LIMIT - self._in_flight)
            headers += [("Concurrency-Limit-Type", "Default"), ("Concurrency-Limit-Limit", str(CONCURRENCY_LIMIT)),
                        ("Concurrency-Limit-Remaining", str(remaining))]
        content_type = response.content_type
        if content_type == "application/json":
            content_type = "application/json; charset=utf-8"
        headers.append(("Content-Type", content_type))
        if "content-length" not in names:
            headers.append(("Content-Length", str(len(response.body))))
        return headers


def _valid_track_id(value: str) -> bool:
    return len(value) <= 64 and all(32 <= ord(c) < 127 and c not in TRACK_ID_FORBIDDEN for c in value)


REPLAY_STATUSES = (200, 409)
V1_ERRORS = ("http", "200")
JOB_LIMITS = ("400", "failed")


def make_settings(client_id, client_secret, pending_seconds, rows_per_second, token_seconds, *,
                  replay_status=200, v1_errors="http", job_limit="400", tenant_type="production",
                  denied_permissions=(), stopping_seconds=0.0) -> Settings:
    """Validated settings; a bad value raises ValueError naming it."""
    if len(client_id) != 36:
        raise ValueError(f"client_id must be exactly 36 characters (got {len(client_id)})")
    if not client_secret or len(client_secret) > 42:
        raise ValueError("client_secret must be 1 to 42 characters")
    if pending_seconds < 0:
        raise ValueError("pending_seconds must not be negative")
    if rows_per_second <= 0:
        raise ValueError("rows_per_second must be greater than 0")
    if token_seconds <= 0:
        raise ValueError("token_seconds must be greater than 0")
    if not 0 <= stopping_seconds < float("inf"):
        raise ValueError("stopping_seconds must be a number of seconds, 0 or more")
    for name, value, allowed in (("replay_status", replay_status, REPLAY_STATUSES),
                                 ("v1_errors", v1_errors, V1_ERRORS), ("job_limit", job_limit, JOB_LIMITS),
                                 ("tenant_type", tenant_type, tuple(limits.TENANT_TYPES))):
        if value not in allowed:
            raise ValueError(f"{name} must be one of {', '.join(map(str, allowed))} (got {value!r})")
    unknown = sorted(set(denied_permissions) - set(definitions.PERMISSIONS))
    if unknown:
        raise ValueError(f"denied_permissions: {unknown[0]!r} is not one of {', '.join(definitions.PERMISSIONS)}")
    return Settings(client_id, client_secret, float(pending_seconds), float(rows_per_second), int(token_seconds),
                    replay_status=replay_status, v1_errors=v1_errors, job_limit=job_limit, tenant_type=tenant_type,
                    denied_permissions=frozenset(denied_permissions), stopping_seconds=float(stopping_seconds))
