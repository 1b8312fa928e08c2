"""The sandbox over real loopback HTTP, shared by processes, and `reconciler sandbox serve` as a subprocess."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest

from reconciler.errors import ConfigError
from reconciler.sandbox import make_app, serve
from test_sandbox_helpers import FX_CSV, FakeClock, read_zipped_csv, token, upload_bulk, wsgi_client


@pytest.fixture
def served():
    clock = FakeClock()
    server = serve(make_app(clock=clock, pending_seconds=1, rows_per_second=50)).start()
    client = httpx.Client(base_url=server.url, timeout=10)
    client.headers["Authorization"] = f"Bearer {token(client)}"
    yield server, clock, client
    client.close()
    server.shutdown()


def test_url_names_the_real_loopback_port(served):
    server, clock, client = served
    assert server.url.startswith("http://127.0.0.1:") and not server.url.endswith(":0")


def test_full_mass_updater_flow_over_http(served):
    server, clock, client = served
    response = upload_bulk(client, "ImportFXRate", FX_CSV, headers={"Zuora-Track-Id": "t-1"})
    assert response.status_code == 200 and response.headers["Zuora-Track-Id"] == "t-1"
    key = response.json()["bulkKey"]
    assert client.get(f"/v1/bulk/{key}").json()["status"] == "Pending"
    clock.advance(10)
    body = client.get(f"/v1/bulk/{key}").json()
    assert body["status"] == "Completed" and body["outputURL"].startswith(server.url + "/v1/files/")
    download = client.get(body["outputURL"])
    assert download.headers["Content-Type"] == "application/zip;charset=UTF-8"
    assert [row["Success"] for row in read_zipped_csv(download.content)] == ["Y", "Y", "Y"]


def test_custom_object_flow_with_a_streamed_chunked_upload(served):
    server, clock, client = served
    job = client.post("/objects/jobs", json={"namespace": "default", "object": "car", "operation": "create"}).json()

    def chunks():
        yield b"make__c,seats__c\n"
        for i in range(100):
            yield b"model-%d,%d\n" % (i, i % 7)

    uploaded = client.post(f"/objects/jobs/{job['Id']}/files", content=chunks(), headers={"Content-Type": "text/csv"})
    assert uploaded.status_code == 200 and uploaded.json()["status"] == "in_progress"
    clock.advance(10)
    assert client.get(f"/objects/jobs/{job['Id']}").json()["recordsProcessed"] == 100
    assert client.get("/_sandbox/state").json()["records"] == {"car": 100}


def test_dozens_of_concurrent_requests(served):
    server, clock, client = served
    results = []

    def work(i):
        with httpx.Client(base_url=server.url, headers=dict(client.headers), timeout=30) as own:
            while True:  # a twin with the same key may be in flight: 409 means retry with the same key
                response = upload_bulk(own, "ImportFXRate", FX_CSV, headers={"Idempotency-Key": f"k{i % 20}"})
                if response.status_code != 409:
                    break
                time.sleep(0.01)
            key = response.json()["bulkKey"]
            results.append((i % 20, key, own.get(f"/v1/bulk/{key}").status_code))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 40 and all(status == 200 for _, _, status in results)
    by_key = {}
    for idem, key, _ in results:
        by_key.setdefault(idem, set()).add(key)
    assert all(len(keys) == 1 for keys in by_key.values())  # same Idempotency-Key, same mass action
    assert len(client.get("/_sandbox/state").json()["mass_actions"]) == 20


def test_dropped_connection_over_http_gets_no_response_but_takes_effect(served):
    server, clock, client = served
    client.post("/_sandbox/faults", json={"drop_rate": 1.0})
    with pytest.raises(httpx.RemoteProtocolError):
        client.post("/objects/jobs", json={"namespace": "default", "object": "car", "operation": "create"})
    client.post("/_sandbox/faults", json={})
    assert len(client.get("/_sandbox/state").json()["custom_object_jobs"]) == 1
    assert client.get("/objects/jobs").status_code == 200  # the server is still fine


def _send_cut_short(server, request: httpx.Request, body: bytes) -> None:
    """Send `request`'s head and then `body` (short of what the head announces) and hang up, as a client
    killed mid-upload does."""
    import socket

    host, port = server.url.removeprefix("http://").split(":")
    head = [f"{request.method} {request.url.raw_path.decode()} HTTP/1.1"]
    head += [f"{name.decode()}: {value.decode()}" for name, value in request.headers.raw]
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall("\r\n".join(head).encode() + b"\r\n\r\n" + body)
        sock.shutdown(socket.SHUT_WR)
        sock.recv(65536)  # the server hangs up without an answer


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_body_cut_short_is_no_request_and_its_key_stays_free(served, framing):
    """A client that dies mid-body sent no request: nothing happens and nothing is stored under its key,
    so the retry with the same key is handled afresh (a stored refusal would be replayed to it forever)."""
    server, clock, client = served
    job = client.post("/objects/jobs", json={"namespace": "default", "object": "car", "operation": "create"}).json()
    path, data = f"/objects/jobs/{job['Id']}/files", b"make__c,seats__c\n" + b"model-x,4\n" * 50
    headers = {"Content-Type": "text/csv", "Idempotency-Key": "upload-1"}
    if framing == "chunked":
        request = client.build_request("POST", path, content=iter([data]), headers=headers)
        cut = b"%x\r\n" % len(data) + data[:40]
    else:
        request = client.build_request("POST", path, content=data, headers=headers)
        cut = data[:40]
    _send_cut_short(server, request, cut)
    assert client.get(f"/objects/jobs/{job['Id']}").json()["status"] == "pending"
    retried = client.post(path, content=data, headers=headers)
    assert retried.status_code == 200 and retried.json()["status"] == "in_progress", retried.text
    assert "Idempotent-Replayed" not in retried.headers


def test_oversized_upload_over_http_gets_its_413(served):
    server, clock, client = served
    response = upload_bulk(client, "ImportFXRate", b"x" * (5 * 1024 * 1024))
    assert response.status_code == 413 and response.json()["success"] is False
    assert client.get("/objects/jobs").status_code == 200


def test_gzip_over_http(served):
    server, clock, client = served
    import gzip

    body = gzip.compress(json.dumps({"namespace": "default", "object": "car", "operation": "delete"}).encode())
    response = client.post("/objects/jobs", content=body,
                           headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})
    assert response.status_code == 200 and response.json()["status"] == "accepted"


def test_two_processes_share_one_tenant(tmp_path):
    db = str(tmp_path / "shared.db")
    script = textwrap.dedent("""
        import json, sys
        sys.path.insert(0, sys.argv[2])
        from reconciler.sandbox import make_app
        from test_sandbox_helpers import FX_CSV, upload_bulk, wsgi_client
        client = wsgi_client(make_app(sys.argv[1]))
        keys = [upload_bulk(client, "ImportFXRate", FX_CSV).json()["bulkKey"] for _ in range(15)]
        job = client.post("/objects/jobs", json={"namespace": "default", "object": "car", "operation": "create"})
        print(json.dumps({"keys": keys, "job": job.json()["Id"]}))
    """)
    tests_dir = str(Path(__file__).parent)
    child = subprocess.Popen([sys.executable, "-c", script, db, tests_dir], stdout=subprocess.PIPE, text=True)
    mine = wsgi_client(make_app(db))
    own_keys = [upload_bulk(mine, "ImportFXRate", FX_CSV).json()["bulkKey"] for _ in range(15)]
    out, _ = child.communicate(timeout=60)
    assert child.returncode == 0
    theirs = json.loads(out)
    dump = mine.get("/_sandbox/state").json()
    assert {m["bulkKey"] for m in dump["mass_actions"]} == set(own_keys) | set(theirs["keys"])
    assert mine.get(f"/v1/bulk/{theirs['keys'][0]}").status_code == 200
    assert mine.get(f"/objects/jobs/{theirs['job']}").json()["status"] == "pending"
    mine.post("/_sandbox/clock", json={"advance_seconds": 100})
    other = wsgi_client(make_app(db))  # a third "process" sees the advanced clock
    assert other.get(f"/v1/bulk/{theirs['keys'][0]}").json()["status"] == "Completed"


def _first_line(proc: subprocess.Popen, timeout: float) -> str:
    """The process's first stdout line, read in a thread so a hung or silent process fails the test in time."""
    lines = []
    reader = threading.Thread(target=lambda: lines.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    if not lines:
        proc.kill()
        pytest.fail(f"`sandbox serve` printed no line within {timeout} s; stderr: {proc.communicate()[1]}")
    return lines[0].strip()


def _ignores(pid: int, signum: int) -> bool:
    """Whether the process ignores `signum` (its SigIgn mask in /proc; False where there is no /proc)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    mask = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigIgn:")), 16)
    return bool(mask & (1 << (signum - 1)))


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_reconciler_sandbox_serve_subprocess(tmp_path, stop_signal):
    db = tmp_path / "served.db"
    # A shell starts background jobs with SIGINT ignored and children inherit that, so a pytest run
    # with `&` would hand the server a SIGINT it never sees. With a handler here the child starts with
    # the default disposition: exec resets handlers to SIG_DFL but keeps SIG_IGN.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "reconciler", "sandbox", "serve", "--db", str(db), "--pending-seconds", "0",
             "--rows-per-second", "1000"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
    finally:
        if previous is not None:  # None: a handler not set from Python, which we cannot put back
            signal.signal(signal.SIGINT, previous)
    try:
        line = _first_line(proc, timeout=60)
        assert line.startswith("Sandbox listening on http://127.0.0.1:") and not line.endswith(":0"), line
        url = line.rsplit(" ", 1)[1]
        # Ready means answering: a response comes only from inside serve_forever, after the SIGTERM handler
        # is installed. Only then is the signal sent.
        with httpx.Client(base_url=url, timeout=60) as client:
            client.headers["Authorization"] = f"Bearer {token(client)}"
            assert upload_bulk(client, "ImportFXRate", FX_CSV).status_code == 200
        assert proc.poll() is None, proc.communicate()[1]
        assert not _ignores(proc.pid, stop_signal), "the server ignores the signal: the test would prove nothing"
        proc.send_signal(stop_signal)
        try:
            _, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail(f"`sandbox serve` did not stop within 60 s of {stop_signal.name}; "
                        f"stderr: {proc.communicate()[1]}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert len(wsgi_client(make_app(str(db))).get("/_sandbox/state").json()["mass_actions"]) == 1


def test_serve_command_refuses_a_client_id_zuora_would_refuse():
    from reconciler.commands.sandbox import serve as serve_command

    out = io.StringIO()
    with pytest.raises(ConfigError, match="36 characters"):
        serve_command(out, host="127.0.0.1", port=0, db=None, client_id="short", client_secret=None,
                      pending_seconds=None, rows_per_second=None)
    with pytest.raises(ConfigError, match="42 characters"):
        serve_command(out, host="127.0.0.1", port=0, db=None, client_id=str(uuid.uuid4()), client_secret="s" * 43,
                      pending_seconds=None, rows_per_second=None)
    assert out.getvalue() == ""


def test_serve_command_refuses_a_db_that_is_not_sqlite(tmp_path):
    from reconciler.commands.sandbox import serve as serve_command

    bogus = tmp_path / "not.db"
    bogus.write_bytes(b"this is not a database" * 100)
    with pytest.raises(ConfigError, match="--db"):
        serve_command(io.StringIO(), host="127.0.0.1", port=0, db=str(bogus), client_id=None, client_secret=None,
                      pending_seconds=None, rows_per_second=None)


def test_make_app_creates_the_db_directory_and_refuses_foreign_or_newer_files(tmp_path):
    import sqlite3

    nested = tmp_path / "state" / "local" / "sandbox.db"
    make_app(str(nested))
    assert nested.exists()
    foreign = tmp_path / "not.db"
    foreign.write_bytes(b"x" * 4096)
    with pytest.raises(ValueError, match="sandbox database"):
        make_app(str(foreign))
    conn = sqlite3.connect(nested)
    conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(ValueError, match="newer sandbox"):
        make_app(str(nested))
