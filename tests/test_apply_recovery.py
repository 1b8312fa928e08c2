"""In-doubt recovery: a custom object intent older than 24 h (Zuora forgot its key) is adopted when one job fits."""

from __future__ import annotations

import sqlite3
import time
from datetime import datetime, timedelta, timezone

from apply_support import (
    assert_exactly_once, cli, ledger_events, ledger_jobs, make_repo, remote_jobs, served_sandbox, settings_of,
    zuora_http,
)
from reconciler.engine.answers import idempotency_key
from reconciler.ledger.store import Ledger
from reconciler.engine.run import binding
from reconciler.spec.load import load_desired

DAY = 24 * 3600


class ShiftedClock:
    """Real time plus an offset the test sets: the sandbox can be made to act a day ago."""

    def __init__(self):
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


def _old_intent(repo, name: str, age_seconds: float) -> str:
    """An intent written through the ledger API, then dated `age_seconds` back; its key."""
    settings = settings_of(repo)
    spec = load_desired(settings).by_name()[name]
    with Ledger.open_write(settings.ledger_path, binding(settings)) as ledger:
        key = idempotency_key(ledger.lineage, name, spec.fingerprint, 1)
        job = ledger.add_intent(
            run_id=None, name=name, kind=spec.kind, generation=1, fingerprint=spec.fingerprint,
            fingerprint_version=spec.fingerprint_version, revision=spec.revision, idempotency_key=key,
            detail={"namespace": spec.namespace, "object": spec.object, "operation": spec.operation,
                    "file": spec.file, "file_sha256": spec.file_sha256},
        )
    old = (datetime.now(timezone.utc) - timedelta(seconds=age_seconds)).isoformat(timespec="microseconds")
    with sqlite3.connect(settings.ledger_path) as db:  # the jobs table is outside the hash chain
        db.execute("UPDATE jobs SET created_at = ?, updated_at = ? WHERE id = ?", (old, old, job.id))
    return key


def _create_jobs_a_day_ago(url: str, clock: ShiftedClock, keys) -> list[str]:
    """POST /objects/jobs as if a day ago (what the lost submissions did); their ids."""
    with zuora_http(url) as http:
        clock.offset = -(DAY + 3600)
        try:
            ids = [http.post("/objects/jobs", headers={"Idempotency-Key": key}, json={
                "namespace": "default", "object": "car", "operation": "create"}).json()["Id"] for key in keys]
        finally:
            clock.offset = 0.0
    return ids


def test_an_intent_in_doubt_for_a_day_is_adopted_when_exactly_one_job_fits(tmp_path):
    clock = ShiftedClock()
    with served_sandbox(clock) as url:
        repo = make_repo(tmp_path, url, mass=(), delete=())
        key = _old_intent(repo, "load-cars", DAY + 3600)
        [job_id] = _create_jobs_a_day_ago(url, clock, [key])
        planned = cli(repo, "plan")
        assert planned.returncode == 1 and "submission in doubt for more than 24 h" in planned.stdout

        proc = cli(repo, "apply", "--auto-approve", "--wait", "--timeout", "60")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert f"load-cars: recovered in-doubt submission as job {job_id}" in proc.stdout
        assert "↑ load-cars" in proc.stdout  # the adopted job never got its file: it is uploaded now
        [job] = ledger_jobs(repo)
        assert (job.remote_id, job.phase, job.remote_status, job.uploaded) == (job_id, "done", "completed", True)
        assert_exactly_once(repo, url, ["load-cars"])
        recovered = [e for e in ledger_events(repo) if e["event_type"] == "recovered_in_doubt"]
        assert recovered and recovered[0]["detail"]["note"] == "recovered in-doubt submission"


def test_an_intent_in_doubt_whose_job_was_created_failed_for_want_of_a_slot_is_closed_and_submitted_again(tmp_path):
    clock = ShiftedClock()
    with served_sandbox(clock, job_limit="failed") as url:
        repo = make_repo(tmp_path, url, mass=(), delete=())
        key = _old_intent(repo, "load-cars", DAY + 3600)
        with zuora_http(url) as http:  # five jobs of another object held every slot a day ago
            clock.offset = -(DAY + 3600)
            blockers = [http.post("/objects/jobs", json={"namespace": "default", "object": "bus",
                                                         "operation": "create"}).json()["Id"] for _ in range(5)]
            clock.offset = 0.0
            [failed_id] = _create_jobs_a_day_ago(url, clock, [key])
            for job_id in blockers:
                http.patch(f"/objects/jobs/{job_id}/cancel").raise_for_status()
        proc = cli(repo, "apply", "--auto-approve", "--wait", "--timeout", "60")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert f"in-doubt submission was refused for want of a slot (job {failed_id} created failed" in proc.stdout
        first, second = ledger_jobs(repo)
        assert (first.remote_status, first.remote_id) == ("rejected", None) and "71012560" in first.detail["error"]
        assert (second.generation, second.remote_status) == (2, "completed")


def test_two_fitting_jobs_are_left_to_a_person(tmp_path):
    clock = ShiftedClock()
    with served_sandbox(clock) as url:
        repo = make_repo(tmp_path, url, mass=(), delete=())
        key = _old_intent(repo, "load-cars", DAY + 3600)
        ids = _create_jobs_a_day_ago(url, clock, [key, "someone-else"])
        proc = cli(repo, "apply", "--auto-approve")
        assert proc.returncode == 1 and "apply refuses to run" in proc.stderr
        assert f"custom object jobs that fit it: {', '.join(reversed(ids))} (not adopted" in proc.stdout
        assert "submission in doubt for more than 24 h" in proc.stdout
        assert [(j.phase, j.remote_id) for j in ledger_jobs(repo)] == [("intent", None)]
        assert len(remote_jobs(url)) == 2


def test_a_recent_intent_is_resumed_with_its_key_not_recovered(tmp_path):
    clock = ShiftedClock()
    with served_sandbox(clock) as url:
        repo = make_repo(tmp_path, url, mass=(), delete=())
        key = _old_intent(repo, "load-cars", 3600)  # an hour old: Zuora still knows the key
        with zuora_http(url) as http:
            job_id = http.post("/objects/jobs", headers={"Idempotency-Key": key}, json={
                "namespace": "default", "object": "car", "operation": "create"}).json()["Id"]
        proc = cli(repo, "apply", "--auto-approve", "--wait")
        assert proc.returncode == 0 and "resume interrupted submission" in proc.stdout, proc.stdout + proc.stderr
        assert "recovered" not in proc.stdout
        assert [j.remote_id for j in ledger_jobs(repo)] == [job_id]
        assert_exactly_once(repo, url, ["load-cars"])
