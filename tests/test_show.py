"""`reconciler show NAME` on real ledgers produced by real applies on the embedded sandbox."""

from __future__ import annotations

import io
import json

import pytest

from ops_fixtures import advance, apply, blob, cli, set_blob, state_files
from reconciler.commands.show import show
from reconciler.engine.run import read_ledger
from reconciler.spec.load import load_desired


@pytest.fixture
def repo(repo_on_both_stores):
    """Every test here runs on the SQLite ledger and on its PostgreSQL copy."""
    return repo_on_both_stores


def run(settings, name: str, **kw) -> tuple[int, str]:
    out = io.StringIO()
    code = show(settings, out, name=name, **kw)
    return code, out.getvalue()


def document(settings, name: str, **kw) -> dict:
    code, text = run(settings, name, as_json=True, **kw)
    assert code == 0
    return json.loads(text)


def test_shows_the_spec_its_file_every_job_and_the_events(repo):
    spec = load_desired(repo).by_name()["payments"]
    with read_ledger(repo) as ledger:
        job = ledger.jobs("payments")[0]
        newest = ledger.events("payments", limit=1)[0]
    code, text = run(repo, "payments")
    assert code == 0
    assert "Spec payments\n" in text
    assert "action type  MPU" in text and "description  November payments" in text
    assert f"file         data/payments.csv ({spec.file_size} bytes, sha256 {spec.file_sha256})" in text
    assert f"fingerprint  {spec.fingerprint} (version 1)" in text
    assert "latest job   generation 1: same fingerprint and revision" in text
    assert f"generation 1  {job.remote_id}  Completed  phase done  revision 1" in text
    assert "rows: total 4, processed 4, succeeded 2, failed 2" in text
    assert f"idempotency key {job.idempotency_key}" in text
    assert f"result {job.result_path} (sha256 {job.result_sha256}; file matches)" in text
    events = text[text.index("Events (newest first"):].splitlines()
    assert events[1].split()[:3] == ["ID", "TIME", "ACTOR"]
    assert events[2].split()[0] == str(newest["id"])


def test_json_holds_spec_jobs_and_events(repo):
    doc = document(repo, "load-vehicles")
    assert doc["spec_state"] == "present" and doc["more_events"] is False
    assert doc["spec"]["kind"] == "CustomObjectJob" and doc["spec"]["object"] == "vehicle"
    assert doc["spec"]["operation"] == "create" and doc["spec"]["file"] == "data/vehicles.csv"
    [job] = doc["jobs"]
    assert job["status"] == "completed" and job["generation"] == 1 and job["result_file"] == "ok"
    assert job["result_path"].endswith(".errors.json") and len(job["result_sha256"]) == 64
    ids = [e["id"] for e in doc["events"]]
    assert ids == sorted(ids, reverse=True) and all(e["name"] == "load-vehicles" for e in doc["events"])
    assert {"intent", "submitted", "remote_call", "status_change", "result_archived"} <= {
        e["event_type"] for e in doc["events"]}
    assert all(len(e["hash"]) == 64 for e in doc["events"])


def test_every_job_ever_created_is_listed_oldest_first(repo):
    spec_file = repo.root / "specs" / "finance.yaml"
    spec_file.write_text(spec_file.read_text().replace("file: ../data/fx.csv", "file: ../data/fx.csv\n  revision: 2"))
    apply(repo)
    advance(repo, 3600)
    apply(repo)
    doc = document(repo, "fx-rates")
    assert [(j["generation"], j["revision"], j["status"]) for j in doc["jobs"]] == [
        (1, 1, "Completed"), (2, 2, "Completed")]
    text = run(repo, "fx-rates")[1]
    assert "Jobs (2, oldest first)" in text
    assert text.index("generation 1  ") < text.index("generation 2  ")


def test_a_removed_spec_is_said_to_be_removed(repo):
    (repo.root / "specs" / "vehicles.yaml").unlink()
    (repo.root / "specs" / "finance.yaml").write_text(
        (repo.root / "specs" / "finance.yaml").read_text().split("---")[0])  # payments only
    code, text = run(repo, "fx-rates")
    assert code == 0
    assert "Spec fx-rates: removed from the specs" in text and "Jobs (1, oldest first)" in text
    doc = document(repo, "fx-rates")
    assert doc["spec_state"] == "removed" and doc["spec"] is None and len(doc["jobs"]) == 1


def test_invalid_specs_do_not_hide_the_record(repo):
    (repo.root / "specs" / "broken.yaml").write_text("kind: [unclosed\n")
    code, text = run(repo, "payments")
    assert code == 0 and "the specs are invalid" in text and "Jobs (1, oldest first)" in text
    assert document(repo, "payments")["spec_state"] == "unknown"


def test_a_changed_spec_and_a_changed_result_file_are_pointed_out(repo):
    data = repo.root / "data" / "fx.csv"
    data.write_text(data.read_text() + "D2,2026-11-03,EUR,USD,1.0901,ECB\n")
    with read_ledger(repo) as ledger:
        ref = ledger.jobs("fx-rates")[0].result_path
    set_blob(repo, ref, blob(repo, ref) + b"x")  # a file edited, or a row in the database
    text = run(repo, "fx-rates")[1]
    assert "differs from the spec" in text and "FILE CHANGED since archived" in text
    set_blob(repo, ref, None)
    assert "FILE MISSING" in run(repo, "fx-rates")[1]
    assert document(repo, "fx-rates")["jobs"][0]["result_file"] == "missing"


def test_events_are_limited_with_a_note(repo):
    code, text = run(repo, "payments", events_shown=3)
    assert "Events (newest first, the latest 3)" in text
    assert "older events not shown: `reconciler history payments --limit N`" in text
    doc = document(repo, "payments", events_shown=3)
    assert len(doc["events"]) == 3 and doc["more_events"] is True


def test_a_spec_with_no_ledger_yet(fresh):
    code, text = run(fresh, "payments")
    assert code == 0 and "Spec payments" in text and "Jobs: none (no ledger yet)" in text
    assert not (fresh.root / "state").exists()


def test_reads_never_write(repo):
    before = state_files(repo)
    run(repo, "payments")
    run(repo, "update-vehicles", as_json=True)
    assert cli(repo, "show", "fx-rates").returncode == 0
    assert state_files(repo) == before
