"""A misbehaving Zuora: real loopback HTTP servers (http.server in a thread) that answer what Zuora never would.

Each test runs the real CLI (or the real client) against one: remote ids shaped like paths, a body
trickled one byte at a time, an endless body, two downloads of one result at once. Nothing of ours
is mocked; the server is the only fake.
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
import time
import zipfile
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

import pytest

from apply_support import cli, ledger_jobs, make_repo, settings_of
from reconciler.errors import RemoteError
from reconciler.model import Phase
from reconciler.zuora.client import ZuoraClient
from reconciler.zuora.auth import Credentials

FILE_ID = "402892c84c9285b1014c9293f5320007"
GOOD_KEY = "402892f04c97b89a014c97bb30a50003"

Route = Callable[[BaseHTTPRequestHandler], None]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    routes: dict[tuple[str, str], Route] = {}
    seen: list[str] = []

    def log_message(self, *args) -> None:  # quiet
        pass

    def _dispatch(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        path = self.path.split("?")[0]
        self.seen.append(f"{self.command} {path}")
        if self.command == "POST" and path == "/oauth/token":
            return send_json(self, {"access_token": "hostile-token-0123456789", "token_type": "bearer",
                                    "expires_in": 3599, "scope": "tenant.1", "jti": "j"})
        for (method, prefix), route in self.routes.items():
            if method == self.command and path.startswith(prefix):
                return route(self)
        send_json(self, {"success": False, "reasons": [{"code": 50000040, "message": "not found"}]}, status=404)

    do_GET = do_POST = do_PUT = do_PATCH = _dispatch


def send_json(handler: BaseHTTPRequestHandler, body: dict, status: int = 200) -> None:
    payload = json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(payload)))
    handler.end_headers()
    handler.wfile.write(payload)


@contextmanager
def hostile(routes: dict[tuple[str, str], Route]):
    """A loopback server answering OAuth and `routes` ((method, path prefix) -> handler); yields (url, seen)."""
    handler = type("Handler", (_Handler,), {"routes": routes, "seen": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler.seen
    finally:
        server.shutdown()
        server.server_close()


def response_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("response.csv", "Success,Error Message\nY,\n")
    return buffer.getvalue()


def repo_on(tmp_path: Path, url: str, *, yaml_extra: str = "") -> Path:
    repo = make_repo(tmp_path / "repo", url, mass=("fx-a",), create=(), delete=())
    if yaml_extra:
        with (repo / "reconciler.yaml").open("a") as handle:
            handle.write(yaml_extra)
    return repo


def all_files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def lock_is_free(repo: Path) -> bool:
    proc = cli(repo, "lock", "status", "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["locked"] is False


# --- A. a remote id shaped like a path never becomes one ------------------------------------------------


def test_a_bulk_key_that_climbs_out_of_the_repo_is_refused_and_the_intent_stays_in_doubt(tmp_path):
    # From state/<env>/results/fx-a/g1-x, six `..` reach tmp_path: the archive would land in tmp_path/sentinel.
    evil = "x/../../../../../../sentinel/PWNED"
    mass_action = {"success": True, "status": "Completed", "actionType": "ImportFXRate", "totalCount": "3",
                   "processedCount": "3", "successCount": "3", "errorCount": "0", "bulkKey": evil}

    def download(handler: BaseHTTPRequestHandler) -> None:
        payload = response_zip()
        handler.send_response(200)
        handler.send_header("Content-Type", "application/zip;charset=UTF-8")
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)

    holder: dict[str, str] = {}
    routes: dict[tuple[str, str], Route] = {
        ("POST", "/v1/bulk"): lambda h: send_json(h, {"success": True, "bulkKey": evil}),
        ("GET", "/v1/bulk/"): lambda h: send_json(h, {**mass_action,
                                                     "outputURL": f"{holder['url']}/v1/files/{FILE_ID}"}),
        ("GET", "/v1/files/"): download,
    }
    with hostile(routes) as (url, seen):
        holder["url"] = url
        repo = repo_on(tmp_path, url)
        before = all_files(tmp_path)
        proc = cli(repo, "apply", "--auto-approve", "--wait", "--timeout", "30", timeout=60)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "not 32 hexadecimal characters" in proc.stdout + proc.stderr
    assert not (tmp_path / "sentinel").exists()
    assert not Path("/tmp/sentinel/PWNED.csv.zip").exists()
    written = all_files(tmp_path) - before
    assert all(name.startswith("repo/state/") for name in written), written
    assert not any("PWNED" in name for name in written), written
    assert "GET /v1/files/" + FILE_ID not in seen  # nothing was downloaded, let alone archived
    (job,) = ledger_jobs(repo)
    assert job.phase == Phase.INTENT and job.remote_id is None  # in doubt: neither created nor rejected
    assert lock_is_free(repo)


def test_a_custom_object_job_id_that_is_not_a_uuid_is_refused(tmp_path):
    routes: dict[tuple[str, str], Route] = {
        ("POST", "/objects/jobs"): lambda h: send_json(h, {"Id": "../../../etc", "status": "accepted"}),
        ("GET", "/objects/jobs"): lambda h: send_json(h, {"jobs": [{"Id": "a/b", "status": "completed"}]}),
    }
    with hostile(routes) as (url, _):
        with ZuoraClient(base_url=url, credentials=Credentials(access_token="static-token-value-123")) as client:
            with pytest.raises(RemoteError, match="is not a UUID") as caught:
                client.create_co_job(namespace="default", object="car", operation="delete", idempotency_key="k1")
            assert caught.value.status is None  # not definitive: the job may exist
            with pytest.raises(RemoteError, match="is not a UUID"):
                list(client.list_co_jobs())


def test_an_archive_path_is_built_only_from_plain_parts_inside_state(tmp_path):
    from reconciler.engine.refresh import UnsafePath, archive_path

    repo = repo_on(tmp_path, "http://127.0.0.1:9")
    settings = settings_of(repo)
    good = archive_path(settings, "fx-a", 1, GOOD_KEY, ".csv.zip")
    assert good == settings.results_dir / "fx-a" / f"g1-{GOOD_KEY}.csv.zip"
    for name, remote_id in (("fx-a", "x/../../y"), ("fx-a", ".."), ("..", GOOD_KEY), ("fx-a", "a\\b"),
                            ("fx-a", "")):
        with pytest.raises(UnsafePath):
            archive_path(settings, name, 1, remote_id, ".csv.zip")
    # A symlink planted under results/ that leads out of state/ is refused too.
    outside = tmp_path / "outside"
    outside.mkdir()
    settings.results_dir.mkdir(parents=True)
    (settings.results_dir / "fx-a").symlink_to(outside)
    with pytest.raises(UnsafePath, match="resolves outside"):
        archive_path(settings, "fx-a", 1, GOOD_KEY, ".csv.zip")


# --- B. a slow or endless answer ends the call, and --timeout ends the run -------------------------------


def trickle(handler: BaseHTTPRequestHandler) -> None:
    """Headers at once, then one byte of a never-ending JSON body every 0.5 s."""
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", "100000")
    handler.end_headers()
    handler.wfile.write(b"{")
    try:
        for _ in range(400):
            time.sleep(0.5)
            handler.wfile.write(b" ")
            handler.wfile.flush()
    except OSError:
        pass  # the client hung up, as it should


def test_b_a_trickling_answer_is_cut_at_the_call_deadline_and_apply_ends(tmp_path):
    with hostile({("POST", "/v1/bulk"): trickle}) as (url, seen):
        repo = repo_on(tmp_path, url, yaml_extra="zuora:\n  call_timeout: 2\n")
        started = time.monotonic()
        proc = cli(repo, "apply", "--auto-approve", timeout=90)
        elapsed = time.monotonic() - started
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output
    assert "no complete answer within 2 s" in output and "zuora.call_timeout" in output
    # Six attempts of 2 s each plus backoff at most, not the 200 s the trickle would take.
    assert elapsed < 40, elapsed
    assert seen.count("POST /v1/bulk") >= 1
    (job,) = ledger_jobs(repo)
    assert job.phase == Phase.INTENT  # the POST's outcome is unknown, not rejected
    assert lock_is_free(repo)


def test_b_apply_timeout_is_a_hard_bound_on_the_whole_run(tmp_path):
    # The default call deadline (120 s) would let the trickle run on; --timeout 4 ends the whole run.
    with hostile({("POST", "/v1/bulk"): trickle}) as (url, _):
        repo = repo_on(tmp_path, url)
        started = time.monotonic()
        proc = cli(repo, "apply", "--auto-approve", "--wait", "--timeout", "4", timeout=90)
        elapsed = time.monotonic() - started
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output
    assert "timed out after 4 s" in output
    assert elapsed < 15, elapsed  # 4 s, plus the process's start-up
    assert lock_is_free(repo)


def test_b_status_wait_timeout_is_a_hard_bound_too(tmp_path):
    # The job exists; every status read trickles. `status --wait --timeout 3` ends at 3 s, not at the
    # 120 s call deadline, says the wait timed out, and leaves the job as recorded.
    routes: dict[tuple[str, str], Route] = {
        ("POST", "/v1/bulk"): lambda h: send_json(h, {"success": True, "bulkKey": GOOD_KEY}),
        ("GET", "/v1/bulk/"): trickle,
    }
    with hostile(routes) as (url, seen):
        repo = repo_on(tmp_path, url)
        submitted = cli(repo, "apply", "--auto-approve", timeout=60)
        assert submitted.returncode == 0, submitted.stdout + submitted.stderr
        started = time.monotonic()
        proc = cli(repo, "status", "--wait", "--timeout", "3", timeout=90)
        elapsed = time.monotonic() - started
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output
    assert "timed out after 3s; still running: fx-a" in output
    assert elapsed < 12, elapsed  # 3 s, plus the process's start-up
    assert f"GET /v1/bulk/{GOOD_KEY}" in seen
    (job,) = ledger_jobs(repo)
    assert job.remote_id == GOOD_KEY and job.phase == Phase.ACTIVE
    assert lock_is_free(repo)


def test_b_an_oversized_json_answer_is_refused_without_filling_memory(tmp_path):
    sent: list[int] = []

    def huge(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Transfer-Encoding", "chunked")  # no Content-Length to refuse up front
        handler.end_headers()
        block = b" " * (1 << 20)
        try:
            handler.wfile.write(b"%x\r\n{\r\n" % 1)
            for _ in range(800):  # 800 MB if nobody stops reading
                handler.wfile.write(b"%x\r\n%s\r\n" % (len(block), block))
                sent.append(len(block))
            handler.wfile.write(b"0\r\n\r\n")
        except OSError:
            pass

    with hostile({("POST", "/v1/bulk"): huge}) as (url, _):
        repo = repo_on(tmp_path, url)
        started = time.monotonic()
        proc = cli(repo, "apply", "--auto-approve", timeout=90)
        elapsed = time.monotonic() - started
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output
    assert "larger than 8 MB" in output
    assert sum(sent) < 100 * (1 << 20), sum(sent)  # the client stopped reading long before 800 MB
    assert elapsed < 30, elapsed
    (job,) = ledger_jobs(repo)
    assert job.phase == Phase.INTENT
    assert lock_is_free(repo)


def test_b_an_oversized_result_file_is_refused_and_nothing_is_left_behind(tmp_path):
    from reconciler.zuora.operations import MAX_RESULT_FILE_BYTES

    def endless_file(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "application/zip")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        block = b"\0" * (1 << 20)
        try:
            for _ in range((MAX_RESULT_FILE_BYTES >> 20) + 40):
                handler.wfile.write(b"%x\r\n%s\r\n" % (len(block), block))
            handler.wfile.write(b"0\r\n\r\n")
        except OSError:
            pass

    dest = tmp_path / "results" / "out.csv.zip"
    with hostile({("GET", "/v1/files/"): endless_file}) as (url, _):
        with ZuoraClient(base_url=url, credentials=Credentials(access_token="static-token-value-123")) as client:
            with pytest.raises(RemoteError, match="larger than 64 MB"):
                client.download_file(f"{url}/v1/files/{FILE_ID}", dest)
    assert list(dest.parent.iterdir()) == []  # neither the file nor a temporary one


# --- C. two downloads of one result never share a temporary file ------------------------------------------


def test_c_two_concurrent_downloads_of_one_result_both_succeed(tmp_path):
    payload = response_zip() * 50
    half = len(payload) // 2
    arrived = threading.Semaphore(0)
    release = {1: threading.Event(), 2: threading.Event()}
    order: list[int] = []
    lock = threading.Lock()

    def slow_file(handler: BaseHTTPRequestHandler) -> None:
        with lock:
            order.append(len(order) + 1)
            mine = order[-1]
        handler.send_response(200)
        handler.send_header("Content-Type", "application/zip")
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload[:half])
        handler.wfile.flush()
        arrived.release()
        release[mine].wait(10)
        handler.wfile.write(payload[half:])
        handler.wfile.flush()

    dest = tmp_path / "results" / "fx-a" / f"g1-{GOOD_KEY}.csv.zip"
    outcomes: dict[int, object] = {}

    def download(n: int, url: str) -> None:
        with ZuoraClient(base_url=url, credentials=Credentials(access_token="static-token-value-123")) as client:
            try:
                outcomes[n] = client.download_file(f"{url}/v1/files/{FILE_ID}", dest)
            except Exception as exc:  # noqa: BLE001 - reported by the assertion below
                outcomes[n] = exc

    with hostile({("GET", "/v1/files/"): slow_file}) as (url, _):
        threads = {n: threading.Thread(target=download, args=(n, url)) for n in (1, 2)}
        for thread in threads.values():
            thread.start()
        assert arrived.acquire(timeout=10) and arrived.acquire(timeout=10)
        time.sleep(0.3)  # both clients have their first half on disk
        # The first download ends (renamed onto dest) while the second is still writing its half.
        release[1].set()
        threads[1].join(10)
        release[2].set()
        threads[2].join(10)
    expected = hashlib.sha256(payload).hexdigest()
    assert outcomes == {1: expected, 2: expected}
    assert dest.read_bytes() == payload
    assert sorted(p.name for p in dest.parent.iterdir()) == [dest.name]  # no temporary file left behind


def test_call_timeout_is_read_from_reconciler_yaml_and_checked(tmp_path):
    from reconciler.errors import ConfigError

    repo = repo_on(tmp_path, "http://127.0.0.1:9", yaml_extra="zuora:\n  call_timeout: 7\n")
    assert settings_of(repo).call_timeout == 7
    with ZuoraClient.from_settings(settings_of(repo)) as client:
        assert client._connection.call_timeout == 7
    (repo / "reconciler.yaml").write_text("environment: http://127.0.0.1:9\nzuora:\n  call_timeout: 0\n")
    with pytest.raises(ConfigError, match="call_timeout: must be an integer from 1 to 600"):
        settings_of(repo)
    (tmp_path / "default").mkdir()
    (tmp_path / "default" / "reconciler.yaml").write_text("environment: local\n")
    assert settings_of(tmp_path / "default").call_timeout == 120
