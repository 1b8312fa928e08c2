"""Rate limits per tenant type (reference C.1, C.2): minute, hour and day windows, enforced with real 429s.

Every request to a Zuora endpoint counts, failed ones too, in the request class Zuora counts it in:
AUTH (POST /oauth/token, also limited per client IP) or API (everything under /v1 and /objects).
Windows are fixed (the minute, hour and day the sandbox clock is in), their counts kept in the store
so every process sharing a tenant db spends one quota. The RateLimit-* headers report the window
closest to exhaustion, as Zuora's do; a request past a limit gets 429 with Retry-After until that
window resets.
"""

from __future__ import annotations

from dataclasses import dataclass

from .web import V1, ApiError

WINDOWS = (60, 3600, 86400)
_NAMES = {60: "minute", 3600: "hour", 86400: "day"}
AUTH_LIMITS = (2_000, 67_500, 810_000)
AUTH_PER_IP_PER_MINUTE = 100
TENANT_TYPES = {  # API requests per minute, hour, day (reference C.1); AUTH is the same for every type
    "production": (50_000, 2_250_000, 27_000_000),
    "developer-sandbox": (12_500, 25_000, 50_000),
    "apisandbox": (2_500, 5_000, 10_000),
}
API, AUTH = "api", "auth"


@dataclass(frozen=True)
class Spent:
    """One request's place in its windows: the headers to send and whether it is over a limit."""

    limit: str  # the RateLimit-Limit value: the closest window's limit, then every window's policy
    remaining: int
    reset: int
    exceeded: str | None = None  # "minute" | "hour" | "day" when this request is refused

    def headers(self) -> list[tuple[str, str]]:
        """The RateLimit-* headers (integers, as the SDK parses them)."""
        return [("RateLimit-Limit", self.limit), ("RateLimit-Remaining", str(self.remaining)),
                ("RateLimit-Reset", str(self.reset))]

    def error(self, family: str) -> ApiError:
        """The documented 429 for this request (reference C.2), in the family's error shape."""
        message = f"API Rate limit exceeded for the {self.exceeded}, retry after {self.reset} seconds"
        body = {"reasons": [{"code": 70, "message": message}]} if family == V1 else {"code": 71013070,
                                                                                     "message": message}
        return ApiError(429, message, headers=[("Retry-After", str(self.reset))], body=body)


def limits(tenant_type: str, request_class: str) -> tuple[int, int, int]:
    """The (minute, hour, day) limits of a request class on a tenant type."""
    return AUTH_LIMITS if request_class == AUTH else TENANT_TYPES[tenant_type]


def spend(conn, tenant_type: str, request_class: str, now: float, client_ip: str | None) -> Spent:
    """Count one request in its windows (refused requests count too) and say whether it is over a limit."""
    caps = list(zip(WINDOWS, limits(tenant_type, request_class)))
    states = [_count(conn, f"{request_class}:{w}", w, cap, now) for w, cap in caps]
    over = [s for s in states if s[0] < 0]
    if request_class == AUTH and client_ip:  # enforced, but the headers report the tenant's windows
        per_ip = _count(conn, f"{AUTH}:ip:{client_ip}:60", 60, AUTH_PER_IP_PER_MINUTE, now)
        over += [per_ip] if per_ip[0] < 0 else []
    # Zuora reports the window closest to exhaustion; a refused request, the one it must wait longest for.
    remaining, reset, window, cap = max(over, key=lambda s: s[1]) if over else min(states, key=lambda s: (s[0], s[1]))
    policy = ", ".join(f"{c};w={w}" for w, c in caps)
    return Spent(f"{cap}, {policy}", max(0, remaining), reset, _NAMES[window] if over else None)


def _count(conn, key: str, window: int, cap: int, now: float) -> tuple[int, int, int, int]:
    """Count one request in a fixed window: (remaining after it, seconds to reset, window, cap)."""
    start = int(now // window) * window
    row = conn.one("SELECT start, count FROM rate_windows WHERE key = ?", (key,))
    used = (row["count"] if row is not None and row["start"] == start else 0) + 1
    conn.execute("INSERT OR REPLACE INTO rate_windows (key, start, count) VALUES (?, ?, ?)", (key, start, used))
    return cap - used, max(1, int(start + window - now + 0.999)), window, cap


def preload(conn, tenant_type: str, payload: dict, now: float) -> dict:
    """POST /_sandbox/rate {"api": N, "auth": N}: set this minute's, hour's and day's counts to N, or with
    {"api": {"day": N, ...}} only the windows named (tests reach a limit without sending thousands of
    requests); the answer is what GET /_sandbox/rate shows."""
    if not isinstance(payload, dict) or not payload or set(payload) - {API, AUTH}:
        raise ApiError(400, 'The body must be {"api": N} and/or {"auth": N}, N a non-negative integer or '
                            '{"minute"|"hour"|"day": N}')
    for request_class, used in payload.items():
        counts = used if isinstance(used, dict) else {_NAMES[w]: used for w in WINDOWS}
        if not counts or set(counts) - set(_NAMES.values()) or not all(
                isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in counts.values()):
            raise ApiError(400, f"{request_class} must be a non-negative integer, or an object of them by "
                                "window: minute, hour, day")
        for window in WINDOWS:
            if _NAMES[window] in counts:
                conn.execute("INSERT OR REPLACE INTO rate_windows (key, start, count) VALUES (?, ?, ?)",
                             (f"{request_class}:{window}", int(now // window) * window, counts[_NAMES[window]]))
    return usage(conn, tenant_type, now)


def usage(conn, tenant_type: str, now: float) -> dict:
    """GET /_sandbox/rate: each class's limits and the requests counted in the current minute, hour and day."""
    shown: dict = {"tenant_type": tenant_type}
    for request_class in (API, AUTH):
        used = {}
        for window in WINDOWS:
            row = conn.one("SELECT start, count FROM rate_windows WHERE key = ?", (f"{request_class}:{window}",))
            used[_NAMES[window]] = row["count"] if row is not None and row["start"] == int(now // window) * window else 0
        shown[request_class] = {"limits": dict(zip(map(_NAMES.get, WINDOWS), limits(tenant_type, request_class))),
                                "used": used}
    return shown
