"""A run that loses the ledger lock (another run took it over after its lease lapsed) changes nothing more
remotely, ends with exit 1 naming the new holder, and reports the loss instead of hiding its own outcome."""

from __future__ import annotations

import logging
import signal
import sqlite3
import time

import pytest

from apply_support import (
    admin, cli, ledger_events, ledger_jobs, make_repo, remote_jobs, served_sandbox, settings_of, start_cli,
    wait_until,
)
from reconciler.engine import run as session_module
from reconciler.engine.applier import Applier
from reconciler.engine.journal import LedgerJournal
from reconciler.engine.planning import compute_plan
from reconciler.errors import ApplyFailed, LockHeldError
from reconciler.ledger.store import Actor, Ledger
from reconciler.engine.run import Session, binding

OTHER = Actor(user="ci", host="another-runner", pid=4242, ci_run_url="https://ci.example/runs/7")
HOLDER = "to ci@another-runner pid 4242 (CI run https://ci.example/runs/7)"


def take_over(settings) -> str:
    """What another runner does once this run's lease lapsed: take the lock (an hour later on its clock)."""
    with Ledger.open_write(settings.ledger_path, binding(settings)) as ledger:
        return ledger.acquire_lock(OTHER, now=lambda: time.time() + 3600)


def current_lock_id(settings) -> str | None:
    with Ledger.open_write(settings.ledger_path, binding(settings)) as ledger:
        lock = ledger.current_lock()
    return lock and lock["id"]


def last_run(settings) -> tuple[int, str]:
    with sqlite3.connect(settings.ledger_path) as db:
        return db.execute("SELECT id, outcome FROM runs ORDER BY id DESC LIMIT 1").fetchone()


def test_an_apply_that_loses_its_lock_while_waiting_submits_no_dependent_and_exits_1_naming_the_holder(tmp_path):
    with served_sandbox(pending_seconds=3600) as url:
        repo = make_repo(tmp_path, url, create=(), delete=(), depends={"fx-b": ["fx-a"]})
        settings = settings_of(repo)
        run = start_cli(repo, "apply", "--auto-approve", "--wait", "--timeout", "120")
        wait_until(lambda: len(remote_jobs(url)) == 1)  # fx-a submitted; fx-b waits for it to complete
        theirs = take_over(settings)
        admin(url, "clock", {"advance_seconds": 7200})  # fx-a completes: fx-b becomes actionable
        out, err = run.communicate(timeout=120)
        assert run.returncode == 1, out + err
        assert f"Error: {settings.ledger_path}: this run lost the ledger lock" in err and HOLDER in err, err
        assert err.count("lost the ledger lock") == 1, err  # said once: the error, not a warning again
        assert [k for _, k in remote_jobs(url)] == [j.idempotency_key for j in ledger_jobs(repo)]
        assert [j.name for j in ledger_jobs(repo)] == ["fx-a"]
        events = ledger_events(repo)
        takeover = next(e["id"] for e in events if e["event_type"] == "lock_takeover")
        assert all(e["id"] < takeover for e in events if e["event_type"] == "intent")
        run_id, outcome = last_run(settings)
        assert outcome == "lock-lost"
        assert [(e["event_type"], e["run_id"]) for e in events][-1] == ("lock_lost", run_id)
        assert current_lock_id(settings) == theirs  # the loser never releases the winner's lock


def test_a_lost_lock_noticed_by_the_heartbeat_stops_the_run_before_anything_is_written(tmp_path, monkeypatch):
    monkeypatch.setattr(session_module, "HEARTBEAT_SECONDS", 0.01)
    with served_sandbox() as url:
        repo = make_repo(tmp_path, url, mass=("fx-a",), create=(), delete=())
        session = Session(settings_of(repo), command="apply", lock_timeout=0)
        try:
            plan = compute_plan(session.settings, session=session, refresh=True)
            take_over(session.settings)
            wait_until(lambda: session.lock_lost)
            with pytest.raises(LockHeldError, match="lost the ledger lock") as caught:
                session.check_lock()
            assert HOLDER in str(caught.value)
            count = len(ledger_events(repo))
            applier = Applier(session.client, LedgerJournal(session), root=repo, lineage=session.ledger.lineage)
            [result] = applier.run(plan.actionable)
            assert result.failed and result.error.startswith("not sent: this run no longer holds the ledger lock")
            assert len(ledger_events(repo)) == count  # refused by the flag, before any transaction
        finally:
            session.close("lock-lost")
        assert remote_jobs(url) == [] and ledger_jobs(repo) == []


def test_closing_a_run_whose_lock_was_taken_over_warns_and_keeps_its_own_error_and_outcome(tmp_path, caplog):
    repo = make_repo(tmp_path, "http://127.0.0.1:9", create=(), delete=())  # no remote call is made
    settings = settings_of(repo)
    session = Session(settings, command="import", lock_timeout=0)
    theirs = take_over(settings)
    with caplog.at_level(logging.WARNING, logger="reconciler.session"):
        with pytest.raises(ApplyFailed, match="the run's own failure"):
            try:
                raise ApplyFailed("the run's own failure")
            finally:
                session.close("failed")
    [warning] = [r.getMessage() for r in caplog.records if "lost the ledger lock" in r.getMessage()]
    assert HOLDER in warning and "reconciler lock status" in warning
    run_id, outcome = last_run(settings)
    assert outcome == "failed"
    event = ledger_events(repo)[-1]
    assert (event["event_type"], event["run_id"], event["detail"]["lock_id"]) == ("lock_lost", run_id, session.lock_id)
    assert current_lock_id(settings) == theirs


def test_a_run_that_lost_its_lock_sends_no_stop_and_no_cancel(tmp_path):
    with served_sandbox(pending_seconds=3600) as url:
        repo = make_repo(tmp_path, url, mass=("fx-a",), create=())
        assert cli(repo, "apply", "--auto-approve").returncode == 0  # fx-a Pending, purge-cars accepted
        for name in ("fx-a", "purge-cars"):
            (repo / "specs" / f"{name}.yaml").unlink()
        session = Session(settings_of(repo), command="apply", lock_timeout=0)
        try:
            plan = compute_plan(session.settings, session=session, refresh=True)
            assert sorted(c.action for c in plan.actionable) == ["cancel", "stop"]
            take_over(session.settings)
            applier = Applier(session.client, LedgerJournal(session), root=repo, lineage=session.ledger.lineage)
            results = applier.run(plan.actionable)
        finally:
            session.close("lock-lost")
        assert [r.failed for r in results] == [True, True], results
        assert all("no longer holds the ledger lock" in r.error for r in results)
        assert HOLDER in session.lock_lost
        events = ledger_events(repo)
        assert not [e for e in events if e["event_type"] in ("stop_requested", "cancel_intent")]
        assert not [e for e in events if e["event_type"] == "remote_call" and e["method"] in ("PUT", "PATCH")]
        assert {j.remote_status for j in ledger_jobs(repo)} == {"Pending", "accepted"}


def test_a_run_that_lost_its_lock_uploads_no_file_to_a_created_job(tmp_path):
    with served_sandbox() as url:
        repo = make_repo(tmp_path, url, mass=(), delete=())
        crashed = cli(repo, "apply", "--auto-approve", env={"RECONCILER_TEST_CRASH_AT": "after-create:load-cars"})
        assert crashed.returncode == -signal.SIGKILL, crashed.stdout + crashed.stderr
        [(remote_id, _)] = remote_jobs(url)  # created and recorded; its file was never sent
        session = Session(settings_of(repo), command="apply", lock_timeout=0)
        try:
            plan = compute_plan(session.settings, session=session, refresh=True)
            assert [(c.name, c.action) for c in plan.actionable] == [("load-cars", "upload")]
            take_over(session.settings)
            applier = Applier(session.client, LedgerJournal(session), root=repo, lineage=session.ledger.lineage)
            [result] = applier.run(plan.actionable)
        finally:
            session.close("lock-lost")
        assert result.failed and result.error.startswith("not sent: this run no longer holds the ledger lock")
        assert result.remote_id == remote_id and HOLDER in session.lock_lost
        state = admin(url, "state")
        assert [j["status"] for j in state["custom_object_jobs"]] == ["pending"] and state["records"] == {}
        events = ledger_events(repo)
        assert not [e for e in events if e["event_type"] == "upload_intent"]
        assert not [e for e in events if e["event_type"] == "remote_call" and (e["path"] or "").endswith("/files")]
        [job] = ledger_jobs(repo)
        assert (job.phase, job.uploaded) == ("created", False)


def test_every_upload_is_preceded_by_an_upload_intent_holding_the_lock(tmp_path):
    with served_sandbox() as url:
        repo = make_repo(tmp_path, url, mass=(), delete=())
        proc = cli(repo, "apply", "--auto-approve")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        events = ledger_events(repo)
        [intent] = [e for e in events if e["event_type"] == "upload_intent"]
        [post] = [e for e in events if e["event_type"] == "remote_call" and e["path"].endswith("/files")]
        [job] = ledger_jobs(repo)
        assert intent["id"] < post["id"] and intent["name"] == post["name"] == "load-cars"
        assert intent["idempotency_key"] == post["idempotency_key"] == job.idempotency_key + "-upload"
        assert intent["detail"]["remote_id"] == job.remote_id and job.uploaded
