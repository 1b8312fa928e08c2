"""`reconciler lock status | release ID` on real ledgers produced by real applies."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import time

import pytest

from ops_fixtures import cli, state_files
from reconciler.commands.lock import release, status
from reconciler.errors import UsageError
from reconciler.ledger.store import Actor
from reconciler.engine.run import read_ledger, write_ledger

CI = Actor("ci-bot", "runner-7", 4242, "abc123", "https://github.com/acme/billing/actions/runs/99")


def hold(settings, actor: Actor = CI, *, now=time.time) -> str:
    """Take the lock as another run would, and leave it held."""
    with write_ledger(settings) as ledger:
        return ledger.acquire_lock(actor, now=now)


@pytest.fixture
def repo(repo_on_both_stores):
    """Every test here runs on the SQLite ledger and on its PostgreSQL copy."""
    return repo_on_both_stores


def run_status(settings, **kw) -> tuple[int, str]:
    out = io.StringIO()
    return status(settings, out, **kw), out.getvalue()


def test_not_locked(repo):
    assert run_status(repo) == (0, "not locked\n")
    code, text = run_status(repo, as_json=True)
    assert code == 0 and json.loads(text) == {"locked": False, "lock": None}


def test_no_ledger_is_not_locked_and_nothing_is_created(fresh):
    code, text = run_status(fresh)
    assert code == 0 and text.startswith("no ledger yet") and text.endswith("; not locked\n")
    assert json.loads(run_status(fresh, as_json=True)[1]) == {"locked": False, "lock": None}
    with pytest.raises(UsageError, match="no lock is held"):
        release(fresh, io.StringIO(), lock_id="x")
    assert not (fresh.root / "state").exists()


def test_status_shows_the_holder(repo):
    lock_id = hold(repo)
    code, text = run_status(repo)
    assert code == 0
    lines = dict(line.strip().split("  ", 1) for line in text.splitlines()[1:])
    assert text.startswith("locked\n")
    assert lines["id"].strip() == lock_id
    assert lines["holder"].strip() == f"ci-bot@runner-7 pid 4242 (CI run {CI.ci_run_url})"
    assert lines["CI run"].strip() == "https://github.com/acme/billing/actions/runs/99"
    assert lines["state"].strip() == "held" and lines["lease"].strip() == "60s"
    document = json.loads(run_status(repo, as_json=True)[1])
    assert document["locked"] is True
    lock = document["lock"]
    assert (lock["id"], lock["user"], lock["host"], lock["pid"]) == (lock_id, "ci-bot", "runner-7", 4242)
    assert lock["expired"] is False and lock["holder_gone"] is False
    assert lock["acquired_at"].endswith("+00:00") and lock["heartbeat_at"].endswith("+00:00")


def test_an_expired_lease_is_shown(repo):
    hold(repo, now=lambda: time.time() - 3600)
    assert "expired: its lease lapsed" in run_status(repo)[1]
    assert json.loads(run_status(repo, as_json=True)[1])["lock"]["expired"] is True


def test_a_holder_process_that_is_gone_is_shown(repo):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    hold(repo, Actor("me", socket.gethostname(), int(dead.stdout), None, None))
    assert "stale: the holder process is gone" in run_status(repo)[1]
    assert json.loads(run_status(repo, as_json=True)[1])["lock"]["holder_gone"] is True


def test_release_with_a_wrong_id_changes_nothing(repo):
    lock_id = hold(repo)
    before = state_files(repo)
    with pytest.raises(UsageError, match=f"no lock 'wrong' is held \\(the lock held now is {lock_id}\\)"):
        release(repo, io.StringIO(), lock_id="wrong")
    assert state_files(repo) == before
    proc = cli(repo, "lock", "release", "wrong")
    assert proc.returncode == 1 and "no lock 'wrong' is held" in proc.stderr


def test_a_released_lock_cannot_be_released_again(repo):
    lock_id = hold(repo)
    release(repo, io.StringIO(), lock_id=lock_id)
    with pytest.raises(UsageError, match="the ledger is not locked"):
        release(repo, io.StringIO(), lock_id=lock_id)


def test_release_frees_the_lock_and_records_who_did_it(repo):
    lock_id = hold(repo)
    out = io.StringIO()
    assert release(repo, out, lock_id=lock_id) == 0
    assert out.getvalue().startswith(f"Released lock {lock_id} held by ci-bot@runner-7 pid 4242")
    assert "recorded in the audit log as released by" in out.getvalue()
    assert run_status(repo) == (0, "not locked\n")
    with read_ledger(repo) as ledger:
        event = ledger.events(limit=1)[0]
        assert ledger.verify().ok
    assert event["event_type"] == "lock_release" and event["actor"].endswith("@" + socket.gethostname())
    assert event["detail"] == {"forced": True, "holder": "ci-bot@runner-7 pid 4242 (CI run "
                               "https://github.com/acme/billing/actions/runs/99)", "lock_id": lock_id}


def test_release_through_the_command_line(repo):
    lock_id = hold(repo)
    proc = cli(repo, "lock", "status", "--json")
    assert proc.returncode == 0 and json.loads(proc.stdout)["lock"]["id"] == lock_id
    proc = cli(repo, "lock", "release", lock_id)
    assert proc.returncode == 0 and f"Released lock {lock_id}" in proc.stdout


def test_status_never_writes(repo):
    hold(repo)
    before = state_files(repo)
    run_status(repo)
    run_status(repo, as_json=True)
    assert state_files(repo) == before
