"""Content checks of Mass Updater and custom object files, straight through csvcheck."""

from __future__ import annotations

import hashlib
import io
import zipfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.spec import datafiles as csvcheck

from reconciler.spec import columns as csvrules
from reconciler.spec.datafiles import check_custom_object_file, check_mass_action_file
from reconciler.actions import MASS_ACTIONS
from reconciler.model import Problem

UUID = "6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b"
VALID = {
    "ImportFXRate": "Group ID,Rate Set Name,Provider Exchange Rate Date,Currency (From),Currency (To),Exchange Rate\n"
                    "g1,Default,2026-11-01,USD,EUR,0.92\ng1,Default,2024-02-29,usd,JPY,+151.5\n,,2026-11-02,EUR,GBP,.85\n",
    "UpdateAccountingCode": "Object Key,Object Type,Deferred Revenue Accounting Code\nINV-001,Invoice Item,2000\n"
                            "8a8a8a8a8a8a8a8a8a8a8a8a8a8a8a8a,Credit Memo Item,\n",
    "CreateRevenueSchedule": "Subscription Charge Key,Linked Transaction Type,Linked Transaction Key\nC-00000149,,\n"
                             ",Invoice Item,INV-1\n",
    "UpdateRevenueSchedule": "Revenue Schedule Number,Revenue Schedule Notes,Revenue Schedule:Region__c\nRS-00000001,moved,EMEA\n",
    "DeleteRevenueSchedule": "Revenue Schedule Number\nRS-00000256\n",
    "MPU": "Billing Account ID,Payment Invoice,Payment Amount,Currency,Payment Date,Payment Method ID,Payment Type\n"
           "A00000001,INV001:10.50|INV002:5,15.50,USD,2026-11-01,PM1,Electronic\n"
           ",,20,8a8a8a8a8a8a8a8a8a8a8a8a8a8a8a8a,2026-11-02,PM2,\n",
}


def write(tmp_path, content, name="file.csv"):
    path = tmp_path / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def zipped(members: dict) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, text in members.items():
            archive.writestr(name, text)
    return buffer.getvalue()


def rendered(problems: list[Problem]) -> list[str]:
    return [p.render() for p in problems]


@pytest.mark.parametrize("action_type", list(VALID))
def test_valid_files_for_every_action_type(tmp_path, action_type):
    path = write(tmp_path, VALID[action_type])
    digest = hashlib.sha256()
    assert check_mass_action_file(path, action_type, "f.csv", digest=digest) == []
    assert digest.hexdigest() == hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_zip_holding_one_csv_is_hashed_as_the_zip(tmp_path):
    path = write(tmp_path, zipped({"rates/": "", "rates/fx.csv": VALID["ImportFXRate"]}), "fx.zip")
    digest = hashlib.sha256()
    assert check_mass_action_file(path, "ImportFXRate", "fx.zip", digest=digest) == []
    assert digest.hexdigest() == hashlib.sha256(path.read_bytes()).hexdigest()


def test_bom_crlf_quoted_newlines_and_informational_columns(tmp_path):
    text = ("\ufeff#Note,Provider Exchange Rate Date,Currency (From),Currency (To),Exchange Rate,#Note,#\r\n"
            '"multi\r\nline, with comma",2026-11-01,USD,EUR,0.92,anything,1e5\r\n'
            "\r\n"
            "x,2026-11-02,USD,EUR,0.93,,\r\n")
    assert check_mass_action_file(write(tmp_path, text), "ImportFXRate", "f.csv") == []


def test_row_numbers_count_the_header_and_blank_lines(tmp_path):
    text = "Revenue Schedule Number\nRS-1\n\n" + "R" * 51 + "\n"
    assert rendered(check_mass_action_file(write(tmp_path, text), "DeleteRevenueSchedule", "d.csv")) == [
        "d.csv: row 4: Revenue Schedule Number: is 51 characters long; at most 50 are allowed"]


def test_row_problems_are_capped_with_a_count_of_the_rest(tmp_path):
    header = "Provider Exchange Rate Date,Currency (From),Currency (To),Exchange Rate\n"
    rows = "".join(f"2026-11-01,USD,EUR,{'1' if n % 2 else 'x'}\n" for n in range(60))
    problems = check_mass_action_file(write(tmp_path, header + rows + "2026-11-01,USD\n"), "ImportFXRate", "f.csv")
    assert len(problems) == 21
    assert [p.row for p in problems[:20]] == list(range(2, 42, 2))
    assert problems[-1] == Problem("f.csv", "and 11 more row problems")


def test_field_count_and_value_problems_come_in_row_order(tmp_path):
    text = "Revenue Schedule Number,Group ID\n,g\nRS-2\nRS-3," + "g" * 256 + "\n"
    assert rendered(check_mass_action_file(write(tmp_path, text), "UpdateRevenueSchedule", "u.csv")) == [
        "u.csv: row 2: Revenue Schedule Number: required value is empty",
        "u.csv: row 3: has 1 fields, the header has 2",
        "u.csv: row 4: Group ID: is 256 characters long; at most 255 are allowed",
    ]


@pytest.mark.parametrize("value", ["100,000.50", "($100)", "1e5", "-1", "0", "1.2.3", "$5", " 1", "NaN", "１"])
def test_rates_must_be_positive_plain_decimals(tmp_path, value):
    text = f'Provider Exchange Rate Date,Currency (From),Currency (To),Exchange Rate\n2026-11-01,USD,EUR,"{value}"\n'
    [problem] = check_mass_action_file(write(tmp_path, text), "ImportFXRate", "f.csv")
    assert problem.path == "Exchange Rate" and "positive plain decimal" in problem.message


@pytest.mark.parametrize("value", ["2026-1-01", "2026-02-29", "01/11/2026", "20261101", "2026-11-01T00:00", "２０２６-11-01"])
def test_dates_must_be_real_and_written_yyyy_mm_dd(tmp_path, value):
    text = f"Payment Amount,Currency,Payment Date,Payment Method ID\n1,USD,{value},PM\n"
    [problem] = check_mass_action_file(write(tmp_path, text), "MPU", "p.csv")
    assert problem.path == "Payment Date" and "YYYY-MM-DD" in problem.message


def test_an_invoice_list_needs_a_billing_account(tmp_path):
    text = "Payment Amount,Currency,Payment Date,Payment Method ID,Payment Invoice\n1,USD,2026-01-01,PM,INV1:1\n"
    assert rendered(check_mass_action_file(write(tmp_path, text), "MPU", "p.csv")) == [
        "p.csv: row 2: Payment Invoice: must be empty when Billing Account ID is empty (an unassigned payment)"]


def test_a_revenue_schedule_row_needs_one_of_its_keys(tmp_path):
    text = "Subscription Charge Key,Linked Transaction Key\n,\nC-1,\n"
    assert rendered(check_mass_action_file(write(tmp_path, text), "CreateRevenueSchedule", "c.csv")) == [
        "c.csv: row 2: needs a Subscription Charge Key or a Linked Transaction Key"]


def test_unreadable_content(tmp_path):
    header = b"Revenue Schedule Number\n"
    assert rendered(check_mass_action_file(write(tmp_path, header + b"RS-1\nRS-\x002\n"), "DeleteRevenueSchedule", "d.csv")) == [
        "d.csv: line 3 contains NUL bytes: a binary file, not a CSV"]
    assert rendered(check_mass_action_file(write(tmp_path, header + b"RS-1\n\xc3("), "DeleteRevenueSchedule", "d.csv")) == [
        "d.csv: not UTF-8 (invalid byte 0xc3 on line 3); save the file as UTF-8"]
    assert rendered(check_mass_action_file(tmp_path / "missing.csv", "MPU", "m.csv")) == [
        "m.csv: cannot read the file: No such file or directory"]
    assert rendered(check_mass_action_file(write(tmp_path, header), "Nope", "d.csv")) == ["d.csv: unknown action type 'Nope'"]


def test_zip_problems(tmp_path, monkeypatch):
    def check(content, name="f.zip"):
        return rendered(check_mass_action_file(write(tmp_path, content, name), "DeleteRevenueSchedule", name))

    assert check(zipped({"a.txt": "x"})) == [
        "f.zip: a zip must hold exactly one .csv file (it holds a.txt); an Excel workbook must be saved as CSV first"]
    assert check(zipped({})) == ["f.zip: is named .zip but is not a zip archive"]  # an empty zip has no local header
    assert check(b"PK\x03\x04" + b"garbage" * 10)[0].startswith("f.zip: not a readable zip archive")
    assert check(b"Revenue Schedule Number\nRS-1\n") == ["f.zip: is named .zip but is not a zip archive"]
    # A zip bomb is stopped at the inflation cap, however small the zip is.
    monkeypatch.setattr(csvcheck, "MAX_INFLATED_BYTES", 64 * 1024)
    assert check(zipped({"big.csv": "Revenue Schedule Number\n" + "RS-1\n" * 20_000})) == [
        "f.zip: unpacks to more than 65,536 bytes"]


def test_size_limits_are_checked_before_reading(tmp_path):
    path = tmp_path / "big.csv"
    with open(path, "wb") as handle:
        handle.truncate(csvcheck.MASS_ACTION_MAX_BYTES + 1)
    assert rendered(check_mass_action_file(path, "MPU", "big.csv")) == [
        "big.csv: file is 4,000,001 bytes; Mass Updater files may be at most 4 MB (4,000,000 bytes)"]
    with open(path, "wb") as handle:
        handle.truncate(csvcheck.CUSTOM_OBJECT_MAX_BYTES + 1)
    assert rendered(check_custom_object_file(path, "create", "big.csv")) == [
        "big.csv: file is 15,000,001 bytes; custom object files may be at most 15 MB (15,000,000 bytes)"]


def test_custom_object_files(tmp_path):
    def check(text, operation="update"):
        return rendered(check_custom_object_file(write(tmp_path, text), operation, "o.csv"))

    assert check(f"Id,make__c\n{UUID},Ford\n") == []
    assert check("make__c,model__c\nFord,T\n", "create") == []
    assert check("make__c\nFord\n") == ["o.csv: row 1: Id: an update file needs an Id column holding each record's id"]
    assert check(f"ID,make__c\n{UUID},Ford\n", "create") == ["o.csv: row 1: ID: not allowed in a create file: Zuora assigns record ids"]
    assert check(f"id,updatedbyid,Make__c,make__c\n{UUID},u,F,F\n") == [
        "o.csv: row 1: make__c: duplicate column (also column 3)",
        "o.csv: row 1: updatedbyid: is a system field; Zuora sets it, so it cannot be in the file",
    ]
    assert check(f"Id\n{UUID}\n{UUID.upper()}\n{UUID[:-1]}\n") == [
        f"o.csv: row 4: Id: must be a record id, a 36-character UUID (got '{UUID[:-1]}')"]
    assert check(zipped({"o.csv": "a\n1\n"})) == ["o.csv: is a zip archive; custom object jobs take a plain UTF-8 CSV file"]
    assert check("a\n1\n", "delete") == ["o.csv: a custom object delete job takes no file"]


def test_a_large_file_is_streamed_across_block_boundaries(tmp_path):
    # Multibyte characters and records straddle the 1 MB read blocks; the digest still covers every byte.
    rows = "".join(f"{UUID},Škoda €{n},\"line\nbreak\"\n" for n in range(60_000))
    path = write(tmp_path, "Id,name__c,notes__c\n" + rows)
    assert path.stat().st_size > 3 * csvcheck.BLOCK
    digest = hashlib.sha256()
    assert check_custom_object_file(path, "update", "o.csv", digest=digest) == []
    assert digest.hexdigest() == hashlib.sha256(path.read_bytes()).hexdigest()
    bad = path.read_bytes().replace(UUID.encode(), b"not-a-uuid", 1)
    assert rendered(check_custom_object_file(write(tmp_path, bad), "update", "o.csv")) == [
        "o.csv: row 2: Id: must be a record id, a 36-character UUID (got 'not-a-uuid')"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.binary(max_size=400) | st.text(max_size=200).map(str.encode),
       action_type=st.sampled_from(list(MASS_ACTIONS)), operation=st.sampled_from(["create", "update"]),
       as_zip=st.booleans())
def test_random_bytes_give_problems_never_exceptions(tmp_path, content, action_type, operation, as_zip):
    path = tmp_path / ("r.zip" if as_zip else "r.csv")
    path.write_bytes(zipped({"r.csv": content}) if as_zip else content)
    for problems in (check_mass_action_file(path, action_type, "r", digest=hashlib.sha256()),
                     check_custom_object_file(path, operation, "r", digest=hashlib.sha256())):
        assert all(isinstance(p, Problem) and p.file == "r" for p in problems)


SAMPLES = ["", " ", "2026-11-01", "2026-02-30", "USD", "usd", "EU", "1.5", "+2", "0.0", "-3", "1e5", "100,000.50",
           "Invoice Item", "Payment", "External", "INV1:10|INV2:5", "INV1:x", "a" * 40, "8a8a8a8a8a8a8a8a8a8a8a8a8a8a8a8a",
           "2026-11-01\n2026-11-02", "USD\nEUR", "1\n2", "INV1\nINV2:5", "é", "|", ":"]


@settings(max_examples=300, deadline=None)
@given(rule=st.sampled_from([rule for action in MASS_ACTIONS.values() for rule in action.columns.values()]),
       required=st.booleans(),
       values=st.lists(st.sampled_from(SAMPLES) | st.text(alphabet=st.characters(blacklist_characters="\0"), max_size=8),
                       min_size=1, max_size=6))
def test_the_column_fast_path_never_hides_a_bad_value(rule, required, values):
    if csvrules._column_valid(values, rule, required):
        for value in values:
            assert (not value.strip() and not required) or csvrules._valid(value, rule), value
