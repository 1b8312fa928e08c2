"""The SQLite ledger on real files: opening, migrations, reads that never write, records, chain, locks."""

from __future__ import annotations

import hashlib
import json
import os
import random
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from reconciler.ledger import connection as ledger_connection
from reconciler.ledger import events as ledger_events
from reconciler.errors import LedgerError, LockHeldError
from reconciler.ledger.store import SCHEMA_VERSION, Actor, Binding, Ledger, events_query
from reconciler.ledger.schema import LIVE_JOB, LIVE_JOB_V3
from reconciler.model import Observation

REPO = Path(__file__).resolve().parent.parent
LOCAL = Binding("local", "http://127.0.0.1:8080")
ALICE = Actor("alice", "host-a", os.getpid(), "c0ffee", "https://ci.example/runs/1")
BOB = Actor("bob", "host-a", os.getppid(), None, None)


@pytest.fixture
def path(tmp_path) -> Path:
    return tmp_path / "state" / "local" / "ledger.db"


@pytest.fixture
def led(path):
    with Ledger.open_write(path, LOCAL) as opened:
        yield opened


def files(directory: Path) -> dict[str, str]:
    """Every file in a directory with the sha256 of its bytes."""
    if not directory.exists():
        return {}
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


def intent(led: Ledger, run_id: int, name: str = "fx", key: str | None = None, kind: str = "MassAction", **kw):
    generation = led.next_generation(name)
    return led.add_intent(
        run_id=run_id, name=name, kind=kind, generation=generation, fingerprint="f" * 64,
        fingerprint_version=1, revision=1, idempotency_key=key or f"{name}-{generation}",
        detail={"actionType": "ImportFXRate", "file": "data/fx.csv"}, **kw,
    )


def populate(path: Path, *, binding: Binding = LOCAL, **open_kw) -> None:
    """A ledger with a run, two jobs, events of several kinds, closed."""
    with Ledger.open_write(path, binding, **open_kw) as led:
        run = led.start_run("apply", ALICE, plan_digest="d" * 64)
        job = intent(led, run)
        led.record_submitted(job.id, remote_id="B-1", status="Pending", phase="active", event={"run_id": run})
        co = intent(led, run, name="vehicles", kind="CustomObjectJob")
        led.record_submitted(co.id, remote_id="J-1", status="pending", phase="created", event={"run_id": run})
        led.record_event(run_id=run, event_type="remote_call", name="fx", method="GET", path="/v1/bulk/B-1",
                         http_status=200, request_id="r-1", track_id="t-1", outcome="ok")
        led.finish_run(run, "ok")


def tamper(path: Path, sql: str, params: tuple = ()) -> None:
    """Edit the file behind the ledger's back, as someone with the file could."""
    conn = sqlite3.connect(path)
    conn.executescript("DROP TRIGGER IF EXISTS events_no_update; DROP TRIGGER IF EXISTS events_no_delete;")
    conn.execute(sql, params)
    conn.commit()
    conn.close()


# --- opening and creating -------------------------------------------------------------------------


def test_open_write_creates_directories_file_and_schema(path):
    with Ledger.open_write(path, LOCAL) as led:
        assert led.schema_version == SCHEMA_VERSION and led.serial == 0
        assert len(led.lineage) == 36 and led.recorded_state().lineage == led.lineage
        assert led.verify().ok and led.events() == [] and led.current_lock() is None
    assert list(files(path.parent)) == ["ledger.db"]  # no temp file, no -wal/-shm left at rest


def test_reopening_keeps_lineage_and_records(path):
    populate(path)
    with Ledger.open_write(path, LOCAL) as first:
        lineage, serial = first.lineage, first.serial
    with Ledger.open_write(path, LOCAL) as again:
        assert (again.lineage, again.serial) == (lineage, serial)
        assert [j.name for j in again.jobs()] == ["fx", "vehicles"]


def test_open_read_of_a_missing_ledger_creates_nothing(tmp_path):
    assert Ledger.open_read(tmp_path / "state" / "local" / "ledger.db", LOCAL) is None
    assert not (tmp_path / "state").exists()
    (tmp_path / "here").mkdir()
    assert Ledger.open_read(tmp_path / "here" / "ledger.db", LOCAL) is None
    assert files(tmp_path / "here") == {}


READER = """
import sys
from pathlib import Path
from reconciler.ledger.store import Binding, Ledger
with Ledger.open_read(Path(sys.argv[1]), Binding("local", "http://127.0.0.1:8080")) as led:
    led.recorded_state(["fx"]), led.jobs(), led.live_jobs(), led.events("fx"), led.verify(), led.current_lock()
print("sqlite_utils" in sys.modules, "numpy" in sys.modules)
"""


def test_reads_import_no_sqlite_utils(path):
    """sqlite-utils (and the numpy it may pull in) is for the write path: read-only commands stay fast."""
    populate(path)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", READER, str(path)], capture_output=True, text=True, env=env, check=True)
    assert proc.stdout.split() == ["False", "False"]


def test_only_a_migration_uses_sqlite_utils_and_it_never_loads_numpy(path, tmp_path):
    """sqlite-utils migrates an older ledger's schema (it loads numpy where installed only to map its values,
    which the ledger never passes); a new ledger and every row are made in plain SQL, so creating a ledger
    or applying on one imports neither."""
    code = READER.replace("open_read", "open_write").replace("led.recorded_state", "led.start_run('x', ALICE), led.recorded_state")
    code = code.replace("import sys\n", "import sys\nfrom reconciler.ledger.store import Actor\nALICE = Actor('a', 'h', 1)\n", 1)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    old = tmp_path / "old" / "ledger.db"
    Ledger.open_write(old, LOCAL, migrate_to=SCHEMA_VERSION - 1).close()
    for ledger, migrated in ((path, False), (old, True), (old, False)):  # new; migrated; written to
        proc = subprocess.run([sys.executable, "-c", code, str(ledger)], capture_output=True, text=True, env=env,
                              check=True)
        assert proc.stdout.split() == [str(migrated), "False"]
    for ledger in (path, old):
        with Ledger.open_read(ledger, LOCAL) as led:
            assert led.verify().ok and led.schema_version == SCHEMA_VERSION
    assert sqlite3.connect(old).execute("SELECT count(*) FROM runs").fetchone() == (2,)


def test_reads_never_change_a_byte_or_create_a_file(path):
    populate(path)
    before = files(path.parent)
    led = Ledger.open_read(path, LOCAL)
    try:
        state = led.recorded_state()
        assert [r.name for r in state.records] == ["fx", "vehicles"] and state.serial == led.serial
        assert led.jobs("fx")[0].remote_id == "B-1" and led.job(1).name == "fx"
        assert led.job_by_remote_id("J-1").name == "vehicles" and led.job_by_remote_id("nope") is None
        assert len(led.events(limit=2)) == 2 and len(list(led.iter_events())) == 5
        assert led.events("fx", before_id=3)[0]["id"] == 2
        assert led.verify().ok and led.current_lock() is None and led.next_generation("fx") == 2
        with pytest.raises(LedgerError, match="read-only"):
            led.record_event(run_id=None, event_type="note")
        with pytest.raises(LedgerError, match="read-only"):
            led.acquire_lock(ALICE)
    finally:
        led.close()
    assert files(path.parent) == before


def test_a_reader_sees_a_live_writer_and_the_file_rests_alone_afterwards(path):
    populate(path)
    writer = Ledger.open_write(path, LOCAL)
    reader = Ledger.open_read(path, LOCAL)
    writer.record_event(run_id=None, event_type="note")
    assert reader.serial == writer.serial and reader.events(limit=1)[0]["event_type"] == "note"
    writer.close()
    reader.close()
    Ledger.open_write(path, LOCAL).close()
    assert list(files(path.parent)) == ["ledger.db"]


def foreign_sqlite(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (body TEXT)")
    conn.execute("INSERT INTO notes VALUES ('hello')")
    conn.commit()
    conn.close()


def fake_meta(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE meta (x TEXT)")
    conn.commit()
    conn.close()


def versioned_meta(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE meta (id INTEGER PRIMARY KEY, schema_version INTEGER)")
    conn.execute("INSERT INTO meta VALUES (1, 1)")
    conn.commit()
    conn.close()


NOT_LEDGERS = {
    "random bytes": lambda p: p.write_bytes(random.Random(7).randbytes(8192)),
    "text": lambda p: p.write_text("serial: 3\nthis is not a database\n"),
    "empty": lambda p: p.write_bytes(b""),
    "sqlite header then garbage": lambda p: p.write_bytes(b"SQLite format 3\x00" + random.Random(3).randbytes(4096)),
    "another sqlite database": foreign_sqlite,
    "a meta table of another shape": fake_meta,
    "a versioned meta table with no environment": versioned_meta,
}


@pytest.mark.parametrize("opener", ["open_read", "open_write"])
@pytest.mark.parametrize("kind", NOT_LEDGERS)
def test_a_file_that_is_not_a_ledger_is_refused_and_left_untouched(path, kind, opener):
    path.parent.mkdir(parents=True)
    NOT_LEDGERS[kind](path)
    before = files(path.parent)
    with pytest.raises(LedgerError, match="is not a reconciler ledger") as caught:
        getattr(Ledger, opener)(path, LOCAL)
    assert str(path) in str(caught.value)
    assert files(path.parent) == before


def test_a_directory_at_the_ledger_path_is_refused(path):
    path.mkdir(parents=True)
    with pytest.raises(LedgerError, match="is a directory"):
        Ledger.open_write(path, LOCAL)


@pytest.mark.parametrize("opener", ["open_read", "open_write"])
def test_a_newer_schema_is_refused_and_left_untouched(path, opener):
    populate(path)
    tamper(path, "UPDATE meta SET schema_version = ?", (SCHEMA_VERSION + 1,))
    before = files(path.parent)
    with pytest.raises(LedgerError, match=f"schema version {SCHEMA_VERSION + 1}, newer .* upgrade reconciler"):
        getattr(Ledger, opener)(path, LOCAL)
    assert files(path.parent) == before


@pytest.mark.parametrize("opener", ["open_read", "open_write"])
@pytest.mark.parametrize(
    "other", [Binding("us-production", LOCAL.base_url), Binding("local", "https://rest.zuora.com")]
)
def test_a_ledger_of_another_environment_is_refused(path, opener, other):
    populate(path)
    before = files(path.parent)
    with pytest.raises(LedgerError) as caught:
        getattr(Ledger, opener)(path, other)
    message = str(caught.value)
    assert "belongs to environment local (http://127.0.0.1:8080)" in message
    assert f"state/{other.environment}/ledger.db" in message
    assert files(path.parent) == before


def test_a_trailing_slash_on_the_base_url_is_the_same_environment(path):
    populate(path)
    Ledger.open_write(path, Binding("local", LOCAL.base_url + "/")).close()


# --- migrations -----------------------------------------------------------------------------------


def indexes(path: Path) -> set[str]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    finally:
        conn.close()


ADDED_INDEX = {2: "events_by_name", 3: "jobs_live", 4: "jobs_live_v4", 5: "blobs_by_ref_part"}  # schema version -> the index it adds
DROPPED_INDEX = {4: "jobs_live"}  # schema version -> the index it replaces


def test_every_schema_version_names_its_index():
    assert sorted(ADDED_INDEX) == list(range(2, SCHEMA_VERSION + 1))


@pytest.mark.parametrize("old", range(1, SCHEMA_VERSION))
def test_every_older_schema_is_readable_and_migrates_forward(path, old):
    populate(path, migrate_to=old)
    assert not {ADDED_INDEX[v] for v in range(old + 1, SCHEMA_VERSION + 1)} & indexes(path)
    before = files(path.parent)
    reader = Ledger.open_read(path, LOCAL)
    assert reader.schema_version == old and len(reader.events("fx")) == 3 and reader.verify().ok
    serial = reader.serial
    reader.close()
    assert files(path.parent) == before  # reading an old ledger does not migrate it
    with Ledger.open_write(path, LOCAL) as led:
        assert led.schema_version == SCHEMA_VERSION
        assert led.serial == serial  # the schema moved, not the records: saved plans stay valid
        assert [j.name for j in led.jobs()] == ["fx", "vehicles"] and led.verify().ok
    assert set(ADDED_INDEX.values()) - set(DROPPED_INDEX.values()) <= indexes(path)
    assert not set(DROPPED_INDEX.values()) & indexes(path)
    with Ledger.open_read(path, LOCAL) as again:
        assert again.schema_version == SCHEMA_VERSION


def schema(path: Path) -> dict[str, object]:
    """Each table's columns (name, type, not null, default, pk) and foreign keys, and every index and trigger."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        shape: dict[str, object] = {
            t: (conn.execute(f"PRAGMA table_info({t})").fetchall(), conn.execute(f"PRAGMA foreign_key_list({t})").fetchall())
            for t in tables
        }
        for kind in ("index", "trigger"):
            rows = conn.execute("SELECT name, tbl_name, sql FROM sqlite_master WHERE type = ? ORDER BY name", (kind,))
            shape[kind] = [(name, table, sql and " ".join(sql.split())) for name, table, sql in rows]
    finally:
        conn.close()
    return shape


def test_a_new_ledger_has_the_schema_its_migrations_make(tmp_path):
    """Both come from schema.py's one definition: built in one pass, or version by version from 1."""
    migrated, fresh = tmp_path / "migrated.db", tmp_path / "fresh.db"
    Ledger.open_write(migrated, LOCAL, migrate_to=1).close()
    Ledger.open_write(migrated, LOCAL).close()
    Ledger.open_write(fresh, LOCAL).close()
    assert schema(fresh) == schema(migrated)
    with Ledger.open_read(fresh, LOCAL) as led:
        assert led.schema_version == SCHEMA_VERSION and led.serial == 0 and led.verify().ok


def superseded(path: Path) -> dict[tuple[str, int], int]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {(n, g): s for n, g, s in conn.execute("SELECT name, generation, superseded FROM jobs")}
    finally:
        conn.close()


def test_v2_to_v3_marks_superseded_jobs_and_reads_live_names_by_index(path):
    with Ledger.open_write(path, LOCAL, migrate_to=2) as led:
        run = led.start_run("apply", ALICE)
        for name, count in (("fx", 3), ("rates", 1)):
            for _ in range(count):
                done(led, run, intent(led, run, name=name))
    with Ledger.open_read(path, LOCAL) as old:  # not migrated yet: read whole, names or not
        assert old.recorded_state(["nothing"]) == old.recorded_state()
    with Ledger.open_write(path, LOCAL, migrate_to=3) as led:
        assert led.schema_version == 3
    assert superseded(path) == {("fx", 1): 1, ("fx", 2): 1, ("fx", 3): 0, ("rates", 1): 0}
    assert query_plan(path, LIVE_JOB_V3) == "SCAN jobs USING INDEX jobs_live"
    with Ledger.open_read(path, LOCAL) as v3:  # read-only, so not migrated: its own index serves it
        assert [r.name for r in v3.recorded_state(["nothing"]).records] == ["fx", "rates"]


def query_plan(path: Path, live_job: str) -> str:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    sql = f"SELECT name FROM jobs WHERE {live_job}"
    plan = " | ".join(r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + sql))
    conn.close()
    return plan


def test_v3_to_v4_indexes_the_output_url_key_not_its_text(path):
    with Ledger.open_write(path, LOCAL, migrate_to=3) as led:
        run = led.start_run("apply", ALICE)
        for name in ("fx", "rates", "quoted"):
            for _ in range(2):  # generation 1 is superseded and done: live only while its output awaits archiving
                done(led, run, intent(led, run, name=name), output=False)
        [old_fx, _, old_rates, _, old_quoted, _] = led.jobs()
        observed = Observation(old_fx.remote_id, "MassAction", "Completed", output_url="https://x/1")
        led.record_observation(old_fx.id, observed, run_id=run, source="refresh")
    tamper(path, "UPDATE jobs SET detail = ? WHERE id = ?", ('{"inner":{"output_url":null}}', old_quoted.id))
    tamper(path, "UPDATE jobs SET detail = ? WHERE id = ?", ("not json", old_rates.id))
    with Ledger.open_write(path, LOCAL) as led:
        assert led.schema_version == SCHEMA_VERSION
        live = {(j.name, j.generation) for j in led.live_jobs()}
        assert live == {("fx", 1), ("fx", 2), ("rates", 2), ("quoted", 2)}  # the key, not a string that spells it
        assert [r.name for r in led.recorded_state(["nothing"]).records] == ["fx", "quoted", "rates"]
    assert "jobs_live" not in indexes(path)
    assert query_plan(path, LIVE_JOB) == "SCAN jobs USING INDEX jobs_live_v4"


def test_superseded_is_kept_by_the_database_for_any_insert(path):
    populate(path)
    conn = sqlite3.connect(path)
    row = "INSERT INTO jobs (name, kind, generation, fingerprint, idempotency_key, phase) VALUES (?, 'MassAction', ?, 'f', ?, 'done')"
    conn.execute(row, ("fx", 5, "k5"))  # a bulk load or an import, written past the ledger API
    conn.execute(row, ("fx", 3, "k3"))  # an older generation recorded late is superseded at once
    conn.commit()
    conn.close()
    assert superseded(path) == {("fx", 1): 1, ("fx", 5): 0, ("fx", 3): 1, ("vehicles", 1): 0}


# --- serial and row counts ------------------------------------------------------------------------


def assert_same(got, expected) -> None:
    assert got == expected and got.detail == expected.detail


def test_each_record_write_bumps_the_serial_exactly_once(led):
    def delta(action) -> int:
        before = led.serial
        action()
        return led.serial - before

    run = led.start_run("apply", ALICE)
    assert delta(lambda: intent(led, run, key="k1")) == 1
    job = led.jobs()[0]
    retry = lambda: led.add_intent(  # noqa: E731 - a rerun after a crash repeats the same intent
        run_id=run, name="fx", kind="MassAction", generation=1, fingerprint="f" * 64, fingerprint_version=1,
        revision=1, idempotency_key="k1", detail={},
    )
    assert delta(lambda: assert_same(retry(), job)) == 0  # idempotent: the existing row, unchanged
    assert delta(lambda: led.record_submitted(job.id, remote_id="B-1", status="Pending", phase="active", event={})) == 1
    observe = lambda status, **c: led.record_observation(  # noqa: E731
        job.id, Observation("B-1", "MassAction", status, **c), run_id=run, source="refresh"
    )
    assert delta(lambda: observe("Processing", processed=1)) == 1
    assert delta(lambda: observe("Processing", processed=1)) == 0
    assert delta(lambda: observe("Processing", processed=5)) == 1
    assert delta(lambda: led.record_observation(job.id, Observation("B-1", "MassAction", None, missing=True),
                                                run_id=run, source="refresh")) == 0
    assert delta(lambda: led.record_result(job.id, path="results/B-1.zip", sha256="a" * 64, run_id=run)) == 1
    assert delta(lambda: led.record_event(run_id=run, event_type="remote_call")) == 1
    assert delta(lambda: led.record_retired(job.id, run_id=run, reason="spec removed", actor=ALICE)) == 1
    assert delta(lambda: led.record_retired(job.id, run_id=run, reason="again", actor=ALICE)) == 0
    co = intent(led, run, name="vehicles", kind="CustomObjectJob")
    led.record_submitted(co.id, remote_id="J-1", status="pending", phase="created", event={})
    assert delta(lambda: led.record_uploaded(co.id, status="pending", event={})) == 1
    # bookkeeping never moves it: runs and the lock
    assert delta(lambda: led.finish_run(run, "ok")) == 0
    assert delta(lambda: led.start_run("plan", ALICE)) == 0
    lock = led.acquire_lock(ALICE)
    assert delta(lambda: led.heartbeat(lock)) == 0
    assert delta(lambda: led.release_lock(lock, by=BOB, forced=True)) == 0
    assert led.verify().ok


def test_a_write_that_finds_no_row_raises_and_changes_nothing(led):
    run = led.start_run("apply", ALICE)
    serial, count = led.serial, len(led.events())
    with pytest.raises(LedgerError, match="no job with ledger id 42"):
        led.record_submitted(42, remote_id="B", status="Pending", phase="active", event={})
    with pytest.raises(LedgerError, match="run 99 was not found"):
        led.finish_run(99, "ok")
    with pytest.raises(LedgerError, match=str(led.path)):  # the sqlite error names the file
        led.record_event(run_id=run + 100, event_type="note")  # no such run: foreign key
    assert (led.serial, len(led.events())) == (serial, count) and led.verify().ok


def test_a_second_intent_for_the_same_generation_is_refused(led):
    run = led.start_run("apply", ALICE)
    first = intent(led, run, key="k1")
    with pytest.raises(LedgerError, match="UNIQUE"):
        led.add_intent(run_id=run, name="fx", kind="MassAction", generation=first.generation, fingerprint="e" * 64,
                       fingerprint_version=1, revision=1, idempotency_key="k2", detail={})
    with pytest.raises(LedgerError, match="k1 already belongs to job 1"):
        led.add_intent(run_id=run, name="other", kind="MassAction", generation=1, fingerprint="e" * 64,
                       fingerprint_version=1, revision=1, idempotency_key="k1", detail={})
    assert [j.idempotency_key for j in led.jobs()] == ["k1"]


def test_a_closed_ledger_says_so(path):
    led = Ledger.open_write(path, LOCAL)
    led.close()
    led.close()
    with pytest.raises(LedgerError, match="already closed"):
        led.jobs()


# --- records --------------------------------------------------------------------------------------


def test_job_lifecycle_and_recorded_state(led):
    run = led.start_run("apply", ALICE)
    job = intent(led, run, rerun=True)
    assert (job.phase, job.generation, job.rerun, job.detail["file"]) == ("intent", 1, True, "data/fx.csv")
    said = led.events(limit=1)[0]  # the audit log says which file ran and that someone asked for a rerun
    assert (said["event_type"], said["detail"]["file"], said["detail"]["rerun"]) == ("intent", "data/fx.csv", True)
    job = led.record_submitted(job.id, remote_id="B-1", status="Pending", phase="active",
                               counts={"total": 10}, event={"run_id": run, "method": "POST", "http_status": 200})
    assert (job.remote_id, job.remote_status, job.total, job.processed) == ("B-1", "Pending", 10, None)
    changed = led.record_observation(job.id, Observation("B-1", "MassAction", "Completed", total=10, processed=10,
                                                         succeeded=9, failed=1, output_url="https://x/v1/files/F1"),
                                     run_id=run, source="apply --wait")
    job = led.job(job.id)
    assert changed and (job.phase, job.remote_status, job.succeeded, job.failed) == ("done", "Completed", 9, 1)
    assert job.detail["output_url"] == "https://x/v1/files/F1"
    led.record_result(job.id, path="state/local/results/B-1.zip", sha256="b" * 64, run_id=run)
    assert led.job(job.id).result_sha256 == "b" * 64
    again = intent(led, run)
    state = led.recorded_state()
    assert state.by_name()["fx"].jobs == (led.job(job.id), again) and state.by_name()["fx"].latest.generation == 2
    assert (state.lineage, state.serial) == (led.lineage, led.serial)
    drift = led.events("fx", limit=1, before_id=led.events("fx")[1]["id"])[0]
    assert drift["event_type"] == "status_change" and drift["detail"]["from"] == "Pending"
    assert drift["detail"]["to"] == "Completed" and drift["detail"]["source"] == "apply --wait"
    assert drift["actor"] == "alice@host-a"  # each event names who caused it, through its run


def done(led: Ledger, run: int, job, status: str = "Completed", output: bool = True, kind: str = "MassAction"):
    """Take an intent to a finished remote job (with an output file unless `output` is False)."""
    remote = f"R-{job.id}"
    led.record_submitted(job.id, remote_id=remote, status="Pending", phase="active", event={"run_id": run})
    url = f"https://x/v1/files/{remote}" if output else None
    led.record_observation(job.id, Observation(remote, kind, status, output_url=url), run_id=run, source="test")
    if output:
        led.record_result(job.id, path=f"results/{remote}.zip", sha256="0" * 64, run_id=run)
    return led.job(job.id)


def test_recorded_state_of_names_adds_every_name_the_planner_may_still_act_on(led):
    run = led.start_run("apply", ALICE)

    def history(name: str, *steps: str, kind: str = "MassAction"):
        for step in steps:
            job = intent(led, run, name=name, kind=kind)
            if step == "intent":
                continue
            if step == "pending":  # a custom object job still running remotely
                led.record_submitted(job.id, remote_id=f"R-{job.id}", status="pending", phase="active",
                                     event={"run_id": run})
                continue
            job = done(led, run, job, status="Failed" if step == "failed" else "Completed",
                       output=step not in ("failed", "unarchived"))
            if step == "unarchived":  # its output exists remotely but is not archived yet
                led.record_observation(job.id, Observation(job.remote_id, kind, "Completed", output_url="https://x/f"),
                                       run_id=run, source="test")
            if step == "retired":
                led.record_retired(job.id, run_id=run, reason="spec removed", actor=ALICE)

    history("spec", "done", "done")  # a spec whose latest job completed
    history("gone", "done", "failed", "retired")  # removed and retired for good: left out
    history("leaving", "done", "done")  # removed, not retired yet: the planner retires it
    history("doubt", "done", "intent")  # an intent in doubt
    history("archive", "unarchived", "retired")  # refresh still archives its old result
    history("slot", "pending", kind="CustomObjectJob")
    led.record_retired(led.jobs("slot")[-1].id, run_id=run, reason="forgotten", actor=ALICE)  # may still run
    history("failed", "failed", "retired")  # a failed job has no output to archive: left out
    everything = led.recorded_state()
    some = led.recorded_state(["spec", "asked-but-unknown"])
    assert [r.name for r in some.records] == ["archive", "doubt", "leaving", "slot", "spec"]
    assert all(r == everything.by_name()[r.name] for r in some.records)  # whole histories, oldest first
    assert (some.lineage, some.serial) == (everything.lineage, everything.serial)
    assert [r.name for r in led.recorded_state(["gone"]).records] == ["archive", "doubt", "gone", "leaving", "slot",
                                                                       "spec"]
    assert {j.name for j in led.live_jobs()} == {r.name for r in some.records}
    many = [str(i) for i in range(1200)] + ["gone"]  # more names than one query binds
    assert led.recorded_state(many) == led.recorded_state(["gone"])

    every = led.jobs()
    gone = [j for j in every if j.name == "gone"]
    picked = led.jobs_matching(ids=[gone[0].id, 10**6], remote_ids=[gone[1].remote_id, "R-none", None], live=True)
    assert picked == sorted(led.live_jobs() + gone[:2], key=lambda j: j.id)  # creation order, no duplicates
    assert led.jobs_matching(ids=[j.id for j in every] + list(range(10**6, 10**6 + 600))) == every  # chunked
    assert led.jobs_matching(remote_ids=[j.remote_id for j in every]) == [j for j in every if j.remote_id]
    assert led.jobs_matching() == []


def test_custom_object_job_stays_created_until_uploaded(led):
    run = led.start_run("apply", ALICE)
    job = intent(led, run, name="vehicles", kind="CustomObjectJob")
    led.record_submitted(job.id, remote_id="J-1", status="pending", phase="created", event={})
    assert not led.record_observation(job.id, Observation("J-1", "CustomObjectJob", "pending"), run_id=run, source="s")
    assert led.job(job.id).phase == "created"
    job = led.record_uploaded(job.id, status="pending", event={"method": "POST", "path": "/objects/jobs/J-1/files"})
    assert (job.uploaded, job.phase) == (True, "active")
    assert led.events(limit=1)[0]["event_type"] == "uploaded"


def test_a_job_missing_remotely_is_left_as_recorded(led):
    run = led.start_run("plan", ALICE)
    job = intent(led, run)
    led.record_submitted(job.id, remote_id="B-1", status="Pending", phase="active", event={})
    gone = Observation("B-1", "MassAction", None, missing=True)
    assert led.record_observation(job.id, gone, run_id=run, source="refresh") is False
    assert led.job(job.id).remote_status == "Pending"
    with pytest.raises(ValueError, match="observation of B-2"):
        led.record_observation(job.id, Observation("B-2", "MassAction", "Completed"), run_id=run, source="refresh")


def test_retiring_names_the_operator(led):
    run = led.start_run("forget", ALICE)
    job = intent(led, run)
    retired = led.record_retired(job.id, run_id=run, reason="forgotten by operator", actor=BOB)
    assert retired.phase == "retired"
    event = led.events(limit=1)[0]
    assert (event["event_type"], event["actor"], event["detail"]["reason"]) == ("retired", "bob@host-a",
                                                                                "forgotten by operator")


def test_events_newest_first_filtered_and_paged(led):
    run = led.start_run("apply", ALICE)
    for i in range(6):
        led.record_event(run_id=run, event_type="remote_call", name="a" if i % 2 else "b", http_status=200 + i)
    assert [e["id"] for e in led.events()] == [6, 5, 4, 3, 2, 1]
    assert [e["id"] for e in led.events("a")] == [6, 4, 2]
    assert [e["id"] for e in led.events(limit=2, before_id=5)] == [4, 3]
    assert [e["id"] for e in led.events("b", limit=1)] == [5]


def test_iter_events_streams_oldest_first_across_chunks(led, monkeypatch):
    monkeypatch.setattr(ledger_events, "_CHUNK", 3)
    for i in range(8):
        led.record_event(run_id=None, event_type="note", detail={"i": i})
    assert [e["detail"]["i"] for e in led.iter_events()] == list(range(8))


@pytest.mark.parametrize(
    ("name", "before_id", "index_used"),
    [(None, None, "SCAN events"), ("fx", None, "events_by_name"), (None, 500, "INTEGER PRIMARY KEY")],
)
def test_history_reads_an_index_not_a_sort(path, name, before_id, index_used):
    populate(path)
    sql, params = events_query(name, 50, before_id)
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    plan = " | ".join(row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params))
    conn.close()
    assert index_used in plan and "TEMP B-TREE" not in plan, plan


# --- secrets --------------------------------------------------------------------------------------


def test_secrets_never_enter_the_ledger(path):
    with Ledger.open_write(path, LOCAL) as led:
        run = led.start_run("apply", ALICE)
        led.record_event(
            run_id=run, event_type="remote_call", method="POST", path="/oauth/token?client_secret=s3cr3t-q&x=1",
            detail={
                "Authorization": "Bearer s3cr3t-a", "access_token": "s3cr3t-b", "client_secret": "s3cr3t-c",
                "headers": {"X-Api-Key": "s3cr3t-d", "Accept": "application/json"},
                "calls": [{"password": "s3cr3t-e"}, "Bearer s3cr3t-f"], "note": "basic s3cr3t-g",
            },
        )
        intent(led, run, key="k1")
        led.add_intent(run_id=run, name="y", kind="MassAction", generation=1, fingerprint="f" * 64,
                       fingerprint_version=1, revision=1, idempotency_key="k2", detail={"token": "s3cr3t-h"})
        event = led.events(limit=1, before_id=2)[0]
        assert event["detail"]["headers"] == {"X-Api-Key": "<redacted>", "Accept": "application/json"}
        assert event["path"] == "/oauth/token?client_secret=<redacted>&x=1"
        assert led.verify().ok
    assert b"s3cr3t" not in path.read_bytes()


# --- the hash chain in the file -------------------------------------------------------------------


def chained(path: Path, n: int = 5) -> None:
    with Ledger.open_write(path, LOCAL) as led:
        run = led.start_run("apply", ALICE)
        for i in range(1, n + 1):
            led.record_event(run_id=run, event_type="remote_call", name=f"spec-{i}", method="POST",
                             path="/v1/bulk", http_status=200, request_id=f"r-{i}", track_id="t",
                             idempotency_key=f"k-{i}", outcome="ok", actor=ALICE, detail={"i": i})


def verify(path: Path):
    with Ledger.open_read(path, LOCAL) as led:
        return led.verify()


EDITS = {
    "id": "30", "ts": "'2020-01-01T00:00:00+00:00'", "run_id": "run_id + 1", "name": "'other'",
    "event_type": "'forged'", "method": "'DELETE'", "path": "'/v1/other'", "http_status": "201",
    "request_id": "'r-x'", "track_id": "'t-x'", "idempotency_key": "'k-x'", "outcome": "'failed'",
    "actor": "'mallory@evil'", "detail": "'{\"i\":99}'", "prev_hash": "hash", "hash": "prev_hash",
}


@pytest.mark.parametrize("field", list(EDITS))
def test_verify_names_the_row_whose_field_was_edited(path, field):
    chained(path)
    tamper(path, f"UPDATE events SET {field} = {EDITS[field]} WHERE id = 3")
    report = verify(path)
    assert not report.ok and report.first_bad_id == 3, report


def test_verify_names_a_deleted_row(path):
    chained(path)
    tamper(path, "DELETE FROM events WHERE id = 2")
    report = verify(path)
    assert not report.ok and report.first_bad_id == 2 and "deleted" in report.message


def test_verify_names_swapped_rows(path):
    chained(path)
    columns = [c for c in EDITS if c != "id"]
    conn = sqlite3.connect(path)
    rows = {r[0]: r[1:] for r in conn.execute(f"SELECT id, {', '.join(columns)} FROM events WHERE id IN (2, 3)")}
    conn.close()
    assignments = ", ".join(f"{c} = ?" for c in columns)
    tamper(path, f"UPDATE events SET {assignments} WHERE id = 2", rows[3])
    tamper(path, f"UPDATE events SET {assignments} WHERE id = 3", rows[2])
    report = verify(path)
    assert not report.ok and report.first_bad_id == 2


def test_verify_shows_a_truncated_tail(path):
    chained(path)
    tamper(path, "DELETE FROM events WHERE id > 3")
    report = verify(path)
    assert not report.ok and report.first_bad_id == 4 and "removed" in report.message


def test_a_truncated_tail_stays_visible_after_more_writes(path):
    chained(path)
    tamper(path, "DELETE FROM events WHERE id > 3")
    with Ledger.open_write(path, LOCAL) as led:
        led.record_event(run_id=None, event_type="note")
        assert not led.verify().ok


def test_events_are_append_only_inside_sqlite(path):
    chained(path)
    conn = sqlite3.connect(path)
    for sql in ("UPDATE events SET outcome = 'x' WHERE id = 1", "DELETE FROM events WHERE id = 1"):
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute(sql)
    conn.close()


def test_history_of_an_edited_detail_does_not_crash(path):
    chained(path)
    tamper(path, "UPDATE events SET detail = 'not json' WHERE id = 2")
    with Ledger.open_read(path, LOCAL) as led:
        assert led.events(limit=4)[-1]["detail"] == "not json"
        assert led.verify().first_bad_id == 2


# --- locks ----------------------------------------------------------------------------------------


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_second_run_is_refused_naming_the_holder(led):
    lock = led.acquire_lock(ALICE)
    with pytest.raises(LockHeldError) as caught:
        led.acquire_lock(BOB)
    message = str(caught.value)
    for part in (f"alice@host-a pid {os.getpid()}", "https://ci.example/runs/1", "since", "last heartbeat",
                 f"reconciler lock release {lock}", str(led.path)):
        assert part in message
    assert led.current_lock()["id"] == lock


def test_a_dead_holder_on_this_host_is_taken_over_at_once(led):
    stale = led.acquire_lock(Actor("ci", "host-a", dead_pid(), None, None))
    serial = led.serial
    lock = led.acquire_lock(BOB)
    assert lock != stale and led.current_lock()["holder"] == f"bob@host-a pid {BOB.pid}"
    event = led.events(limit=1)[0]
    assert event["event_type"] == "lock_takeover" and "is gone" in event["detail"]["reason"]
    assert led.serial == serial and led.verify().ok
    with pytest.raises(LockHeldError, match=f"lost the ledger lock {stale} to bob@host-a pid {BOB.pid}"):
        led.heartbeat(stale)


def test_another_hosts_lock_is_taken_over_only_after_its_lease(led):
    t0 = 1_000_000.0
    other = Actor("ci", "host-b", 1, None, "https://ci.example/runs/9")
    first = led.acquire_lock(other, lease_seconds=60, now=lambda: t0)
    with pytest.raises(LockHeldError, match="ci@host-b pid 1"):
        led.acquire_lock(ALICE, now=lambda: t0 + 59)
    led.heartbeat(first, now=lambda: t0 + 50)
    with pytest.raises(LockHeldError):
        led.acquire_lock(ALICE, now=lambda: t0 + 100)
    assert not led.current_lock(now=lambda: t0 + 100)["expired"]
    assert led.current_lock(now=lambda: t0 + 111)["expired"]
    taken = led.acquire_lock(ALICE, now=lambda: t0 + 111)
    assert led.current_lock()["id"] == taken
    assert "lease lapsed" in led.events(limit=1)[0]["detail"]["reason"]


def test_a_waiting_run_gets_the_lock_when_it_is_released(path):
    with Ledger.open_write(path, LOCAL) as holder, Ledger.open_write(path, LOCAL) as waiter:
        lock = holder.acquire_lock(ALICE)
        releaser = threading.Timer(0.3, holder.release_lock, args=(lock,))
        releaser.start()
        try:
            mine = waiter.acquire_lock(BOB, timeout=30)
        finally:
            releaser.join()
        assert waiter.current_lock()["id"] == mine


def test_release_and_forced_release(led):
    lock = led.acquire_lock(ALICE)
    count = len(led.events())
    led.release_lock(lock)
    assert led.current_lock() is None and len(led.events()) == count
    with pytest.raises(LedgerError, match="no lock"):
        led.release_lock(lock)
    lock = led.acquire_lock(ALICE)
    led.release_lock(lock, by=BOB, forced=True)
    event = led.events(limit=1)[0]
    assert (event["event_type"], event["actor"], event["detail"]["forced"]) == ("lock_release", "bob@host-a", True)
    assert f"alice@host-a pid {os.getpid()}" in event["detail"]["holder"]


def test_an_intent_or_event_under_a_lock_renews_it_in_the_same_transaction(led):
    t0 = 1_000_000.0
    lock = led.acquire_lock(ALICE, now=lambda: t0)  # acquired long ago: its lease lapsed, nobody took it yet
    run = led.start_run("apply", ALICE)
    serial = led.serial
    job = intent(led, run, lock_id=lock)
    assert led.serial == serial + 1 and job.phase == "intent"
    assert not led.current_lock()["expired"]
    led.record_event(run_id=run, event_type="stop_requested", lock_id=lock)
    assert [e["event_type"] for e in led.events(limit=2)] == ["stop_requested", "intent"]
    with pytest.raises(LockHeldError, match="locked by alice@host-a"):  # renewed: another host may not take it
        led.acquire_lock(Actor("ci", "host-b", 1, None, None))


def test_no_intent_or_event_is_written_by_a_run_that_lost_its_lock(led):
    t0 = 1_000_000.0
    mine = led.acquire_lock(ALICE, now=lambda: t0)
    run = led.start_run("apply", ALICE)
    theirs = led.acquire_lock(Actor("ci", "host-b", 7, None, "https://ci.example/runs/9"))  # our lease lapsed
    serial, count = led.serial, len(led.events())
    for write in (lambda: intent(led, run, lock_id=mine),
                  lambda: led.record_event(run_id=run, event_type="cancel_intent", lock_id=mine)):
        with pytest.raises(LockHeldError) as caught:
            write()
        message = str(caught.value)
        assert f"lost the ledger lock {mine} to ci@host-b pid 7 (CI run https://ci.example/runs/9)" in message
        assert f"lock {theirs}" in message and "reconciler lock status" in message
    assert led.jobs() == [] and len(led.events()) == count and led.serial == serial
    assert led.current_lock()["id"] == theirs and led.verify().ok


def test_an_intent_waiting_for_a_takeover_to_commit_sees_it(path):
    """The check and the write are one transaction: an intent that starts while another run is taking the
    lock over (its write transaction open) runs after it, and finds the lock gone."""
    with Ledger.open_write(path, LOCAL) as led:
        mine = led.acquire_lock(ALICE, now=lambda: 1_000_000.0)
        run = led.start_run("apply", ALICE)
        taker = sqlite3.connect(path, isolation_level=None)
        try:
            taker.execute("BEGIN IMMEDIATE")
            taker.execute("DELETE FROM locks WHERE id = ?", (mine,))
            taker.execute("INSERT INTO locks (id, user, host, pid, ci_run_url, acquired_at, heartbeat_at, "
                          "lease_seconds) VALUES ('theirs', 'ci', 'host-b', 7, NULL, 2e9, 2e9, 60)")
            outcome = {}

            def write():
                try:
                    outcome["job"] = intent(led, run, lock_id=mine)
                except LockHeldError as err:
                    outcome["error"] = str(err)

            writer = threading.Thread(target=write)
            writer.start()
            taker.execute("COMMIT")
            writer.join()
        finally:
            taker.close()
        assert "job" not in outcome and "to ci@host-b pid 7 (lock theirs" in outcome["error"]
        assert led.jobs() == []


def test_a_run_writing_intents_while_another_takes_the_lock_over_writes_none_after_it(path):
    with Ledger.open_write(path, LOCAL) as mine, Ledger.open_write(path, LOCAL) as other:
        lock = mine.acquire_lock(ALICE)
        run = mine.start_run("apply", ALICE)
        started = threading.Event()

        def take_over():
            started.wait()
            other.acquire_lock(Actor("ci", "host-b", 7, None, None), now=lambda: time.time() + 3600)

        taker = threading.Thread(target=take_over)
        taker.start()
        with pytest.raises(LockHeldError, match="to ci@host-b pid 7"):
            for i in range(100_000):
                intent(mine, run, name=f"n{i}", lock_id=lock)
                started.set()
        taker.join()
        events = mine.events()
        [takeover] = [e["id"] for e in events if e["event_type"] == "lock_takeover"]
        intents = [e["id"] for e in events if e["event_type"] == "intent"]
        assert intents and max(intents) < takeover and len(intents) == len(mine.jobs())


def test_a_run_releasing_a_lock_it_lost_gets_a_warning_text_and_an_event_not_an_error(led):
    mine = led.acquire_lock(ALICE, now=lambda: 1_000_000.0)
    run = led.start_run("apply", ALICE)
    assert led.release_own_lock(mine, run_id=run) is None
    assert led.current_lock() is None and led.events() == []
    mine = led.acquire_lock(ALICE, now=lambda: 1_000_000.0)
    theirs = led.acquire_lock(Actor("ci", "host-b", 7, None, None))
    serial = led.serial
    message = led.release_own_lock(mine, run_id=run)
    assert f"lost the ledger lock {mine} to ci@host-b pid 7 (lock {theirs}" in message
    event = led.events(limit=1)[0]
    assert (event["event_type"], event["run_id"], event["detail"]["lock_id"]) == ("lock_lost", run, mine)
    assert led.current_lock()["id"] == theirs and led.serial == serial and led.verify().ok
    led.release_lock(theirs, by=BOB, forced=True)  # the new holder is gone too: the events still name it
    assert "to ci@host-b, who took it over at" in led.release_own_lock(mine, run_id=run)
    again = led.acquire_lock(ALICE)
    led.release_lock(again, by=BOB, forced=True)
    assert "to bob@host-a, who released it at" in led.release_own_lock(again, run_id=run)


# --- concurrency ----------------------------------------------------------------------------------

WRITER = """
import sys
from reconciler.ledger.store import Actor, Binding, Ledger
path, n = sys.argv[1], int(sys.argv[2])
with Ledger.open_write(path, Binding("local", "http://127.0.0.1:8080")) as led:
    run = led.start_run("apply", Actor("w", "h", 1, None, None))
    for i in range(n):
        led.record_event(run_id=run, event_type="remote_call", detail={"i": i})
    print(led.lineage)
"""


def test_two_processes_writing_at_once_lose_nothing(path):
    n = 40
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(n)], stdout=subprocess.PIPE, text=True, env=env)
        for _ in range(2)
    ]
    lineages = {proc.communicate(timeout=120)[0].strip() for proc in procs}
    assert [proc.returncode for proc in procs] == [0, 0]
    with Ledger.open_read(path, LOCAL) as led:
        assert lineages == {led.lineage}  # both used the one ledger, whoever created it
        assert led.serial == 2 * n and len(list(led.iter_events())) == 2 * n and led.verify().ok


def test_threads_share_one_ledger_safely(led):
    run = led.start_run("apply", ALICE)

    def work(t: int) -> None:
        for i in range(20):
            led.record_event(run_id=run, event_type="remote_call", detail={"t": t, "i": i})

    threads = [threading.Thread(target=work, args=(t,)) for t in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert led.serial == 120 and led.verify().ok


def test_a_busy_ledger_is_a_ledger_error_not_a_hang(path, monkeypatch):
    populate(path)
    monkeypatch.setattr(ledger_connection, "BUSY_TIMEOUT_SECONDS", 0.1)
    with Ledger.open_write(path, LOCAL) as led:
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(LedgerError, match="busy"):
                led.record_event(run_id=None, event_type="note")
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert led.verify().ok


def test_detail_is_stored_as_canonical_json(path):
    with Ledger.open_write(path, LOCAL) as led:
        led.record_event(run_id=None, event_type="note", detail={"b": 1, "a": ("x", Path("p"))})
    conn = sqlite3.connect(path)
    (detail,) = conn.execute("SELECT detail FROM events").fetchone()
    conn.close()
    assert detail == '{"a":["x","p"],"b":1}' and json.loads(detail) == {"a": ["x", "p"], "b": 1}
