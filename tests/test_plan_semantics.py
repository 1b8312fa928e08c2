"""Plan semantics a user trips over, through the CLI on a served sandbox whose jobs take seconds.

A selector that matches nothing is an error; a dependency left out by --target says so; a stopped or
failed dependency blocks its dependents (exit 1, with the way out) instead of waiting forever; the
stop of a removed spec retires it in the same apply; `lock release` will not free the lock of a run
still alive on this host without --force, and a run that gave up on the lock says how long it waited.
"""

from __future__ import annotations

import json
import signal
import subprocess

import pytest

from apply_support import (
    MASS_SPEC,
    admin,
    cli,
    fx_csv,
    ledger_jobs,
    make_repo,
    sandbox_process,
    start_cli,
    wait_until,
    write_spec,
    zuora_http,
)
from reconciler.model import Phase


@pytest.fixture(scope="module")
def slow_url():
    """Jobs wait 2 s, then process 2 rows a second: a 20-row file runs for about 12 s."""
    with sandbox_process("--pending-seconds", "2", "--rows-per-second", "2") as url:
        yield url


@pytest.fixture
def slow(slow_url):
    admin(slow_url, "reset", {})
    return slow_url


def two_step_repo(root, url, rows: int = 20):
    """fx-a (slow, `rows` rows) and fx-b, which depends on it."""
    repo = make_repo(root, url, mass=("fx-a", "fx-b"), create=(), delete=(), depends={"fx-b": ["fx-a"]})
    (repo / "data" / "fx-a.csv").write_text(fx_csv(0, rows=rows))
    return repo


def status_of(url: str, bulk_key: str) -> str:
    return next(j["status"] for j in admin(url, "state")["mass_actions"] if j["bulkKey"] == bulk_key)


def test_a_selector_matching_no_spec_is_an_error(slow, tmp_path):
    repo = two_step_repo(tmp_path / "repo", slow)
    for command in (("plan",), ("apply", "--auto-approve")):
        proc = cli(repo, *command, "--selector", "team=nobody")
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert "--selector team=nobody: matches no spec" in proc.stderr and "Traceback" not in proc.stderr
    assert not (repo / "state").exists()  # refused before anything was opened for writing


def test_a_dependency_outside_target_says_to_add_it(slow, tmp_path):
    repo = two_step_repo(tmp_path / "repo", slow)
    proc = cli(repo, "plan", "--target", "fx-b")
    assert proc.returncode == 0, proc.stderr
    assert "dependency fx-a is outside --target; add it (--target fx-a)" in proc.stdout
    assert "submit planned" not in proc.stdout


def test_a_stopped_dependency_blocks_until_it_is_rerun(slow, tmp_path):
    repo = two_step_repo(tmp_path / "repo", slow)
    first = cli(repo, "apply", "--auto-approve")
    assert first.returncode == 0, first.stdout + first.stderr
    [job] = [j for j in ledger_jobs(repo) if j.name == "fx-a"]
    with zuora_http(slow) as zuora:  # someone stops it in Zuora
        zuora.put(f"/v1/bulk/{job.remote_id}/stop").raise_for_status()
    wait_until(lambda: status_of(slow, job.remote_id) == "Stopped")

    plan = cli(repo, "plan", "--detailed-exitcode")
    assert plan.returncode == 1, plan.stdout + plan.stderr
    assert "⊘ fx-b" in plan.stdout and "dependency fx-a stopped" in plan.stdout
    assert "fix fx-a and bump its revision, or run with --rerun fx-a" in plan.stdout
    assert "1 blocked" in plan.stdout and "blocked change" in plan.stderr
    document = json.loads(cli(repo, "plan", "--json").stdout)
    [blocked] = document["changes"]
    assert blocked["action"] == "blocked" and blocked["detail"]["dependencies"] == ["fx-a"]
    assert document["summary"]["blocked"] == 1

    applied = cli(repo, "apply", "--auto-approve")
    assert applied.returncode == 1 and "blocked by a dependency" in applied.stderr
    assert [j.name for j in ledger_jobs(repo)] == ["fx-a"]  # fx-b was not submitted

    (repo / "data" / "fx-a.csv").write_text(fx_csv(0, rows=3))  # a quicker file, and a revision bump
    write_spec(repo, "fx-a", MASS_SPEC, revision=2)
    done = cli(repo, "apply", "--auto-approve", "--wait", "--timeout", "90")
    assert done.returncode == 0, done.stdout + done.stderr
    assert cli(repo, "plan", "--detailed-exitcode").returncode == 0


def test_stopping_a_removed_spec_retires_it_in_the_same_apply(slow, tmp_path):
    repo = two_step_repo(tmp_path / "repo", slow)
    assert cli(repo, "apply", "--auto-approve", "--target", "fx-a").returncode == 0
    [job] = ledger_jobs(repo)
    wait_until(lambda: status_of(slow, job.remote_id) == "Processing", timeout=20)
    (repo / "specs" / "fx-a.yaml").unlink()
    (repo / "specs" / "fx-b.yaml").unlink()

    proc = cli(repo, "apply", "--auto-approve")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "- fx-a: stopped" in proc.stdout
    [after] = ledger_jobs(repo)
    assert after.phase == Phase.RETIRED and after.remote_status == "Stopped"
    assert after.result_path and (repo / after.result_path).exists()  # the rows it did process, archived
    plan = cli(repo, "plan", "--detailed-exitcode")
    assert plan.returncode == 0 and "No changes" in plan.stdout, plan.stdout


def test_lock_release_refuses_a_live_holder_and_lock_timeout_says_how_long_it_waited(slow, tmp_path):
    repo = two_step_repo(tmp_path / "repo", slow)
    holder = start_cli(repo, "apply", "--auto-approve", "--wait", "--timeout", "120")
    try:
        def held():
            proc = cli(repo, "lock", "status", "--json")
            return proc.returncode == 0 and json.loads(proc.stdout)["lock"]
        lock = wait_until(held, timeout=30, interval=0.2)

        second = cli(repo, "apply", "--auto-approve", "--lock-timeout", "2s")
        assert second.returncode == 1 and "Waited 2s for it (--lock-timeout)" in second.stderr, second.stderr
        quick = cli(repo, "apply", "--auto-approve")
        assert quick.returncode == 1 and "Did not wait for it (--lock-timeout 0s)" in quick.stderr

        refused = cli(repo, "lock", "release", lock["id"])
        assert refused.returncode == 1 and "still running on this host" in refused.stderr
        assert "--force" in refused.stderr and "Traceback" not in refused.stderr
        assert json.loads(cli(repo, "lock", "status", "--json").stdout)["lock"]["id"] == lock["id"]
        forced = cli(repo, "lock", "release", lock["id"], "--force")
        assert forced.returncode == 0, forced.stderr
    finally:
        holder.send_signal(signal.SIGTERM)
        try:
            holder.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            holder.kill()
            holder.communicate()
