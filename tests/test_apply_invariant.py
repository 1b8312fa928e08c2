"""Attacks on the core invariant (DESIGN §1): sequences of faults that must never create a second remote job."""

from __future__ import annotations

import json
import sqlite3
import time
from datetime import datetime, timedelta, timezone

import pytest

from apply_support import (
    admin, assert_exactly_once, cli, ledger_events, ledger_jobs, make_repo, remote_jobs, sandbox_token,
    served_sandbox, settings_of, zuora_http,
)
from reconciler.engine.applier import Applier
from reconciler.errors import AuthError
from reconciler.engine.journal import LedgerJournal
from reconciler.engine.planning import compute_plan
from reconciler.ledger.store import Actor, Ledger
from reconciler.zuora.retry import RetryPolicy
from reconciler.engine.run import Session, binding
from test_apply_recovery import ShiftedClock, _old_intent


def _redate_jobs(repo, age_seconds: float) -> None:
    """Date every job `age_seconds` back: time passed (the jobs table is outside the hash chain)."""
    old = (datetime.now(timezone.utc) - timedelta(seconds=age_seconds)).isoformat(timespec="microseconds")
    with sqlite3.connect(settings_of(repo).ledger_path) as db:
        db.execute("UPDATE jobs SET created_at = ?, updated_at = ?", (old, old))


def _create_job(url: str, clock: ShiftedClock, key: str, *, ago: float) -> None:
    """POST /objects/jobs with `key` as if `ago` seconds ago, on the sandbox's clock."""
    with zuora_http(url) as http:
        clock.offset = -ago
        try:
            http.post("/objects/jobs", headers={"Idempotency-Key": key},
                      json={"namespace": "default", "object": "car", "operation": "create"}).raise_for_status()
        finally:
            clock.offset = 0.0


def test_a_refusal_after_a_lost_answer_is_no_rejection_and_the_job_is_resumed_not_resubmitted(tmp_path, monkeypatch):
    """The POST took effect but its answer was lost; the retry with the same key is refused (401: the static
    token expired meanwhile). That refusal says nothing about the first attempt: the intent must stay in doubt,
    or the next apply submits a new generation with a new key and Zuora runs the spec twice."""
    with served_sandbox() as url:
        repo = make_repo(tmp_path, url, mass=("fx-a",), create=(), delete=())
        monkeypatch.setenv("ZUORA_ACCESS_TOKEN", sandbox_token(url))
        monkeypatch.delenv("ZUORA_CLIENT_ID", raising=False)
        monkeypatch.delenv("ZUORA_CLIENT_SECRET", raising=False)

        def backoff(_seconds):  # between the attempts: the storm ends, and the token expires
            admin(url, "faults", {})
            admin(url, "clock", {"advance_seconds": 7200})

        session = Session(settings_of(repo), command="apply", lock_timeout=0,
                          retry=RetryPolicy(max_attempts=3, sleep=backoff))
        try:
            plan = compute_plan(session.settings, session=session, refresh=True)
            admin(url, "faults", {"error_after_rate": 1.0})  # the job is created, the answer is a 500
            applier = Applier(session.client, LedgerJournal(session), root=repo, lineage=session.ledger.lineage)
            with pytest.raises(AuthError) as refused:  # a refused token ends the run; it judges no request
                applier.run(plan.actionable)
        finally:
            admin(url, "faults", {})
            session.close("failed")
        assert "HTTP 401" in str(refused.value) and "outcome unknown" in str(refused.value)
        [intent] = ledger_jobs(repo)
        assert (intent.phase, intent.remote_status) == ("intent", None)
        [(remote_id, key)] = remote_jobs(url)
        assert key == intent.idempotency_key

        again = cli(repo, "apply", "--auto-approve", env={"ZUORA_ACCESS_TOKEN": ""})
        assert again.returncode == 0 and "resume interrupted submission" in again.stdout, again.stdout + again.stderr
        assert_exactly_once(repo, url, ("fx-a",))
        assert [j.remote_id for j in ledger_jobs(repo)] == [remote_id]


def test_a_saved_plan_never_resends_an_intent_whose_key_zuora_may_have_forgotten(tmp_path):
    """Planned at 23 h the interrupted submission is resumable; applied two hours later its key is gone from
    Zuora (24 h), and resending it would create a second job. The resend is refused at execution time."""
    clock = ShiftedClock()
    with served_sandbox(clock) as url:
        repo = make_repo(tmp_path, url, mass=(), delete=())
        key = _old_intent(repo, "load-cars", 23 * 3600)
        _create_job(url, clock, key, ago=23 * 3600)  # the POST whose answer was lost did create it
        made = cli(repo, "plan", "--out", "p.json")
        assert made.returncode == 0 and "resume interrupted submission" in made.stdout, made.stdout + made.stderr

        clock.offset = 2 * 3600  # two hours pass before the saved plan is applied
        _redate_jobs(repo, 25 * 3600)
        proc = cli(repo, "apply", "p.json", "--auto-approve")
        assert proc.returncode == 1 and "plan is stale: its changes for load-cars" in proc.stderr, proc.stderr
        assert [k for _, k in remote_jobs(url)] == [key]
        assert [(j.phase, j.remote_id) for j in ledger_jobs(repo)] == [("intent", None)]


def test_a_slow_confirmation_never_resends_an_intent_whose_key_zuora_may_have_forgotten(tmp_path):
    """The same at execution time, whatever the plan said: the plan resumed a 23 h old submission, then two
    hours passed (a confirmation prompt left open); the resend is refused before any POST."""
    clock = ShiftedClock()
    with served_sandbox(clock) as url:
        repo = make_repo(tmp_path, url, mass=(), delete=())
        key = _old_intent(repo, "load-cars", 23 * 3600)
        _create_job(url, clock, key, ago=23 * 3600)
        session = Session(settings_of(repo), command="apply", lock_timeout=0)
        try:
            plan = compute_plan(session.settings, session=session, refresh=True)
            assert [c.reason for c in plan.actionable] == ["resume interrupted submission"]
            clock.offset = 2 * 3600
            _redate_jobs(repo, 25 * 3600)
            applier = Applier(session.client, LedgerJournal(session), root=repo, lineage=session.ledger.lineage)
            [result] = applier.run(plan.actionable)
        finally:
            session.close("failed")
        assert result.failed and "Idempotency-Key for 24 h only" in result.error, result
        assert "reconciler import load-cars ID" in result.hint
        assert [k for _, k in remote_jobs(url)] == [key]
        assert [(j.phase, j.remote_id) for j in ledger_jobs(repo)] == [("intent", None)]


def test_a_run_whose_lock_was_taken_over_submits_nothing_more(tmp_path):
    """A run stalled past its lease (a suspended laptop, a frozen VM) has lost the lock to another run, which
    may already be submitting from its own plan (another commit: other fingerprints, other keys). The stalled
    run must not go on submitting from its old plan: each intent is committed only in a transaction that
    finds this run's lock still in place (and renews it)."""
    with served_sandbox() as url:
        repo = make_repo(tmp_path, url, mass=("fx-a",), create=(), delete=())
        session = Session(settings_of(repo), command="apply", lock_timeout=0)
        try:
            plan = compute_plan(session.settings, session=session, refresh=True)
            other = Actor(user="ci", host="another-runner", pid=4242)
            with Ledger.open_write(session.settings.ledger_path, binding(session.settings)) as ledger:
                theirs = ledger.acquire_lock(other, now=lambda: time.time() + 3600)  # an hour later: lease lapsed
            applier = Applier(session.client, LedgerJournal(session), root=repo, lineage=session.ledger.lineage)
            [result] = applier.run(plan.actionable)
        finally:
            session.close("failed")  # a lost lock is reported, never raised over the run's own outcome
        assert result.failed and "no longer holds the ledger lock" in result.error, result
        assert "lost the ledger lock" in session.lock_lost and "to ci@another-runner pid 4242" in session.lock_lost
        assert remote_jobs(url) == [] and ledger_jobs(repo) == []
        assert [e["event_type"] for e in ledger_events(repo)][-1] == "lock_lost"
        with Ledger.open_write(session.settings.ledger_path, binding(session.settings)) as ledger:
            assert ledger.current_lock()["id"] == theirs  # the loser never releases the winner's lock


def test_a_saved_plan_edited_to_run_a_completed_spec_again_is_refused(tmp_path):
    """The plan file pins the ledger and the specs, not its own changes: a change added by hand (here: submit a
    spec whose revision already completed, without --rerun) must be refused, not executed."""
    with served_sandbox() as url:
        repo = make_repo(tmp_path, url, mass=("fx-a",), create=(), delete=())
        assert cli(repo, "apply", "--auto-approve", "--wait", "--timeout", "60").returncode == 0
        made = cli(repo, "plan", "--out", "p.json")
        assert made.returncode == 0 and "No changes" in made.stdout, made.stdout + made.stderr
        [done] = ledger_jobs(repo)
        doc = json.loads((repo / "p.json").read_text())
        doc["changes"] = [{"name": "fx-a", "kind": "MassAction", "action": "submit", "reason": "new",
                           "fingerprint": done.fingerprint, "revision": 1, "remote_id": None, "generation": 2,
                           "idempotency_key": None, "depends_on": [],
                               "detail": {k: done.detail[k] for k in ("actionType", "file", "file_sha256")}}]
        doc["summary"].update(submit=1, unchanged=0)
        (repo / "p.json").write_text(json.dumps(doc))
        proc = cli(repo, "apply", "p.json", "--auto-approve")
        assert proc.returncode == 1 and "plan is stale" in proc.stderr, proc.stdout + proc.stderr
        assert len(remote_jobs(url)) == 1 and len(ledger_jobs(repo)) == 1
