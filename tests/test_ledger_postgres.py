"""The PostgreSQL ledger on a real server: the SQLite store's semantics, reads that create nothing, refusals."""

from __future__ import annotations

import os

import psycopg
import pytest

from pg_support import SECRET_PASSWORD, SECRET_ROLE, objects, with_database
from reconciler.errors import LedgerError, LockHeldError
from reconciler.ledger.chain import GENESIS_HASH, event_hash
from reconciler.ledger.postgres import PgLedger
from reconciler.ledger.store import Actor, Binding
from reconciler.ledger.url import LedgerUrl
from reconciler.model import Observation

LOCAL = Binding("local", "http://127.0.0.1:8080")  # the binding `opener` (conftest) opens with
ALICE = Actor("alice", "host-a", os.getpid(), "c0ffee", "https://ci.example/runs/1")
BOB = Actor("bob", "host-b", 1, None, None)


def url_of(text: str) -> LedgerUrl:
    return LedgerUrl.from_setting(text, "RECONCILER_LEDGER")


def intent(led, run_id: int, name: str = "fx", kind: str = "MassAction", **kw):
    generation = led.next_generation(name)
    return led.add_intent(
        run_id=run_id, name=name, kind=kind, generation=generation, fingerprint="f" * 64, fingerprint_version=1,
        revision=1, idempotency_key=f"{name}-{generation}", detail={"actionType": "ImportFXRate", "file": "fx.csv"},
        **kw,
    )


def populate(led) -> None:
    run = led.start_run("apply", ALICE, plan_digest="d" * 64)
    job = intent(led, run)
    led.record_submitted(job.id, remote_id="B-1", status="Pending", phase="active", event={"run_id": run})
    co = intent(led, run, name="vehicles", kind="CustomObjectJob")
    led.record_submitted(co.id, remote_id="J-1", status="pending", phase="created", event={"run_id": run})
    led.record_uploaded(co.id, status="in_progress", event={"run_id": run})
    led.record_observation(job.id, Observation(kind="MassAction", remote_id="B-1", status="Completed", total=2, processed=2,
                                               succeeded=2, failed=0, output_url="https://x/out.csv"),
                           run_id=run, source="refresh")
    led.record_result(job.id, path="results/fx.csv", sha256="a" * 64, run_id=run)
    again = intent(led, run)  # a second generation supersedes the first
    led.record_retired(again.id, run_id=run, reason="test", actor=BOB)
    led.record_event(run_id=run, event_type="remote_call", name="fx", method="GET", path="/v1/bulk/B-1",
                     http_status=200, request_id="r-1", track_id="t-1", outcome="ok",
                     detail={"client_secret": "hunter2", "n": 1})
    led.finish_run(run, "ok")


def test_both_stores_record_the_same_ledger(opener):
    with opener() as led:
        assert led.serial == 0 and led.head().hash == GENESIS_HASH
        populate(led)
        serial, head = led.serial, led.head()
        assert serial == 10 and head.count == len(led.events())
        assert led.verify().ok
    with opener(write=False) as reread:
        assert reread.read_only and reread.serial == serial and reread.head() == head
        state = reread.recorded_state()
        assert {r.name: [j.generation for j in r.jobs] for r in state.records} == {"fx": [1, 2], "vehicles": [1]}
        fx = reread.jobs("fx")
        assert (fx[0].phase, fx[0].remote_status, fx[0].result_sha256) == ("done", "Completed", "a" * 64)
        assert fx[1].phase == "retired"
        assert [j.name for j in reread.live_jobs()] == ["vehicles"]
        assert reread.job_by_remote_id("J-1").phase == "active"
        events = list(reread.iter_events())
        assert all(event_hash(e) == e["hash"] for e in events)
        assert "hunter2" not in repr(events)
        with pytest.raises(LedgerError, match="read-only"):
            reread.start_run("apply", ALICE)


def test_a_reused_idempotency_key_and_a_missing_row_are_refused(opener):
    with opener() as led:
        run = led.start_run("apply", ALICE)
        job = intent(led, run)
        assert intent.__call__ and led.add_intent(
            run_id=run, name="fx", kind="MassAction", generation=1, fingerprint="f" * 64, fingerprint_version=1,
            revision=1, idempotency_key="fx-1", detail={}).id == job.id
        with pytest.raises(LedgerError, match="already belongs"):
            led.add_intent(run_id=run, name="other", kind="MassAction", generation=1, fingerprint="f" * 64,
                           fingerprint_version=1, revision=1, idempotency_key="fx-1", detail={})
        serial = led.serial
        with pytest.raises(LedgerError, match="no job with ledger id 99"):
            led.record_submitted(99, remote_id="B", status=None, phase="active", event={})
        assert led.serial == serial


def test_the_lease_lock_is_held_renewed_taken_over_and_released(opener):
    with opener() as led:
        clock = [1000.0]
        lock = led.acquire_lock(ALICE, lease_seconds=10, now=lambda: clock[0])
        with pytest.raises(LockHeldError, match="alice"):
            led.acquire_lock(BOB, lease_seconds=10, now=lambda: clock[0])
        clock[0] += 5
        led.heartbeat(lock, now=lambda: clock[0])
        clock[0] += 11  # the lease lapsed
        taken = led.acquire_lock(BOB, lease_seconds=10, now=lambda: clock[0])
        assert led.current_lock(now=lambda: clock[0])["id"] == taken
        with pytest.raises(LockHeldError):
            led.heartbeat(lock, now=lambda: clock[0])
        led.release_lock(taken, by=ALICE, forced=True)
        assert led.current_lock() is None
        assert [e["event_type"] for e in led.events()][:2] == ["lock_release", "lock_takeover"]
        assert led.verify().ok


def test_events_are_append_only_in_the_database(pg_url):
    with PgLedger.open_write(url_of(pg_url), LOCAL) as led:
        populate(led)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        for sql in ("UPDATE events SET outcome = 'x'", "DELETE FROM events"):
            with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
                conn.execute(sql)


def test_verify_names_a_row_edited_behind_the_ledgers_back(pg_url):
    with PgLedger.open_write(url_of(pg_url), LOCAL) as led:
        populate(led)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE jobs SET fingerprint = 'e' WHERE name = 'vehicles'")
    with PgLedger.open_read(url_of(pg_url), LOCAL) as led:
        report = led.verify()
    assert not report.ok and report.bad_job is not None and "fingerprint" in report.message


def test_reads_create_nothing_not_even_the_schema(pg_url):
    in_schema = url_of(pg_url + "?options=-csearch_path%3Dlocal")
    assert PgLedger.open_read(in_schema, LOCAL) is None
    assert PgLedger.open_read(url_of(pg_url), LOCAL) is None
    assert objects(pg_url) == []
    with PgLedger.open_write(in_schema, LOCAL) as led:
        populate(led)
    assert ("schema", "local") in objects(pg_url) and ("relation", "meta") in objects(pg_url)
    assert PgLedger.open_read(url_of(pg_url), LOCAL) is None  # public holds no ledger
    before = objects(pg_url)
    with PgLedger.open_read(in_schema, LOCAL) as led:
        assert led.serial == 10
    assert objects(pg_url) == before


def test_each_environment_gets_its_schema_and_another_environments_ledger_is_refused(pg_url):
    template = pg_url + "?options=-csearch_path%3D{environment}"
    local, other = (url_of(template.replace("{environment}", key)) for key in ("local", "prod"))
    with PgLedger.open_write(local, LOCAL) as led:
        populate(led)
    with PgLedger.open_write(other, Binding("prod", "https://rest.zuora.com")) as led:
        assert led.serial == 0 and led.lineage
    for opener in (PgLedger.open_read, PgLedger.open_write):
        with pytest.raises(LedgerError, match="belongs to environment local.*search_path"):
            opener(local, Binding("prod", "https://rest.zuora.com"))


def test_a_schema_of_foreign_tables_is_refused_and_left_alone(pg_url):
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE meta (id int, what text)")
        conn.execute("INSERT INTO meta VALUES (1, 'not ours')")
    for opener in (PgLedger.open_read, PgLedger.open_write):
        with pytest.raises(LedgerError, match="not a reconciler ledger"):
            opener(url_of(pg_url), LOCAL)
    assert [k for k in objects(pg_url) if k[0] == "relation"] == [("relation", "meta")]


def test_a_wrong_password_and_a_refused_connection_name_the_setting_not_the_password(pg_server):
    wrong = with_database(pg_server, "postgres", user=SECRET_ROLE, password="not-" + SECRET_PASSWORD)
    with pytest.raises(LedgerError) as caught:
        PgLedger.open_read(url_of(wrong), LOCAL)
    text = str(caught.value)
    assert "RECONCILER_LEDGER" in text and "password authentication failed" in text
    assert SECRET_PASSWORD not in text and "***" in text
    with pytest.raises(LedgerError, match="cannot connect to the PostgreSQL ledger .*RECONCILER_LEDGER"):
        PgLedger.open_write(url_of("postgresql://nobody@127.0.0.1:1/none"), LOCAL)


def test_the_password_may_come_from_pgpassword(pg_server, monkeypatch):
    monkeypatch.setenv("PGPASSWORD", SECRET_PASSWORD)
    url = url_of(with_database(pg_server, "postgres", user=SECRET_ROLE) + "?options=-csearch_path%3Dviapgpass")
    with PgLedger.open_write(url, LOCAL) as led:
        assert led.serial == 0
    monkeypatch.delenv("PGPASSWORD")
    with pytest.raises(LedgerError, match="password"):
        PgLedger.open_read(url, LOCAL)


def test_two_writers_at_once_make_one_ledger(pg_url):
    import threading

    url, made, errors = url_of(pg_url), [], []

    def open_one():
        try:
            with PgLedger.open_write(url, LOCAL) as led:
                made.append(led.lineage)
        except Exception as exc:  # noqa: BLE001 - the assertion below shows it
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(made)) == 1


def test_a_schema_of_other_tables_gets_no_ledger_mixed_in(pg_url):
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE invoices (id int)")
    with pytest.raises(LedgerError, match=r"holds tables \(invoices\) but no reconciler ledger"):
        PgLedger.open_write(url_of(pg_url), LOCAL)
    assert [k for k in objects(pg_url) if k[0] == "relation"] == [("relation", "invoices")]
