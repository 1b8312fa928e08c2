"""Crash safety: apply SIGKILLed at every boundary, and at random moments, never creates a second job.

The sandbox runs as its own process (`reconciler sandbox serve`), so it outlives every apply we kill.
`RECONCILER_TEST_CRASH_AT` (test-only, see reconciler/commands/_apply_journal.py) makes apply kill
itself at one point; a rerun must then converge with exactly one remote job per spec.
"""

from __future__ import annotations

import random
import signal

import pytest

from apply_support import (
    admin, assert_exactly_once, cli, converge, event_count, fx_csv, ledger_events, ledger_jobs, make_repo, remote_jobs,
    served_sandbox, settings_of, start_cli, wait_until,
)
from reconciler.engine.run import read_ledger


# Every test here runs on both ledger stores (conftest.both_stores).
pytestmark = pytest.mark.usefixtures("both_stores")

ALL = ("fx-a", "fx-b", "load-cars", "purge-cars")
CRASH = "RECONCILER_TEST_CRASH_AT"
KILLED = -signal.SIGKILL


def _chain_ok(repo) -> None:
    ledger = read_ledger(settings_of(repo))
    with ledger:
        report = ledger.verify()
    assert report.ok, report.message


POINTS = ["after-intent", "after-post", "after-record", "after-create", "after-upload-post",
          "after-intent:load-cars", "after-post:load-cars", "after-record:load-cars",
          "after-intent:purge-cars", "after-post:purge-cars"]
# Where the rerun repeats a request Zuora already answered (after an upload's answer the refresh sees the
# job running, so nothing is repeated): these run again against a sandbox that answers such a replay with
# 409 and the stored body (Zuora's other documented answer).
REPLAYED = ["after-post", "after-post:load-cars", "after-post:purge-cars"]


@pytest.mark.parametrize("url, point", [(200, p) for p in POINTS] + [(409, p) for p in REPLAYED],
                         indirect=["url"], ids=[*POINTS, *(f"replay409-{p}" for p in REPLAYED)])
def test_a_crash_at_any_boundary_converges_to_one_job_per_spec(tmp_path, url, point, request):
    repo = make_repo(tmp_path, url)
    crashed = cli(repo, "apply", "--auto-approve", env={CRASH: point})
    assert crashed.returncode == KILLED, crashed.stdout + crashed.stderr
    converge(repo)
    assert_exactly_once(repo, url, ALL)
    replays = [e for e in ledger_events(repo) if e["event_type"] == "remote_call" and e["http_status"] == 409]
    if request.node.callspec.params["url"] == 409:  # the resumed request was answered by a 409 replay, taken as ok
        assert replays and all(e["outcome"] == "ok" for e in replays), replays
    else:
        assert not replays
    assert cli(repo, "plan", "--detailed-exitcode").returncode == 0
    _chain_ok(repo)


def test_an_unknown_crash_point_is_refused_before_anything_happens(tmp_path, url):
    repo = make_repo(tmp_path, url)
    proc = cli(repo, "apply", "--auto-approve", env={CRASH: "after-lunch"})
    assert proc.returncode == 1 and "unknown crash point" in proc.stderr
    assert remote_jobs(url) == []


def test_random_kills_never_duplicate_a_job(tmp_path, url):
    """Each run is killed once it has written a random number (1 to 10) of ledger events of its own.

    Those are random moments of its work, not of the clock: a run that is slow to start cannot be
    killed before it did anything, nor a fast one finish first unnoticed. An uninterrupted apply of
    these specs writes 38 events, so at least the first three runs are certainly killed mid-way.
    """
    repo = make_repo(tmp_path, url, mass=("fx-a", "fx-b", "fx-c"), depends={"fx-c": ["load-cars"]})
    rng = random.Random(20261124)
    killed = 0
    for _ in range(5):
        target = event_count(repo) + rng.randint(1, 10)
        proc = start_cli(repo, "apply", "--auto-approve", "--wait", "--timeout", "60")
        wait_until(lambda proc=proc, target=target: proc.poll() is not None or event_count(repo) >= target,
                   timeout=90, message="apply neither wrote its events nor ended")
        if proc.poll() is None:
            proc.kill()
        proc.communicate()  # reaped: its pid is gone, so the next run takes its lock over at once
        killed += proc.returncode == KILLED
    assert killed >= 3, f"only {killed} of 5 runs were killed mid-way: the kills did not test anything"
    converge(repo)
    assert_exactly_once(repo, url, ("fx-a", "fx-b", "fx-c", "load-cars", "purge-cars"))
    _chain_ok(repo)


@pytest.fixture(params=[200, 409], ids=["replay200", "replay409"])
def slow_url(request):
    with served_sandbox(pending_seconds=3600, replay_status=request.param) as served:
        yield served


def test_a_crash_after_a_stop_converges_to_a_retired_job(tmp_path, slow_url):
    repo = make_repo(tmp_path, slow_url, mass=("fx-a",), create=(), delete=())
    assert cli(repo, "apply", "--auto-approve").returncode == 0
    (repo / "specs" / "fx-a.yaml").unlink()
    assert cli(repo, "apply", "--auto-approve", env={CRASH: "after-stop-post"}).returncode == KILLED
    converge(repo)
    [job] = ledger_jobs(repo)
    assert (job.phase, job.remote_status) == ("retired", "Stopped")
    assert [j["status"] for j in admin(slow_url, "state")["mass_actions"]] == ["Stopped"]


@pytest.mark.parametrize("point", ["after-stop-post", "after-intent", "after-post"])
def test_a_crash_inside_a_replace_submits_the_new_generation_once(tmp_path, slow_url, point):
    repo = make_repo(tmp_path, slow_url, mass=("fx-a",), create=(), delete=())
    assert cli(repo, "apply", "--auto-approve").returncode == 0
    (repo / "data" / "fx-a.csv").write_text(fx_csv(3))
    assert cli(repo, "apply", "--auto-approve", env={CRASH: point}).returncode == KILLED
    for _ in range(2):  # the stopped job may still be Stopping on the first rerun: then it waits
        proc = cli(repo, "apply", "--auto-approve")
        assert proc.returncode == 0, proc.stdout + proc.stderr
    jobs = sorted(ledger_jobs(repo), key=lambda j: j.generation)
    assert [j.generation for j in jobs] == [1, 2] and jobs[0].remote_status == "Stopped"
    remote = {j["bulkKey"]: j["status"] for j in admin(slow_url, "state")["mass_actions"]}
    assert remote == {jobs[0].remote_id: "Stopped", jobs[1].remote_id: "Pending"}
