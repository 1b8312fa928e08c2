"""Custom Object bulk jobs: lifecycles, record effects and Ids, errors, cancel, upload rules, limits, listing."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest

from test_sandbox_helpers import FakeClock, new_job, new_sandbox, upload_csv

JOB_FIELDS = {"Id", "CreatedById", "CreatedDate", "UpdatedById", "UpdatedDate", "namespace", "object", "operation",
              "status", "recordsProcessed", "processingTime"}
ISO = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
PEOPLE = "name__c,age__c\nann,30\nbob,40\ncid,5\n"


@pytest.fixture
def sandbox():
    return new_sandbox(pending_seconds=2.0, rows_per_second=10.0)


def job(client, job_id) -> dict:
    response = client.get(f"/objects/jobs/{job_id}")
    assert response.status_code == 200, response.text
    return response.json()


def records(client, name="passenger") -> list[dict]:
    return client.get("/_sandbox/records", params={"object": name}).json()["records"]


def load(client, clock, text=PEOPLE, name="passenger") -> dict:
    created = new_job(client, "create", name)
    assert upload_csv(client, created["Id"], text).status_code == 200
    clock.advance(600)
    return job(client, created["Id"])


def test_create_job_lifecycle_and_record_effects(sandbox):
    app, clock, client = sandbox
    created = new_job(client, "create")
    assert set(created) == JOB_FIELDS
    uuid.UUID(created["Id"])
    assert created["status"] == "pending" and created["recordsProcessed"] == 0 and created["processingTime"] == 0
    assert ISO.match(created["CreatedDate"]) and ISO.match(created["UpdatedDate"])
    uploaded = upload_csv(client, created["Id"], PEOPLE)
    assert uploaded.status_code == 200 and uploaded.json()["status"] == "in_progress"
    clock.advance(0.15)
    middle = job(client, created["Id"])
    assert middle["status"] == "in_progress" and middle["recordsProcessed"] == 1
    assert len(records(client)) == 1
    clock.advance(1)
    done = job(client, created["Id"])
    assert done["status"] == "completed" and done["recordsProcessed"] == 3
    assert done["processingTime"] == 300
    stored = records(client)
    assert [(r["name__c"], r["age__c"]) for r in stored] == [("ann", "30"), ("bob", "40"), ("cid", "5")]
    assert all(uuid.UUID(r["Id"]) and r["type"] == "passenger" for r in stored)
    assert client.get("/_sandbox/state").json()["records"] == {"passenger": 3}


def test_record_ids_are_deterministic_per_tenant_object_and_creation(sandbox):
    app, clock, client = sandbox
    # Another tenant, another time: the Ids depend on nothing but the order of creation.
    other_app, other_clock, other_client = new_sandbox(clock=FakeClock(1_800_000_000.0), pending_seconds=2.0,
                                                       rows_per_second=10.0)
    for each_client, each_clock in ((client, clock), (other_client, other_clock)):
        load(each_client, each_clock)
        load(each_client, each_clock, "name__c\ndan\n", name="driver")
    ids = [r["Id"] for r in records(client)]
    assert ids == [r["Id"] for r in records(other_client)] and len(set(ids)) == 3
    assert ids[0] == "63a1db54-7d56-5662-af8e-f83f5a2a390a"  # pinned: example update files name these
    assert ids[0] == str(uuid.uuid5(uuid.UUID("b1acdfe7-c608-4484-b1a8-d6916a60d597"), "default/passenger/1"))
    [driver] = records(client, "driver")
    assert driver["Id"] == [r["Id"] for r in records(other_client, "driver")][0] and driver["Id"] not in ids


def test_record_numbers_count_deleted_records_and_restart_after_reset(sandbox):
    app, clock, client = sandbox
    load(client, clock)
    first = [r["Id"] for r in records(client)]
    new_job(client, "delete")
    clock.advance(600)
    assert records(client) == []
    load(client, clock)
    again = [r["Id"] for r in records(client)]
    assert not set(again) & set(first)  # a deleted record's Id is never handed out again
    assert client.post("/_sandbox/reset").status_code == 200
    load(client, clock)
    assert [r["Id"] for r in records(client)] == first


def test_update_replaces_fields_and_resets_absent_columns(sandbox):
    app, clock, client = sandbox
    load(client, clock)
    ann = next(r for r in records(client) if r["name__c"] == "ann")
    missing = str(uuid.uuid4())
    updated = new_job(client, "update")
    text = f"id,name__c\n{ann['Id']},anne\n{missing},ghost\n,nobody\n123,bad\n"
    assert upload_csv(client, updated["Id"], text).status_code == 200
    clock.advance(600)
    assert job(client, updated["Id"])["status"] == "completed"
    after = next(r for r in records(client) if r["Id"] == ann["Id"])
    assert after["name__c"] == "anne" and "age__c" not in after  # absent column reset to its default
    errors = client.get(f"/objects/jobs/{updated['Id']}/errors").json()["errors"]
    assert [(e["row"], e["code"]) for e in errors] == [(3, 71012540), (4, 71012522), (5, 71012520)]
    assert errors[2]["message"] == 'input string "123" is not a valid UUID'
    assert errors[0]["record"]["name__c"] == "ghost" and errors[0]["record"]["type"] == "passenger"


@pytest.mark.parametrize("operation, header, code", [
    ("create", "name__c,CreatedDate", 71013721),
    ("create", "name__c,updatedbyid", 71013721),
    ("create", "Id,name__c", 71013721),  # Id is allowed only for update (reference B.3)
    ("create", "name__c,id", 71013721),
    ("update", "name__c,age__c", 71013722),
    ("create", "name__c,name__c", 71013720),
])
def test_file_level_problems_fail_the_job(sandbox, operation, header, code):
    app, clock, client = sandbox
    created = new_job(client, operation)
    uploaded = upload_csv(client, created["Id"], f"{header}\n{uuid.uuid4()},y\n")
    assert uploaded.status_code == 200 and uploaded.json()["status"] == "in_progress"
    clock.advance(5)
    failed = job(client, created["Id"])
    assert failed["status"] == "failed" and failed["error"]["code"] == code
    assert isinstance(failed["error"]["message"], str) and failed["recordsProcessed"] == 0
    assert records(client) == []
    assert client.get(f"/objects/jobs/{created['Id']}/errors").json() == {"errors": []}  # no row was read


@pytest.mark.parametrize("conditions, survivors", [
    ([{"field": "age__c", "operator": "GT", "value": 9}], {"cid"}),  # numeric: "30" > 9 although "30" < "9"
    ([{"field": "age__c", "operator": "LE", "value": "30"}], {"bob"}),
    ([{"field": "name__c", "operator": "EQ", "value": "bob"}], {"ann", "cid"}),
    ([{"field": "name__c", "operator": "GE", "value": "b"}, {"field": "age__c", "operator": "LT", "value": 35}],
     {"ann", "bob"}),
    ([{"field": "age__c", "operator": "EQ", "value": 99}], {"ann", "bob", "cid"}),
    (None, set()),
])
def test_delete_removes_what_the_filter_matches(sandbox, conditions, survivors):
    app, clock, client = sandbox
    load(client, clock)
    extra = {"filter": {"conditions": conditions}} if conditions else {}
    deleted = new_job(client, "delete", **extra)
    assert deleted["status"] == "accepted"
    clock.advance(2.0)
    # It starts after pending_seconds; with nothing to delete it completes at once.
    assert job(client, deleted["Id"])["status"] == ("completed" if len(survivors) == 3 else "in_progress")
    clock.advance(600)
    done = job(client, deleted["Id"])
    assert done["status"] == "completed" and done["recordsProcessed"] == 3 - len(survivors)
    assert {r["name__c"] for r in records(client)} == survivors


def test_delete_filter_on_created_date(sandbox):
    app, clock, client = sandbox
    load(client, clock)
    cutoff = job(client, new_job(client, "update")["Id"])["CreatedDate"]  # after the records were created
    deleted = new_job(client, "delete", filter={"conditions": [{"field": "CreatedDate", "operator": "LT", "value": cutoff}]})
    clock.advance(600)
    assert job(client, deleted["Id"])["recordsProcessed"] == 3 and records(client) == []


@pytest.mark.parametrize("operation, advance, allowed", [
    ("create", 0, True), ("delete", 0, True), ("delete", 2.5, False), ("delete", 600, False),
])
def test_cancel_only_accepted_or_pending(sandbox, operation, advance, allowed):
    app, clock, client = sandbox
    load(client, clock)
    created = new_job(client, operation)
    clock.advance(advance)
    response = client.patch(f"/objects/jobs/{created['Id']}/cancel")
    if allowed:
        assert response.status_code == 200 and response.json()["status"] == "cancelled"
        clock.advance(600)
        assert job(client, created["Id"])["status"] == "cancelled" and len(records(client)) == 3
    else:
        assert response.status_code == 400
        assert set(response.json()) == {"code", "message"} and response.json()["code"] == 71013430


def test_upload_rules(sandbox):
    app, clock, client = sandbox
    created = new_job(client, "create")
    path = f"/objects/jobs/{created['Id']}/files"
    no_type = client.post(path, content=b"name__c\nx\n", headers={"Content-Type": ""})
    assert no_type.status_code == 400 and no_type.json()["code"] == 71013722
    wrong_type = client.post(path, content=b"name__c\nx\n", headers={"Content-Type": "application/json"})
    assert wrong_type.status_code == 400 and wrong_type.json()["code"] == 71013720
    multipart = client.post(path, files={"file": ("a.csv", b"name__c\nx\n")})
    assert multipart.status_code == 400
    latin1 = client.post(path, content="name__c\ncafé\n".encode("latin-1"), headers={"Content-Type": "text/csv"})
    assert latin1.status_code == 400 and "UTF-8" in latin1.json()["message"]
    empty = client.post(path, content=b"", headers={"Content-Type": "text/csv"})
    assert empty.status_code == 400
    assert job(client, created["Id"])["status"] == "pending"  # refused uploads leave the job waiting
    bom = client.post(path, content="\ufeffname__c\ncafé\n".encode("utf-8"), headers={"Content-Type": "text/csv; charset=utf-8"})
    assert bom.status_code == 200
    again = upload_csv(client, created["Id"], "name__c\ny\n")
    assert again.status_code == 400 and again.json()["code"] == 71013630
    clock.advance(5)
    assert [r["name__c"] for r in records(client)] == ["café"]
    deleting = new_job(client, "delete")
    not_pending = upload_csv(client, deleting["Id"], "name__c\nx\n")
    assert not_pending.status_code == 400 and not_pending.json()["code"] == 71013430


def test_upload_over_15_mb_is_refused(sandbox):
    app, clock, client = sandbox
    created = new_job(client, "create")
    response = client.post(f"/objects/jobs/{created['Id']}/files", content=b"a" * (15 * 1024 * 1024 + 1),
                           headers={"Content-Type": "text/csv"})
    assert response.status_code == 413 and set(response.json()) == {"code", "message"}


def test_at_most_five_active_jobs(sandbox):
    app, clock, client = sandbox
    jobs = [new_job(client, "create") for _ in range(3)] + [new_job(client, "delete") for _ in range(2)]
    sixth = client.post("/objects/jobs", json={"namespace": "default", "object": "passenger", "operation": "create"})
    assert sixth.status_code == 400 and sixth.json()["code"] == 71013030
    client.patch(f"/objects/jobs/{jobs[0]['Id']}/cancel")
    assert new_job(client, "create")["status"] == "pending"
    clock.advance(600)  # the two deletes finish
    assert new_job(client, "create") and new_job(client, "create")
    assert client.post("/objects/jobs", json={"namespace": "default", "object": "passenger",
                                              "operation": "create"}).json()["code"] == 71013030


def test_list_is_newest_first_with_cursor_pages_and_status_filter(sandbox):
    app, clock, client = sandbox
    ids = []
    for _ in range(7):
        created = new_job(client, "create")
        client.patch(f"/objects/jobs/{created['Id']}/cancel")
        ids.append(created["Id"])
        if len(ids) % 2:
            clock.advance(1)  # some jobs share a CreatedDate: the order must still be stable
    pages, cursor = [], None
    while True:
        params = {"pageSize": 3, **({"cursor": cursor} if cursor else {})}
        page = client.get("/objects/jobs", params=params).json()
        assert page["count"] == len(page["jobs"])
        pages.append([j["Id"] for j in page["jobs"]])
        cursor = page["cursor"]
        if cursor is None:
            break
        assert cursor == page["jobs"][-1]["Id"]
    assert pages == [ids[::-1][0:3], ids[::-1][3:6], ids[::-1][6:]]
    first_page = client.get("/objects/jobs").json()
    assert first_page["count"] == 7 and first_page["cursor"] is None
    pending = new_job(client, "create")
    only_pending = client.get("/objects/jobs", params={"status": "pending"}).json()
    assert [j["Id"] for j in only_pending["jobs"]] == [pending["Id"]]


@pytest.mark.parametrize("params", [{"pageSize": "0"}, {"pageSize": "101"}, {"pageSize": "x"}, {"status": "done"},
                                    {"cursor": "not-a-job"}])
def test_list_rejects_bad_query_parameters(sandbox, params):
    app, clock, client = sandbox
    response = client.get("/objects/jobs", params=params)
    assert response.status_code == 400 and set(response.json()) == {"code", "message"}


@pytest.mark.parametrize("method, suffix", [("GET", ""), ("GET", "/errors"), ("PATCH", "/cancel"), ("POST", "/files")])
def test_unknown_job_is_the_documented_404(sandbox, method, suffix):
    app, clock, client = sandbox
    response = client.request(method, f"/objects/jobs/{uuid.uuid4()}{suffix}", content=b"a\n",
                              headers={"Content-Type": "text/csv"})
    assert response.status_code == 404 and response.json() == {"code": 71013040, "message": "Not Found."}


@pytest.mark.parametrize("body, code", [
    ({"object": "p", "operation": "create"}, 71013022),
    ({"namespace": "mine", "object": "p", "operation": "create"}, 71013020),
    ({"namespace": "default", "object": "p", "operation": "upsert"}, 71013520),
    ({"namespace": "default", "object": "bad name!", "operation": "create"}, 71013020),
    ({"namespace": "default", "object": "p", "operation": "create",
      "filter": {"conditions": [{"field": "a", "operator": "EQ", "value": 1}]}}, 71013220),
    ({"namespace": "default", "object": "p", "operation": "delete", "filter": {"conditions": []}}, 71013320),
    ({"namespace": "default", "object": "p", "operation": "delete", "filter": {"conditions": [{}, {}, {}]}}, 71013320),
    ({"namespace": "default", "object": "p", "operation": "delete",
      "filter": {"conditions": [{"field": "a", "operator": "NE", "value": 1}]}}, 71013320),
    ({"namespace": "default", "object": "p", "operation": "delete",
      "filter": {"conditions": [{"field": "a", "operator": "EQ"}]}}, 71013320),
    ([1, 2], 71013020),
])
def test_job_requests_are_validated(sandbox, body, code):
    app, clock, client = sandbox
    response = client.post("/objects/jobs", json=body)
    assert response.status_code == 400 and response.json()["code"] == code
    assert client.get("/objects/jobs").json()["count"] == 0


def test_example_update_file_names_the_records_the_example_load_creates(sandbox):
    app, clock, client = sandbox
    data = Path(__file__).resolve().parent.parent / "data" / "custom-objects"
    load(client, clock, (data / "vehicles.csv").read_text(encoding="utf-8"), name="vehicle")
    updated = new_job(client, "update", "vehicle")
    assert upload_csv(client, updated["Id"], (data / "vehicles-update.csv").read_text(encoding="utf-8")).status_code == 200
    clock.advance(600)
    assert job(client, updated["Id"])["status"] == "completed"
    assert client.get(f"/objects/jobs/{updated['Id']}/errors").json() == {"errors": []}
    assert [r["mileage__c"] for r in records(client, "vehicle")][:4] == ["43010", "90112", "12040", "146205"]
