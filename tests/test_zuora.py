"""The Zuora client against the real simulator (served over 127.0.0.1, and embedded as a WSGI
transport) and, for answers no simulator should give (HTML, truncated JSON...), against tiny WSGI
apps at the network seam."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import random
import socket
import threading
import time
import zipfile
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from reconciler.errors import ConfigError, ReconcilerError, RemoteError
from reconciler.model import CUSTOM_OBJECT_JOB, MASS_ACTION, Condition
from reconciler.zuora.client import Credentials, RetryPolicy, ZuoraClient, parse_count

FX_CSV = (
    "Group ID,Provider Exchange Rate Date,Currency (From),Currency (To),Exchange Rate\n"
    "g1,2026-11-01,USD,EUR,0.92\n"
    ",2026-11-01,USD,GBP,0.79\n"
    ",2026-11-01,USD,JPY,not-a-rate\n"
)


class FakeClock:
    """A monotonic clock that sleeping advances: retries and token expiry without real waiting."""

    def __init__(self):
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture(scope="module")
def sandbox_server():
    from reconciler.sandbox import make_app, serve

    server = serve(make_app(pending_seconds=2.0, rows_per_second=100.0), host="127.0.0.1", port=0).start()
    yield server
    server.shutdown()


@pytest.fixture
def served(sandbox_server):
    """The served sandbox, emptied and without faults (its clock only ever moves forward)."""
    admin(sandbox_server, "POST", "/_sandbox/reset")
    return sandbox_server


def admin(server, method: str, path: str, payload=None) -> dict:
    response = httpx.request(method, server.url + path, json=payload, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def sandbox_credentials() -> Credentials:
    from reconciler.sandbox import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET

    return Credentials(DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET)


@pytest.fixture
def connect(served, clock):
    """Factory for clients of the served sandbox; every attempt lands in `connect.calls`."""
    calls, clients = [], []

    def make(**kw):
        kw.setdefault("credentials", sandbox_credentials())
        kw.setdefault("retry", RetryPolicy(sleep=clock.sleep, clock=clock, rng=random.Random(1)))
        kw.setdefault("on_call", calls.append)
        kw.setdefault("clock", clock)
        client = ZuoraClient(base_url=served.url, **kw)
        clients.append(client)
        return client

    make.calls = calls
    yield make
    for client in clients:
        client.close()


@pytest.fixture
def fx_file(tmp_path) -> Path:
    path = tmp_path / "fx.csv"
    path.write_text(FX_CSV, encoding="utf-8")
    return path


def outcomes(calls, path=None):
    return [(c.method, c.path, c.status, c.outcome) for c in calls if path is None or c.path == path]


def token_fetches(calls) -> int:
    return sum(1 for c in calls if c.path == "/oauth/token" and c.outcome == "ok")


# Auth


class CountingTransport(httpx.BaseTransport):
    """The real network transport, counting token requests and the bearer each other request carried.

    Each token request is held back a little before it is sent, so that threads making their first call
    at once all reach the token cache while the first fetch is still out: without the cache's lock each of
    them would fetch its own token.
    """

    def __init__(self, token_delay: float = 0.3):
        self._inner = httpx.HTTPTransport()
        self._lock = threading.Lock()
        self._token_delay = token_delay
        self.token_requests = 0
        self.bearers: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            if request.url.path == "/oauth/token":
                self.token_requests += 1
            else:
                self.bearers.append(request.headers.get("authorization", ""))
        if request.url.path == "/oauth/token":
            time.sleep(self._token_delay)
        return self._inner.handle_request(request)

    def close(self) -> None:
        self._inner.close()


def test_threads_racing_their_first_call_share_one_token_fetch(connect):
    transport = CountingTransport()
    client = connect(transport=transport)
    racers = 8
    start = threading.Barrier(racers)
    results, errors = [], []

    def first_call():
        start.wait()  # every thread makes its first call at the same moment: none has a token yet
        try:
            results.append(list(client.list_co_jobs()))
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=first_call) for _ in range(racers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors and results == [[]] * racers
    assert transport.token_requests == 1  # counted on the wire: one fetch served every thread
    assert len(transport.bearers) == racers and len(set(transport.bearers)) == 1
    assert token_fetches(connect.calls) == 1
    list(client.list_co_jobs())
    assert transport.token_requests == 1  # later calls reuse it


def test_token_is_refreshed_before_it_expires(connect, served, clock, fx_file):
    client = connect()
    key = client.submit_mass_action("ImportFXRate", fx_file, idempotency_key="k-refresh")
    assert token_fetches(connect.calls) == 1
    # 3599 s tokens: past the 300 s margin the client refreshes on its own, before Zuora refuses it.
    admin(served, "POST", "/_sandbox/clock", {"advance_seconds": 3400})
    clock.now += 3400
    client.get_mass_action(key)
    assert token_fetches(connect.calls) == 2
    assert not any(c.status == 401 for c in connect.calls)


def test_a_refused_token_is_refreshed_once_and_the_call_repeated(connect, served, fx_file):
    client = connect()
    key = client.submit_mass_action("ImportFXRate", fx_file, idempotency_key="k-401")
    admin(served, "POST", "/_sandbox/clock", {"advance_seconds": 4000})  # the client's clock did not move
    assert client.get_mass_action(key)["status"]
    assert outcomes(connect.calls)[-3:] == [
        ("GET", f"/v1/bulk/{key}", 401, "retry"),
        ("POST", "/oauth/token", 200, "ok"),
        ("GET", f"/v1/bulk/{key}", 200, "ok"),
    ]


def test_bad_client_credentials_are_a_401_without_the_secret(connect):
    from reconciler.sandbox import DEFAULT_CLIENT_ID

    secret = "not-the-right-secret-42"
    client = connect(credentials=Credentials(DEFAULT_CLIENT_ID, secret))
    with pytest.raises(RemoteError) as caught:
        client.get_mass_action("402892f04c97b89a014c97bb30a50003")
    error = caught.value
    assert error.status == 401 and error.endpoint == "POST /oauth/token"
    assert "ZUORA_CLIENT_ID" in str(error) and "ZUORA_CLIENT_SECRET" in str(error)
    assert_no_secret(error, secret)
    assert outcomes(connect.calls) == [("POST", "/oauth/token", 401, "error")]  # never retried


def test_a_static_access_token_is_used_as_is_and_its_refusal_is_explained(connect, served):
    minted = httpx.post(served.url + "/oauth/token", data={
        "client_id": sandbox_credentials().client_id, "client_secret": sandbox_credentials().client_secret,
        "grant_type": "client_credentials",
    }).json()["access_token"]
    client = connect(credentials=Credentials(access_token=minted))
    assert list(client.list_co_jobs()) == []
    assert token_fetches(connect.calls) == 0
    admin(served, "POST", "/_sandbox/clock", {"advance_seconds": 4000})
    with pytest.raises(RemoteError, match="ZUORA_ACCESS_TOKEN was rejected") as caught:
        list(client.list_co_jobs())
    assert caught.value.status == 401
    assert_no_secret(caught.value, minted)
    assert outcomes(connect.calls)[-1] == ("GET", "/objects/jobs", 401, "error")


def test_missing_credentials_fail_at_the_first_call_naming_the_variables():
    client = ZuoraClient(base_url="https://rest.apisandbox.zuora.com", credentials=Credentials())
    with pytest.raises(ConfigError, match="ZUORA_CLIENT_ID and ZUORA_CLIENT_SECRET.*ZUORA_ACCESS_TOKEN"):
        client.get_co_job("0f1e2d3c-0000-4000-8000-000000000000")
    client.close()


# The embedded sandbox: same code path, WSGI transport


def local_settings(tmp_path, **kw):
    values = dict(
        base_url="http://sandbox.local", is_local=True, sandbox_db=tmp_path / "state" / "local" / "sandbox.db",
        credentials=Credentials(), entity_ids=None, org_ids=None, zuora_version=None, parallelism=4,
    )
    values.update(kw)
    return SimpleNamespace(**values)


def test_from_settings_local_embeds_the_sandbox_and_persists_its_tenant(tmp_path, fx_file):
    settings = local_settings(tmp_path)
    calls = []
    with ZuoraClient.from_settings(settings, on_call=calls.append, track_id="ci-run-42") as client:
        key = client.submit_mass_action("ImportFXRate", fx_file, idempotency_key="k-local")
        assert {c.track_id for c in calls} == {"ci-run-42"}
    assert settings.sandbox_db.exists()
    with ZuoraClient.from_settings(settings) as again:  # another process would see the same tenant
        observed = again.observe(MASS_ACTION, key)
    assert observed.status in ("Pending", "Processing", "Completed") and not observed.missing


def test_from_settings_without_credentials_for_a_real_environment_is_lazy(tmp_path):
    settings = local_settings(tmp_path, base_url="https://rest.apisandbox.zuora.com", is_local=False, sandbox_db=None)
    client = ZuoraClient.from_settings(settings)  # plan --no-refresh never calls: no error yet
    with pytest.raises(ConfigError, match="ZUORA_ACCESS_TOKEN"):
        client.observe(MASS_ACTION, "402892f04c97b89a014c97bb30a50003")
    client.close()


def test_the_embedded_transport_treats_a_dropped_connection_like_the_network_does(clock, fx_file):
    from reconciler.sandbox import make_app

    transport = httpx.WSGITransport(app=make_app())
    calls = []
    client = ZuoraClient(base_url="http://sandbox.local", transport=transport, credentials=sandbox_credentials(),
                         on_call=calls.append, retry=RetryPolicy(max_attempts=20, sleep=clock.sleep, clock=clock))
    with httpx.Client(transport=transport, base_url="http://sandbox.local") as admin_client:
        list(client.list_co_jobs())
        assert admin_client.post("/_sandbox/faults", json={"drop_rate": 0.5, "seed": 8}).status_code == 200
        for n in range(4):
            client.submit_mass_action("ImportFXRate", fx_file, idempotency_key=f"k-wsgi-{n}")
        admin_client.post("/_sandbox/faults", json={"drop_rate": 1.0})
        with pytest.raises(RemoteError, match="not retried"):  # the OSError of a drop, for a POST with no key
            client.submit_mass_action("ImportFXRate", fx_file, idempotency_key=None)
        admin_client.post("/_sandbox/faults", json={})
        state = admin_client.get("/_sandbox/state").json()
    assert any(c.outcome == "dropped" and c.path == "/v1/bulk" for c in calls[:-1])
    assert len(state["mass_actions"]) == 5  # four keyed submissions once each, plus the unkeyed one
    client.close()


# Error shapes from the simulator


def test_v1_error_shape_and_no_retry_on_404(connect):
    client = connect()
    with pytest.raises(RemoteError) as caught:
        client.get_mass_action("0" * 32)
    error = caught.value
    assert error.code is not None and error.endpoint == f"GET /v1/bulk/{'0' * 32}"
    assert error.request_id and len(error.request_id) == 36 and error.request_id in str(error)
    assert not error.retryable
    assert len([c for c in connect.calls if c.path.startswith("/v1/bulk/")]) == 1


def test_custom_object_error_shape_and_no_retry_on_400(connect):
    client = connect()
    with pytest.raises(RemoteError) as caught:
        client.get_co_job("0f1e2d3c-0000-4000-8000-000000000000")
    assert caught.value.status == 404 and caught.value.code == 71013040
    with pytest.raises(RemoteError) as caught:
        client.create_co_job(namespace="default", object="vehicle", operation="explode", idempotency_key="k-bad-op")
    assert caught.value.status == 400 and caught.value.code and not caught.value.retryable
    assert len([c for c in connect.calls if c.path.startswith("/objects/jobs")]) == 2


# Faults injected by the simulator


def test_errors_before_the_effect_are_retried_until_success(connect, served):
    client = connect()
    job = client.create_co_job(namespace="default", object="vehicle", operation="delete",
                               conditions=[Condition("year__c", "LT", 1990)], idempotency_key="k-before")
    admin(served, "POST", "/_sandbox/faults", {"error_rate": 0.5, "seed": 3})
    for _ in range(10):
        assert client.get_co_job(job["Id"])["Id"] == job["Id"]
    assert any(c.outcome == "retry" and c.status >= 500 for c in connect.calls)


def test_errors_after_the_effect_with_idempotency_keys_create_each_job_once(connect, served, fx_file):
    client = connect()
    list(client.list_co_jobs())  # the token first, so the storm only hits the submissions
    admin(served, "POST", "/_sandbox/faults", {"error_after_rate": 0.5, "seed": 11})
    keys = [client.submit_mass_action("ImportFXRate", fx_file, idempotency_key=f"k-after-{n}") for n in range(8)]
    admin(served, "POST", "/_sandbox/faults", {})
    assert any(c.outcome == "retry" and c.path == "/v1/bulk" for c in connect.calls), "the storm hit nothing"
    state = admin(served, "GET", "/_sandbox/state")
    assert sorted(m["idempotencyKey"] for m in state["mass_actions"]) == sorted(f"k-after-{n}" for n in range(8))
    assert sorted(m["bulkKey"] for m in state["mass_actions"]) == sorted(keys)


def test_a_post_without_key_is_not_repeated_after_it_may_have_taken_effect(connect, served, fx_file):
    client = connect()
    list(client.list_co_jobs())  # the token first, so the storm only hits the submission
    admin(served, "POST", "/_sandbox/faults", {"error_after_rate": 1.0})
    with pytest.raises(RemoteError, match="not retried: a POST without an Idempotency-Key") as caught:
        client.submit_mass_action("ImportFXRate", fx_file, idempotency_key=None)
    assert caught.value.retryable and caught.value.status >= 500
    admin(served, "POST", "/_sandbox/faults", {})
    assert len([c for c in connect.calls if c.path == "/v1/bulk"]) == 1
    assert len(admin(served, "GET", "/_sandbox/state")["mass_actions"]) == 1  # it did take effect


def test_rate_limits_are_retried_after_the_time_the_server_asks(connect, served, clock):
    client = connect(retry=RetryPolicy(max_attempts=20, max_elapsed=1000.0, sleep=clock.sleep, clock=clock))
    job = client.create_co_job(namespace="default", object="vehicle", operation="delete",
                               conditions=[Condition("year__c", "LT", 1990)], idempotency_key="k-429")
    admin(served, "POST", "/_sandbox/faults", {"rate_limit_rate": 0.6, "retry_after": 7, "seed": 5})
    for _ in range(6):
        client.get_co_job(job["Id"])
    limited = [c for c in connect.calls if c.status == 429]
    assert limited and all(c.outcome == "retry" for c in limited)
    assert len(clock.sleeps) == len(limited) and all(s >= 7 for s in clock.sleeps)


def test_dropped_connections_are_retried_for_gets_and_keyed_posts(connect, served, fx_file):
    client = connect()
    key = client.submit_mass_action("ImportFXRate", fx_file, idempotency_key="k-drop-0")
    admin(served, "POST", "/_sandbox/faults", {"drop_rate": 0.5, "seed": 2})
    for _ in range(5):
        client.get_mass_action(key)
    keys = {client.submit_mass_action("ImportFXRate", fx_file, idempotency_key=f"k-drop-{n}") for n in range(1, 5)}
    admin(served, "POST", "/_sandbox/faults", {})
    assert any(c.outcome == "dropped" for c in connect.calls)
    assert len(admin(served, "GET", "/_sandbox/state")["mass_actions"]) == 5 and len(keys) == 4


def test_retries_are_bounded_in_attempts(connect, served, clock):
    client = connect()
    list(client.list_co_jobs())
    admin(served, "POST", "/_sandbox/faults", {"error_rate": 1.0})
    with pytest.raises(RemoteError, match=r"gave up after 6 attempt\(s\)") as caught:
        list(client.list_co_jobs())
    assert caught.value.retryable
    assert [c.outcome for c in connect.calls if c.path == "/objects/jobs"][1:] == ["retry"] * 5 + ["error"]
    assert len(clock.sleeps) == 5


def test_retries_are_bounded_in_total_time(connect, served, clock):
    client = connect(retry=RetryPolicy(max_attempts=100, max_elapsed=20.0, sleep=clock.sleep, clock=clock,
                                       rng=random.Random(4)))
    list(client.list_co_jobs())
    admin(served, "POST", "/_sandbox/faults", {"error_rate": 1.0})
    with pytest.raises(RemoteError, match="gave up after"):
        list(client.list_co_jobs())
    assert sum(clock.sleeps) <= 20.0 and 5 < len(clock.sleeps) < 100


# Redaction


def assert_no_secret(error: BaseException, *secrets: str) -> None:
    for text in (str(error), repr(error), *map(str, error.args)):
        for secret in secrets:
            assert secret not in text


def test_secrets_never_reach_logs_calls_or_errors(connect, served, caplog, fx_file):
    caplog.set_level(logging.DEBUG)
    credentials = sandbox_credentials()
    client = connect()
    key = client.submit_mass_action("ImportFXRate", fx_file, idempotency_key="k-redact")
    token = client._connection.auth.bearer()  # the live token, to search for it
    admin(served, "POST", "/_sandbox/faults", {"error_rate": 1.0})
    with pytest.raises(RemoteError) as caught:
        client.get_mass_action(key)
    admin(served, "POST", "/_sandbox/faults", {})
    bad = connect(credentials=Credentials(credentials.client_id, "wrong-secret-xyz"))
    with pytest.raises(RemoteError) as refused:
        bad.get_mass_action(key)
    assert any(r.name == "reconciler.zuora" for r in caplog.records)
    everything = caplog.text + repr(connect.calls)
    for secret in (credentials.client_secret, token, "wrong-secret-xyz"):
        assert secret not in everything
        assert_no_secret(caught.value, secret)
        assert_no_secret(refused.value, secret)


# Headers and validation (a tiny app records what arrives)


class Recorder:
    """A WSGI app that answers from a script and records each request's headers."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.requests: list[dict] = []

    def __call__(self, environ, start_response):
        body = environ["wsgi.input"].read()
        self.requests.append({**{k: v for k, v in environ.items() if k.startswith(("HTTP_", "CONTENT_"))},
                              "PATH": environ["PATH_INFO"], "METHOD": environ["REQUEST_METHOD"], "BODY": body})
        status, headers, payload = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        start_response(status, headers)
        return [payload]


JSON = [("Content-Type", "application/json")]
JOB = ("200 OK", JSON, b'{"Id": "7006ce52-91c9-11ed-a1eb-0242ac120002", "status": "pending"}')


def recorded_client(app, clock, **kw) -> ZuoraClient:
    kw.setdefault("credentials", Credentials(access_token="static-token-value-123"))
    kw.setdefault("retry", RetryPolicy(sleep=clock.sleep, clock=clock, rng=random.Random(1)))
    return ZuoraClient(base_url="https://rest.test.zuora.com", transport=httpx.WSGITransport(app=app), **kw)


def test_headers_sent_on_every_call(clock):
    app = Recorder(JOB)
    client = recorded_client(app, clock, entity_ids=["e1", "e2"], org_ids="o1", zuora_version="2025-08-12")
    client.create_co_job(namespace="default", object="vehicle", operation="delete", idempotency_key="key-1")
    client.get_co_job("7006ce52-91c9-11ed-a1eb-0242ac120002")
    post, get = app.requests
    for request in (post, get):
        assert request["HTTP_ZUORA_TRACK_ID"] == client.track_id and client.track_id.startswith("reconciler-")
        assert request["HTTP_ZUORA_ENTITY_IDS"] == "e1,e2" and request["HTTP_ZUORA_ORG_IDS"] == "o1"
        assert request["HTTP_ZUORA_VERSION"] == "2025-08-12"
        assert request["HTTP_ACCEPT_ENCODING"] == "gzip"
        assert request["HTTP_USER_AGENT"].startswith("reconciler/")
        assert request["HTTP_AUTHORIZATION"] == "Bearer static-token-value-123"
    assert post["HTTP_IDEMPOTENCY_KEY"] == "key-1" and "HTTP_IDEMPOTENCY_KEY" not in get
    assert json.loads(post["BODY"]) == {"namespace": "default", "object": "vehicle", "operation": "delete"}


@pytest.mark.parametrize("track_id", ["x" * 65, "run:1", "a;b", "it's", 'say "hi"', "naïve"])
def test_invalid_track_ids_are_refused(track_id):
    with pytest.raises(ConfigError, match="Zuora-Track-Id"):
        ZuoraClient(base_url="https://rest.zuora.com", track_id=track_id)


def test_invalid_idempotency_keys_are_refused_before_sending(clock):
    app = Recorder(JOB)
    client = recorded_client(app, clock)
    for key in ("k" * 256, "", "new\nline"):
        with pytest.raises(ValueError, match="Idempotency-Key"):
            client.create_co_job(namespace="default", object="v", operation="delete", idempotency_key=key)
    assert app.requests == []


# Garbage and odd shapes (the network seam)


@pytest.mark.parametrize(
    "answer, fragment",
    [
        (("200 OK", [("Content-Type", "text/html")], b"<html><body>Maintenance</body></html>"), "text/html: Maintenance"),
        (("200 OK", JSON, b'{"Id": "7006ce52-91c9-11ed-a1eb-0242ac120002", "stat'), "expected a JSON object"),
        (("200 OK", JSON, b""), "empty body"),
        (("200 OK", JSON, b'["a", "list"]'), "expected a JSON object"),
        (("200 OK", [("Content-Type", "text/plain")], b'{"Id": "7006ce52-91c9-11ed-a1eb-0242ac120002"}'), "text/plain"),
        (("200 OK", JSON, b'{"status": "pending"}'), "no `Id`"),
        (("400 Bad Request", [("Content-Type", "text/html")], b"<h1>Bad</h1>"), "HTTP 400: expected a Zuora error body"),
        (("404 Not Found", JSON, b"{not json"), "HTTP 404"),
    ],
)
def test_garbage_is_a_remote_error_naming_the_endpoint(clock, answer, fragment):
    client = recorded_client(Recorder(answer), clock)
    with pytest.raises(RemoteError, match=fragment) as caught:
        client.get_co_job("7006ce52-91c9-11ed-a1eb-0242ac120002")
    assert caught.value.endpoint == "GET /objects/jobs/7006ce52-91c9-11ed-a1eb-0242ac120002" and "GET /objects/jobs/7006ce52-91c9-11ed-a1eb-0242ac120002" in str(caught.value)


def test_success_false_inside_a_200_is_an_error_and_retried_only_for_transient_categories(clock):
    transient = ("200 OK", JSON, b'{"success": false, "reasons": [{"code": "50000061", "message": "try later"}]}')
    final = ("200 OK", JSON, b'{"success": false, "reasons": [{"code": 53100320, "message": "bad value"}]}')
    app = Recorder(transient, ("200 OK", JSON, b'{"success": true, "status": "Pending"}'))
    client = recorded_client(app, clock)
    assert client.get_mass_action("k1")["status"] == "Pending"
    assert len(app.requests) == 2
    app = Recorder(final)
    with pytest.raises(RemoteError) as caught:
        recorded_client(app, clock).get_mass_action("k1")
    assert (caught.value.status, caught.value.code, caught.value.retryable) == (200, 53100320, False)
    assert "bad value" in str(caught.value) and len(app.requests) == 1


def test_gzipped_answers_are_decoded(clock):
    body = json.dumps({"Id": "7006ce52-91c9-11ed-a1eb-0242ac120002", "status": "pending", "pad": "x" * 5000}).encode()
    app = Recorder(("200 OK", JSON + [("Content-Encoding", "gzip")], gzip.compress(body)))
    assert recorded_client(app, clock).get_co_job("7006ce52-91c9-11ed-a1eb-0242ac120002")["pad"] == "x" * 5000
    broken = Recorder(("200 OK", JSON + [("Content-Encoding", "gzip")], b"not gzip at all"))
    with pytest.raises(RemoteError, match="undecodable"):
        recorded_client(broken, clock).get_co_job("7006ce52-91c9-11ed-a1eb-0242ac120002")


def test_legacy_and_401_shapes(clock):
    legacy = ("200 OK", JSON, b'{"Success": false, "Errors": [{"Code": "INVALID_VALUE", "Message": "nope"}]}')
    with pytest.raises(RemoteError, match="code INVALID_VALUE: nope"):
        recorded_client(Recorder(legacy), clock).get_mass_action("k1")
    refused = ("401 Unauthorized", JSON, b'{"message": "Authentication error"}')
    with pytest.raises(RemoteError, match="ZUORA_ACCESS_TOKEN was rejected") as caught:
        recorded_client(Recorder(refused), clock).get_mass_action("k1")
    assert caught.value.status == 401 and not caught.value.retryable


def test_409_in_flight_is_retried_with_the_same_key(clock):
    in_flight = ("409 Conflict", JSON, b'{"code": 71013050, "message": "request in progress"}')
    app = Recorder(in_flight, JOB)
    job = recorded_client(app, clock).cancel_co_job("7006ce52-91c9-11ed-a1eb-0242ac120002", idempotency_key="cancel-1")
    assert job["Id"] == "7006ce52-91c9-11ed-a1eb-0242ac120002"
    assert [r["HTTP_IDEMPOTENCY_KEY"] for r in app.requests] == ["cancel-1", "cancel-1"]
    app = Recorder(in_flight)
    with pytest.raises(RemoteError):  # without a key a 409 is an answer, not a reason to repeat
        recorded_client(app, clock).create_co_job(namespace="default", object="v", operation="delete",
                                                  idempotency_key=None)
    assert len(app.requests) == 1


def test_rate_limit_reset_is_honoured_when_retry_after_is_absent(clock):
    limited = ("429 Too Many Requests", JSON + [("RateLimit-Reset", "12")], b'{"reasons": [{"code": 70, "message": "slow"}]}')
    app = Recorder(limited, ("200 OK", JSON, b'{"success": true, "status": "Pending"}'))
    recorded_client(app, clock).get_mass_action("k1")
    assert len(clock.sleeps) == 1 and clock.sleeps[0] >= 12


def test_an_unkeyed_post_is_resent_after_a_429(clock):
    limited = ("429 Too Many Requests", JSON + [("Retry-After", "1")], b'{"code": 71013061, "message": "slow"}')
    app = Recorder(limited, JOB)
    recorded_client(app, clock).create_co_job(namespace="default", object="v", operation="delete", idempotency_key=None)
    assert len(app.requests) == 2  # a 429 is decided before any processing


def test_unreachable_host_is_retried_even_for_an_unkeyed_post(clock):
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there now
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    calls = []
    client = ZuoraClient(base_url=f"http://127.0.0.1:{port}", credentials=Credentials(access_token="static-token"), on_call=calls.append,
                         retry=RetryPolicy(max_attempts=3, sleep=clock.sleep, clock=clock), timeout=2.0)
    with pytest.raises(RemoteError, match=f"connection to http://127.0.0.1:{port} failed") as caught:
        client.create_co_job(namespace="default", object="v", operation="delete", idempotency_key=None)
    assert [c.outcome for c in calls] == ["dropped"] * 3 and caught.value.status is None


def test_an_unreadable_file_is_a_clear_error_not_a_crash(clock, tmp_path):
    client = recorded_client(Recorder(JOB), clock)
    with pytest.raises(ReconcilerError, match="missing.csv"):
        client.submit_mass_action("ImportFXRate", tmp_path / "missing.csv", idempotency_key="k")
    with pytest.raises(ReconcilerError, match="missing.csv"):
        client.upload_co_file("7006ce52-91c9-11ed-a1eb-0242ac120002", tmp_path / "missing.csv", idempotency_key="k")


# Mass Updater and custom object flows against the simulator


def test_submit_sends_the_file_and_its_md5_and_download_writes_the_result(connect, served, fx_file, tmp_path):
    client = connect()
    key = client.submit_mass_action("ImportFXRate", fx_file, idempotency_key="k-download")
    assert len(key) == 32
    pending = client.observe(MASS_ACTION, key)
    assert (pending.status, pending.total, pending.output_url) == ("Pending", None, None)
    admin(served, "POST", "/_sandbox/clock", {"advance_seconds": 60})
    done = client.observe(MASS_ACTION, key)
    assert (done.status, done.total, done.processed, done.succeeded, done.failed) == ("Completed", 3, 3, 2, 1)
    foreign = done.output_url.replace(served.url, "https://elsewhere.example.com")  # only the id is used
    dest = tmp_path / "results" / "fx.zip"
    digest = client.download_file(foreign, dest)
    assert digest == hashlib.sha256(dest.read_bytes()).hexdigest()
    with zipfile.ZipFile(dest) as archive:
        (name,) = archive.namelist()
        lines = archive.read(name).decode("utf-8").splitlines()
    assert lines[0].endswith("Success,Error Message") and len(lines) == 4
    assert not list(dest.parent.glob("*.part"))


def test_stop_mass_action_and_its_lost_answer(connect, served, fx_file):
    client = connect()
    key = client.submit_mass_action("ImportFXRate", fx_file, idempotency_key="k-stop")
    client.stop_mass_action(key)
    assert client.get_mass_action(key)["status"] in ("Stopping", "Stopped")
    client.stop_mass_action(key)  # sent again (say, after a dropped answer): already stopped is stopped
    puts = [c for c in connect.calls if c.method == "PUT"]
    assert [(c.outcome, c.idempotency_key) for c in puts] == [("ok", None), ("error", None)]


def test_custom_object_create_with_a_streamed_5_mb_upload(connect, served, tmp_path):
    path = tmp_path / "vehicles.csv"
    with path.open("w", encoding="utf-8") as out:
        out.write("vin__c,make__c,year__c\n")
        n = 0
        while out.tell() < 5 * 1024 * 1024:
            n += 1
            out.write(f"VIN{n:012d},Make {n % 97} {'x' * 2000},{1980 + n % 40}\n")  # wide rows: few to process
    client = connect()
    job = client.create_co_job(namespace="default", object="vehicle", operation="create", idempotency_key="k-co")
    assert job["status"] == "pending"
    uploaded = client.upload_co_file(job["Id"], path, idempotency_key="k-co-file")
    assert uploaded["Id"] == job["Id"] and uploaded["status"] == "in_progress"
    admin(served, "POST", "/_sandbox/clock", {"advance_seconds": n / 100.0 + 60})
    observed = client.observe(CUSTOM_OBJECT_JOB, job["Id"])
    assert (observed.status, observed.processed, observed.missing) == ("completed", n, False)
    assert client.co_job_errors(job["Id"]) == []
    assert admin(served, "GET", "/_sandbox/state")["records"]["vehicle"] == n


def test_list_follows_the_cursor_newest_first_and_cancel(connect, served, clock):
    client = connect()
    ids = []
    for n in range(3):
        job = client.create_co_job(namespace="default", object="vehicle", operation="create", idempotency_key=f"k-l{n}")
        ids.append(job["Id"])
        clock.now += 1
        admin(served, "POST", "/_sandbox/clock", {"advance_seconds": 1})
    listed = [job["Id"] for job in client.list_co_jobs(page_size=2)]
    assert listed[:3] == ids[::-1]
    assert len([c for c in connect.calls if c.path == "/objects/jobs" and c.method == "GET"]) >= 2
    cancelled = client.cancel_co_job(ids[0], idempotency_key="k-cancel")
    assert cancelled["status"] == "cancelled"
    assert [j["Id"] for j in client.list_co_jobs(status="cancelled")] == [ids[0]]


def test_observe_reports_jobs_zuora_does_not_know_as_missing(connect):
    client = connect()
    for kind, remote_id in ((MASS_ACTION, "f" * 32), (CUSTOM_OBJECT_JOB, "0f1e2d3c-0000-4000-8000-000000000000")):
        observed = client.observe(kind, remote_id)
        assert (observed.missing, observed.status, observed.kind) == (True, None, kind)


@pytest.mark.parametrize(
    "value, expected",
    [(None, None), ("", None), ("  ", None), ("12", 12), (" 7 ", 7), (3, 3), (3.0, 3), ("4.0", 4),
     (2.5, None), ("-1", None), (-1, None), ("many", None), (True, None), ([1], None), ("nan", None)],
)
def test_parse_count(value, expected):
    assert parse_count(value) == expected


def test_the_download_helper_never_leaves_a_partial_file(clock, tmp_path):
    broken = ("500 Internal Server Error", JSON, b'{"success": false, "reasons": [{"code": 50000060, "message": "x"}]}')
    client = recorded_client(Recorder(broken), clock, retry=RetryPolicy(max_attempts=2, sleep=clock.sleep, clock=clock))
    with pytest.raises(RemoteError):
        client.download_file("2c92c0f9", tmp_path / "out.zip")
    assert list(tmp_path.iterdir()) == []
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as archive:
        archive.writestr("r.csv", "a,Success\n1,Y\n")
    ok = ("200 OK", [("Content-Type", "application/zip;charset=UTF-8")], zipped.getvalue())
    client = recorded_client(Recorder(ok), clock)
    assert client.download_file("https://rest.zuora.com/v1/files/2c92c0f9", tmp_path / "out.zip") == (
        hashlib.sha256(zipped.getvalue()).hexdigest()
    )
