"""Helpers shared by the sandbox tests: a fake clock, clients in-process and over loopback HTTP."""

from __future__ import annotations

import csv
import io
import json
import zipfile

import httpx

from reconciler.sandbox import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, make_app

BASE = "http://sandbox.local"
FX_CSV = (
    "Provider Exchange Rate Date,Currency (From),Currency (To),Exchange Rate,#Note\n"
    "2024-01-31,USD,EUR,0.92,first\n"
    "2024-01-31,USD,GBP,0.79,second\n"
    "2024-01-31,USD,JPY,147.1,third\n"
).encode()


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, start: float = 1_700_000_000.0):
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def sleep(self, seconds: float) -> None:
        """The sandbox's waits (injected latency) pass on this clock, not in real time."""
        self.advance(seconds)


def token(client: httpx.Client, client_id=DEFAULT_CLIENT_ID, client_secret=DEFAULT_CLIENT_SECRET) -> str:
    """A bearer token from POST /oauth/token."""
    response = client.post("/oauth/token", data={
        "client_id": client_id, "client_secret": client_secret, "grant_type": "client_credentials"})
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


def wsgi_client(app, *, authed: bool = True) -> httpx.Client:
    """An httpx client calling the app in-process, with a bearer token unless told otherwise."""
    client = httpx.Client(transport=httpx.WSGITransport(app=app), base_url=BASE)
    if authed:
        client.headers["Authorization"] = f"Bearer {token(client)}"
    return client


def new_sandbox(db_path=None, **kwargs):
    """(app, clock, authed in-process client) with a fake clock."""
    clock = kwargs.pop("clock", None) or FakeClock()
    app = make_app(db_path, clock=clock, **kwargs)
    return app, clock, wsgi_client(app)


def upload_bulk(client: httpx.Client, action_type: str, data: bytes, headers=None, **params) -> httpx.Response:
    """POST /v1/bulk with a file part and a params part."""
    return client.post(
        "/v1/bulk", files={"file": ("file", data, "application/octet-stream")},
        data={"params": json.dumps({"actionType": action_type, **params})}, headers=headers or {},
    )


def read_zipped_csv(content: bytes) -> list[dict]:
    """The rows of the single CSV inside a response zip."""
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        names = archive.namelist()
        assert len(names) == 1 and names[0].endswith(".csv")
        text = archive.read(names[0]).decode("utf-8")
    return list(csv.DictReader(io.StringIO(text, newline="")))


def zipped(files: dict) -> bytes:
    """A zip archive holding `files` (name -> bytes)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def new_job(client: httpx.Client, operation: str = "create", object_name: str = "passenger", **extra) -> dict:
    """POST /objects/jobs and return the job."""
    response = client.post("/objects/jobs", json={
        "namespace": "default", "object": object_name, "operation": operation, **extra})
    assert response.status_code == 200, response.text
    return response.json()


def upload_csv(client: httpx.Client, job_id: str, text: str) -> httpx.Response:
    """POST /objects/jobs/{id}/files with a text/csv body."""
    return client.post(f"/objects/jobs/{job_id}/files", content=text.encode(), headers={"Content-Type": "text/csv"})


def test_fake_clock_moves_only_when_told():
    clock = FakeClock(10.0)
    assert clock() == 10.0
    clock.advance(2.5)
    assert clock() == 12.5
