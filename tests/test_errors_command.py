"""`reconciler errors NAME` on real ledgers produced by real applies: failed rows and --failed-rows files."""

from __future__ import annotations

import csv
import io
import json
import shutil

import pytest

from ops_fixtures import (PAYMENTS_CSV, VEHICLE_UPDATES_CSV, advance, blob, cli, fail_in_tenant, set_blob, settings_of,
                          state_files, submit)
from reconciler.commands.errors import errors
from reconciler.commands.validate import validate
from reconciler.errors import ReconcilerError
from reconciler.engine.run import read_ledger


@pytest.fixture
def repo(repo_on_both_stores):
    """Every test here runs on the SQLite ledger and on its PostgreSQL copy."""
    return repo_on_both_stores


def run(settings, name: str, **kw) -> tuple[int, str]:
    out = io.StringIO()
    code = errors(settings, out, name=name, **kw)
    return code, out.getvalue()


def read_csv(path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


def revalidates(tmp_path, failed_file, spec_body: str) -> None:
    """The written file is a valid data file for a new spec in a fresh repository."""
    root = tmp_path / "follow-up"
    (root / "specs").mkdir(parents=True)
    (root / "data").mkdir()
    shutil.copy(failed_file, root / "data" / "retry.csv")
    (root / "reconciler.yaml").write_text("environment: local\n")
    (root / "specs" / "retry.yaml").write_text(
        f"apiVersion: reconciler/v1\nmetadata: {{name: retry}}\n{spec_body}")
    out = io.StringIO()
    assert validate(settings_of(root), out) == 0, out.getvalue()
    assert out.getvalue() == "1 spec valid\n"


def test_mass_updater_failed_rows_with_row_key_and_message(repo):
    code, text = run(repo, "payments")
    assert code == 0
    lines = text.splitlines()
    assert lines[0].endswith("(generation 1, Completed): 2 failed rows of 4")
    assert lines[1].split() == ["ROW", "KEY", "MESSAGE"]
    assert lines[2].startswith("2    Group ID=G1, Billing Account ID=A001, Payment Amount=1500.00, Currency=USD")
    assert lines[2].endswith("The amounts applied to invoices exceed the Payment Amount")
    assert lines[3].startswith("3 ") and lines[3].endswith("A previous row with the same Group ID failed")
    assert lines[4].startswith("(from state/local/results/payments/g1-")


def test_mass_updater_failed_rows_file_has_the_input_columns_and_revalidates(repo, tmp_path):
    code, text = run(repo, "payments", failed_rows="retry-payments.csv")
    assert code == 0 and "Wrote 2 failed rows to retry-payments.csv (rows from the response file)" in text
    written = read_csv(repo.root / "retry-payments.csv")
    original = list(csv.reader(io.StringIO(PAYMENTS_CSV)))
    assert written[0] == original[0]  # Success, Error Message, Payment ID, ... dropped; #Customer kept
    assert written[1:] == original[1:3]
    revalidates(tmp_path, repo.root / "retry-payments.csv",
                "kind: MassAction\nspec: {actionType: MPU, file: ../data/retry.csv}\n")


def test_custom_object_failed_rows_come_from_the_original_file_and_revalidate(repo, tmp_path):
    code, text = run(repo, "update-vehicles", failed_rows=str(tmp_path / "retry.csv"))
    assert code == 0
    lines = text.splitlines()
    assert lines[0].endswith("(generation 1, completed): 2 failed rows")
    assert lines[1].split() == ["ROW", "CODE", "KEY", "MESSAGE"]
    assert lines[2].split()[:3] == ["2", "71012540", "Id=1b1e6bd6-3c1f-4a2e-9d0c-5f7f2c1a0e01"]
    assert "Record not found for id" in lines[2]
    assert "(rows from the original input file)" in text
    assert read_csv(tmp_path / "retry.csv") == list(csv.reader(io.StringIO(VEHICLE_UPDATES_CSV)))
    revalidates(tmp_path, tmp_path / "retry.csv",
                "kind: CustomObjectJob\nspec: {object: vehicle, operation: update, file: ../data/retry.csv}\n")


def test_custom_object_rows_are_rebuilt_from_the_records_when_the_input_changed(repo, tmp_path):
    data = repo.root / "data" / "vehicle-updates.csv"
    data.write_text("Id,make__c\n")  # edited after the job ran: row numbers no longer point at it
    code, text = run(repo, "update-vehicles", failed_rows=str(tmp_path / "retry.csv"))
    assert "(rows from the records in the job's errors" in text
    with open(tmp_path / "retry.csv", newline="", encoding="utf-8") as handle:
        written = list(csv.DictReader(handle))
    assert written == list(csv.DictReader(io.StringIO(VEHICLE_UPDATES_CSV)))  # the archive sorts the columns
    revalidates(tmp_path, tmp_path / "retry.csv",
                "kind: CustomObjectJob\nspec: {object: vehicle, operation: update, file: ../data/retry.csv}\n")


def test_no_failed_rows_says_so_and_writes_nothing(repo, tmp_path):
    code, text = run(repo, "fx-rates", failed_rows=str(tmp_path / "none.csv"))
    assert code == 0
    assert text.splitlines()[0].endswith(": 0 failed rows of 2")
    assert "there are no failed rows" in text and not (tmp_path / "none.csv").exists()
    assert run(repo, "load-vehicles")[1].splitlines()[0].endswith(": 0 failed rows")


def test_json_lists_rows_with_their_values_or_records(repo, tmp_path):
    code, text = run(repo, "payments", as_json=True, failed_rows=str(tmp_path / "f.csv"))
    doc = json.loads(text)
    assert doc["name"] == "payments" and doc["job"]["status"] == "Completed" and doc["unprocessed"] == 0
    assert [r["row"] for r in doc["failed"]] == [2, 3]
    assert doc["failed"][0]["values"]["Payment Amount"] == "1500.00" and "Success" not in doc["failed"][0]["values"]
    assert doc["failed_rows_file"] == str(tmp_path / "f.csv")
    co = json.loads(run(repo, "update-vehicles", as_json=True)[1])
    assert co["failed"][0]["code"] == 71012540 and co["failed"][0]["record"]["make__c"] == "Volvo"
    assert co["failed_rows_file"] is None


def test_a_missing_result_is_fetched_and_archived_first(repo):
    with read_ledger(repo) as ledger:
        job = ledger.jobs("payments")[0]
    set_blob(repo, job.result_path, None)
    code, text = run(repo, "payments")
    assert code == 0 and "2 failed rows of 4" in text
    assert blob(repo, job.result_path) is not None
    with read_ledger(repo) as ledger:
        newest = ledger.events("payments", limit=2)
        assert ledger.jobs("payments")[0].result_sha256 == job.result_sha256  # the same bytes came back
    assert [e["event_type"] for e in newest] == ["result_archived", "remote_call"]
    assert newest[1]["path"].startswith("/v1/files/")


def test_a_running_job_is_refreshed_first_and_its_rows_shown_once_it_ended(repo):
    submit(repo, "payments")
    with pytest.raises(ReconcilerError, match=r"is still Pending; .*reconciler status --wait payments"):
        run(repo, "payments")
    advance(repo, 3600)
    code, text = run(repo, "payments")
    assert code == 0 and "(generation 2, Completed): 2 failed rows of 4" in text


def test_a_changed_archive_is_refused(repo):
    with read_ledger(repo) as ledger:
        ref = ledger.jobs("update-vehicles")[0].result_path
    set_blob(repo, ref, json.dumps({"errors": []}).encode())  # a file edited, or a row in the database
    with pytest.raises(ReconcilerError, match="was changed or cannot be read"):
        run(repo, "update-vehicles")


def test_a_job_that_failed_whole_has_no_rows_and_exits_1(repo):
    fail_in_tenant(repo, submit(repo, "payments").remote_id)
    advance(repo, 3600)
    with pytest.raises(ReconcilerError, match=r"Failed as a whole \(.*\): no row was processed"):
        run(repo, "payments")
    proc = cli(repo, "errors", "payments")
    assert proc.returncode == 1 and "Failed as a whole" in proc.stderr


def test_a_spec_without_a_job(fresh):  # an unknown name: tests/test_unknown_name.py
    with pytest.raises(ReconcilerError, match="payments has no submitted job yet"):
        run(fresh, "payments")
    assert not (fresh.root / "state").exists()


def test_reads_with_an_archived_result_never_write(repo, tmp_path):
    before = state_files(repo)
    run(repo, "payments", failed_rows=str(tmp_path / "x.csv"))
    run(repo, "update-vehicles", as_json=True)
    assert state_files(repo) == before


def test_custom_object_row_counts_come_from_the_archived_errors(repo):
    with read_ledger(repo) as ledger:
        job = ledger.jobs("update-vehicles")[-1]
    assert job.result_path and job.remote_status == "completed"
    assert (job.processed, job.failed, job.succeeded) == (job.total, 2, job.total - 2)
