"""Faults: storms of 5xx, lost answers, 429s and dropped connections; unknown outcomes; refused submissions."""

from __future__ import annotations

import pytest

from apply_support import (
    admin, assert_exactly_once, cli, converge, ledger_events, ledger_jobs, make_repo, remote_jobs, served_sandbox,
    settings_of,
)
from reconciler.engine.answers import idempotency_key, is_definitive
from reconciler.engine.applier import UNKNOWN_HINT, Applier
from reconciler.engine.journal import LedgerJournal
from reconciler.engine.planning import compute_plan
from reconciler.errors import RemoteError
from reconciler.zuora.retry import RetryPolicy
from reconciler.engine.run import Session


# Every test here runs on both ledger stores (conftest.both_stores).
pytestmark = pytest.mark.usefixtures("both_stores")

ALL = ("fx-a", "fx-b", "load-cars", "purge-cars")
STORMS = {  # seeded; rates kept where bounded retries usually win, so a storm costs seconds, not minutes
    "everything": {"error_rate": 0.1, "error_after_rate": 0.1, "rate_limit_rate": 0.1, "drop_rate": 0.1,
                   "retry_after": 0, "seed": 7},
    "lost-answers": {"error_after_rate": 0.5, "seed": 11},
    "drops": {"drop_rate": 0.4, "seed": 5},
    "rate-limits": {"rate_limit_rate": 0.3, "retry_after": 0, "seed": 3},
}

# Storms whose retries repeat requests Zuora already answered, run again with 409 replays as well.
REPLAYING = ["drops", "lost-answers"]


@pytest.mark.parametrize("url, storm", [(200, s) for s in sorted(STORMS)] + [(409, s) for s in REPLAYING],
                         indirect=["url"], ids=[*sorted(STORMS), *(f"replay409-{s}" for s in REPLAYING)])
def test_applies_in_a_fault_storm_converge_with_one_job_per_spec(tmp_path, url, storm):
    repo = make_repo(tmp_path, url, depends={"fx-b": ["fx-a"]})
    admin(url, "faults", STORMS[storm])
    converge(repo, attempts=4)
    admin(url, "faults", {})
    assert_exactly_once(repo, url, ALL)
    assert cli(repo, "plan", "--detailed-exitcode").returncode == 0
    calls = [e for e in ledger_events(repo) if e["event_type"] == "remote_call"]
    assert any(e["outcome"] != "ok" for e in calls)  # the storm did hit (every attempt is an event)


def _session(repo, **retry) -> Session:
    return Session(settings_of(repo), command="apply", lock_timeout=0, retry=RetryPolicy(**retry))


def _apply_in_process(session: Session, changes):
    applier = Applier(session.client, LedgerJournal(session), root=session.settings.root,
                      lineage=session.ledger.lineage)
    return applier.run(changes)


@pytest.mark.parametrize("replay_status", [200, 409])
def test_a_lost_answer_leaves_the_intent_and_the_next_apply_resumes_it_with_the_same_key(tmp_path, replay_status):
    with served_sandbox(replay_status=replay_status) as url:
        repo = make_repo(tmp_path, url, mass=("fx-a",), create=(), delete=())
        session = _session(repo, max_attempts=1)  # no retry: the answer is lost for good
        try:
            plan = compute_plan(session.settings, session=session, refresh=True)
            admin(url, "faults", {"error_after_rate": 1.0})
            [result] = _apply_in_process(session, plan.actionable)
        finally:
            admin(url, "faults", {})
            session.close("failed")
        assert result.failed and result.hint == UNKNOWN_HINT, result
        [intent] = ledger_jobs(repo)
        assert intent.phase == "intent" and intent.remote_id is None
        [(remote_id, key)] = remote_jobs(url)  # Zuora did create it
        assert key == intent.idempotency_key

        proc = cli(repo, "apply", "--auto-approve")
        assert proc.returncode == 0 and "resume interrupted submission" in proc.stdout, proc.stdout + proc.stderr
        [job] = ledger_jobs(repo)
        assert (job.id, job.remote_id, job.phase) == (intent.id, remote_id, "active")
        assert remote_jobs(url) == [(remote_id, key)]


@pytest.mark.parametrize("v1_errors", ["http", "200"])
def test_a_file_refused_at_upload_is_recorded_rejected_with_zuoras_reasons(tmp_path, v1_errors):
    """`validate` stops such a file first; here the change is pointed at one after planning, as a file Zuora
    judges stricter than the local checks would be. Zuora answers 400 or 200 + success: false, no bulkKey."""
    import dataclasses
    import hashlib

    with served_sandbox(v1_errors=v1_errors) as url:
        repo = make_repo(tmp_path, url, mass=("fx-a",), create=(), delete=())
        bad = repo / "data" / "bad.csv"
        bad.write_bytes(b"Currency (From),Currency (To)\nUSD,EUR\n")
        session = _session(repo)
        try:
            [change] = compute_plan(session.settings, session=session, refresh=True).actionable
            ref = dataclasses.replace(change.file, path="data/bad.csv", sha256=hashlib.sha256(bad.read_bytes()).hexdigest())
            [result] = _apply_in_process(session, [dataclasses.replace(change, file=ref)])
        finally:
            session.close("failed")
        assert result.failed and "Zuora rejected the submission" in result.error
        assert "Missing required column(s) for ImportFXRate" in result.error
        [job] = ledger_jobs(repo)
        assert (job.phase, job.remote_status, job.remote_id) == ("done", "rejected", None)
        assert f"HTTP {400 if v1_errors == 'http' else 200}" in job.detail["error"]
        assert "Missing required column(s) for ImportFXRate: Provider Exchange Rate Date" in job.detail["error"]
        assert remote_jobs(url) == []
        proc = cli(repo, "apply", "--auto-approve")  # the spec's own file is fine: a new generation goes
        assert proc.returncode == 0 and "previous submission was rejected" in proc.stdout, proc.stdout + proc.stderr
        assert [j.generation for j in ledger_jobs(repo)] == [1, 2] and len(remote_jobs(url)) == 1


def test_a_file_edited_after_the_plan_fails_its_change_without_any_post(tmp_path):
    with served_sandbox() as url:
        repo = make_repo(tmp_path, url, create=(), delete=())
        session = _session(repo)
        try:
            plan = compute_plan(session.settings, session=session, refresh=True)
            (repo / "data" / "fx-a.csv").write_text("Provider Exchange Rate Date,Currency (From),Currency (To),"
                                                     "Exchange Rate\n2026-11-30,USD,CHF,0.88\n")
            results = {r.name: r for r in _apply_in_process(session, plan.actionable)}
        finally:
            session.close("failed")
        assert results["fx-a"].failed and "file changed since the plan; run plan again" in results["fx-a"].error
        assert not results["fx-b"].failed  # the others go on
        assert [j.name for j in ledger_jobs(repo)] == ["fx-b"]
        assert len(remote_jobs(url)) == 1
        assert not any(e["name"] == "fx-a" for e in ledger_events(repo))


@pytest.mark.parametrize("status, code, retryable, definitive", [
    (400, 71013030, False, True),  # refused: nothing created
    (404, None, False, True),
    (200, 53100020, False, True),  # `success: false` in a 200 answer
    (200, None, False, False),  # a 200 we could not read may hide a created job
    (408, None, False, False),
    (409, None, True, False),  # same key still in flight
    (429, None, True, False),
    (500, None, True, False),
    (None, None, True, False),  # no answer at all
    (None, None, False, False),  # an answer we could not read
])
def test_only_a_definitive_refusal_closes_an_intent(status, code, retryable, definitive):
    assert is_definitive(RemoteError("x", status=status, code=code, retryable=retryable)) is definitive


def test_idempotency_keys_are_deterministic_bounded_and_distinct():
    lineage = "6f1c2d9e-1111-4222-8333-944455556666"
    key = idempotency_key(lineage, "fx-a", "ab" * 32, 3)
    assert key == idempotency_key(lineage, "fx-a", "ab" * 32, 3) == f"rcl-{lineage}-fx-a-{'ab' * 10}-g3"
    assert len(idempotency_key(lineage, "n" * 63, "f" * 64, 10 ** 6)) + len("-cancel-g1000000") <= 255
    # Another generation and another name each give another key, and those two differ from each other too.
    keys = [key, idempotency_key(lineage, "fx-a", "ab" * 32, 4), idempotency_key(lineage, "fx-b", "ab" * 32, 3)]
    assert len(set(keys)) == len(keys), keys
    with pytest.raises(ValueError):
        idempotency_key(lineage, "x" * 250, "f" * 64, 1)


def test_the_ledger_refuses_to_reject_a_job_that_is_not_an_intent(tmp_path):
    from reconciler.errors import LedgerError

    with served_sandbox() as url:
        repo = make_repo(tmp_path, url, mass=("fx-a",), create=(), delete=())
        assert cli(repo, "apply", "--auto-approve").returncode == 0
        session = _session(repo)
        try:
            [job] = session.ledger.jobs()
            with pytest.raises(LedgerError, match="not an intent"):
                session.ledger.record_rejected(job.id, error="HTTP 400", event={"run_id": session.run_id})
        finally:
            session.close("failed")
        assert ledger_jobs(repo) == [job]
