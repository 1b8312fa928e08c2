"""The Mass Updater endpoints: POST /v1/bulk, GET /v1/bulk/{key}, PUT .../stop, GET /v1/files/{id}.

The lifecycle is computed from the sandbox time when read: Pending for pending_seconds after the
upload, then Processing at rows_per_second (counts live), then Completed. Row outcomes are decided
at upload (they depend only on the file) and revealed as the clock passes each row. A stop freezes
the processed count; Stopping lasts one row's processing time, or the app's stopping_seconds when
longer (serve --stopping-seconds, so a test can observe it), then Stopped.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from dataclasses import dataclass

from . import massfiles, massupdater
from .web import (
    FORMAT,
    MALFORMED,
    MISSING_FIELD,
    MISSING_PARAM,
    NOT_FOUND,
    RULE,
    ApiError,
    Context,
    Response,
    json_response,
    parse_multipart,
)

FILE_LIMIT = 4_000_000  # Zuora's "4 MB" in its smaller reading, as validate checks it (README)
BODY_LIMIT = FILE_LIMIT + 256 * 1024  # the envelope, params, and room to say a file is over 4 MB (not to cut it)
CHECKSUM = re.compile(r"^[0-9a-fA-F]{32}$")
CHUNK = 64 * 1024
# Everything but the file content and per-row outcomes, which only the response file needs.
SUMMARY = ("bulk_key, action_type, uploaded_by, uploaded_at, pending_seconds, rows_per_second, input_size, total,"
           " file_error, flags, stop_at, stopped_at, file_id, idempotency_key")


@dataclass(frozen=True)
class View:
    """A mass action's state at one instant."""

    status: str
    started: float | None
    ended: float | None
    processed: int | None  # None while Pending
    has_file: bool


def submit(ctx: Context) -> Response:
    """POST /v1/bulk: validate the request, read the file, decide every row, store the job."""
    req = ctx.request
    if req.media_type != "multipart/form-data":
        raise ApiError(400, "Content-Type must be multipart/form-data with a 'file' part and a 'params' part")
    parts = parse_multipart(req.body(BODY_LIMIT, "upload"), req.header("content-type"))
    params = _params(parts)
    action_type = params.get("actionType")
    if action_type in (None, ""):
        raise ApiError(400, "params.actionType is required", category=MISSING_FIELD)
    if action_type not in massupdater.ACTION_TYPES:
        raise ApiError(400, f"params.actionType must be one of: {', '.join(massupdater.ACTION_TYPES)}")
    file_part = parts.get("file")
    if file_part is None:
        raise ApiError(400, "Missing required parameter 'file'", category=MISSING_PARAM)
    data = file_part.data
    if not data:
        raise ApiError(400, "The uploaded file is empty")
    if len(data) > FILE_LIMIT:
        raise ApiError(413, f"The uploaded file exceeds the 4 MB limit ({len(data)} bytes)")
    checksum = params.get("checksum")
    if checksum not in (None, ""):
        if not isinstance(checksum, str) or not CHECKSUM.match(checksum):
            raise ApiError(400, "params.checksum must be a 32-character hexadecimal MD5 checksum")
        if hashlib.md5(data).hexdigest() != checksum.lower():
            raise ApiError(400, "params.checksum does not match the MD5 checksum of the uploaded file")

    header, rows, text = _read(action_type, data)  # Zuora checks the format at upload: a bad file gets no bulkKey
    bulk_key = uuid.uuid4().hex
    outcomes = _decide(ctx.conn, action_type, header, rows, bulk_key)
    settings = ctx.settings
    ctx.conn.execute(
        "INSERT INTO mass_actions (bulk_key, seq, action_type, uploaded_by, uploaded_at, pending_seconds,"
        " rows_per_second, input_size, total, file_error, flags, outcomes, content, file_id, idempotency_key)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            bulk_key, ctx.conn.next_counter("mass_action_seq"), action_type, settings.user_email, ctx.now,
            settings.pending_seconds, settings.rows_per_second, len(data), len(rows), None,
            "".join(outcome[0] for outcome in outcomes), json.dumps(outcomes),
            json.dumps({"header": header, "rows": rows, "text": text}), uuid.uuid4().hex, ctx.idempotency_key,
        ),
    )
    return json_response(200, {"success": True, "bulkKey": bulk_key})


def _params(parts) -> dict:
    part = parts.get("params")
    if part is None:
        raise ApiError(400, "Missing required parameter 'params'", category=MISSING_PARAM)
    try:
        params = json.loads(part.data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ApiError(400, "params must be a JSON object serialized as a string", category=MALFORMED) from None
    if not isinstance(params, dict):
        raise ApiError(400, "params must be a JSON object serialized as a string", category=MALFORMED)
    return params


def _read(action_type: str, data: bytes):
    """Header and rows of a file Zuora would accept; a format problem is refused at once (reference A.4:
    "Zuora checks the formatting on upload"), in the v1 error shape and without a bulkKey."""
    try:
        header, rows, text = massfiles.read_table(data)
    except massfiles.FileProblem as err:
        raise ApiError(400, str(err), category=FORMAT) from None
    names = [name for name in header if not name.startswith("#")]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ApiError(400, f"Duplicate column(s): {', '.join(duplicates)}", category=FORMAT)
    if "" in names:
        raise ApiError(400, "The header row has an empty column name", category=FORMAT)
    missing = massupdater.missing_columns(action_type, header)
    if missing:
        raise ApiError(400, f"Missing required column(s) for {action_type}: {', '.join(missing)}",
                       category=MISSING_FIELD)
    return header, rows, text


def _decide(conn, action_type, header, rows, bulk_key):
    counter = [int(conn.meta("rs_counter", 0))]

    def next_number():
        counter[0] += 1
        return counter[0]

    outcomes = massupdater.process(action_type, header, rows, bulk_key, next_number)
    conn.set_meta("rs_counter", counter[0])
    return outcomes


def lifecycle(row, now: float) -> View:
    """The mass action's status at `now`, computed from its upload time, speed and any stop."""
    start = row["uploaded_at"] + row["pending_seconds"]
    rps, total = row["rows_per_second"], row["total"]

    def done(at: float) -> int:
        return 0 if at < start else min(total, int((at - start) * rps + 1e-9))

    if row["stop_at"] is not None:
        settled = row["stopped_at"] if row["stopped_at"] is not None else row["stop_at"] + 1.0 / rps
        from_pending = row["stop_at"] < start
        stopped = now >= settled
        return View(
            "Stopped" if stopped else "Stopping", None if from_pending else start, settled if stopped else None,
            0 if from_pending else done(row["stop_at"]), stopped and not from_pending,
        )
    if now < start:
        return View("Pending", None, None, None, False)
    if row["file_error"]:
        return View("Failed", start, start, 0, False)
    processed = done(now)
    if processed < total:
        return View("Processing", start, None, processed, False)
    return View("Completed", start, start + total / rps, total, True)


def _stamp(at):
    return None if at is None else time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(at))


def body(conn, row, now: float, base_url: str) -> dict:
    """The GET /v1/bulk/{key} body (reference A.2); builds the response file when it is due."""
    view = lifecycle(row, now)
    counts = {"totalCount": None, "processedCount": None, "successCount": None, "errorCount": None}
    if view.processed is not None:
        succeeded = row["flags"][: view.processed].count("Y")
        counts = {
            "totalCount": str(row["total"]), "processedCount": str(view.processed),
            "successCount": str(succeeded), "errorCount": str(view.processed - succeeded),
        }
    output = ensure_output(conn, row, view) if view.has_file else None
    payload = {
        "success": True,
        "actionType": row["action_type"],
        "status": view.status,
        "uploadedBy": row["uploaded_by"],
        "uploadedOn": _stamp(row["uploaded_at"]),
        "startedOn": _stamp(view.started),
        "endedOn": _stamp(view.ended),
        "inputSize": row["input_size"],
        "outputSize": len(output) if output is not None else 0,
        **counts,
        "outputType": "(url:.csv.zip)",
        "outputURL": f"{base_url}/v1/files/{row['file_id']}" if output is not None else None,
    }
    if view.status == "Failed":
        payload["reasons"] = [{"code": 50000020, "message": row["file_error"]}]
    return payload


def ensure_output(conn, row, view: View) -> bytes:
    """The zipped response file, built once and kept (deterministic, so rebuilding would match)."""
    stored = conn.one("SELECT content FROM output_files WHERE file_id = ?", (row["file_id"],))
    if stored is not None:
        return stored["content"]
    full = conn.one("SELECT content, outcomes FROM mass_actions WHERE bulk_key = ?", (row["bulk_key"],))
    content, outcomes = json.loads(full["content"]), json.loads(full["outcomes"])
    header = content["header"]
    extra_columns = massupdater.response_columns(row["action_type"])
    extra_names = [column for column in extra_columns if column not in ("Success", "Error Message")]
    results = []
    for index in range(len(content["rows"])):
        result = {}
        if index < view.processed:
            flag, message, extras = outcomes[index]
            result = {"Success": flag, "Error Message": message, **dict(zip(extra_names, extras))}
        results.append([result.get(column, "") for column in extra_columns])
    if "text" in content:  # the uploaded text, each record's own form kept (reference A.4: "identical")
        text = massfiles.response_csv(content["text"], extra_columns, results)
    else:  # a job stored by an older sandbox: written afresh, ragged rows aligned to the header
        cells = [(cells + [""] * len(header))[: len(header)] for cells in content["rows"]]
        text = massfiles.legacy_csv(header + extra_columns, [c + r for c, r in zip(cells, results)])
    name = f"{row['action_type']}-{row['bulk_key']}-response.csv"
    data = massfiles.response_zip(name, text, view.ended or 0)
    conn.execute("INSERT INTO output_files (file_id, content) VALUES (?, ?)", (row["file_id"], data))
    return data


def _find(conn, bulk_key: str):
    row = conn.one(f"SELECT {SUMMARY} FROM mass_actions WHERE bulk_key = ?", (bulk_key,))
    if row is None:
        raise ApiError(404, f"Mass action not found for bulk key '{bulk_key}'", category=NOT_FOUND)
    return row


def get(ctx: Context, bulk_key: str) -> Response:
    """GET /v1/bulk/{key}."""
    row = _find(ctx.conn, bulk_key)
    return json_response(200, body(ctx.conn, row, ctx.now, ctx.request.base_url()))


def stop(ctx: Context, bulk_key: str) -> Response:
    """PUT /v1/bulk/{key}/stop: only while Pending or Processing (reference A.3)."""
    row = _find(ctx.conn, bulk_key)
    status = lifecycle(row, ctx.now).status
    if status not in ("Pending", "Processing"):
        raise ApiError(
            400, f"The mass action is {status}; only a Pending or Processing mass action can be stopped",
            category=RULE,
        )
    settles = ctx.now + max(1.0 / row["rows_per_second"], ctx.settings.stopping_seconds)
    ctx.conn.execute("UPDATE mass_actions SET stop_at = ?, stopped_at = ? WHERE bulk_key = ?",
                     (ctx.now, settles, bulk_key))
    return json_response(200, {"success": True})


def download(ctx: Context, file_id: str) -> Response:
    """GET /v1/files/{id}: the zipped response file, streamed."""
    row = ctx.conn.one(f"SELECT {SUMMARY} FROM mass_actions WHERE file_id = ?", (file_id,))
    view = lifecycle(row, ctx.now) if row is not None else None
    if view is None or not view.has_file:
        raise ApiError(404, f"File not found for id '{file_id}'", category=NOT_FOUND)
    data = ensure_output(ctx.conn, row, view)
    return Response(
        200, content_type="application/zip;charset=UTF-8",
        headers=[
            ("Content-Length", str(len(data))),
            ("Content-Disposition", f'attachment; filename="{row["bulk_key"]}-response.csv.zip"'),
        ],
        chunks=[data[i : i + CHUNK] for i in range(0, len(data), CHUNK)] or [b""],
    )
