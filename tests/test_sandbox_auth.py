"""OAuth client credentials, bearer checks, token expiry and the headers every response carries."""

from __future__ import annotations

import io
import re
import threading
import uuid
from urllib.parse import urlencode

import pytest

from reconciler.sandbox import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, make_app
from test_sandbox_helpers import FX_CSV, FakeClock, new_sandbox, token, upload_bulk, wsgi_client

WWW_AUTHENTICATE = "Basic realm=Zuora API, ZSession realm=Zuora API, Bearer realm=Zuora API"


def form(**overrides):
    data = {"client_id": DEFAULT_CLIENT_ID, "client_secret": DEFAULT_CLIENT_SECRET, "grant_type": "client_credentials"}
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


def test_default_client_is_documented_and_sized_as_zuora_requires():
    import reconciler.sandbox as sandbox

    assert len(DEFAULT_CLIENT_ID) == 36 and len(DEFAULT_CLIENT_SECRET) <= 42
    assert DEFAULT_CLIENT_ID in sandbox.__doc__ and DEFAULT_CLIENT_SECRET in sandbox.__doc__


def test_token_response_has_the_documented_fields():
    client = wsgi_client(make_app(), authed=False)
    response = client.post("/oauth/token", data=form())
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"access_token", "expires_in", "jti", "scope", "token_type"}
    assert body["expires_in"] == 3599 and body["token_type"] == "bearer"
    assert re.fullmatch(r"[0-9a-f]{32}", body["access_token"])
    assert body["scope"].split()[0].startswith("user.")


def test_configured_client_replaces_the_default():
    custom_id = str(uuid.uuid4())
    client = wsgi_client(make_app(client_id=custom_id, client_secret="s3cret"), authed=False)
    assert client.post("/oauth/token", data=form()).status_code == 401
    assert token(client, custom_id, "s3cret")


@pytest.mark.parametrize("overrides", [
    {"client_secret": "wrong"},
    {"client_id": "x" * 36},
])
def test_bad_credentials_get_the_documented_401(overrides):
    client = wsgi_client(make_app(), authed=False)
    response = client.post("/oauth/token", data=form(**overrides))
    assert response.status_code == 401
    assert response.json() == {"message": "Authentication error"}
    assert response.headers["WWW-Authenticate"] == WWW_AUTHENTICATE


@pytest.mark.parametrize("overrides, fragment", [
    ({"grant_type": "password"}, "grant_type"),
    ({"grant_type": None}, "grant_type"),
    ({"client_id": None}, "client_id"),
    ({"client_secret": None}, "client_secret"),
    ({"client_id": "short"}, "36 characters"),
    ({"client_secret": "s" * 43}, "42 characters"),
])
def test_malformed_token_requests_get_400_code_and_message(overrides, fragment):
    client = wsgi_client(make_app(), authed=False)
    response = client.post("/oauth/token", data=form(**overrides))
    assert response.status_code == 400
    body = response.json()
    assert set(body) == {"code", "message"} and isinstance(body["code"], int) and fragment in body["message"]


def test_token_request_must_be_form_encoded():
    client = wsgi_client(make_app(), authed=False)
    response = client.post("/oauth/token", json=form())
    assert response.status_code == 400 and "x-www-form-urlencoded" in response.json()["message"]


@pytest.mark.parametrize("path", ["/v1/bulk/0123456789abcdef0123456789abcdef", "/objects/jobs", "/v1/nothing-here"])
@pytest.mark.parametrize("authorization", [None, "Bearer nope", "Basic abc", "Bearer "])
def test_zuora_endpoints_require_a_valid_bearer_token(path, authorization):
    client = wsgi_client(make_app(), authed=False)
    headers = {"Authorization": authorization} if authorization else {}
    response = client.get(path, headers=headers)
    assert response.status_code == 401
    assert response.json() == {"message": "Authentication error"}
    assert response.headers["WWW-Authenticate"] == WWW_AUTHENTICATE


def test_tokens_expire_on_the_sandbox_clock():
    clock = FakeClock()
    app = make_app(clock=clock, token_seconds=60)
    client = wsgi_client(app)
    assert client.get("/objects/jobs").status_code == 200
    clock.advance(59)
    assert client.get("/objects/jobs").status_code == 200
    clock.advance(1)
    assert client.get("/objects/jobs").status_code == 401


def test_admin_clock_advance_expires_tokens_too():
    app, _, client = new_sandbox()
    assert client.get("/objects/jobs").status_code == 200
    assert client.post("/_sandbox/clock", json={"advance_seconds": 3600}).status_code == 200
    response = client.get("/objects/jobs")
    assert response.status_code == 401
    client.headers["Authorization"] = f"Bearer {token(client)}"
    assert client.get("/objects/jobs").status_code == 200


def test_every_response_carries_a_request_id_and_echoes_the_track_id():
    app, _, client = new_sandbox()
    for method, path in [("GET", "/objects/jobs"), ("GET", "/v1/bulk/unknown"), ("GET", "/_sandbox/state"),
                         ("GET", "/nowhere"), ("POST", "/oauth/token")]:
        response = client.request(method, path, headers={"Zuora-Track-Id": "run-42"})
        assert len(response.headers["Zuora-Request-Id"]) == 36
        uuid.UUID(response.headers["Zuora-Request-Id"])
        assert response.headers["Zuora-Track-Id"] == "run-42"


@pytest.mark.parametrize("track_id", ["a" * 65, "has:colon", "semi;colon", 'quo"te', "apos'trophe"])
def test_invalid_track_ids_are_refused(track_id):
    app, _, client = new_sandbox()
    response = client.get("/objects/jobs", headers={"Zuora-Track-Id": track_id})
    assert response.status_code == 400 and "Zuora-Track-Id" in response.json()["message"]
    assert "Zuora-Track-Id" not in response.headers


def test_rate_limit_headers_on_zuora_endpoints_and_concurrency_headers_on_v1_only():
    app, _, client = new_sandbox()
    v1 = upload_bulk(client, "ImportFXRate", FX_CSV)
    objects = client.get("/objects/jobs")
    for response in (v1, objects):
        assert response.headers["RateLimit-Limit"].split(",")[0] == "50000"
        assert 0 < int(response.headers["RateLimit-Remaining"]) < 50000
        assert 1 <= int(response.headers["RateLimit-Reset"]) <= 60
    assert v1.headers["Concurrency-Limit-Type"] == "Default"
    assert int(v1.headers["Concurrency-Limit-Limit"]) == 40
    assert 0 <= int(v1.headers["Concurrency-Limit-Remaining"]) <= 40
    assert "Concurrency-Limit-Type" not in objects.headers
    assert "RateLimit-Limit" not in client.get("/_sandbox/state").headers


def test_token_calls_are_counted_in_the_auth_rate_window_not_the_api_one():
    # Reference C.1: requests are classed as AUTH (OAuth token) or API, each with its own limits.
    app, _, client = new_sandbox()
    before = client.get("/objects/jobs")
    token_response = client.post("/oauth/token", data=form())
    after = client.get("/objects/jobs")
    assert int(after.headers["RateLimit-Remaining"]) == int(before.headers["RateLimit-Remaining"]) - 1
    assert token_response.headers["RateLimit-Limit"].split(",")[0] == "2000"
    assert before.headers["RateLimit-Limit"].split(",")[0] == "50000"


class HeldRequests:
    """Requests driven straight through the WSGI app and held in flight inside start_response."""

    def __init__(self, app):
        self.app = app
        self.release = threading.Event()
        self.arrived = threading.Semaphore(0)
        self.threads = []

    def hold(self, method, path, body=b"", content_type=""):
        environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": "", "CONTENT_TYPE": content_type,
                   "CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body), "wsgi.url_scheme": "http",
                   "SERVER_NAME": "sandbox.local", "SERVER_PORT": "80"}

        def start_response(status, headers, exc_info=None):
            self.arrived.release()
            self.release.wait()

        thread = threading.Thread(target=self.app, args=(environ, start_response))
        thread.start()
        self.threads.append(thread)
        self.arrived.acquire()  # the request has its response and is still in flight

    def finish(self):
        self.release.set()
        for thread in self.threads:
            thread.join()


def test_token_requests_do_not_use_the_v1_concurrency_allowance():
    # Reference C.3: the OAuth token endpoint is unlimited and is not counted.
    app, _, client = new_sandbox()
    held = HeldRequests(app)
    try:
        body = urlencode(form()).encode()
        held.hold("POST", "/oauth/token", body, "application/x-www-form-urlencoded")
        response = client.get("/v1/bulk/" + "0" * 32)
    finally:
        held.finish()
    assert int(response.headers["Concurrency-Limit-Remaining"]) == 39


def test_v1_requests_beyond_the_concurrency_limit_get_429_retry_after_120():
    # Reference C.3: over the limit -> HTTP 429, Retry-After: 120, REST error code 50000070.
    app, _, client = new_sandbox()
    held = HeldRequests(app)
    try:
        for _ in range(40):
            held.hold("GET", "/v1/bulk/" + "0" * 32)
        refused = client.get("/v1/bulk/" + "0" * 32)
        objects = client.get("/objects/jobs")
    finally:
        held.finish()
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "120"
    assert refused.headers["Concurrency-Limit-Remaining"] == "0"
    assert int(refused.headers["RateLimit-Remaining"]) > 0  # the rate limit is not what ran out
    body = refused.json()
    assert body["success"] is False and [reason["code"] for reason in body["reasons"]] == [50000070]
    assert objects.status_code == 200
    assert client.get("/v1/bulk/" + "0" * 32).status_code == 404


@pytest.mark.parametrize("kwargs", [
    {"client_id": "too-short"}, {"client_secret": ""}, {"client_secret": "x" * 43},
    {"pending_seconds": -1}, {"rows_per_second": 0},
])
def test_make_app_refuses_bad_settings(kwargs):
    with pytest.raises(ValueError):
        make_app(**kwargs)
