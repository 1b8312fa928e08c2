"""Saved plans (`plan --out` then `apply FILE`), staleness, and secrets kept out of every output and file."""

from __future__ import annotations

import json

import pytest

from apply_support import (
    CREDENTIALS, assert_exactly_once, cli, fx_csv, ledger_jobs, make_repo, remote_jobs, sandbox_token, served_sandbox,
    settings_of,
)


@pytest.fixture
def url():
    with served_sandbox() as served:
        yield served


def test_a_saved_plan_is_applied_exactly_as_made(tmp_path, url):
    repo = make_repo(tmp_path, url)
    made = cli(repo, "plan", "--target", "fx-a", "--target", "purge-cars", "--out", "p.json")
    assert made.returncode == 0, made.stdout + made.stderr
    assert json.loads((repo / "p.json").read_text())["ledger"] == {"lineage": None, "serial": 0}
    proc = cli(repo, "apply", "p.json", "--auto-approve")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 submitted" in proc.stdout
    assert_exactly_once(repo, url, ("fx-a", "purge-cars"))


def test_a_saved_plan_with_wait_submits_its_waiting_dependents_and_nothing_else(tmp_path, url):
    repo = make_repo(tmp_path, url, depends={"fx-b": ["fx-a"]})
    assert cli(repo, "plan", "--target", "fx-a", "--target", "fx-b", "--out", "p.json").returncode == 0
    proc = cli(repo, "apply", "p.json", "--auto-approve", "--wait", "--timeout", "60")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert_exactly_once(repo, url, ("fx-a", "fx-b"))


def test_a_plan_is_stale_once_a_file_changed(tmp_path, url):
    repo = make_repo(tmp_path, url)
    assert cli(repo, "plan", "--out", "p.json").returncode == 0
    (repo / "data" / "fx-b.csv").write_text(fx_csv(8))
    proc = cli(repo, "apply", "p.json", "--auto-approve")
    assert proc.returncode == 1 and "plan is stale" in proc.stderr and "files changed" in proc.stderr
    assert remote_jobs(url) == []


def test_a_plan_is_stale_once_another_apply_ran(tmp_path, url):
    repo = make_repo(tmp_path, url)
    assert cli(repo, "apply", "--auto-approve", "--target", "fx-a").returncode == 0
    assert cli(repo, "plan", "--out", "p.json").returncode == 0
    assert cli(repo, "apply", "--auto-approve", "--target", "fx-b").returncode == 0
    proc = cli(repo, "apply", "p.json", "--auto-approve")
    assert proc.returncode == 1 and "plan is stale: the ledger changed since" in proc.stderr
    assert_exactly_once(repo, url, ("fx-a", "fx-b"))


def test_a_bad_plan_file_is_refused_without_creating_a_ledger(tmp_path, url):
    repo = make_repo(tmp_path, url)
    (repo / "p.json").write_text('{"format_version": 1,')
    proc = cli(repo, "apply", "p.json", "--auto-approve")
    assert proc.returncode == 1 and "p.json" in proc.stderr and "not valid JSON" in proc.stderr
    assert not settings_of(repo).ledger_path.exists()


def test_filters_cannot_be_combined_with_a_saved_plan(tmp_path, url):
    repo = make_repo(tmp_path, url)
    assert cli(repo, "plan", "--out", "p.json").returncode == 0
    proc = cli(repo, "apply", "p.json", "--auto-approve", "--exclude", "fx-a")
    assert proc.returncode == 1 and "applied exactly as it was made" in proc.stderr
    assert remote_jobs(url) == []


def test_secrets_appear_in_no_output_ledger_plan_or_result(tmp_path, url):
    repo = make_repo(tmp_path, url)
    outputs = [cli(repo, "-v", "plan", "--out", "p.json"),
               cli(repo, "-v", "apply", "--auto-approve", "--wait", "--target", "fx-a", "--target", "load-cars")]
    token = sandbox_token(url)
    with_token = {"ZUORA_CLIENT_ID": "", "ZUORA_CLIENT_SECRET": "", "ZUORA_ACCESS_TOKEN": token}
    outputs.append(cli(repo, "-v", "apply", "--auto-approve", "--wait", env=with_token))
    assert all(p.returncode == 0 for p in outputs), [p.stderr for p in outputs]
    assert "POST /v1/bulk" in outputs[1].stderr  # -v logs the calls, so the check below means something
    texts = [p.stdout + p.stderr for p in outputs]
    files = [repo / "p.json", settings_of(repo).ledger_path, *(repo / "state").rglob("results/**/*")]
    blobs = [f.read_bytes() for f in files if f.is_file()]
    assert len(blobs) >= 6 and len(ledger_jobs(repo)) == 4
    for secret in (CREDENTIALS["ZUORA_CLIENT_SECRET"], token):
        assert not any(secret in text for text in texts)
        assert not any(secret.encode() in blob for blob in blobs)
