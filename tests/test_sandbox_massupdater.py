"""Mass Updater: upload rules, lifecycle on the sandbox clock, per-row processing, stop, response files."""

from __future__ import annotations

import hashlib
import re

import pytest

from test_sandbox_helpers import FX_CSV, new_sandbox, read_zipped_csv, upload_bulk, zipped

GET_FIELDS = {
    "success", "actionType", "status", "uploadedBy", "uploadedOn", "startedOn", "endedOn", "inputSize",
    "outputSize", "totalCount", "processedCount", "successCount", "errorCount", "outputType", "outputURL",
}
STAMP = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")


@pytest.fixture
def sandbox():
    return new_sandbox(pending_seconds=2.0, rows_per_second=10.0)


def submit(client, action_type="ImportFXRate", data=FX_CSV, **params) -> str:
    response = upload_bulk(client, action_type, data, **params)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True and re.fullmatch(r"[0-9a-f]{32}", body["bulkKey"])
    return body["bulkKey"]


def status(client, key) -> dict:
    response = client.get(f"/v1/bulk/{key}")
    assert response.status_code == 200, response.text
    return response.json()


def output_rows(client, key) -> list[dict]:
    body = status(client, key)
    assert body["outputURL"]
    response = client.get(body["outputURL"])
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/zip;charset=UTF-8"
    assert len(response.content) == body["outputSize"]
    return read_zipped_csv(response.content)


def test_lifecycle_pending_processing_completed_with_live_string_counts(sandbox):
    app, clock, client = sandbox
    key = submit(client)
    pending = status(client, key)
    assert set(pending) == GET_FIELDS
    assert pending["status"] == "Pending" and pending["actionType"] == "ImportFXRate"
    assert [pending[k] for k in ("totalCount", "processedCount", "successCount", "errorCount")] == [None] * 4
    assert pending["startedOn"] is None and pending["endedOn"] is None and pending["outputURL"] is None
    assert STAMP.match(pending["uploadedOn"]) and "@" in pending["uploadedBy"]
    assert pending["inputSize"] == len(FX_CSV) and pending["outputSize"] == 0
    assert pending["outputType"] == "(url:.csv.zip)"

    clock.advance(2.0)
    started = status(client, key)
    assert started["status"] == "Processing" and STAMP.match(started["startedOn"])
    assert (started["totalCount"], started["processedCount"]) == ("3", "0")

    clock.advance(0.15)  # 10 rows per second: one row done
    middle = status(client, key)
    assert middle["status"] == "Processing"
    assert (middle["processedCount"], middle["successCount"], middle["errorCount"]) == ("1", "1", "0")
    assert middle["outputURL"] is None

    clock.advance(1.0)
    done = status(client, key)
    assert done["status"] == "Completed" and STAMP.match(done["endedOn"])
    assert (done["totalCount"], done["processedCount"], done["successCount"], done["errorCount"]) == ("3", "3", "3", "0")
    assert re.fullmatch(r"http://sandbox\.local/v1/files/[0-9a-f]{32}", done["outputURL"])
    assert done["outputSize"] > 0


def test_response_file_repeats_input_columns_and_adds_success_and_error(sandbox):
    app, clock, client = sandbox
    data = (
        "Group ID,Provider Exchange Rate Date,Currency (From),Currency (To),Exchange Rate,#Comment\n"
        "g1,2024-01-31,USD,EUR,\"100,000.50\",bad amount\n"
        "g1,2024-01-31,USD,EUR,0.9,skipped because g1 failed\n"
        ",2024-01-31,USD,EUR,($100),formatted\n"
        "g2,2024-01-31,USD,EUR,0.9,fine\n"
        "g2,2024-31-01,USD,EUR,0.9,bad date\n"
        ",2024-01-31,usd,EUR,0.9,lower-case currency\n"
    ).encode()
    key = submit(client, data=data)
    clock.advance(60)
    rows = output_rows(client, key)
    assert list(rows[0]) == ["Group ID", "Provider Exchange Rate Date", "Currency (From)", "Currency (To)",
                             "Exchange Rate", "#Comment", "Success", "Error Message"]
    assert [row["Success"] for row in rows] == ["N", "N", "N", "Y", "N", "N"]
    assert "plain decimal" in rows[0]["Error Message"]
    assert rows[1]["Error Message"] == "A previous row with the same Group ID failed"
    assert "plain decimal" in rows[2]["Error Message"]
    assert rows[3]["Error Message"] == "" and rows[3]["#Comment"] == "fine"
    assert "YYYY-MM-DD" in rows[4]["Error Message"]
    assert "3-letter currency" in rows[5]["Error Message"]
    body = status(client, key)
    assert (body["successCount"], body["errorCount"]) == ("1", "5")


@pytest.mark.parametrize("action_type, header, row, success, fragment", [
    ("DeleteRevenueSchedule", "Revenue Schedule Number", "RS-00000256", "Y", ""),
    ("DeleteRevenueSchedule", "Revenue Schedule Number,#Why", ",blank", "N", "Revenue Schedule Number is required"),
    ("DeleteRevenueSchedule", "Revenue Schedule Number", "R" * 51, "N", "at most 50"),
    ("UpdateRevenueSchedule", "Revenue Schedule Number,Revenue Schedule Notes", "RS-1,new notes", "Y", ""),
    ("UpdateRevenueSchedule", "Revenue Schedule Number,Revenue Schedule Reference ID", "RS-1," + "r" * 61, "N",
     "at most 60"),
    ("UpdateAccountingCode", "Object Key,Object Type,Deferred Revenue Accounting Code", "8a8aa1,Invoice Item,DR",
     "Y", ""),
    ("UpdateAccountingCode", "Object Key,Object Type", "8a8aa1,Widget", "N", "Object Type must be one of"),
    ("UpdateAccountingCode", "Object Key,Object Type", "k" * 33 + ",Payment", "N", "at most 32"),
    ("CreateRevenueSchedule", "Subscription Charge Key,Amount", "C-00000149,100.00", "Y", ""),
    ("CreateRevenueSchedule", "Linked Transaction Key,Linked Transaction Type", "INV-1,Invoice Item", "Y", ""),
    ("CreateRevenueSchedule", "Subscription Charge Key,Linked Transaction Key,#Note", ",,no key", "N", "is required"),
    ("CreateRevenueSchedule", "Linked Transaction Key,Linked Transaction Type", "INV-1,Order", "N", "Linked Transaction Type"),
    ("MPU", "Billing Account ID,Payment Amount,Currency,Payment Date,Payment Method ID",
     "A-1,10.50,USD,2024-02-01,PM-1", "Y", ""),
    ("MPU", "Billing Account ID,Payment Amount,Currency,Payment Date,Payment Method ID",
     "A-1,\"1,000\",USD,2024-02-01,PM-1", "N", "plain decimal"),
    ("MPU", "Billing Account ID,Payment Amount,Currency,Payment Date,Payment Method ID",
     "A-1,10,USD,02/01/2024,PM-1", "N", "YYYY-MM-DD"),
    ("MPU", "Payment Invoice,Payment Amount,Currency,Payment Date,Payment Method ID",
     "INV-1:10,10,USD,2024-02-01,PM-1", "N", "Billing Account ID is blank"),
    ("MPU", "Billing Account ID,Payment Invoice,Payment Amount,Currency,Payment Date,Payment Method ID",
     "A-1,INV-1:8|INV-2:5,10,USD,2024-02-01,PM-1", "N", "exceed"),
    ("MPU", "Billing Account ID,Payment Amount,Currency,Payment Date,Payment Method ID,Payment Type",
     "A-1,10,USD,2024-02-01,PM-1,Cheque", "N", "External or Electronic"),
    ("ImportFXRate", "Provider Exchange Rate Date,Currency (From),Currency (To),Exchange Rate", "2024-02-30,USD,EUR,1",
     "N", "YYYY-MM-DD"),
    ("ImportFXRate", "Provider Exchange Rate Date,Currency (From),Currency (To),Exchange Rate", "2024-02-01,USD,EUR,0",
     "N", "greater than 0"),
])
def test_row_rules_per_action_type(sandbox, action_type, header, row, success, fragment):
    app, clock, client = sandbox
    key = submit(client, action_type, f"{header}\n{row}\n".encode())
    clock.advance(60)
    [result] = output_rows(client, key)
    assert result["Success"] == success
    assert fragment in result["Error Message"] if fragment else result["Error Message"] == ""


def test_action_specific_response_columns(sandbox):
    app, clock, client = sandbox
    rs = submit(client, "CreateRevenueSchedule", b"Subscription Charge Key\nC-1\nC-2\n\n")
    mpu = submit(client, "MPU", b"Billing Account ID,Payment Amount,Currency,Payment Date,Payment Method ID,Payment Type\n"
                 b"A-1,10,USD,2024-02-01,PM-1,Electronic\nA-1,-3,USD,2024-02-01,PM-1,External\n")
    clock.advance(60)
    rs_rows = output_rows(client, rs)
    assert list(rs_rows[0])[-3:] == ["Success", "Revenue Schedule Number", "Error Message"]
    numbers = [row["Revenue Schedule Number"] for row in rs_rows]
    assert all(re.fullmatch(r"RS-\d{8}", n) for n in numbers) and len(set(numbers)) == 2
    mpu_rows = output_rows(client, mpu)
    assert list(mpu_rows[0])[-6:] == ["Success", "Error Message", "Payment ID", "Gateway Response Code",
                                      "Gateway Response Message", "Payment Status"]
    assert mpu_rows[0]["Success"] == "Y" and re.fullmatch(r"[0-9a-f]{32}", mpu_rows[0]["Payment ID"])
    assert mpu_rows[0]["Payment Status"] == "Processed" and mpu_rows[0]["Gateway Response Code"]
    assert mpu_rows[1]["Success"] == "N" and mpu_rows[1]["Payment ID"] == ""


def test_zip_uploads_are_sniffed_by_content_not_name(sandbox):
    app, clock, client = sandbox
    key = submit(client, data=zipped({"rates.csv": FX_CSV}))
    clock.advance(60)
    body = status(client, key)
    assert body["status"] == "Completed" and body["successCount"] == "3"


def big_zip_bomb() -> bytes:
    return zipped({"bomb.csv": b"Provider Exchange Rate Date,Currency (From),Currency (To),Exchange Rate\n"
                   + b"2024-01-01,USD,EUR,1\n" * 900_000})


@pytest.mark.parametrize("data, fragment", [
    (b"Currency (From),Currency (To)\nUSD,EUR\n", "Missing required column"),
    ("Provider Exchange Rate Date,Currency (From),Currency (To),Exchange Rate\n2024-01-01,USD,EUR,1\n".encode("utf-16"),
     "UTF-8"),
    (b"Provider Exchange Rate Date,Currency (From),Currency (To),Exchange Rate\n2024-01-01,\xff\xfe,EUR,1\n", "UTF-8"),
    (zipped({"a.csv": FX_CSV, "b.csv": FX_CSV}), "exactly one .csv"),
    (zipped({"rates.txt": FX_CSV}), "exactly one .csv"),
    (b"PK\x03\x04 this is not really a zip", "cannot be read"),
    (None, "inflates past"),
    (b"Exchange Rate,Exchange Rate,Provider Exchange Rate Date,Currency (From),Currency (To)\n1,1,2024-01-01,USD,EUR\n",
     "Duplicate column"),
])
def test_file_level_problems_are_refused_at_upload_without_a_bulk_key(sandbox, data, fragment):
    app, clock, client = sandbox
    response = upload_bulk(client, "ImportFXRate", big_zip_bomb() if data is None else data)
    body = response.json()
    assert response.status_code == 400 and body["success"] is False and "bulkKey" not in body, body
    [reason] = body["reasons"]
    assert fragment in reason["message"] and reason["code"] in (50000020, 50000022)
    assert client.get("/_sandbox/state").json()["mass_actions"] == []


def test_create_revenue_schedule_needs_one_of_its_key_columns(sandbox):
    app, clock, client = sandbox
    response = upload_bulk(client, "CreateRevenueSchedule", b"Linked Transaction Type,Amount\nInvoice Item,10\n")
    assert response.status_code == 400
    assert "Subscription Charge Key or Linked Transaction Key" in response.json()["reasons"][0]["message"]


def test_a_job_made_to_fail_ends_failed_without_output(sandbox):
    app, clock, client = sandbox
    key = submit(client)
    failed = client.post("/_sandbox/fail", json={"bulkKey": key, "message": "Zuora Finance is not enabled"})
    assert failed.status_code == 200
    clock.advance(60)
    body = status(client, key)
    assert body["status"] == "Failed"
    assert body["outputURL"] is None and body["outputSize"] == 0
    assert body["processedCount"] == "0" and body["successCount"] == "0" and body["errorCount"] == "0"
    assert body["reasons"][0]["message"] == "Zuora Finance is not enabled"
    assert client.post("/_sandbox/fail", json={"bulkKey": key}).status_code == 400  # no longer Pending
    assert client.post("/_sandbox/fail", json={"bulkKey": "0" * 32}).status_code == 404


def test_checksum_is_verified(sandbox):
    app, clock, client = sandbox
    assert submit(client, checksum=hashlib.md5(FX_CSV).hexdigest().upper())
    wrong = upload_bulk(client, "ImportFXRate", FX_CSV, checksum="0" * 32)
    assert wrong.status_code == 400 and "does not match" in wrong.json()["reasons"][0]["message"]
    malformed = upload_bulk(client, "ImportFXRate", FX_CSV, checksum="abc")
    assert malformed.status_code == 400 and "32-character" in malformed.json()["reasons"][0]["message"]


def test_files_over_4_mb_are_refused(sandbox):
    app, clock, client = sandbox
    response = upload_bulk(client, "ImportFXRate", b"x" * (4 * 1024 * 1024 + 1))
    assert response.status_code == 413
    assert response.json()["success"] is False and "4 MB" in response.json()["reasons"][0]["message"]


def test_stop_while_processing_keeps_processed_rows_and_blanks_the_rest(sandbox):
    app, clock, client = sandbox
    data = b"Revenue Schedule Number\n" + b"".join(b"RS-%d\n" % i for i in range(10))
    key = submit(client, "DeleteRevenueSchedule", data)
    clock.advance(2.35)  # three rows done at 10 rows per second
    stop = client.put(f"/v1/bulk/{key}/stop")
    assert stop.status_code == 200 and stop.json() == {"success": True}
    stopping = status(client, key)
    assert stopping["status"] == "Stopping" and stopping["outputURL"] is None
    clock.advance(5)
    stopped = status(client, key)
    assert stopped["status"] == "Stopped" and stopped["processedCount"] == "3" and stopped["totalCount"] == "10"
    rows = output_rows(client, key)
    assert [row["Success"] for row in rows] == ["Y"] * 3 + [""] * 7
    assert all(row["Error Message"] == "" for row in rows)


def test_stop_while_pending_makes_no_response_file(sandbox):
    app, clock, client = sandbox
    key = submit(client)
    assert client.put(f"/v1/bulk/{key}/stop").status_code == 200
    clock.advance(60)
    body = status(client, key)
    assert body["status"] == "Stopped" and body["outputURL"] is None and body["processedCount"] == "0"
    assert body["startedOn"] is None


@pytest.mark.parametrize("advance, expected", [(60, "Completed"), (None, "Stopping")])
def test_stop_is_refused_unless_pending_or_processing(sandbox, advance, expected):
    app, clock, client = sandbox
    key = submit(client)
    if advance:
        clock.advance(advance)
    else:
        client.put(f"/v1/bulk/{key}/stop")
    response = client.put(f"/v1/bulk/{key}/stop")
    assert response.status_code == 400
    body = response.json()
    assert body["success"] is False and body["reasons"][0]["code"] == 50000030
    assert expected in body["reasons"][0]["message"]


@pytest.mark.parametrize("method, path", [
    ("GET", "/v1/bulk/0123456789abcdef0123456789abcdef"),
    ("PUT", "/v1/bulk/0123456789abcdef0123456789abcdef/stop"),
    ("GET", "/v1/files/0123456789abcdef0123456789abcdef"),
])
def test_unknown_keys_and_files_are_404_in_v1_shape(sandbox, method, path):
    app, clock, client = sandbox
    response = client.request(method, path)
    assert response.status_code == 404
    body = response.json()
    assert body["success"] is False and re.fullmatch(r"[0-9A-F]{16}", body["processId"])
    assert body["reasons"][0]["code"] == 50000040


def test_output_file_is_not_served_before_completion(sandbox):
    app, clock, client = sandbox
    key = submit(client)
    clock.advance(60)
    url = status(client, key)["outputURL"]
    app2, clock2, client2 = new_sandbox()
    other_key = submit(client2)
    assert client2.get(f"/v1/bulk/{other_key}").json()["outputURL"] is None
    assert client.get(url).status_code == 200


def test_identical_files_get_identical_row_outcomes(sandbox):
    app, clock, client = sandbox
    data = b"Object Key,Object Type\nk1,Invoice Item\nk2,Nope\nk3,Refund\n"
    first, second = submit(client, "UpdateAccountingCode", data), submit(client, "UpdateAccountingCode", data)
    clock.advance(60)
    strip = lambda rows: [(r["Success"], r["Error Message"]) for r in rows]  # noqa: E731
    outcomes = strip(output_rows(client, first))
    assert [flag for flag, _ in outcomes] == ["Y", "N", "Y"] and outcomes[1][1]
    assert strip(output_rows(client, second)) == outcomes
