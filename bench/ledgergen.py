"""Build a big, valid ledger fast: 100,000 jobs and 1,000,000 hash-chained events.

The ledger API makes the file (schema, migrations, meta) and the first job with its real events; the
rest goes in with plain sqlite3 in one transaction, continuing the hash chain with reconciler.ledger.chain
and moving meta's head hash, event count and serial, so `audit verify` still passes.

Shape of the history (what a ledger that has been used for years looks like):
- each name has GENERATIONS jobs (or `generations`); every job has EVENTS_PER_JOB events (intent, the POST, submitted,
  polls, status changes, the result download, its archive, and for the last job of a removed spec
  its retirement);
- the specs of the repo (`desired`) are among the names: generations 1..N-1 failed (each with an
  earlier file), the latest completed with the spec's current fingerprint, so the planner pairs them
  and finds them unchanged;
- every other name is a removed spec whose last job was retired, so the planner has nothing to do
  for it but must still read and pair it.
"""

from __future__ import annotations

import gc
import hashlib
import sqlite3
from datetime import datetime, timedelta, timezone

from reconciler.ledger.chain import canonical_json, event_hash
from reconciler.ledger.store import Actor, Ledger

GENERATIONS = 5
EVENTS_PER_JOB = 10
JOBS_PER_RUN = 100
ACTOR = Actor(user="bench", host="bench-host", pid=4242, commit="0" * 40)
EPOCH = datetime(2021, 1, 4, tzinfo=timezone.utc)
_SLOT = "@@detail@@"  # stands for the detail while the rest of an event is serialized
_SLOT_JSON = f'"{_SLOT}"'
JOB_COLUMNS = (
    "id", "name", "kind", "generation", "fingerprint", "fingerprint_version", "revision", "remote_id",
    "idempotency_key", "phase", "remote_status", "uploaded", "total", "processed", "succeeded", "failed",
    "detail", "result_path", "result_sha256", "rerun", "created_at", "updated_at", "run_id",
)
EVENT_COLUMNS = (
    "id", "ts", "run_id", "name", "event_type", "method", "path", "http_status", "request_id", "track_id",
    "idempotency_key", "outcome", "actor", "detail", "prev_hash", "hash",
)


def _hex(*parts: object) -> str:
    return hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()


def _plan(desired, jobs: int, generations: int = GENERATIONS):
    """(name, generation, spec or None) for every job, oldest first, in creation order."""
    specs = list(desired.specs)
    removed = jobs // generations - len(specs)
    if removed < 1:
        raise ValueError(f"{jobs} jobs cannot hold {len(specs)} specs and a removed one x {generations} generations")
    names = [(f"old-{i:06d}", None) for i in range(removed)] + [(s.name, s) for s in specs]
    for generation in range(1, generations + 1):  # generation by generation: old and current interleave
        for name, spec in names:
            yield name, generation, spec


def _job_and_events(job_id, run_id, name, generation, spec, lineage, generations: int = GENERATIONS):
    """One job row and its events' fields (without id, prev_hash and hash)."""
    last = generation == generations
    created = EPOCH + timedelta(minutes=17 * job_id)
    if spec is not None:
        fingerprint = spec.fingerprint if last else _hex("old-file", name, generation)
        revision, fp_version, file = spec.revision, spec.fingerprint_version, spec.file
        status = "Completed" if last else "Failed"
    else:
        fingerprint, revision, fp_version, file = _hex("gone", name, generation), generation, 1, f"data/{name}.csv"
        status = "Completed"
    phase = "retired" if (spec is None and last) else "done"
    key = f"{lineage}:{name}:{fingerprint[:16]}:{generation}"
    bulk_key = _hex("bulk", name, generation)[:32]
    file_sha = _hex("file", name, generation)
    failed = 0 if status == "Completed" else 20
    detail = {"actionType": "ImportFXRate", "file": file, "file_sha256": file_sha,
              "output_url": f"https://rest.zuora.com/v1/files/{bulk_key[:20]}"}
    result_path = f"state/local/results/{name}/g{generation}-{bulk_key}.csv.zip"
    ts = [(created + timedelta(seconds=3 * i)).isoformat(timespec="microseconds") for i in range(EVENTS_PER_JOB)]
    job = (
        job_id, name, "MassAction", generation, fingerprint, fp_version, revision, bulk_key, key, phase, status,
        0, 20, 20, 20 - failed, failed, canonical_json(detail), result_path, _hex("result", name, generation),
        0, ts[0], ts[-1], run_id,
    )
    track = _hex("track", run_id)[:32]
    actor = ACTOR.label

    def call(i, method, path, http, outcome, attempt=1):
        return (ts[i], run_id, name, "remote_call", method, path, http, _hex("req", job_id, i)[:36], track,
                key if method == "POST" else None, outcome, actor,
                {"attempt": attempt, "duration_ms": 41 + i, "error": None})

    get = f"/v1/bulk/{bulk_key}"
    events = [
        (ts[0], run_id, name, "intent", None, None, None, None, None, key, None, actor,
         {**detail, "kind": "MassAction", "generation": generation, "fingerprint": fingerprint,
          "revision": revision, "rerun": False}),
        call(1, "POST", "/v1/bulk", 200, "ok"),
        (ts[2], run_id, name, "submitted", "POST", "/v1/bulk", 200, None, track, key, "Pending", actor,
         {"remote_id": bulk_key, "status": "Pending"}),
        call(3, "GET", get, 200, "ok"),
        (ts[4], run_id, name, "status_change", None, None, None, None, None, key, "Processing", actor,
         {"remote_id": bulk_key, "from": "Pending", "to": "Processing", "source": "refresh",
          "total": 20, "processed": 7}),
        call(5, "GET", get, 200, "ok"),
        (ts[6], run_id, name, "status_change", None, None, None, None, None, key, status, actor,
         {"remote_id": bulk_key, "from": "Processing", "to": status, "source": "refresh", "total": 20,
          "processed": 20, "succeeded": 20 - failed, "failed": failed}),
        call(7, "GET", f"/v1/files/{bulk_key[:20]}", 200, "ok"),
        (ts[8], run_id, name, "result_archived", None, None, None, None, None, key, None, actor,
         {"path": result_path, "sha256": job[18]}),
        (ts[9], run_id, name, "retired", None, None, None, None, None, key, None, actor,
         {"reason": "spec removed", "previous_phase": "done", "remote_id": bulk_key})
        if phase == "retired" else call(9, "GET", get, 200, "ok", attempt=1),
    ]
    return job, events


def _hash(event_id: int, fields: tuple, detail: str, head: str) -> str:
    """chain.event_hash of the event, serializing its detail once (spliced in, as canonical JSON nests).

    Every 1,000th event is also hashed by chain.event_hash itself, so a change there cannot slip by.
    """
    event = dict(zip(EVENT_COLUMNS, (event_id, *fields[:-1], _SLOT, head)))
    text = canonical_json(event).replace(_SLOT_JSON, detail, 1)
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    if event_id % 1000 == 0 and digest != event_hash({**event, "detail": fields[-1]}):
        raise RuntimeError(f"bench/ledgergen.py no longer hashes events as reconciler.ledger.chain does (event {event_id})")
    return digest


def _api_job(ledger: Ledger, run_id: int, desired) -> None:
    """Job 1 with its EVENTS_PER_JOB events through the real API: the first removed spec's generation 1."""
    from reconciler.model import Observation

    name = next(_plan(desired, GENERATIONS * (len(desired.specs) + 1)))[0]
    fingerprint = _hex("gone", name, 1)
    key = f"{ledger.lineage}:{name}:{fingerprint[:16]}:1"
    job = ledger.add_intent(run_id=run_id, name=name, kind="MassAction", generation=1, fingerprint=fingerprint,
                            fingerprint_version=1, revision=1, idempotency_key=key,
                            detail={"actionType": "ImportFXRate", "file": f"data/{name}.csv"})
    call = {"run_id": run_id, "event_type": "remote_call", "name": name, "outcome": "ok", "http_status": 200}
    ledger.record_event(**call, method="POST", path="/v1/bulk", idempotency_key=key)
    ledger.record_submitted(job.id, remote_id="api-bulk-key-1", status="Pending", phase="active",
                            event={"method": "POST", "path": "/v1/bulk", "http_status": 200})
    for status, processed in (("Processing", 7), ("Completed", 20)):
        ledger.record_event(**call, method="GET", path="/v1/bulk/api-bulk-key-1")
        ledger.record_observation(job.id, Observation("api-bulk-key-1", "MassAction", status, total=20,
                                                      processed=processed), run_id=run_id, source="refresh")
    ledger.record_event(**call, method="GET", path="/v1/files/api-file-1")
    ledger.record_event(**call, method="GET", path="/v1/bulk/api-bulk-key-1")
    ledger.record_result(job.id, path=f"state/local/results/{name}/g1-api-bulk-key-1.csv.zip",
                         sha256=_hex("result", name, 1), run_id=run_id)


def build(path, binding, desired, *, jobs: int = 100_000, generations: int = GENERATIONS) -> dict:
    """Create the ledger at `path` with `jobs` jobs (EVENTS_PER_JOB events each), `generations` a name;
    returns the counts."""
    ledger = Ledger.open_write(path, binding)
    try:
        run_id = ledger.start_run("apply", ACTOR)
        _api_job(ledger, run_id, desired)
        lineage = ledger.lineage
    finally:
        ledger.close()
    conn = sqlite3.connect(str(path), isolation_level=None)
    gc.disable()  # millions of short-lived tuples, no cycles: collection passes only cost time
    try:
        conn.execute("PRAGMA synchronous = OFF")  # a throwaway file: one fsync-free bulk load
        conn.execute("BEGIN IMMEDIATE")
        head, event_id = conn.execute("SELECT head_hash, events_count FROM meta WHERE id = 1").fetchone()
        job_id = conn.execute("SELECT max(id) FROM jobs").fetchone()[0]
        if (job_id, event_id) != (1, EVENTS_PER_JOB):
            raise RuntimeError(f"the API part made {job_id} jobs and {event_id} events, not 1 and {EVENTS_PER_JOB}")
        job_rows, event_rows, runs = [], [], []
        insert_jobs = f"INSERT INTO jobs ({', '.join(JOB_COLUMNS)}) VALUES ({', '.join('?' * len(JOB_COLUMNS))})"
        insert_events = f"INSERT INTO events ({', '.join(EVENT_COLUMNS)}) VALUES ({', '.join('?' * len(EVENT_COLUMNS))})"

        def flush():
            conn.executemany(
                "INSERT INTO runs (id, command, actor, pid, \"commit\", started_at, finished_at, outcome) "
                "VALUES (?, 'apply', ?, ?, ?, ?, ?, 'ok')",
                [(r, ACTOR.label, ACTOR.pid, ACTOR.commit, EPOCH.isoformat(), EPOCH.isoformat()) for r in runs],
            )
            conn.executemany(insert_jobs, job_rows)
            conn.executemany(insert_events, event_rows)
            job_rows.clear(), event_rows.clear(), runs.clear()

        entries = _plan(desired, jobs, generations)
        next(entries)  # job 1 came through the API
        for name, generation, spec in entries:
            job_id += 1
            run = run_id + (job_id - 1) // JOBS_PER_RUN
            if (job_id - 1) % JOBS_PER_RUN == 0:
                runs.append(run)
            job, events = _job_and_events(job_id, run, name, generation, spec, lineage, generations)
            job_rows.append(job)
            for fields in events:
                event_id += 1
                detail = canonical_json(fields[-1])
                digest = _hash(event_id, fields, detail, head)
                event_rows.append((event_id, *fields[:-1], detail, head, digest))
                head = digest
            if len(event_rows) >= 50_000:
                flush()
        flush()
        conn.execute("UPDATE meta SET head_hash = ?, events_count = ?, serial = serial + 1 WHERE id = 1",
                     (head, event_id))
        conn.execute("COMMIT")
    finally:
        gc.enable()
        conn.close()
    return {"jobs": job_id, "events": event_id}
