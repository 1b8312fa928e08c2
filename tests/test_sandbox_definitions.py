"""Custom object definitions in the sandbox, over loopback HTTP: Zuora's shape, unknown objects and filters
refused, per-row errors for unknown columns, types, required and unique values, --definitions, and the 403."""

from __future__ import annotations

import io
import json

import httpx
import pytest
from test_sandbox_helpers import FakeClock, token

from reconciler.commands.sandbox import serve as serve_command
from reconciler.errors import ConfigError
from reconciler.sandbox import make_app, serve

SYSTEM = ["Id", "CreatedById", "CreatedDate", "UpdatedById", "UpdatedDate"]
TICKETS = {"definitions": {"ticket": {
    "CreatedById": "u", "CreatedDate": "2026-01-01T00:00:00.000Z", "Id": "d", "UpdatedById": "u",
    "UpdatedDate": "2026-01-01T00:00:00.000Z", "type": "ticket",
    "schema": {"object": "ticket", "label": "Ticket", "type": "object",
               "properties": {"code__c": {"type": "string", "maxLength": 8, "origin": "custom"},
                              "paid__c": {"type": "boolean", "origin": "custom"},
                              "price__c": {"type": "number", "origin": "custom"},
                              "kind__c": {"type": "string", "enum": ["day", "week"], "origin": "custom"}},
               "required": ["code__c"], "filterable": ["code__c", "price__c"], "unique": ["code__c"]}}}, "count": 1}


@pytest.fixture(scope="module")
def served():
    clock = FakeClock()
    server = serve(make_app(clock=clock, pending_seconds=0, rows_per_second=1000)).start()
    client = httpx.Client(base_url=server.url, timeout=10)
    client.headers["Authorization"] = f"Bearer {token(client)}"
    yield clock, client
    client.close()
    server.shutdown()


@pytest.fixture
def http(served):
    clock, client = served
    client.post("/_sandbox/reset", json={})
    return clock, client


def run_create(clock, client, text: str, object_name="vehicle") -> tuple[dict, list[dict]]:
    job = client.post("/objects/jobs", json={"namespace": "default", "object": object_name, "operation": "create"})
    assert job.status_code == 200, job.text
    uploaded = client.post(f"/objects/jobs/{job.json()['Id']}/files", content=text.encode(),
                           headers={"Content-Type": "text/csv"})
    assert uploaded.status_code == 200, uploaded.text
    clock.advance(60)
    done = client.get(f"/objects/jobs/{job.json()['Id']}").json()
    return done, client.get(f"/objects/jobs/{done['Id']}/errors").json()["errors"]


def test_definitions_have_zuoras_shape(http):
    _, client = http
    listed = client.get("/objects/definitions/default").json()
    assert set(listed) == {"count", "definitions"} and listed["count"] == len(listed["definitions"])
    assert {"vehicle", "car"} <= set(listed["definitions"])
    vehicle = client.get("/objects/definitions/default/vehicle").json()
    assert vehicle == listed["definitions"]["vehicle"]
    assert set(vehicle) == {"CreatedById", "CreatedDate", "Id", "UpdatedById", "UpdatedDate", "schema", "type"}
    schema = vehicle["schema"]
    assert schema["object"] == vehicle["type"] == "vehicle" and schema["type"] == "object"
    assert schema["properties"]["Id"] == {"format": "uuid", "label": "Id", "origin": "system", "type": "string"}
    assert schema["properties"]["year__c"]["type"] == "integer" and schema["properties"]["make__c"]["origin"] == "custom"
    assert schema["required"][-5:] == SYSTEM and schema["filterable"][-5:] == SYSTEM  # as Zuora lists them
    assert "registration__c" in schema["unique"]
    assert client.get("/objects/definitions/default", params={"select": "type"}).json()["definitions"]["car"] == {
        "type": "car"}
    missing = client.get("/objects/definitions/default/Vehicle")  # API names are case-sensitive
    assert missing.status_code == 404 and set(missing.json()) == {"code", "message"}


def test_unknown_objects_and_filters_zuora_cannot_run_are_refused(http):
    _, client = http
    unknown = client.post("/objects/jobs", json={"namespace": "default", "object": "spaceship", "operation": "create"})
    assert unknown.status_code == 400 and unknown.json()["code"] == 71013020 and "spaceship" in unknown.json()["message"]

    def delete(field, value):
        return client.post("/objects/jobs", json={"namespace": "default", "object": "vehicle", "operation": "delete",
                                                  "filter": {"conditions": [{"field": field, "operator": "LT",
                                                                             "value": value}]}})

    assert delete("no_such_field__c", 1).json()["code"] == 71013321
    assert delete("make__c", "M").json()["code"] == 71013320  # defined, not filterable
    assert delete("year__c", "old").json()["code"] == 71013320  # an integer field
    assert delete("year__c", 2000).status_code == 200
    assert delete("CreatedDate", "2020-01-01T00:00:00.000Z").status_code == 200  # system fields are filterable


def test_rows_are_rejected_per_row_as_zuora_does(http):
    clock, client = http
    done, errors = run_create(clock, client, "make__c,year__c,registration__c\n"
                                             "Volvo,2024,R1\n"     # fine
                                             "Saab,19x4,R2\n"      # not an integer
                                             ",2020,R3\n"          # required make__c empty
                                             "DAF,2022,R1\n"       # repeats a unique value
                                             "MAN,1800,R4\n")      # below the minimum
    assert done["status"] == "completed" and done["recordsProcessed"] == 5
    assert [(e["row"], e["code"]) for e in errors] == [(3, 71012523), (4, 71012522), (5, 71012530), (6, 71012523)]
    assert errors[0]["record"]["year__c"] == "19x4" and errors[0]["record"]["type"] == "vehicle"
    assert client.get("/_sandbox/state").json()["records"] == {"vehicle": 1}
    done, errors = run_create(clock, client, "make__c,no_such_field__c\nVolvo,x\nSaab,y\n")
    assert done["status"] == "completed" and [(e["row"], e["code"]) for e in errors] == [(2, 71012521), (3, 71012521)]
    assert "no_such_field__c" in errors[0]["message"]
    assert client.get("/_sandbox/state").json()["records"] == {"vehicle": 1}


def test_definitions_option_replaces_the_demo_set(tmp_path):
    path = tmp_path / "definitions.json"
    path.write_text(json.dumps(TICKETS))
    clock = FakeClock()
    with serve(make_app(clock=clock, pending_seconds=0, rows_per_second=1000, definitions=str(path))) as server:
        client = httpx.Client(base_url=server.url, timeout=10)
        client.headers["Authorization"] = f"Bearer {token(client)}"
        assert list(client.get("/objects/definitions/default").json()["definitions"]) == ["ticket"]
        # the file gives only custom fields; Zuora's answer has the system fields it adds, and so does the sandbox
        ticket = client.get("/objects/definitions/default/ticket").json()["schema"]
        assert ticket["properties"]["Id"] == {"format": "uuid", "label": "Id", "origin": "system", "type": "string"}
        assert ticket["required"] == ["code__c", *SYSTEM] and ticket["filterable"] == ["code__c", "price__c", *SYSTEM]
        assert ticket["properties"]["kind__c"]["enum"] == ["day", "week"]
        refused = client.post("/objects/jobs", json={"namespace": "default", "object": "vehicle", "operation": "create"})
        assert refused.status_code == 400
        _, errors = run_create(clock, client, "code__c,paid__c,price__c,kind__c\nA1,true,9.5,day\n"
                                                 "A2,yes,9,day\nA3,false,nine,week\nA4,TRUE,1,month\n"
                                                 "LONGER-THAN-8,false,1,day\n", "ticket")
        assert [(e["row"], e["code"]) for e in errors] == [(3, 71012525), (4, 71012524), (5, 71012526), (6, 71012526)]
        client.close()


@pytest.mark.parametrize("text, place", [
    ("{nope", "line 1 column 2"),
    ('{"schema": {"object": "t", "properties": {"a": {"type": "text"}}}}', "schema.properties.a.type"),
    ('{"schema": {"object": "t", "properties": {"a": {"type": "string"}}, "unique": ["b"]}}', "schema.unique"),
])
def test_a_malformed_definitions_file_is_a_clear_error(tmp_path, text, place):
    path = tmp_path / "defs.json"
    path.write_text(text)
    with pytest.raises(ConfigError, match=f"defs.json: .*{place}") as caught:
        serve_command(io.StringIO(), host="127.0.0.1", port=0, db=None, client_id=None, client_secret=None,
                      pending_seconds=None, rows_per_second=None, answers={"definitions": str(path)})
    assert caught.value.exit_code == 1


def test_a_missing_permission_is_zuoras_403(http):
    _, client = http
    job = {"namespace": "default", "object": "vehicle", "operation": "delete"}
    assert client.post("/_sandbox/permissions", json={"denied": ["delete", "view"]}).json()["denied"] == ["delete",
                                                                                                          "view"]
    refused = client.post("/objects/jobs", json=job)
    assert refused.status_code == 403 and refused.json() == {
        "code": 71012514, "message": "User does not have permission to delete custom objects."}
    assert client.get("/objects/definitions/default").status_code == 403
    assert client.get("/objects/jobs").status_code == 403
    created = client.post("/objects/jobs", json={**job, "operation": "create"})  # edit is still held
    assert created.status_code == 200
    client.post("/_sandbox/permissions", json={"denied": []})
    assert client.post("/objects/jobs", json=job).status_code == 200
