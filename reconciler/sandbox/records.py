"""Custom object records and the job engine that applies create/update/delete jobs to them.

Nothing runs in the background: `settle(conn, now)` replays, in time order, every job event that
has fallen due since the last request (a delete job starting, one row or record processed, a job
completing or failing) and is called at the start of every request that reads jobs or records.
Row i of a job is processed at started + (i + 1) / rows_per_second, so effects, recordsProcessed
and /errors grow with the sandbox clock exactly as if a worker had been running.

Record Ids are deterministic per tenant (see `_new_record_id`), so an example update file can name
the records a fresh tenant's first create job makes.
"""

from __future__ import annotations

import heapq
import json
import re
import time
import uuid

from . import definitions

UUID_TEXT = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
SYSTEM_FIELDS = ("CreatedDate", "UpdatedDate", "CreatedById", "UpdatedById")
ACTIVE = ("accepted", "pending", "in_progress")

# Row-level error codes: resource 710125 (record) + category (reference B.8).
INVALID, MISSING, NOT_FOUND = 71012520, 71012522, 71012540
# Fixed, so the same creations give the same Ids in every fresh tenant, on every machine.
RECORD_ID_NAMESPACE = uuid.UUID("b1acdfe7-c608-4484-b1a8-d6916a60d597")


def iso(at: float | None) -> str | None:
    """ISO-8601 UTC with milliseconds and Z, as the Custom Objects API writes dates."""
    if at is None:
        return None
    millis = int(round(at * 1000))
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(millis // 1000)) + f".{millis % 1000:03d}Z"


def settle(conn, now: float) -> None:
    """Apply every job event due at or before `now`, in time order, and persist the jobs' states."""
    # Record sequence numbers are counted here and written back once: a meta write per row is slow.
    counters = {}
    jobs = {row["id"]: {**dict(row), "_record_seq": counters} for row in conn.all(
        "SELECT * FROM co_jobs WHERE status IN ('accepted', 'in_progress') ORDER BY seq")}
    heap = []
    for job in jobs.values():
        _schedule(heap, job)
    changed = set()
    while heap and heap[0][0] <= now:
        at, _, kind, job_id = heapq.heappop(heap)
        job = jobs[job_id]
        EVENTS[kind](conn, job, at)
        changed.add(job_id)
        _schedule(heap, job)
    for job_id in changed:
        job = jobs[job_id]
        conn.execute(
            "UPDATE co_jobs SET status = ?, started_at = ?, ended_at = ?, updated_at = ?, applied = ?, total = ?,"
            " error = ? WHERE id = ?",
            (job["status"], job["started_at"], job["ended_at"], job["updated_at"], job["applied"], job["total"],
             job["error"], job_id),
        )
    for key, number in counters.items():
        conn.set_meta(key, number)


def _schedule(heap, job) -> None:
    rps = job["rows_per_second"]
    if job["status"] == "accepted":
        event = (job["created_at"] + job["pending_seconds"], "start")
    elif job["status"] != "in_progress":
        return
    elif job["file_error"]:
        event = (job["started_at"] + 1.0 / rps, "fail")
    elif job["applied"] < job["total"]:
        event = (job["started_at"] + (job["applied"] + 1) / rps, "item")
    else:
        event = (job["started_at"] + job["total"] / rps, "complete")
    heapq.heappush(heap, (event[0], job["seq"], event[1], job["id"]))


def _start(conn, job, at) -> None:
    """A delete job starts: snapshot the records its filter matches, oldest first."""
    conditions = (json.loads(job["filter"]) or {}).get("conditions", []) if job["filter"] else []
    matched = [
        row["id"] for row in conn.all(
            "SELECT * FROM records WHERE namespace = ? AND object = ? ORDER BY created_at, id",
            (job["namespace"], job["object"]))
        if all(_holds(_value(row, c["field"]), c["operator"], c["value"]) for c in conditions)
    ]
    conn.executemany(
        "INSERT INTO co_items (job_id, idx, data) VALUES (?, ?, ?)",
        [(job["id"], index, json.dumps(record_id)) for index, record_id in enumerate(matched)],
    )
    job.update(status="in_progress", started_at=at, updated_at=at, total=len(matched))


def _item(conn, job, at) -> None:
    data = json.loads(_load_item(conn, job))
    if job["operation"] == "delete":
        conn.execute("DELETE FROM records WHERE namespace = ? AND object = ? AND id = ?",
                     (job["namespace"], job["object"], data))
    else:
        row_number, cells = data
        if "_header" not in job:
            job["_header"] = json.loads(job["header"])
        problem = _write_row(conn, job, job["_header"], cells, at)
        if problem:
            code, message, record = problem
            conn.execute("INSERT INTO co_errors (job_id, row, code, message, record) VALUES (?, ?, ?, ?, ?)",
                         (job["id"], row_number, code, message, json.dumps(record)))
    job.update(applied=job["applied"] + 1, updated_at=at)


def _load_item(conn, job) -> str:
    """The job's next item, read a thousand at a time (one query per item is the slow part)."""
    cache = job.setdefault("_items", {})
    if job["applied"] not in cache:
        cache.clear()
        cache.update(conn.all(
            "SELECT idx, data FROM co_items WHERE job_id = ? AND idx >= ? ORDER BY idx LIMIT 1000",
            (job["id"], job["applied"])))
    return cache.pop(job["applied"])


def _complete(conn, job, at) -> None:
    conn.execute("DELETE FROM co_items WHERE job_id = ?", (job["id"],))
    job.update(status="completed", ended_at=at, updated_at=at)


def _fail(conn, job, at) -> None:
    job.update(status="failed", ended_at=at, updated_at=at, error=job["file_error"])


EVENTS = {"start": _start, "item": _item, "complete": _complete, "fail": _fail}


def _write_row(conn, job, header, cells, at):
    """Create or update one record; returns (code, message, record) when the row is rejected."""
    # A create file never has an Id column: the upload fails such a file as a whole (_file_error).
    id_column = next((name for name in header if name.lower() == "id"), None)
    given = dict(zip(header, cells))
    record_id = given.pop(id_column, "").strip() if id_column else ""
    record = {"Id": record_id or None, **given, "type": job["object"]}
    if len(cells) != len(header):
        return INVALID, f"The row has {len(cells)} values but the header has {len(header)} columns", record
    if "_definition" not in job:
        job["_definition"] = definitions.lookup(conn, job["namespace"], job["object"])
    if job["operation"] == "update" and record_id and not UUID_TEXT.match(record_id):
        return INVALID, f'input string "{record_id}" is not a valid UUID', record
    if job["_definition"] is not None:
        problem = definitions.row_problem(conn, job, job["_definition"], given, record_id.lower() or None)
        if problem:
            return (*problem, record)
    # Empty cells and absent columns both mean "the field's default", which the sandbox stores as absent.
    fields = json.dumps({name: value for name, value in given.items() if value != ""})
    if job["operation"] == "create":
        conn.execute(
            "INSERT INTO records (namespace, object, id, fields, created_at, updated_at, created_by, updated_by)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (job["namespace"], job["object"], _new_record_id(conn, job), fields, at, at, job["created_by"],
             job["created_by"]),
        )
        return None
    if not record_id:
        return MISSING, "Id is required to update a record", record
    if not UUID_TEXT.match(record_id):
        return INVALID, f'input string "{record_id}" is not a valid UUID', record
    key = (job["namespace"], job["object"], record_id.lower())
    if conn.one("SELECT 1 FROM records WHERE namespace = ? AND object = ? AND id = ?", key) is None:
        return NOT_FOUND, f"Record not found for id '{record_id.lower()}'", record
    conn.execute(
        "UPDATE records SET fields = ?, updated_at = ?, updated_by = ? WHERE namespace = ? AND object = ?"
        " AND id = ?", (fields, at, job["created_by"], *key))
    return None


def _new_record_id(conn, job) -> str:
    """The next record's Id: uuid5(RECORD_ID_NAMESPACE, "{namespace}/{object}/{n}"), n counting creations."""
    # n counts every record ever created for the object, deleted ones too, so an Id is never reused;
    # POST /_sandbox/reset clears the counter with the rest of the meta table.
    counters, scope = job["_record_seq"], f"{job['namespace']}/{job['object']}"
    key = f"record_seq:{scope}"
    if key not in counters:
        counters[key] = int(conn.meta(key, 0))
    counters[key] += 1
    return str(uuid.uuid5(RECORD_ID_NAMESPACE, f"{scope}/{counters[key]}"))


def _value(row, field: str):
    if field.lower() == "id":
        return row["id"]
    system = {"CreatedDate": iso(row["created_at"]), "UpdatedDate": iso(row["updated_at"]),
              "CreatedById": row["created_by"], "UpdatedById": row["updated_by"]}
    if field in system:
        return system[field]
    return json.loads(row["fields"]).get(field)


def _number(value):
    if isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _text(value) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def _holds(value, operator: str, target) -> bool:
    """A filter condition: numbers compare numerically when both sides parse, otherwise as text."""
    if value is None:
        return False
    left, right = _number(value), _number(target)
    if left is None or right is None:
        left, right = _text(value), _text(target)
    return {"EQ": left == right, "GT": left > right, "LT": left < right,
            "GE": left >= right, "LE": left <= right}[operator]


def record_body(row) -> dict:
    """A record with all fields (CustomObjectRecordWithAllFields)."""
    return {
        "Id": row["id"], "CreatedById": row["created_by"], "CreatedDate": iso(row["created_at"]),
        "UpdatedById": row["updated_by"], "UpdatedDate": iso(row["updated_at"]), "type": row["object"],
        **json.loads(row["fields"]),
    }
