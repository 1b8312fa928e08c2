"""Zuora's other documented answers, over loopback HTTP: the sandbox gives each (serve options), the client
copes with each: 409 replays carrying the result, v1 errors as HTTP 200, files refused at upload, the
6th custom object job created `failed`, and processingTime counting processing only."""

from __future__ import annotations

import io
import random
import threading
import zipfile
from pathlib import Path

import httpx
import pytest

from apply_support import served_sandbox
from reconciler.engine.answers import is_definitive, service_limit
from reconciler.errors import RemoteError
from reconciler.model import MASS_ACTION
from reconciler.sandbox import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET
from reconciler.zuora.client import Credentials, RetryPolicy, ZuoraClient
from test_sandbox_helpers import FX_CSV, FakeClock

CARS = b"make__c,model__c\nVolvo,FH16\nSaab,900\n"
JOB = {"namespace": "default", "object": "car", "operation": "create"}


def http(url: str) -> httpx.Client:
    """An authorized plain HTTP client on a served sandbox: the bytes Zuora's answers are made of."""
    token = httpx.post(f"{url}/oauth/token", data={"client_id": DEFAULT_CLIENT_ID, "grant_type": "client_credentials",
                                                   "client_secret": DEFAULT_CLIENT_SECRET}).json()["access_token"]
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def client(url: str, **kw) -> ZuoraClient:
    """The product's client on a served sandbox, retrying without real sleeps."""
    kw.setdefault("retry", RetryPolicy(sleep=lambda s: None, rng=random.Random(1)))
    return ZuoraClient(base_url=url, credentials=Credentials(DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET), **kw)


def bulk(session: httpx.Client, data: bytes = FX_CSV, action_type: str = "ImportFXRate", **headers) -> httpx.Response:
    return session.post("/v1/bulk", headers=headers, files={"file": ("f.csv", data, "text/csv")},
                        data={"params": f'{{"actionType": "{action_type}"}}'})


def zipped(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


@pytest.fixture
def fx_file(tmp_path) -> Path:
    path = tmp_path / "fx.csv"
    path.write_bytes(FX_CSV)
    return path


# --- Idempotent retries: a replay as 409 with the stored body ---------------------------------------


def test_replay_409_sends_the_stored_success_with_status_409_and_creates_nothing_new():
    with served_sandbox(replay_status=409) as url, http(url) as session:
        first = bulk(session, **{"Idempotency-Key": "k1"})
        again = bulk(session, **{"Idempotency-Key": "k1"})
        assert (first.status_code, again.status_code) == (200, 409)
        assert again.json() == first.json() and again.json()["bulkKey"]
        job = session.post("/objects/jobs", json=JOB, headers={"Idempotency-Key": "j1"})
        replayed = session.post("/objects/jobs", json=JOB, headers={"Idempotency-Key": "j1"})
        assert replayed.status_code == 409 and replayed.json()["Id"] == job.json()["Id"]
        refused = bulk(session, action_type="Nope", **{"Idempotency-Key": "bad"})
        assert bulk(session, action_type="Nope", **{"Idempotency-Key": "bad"}).status_code == refused.status_code == 400
        state = session.get("/_sandbox/state").json()
        assert len(state["mass_actions"]) == 1 and len(state["custom_object_jobs"]) == 1
    with served_sandbox() as url, http(url) as session:  # the default replays the stored status
        bulk(session, **{"Idempotency-Key": "k1"})
        assert bulk(session, **{"Idempotency-Key": "k1"}).status_code == 200


def test_the_client_takes_a_409_that_carries_the_result_as_the_original_answer(fx_file):
    with served_sandbox(replay_status=409) as url:
        calls = []
        with client(url, on_call=calls.append) as zuora:
            key = zuora.submit_mass_action("ImportFXRate", fx_file, idempotency_key="sub-1")
            assert zuora.submit_mass_action("ImportFXRate", fx_file, idempotency_key="sub-1") == key
            job = zuora.create_co_job(namespace="default", object="car", operation="create", idempotency_key="co-1")
            assert zuora.create_co_job(namespace="default", object="car", operation="create",
                                       idempotency_key="co-1")["Id"] == job["Id"]
            (fx_file.parent / "cars.csv").write_bytes(CARS)
            uploaded = zuora.upload_co_file(job["Id"], fx_file.parent / "cars.csv", idempotency_key="up-1")
            again = zuora.upload_co_file(job["Id"], fx_file.parent / "cars.csv", idempotency_key="up-1")
            assert again["Id"] == uploaded["Id"] == job["Id"]
        replays = [c for c in calls if c.status == 409]
        assert len(replays) == 3 and all(c.outcome == "ok" and c.attempt == 1 for c in replays)
        with http(url) as session:
            state = session.get("/_sandbox/state").json()
        assert len(state["mass_actions"]) == 1 and len(state["custom_object_jobs"]) == 1


@pytest.mark.parametrize("replay_status", [200, 409])
def test_a_409_without_a_result_is_still_in_flight_then_the_result_is_taken(fx_file, replay_status):
    """The first request holds its key (injected latency, real time); a second one with the key gets
    Zuora's "still in progress" 409 (no bulkKey), retries with the key, and ends with the one job."""
    with served_sandbox(replay_status=replay_status) as url, http(url) as session:
        session.post("/_sandbox/faults", json={"latency_ms": 2000}).raise_for_status()
        first: list = []
        thread = threading.Thread(target=lambda: first.append(bulk(session, **{"Idempotency-Key": "race"})))
        thread.start()
        try:
            threading.Event().wait(0.8)  # the first request is inside the sandbox, its key claimed
            with client(url, retry=RetryPolicy(max_attempts=1)) as impatient:
                with pytest.raises(RemoteError) as caught:
                    impatient.submit_mass_action("ImportFXRate", fx_file, idempotency_key="race")
            assert caught.value.status == 409 and caught.value.retryable and not is_definitive(caught.value)
            session.post("/_sandbox/faults", json={}).raise_for_status()  # only the first request stays slow
            with client(url, retry=RetryPolicy(base=0.5, rng=random.Random(1))) as patient:
                key = patient.submit_mass_action("ImportFXRate", fx_file, idempotency_key="race")
        finally:
            thread.join(30)
        assert key == first[0].json()["bulkKey"]
        assert len(session.get("/_sandbox/state").json()["mass_actions"]) == 1


# --- Errors that arrive as HTTP 200 --------------------------------------------------------------------


def test_v1_errors_as_200_carry_success_false_and_their_reasons():
    with served_sandbox(v1_errors="200") as url, http(url) as session:
        refused = bulk(session, action_type="Nope")
        assert refused.status_code == 200 and refused.json()["success"] is False
        assert refused.json()["reasons"][0]["code"] == 50000020 and "bulkKey" not in refused.json()
        missing = session.get("/v1/bulk/" + "0" * 32)
        assert missing.status_code == 200 and missing.json()["reasons"][0]["code"] == 50000040
        key = bulk(session).json()["bulkKey"]
        session.post("/_sandbox/clock", json={"advance_seconds": 60})
        stop = session.put(f"/v1/bulk/{key}/stop")
        assert stop.status_code == 200 and stop.json()["reasons"][0]["code"] == 50000030
        assert session.get("/v1/files/nope").json()["success"] is False
        # What is not a v1 operation's own answer keeps its status: auth, unknown endpoints, custom objects.
        assert httpx.get(f"{url}/v1/bulk/{key}").status_code == 401
        assert session.get("/v1/nothing-here").status_code == 404
        assert session.get("/objects/jobs/7006ce52-91c9-11ed-a1eb-0242ac120002").status_code == 404


def test_the_client_treats_a_200_with_success_false_as_the_definitive_error_on_every_v1_call(fx_file, tmp_path):
    with served_sandbox(v1_errors="200") as url, client(url) as zuora, http(url) as session:
        bad = tmp_path / "bad.csv"
        bad.write_bytes(b"Currency (From),Currency (To)\nUSD,EUR\n")
        with pytest.raises(RemoteError) as submitted:
            zuora.submit_mass_action("ImportFXRate", bad, idempotency_key="bad-1")
        error = submitted.value
        assert (error.status, error.code, error.retryable) == (200, 50000022, False) and is_definitive(error)
        assert "Missing required column(s) for ImportFXRate" in str(error)
        assert zuora.observe(MASS_ACTION, "0" * 32).missing
        key = zuora.submit_mass_action("ImportFXRate", fx_file, idempotency_key="good-1")
        session.post("/_sandbox/clock", json={"advance_seconds": 60})
        with pytest.raises(RemoteError, match="only a Pending or Processing mass action can be stopped") as stopped:
            zuora.stop_mass_action(key)
        assert stopped.value.status == 200
        with pytest.raises(RemoteError, match="File not found") as download:
            zuora.download_file("nope", tmp_path / "out.zip")
        assert download.value.code == 50000040 and not (tmp_path / "out.zip").exists()


# --- Files refused at upload -------------------------------------------------------------------------------


@pytest.mark.parametrize("data, fragment", [
    (b"Currency (From),Currency (To)\nUSD,EUR\n", "Missing required column(s) for ImportFXRate"),
    (zipped({"a.csv": FX_CSV, "b.csv": FX_CSV}), "exactly one .csv file; it contains a.csv, b.csv"),
    (FX_CSV.replace(b"first", b"caf\xe9"), "not UTF-8"),
], ids=["missing-columns", "two-csvs", "not-utf8"])
@pytest.mark.parametrize("v1_errors, status", [("http", 400), ("200", 200)])
def test_a_bad_file_is_refused_at_upload_with_no_bulk_key(tmp_path, data, fragment, v1_errors, status):
    with served_sandbox(v1_errors=v1_errors) as url, http(url) as session, client(url) as zuora:
        answer = bulk(session, data)
        assert answer.status_code == status and answer.json()["success"] is False and "bulkKey" not in answer.json()
        assert fragment in answer.json()["reasons"][0]["message"]
        path = tmp_path / "bad.csv"
        path.write_bytes(data)
        with pytest.raises(RemoteError, match=fragment.replace("(", r"\(").replace(")", r"\)")) as caught:
            zuora.submit_mass_action("ImportFXRate", path, idempotency_key="bad")
        assert caught.value.status == status and is_definitive(caught.value)  # the applier records `rejected`
        assert session.get("/_sandbox/state").json()["mass_actions"] == []


# --- The 6th active custom object job ------------------------------------------------------------------


def test_the_sixth_job_is_created_failed_with_zuoras_service_limit_error_and_holds_no_slot():
    with served_sandbox(job_limit="failed", pending_seconds=3600) as url, http(url) as session:
        jobs = [session.post("/objects/jobs", json=JOB).json() for _ in range(5)]
        assert {j["status"] for j in jobs} == {"pending"}
        sixth = session.post("/objects/jobs", json=JOB, headers={"Idempotency-Key": "sixth"})
        body = sixth.json()
        assert sixth.status_code == 200 and body["status"] == "failed" and body["recordsProcessed"] == 0
        assert body["error"] == {"code": 71012560, "message": "Service limit reached, please retry later."}
        assert service_limit(body) == "code 71012560: Service limit reached, please retry later."
        assert session.get(f"/objects/jobs/{body['Id']}").json()["status"] == "failed"
        session.patch(f"/objects/jobs/{jobs[0]['Id']}/cancel").raise_for_status()
        assert session.post("/objects/jobs", json=JOB).json()["status"] == "pending"  # the failed one held none
    with served_sandbox() as url, http(url) as session:
        for _ in range(5):
            session.post("/objects/jobs", json=JOB)
        refused = session.post("/objects/jobs", json=JOB)
        assert refused.status_code == 400 and refused.json()["code"] == 71013030


def test_the_client_returns_the_failed_job_and_the_applier_reads_it_as_no_slot():
    with served_sandbox(job_limit="failed") as url, http(url) as session, client(url) as zuora:
        for _ in range(5):
            session.post("/objects/jobs", json=JOB)
        body = zuora.create_co_job(namespace="default", object="car", operation="create", idempotency_key="six")
        assert body["status"] == "failed" and service_limit(body) is not None
        assert service_limit({**body, "error": {"code": 71012520, "message": "bad"}}) is None  # another failure


# --- processingTime -----------------------------------------------------------------------------------------


def test_processing_time_counts_processing_not_time_since_creation():
    clock = FakeClock()
    with served_sandbox(clock, rows_per_second=10) as url, http(url) as session:
        job = session.post("/objects/jobs", json=JOB).json()
        clock.advance(100)  # waiting for its file is not processing
        uploaded = session.post(f"/objects/jobs/{job['Id']}/files", content=CARS, headers={"Content-Type": "text/csv"})
        assert uploaded.json()["processingTime"] == 0
        clock.advance(60)
        done = session.get(f"/objects/jobs/{job['Id']}").json()
        assert done["status"] == "completed" and done["processingTime"] == 200  # 2 rows at 10 a second
        cancelled = session.post("/objects/jobs", json=JOB).json()
        clock.advance(30)
        assert session.patch(f"/objects/jobs/{cancelled['Id']}/cancel").json()["processingTime"] == 0


# --- The options: serve flags, reconciler.yaml for `environment: local`, bad values ------------------------


def test_serve_takes_the_answers_and_refuses_bad_values_with_exit_1():
    import subprocess
    import sys

    from apply_support import sandbox_process

    with sandbox_process("--replay-status", "409", "--v1-errors", "200", "--job-limit", "failed") as url, \
            http(url) as session:
        bulk(session, **{"Idempotency-Key": "k"})
        assert bulk(session, **{"Idempotency-Key": "k"}).status_code == 409
        assert bulk(session, action_type="Nope").status_code == 200
        for _ in range(5):
            session.post("/objects/jobs", json=JOB)
        assert session.post("/objects/jobs", json=JOB).json()["status"] == "failed"
    for flag, value in (("--replay-status", "201"), ("--v1-errors", "4xx"), ("--job-limit", "429"),
                        ("--tenant-type", "free")):
        proc = subprocess.run([sys.executable, "-m", "reconciler", "sandbox", "serve", flag, value],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 1 and f"Invalid value for '{flag}'" in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_make_app_refuses_an_answer_it_does_not_know():
    from reconciler.sandbox import make_app

    for bad in ({"replay_status": 201}, {"v1_errors": "4xx"}, {"job_limit": 400}):
        with pytest.raises(ValueError, match=f"{next(iter(bad))} must be one of"):
            make_app(**bad)


def test_environment_local_takes_the_answers_from_its_sandbox_block(tmp_path, fx_file):
    from reconciler.engine.config import load_settings

    (tmp_path / "reconciler.yaml").write_text("environment: local\nsandbox: {replay_status: 409, v1_errors: 200}\n")
    settings = load_settings(chdir=str(tmp_path), env={})
    calls: list = []
    with ZuoraClient.from_settings(settings, on_call=calls.append) as zuora:
        key = zuora.submit_mass_action("ImportFXRate", fx_file, idempotency_key="local-1")
        assert zuora.submit_mass_action("ImportFXRate", fx_file, idempotency_key="local-1") == key
        bad = tmp_path / "bad.csv"
        bad.write_bytes(b"Currency (From),Currency (To)\nUSD,EUR\n")
        with pytest.raises(RemoteError) as caught:
            zuora.submit_mass_action("ImportFXRate", bad, idempotency_key="local-2")
    assert [c.status for c in calls if c.method == "POST" and c.path == "/v1/bulk"] == [200, 409, 200]
    assert caught.value.status == 200 and is_definitive(caught.value)


# --- Rate limits per tenant type ----------------------------------------------------------------------------


def test_an_api_sandbox_tenant_gets_real_429s_past_its_minute_and_hour_limits():
    clock = FakeClock(1_700_000_000.0)  # 20 s into a minute: the minute resets in 40 s
    with served_sandbox(clock, tenant_type="apisandbox") as url, http(url) as session:
        assert session.post("/_sandbox/rate", json={"api": 2499}).json()["api"]["limits"] == {
            "minute": 2500, "hour": 5000, "day": 10000}
        last = session.get("/objects/jobs")
        assert last.status_code == 200 and last.headers["RateLimit-Remaining"] == "0"
        assert last.headers["RateLimit-Limit"] == "2500, 2500;w=60, 5000;w=3600, 10000;w=86400"
        refused = session.get("/v1/bulk/" + "0" * 32)
        assert refused.status_code == 429 and refused.headers["Retry-After"] == refused.headers["RateLimit-Reset"] == "40"
        assert refused.json() == {"reasons": [{"code": 70, "message": "API Rate limit exceeded for the minute, "
                                                                      "retry after 40 seconds"}]}
        assert httpx.get(f"{url}/objects/jobs").status_code == 429  # unauthenticated calls count and are refused too
        clock.advance(40)  # a new minute; the hour has 2,502 requests (refused ones counted)
        again = session.get("/objects/jobs")
        assert again.status_code == 200 and again.headers["RateLimit-Remaining"] == "2497"
        session.post("/_sandbox/rate", json={"api": 5000})
        hour = session.get("/objects/jobs")
        assert hour.status_code == 429 and "for the hour" in hour.json()["message"]
        assert int(hour.headers["Retry-After"]) == 3600 - int(clock.now % 3600)  # until the hour ends


@pytest.mark.parametrize("tenant_type, per_minute", [("production", 50_000), ("developer-sandbox", 12_500)])
def test_the_limits_of_each_tenant_type_are_reported(tenant_type, per_minute):
    with served_sandbox(tenant_type=tenant_type) as url, http(url) as session:
        response = session.get("/objects/jobs")
        assert response.headers["RateLimit-Limit"].split(",")[0] == str(per_minute)
        assert int(response.headers["RateLimit-Remaining"]) == per_minute - 1


def test_token_requests_are_limited_to_100_a_minute_per_client():
    form = {"client_id": DEFAULT_CLIENT_ID, "client_secret": DEFAULT_CLIENT_SECRET, "grant_type": "client_credentials"}
    with served_sandbox(FakeClock(1_700_000_000.0)) as url, httpx.Client(base_url=url) as plain:
        answers = [plain.post("/oauth/token", data=form).status_code for _ in range(101)]
        assert answers == [200] * 100 + [429]
        assert plain.post("/objects/jobs").status_code == 401  # API calls have their own windows


def test_the_client_waits_out_a_real_429_and_goes_on(fx_file):
    clock = FakeClock(1_700_000_000.0)
    with served_sandbox(clock, tenant_type="apisandbox") as url, http(url) as session:
        waits: list[float] = []

        def sleep(seconds: float) -> None:  # the client's wait passes on the sandbox's clock
            waits.append(seconds)
            clock.advance(seconds)

        with client(url, retry=RetryPolicy(sleep=sleep, rng=random.Random(1))) as zuora:
            zuora.authenticate()
            session.post("/_sandbox/rate", json={"api": 2500})
            assert zuora.submit_mass_action("ImportFXRate", fx_file, idempotency_key="paced")
        assert waits and waits[0] >= 40


def test_the_client_paces_itself_from_the_rate_limit_headers_instead_of_running_into_a_429(fx_file):
    clock = FakeClock(1_700_000_000.0)  # 40 s before the minute ends
    with served_sandbox(clock, tenant_type="apisandbox") as url, http(url) as session:
        waits: list[float] = []

        def sleep(seconds: float) -> None:
            waits.append(seconds)
            clock.advance(seconds)

        calls: list = []
        with client(url, retry=RetryPolicy(sleep=sleep, clock=clock, rng=random.Random(1)),
                    on_call=calls.append) as zuora:
            zuora.authenticate()
            session.post("/_sandbox/rate", json={"api": 2499})
            list(zuora.list_co_jobs())  # the minute's last request: RateLimit-Remaining 0, Reset 40
            assert zuora.submit_mass_action("ImportFXRate", fx_file, idempotency_key="paced")
        assert waits == [40.0]
        assert [c.status for c in calls if c.path != "/oauth/token"] == [200, 200]  # no 429 was needed
