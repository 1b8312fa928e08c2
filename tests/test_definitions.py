"""Custom object definitions on the product side: the client's answers (including Zuora's 404 and 403),
`reconciler definitions pull`, `validate` against definitions/, and `local` using them as its tenant's."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import httpx
import pytest
from test_sandbox_helpers import FakeClock

from reconciler.commands.definitions import pull
from reconciler.engine.config import load_settings
from reconciler.errors import ConfigError, RemoteError, UsageError
from reconciler.sandbox import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, make_app, serve
from reconciler.spec.load import check_repo
from reconciler.zuora.client import Credentials, RetryPolicy, ZuoraClient

VEHICLE_JOB = """\
apiVersion: reconciler/v1
kind: CustomObjectJob
metadata: {{name: {name}}}
spec:
  object: {object}
  operation: {operation}
{rest}"""


@pytest.fixture(scope="module")
def server():
    with serve(make_app(pending_seconds=0, rows_per_second=1000)) as served:
        yield served


@pytest.fixture
def url(server):
    httpx.post(server.url + "/_sandbox/reset", json={}, timeout=10)
    return server.url


def client_of(url, calls):
    clock = FakeClock()
    return ZuoraClient(base_url=url, credentials=Credentials(DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET),
                       on_call=calls.append, clock=clock,
                       retry=RetryPolicy(sleep=clock.sleep, clock=clock, rng=random.Random(1)))


def deny(url, *permissions):
    httpx.post(url + "/_sandbox/permissions", json={"denied": list(permissions)}, timeout=10).raise_for_status()


def repo(root: Path, environment: str, specs: dict | None = None, data: dict | None = None) -> Path:
    (root / "specs").mkdir(parents=True)
    (root / "data").mkdir()
    (root / "reconciler.yaml").write_text(f"specs: specs\nenvironment: {environment!r}\n")
    for name, text in (specs or {}).items():
        (root / "specs" / name).write_text(text)
    for name, text in (data or {}).items():
        (root / "data" / name).write_text(text)
    return root


def test_the_client_reads_definitions_and_takes_zuoras_refusals_as_final(url):
    calls = []
    with client_of(url, calls) as client:
        assert client.get_co_definition("vehicle")["schema"]["object"] == "vehicle"
        assert {"vehicle", "car"} <= set(client.list_co_definitions())
        with pytest.raises(RemoteError) as missing:
            client.get_co_definition("spaceship")
        assert missing.value.status == 404
        with pytest.raises(RemoteError) as unknown:
            client.create_co_job(namespace="default", object="spaceship", operation="create", idempotency_key="k1")
        assert (unknown.value.status, unknown.value.code) == (400, 71013020)
        deny(url, "delete", "view")
        calls.clear()
        with pytest.raises(RemoteError) as forbidden:
            client.create_co_job(namespace="default", object="vehicle", operation="delete", idempotency_key="k2")
        assert (forbidden.value.status, forbidden.value.code) == (403, 71012514)
        with pytest.raises(RemoteError) as unreadable:
            client.list_co_definitions()
        assert unreadable.value.status == 403
    assert len(calls) == 2  # a 403 is never retried


def test_definitions_pull_writes_reviewable_files_and_mirrors_the_tenant(url, tmp_path):
    root = repo(tmp_path / "repo", url)
    settings = load_settings(chdir=str(root))
    out = io.StringIO()
    assert pull(settings, out, objects=["vehicle"]) == 0
    path = root / "definitions" / "default" / "vehicle.json"
    text = path.read_text()
    assert json.loads(text)["schema"]["object"] == "vehicle" and text.endswith("}\n") and '\n  "schema": {' in text
    assert "added  definitions/default/vehicle.json" in out.getvalue()
    (root / "definitions" / "default" / "gone.json").write_text("{}")
    out = io.StringIO()
    pull(settings, out)
    assert "unchanged  definitions/default/vehicle.json" in out.getvalue()
    assert "removed  definitions/default/gone.json" in out.getvalue() and not (path.parent / "gone.json").exists()
    assert {p.stem for p in path.parent.glob("*.json")} >= {"vehicle", "car"}
    with pytest.raises(UsageError, match="no custom object 'spaceship'"):
        pull(settings, io.StringIO(), objects=["spaceship"])
    deny(url, "view")
    with pytest.raises(RemoteError, match="View Custom Objects permission"):
        pull(settings, io.StringIO())


def write_definitions(root: Path, url: str) -> None:
    pull(load_settings(chdir=str(root)), io.StringIO())


def test_validate_checks_jobs_against_the_definitions_with_row_numbers(url, tmp_path):
    specs = {
        "load.yaml": VEHICLE_JOB.format(name="load", object="vehicle", operation="create",
                                        rest="  file: ../data/vehicles.csv\n"),
        "fix.yaml": VEHICLE_JOB.format(name="fix", object="vehicle", operation="update",
                                       rest="  file: ../data/fix.csv\n"),
        "purge.yaml": VEHICLE_JOB.format(name="purge", object="vehicle", operation="delete", rest=(
            "  filter:\n    conditions:\n      - {field: make__c, operator: EQ, value: Saab}\n"
            "      - {field: year__c, operator: LT, value: old}\n")),
        "ships.yaml": VEHICLE_JOB.format(name="ships", object="vehicles", operation="delete",
                                         rest="  allowDeleteAll: true\n"),
    }
    data = {"vehicles.csv": "make__c,year__c,colour__c,registration__c\nVolvo,2024,red,R1\n,20x4,blue,R1\n",
            "fix.csv": "Id,model__c\n5360087f-3212-553e-b33b-723d15a3a5b6,FH\n"}
    root = repo(tmp_path / "repo", url, specs, data)
    settings = load_settings(chdir=str(root))
    assert check_repo(settings).problems == ()  # no definitions/: nothing to check against
    write_definitions(root, url)
    found = [(p.file, p.line, p.row, p.path, p.message) for p in check_repo(settings).problems]
    assert [f[:4] for f in found] == [
        ("data/fix.csv", None, 1, "make__c"),
        ("data/vehicles.csv", None, 1, "colour__c"),
        ("data/vehicles.csv", None, 3, "make__c"),
        ("data/vehicles.csv", None, 3, "year__c"),
        ("data/vehicles.csv", None, 3, "registration__c"),
        ("specs/purge.yaml", 9, None, "spec.filter.conditions[0].field"),
        ("specs/purge.yaml", 10, None, "spec.filter.conditions[1].value"),
        ("specs/ships.yaml", 5, None, "spec.object"),
    ]
    messages = [f[4] for f in found]
    assert "did you mean 'color__c'" in messages[1] and "required value is empty" in messages[2]
    assert "must be an integer" in messages[3] and "repeats row 2" in messages[4]
    assert "not filterable" in messages[5] and "did you mean 'vehicle'" in messages[7]
    (root / "definitions" / "default" / "car.json").write_text('{"schema": {"object": "car",\n "properties": 3}}')
    broken = [p for p in check_repo(settings).problems if p.file == "definitions/default/car.json"]
    assert [p.message for p in broken] == ["schema.properties must be an object of fields"]


def test_local_uses_the_repos_definitions(tmp_path):
    ticket = {"schema": {"object": "ticket", "properties": {"code__c": {"type": "string"}}, "filterable": ["code__c"]}}
    root = repo(tmp_path / "repo", "local")
    (root / "definitions" / "default").mkdir(parents=True)
    (root / "definitions" / "default" / "ticket.json").write_text(json.dumps(ticket))
    settings = load_settings(chdir=str(root))
    with ZuoraClient.from_settings(settings) as client:
        assert list(client.list_co_definitions()) == ["ticket"]
        assert client.create_co_job(namespace="default", object="ticket", operation="create",
                                    idempotency_key=None)["status"] == "pending"
        with pytest.raises(RemoteError):
            client.create_co_job(namespace="default", object="vehicle", operation="create", idempotency_key=None)
    (root / "definitions" / "default" / "ticket.json").write_text("{")
    with pytest.raises(ConfigError, match=r"ticket\.json: line 1 column 2"):
        ZuoraClient.from_settings(settings)
