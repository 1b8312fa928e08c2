"""The Custom Object bulk job endpoints under /objects/jobs (reference B).

create/update jobs start `pending` (waiting for their one CSV), run `in_progress` from the upload
at rows_per_second, then `completed`; a file-level problem (system fields, an Id column on create,
no Id column for update) makes the job `failed` once processing starts. delete jobs start
`accepted`, wait pending_seconds, then remove the records their filter matches. A 6th active job is
refused with a 400, or (job_limit "failed", Zuora's documented form) created `failed` with 71012560. recordsProcessed
counts the rows (or records) processed so far, rejected rows included; rejected rows are listed by
/errors. Jobs, filters and rows are checked against the tenant's custom object definitions and the API
user's permissions (definitions.py).
"""

from __future__ import annotations

import csv
import io
import json
import re
import uuid

from . import definitions, records
from .web import MISSING_FIELD, ApiError, Context, Response, json_response

JSON_LIMIT = 1024 * 1024
FILE_LIMIT = 15_000_000  # Zuora's "15 MB" in its smaller reading, as validate checks it (README)
MAX_ACTIVE_JOBS = 5
NAMESPACES = ("default", "com_zuora")
OPERATIONS = ("create", "update", "delete")
OPERATORS = ("EQ", "GT", "LT", "GE", "LE")
STATUSES = ("accepted", "pending", "in_progress", "completed", "failed", "cancelled")
OBJECT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,254}$")
BAD_REQUEST, FILTER_CODE, CONDITIONS_CODE = 71013020, 71013220, 71013320
STATUS_CODE, OPERATION_CODE, FILE_CODE, HEADERS_CODE = 71013430, 71013520, 71013620, 71013720
LIMIT_CODE = 71013030  # invented: Zuora documents no code for a 400 on the 6th job (reference B.1)
SERVICE_LIMIT = {"code": 71012560, "message": "Service limit reached, please retry later."}  # reference B.2


def job_body(row, now: float) -> dict:
    """The CustomObjectBulkJobResponse for a stored job (reference B.2)."""
    end = row["ended_at"] if row["ended_at"] is not None else (
        row["updated_at"] if row["status"] == "cancelled" else now)
    # processingTime counts processing (from the start, the upload or a delete's start), not time since creation.
    started = row["started_at"]
    waiting = row["status"] in ("accepted", "pending") or started is None
    body = {
        "Id": row["id"], "CreatedById": row["created_by"], "CreatedDate": records.iso(row["created_at"]),
        "UpdatedById": row["created_by"], "UpdatedDate": records.iso(row["updated_at"]),
        "namespace": row["namespace"], "object": row["object"], "operation": row["operation"],
        "status": row["status"], "recordsProcessed": row["applied"],
        "processingTime": 0 if waiting else max(0, int(round((end - started) * 1000))),
    }
    if row["status"] == "failed" and row["error"]:
        body["error"] = json.loads(row["error"])
    return body


def _find(ctx: Context, job_id: str):
    records.settle(ctx.conn, ctx.now)
    row = ctx.conn.one("SELECT * FROM co_jobs WHERE id = ?", (job_id,))
    if row is None:
        raise ApiError(404, "Not Found.", code=71013040)
    return row


def _read_json(ctx: Context):
    req = ctx.request
    if req.media_type != "application/json":
        raise ApiError(400, "Content-Type must be application/json", code=BAD_REQUEST)
    try:
        return json.loads(req.body(JSON_LIMIT).decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ApiError(400, "Bad Request: the body is not valid JSON", code=BAD_REQUEST) from None


def _validate(payload) -> dict:
    if not isinstance(payload, dict):
        raise ApiError(400, "Bad Request: the body must be a JSON object", code=BAD_REQUEST)
    for name in ("namespace", "object", "operation"):
        if payload.get(name) in (None, ""):
            raise ApiError(400, f"'{name}' is required", code=71013000 + MISSING_FIELD)
    if payload["namespace"] not in NAMESPACES:
        raise ApiError(400, "namespace must be 'default' or 'com_zuora'", code=BAD_REQUEST)
    if not isinstance(payload["object"], str) or not OBJECT_NAME.match(payload["object"]):
        raise ApiError(400, "object must be an object API name (letters, digits and _)", code=BAD_REQUEST)
    if payload["operation"] not in OPERATIONS:
        raise ApiError(400, "operation must be one of: create, update, delete", code=OPERATION_CODE)
    job_filter = payload.get("filter")
    if job_filter is None:
        return payload
    if payload["operation"] != "delete":
        raise ApiError(400, "filter is only supported for delete jobs", code=FILTER_CODE)
    conditions = job_filter.get("conditions") if isinstance(job_filter, dict) else None
    if not isinstance(conditions, list) or not 1 <= len(conditions) <= 2:
        raise ApiError(400, "filter.conditions must hold 1 or 2 conditions", code=CONDITIONS_CODE)
    for condition in conditions:
        if not isinstance(condition, dict) or not isinstance(condition.get("field"), str) or not condition["field"]:
            raise ApiError(400, "each filter condition needs a field name", code=CONDITIONS_CODE)
        if condition.get("operator") not in OPERATORS:
            raise ApiError(400, "filter condition operator must be one of: EQ, GT, LT, GE, LE", code=CONDITIONS_CODE)
        if not isinstance(condition.get("value"), (str, int, float, bool)):
            raise ApiError(400, "each filter condition needs a string, number or boolean value", code=CONDITIONS_CODE)
    return payload


def create(ctx: Context) -> Response:
    """POST /objects/jobs: submit a job (at most five active per tenant)."""
    payload = _validate(_read_json(ctx))
    if payload["operation"] == "delete":  # documented: 71012514 (reference B.1)
        definitions.require(ctx, "delete", 71012514, "delete custom objects")
    else:  # 71012515 is documented for create (reference B.3); 71012513 (update) follows the scheme
        definitions.require(ctx, "edit", 71012515 if payload["operation"] == "create" else 71012513,
                            f"{payload['operation']} custom objects")
    _check_definition(ctx, payload)
    records.settle(ctx.conn, ctx.now)
    active = ctx.conn.one(
        "SELECT COUNT(*) AS n FROM co_jobs WHERE status IN (?, ?, ?)", records.ACTIVE)["n"]
    limited = active >= MAX_ACTIVE_JOBS
    if limited and ctx.settings.job_limit != "failed":
        raise ApiError(
            400, f"The tenant already has {active} accepted, pending or in-progress jobs (limit "
            f"{MAX_ACTIVE_JOBS}); wait for one to finish", code=LIMIT_CODE)
    job_id = str(uuid.uuid4())
    status = "accepted" if payload["operation"] == "delete" else "pending"
    # job_limit "failed": Zuora's documented form, the job created already `failed` with 71012560 (B.2).
    error = json.dumps(SERVICE_LIMIT) if limited else None
    job_filter = payload.get("filter")
    ctx.conn.execute(
        "INSERT INTO co_jobs (id, seq, namespace, object, operation, filter, status, created_at, updated_at,"
        " created_by, pending_seconds, rows_per_second, idempotency_key, error, ended_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (job_id, ctx.conn.next_counter("co_job_seq"), payload["namespace"], payload["object"],
         payload["operation"], json.dumps(job_filter) if job_filter is not None else None,
         "failed" if limited else status, ctx.now, ctx.now, ctx.settings.user_id, ctx.settings.pending_seconds,
         ctx.settings.rows_per_second, ctx.idempotency_key, error, ctx.now if limited else None),
    )
    return json_response(200, job_body(_find(ctx, job_id), ctx.now))


def _check_definition(ctx: Context, payload: dict) -> None:
    """Zuora refuses a job on an object the tenant does not define, and a filter it cannot run."""
    if payload["namespace"] != "default":
        return  # com_zuora, Zuora's standard objects, is not modelled
    found = definitions.lookup(ctx.conn, "default", payload["object"])
    if found is None:
        raise ApiError(400, f"Bad Request: the tenant has no custom object '{payload['object']}' in namespace "
                       "default", code=BAD_REQUEST)
    if payload.get("filter") is not None:
        definitions.check_filter(found, payload["filter"]["conditions"])


def _can_view(ctx: Context) -> None:
    definitions.require(ctx, "view", 71013012, "view custom object bulk jobs")


def get(ctx: Context, job_id: str) -> Response:
    """GET /objects/jobs/{id}."""
    _can_view(ctx)
    return json_response(200, job_body(_find(ctx, job_id), ctx.now))


def listing(ctx: Context) -> Response:
    """GET /objects/jobs: newest first, pageSize (default 25, max 100), cursor, status."""
    _can_view(ctx)
    page_size = ctx.request.param("pageSize")
    if page_size is None:
        size = 25
    elif not page_size.isdigit() or not 1 <= int(page_size) <= 100:
        raise ApiError(400, "pageSize must be an integer from 1 to 100", code=BAD_REQUEST)
    else:
        size = int(page_size)
    status = ctx.request.param("status")
    if status is not None and status not in STATUSES:
        raise ApiError(400, f"status must be one of: {', '.join(STATUSES)}", code=71013420)
    records.settle(ctx.conn, ctx.now)
    where, params = [], []
    cursor = ctx.request.param("cursor")
    if cursor:
        anchor = ctx.conn.one("SELECT created_at, seq FROM co_jobs WHERE id = ?", (cursor,))
        if anchor is None:
            raise ApiError(400, f"cursor '{cursor}' is not the id of a job", code=71013120)
        where.append("(created_at < ? OR (created_at = ? AND seq < ?))")
        params += [anchor["created_at"], anchor["created_at"], anchor["seq"]]
    if status:
        where.append("status = ?")
        params.append(status)
    rows = ctx.conn.all(
        "SELECT * FROM co_jobs" + (" WHERE " + " AND ".join(where) if where else "")
        + " ORDER BY created_at DESC, seq DESC LIMIT ?", (*params, size + 1))
    jobs = [job_body(row, ctx.now) for row in rows[:size]]
    more = len(rows) > size
    return json_response(200, {"count": len(jobs), "cursor": jobs[-1]["Id"] if more else None, "jobs": jobs})


def errors(ctx: Context, job_id: str) -> Response:
    """GET /objects/jobs/{id}/errors: rejected rows, with row numbers counting the header as 1."""
    _can_view(ctx)
    _find(ctx, job_id)
    rows = ctx.conn.all("SELECT * FROM co_errors WHERE job_id = ? ORDER BY row", (job_id,))
    return json_response(200, {"errors": [
        {"code": row["code"], "message": row["message"], "row": row["row"], "record": json.loads(row["record"])}
        for row in rows]})


def cancel(ctx: Context, job_id: str) -> Response:
    """PATCH /objects/jobs/{id}/cancel: only accepted or pending jobs."""
    definitions.require(ctx, "edit", 71013013, "cancel custom object bulk jobs")
    row = _find(ctx, job_id)
    if row["status"] not in ("accepted", "pending"):
        raise ApiError(400, f"The job is {row['status']}; only an accepted or pending job can be cancelled",
                       code=STATUS_CODE)
    ctx.conn.execute("UPDATE co_jobs SET status = 'cancelled', updated_at = ?, ended_at = ? WHERE id = ?",
                     (ctx.now, ctx.now, job_id))
    return json_response(200, job_body(_find(ctx, job_id), ctx.now))


def upload(ctx: Context, job_id: str) -> Response:
    """POST /objects/jobs/{id}/files: the job's one CSV (text/csv, UTF-8, at most 15 MB)."""
    definitions.require(ctx, "edit", 71012515, "create custom objects")
    row = _find(ctx, job_id)
    if row["has_file"]:
        raise ApiError(400, "A file was already uploaded for this job; only one file per job", code=71013630)
    if row["status"] != "pending":
        raise ApiError(400, f"The job is {row['status']}; files can only be uploaded to a pending job",
                       code=STATUS_CODE)
    media = ctx.request.media_type
    if media != "text/csv":
        raise ApiError(400, "Content-Type: text/csv is required" if not media else
                       f"Content-Type must be text/csv, not {media}", code=71013722 if not media else HEADERS_CODE)
    data = ctx.request.body(FILE_LIMIT, "file")
    if not data.strip():
        raise ApiError(400, "The file is empty", code=FILE_CODE)
    try:
        table = list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline="")))
    except UnicodeDecodeError:
        raise ApiError(400, "The file must be UTF-8 encoded", code=FILE_CODE) from None
    except csv.Error as err:
        raise ApiError(400, f"The file is not a readable CSV: {err}", code=FILE_CODE) from None
    header = [cell.strip() for cell in table[0]]
    items = [(number, cells) for number, cells in enumerate(table[1:], start=2) if any(c.strip() for c in cells)]
    ctx.conn.execute(
        "UPDATE co_jobs SET has_file = 1, status = 'in_progress', started_at = ?, updated_at = ?, header = ?,"
        " total = ?, file_error = ? WHERE id = ?",
        (ctx.now, ctx.now, json.dumps(header), len(items), _file_error(row["operation"], header), job_id),
    )
    ctx.conn.executemany("INSERT INTO co_items (job_id, idx, data) VALUES (?, ?, ?)",
                         [(job_id, index, json.dumps(item)) for index, item in enumerate(items)])
    return json_response(200, job_body(_find(ctx, job_id), ctx.now))


def _file_error(operation: str, header: list[str]) -> str | None:
    """A file-level problem that fails the whole job, as the stored JSON error, or None."""
    system = [name for name in header if name.lower() in {f.lower() for f in records.SYSTEM_FIELDS}]
    ids = [name for name in header if name.lower() == "id"]
    if system:
        problem = (71013721, f"System fields are not allowed in the file: {', '.join(system)}")
    elif operation == "create" and ids:
        problem = (71013721, f"{ids[0]} is allowed only for update: Zuora assigns a created record's Id")
    elif "" in header or len({name.lower() for name in header}) != len(header):
        problem = (HEADERS_CODE, "The header row has empty or duplicate column names")
    elif operation == "update" and not ids:
        problem = (71013722, "An Id column is required to update records")
    else:
        return None
    return json.dumps({"code": problem[0], "message": problem[1]})

