"""Idempotency-Key: replay of the first response for 24 sandbox hours, 409 in flight, 422 on mismatch."""

from __future__ import annotations

import threading

import pytest

from reconciler.sandbox import make_app
from test_sandbox_helpers import FX_CSV, FakeClock, new_job, new_sandbox, upload_bulk, upload_csv, wsgi_client


def state(client) -> dict:
    return client.get("/_sandbox/state").json()


REPLAY = pytest.mark.parametrize("replay", [200, 409], ids=["replay200", "replay409"])


@REPLAY
def test_bulk_replay_returns_the_first_response_and_creates_nothing_new(replay):
    app, clock, client = new_sandbox(replay_status=replay)
    first = upload_bulk(client, "ImportFXRate", FX_CSV, headers={"Idempotency-Key": "run-1"})
    second = upload_bulk(client, "ImportFXRate", FX_CSV, headers={"Idempotency-Key": "run-1"})
    assert (first.status_code, second.status_code) == (200, replay)
    assert first.json() == second.json()
    assert first.headers["Zuora-Request-Id"] == second.headers["Zuora-Request-Id"]
    [mass_action] = state(client)["mass_actions"]
    assert mass_action["bulkKey"] == first.json()["bulkKey"] and mass_action["idempotencyKey"] == "run-1"


def test_replay_ignores_a_different_body_as_zuora_documents_no_body_check():
    app, clock, client = new_sandbox()
    first = upload_bulk(client, "ImportFXRate", FX_CSV, headers={"Idempotency-Key": "k"})
    second = upload_bulk(client, "MPU", b"nonsense", headers={"Idempotency-Key": "k"})
    assert second.json() == first.json() and len(state(client)["mass_actions"]) == 1


@REPLAY
def test_error_responses_are_stored_and_replayed_too(replay):
    app, clock, client = new_sandbox(replay_status=replay)  # a stored error replays as stored in both modes
    first = upload_bulk(client, "Nope", FX_CSV, headers={"Idempotency-Key": "bad"})
    second = upload_bulk(client, "ImportFXRate", FX_CSV, headers={"Idempotency-Key": "bad"})
    assert first.status_code == second.status_code == 400
    assert first.json() == second.json()


@REPLAY
def test_custom_object_endpoints_replay(replay):
    app, clock, client = new_sandbox(replay_status=replay)
    body = {"namespace": "default", "object": "passenger", "operation": "create"}
    first = client.post("/objects/jobs", json=body, headers={"Idempotency-Key": "job"})
    again = client.post("/objects/jobs", json=body, headers={"Idempotency-Key": "job"})
    assert again.json() == first.json() and again.status_code == replay
    job_id = first.json()["Id"]
    files = f"/objects/jobs/{job_id}/files"
    upload = client.post(files, content=b"name__c\nann\n", headers={"Content-Type": "text/csv", "Idempotency-Key": "f"})
    replayed = client.post(files, content=b"name__c\nann\n", headers={"Content-Type": "text/csv", "Idempotency-Key": "f"})
    assert (upload.status_code, replayed.status_code) == (200, replay) and replayed.json() == upload.json()
    without_key = upload_csv(client, job_id, "name__c\nann\n")
    assert without_key.status_code == 400  # a genuinely new second upload is refused
    other = new_job(client)
    cancel = client.patch(f"/objects/jobs/{other['Id']}/cancel", headers={"Idempotency-Key": "c"})
    assert client.patch(f"/objects/jobs/{other['Id']}/cancel", headers={"Idempotency-Key": "c"}).json() == cancel.json()
    clock.advance(60)
    assert client.get("/_sandbox/records", params={"object": "passenger"}).json()["records"][0]["name__c"] == "ann"
    jobs = state(client)["custom_object_jobs"]
    assert [j["idempotencyKey"] for j in jobs] == ["job", None]


@pytest.mark.parametrize("method, path", [("POST", "/objects/jobs/x/files"), ("PATCH", "/objects/jobs/x/cancel")])
def test_reusing_a_key_on_another_path_or_method_is_422(method, path):
    app, clock, client = new_sandbox()
    upload_bulk(client, "ImportFXRate", FX_CSV, headers={"Idempotency-Key": "shared"})
    response = client.request(method, path, headers={"Idempotency-Key": "shared"})
    assert response.status_code == 422 and set(response.json()) == {"code", "message"}
    v1 = upload_bulk(client, "ImportFXRate", FX_CSV, headers={"Idempotency-Key": "other"})
    job = client.post("/objects/jobs", json={"namespace": "default", "object": "p", "operation": "create"},
                      headers={"Idempotency-Key": "other"})
    assert v1.status_code == 200 and job.status_code == 422


def test_v1_422_uses_the_v1_shape():
    app, clock, client = new_sandbox()
    client.post("/objects/jobs", json={"namespace": "default", "object": "p", "operation": "create"},
                headers={"Idempotency-Key": "k"})
    response = upload_bulk(client, "ImportFXRate", FX_CSV, headers={"Idempotency-Key": "k"})
    assert response.status_code == 422
    assert response.json()["success"] is False and response.json()["reasons"][0]["code"] // 100 == 500000


@REPLAY
def test_keys_expire_after_24_sandbox_hours(replay):
    app, clock, client = new_sandbox(token_seconds=10 ** 6, replay_status=replay)
    first = upload_bulk(client, "ImportFXRate", FX_CSV, headers={"Idempotency-Key": "day"})
    clock.advance(24 * 3600 - 1)
    assert upload_bulk(client, "ImportFXRate", FX_CSV, headers={"Idempotency-Key": "day"}).json() == first.json()
    clock.advance(1)
    later = upload_bulk(client, "ImportFXRate", FX_CSV, headers={"Idempotency-Key": "day"})
    assert later.status_code == 200 and later.json()["bulkKey"] != first.json()["bulkKey"]


def test_keys_survive_a_restart_on_the_same_db(tmp_path):
    db = str(tmp_path / "sandbox.db")
    client = wsgi_client(make_app(db))
    first = upload_bulk(client, "ImportFXRate", FX_CSV, headers={"Idempotency-Key": "persist"})
    restarted = wsgi_client(make_app(db))
    again = upload_bulk(restarted, "ImportFXRate", FX_CSV, headers={"Idempotency-Key": "persist"})
    assert again.json() == first.json() and len(state(restarted)["mass_actions"]) == 1


@pytest.mark.parametrize("key", ["k" * 256, " "])
def test_bad_keys_are_refused(key):
    app, clock, client = new_sandbox()
    response = upload_bulk(client, "ImportFXRate", FX_CSV, headers={"Idempotency-Key": key})
    assert response.status_code == 400 and state(client)["mass_actions"] == []
    assert upload_bulk(client, "ImportFXRate", FX_CSV, headers={"Idempotency-Key": "k" * 255}).status_code == 200


class _HeldClock(FakeClock):
    """A fake clock whose first sleep (the first request's injected latency) blocks until released."""

    def __init__(self):
        super().__init__()
        self.sleeping = threading.Event()
        self.release = threading.Event()

    def sleep(self, seconds: float) -> None:
        if not self.sleeping.is_set():
            self.sleeping.set()
            assert self.release.wait(60), "the test never released the first request"
        super().sleep(seconds)


@REPLAY
def test_a_concurrent_request_with_the_key_in_flight_gets_409(replay):
    clock = _HeldClock()
    app, clock, client = new_sandbox(clock=clock, replay_status=replay)
    client.post("/_sandbox/faults", json={"latency_ms": 400})
    results = []
    first = threading.Thread(target=lambda: results.append(
        upload_bulk(client, "ImportFXRate", FX_CSV, headers={"Idempotency-Key": "race"})))
    first.start()
    try:  # the first request has claimed the key and waits inside the sandbox: the key is in flight
        assert clock.sleeping.wait(60), "the first request never reached its latency"
        conflict = upload_bulk(wsgi_client(app), "ImportFXRate", FX_CSV, headers={"Idempotency-Key": "race"})
    finally:
        clock.release.set()
        first.join(60)
    assert conflict.status_code == 409
    assert conflict.json()["success"] is False and conflict.json()["reasons"][0]["code"] == 50000050
    assert [r.status_code for r in results] == [200]
    client.post("/_sandbox/faults", json={})
    done = upload_bulk(client, "ImportFXRate", FX_CSV, headers={"Idempotency-Key": "race"})
    assert done.status_code == replay and done.json()["bulkKey"] == results[0].json()["bulkKey"]
    assert len(state(client)["mass_actions"]) == 1


def test_a_key_left_in_flight_by_a_dead_process_is_taken_over(tmp_path):
    import subprocess
    import sys

    db = str(tmp_path / "sandbox.db")
    make_app(db)
    code = (
        "import os, sqlite3, sys, time\n"
        "c = sqlite3.connect(sys.argv[1])\n"
        "c.execute(\"INSERT INTO idempotency (key, method, path, state, owner, started_wall, created_at)"
        " VALUES ('orphan', 'POST', '/v1/bulk', 'inflight', ?, ?, ?)\", (f'{os.getpid()}:x', time.time(), time.time()))\n"
        "c.commit()\n"
    )
    subprocess.run([sys.executable, "-c", code, db], check=True)
    client = wsgi_client(make_app(db))
    response = upload_bulk(client, "ImportFXRate", FX_CSV, headers={"Idempotency-Key": "orphan"})
    assert response.status_code == 200 and len(state(client)["mass_actions"]) == 1
