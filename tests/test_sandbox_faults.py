"""Fault injection, the admin API, and gzip in both directions."""

from __future__ import annotations

import gzip
import json
import time

import httpx
import pytest

from test_sandbox_helpers import FX_CSV, new_sandbox, token, upload_bulk

JOB = {"namespace": "default", "object": "passenger", "operation": "create"}


def faults(client, **config) -> dict:
    response = client.post("/_sandbox/faults", json=config)
    assert response.status_code == 200, response.text
    return response.json()


def state(client) -> dict:
    return client.get("/_sandbox/state").json()


def test_faults_are_all_zero_by_default():
    app, clock, client = new_sandbox()
    assert client.get("/_sandbox/faults").json() == {
        "error_rate": 0.0, "error_after_rate": 0.0, "rate_limit_rate": 0.0, "drop_rate": 0.0,
        "latency_ms": 0, "seed": None, "retry_after": 1}


@pytest.mark.parametrize("config", [{"error_rate": 2}, {"drop_rate": -0.1}, {"latency_ms": -5}, {"bogus": 1},
                                    {"seed": [1]}, {"rate_limit_rate": "half"}])
def test_bad_fault_configurations_are_refused(config):
    app, clock, client = new_sandbox()
    response = client.post("/_sandbox/faults", json=config)
    assert response.status_code == 400 and "error" in response.json()


def test_rate_limited_requests_get_429_retry_after_and_no_effect():
    app, clock, client = new_sandbox()
    faults(client, rate_limit_rate=1.0, retry_after=3)
    v1 = upload_bulk(client, "ImportFXRate", FX_CSV)
    assert v1.status_code == 429 and v1.headers["Retry-After"] == "3"
    assert v1.headers["RateLimit-Remaining"] == "0" and v1.headers["RateLimit-Reset"] == "3"
    assert v1.json()["reasons"][0]["code"] == 70
    objects = client.post("/objects/jobs", json=JOB)
    assert objects.status_code == 429 and set(objects.json()) == {"code", "message"}
    assert state(client)["mass_actions"] == [] and state(client)["custom_object_jobs"] == []


def test_errors_before_the_effect_change_nothing():
    app, clock, client = new_sandbox()
    faults(client, error_rate=1.0)
    response = client.post("/objects/jobs", json=JOB, headers={"Idempotency-Key": "k"})
    assert response.status_code == 503 and set(response.json()) == {"code", "message"}
    assert state(client)["custom_object_jobs"] == []
    faults(client)
    retried = client.post("/objects/jobs", json=JOB, headers={"Idempotency-Key": "k"})
    assert retried.status_code == 200  # the key was not burnt by the failed attempt


def test_errors_after_the_effect_lose_only_the_response():
    app, clock, client = new_sandbox()
    faults(client, error_after_rate=1.0)
    lost = upload_bulk(client, "ImportFXRate", FX_CSV, headers={"Idempotency-Key": "k"})
    assert lost.status_code == 500 and lost.json()["success"] is False
    [mass_action] = state(client)["mass_actions"]
    still_failing = upload_bulk(client, "ImportFXRate", FX_CSV, headers={"Idempotency-Key": "k"})
    assert still_failing.status_code == 500  # the storm hits replays too, and they create nothing
    assert len(state(client)["mass_actions"]) == 1
    faults(client)
    retried = upload_bulk(client, "ImportFXRate", FX_CSV, headers={"Idempotency-Key": "k"})
    assert retried.status_code == 200 and retried.json()["bulkKey"] == mass_action["bulkKey"]
    assert len(state(client)["mass_actions"]) == 1


def test_dropped_connection_in_process_raises_after_the_effect():
    app, clock, client = new_sandbox()
    faults(client, drop_rate=1.0)
    with pytest.raises(ConnectionResetError):
        client.post("/objects/jobs", json=JOB, headers={"Idempotency-Key": "d"})
    [job] = state(client)["custom_object_jobs"]
    faults(client)
    assert client.post("/objects/jobs", json=JOB, headers={"Idempotency-Key": "d"}).json()["Id"] == job["Id"]


def test_seeded_storms_repeat_exactly():
    outcomes = []
    for _ in range(2):
        app, clock, client = new_sandbox()
        faults(client, error_rate=0.3, rate_limit_rate=0.2, seed=7)
        outcomes.append([client.get("/objects/jobs").status_code for _ in range(30)])
    assert outcomes[0] == outcomes[1]
    assert {200, 503, 429} <= set(outcomes[0])


def test_faults_never_touch_token_or_admin_endpoints_and_reset_clears_them():
    app, clock, client = new_sandbox()
    faults(client, error_rate=1.0, drop_rate=1.0, rate_limit_rate=1.0)
    assert token(client)
    assert client.get("/_sandbox/state").status_code == 200
    assert client.post("/_sandbox/reset").json() == {"reset": True}
    assert client.get("/_sandbox/faults").json()["error_rate"] == 0.0
    assert client.get("/objects/jobs").status_code == 200


def test_latency_waits_on_the_injected_clock_and_takes_no_real_time():
    app, clock, client = new_sandbox()
    faults(client, latency_ms=60_000)
    before, started = clock(), time.monotonic()
    assert client.get("/objects/jobs").status_code == 200
    assert time.monotonic() - started < 10  # a real sleep would take the whole minute
    assert clock() - before == 60  # the minute passed on the sandbox's clock instead


def test_latency_with_a_plain_callable_clock_is_a_real_sleep(monkeypatch):
    import reconciler.sandbox.app as app_module

    slept = []
    monkeypatch.setattr(app_module.time, "sleep", slept.append)
    app, clock, client = new_sandbox(clock=lambda: 1_700_000_000.0)
    faults(client, latency_ms=250)
    client.get("/objects/jobs")
    assert slept == [0.25]


def test_reset_empties_the_tenant_but_keeps_tokens():
    app, clock, client = new_sandbox()
    upload_bulk(client, "ImportFXRate", FX_CSV)
    job = client.post("/objects/jobs", json=JOB).json()
    client.post(f"/objects/jobs/{job['Id']}/files", content=b"name__c\na\n", headers={"Content-Type": "text/csv"})
    clock.advance(60)
    assert state(client)["records"] == {"passenger": 1}
    client.post("/_sandbox/reset")
    assert state(client) == {"mass_actions": [], "custom_object_jobs": [], "records": {}}
    assert client.get("/objects/jobs").status_code == 200


def test_clock_advance_moves_lifecycles_and_refuses_going_back():
    app, clock, client = new_sandbox()
    key = upload_bulk(client, "ImportFXRate", FX_CSV).json()["bulkKey"]
    moved = client.post("/_sandbox/clock", json={"advance_seconds": 120})
    assert moved.status_code == 200 and moved.json()["offset_seconds"] == 120
    assert client.get(f"/v1/bulk/{key}").json()["status"] == "Completed"
    for bad in ({"advance_seconds": -1}, {}, {"advance_seconds": "1"}):
        assert client.post("/_sandbox/clock", json=bad).status_code == 400


def test_state_lists_what_the_api_shows():
    app, clock, client = new_sandbox()
    key = upload_bulk(client, "ImportFXRate", FX_CSV, headers={"Idempotency-Key": "s"}).json()["bulkKey"]
    job = client.post("/objects/jobs", json=JOB).json()
    dump = state(client)
    [mass_action] = dump["mass_actions"]
    assert mass_action == {**client.get(f"/v1/bulk/{key}").json(), "bulkKey": key, "idempotencyKey": "s"}
    [listed] = dump["custom_object_jobs"]
    assert listed == {**client.get(f"/objects/jobs/{job['Id']}").json(), "idempotencyKey": None}


def test_gzip_request_bodies_are_accepted():
    app, clock, client = new_sandbox()
    body = gzip.compress(json.dumps(JOB).encode())
    response = client.post("/objects/jobs", content=body,
                           headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})
    assert response.status_code == 200 and response.json()["status"] == "pending"
    broken = client.post("/objects/jobs", content=b"not gzip",
                         headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})
    assert broken.status_code == 400 and set(broken.json()) == {"code", "message"}
    unknown = client.post("/objects/jobs", content=b"{}", headers={"Content-Type": "application/json",
                                                                     "Content-Encoding": "br"})
    assert unknown.status_code == 415


def test_large_json_responses_are_gzipped_when_accepted():
    app, clock, client = new_sandbox()
    for _ in range(5):
        client.post("/objects/jobs", json=JOB)
    raw = httpx.Client(transport=client._transport, base_url=client.base_url, headers={
        "Authorization": client.headers["Authorization"], "Accept-Encoding": "gzip"})
    with raw.stream("GET", "/objects/jobs") as response:
        compressed = b"".join(response.iter_raw())
    assert response.headers["Content-Encoding"] == "gzip"
    assert json.loads(gzip.decompress(compressed))["count"] == 5
    plain = client.get("/objects/jobs", headers={"Accept-Encoding": "identity"})
    assert "Content-Encoding" not in plain.headers and plain.json()["count"] == 5
    small = client.get(f"/objects/jobs/{plain.json()['jobs'][0]['Id']}", headers={"Accept-Encoding": "gzip"})
    assert "Content-Encoding" not in small.headers  # 1000 bytes or less stay plain


def test_zip_downloads_are_never_gzipped():
    app, clock, client = new_sandbox()
    data = b"Revenue Schedule Number\n" + b"".join(b"RS-%08d\n" % i for i in range(3000))
    key = upload_bulk(client, "DeleteRevenueSchedule", data).json()["bulkKey"]
    clock.advance(600)
    url = client.get(f"/v1/bulk/{key}").json()["outputURL"]
    response = client.get(url, headers={"Accept-Encoding": "gzip"})
    assert response.status_code == 200 and "Content-Encoding" not in response.headers
    assert len(response.content) > 1000
