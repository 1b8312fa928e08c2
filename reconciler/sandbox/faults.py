"""Fault injection for the Zuora endpoints: errors before/after the effect, 429s, drops, latency.

The configuration and a request counter live in the store, so every process sharing a db file sees
the same storm, and a seed makes it repeatable: request n of a seeded storm draws from
Random(f"{seed}:{n}") whichever process serves it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from .web import V1, ApiError

RATES = ("error_rate", "error_after_rate", "rate_limit_rate", "drop_rate")
DEFAULTS = {**dict.fromkeys(RATES, 0.0), "latency_ms": 0, "seed": None, "retry_after": 1}


@dataclass(frozen=True)
class Decision:
    """What happens to one request."""

    rate_limited: bool = False
    error_before: bool = False
    error_after: bool = False
    drop: bool = False
    latency_ms: float = 0
    retry_after: int = 1


def current(conn) -> dict:
    """The stored fault configuration (all zero by default)."""
    return {**DEFAULTS, **conn.meta("faults", {})}


def configure(conn, payload) -> dict:
    """Replace the configuration with `payload` (missing fields reset to zero); validate first."""
    if not isinstance(payload, dict):
        raise ApiError(400, "The body must be a JSON object")
    unknown = sorted(set(payload) - set(DEFAULTS))
    if unknown:
        raise ApiError(400, f"Unknown fault field(s): {', '.join(unknown)}; known: {', '.join(DEFAULTS)}")
    config = dict(DEFAULTS)
    for name in RATES:
        value = payload.get(name, 0.0)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise ApiError(400, f"{name} must be a number between 0 and 1")
        config[name] = float(value)
    for name in ("latency_ms", "retry_after"):
        value = payload.get(name, DEFAULTS[name])
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 600_000:
            raise ApiError(400, f"{name} must be a non-negative number")
        config[name] = value
    config["retry_after"] = int(config["retry_after"])
    seed = payload.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, str))):
        raise ApiError(400, "seed must be an integer, a string or null")
    config["seed"] = seed
    conn.set_meta("faults", config)
    conn.set_meta("fault_counter", 0)
    return config


def draw(conn) -> Decision:
    """Decide one request's faults; a no-op (and no write) when every rate is zero."""
    config = current(conn)
    if not any(config[name] for name in RATES):
        return Decision(latency_ms=config["latency_ms"])
    n = conn.next_counter("fault_counter")
    rng = random.Random(f"{config['seed']}:{n}") if config["seed"] is not None else random.Random()
    rolls = [rng.random() for _ in RATES]
    return Decision(
        error_before=rolls[0] < config["error_rate"],
        error_after=rolls[1] < config["error_after_rate"],
        rate_limited=rolls[2] < config["rate_limit_rate"],
        drop=rolls[3] < config["drop_rate"],
        latency_ms=config["latency_ms"],
        retry_after=config["retry_after"],
    )


def rate_limited(family: str, retry_after: int) -> ApiError:
    """The documented 429: Retry-After, RateLimit-Remaining 0, body per family (reference C.2)."""
    message = f"API Rate limit exceeded for the minute, retry after {retry_after} seconds"
    body = {"reasons": [{"code": 70, "message": message}]} if family == V1 else {"code": 71013061, "message": message}
    return ApiError(429, message, headers=[("Retry-After", str(retry_after))], body=body)
