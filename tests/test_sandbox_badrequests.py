"""Bad input never gets a 500 or a traceback: each bad request gets its status and its family's error shape."""

from __future__ import annotations

import gzip

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.sandbox import make_app, serve
from test_sandbox_helpers import FX_CSV, upload_bulk, wsgi_client

V1, CO, OAUTH, ADMIN, OTHER = "v1", "co", "oauth", "admin", "other"
MULTIPART = "multipart/form-data; boundary=xyz"


def multipart(*parts: tuple[str, bytes]) -> bytes:
    body = b"".join(
        b'--xyz\r\nContent-Disposition: form-data; name="%s"\r\n\r\n%s\r\n' % (name.encode(), data)
        for name, data in parts)
    return body + b"--xyz--\r\n"


PARAMS = ("params", b'{"actionType": "ImportFXRate"}')
FILE = ("file", FX_CSV)
CASES = [
    # (id, method, path, headers, body, status, shape)
    ("bulk-json-body", "POST", "/v1/bulk", {"Content-Type": "application/json"}, b"{}", 400, V1),
    ("bulk-no-boundary", "POST", "/v1/bulk", {"Content-Type": "multipart/form-data"}, b"x", 400, V1),
    ("bulk-garbage-multipart", "POST", "/v1/bulk", {"Content-Type": MULTIPART}, b"garbage", 400, V1),
    ("bulk-part-without-name", "POST", "/v1/bulk", {"Content-Type": MULTIPART},
     b"--xyz\r\nContent-Disposition: form-data\r\n\r\nx\r\n--xyz--\r\n", 400, V1),
    ("bulk-no-params", "POST", "/v1/bulk", {"Content-Type": MULTIPART}, multipart(FILE), 400, V1),
    ("bulk-params-not-json", "POST", "/v1/bulk", {"Content-Type": MULTIPART},
     multipart(("params", b"{actionType"), FILE), 400, V1),
    ("bulk-params-array", "POST", "/v1/bulk", {"Content-Type": MULTIPART}, multipart(("params", b"[]"), FILE), 400, V1),
    ("bulk-params-latin1", "POST", "/v1/bulk", {"Content-Type": MULTIPART}, multipart(("params", b"\xff"), FILE), 400, V1),
    ("bulk-no-action", "POST", "/v1/bulk", {"Content-Type": MULTIPART}, multipart(("params", b"{}"), FILE), 400, V1),
    ("bulk-bad-action", "POST", "/v1/bulk", {"Content-Type": MULTIPART},
     multipart(("params", b'{"actionType": "DropTables"}'), FILE), 400, V1),
    ("bulk-no-file", "POST", "/v1/bulk", {"Content-Type": MULTIPART}, multipart(PARAMS), 400, V1),
    ("bulk-empty-file", "POST", "/v1/bulk", {"Content-Type": MULTIPART}, multipart(PARAMS, ("file", b"")), 400, V1),
    ("bulk-bad-gzip", "POST", "/v1/bulk", {"Content-Type": MULTIPART, "Content-Encoding": "gzip"}, b"nope", 400, V1),
    ("bulk-gzip-bomb", "POST", "/v1/bulk", {"Content-Type": MULTIPART, "Content-Encoding": "gzip"},
     gzip.compress(b"\0" * (6 * 1024 * 1024)), 413, V1),
    ("bulk-get-collection", "GET", "/v1/bulk", {}, b"", 405, V1),
    ("bulk-delete", "DELETE", "/v1/bulk/abc", {}, b"", 405, V1),
    ("bulk-post-stop", "POST", "/v1/bulk/abc/stop", {}, b"", 405, V1),
    ("bulk-unknown-stop", "PUT", "/v1/bulk/abc/stop", {}, b"", 404, V1),
    ("v1-unknown-path", "GET", "/v1/accounts", {}, b"", 404, V1),
    ("co-text-body", "POST", "/objects/jobs", {"Content-Type": "text/plain"}, b"{}", 400, CO),
    ("co-bad-json", "POST", "/objects/jobs", {"Content-Type": "application/json"}, b"{nope", 400, CO),
    ("co-latin1-json", "POST", "/objects/jobs", {"Content-Type": "application/json"}, b'{"a": "\xff"}', 400, CO),
    ("co-empty-body", "POST", "/objects/jobs", {"Content-Type": "application/json"}, b"", 400, CO),
    ("co-null-filter-value", "POST", "/objects/jobs", {"Content-Type": "application/json"},
     b'{"namespace":"default","object":"a","operation":"delete","filter":{"conditions":[{"field":"x","operator":"EQ",'
     b'"value":null}]}}', 400, CO),
    ("co-filter-not-object", "POST", "/objects/jobs", {"Content-Type": "application/json"},
     b'{"namespace":"default","object":"a","operation":"delete","filter":"all"}', 400, CO),
    ("co-huge-json", "POST", "/objects/jobs", {"Content-Type": "application/json"}, b" " * (1024 * 1024 + 1), 413, CO),
    ("co-delete-collection", "DELETE", "/objects/jobs", {}, b"", 405, CO),
    ("co-unknown-path", "GET", "/objects/records", {}, b"", 404, CO),
    ("co-put-cancel", "PUT", "/objects/jobs/x/cancel", {}, b"", 405, CO),
    ("co-unknown-errors", "GET", "/objects/jobs/x/errors", {}, b"", 404, CO),
    ("oauth-get", "GET", "/oauth/token", {}, b"", 405, OAUTH),
    ("oauth-latin1", "POST", "/oauth/token", {"Content-Type": "application/x-www-form-urlencoded"}, b"client_id=\xff",
     400, OAUTH),
    ("oauth-unknown", "POST", "/oauth/authorize", {}, b"", 404, OAUTH),
    ("admin-post-state", "POST", "/_sandbox/state", {}, b"", 405, ADMIN),
    ("admin-bad-json", "POST", "/_sandbox/clock", {"Content-Type": "application/json"}, b"{", 400, ADMIN),
    ("admin-json-list", "POST", "/_sandbox/faults", {"Content-Type": "application/json"}, b"[]", 400, ADMIN),
    ("admin-unknown", "GET", "/_sandbox/nothing", {}, b"", 404, ADMIN),
    ("admin-records-no-object", "GET", "/_sandbox/records", {}, b"", 400, ADMIN),
    ("root", "GET", "/", {}, b"", 404, OTHER),
    ("favicon", "GET", "/favicon.ico", {}, b"", 404, OTHER),
]


def assert_shape(response: httpx.Response, shape: str) -> None:
    assert response.headers["Content-Type"].startswith("application/json")
    assert len(response.headers["Zuora-Request-Id"]) == 36
    body = response.json()
    if shape == V1:
        assert set(body) == {"success", "processId", "reasons"} and body["success"] is False
        [reason] = body["reasons"]
        assert isinstance(reason["code"], int) and len(str(reason["code"])) == 8 and reason["message"]
    elif shape in (CO, OAUTH):
        assert set(body) == {"code", "message"} and isinstance(body["code"], int) and len(str(body["code"])) == 8
    elif shape == ADMIN:
        assert set(body) == {"error"} and body["error"]
    else:
        assert set(body) == {"message"} and body["message"]


@pytest.fixture(scope="module")
def clients():
    app = make_app()
    server = serve(app).start()
    in_process = wsgi_client(app)
    over_http = httpx.Client(base_url=server.url, headers={"Authorization": in_process.headers["Authorization"]},
                             timeout=10)
    yield {"wsgi": in_process, "http": over_http}
    over_http.close()
    server.shutdown()


@pytest.mark.parametrize("transport", ["wsgi", "http"])
@pytest.mark.parametrize("case", CASES, ids=[case[0] for case in CASES])
def test_bad_request_gets_its_status_and_shape(clients, transport, case):
    _, method, path, headers, body, status, shape = case
    response = clients[transport].request(method, path, headers=headers, content=body)
    assert response.status_code == status, response.text
    assert_shape(response, shape)
    if status == 405:
        assert response.headers["Allow"]


def test_nothing_bad_was_created(clients):
    state = clients["wsgi"].get("/_sandbox/state").json()
    assert state["mass_actions"] == [] and state["custom_object_jobs"] == []


PATHS = ["/v1/bulk", "/v1/bulk/{key}", "/v1/bulk/{key}/stop", "/v1/files/{file}", "/objects/jobs",
         "/objects/jobs/{job}", "/objects/jobs/{job}/files", "/objects/jobs/{job}/cancel", "/objects/jobs/{job}/errors",
         "/oauth/token", "/_sandbox/clock", "/_sandbox/faults"]
TYPES = ["text/csv", "application/json", "multipart/form-data; boundary=b", "application/x-www-form-urlencoded", ""]


@pytest.fixture(scope="module")
def fuzz():
    """An authed client and the ids of a real mass action, its response file and a job."""
    client = wsgi_client(make_app(pending_seconds=0))
    key = upload_bulk(client, "ImportFXRate", FX_CSV).json()["bulkKey"]
    client.post("/_sandbox/clock", json={"advance_seconds": 60})
    file_id = client.get(f"/v1/bulk/{key}").json()["outputURL"].rsplit("/", 1)[1]
    job = client.post("/objects/jobs", json={"namespace": "default", "object": "passenger", "operation": "create"})
    return client, {"key": key, "file": file_id, "job": job.json()["Id"]}


@settings(max_examples=150, deadline=None)
@given(method=st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE"]), path=st.sampled_from(PATHS),
       content_type=st.sampled_from(TYPES), body=st.binary(max_size=300),
       encoding=st.sampled_from([None, "gzip", "identity"]), key=st.sampled_from([None, "k1", "k" * 300]))
def test_random_requests_never_get_a_500(fuzz, method, path, content_type, body, encoding, key):
    client, ids = fuzz
    headers = {"Content-Type": content_type}
    if encoding:
        headers["Content-Encoding"] = encoding
    if key:
        headers["Idempotency-Key"] = key
    response = client.request(method, path.format(**ids), headers=headers, content=body)
    assert response.status_code < 500, (response.status_code, response.text)
    assert len(response.headers["Zuora-Request-Id"]) == 36
