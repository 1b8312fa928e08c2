"""Concurrency: the ledger lock between runs, and parallel remote calls within one run."""

from __future__ import annotations

import os
import socket
from datetime import datetime, timedelta, timezone

import pytest

from apply_support import (
    admin, assert_exactly_once, cli, ledger_events, make_repo, remote_jobs, served_sandbox,
    settings_of, sleeps_with_file_open, start_cli, wait_until,
)
from reconciler.ledger.store import Actor, Ledger
from reconciler.engine.run import binding, read_ledger, write_ledger

ALL = ("fx-a", "fx-b", "load-cars", "purge-cars")


def _current_lock(repo):
    ledger = read_ledger(settings_of(repo))
    if ledger is None:
        return None
    with ledger:
        return ledger.current_lock()


def _finished(proc) -> bool:
    return proc.poll() is not None


def test_a_held_lock_refuses_a_second_apply_naming_the_holder(tmp_path):
    with served_sandbox() as url:
        repo = make_repo(tmp_path, url)
        settings = settings_of(repo)
        holder = Actor(user="ci-bot", host=socket.gethostname(), pid=os.getpid(),
                       ci_run_url="https://github.com/acme/books/actions/runs/42")
        with Ledger.open_write(settings.ledger_path, binding(settings)) as ledger:
            lock_id = ledger.acquire_lock(holder)
            refused = cli(repo, "apply", "--auto-approve")
            assert refused.returncode == 1
            assert f"locked by ci-bot@{socket.gethostname()} pid {os.getpid()}" in refused.stderr
            assert "actions/runs/42" in refused.stderr and f"reconciler lock release {lock_id}" in refused.stderr
            assert remote_jobs(url) == []

            waiting = start_cli(repo, "apply", "--auto-approve", "--lock-timeout", "60")
            # Release only once the second run is really waiting: it has the ledger open and sleeps
            # between two looks at the lock. Nothing else in a run sleeps with the ledger open before
            # it holds the lock.
            wait_until(lambda: _finished(waiting) or sleeps_with_file_open(waiting.pid, settings.ledger_path),
                       timeout=60, message="the second apply never started waiting for the held lock")
            assert waiting.poll() is None, "the second apply ended while the lock was held: " + "".join(
                waiting.communicate())
            released = datetime.now(timezone.utc)
            ledger.release_lock(lock_id)
        out, err = waiting.communicate(timeout=120)
        assert waiting.returncode == 0, out + err
        assert_exactly_once(repo, url, ALL)
        intents = [e for e in ledger_events(repo) if e["event_type"] == "intent"]
        assert len(intents) == 4 and all(datetime.fromisoformat(e["ts"]) > released for e in intents)


@pytest.mark.usefixtures("both_stores")
def test_two_concurrent_applies_never_both_submit(tmp_path):
    with served_sandbox() as url:
        repo = make_repo(tmp_path, url)
        admin(url, "faults", {"latency_ms": 100})  # each run holds the lock for a while
        procs = [start_cli(repo, "apply", "--auto-approve", "--lock-timeout", "120") for _ in range(2)]
        outputs = [p.communicate(timeout=180) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], outputs
        stdouts = sorted(out for out, _ in outputs)
        assert sum("Apply complete: 4 submitted" in out for out in stdouts) == 1
        assert sum("No changes." in out for out in stdouts) == 1
        assert_exactly_once(repo, url, ALL)


@pytest.mark.usefixtures("both_stores")
def test_a_run_waiting_on_jobs_holds_the_lock_until_it_ends(tmp_path):
    with served_sandbox(pending_seconds=3600) as url:
        repo = make_repo(tmp_path, url, create=(), delete=())
        first = start_cli(repo, "apply", "--auto-approve", "--wait", "--timeout", "120")
        lock = wait_until(lambda: _current_lock(repo) if len(remote_jobs(url)) == 2 else None)
        second = cli(repo, "apply", "--auto-approve")
        assert second.returncode == 1 and f"pid {first.pid}" in second.stderr, second.stdout + second.stderr
        assert first.poll() is None and lock["pid"] == first.pid
        admin(url, "clock", {"advance_seconds": 7200})  # the jobs run and complete; the first run ends
        out, err = first.communicate(timeout=120)
        assert first.returncode == 0, out + err
        assert "Jobs: 2 completed." in out
        assert_exactly_once(repo, url, ("fx-a", "fx-b"))


@pytest.mark.usefixtures("both_stores")
def test_a_lost_lock_of_a_dead_process_is_taken_over(tmp_path):
    with served_sandbox() as url:
        repo = make_repo(tmp_path, url, mass=("fx-a",), create=(), delete=())
        settings = settings_of(repo)
        dead = Actor(user="gone", host=socket.gethostname(), pid=_dead_pid())
        with write_ledger(settings) as ledger:
            ledger.acquire_lock(dead)
        proc = cli(repo, "apply", "--auto-approve")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert any(e["event_type"] == "lock_takeover" for e in ledger_events(repo))


def _dead_pid() -> int:
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


@pytest.mark.parametrize("parallelism, expect_overlap", [(None, True), ("1", False)])
def test_independent_changes_overlap_up_to_the_parallelism(tmp_path, parallelism, expect_overlap):
    """Measured from the ledger's remote_call events (end time and duration), not from elapsed time."""
    names = tuple(f"fx-{i:02d}" for i in range(16))
    with served_sandbox() as url:
        repo = make_repo(tmp_path, url, mass=names, create=(), delete=())
        admin(url, "faults", {"latency_ms": 100})
        args = ["apply", "--auto-approve"] + (["--parallelism", parallelism] if parallelism else [])
        proc = cli(repo, *args)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    posts = [e for e in ledger_events(repo) if e["event_type"] == "remote_call" and e["method"] == "POST"
             and e["path"] == "/v1/bulk"]
    assert len(posts) == 16
    spans = []
    for event in posts:
        end = datetime.fromisoformat(event["ts"])
        spans.append((end - timedelta(milliseconds=event["detail"]["duration_ms"]), end))
    peak = max(sum(1 for s, e in spans if s < moment <= e) for _, moment in spans)
    if expect_overlap:
        assert peak >= 4, peak
    else:
        assert peak == 1, peak
