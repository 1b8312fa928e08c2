"""The ledger's schema versions (DESIGN §6): MIGRATIONS[i] brings a ledger to version i + 1.

Each migration gets the sqlite-utils `Database` that ledger.py (the only module importing sqlite-utils)
opens on its connection, and runs inside ledger.py's transaction. Forward only; a released migration
never changes, since ledgers made by it exist: a new schema is a new function at the end.
"""

from __future__ import annotations

from reconciler.ledger.reads import LIVE_JOB


def _v1_tables(db) -> None:
    """Schema version 1: meta, runs, jobs, events (append-only), locks."""
    db["meta"].create(
        {
            "id": int, "lineage": str, "serial": int, "schema_version": int, "environment": str,
            "base_url": str, "head_hash": str, "events_count": int, "created_at": str,
        },
        pk="id",
        not_null=["lineage", "serial", "schema_version", "environment", "base_url", "head_hash"],
    )
    db["runs"].create(
        {
            "id": int, "command": str, "actor": str, "pid": int, "commit": str, "ci_run_url": str,
            "plan_digest": str, "started_at": str, "finished_at": str, "outcome": str,
        },
        pk="id",
        not_null=["command", "actor", "started_at"],
    )
    db["jobs"].create(
        {
            "id": int, "name": str, "kind": str, "generation": int, "fingerprint": str,
            "fingerprint_version": int, "revision": int, "remote_id": str, "idempotency_key": str,
            "phase": str, "remote_status": str, "uploaded": int, "total": int, "processed": int,
            "succeeded": int, "failed": int, "detail": str, "result_path": str, "result_sha256": str,
            "rerun": int, "created_at": str, "updated_at": str, "run_id": int,
        },
        pk="id",
        not_null=["name", "kind", "generation", "fingerprint", "idempotency_key", "phase"],
        foreign_keys=[("run_id", "runs", "id")],
    )
    db["jobs"].create_index(["idempotency_key"], index_name="jobs_by_idempotency_key", unique=True)
    db["jobs"].create_index(["name", "generation"], index_name="jobs_by_name_generation", unique=True)
    db["jobs"].create_index(["remote_id"], index_name="jobs_by_remote_id")
    db["events"].create(
        {
            "id": int, "ts": str, "run_id": int, "name": str, "event_type": str, "method": str,
            "path": str, "http_status": int, "request_id": str, "track_id": str,
            "idempotency_key": str, "outcome": str, "actor": str, "detail": str, "prev_hash": str,
            "hash": str,
        },
        pk="id",
        not_null=["ts", "event_type", "prev_hash", "hash"],
        foreign_keys=[("run_id", "runs", "id")],
    )
    for op in ("UPDATE", "DELETE"):
        db.execute(
            f"CREATE TRIGGER events_no_{op.lower()} BEFORE {op} ON events "
            "BEGIN SELECT RAISE(ABORT, 'events are append-only'); END"
        )
    db["locks"].create(
        {
            "id": str, "user": str, "host": str, "pid": int, "ci_run_url": str,
            "acquired_at": float, "heartbeat_at": float, "lease_seconds": float,
        },
        pk="id",
    )


def _v2_events_by_name(db) -> None:
    """Schema version 2: `history NAME --limit N` reads an index instead of scanning every event."""
    db["events"].create_index(["name"], index_name="events_by_name")


def _v3_live_jobs(db) -> None:
    """Schema version 3: `recorded_state(names)` finds the names that still need planning by an index.

    `superseded` marks every job with a later generation of its name, kept by a trigger so any insert
    (ours, an import, a bulk load) maintains it; `jobs_live` indexes the jobs LIVE_JOB describes.
    """
    db.execute("ALTER TABLE jobs ADD COLUMN superseded INTEGER NOT NULL DEFAULT 0")
    db.execute(
        "UPDATE jobs SET superseded = 1 WHERE EXISTS "
        "(SELECT 1 FROM jobs later WHERE later.name = jobs.name AND later.generation > jobs.generation)"
    )
    db.execute(
        "CREATE TRIGGER jobs_supersede AFTER INSERT ON jobs BEGIN "
        "UPDATE jobs SET superseded = 1 WHERE name = NEW.name AND generation < NEW.generation AND superseded = 0; "
        "UPDATE jobs SET superseded = 1 WHERE id = NEW.id AND EXISTS "
        "(SELECT 1 FROM jobs later WHERE later.name = NEW.name AND later.generation > NEW.generation); END"
    )
    db.execute(f"CREATE INDEX jobs_live ON jobs(name) WHERE {LIVE_JOB}")


MIGRATIONS = (_v1_tables, _v2_events_by_name, _v3_live_jobs)
SCHEMA_VERSION = len(MIGRATIONS)


# The schema MIGRATIONS build, in plain SQL, in sqlite_master's order: `open_write` makes a new ledger
# from these, so creating one never imports sqlite-utils (~0.06 s; ~0.12 s where numpy is installed,
# which sqlite-utils then loads). tests/test_ledger.py checks that they make the same tables, columns,
# indexes and triggers as MIGRATIONS (up to whitespace), so a new migration must extend them.
CURRENT_SCHEMA = (
    'CREATE TABLE "meta" ("id" INTEGER PRIMARY KEY, "lineage" TEXT NOT NULL, "serial" INTEGER NOT NULL, '
    '"schema_version" INTEGER NOT NULL, "environment" TEXT NOT NULL, "base_url" TEXT NOT NULL, '
    '"head_hash" TEXT NOT NULL, "events_count" INTEGER, "created_at" TEXT)',
    'CREATE TABLE "runs" ("id" INTEGER PRIMARY KEY, "command" TEXT NOT NULL, "actor" TEXT NOT NULL, '
    '"pid" INTEGER, "commit" TEXT, "ci_run_url" TEXT, "plan_digest" TEXT, "started_at" TEXT NOT NULL, '
    '"finished_at" TEXT, "outcome" TEXT)',
    'CREATE TABLE "jobs" ("id" INTEGER PRIMARY KEY, "name" TEXT NOT NULL, "kind" TEXT NOT NULL, '
    '"generation" INTEGER NOT NULL, "fingerprint" TEXT NOT NULL, "fingerprint_version" INTEGER, '
    '"revision" INTEGER, "remote_id" TEXT, "idempotency_key" TEXT NOT NULL, "phase" TEXT NOT NULL, '
    '"remote_status" TEXT, "uploaded" INTEGER, "total" INTEGER, "processed" INTEGER, "succeeded" INTEGER, '
    '"failed" INTEGER, "detail" TEXT, "result_path" TEXT, "result_sha256" TEXT, "rerun" INTEGER, '
    '"created_at" TEXT, "updated_at" TEXT, "run_id" INTEGER REFERENCES "runs"("id"), '
    "superseded INTEGER NOT NULL DEFAULT 0)",
    'CREATE UNIQUE INDEX "jobs_by_idempotency_key" ON "jobs" ("idempotency_key")',
    'CREATE UNIQUE INDEX "jobs_by_name_generation" ON "jobs" ("name", "generation")',
    'CREATE INDEX "jobs_by_remote_id" ON "jobs" ("remote_id")',
    'CREATE TABLE "events" ("id" INTEGER PRIMARY KEY, "ts" TEXT NOT NULL, '
    '"run_id" INTEGER REFERENCES "runs"("id"), "name" TEXT, "event_type" TEXT NOT NULL, "method" TEXT, '
    '"path" TEXT, "http_status" INTEGER, "request_id" TEXT, "track_id" TEXT, "idempotency_key" TEXT, '
    '"outcome" TEXT, "actor" TEXT, "detail" TEXT, "prev_hash" TEXT NOT NULL, "hash" TEXT NOT NULL)',
    "CREATE TRIGGER events_no_update BEFORE UPDATE ON events "
    "BEGIN SELECT RAISE(ABORT, 'events are append-only'); END",
    "CREATE TRIGGER events_no_delete BEFORE DELETE ON events "
    "BEGIN SELECT RAISE(ABORT, 'events are append-only'); END",
    'CREATE TABLE "locks" ("id" TEXT PRIMARY KEY, "user" TEXT, "host" TEXT, "pid" INTEGER, "ci_run_url" TEXT, '
    '"acquired_at" REAL, "heartbeat_at" REAL, "lease_seconds" REAL)',
    'CREATE INDEX "events_by_name" ON "events" ("name")',
    "CREATE TRIGGER jobs_supersede AFTER INSERT ON jobs BEGIN "
    "UPDATE jobs SET superseded = 1 WHERE name = NEW.name AND generation < NEW.generation AND superseded = 0; "
    "UPDATE jobs SET superseded = 1 WHERE id = NEW.id AND EXISTS "
    "(SELECT 1 FROM jobs later WHERE later.name = NEW.name AND later.generation > NEW.generation); END",
    f"CREATE INDEX jobs_live ON jobs(name) WHERE {LIVE_JOB}",
)
