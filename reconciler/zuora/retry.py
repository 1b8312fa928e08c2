"""Attempts at a Zuora call: how a failure is classified, whether and when to send again, what is recorded.

Standard library only, so the policy is tested without the network. `decide(policy, failure, attempted)`
is the one decision after a failed attempt: `Retry(after=...)` or `GiveUp(error)`. It never sleeps, reads
a clock or does I/O; the client measures the elapsed time, sleeps through the policy's injectable `sleep`
and sends again. Bounded exponential backoff with full jitter drawn from the policy's random source.

`Pacer` keeps the calls inside the rate limit the answers' RateLimit-* headers report.

Retry safety: a GET or PUT may be sent again after any transient failure. A POST or PATCH is sent
again only when it carries an Idempotency-Key (Zuora then replays its stored answer instead of acting
twice) or when the server cannot have acted on it: the connection was never established, the token
was refused (401) or the call was rate limited (429 is decided before any processing). A POST without
a key that fails after it may have reached Zuora (5xx, timeout, dropped connection) is reported, not
repeated: repeating it could create a second job.
"""

from __future__ import annotations

import email.utils
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from reconciler.errors import RemoteError

# Zuora's error-handling guide: retry these statuses; never other 4xx.
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
# Last two digits of an 8-digit Zuora error code: locking contention, temporary, limit exceeded,
# integration. Only these make a `success: false` body worth retrying.
RETRYABLE_CATEGORIES = frozenset({50, 61, 70, 99})


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries: at most `max_attempts` calls and `max_elapsed` seconds in total."""

    max_attempts: int = 6
    max_elapsed: float = 120.0
    base: float = 0.5
    cap: float = 30.0
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    rng: random.Random = field(default_factory=random.Random)

    def backoff(self, attempt: int) -> float:
        """Full-jitter delay after failed attempt number `attempt` (1-based)."""
        ceiling = min(self.cap, self.base * (2 ** max(0, attempt - 1)))
        return self.rng.uniform(0.0, ceiling)

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """The wait before the next attempt: never shorter than what the server asked for."""
        jittered = self.backoff(attempt)
        return jittered if retry_after is None else max(retry_after, jittered)

    def permits(self, attempt: int, elapsed: float, delay: float) -> bool:
        """True when another attempt after `delay` seconds stays inside both bounds."""
        return attempt < self.max_attempts and elapsed + delay <= self.max_elapsed


@dataclass(frozen=True)
class Call:
    """One HTTP attempt, as reported to the client's `on_call` (the ledger's event log)."""

    method: str
    path: str
    status: int | None
    request_id: str | None
    track_id: str
    idempotency_key: str | None
    outcome: str  # "ok" | "error" | "retry" | "dropped" | "timeout"
    attempt: int
    duration_ms: int
    error: str | None
    retry_in: float | None = None  # outcome "retry" (or a dropped/timed-out attempt sent again): seconds until then
    max_attempts: int | None = None  # the policy's bound on attempts, for "attempt 2 of 6"


class Failure(Exception):
    """One failed attempt: the error to raise, and the facts that decide whether to send again."""

    def __init__(self, error: RemoteError, kind: str = "http", *, reached_server: bool = True,
                 retry_after: float | None = None, unauthorized: bool = False):
        super().__init__(str(error))
        self.error = error
        self.kind = kind  # "http" (an answer came), "dropped" or "timeout"
        self.reached_server = reached_server  # False when the server cannot have acted on the request
        self.retry_after = retry_after
        self.unauthorized = unauthorized


def next_delay(policy: RetryPolicy, failure: Failure, *, attempt: int, elapsed: float,
               resendable: bool) -> float | None:
    """Seconds to wait before sending again, or None to give up.

    A request that is not `resendable` (a POST/PATCH without an Idempotency-Key) is sent again only
    when it cannot have reached the server: sending it twice could create two jobs.
    """
    if not failure.error.retryable or not (resendable or not failure.reached_server):
        return None
    wait = policy.delay(attempt, failure.retry_after)
    return wait if policy.permits(attempt, elapsed, wait) else None


@dataclass(frozen=True)
class Attempted:
    """What the client knows about a call when one of its attempts failed."""

    method: str
    attempt: int  # the 1-based number of the attempt that failed
    elapsed: float  # seconds since the first attempt started, by the policy's clock
    resendable: bool  # sending it twice cannot act twice (a GET, a PUT, a keyed POST)
    keyed: bool = False  # it carries an Idempotency-Key
    acted: bool = False  # an earlier attempt may have taken effect (it reached Zuora, no answer said otherwise)
    bearer: bool = False  # it was sent with a bearer token (the token request itself is not)
    static_token: bool = False  # that token was given as is (ZUORA_ACCESS_TOKEN): it cannot be refreshed
    refreshed: bool = False  # the token was already refreshed once during this call


@dataclass(frozen=True)
class Retry:
    """Send the call again after `after` seconds; with `refresh`, drop the refused token first."""

    after: float
    refresh: bool = False


@dataclass(frozen=True)
class GiveUp:
    """Stop and raise `error` (restated to say why it was not sent again, when that is not obvious)."""

    error: RemoteError


def decide(policy: RetryPolicy, failure: Failure, attempted: Attempted) -> Retry | GiveUp:
    """After a failed attempt: send again (when, and whether with a fresh token), or give up with which error."""
    error = failure.error
    if failure.unauthorized and attempted.bearer:
        if attempted.static_token:
            error = restate(error, "ZUORA_ACCESS_TOKEN was rejected: set a valid token, or set "
                                   "ZUORA_CLIENT_ID and ZUORA_CLIENT_SECRET so tokens are refreshed")
            return _give_up(error, attempted)
        if not attempted.refreshed and attempted.attempt < policy.max_attempts:
            return Retry(0.0, refresh=True)  # the token expired early or was revoked: once more
        return _give_up(error, attempted)
    delay = next_delay(policy, failure, attempt=attempted.attempt, elapsed=attempted.elapsed,
                       resendable=attempted.resendable)
    if delay is not None:
        return Retry(delay)
    if error.retryable:
        why = (f"gave up after {attempted.attempt} attempt(s)" if attempted.resendable or not failure.reached_server
               else f"not retried: a {attempted.method} without an Idempotency-Key may already have taken effect")
        error = restate(error, f"{error.remote_message} ({why})")
    return _give_up(error, attempted)


def _give_up(error: RemoteError, attempted: Attempted) -> GiveUp:
    if attempted.acted and attempted.keyed and not error.retryable:
        # This refusal (an expired token, a proxy's page) answers only the last attempt; an earlier
        # one may have created the job, so the outcome stays unknown: resume with the key.
        error = restate(error, f"{error.remote_message} (after an earlier attempt that may have taken effect: "
                               "outcome unknown)", retryable=True)
    return GiveUp(error)


def outcome_of(failure: Failure, decision: Retry | GiveUp) -> str:
    """The `Call.outcome` of a failed attempt: "dropped" or "timeout", else "retry" or "error"."""
    if failure.kind != "http":
        return failure.kind
    return "retry" if isinstance(decision, Retry) else "error"


def restate(error: RemoteError, message: str, *, retryable: bool | None = None) -> RemoteError:
    """The same error with a clearer message (and, when given, another `retryable`)."""
    return RemoteError(message, status=error.status, code=error.code, request_id=error.request_id,
                       endpoint=error.endpoint, retryable=error.retryable if retryable is None else retryable)


def error_details(data: Any) -> tuple[str, Any] | None:
    """(message, code) from any Zuora error shape: v1 reasons, custom object {code, message}, 401 {message},
    legacy Errors."""
    if not isinstance(data, dict):
        return None
    for list_key, code_key, message_key in (("reasons", "code", "message"), ("Errors", "Code", "Message")):
        items = data.get(list_key)
        items = [r for r in items if isinstance(r, dict)] if isinstance(items, list) else []
        if items:
            messages = [str(r[message_key]).strip() for r in items if r.get(message_key)]
            return "; ".join(messages) or "no message given", _code(items[0].get(code_key))
    for code_key, message_key in (("code", "message"), ("FaultCode", "FaultMessage")):
        if data.get(message_key):
            return str(data[message_key]), _code(data.get(code_key))
    return error_details(data["error"]) if isinstance(data.get("error"), dict) else None


def _code(value: Any) -> str | int | None:
    if value is None or (isinstance(value, (str, int)) and not isinstance(value, bool)):
        return value
    return str(value)


def code_category(code: object) -> int | None:
    """The 2-digit category of a Zuora error code (`53100320` -> 20; a bare `70` -> 70)."""
    text = str(code).strip() if code is not None else ""
    if not text.isdigit() or len(text) not in (2, 8):
        return None
    return int(text[-2:])


def retry_after_seconds(headers: Mapping[str, str], *, rate_limited: bool = True,
                        now: Callable[[], float] = time.time) -> float | None:
    """Seconds the server asked us to wait: `Retry-After` (seconds or HTTP date), else, for a 429,
    `RateLimit-Reset` (sent on every answer, it only means "wait" once the limit was hit)."""
    value = headers.get("retry-after")
    if value is not None:
        seconds = _number(value)
        if seconds is None:
            try:
                seconds = email.utils.parsedate_to_datetime(value.strip()).timestamp() - now()
            except (TypeError, ValueError, IndexError, OverflowError):
                seconds = None
        if seconds is not None:
            return max(0.0, seconds)
    reset = _number(headers.get("ratelimit-reset")) if rate_limited else None
    if reset is None:
        return None
    # The draft standard says delta-seconds; some gateways send an epoch timestamp instead.
    return max(0.0, reset - now() if reset > 1_000_000_000 else reset)


class Pacer:
    """Keeps a client's calls inside Zuora's rate limit instead of running into its 429s.

    Every answer's `RateLimit-Remaining` and `RateLimit-Reset` (the window closest to exhaustion) are
    noted, and `RateLimit-Limit`'s policies (`2500;w=60, 5000;w=3600, 10000;w=86400`); each call sent
    spends one of the remaining requests. Once none is left, `wait()` says how long until the window
    resets. A wait longer than `max_wait` is not made (the call goes, and its 429 is handled by the retry
    policy, which gives up within its own bounds). `spacing(share)` says how far apart calls must be to
    spend at most that share of the quota (--wait's polls use it). Thread-safe; no I/O, no sleeping.
    """

    def __init__(self, *, clock: Callable[[], float] = time.monotonic, max_wait: float = 120.0,
                 now: Callable[[], float] = time.time):
        self._clock = clock
        self._now = now
        self._max_wait = max_wait
        self._lock = threading.Lock()
        self._remaining: int | None = None
        self._until = 0.0
        self._window = float(ZUORA_WINDOWS[-1])  # the reported window's length
        self._policies: tuple[tuple[float, float], ...] = ()  # (limit, window seconds) of every window

    def observe(self, headers: Mapping[str, str]) -> None:
        """Note the rate-limit headers of one answer (ignored when absent or not numbers)."""
        remaining, reset = _number(headers.get("ratelimit-remaining")), _number(headers.get("ratelimit-reset"))
        if remaining is None or reset is None:
            return
        if reset > 1_000_000_000:  # an epoch timestamp instead of delta-seconds, as some gateways send
            reset = max(0.0, reset - self._now())
        policies = _policies(headers.get("ratelimit-limit", "")) or self._policies
        windows = sorted({w for _, w in policies} or ZUORA_WINDOWS)
        with self._lock:
            self._remaining = max(0, int(remaining))
            self._until = self._clock() + max(0.0, reset)
            self._policies = policies
            # The reported window is the shortest one that can still be `reset` seconds from its end.
            self._window = next((float(w) for w in windows if w >= reset), float(windows[-1]))

    def wait(self) -> float:
        """Seconds to wait before sending the next call (0: send now); spends one remaining request."""
        with self._lock:
            if self._remaining is None:
                return 0.0
            left = self._until - self._clock()
            if left <= 0:  # the window reset: the next answer says how many we have
                self._remaining = None
                return 0.0
            if self._remaining > 0:
                self._remaining -= 1
                return 0.0
            return left if left <= self._max_wait else 0.0

    def spacing(self, share: float) -> float:
        """Seconds between calls for them to spend at most `share` (0 < share <= 1) of the quota: of every
        window's whole limit (a day's polls never pass share x the daily limit), and of what the reported
        window has left, spread over a whole window's length so the bound holds however often it is asked
        (a window with nothing to spare: none until it resets). 0 before any answer said."""
        with self._lock:
            gaps = [window / (share * limit) for limit, window in self._policies if limit > 0]
            left = self._until - self._clock()
            if self._remaining is not None and left > 0:
                spread = self._window / (share * self._remaining) if self._remaining else float("inf")
                gaps.append(min(spread, left))
            return max(gaps, default=0.0)


ZUORA_WINDOWS = (60, 3600, 86400)  # Zuora counts requests per minute, hour and day (rate-limit guide)


def _policies(value: str) -> tuple[tuple[float, float], ...]:
    """The `limit;w=seconds` policies of a RateLimit-Limit value (the draft standard's form), as numbers."""
    found = []
    for item in value.split(","):
        limit, _, rest = item.strip().partition(";")
        window = next((_number(p.strip()[2:]) for p in rest.split(";") if p.strip().startswith("w=")), None)
        count = _number(limit.strip())
        if count is not None and window is not None and count > 0 and window > 0:
            found.append((count, window))
    return tuple(found)


def _number(value: str | None) -> float | None:
    try:
        number = float(value) if value is not None else None
    except ValueError:
        return None
    return number if number is not None and number == number and number != float("inf") else None
