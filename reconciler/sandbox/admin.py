"""The admin API under /_sandbox/ (DESIGN §7): state dump, clock, faults, reset, records, fail, rate, permissions.

No auth."""

from __future__ import annotations

import json

from . import bulk, customobjects, definitions, faults, limits, records
from .store import TENANT_TABLES
from .web import ApiError, Context, Response, json_response

ADMIN_LIMIT = 1024 * 1024


def _payload(ctx: Context) -> dict:
    raw = ctx.request.body(ADMIN_LIMIT)
    try:
        payload = json.loads(raw.decode("utf-8")) if raw.strip() else {}
    except (UnicodeDecodeError, ValueError):
        raise ApiError(400, "The body must be JSON") from None
    if not isinstance(payload, dict):
        raise ApiError(400, "The body must be a JSON object")
    return payload


def state(ctx: Context) -> Response:
    """GET /_sandbox/state: every mass action and job as the API shows them, and record counts."""
    conn = ctx.conn
    records.settle(conn, ctx.now)
    base = ctx.request.base_url()
    mass_actions = [
        {**bulk.body(conn, row, ctx.now, base), "bulkKey": row["bulk_key"], "idempotencyKey": row["idempotency_key"]}
        for row in conn.all(f"SELECT {bulk.SUMMARY} FROM mass_actions ORDER BY seq")
    ]
    jobs = [
        {**customobjects.job_body(row, ctx.now), "idempotencyKey": row["idempotency_key"]}
        for row in conn.all("SELECT * FROM co_jobs ORDER BY seq")
    ]
    counts = {}
    for row in conn.all("SELECT namespace, object, COUNT(*) AS n FROM records GROUP BY namespace, object"):
        name = row["object"] if row["namespace"] == "default" else f"{row['namespace']}:{row['object']}"
        counts[name] = row["n"]
    return json_response(200, {"mass_actions": mass_actions, "custom_object_jobs": jobs, "records": counts})


def clock(ctx: Context) -> Response:
    """POST /_sandbox/clock {"advance_seconds": N}: move the sandbox time forward (never back)."""
    advance = _payload(ctx).get("advance_seconds")
    if isinstance(advance, bool) or not isinstance(advance, (int, float)) or not 0 <= advance <= 10 ** 9:
        raise ApiError(400, "advance_seconds must be a non-negative number of seconds")
    offset = float(ctx.conn.meta("clock_offset", 0.0)) + advance
    ctx.conn.set_meta("clock_offset", offset)
    return json_response(200, {"now": records.iso(ctx.now + advance), "offset_seconds": offset})


def get_faults(ctx: Context) -> Response:
    """GET /_sandbox/faults: the current fault configuration."""
    return json_response(200, faults.current(ctx.conn))


def set_faults(ctx: Context) -> Response:
    """POST /_sandbox/faults: replace the fault configuration (fields left out are zero)."""
    return json_response(200, faults.configure(ctx.conn, _payload(ctx)))


def tokens(ctx: Context) -> Response:
    """POST /_sandbox/tokens {"revoke_after": N}: let N more authorized calls through, then revoke every
    token issued so far (N = 0: at once). New tokens are issued as usual; a static token stays refused."""
    after = _payload(ctx).get("revoke_after", 0)
    if isinstance(after, bool) or not isinstance(after, int) or after < 0:
        raise ApiError(400, "revoke_after must be a non-negative integer")
    if after == 0:
        ctx.conn.execute("DELETE FROM tokens")
        ctx.conn.execute("DELETE FROM meta WHERE key = 'revoke_after'")
    else:
        ctx.conn.set_meta("revoke_after", after)
    return json_response(200, {"revoke_after": after})


def reset(ctx: Context) -> Response:
    """POST /_sandbox/reset: empty the tenant and clear faults; tokens and the clock offset stay."""
    for table in TENANT_TABLES:
        ctx.conn.execute(f"DELETE FROM {table}")
    ctx.conn.execute("DELETE FROM meta WHERE key NOT IN ('schema_version', 'clock_offset')")
    return json_response(200, {"reset": True})


def list_records(ctx: Context) -> Response:
    """GET /_sandbox/records?object=NAME[&namespace=default]: the object's records, oldest first."""
    name = ctx.request.param("object", "")
    namespace = ctx.request.param("namespace", "default")
    if not name:
        raise ApiError(400, "the object query parameter is required")
    records.settle(ctx.conn, ctx.now)
    rows = ctx.conn.all(
        "SELECT * FROM records WHERE namespace = ? AND object = ? ORDER BY created_at, id", (namespace, name))
    return json_response(200, {"records": [records.record_body(row) for row in rows]})


def fail(ctx: Context) -> Response:
    """POST /_sandbox/fail {"bulkKey": K[, "message": M]}: a Pending mass action ends `Failed` when it would
    start (no row processed, no response file), as a failure inside the tenant would make it."""
    payload = _payload(ctx)
    bulk_key, message = payload.get("bulkKey"), payload.get("message", "The mass action failed in the tenant")
    if not isinstance(bulk_key, str) or not isinstance(message, str) or not message.strip():
        raise ApiError(400, "bulkKey (and message, when given) must be non-empty strings")
    row = ctx.conn.one(f"SELECT {bulk.SUMMARY} FROM mass_actions WHERE bulk_key = ?", (bulk_key,))
    if row is None:
        raise ApiError(404, f"no mass action has bulkKey {bulk_key!r}")
    status = bulk.lifecycle(row, ctx.now).status
    if status != "Pending":
        raise ApiError(400, f"the mass action is {status}; only a Pending one can be made to fail")
    ctx.conn.execute("UPDATE mass_actions SET file_error = ? WHERE bulk_key = ?", (message, bulk_key))
    return json_response(200, {"bulkKey": bulk_key, "failed": True})


def rate(ctx: Context) -> Response:
    """POST /_sandbox/rate {"api": N | {"day": N, ...}, "auth": ...}: the current windows' request counts set."""
    return json_response(200, limits.preload(ctx.conn, ctx.settings.tenant_type, _payload(ctx), ctx.now))


def rate_usage(ctx: Context) -> Response:
    """GET /_sandbox/rate: the limits and the requests counted so far in the current minute, hour and day."""
    return json_response(200, limits.usage(ctx.conn, ctx.settings.tenant_type, ctx.now))


def permissions(ctx: Context) -> Response:
    """POST /_sandbox/permissions {"denied": ["view" | "edit" | "delete", ...]}: the Custom Objects permissions
    the API user lacks from now on (added to `serve --without-permission`); [] restores them. Reset clears it."""
    denied = _payload(ctx).get("denied", [])
    if not isinstance(denied, list) or not set(denied) <= set(definitions.PERMISSIONS):
        raise ApiError(400, f"denied must be a list of: {', '.join(definitions.PERMISSIONS)}")
    ctx.conn.set_meta("denied_permissions", sorted(set(denied)))
    return json_response(200, {"denied": sorted(set(denied) | set(ctx.settings.denied_permissions))})
