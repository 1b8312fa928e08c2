"""Shared by the apply tests: a repo on a served sandbox, the CLI as a real subprocess, state readers."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import httpx

from reconciler.engine.config import load_settings
from reconciler.sandbox import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, make_app, serve
from reconciler.engine.run import read_ledger

CREDENTIALS = {"ZUORA_CLIENT_ID": DEFAULT_CLIENT_ID, "ZUORA_CLIENT_SECRET": DEFAULT_CLIENT_SECRET}

MASS_SPEC = """\
apiVersion: reconciler/v1
kind: MassAction
metadata: {{name: {name}}}
spec:
  actionType: ImportFXRate
  file: ../data/{name}.csv
{extra}"""
CREATE_SPEC = """\
apiVersion: reconciler/v1
kind: CustomObjectJob
metadata: {{name: {name}}}
spec:
  object: car
  operation: create
  file: ../data/{name}.csv
{extra}"""
DELETE_SPEC = """\
apiVersion: reconciler/v1
kind: CustomObjectJob
metadata: {{name: {name}}}
spec:
  object: car
  operation: delete
  filter:
    conditions:
      - {{field: year__c, operator: LT, value: 2000}}
{extra}"""


def fx_csv(seed: int, rows: int = 3) -> str:
    """An ImportFXRate file whose rates depend on `seed` (so two specs never share a file)."""
    lines = ["Provider Exchange Rate Date,Currency (From),Currency (To),Exchange Rate"]
    lines += [f"2026-11-{day + 1:02d},USD,EUR,0.{9000 + seed * 10 + day}" for day in range(rows)]
    return "\n".join(lines) + "\n"


CARS_CSV = "make__c,model__c,year__c\nVolvo,FH16,2024\nSaab,900,1994\nScania,R 450,2023\n"


def make_repo(root: Path, url: str, *, mass=("fx-a", "fx-b"), create=("load-cars",), delete=("purge-cars",),
              depends: dict | None = None) -> Path:
    """A repo whose reconciler.yaml points at `url`: Mass Updater FX specs, custom object create and delete."""
    depends = depends or {}
    (root / "specs").mkdir(parents=True, exist_ok=True)
    (root / "data").mkdir(exist_ok=True)
    (root / "reconciler.yaml").write_text(f"environment: {url}\n")
    for i, name in enumerate(mass):
        (root / "data" / f"{name}.csv").write_text(fx_csv(i))
        write_spec(root, name, MASS_SPEC, depends.get(name))
    for name in create:
        (root / "data" / f"{name}.csv").write_text(CARS_CSV)
        write_spec(root, name, CREATE_SPEC, depends.get(name))
    for name in delete:
        write_spec(root, name, DELETE_SPEC, depends.get(name))
    return root


def write_spec(root: Path, name: str, template: str, depends_on=None, revision: int | None = None) -> None:
    """(Re)write specs/<name>.yaml from a template."""
    extra = f"  dependsOn: [{', '.join(depends_on)}]\n" if depends_on else ""
    if revision is not None:
        extra += f"  revision: {revision}\n"
    (root / "specs" / f"{name}.yaml").write_text(template.format(name=name, extra=extra))


def cli(repo: Path, *args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """`reconciler -C repo ARGS` as a real subprocess with the sandbox's default credentials."""
    full = {**os.environ, **CREDENTIALS, **(env or {})}
    return subprocess.run([sys.executable, "-m", "reconciler", "-C", str(repo), *args], capture_output=True,
                          text=True, env=full, timeout=timeout, stdin=subprocess.DEVNULL)


def start_cli(repo: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    """The same, started in the background."""
    full = {**os.environ, **CREDENTIALS, **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "reconciler", "-C", str(repo), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=full, stdin=subprocess.DEVNULL)


@contextmanager
def served_sandbox(clock=None, *, pending_seconds: float = 0, rows_per_second: float = 1000, **answers):
    """The simulator on loopback HTTP in a thread; yields its URL. `answers`: replay_status, v1_errors, job_limit."""
    app = make_app(clock=clock or time.time, pending_seconds=pending_seconds, rows_per_second=rows_per_second,
                   **answers)
    server = serve(app).start()
    try:
        yield server.url
    finally:
        server.shutdown()


@contextmanager
def sandbox_process(*extra: str):
    """`reconciler sandbox serve` as a subprocess (it outlives any apply we kill); yields its URL."""
    proc = subprocess.Popen([sys.executable, "-m", "reconciler", "sandbox", "serve", "--port", "0", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("Sandbox listening on "), line + proc.stderr.read()
        yield line.split()[-1]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def admin(url: str, path: str, payload: dict | None = None) -> dict:
    """Call the sandbox admin API (GET without a payload, POST with one)."""
    if payload is None:
        response = httpx.get(f"{url}/_sandbox/{path}", timeout=30)
    else:
        response = httpx.post(f"{url}/_sandbox/{path}", json=payload, timeout=30)
    response.raise_for_status()
    return response.json()


def sandbox_token(url: str) -> str:
    """A bearer token from the sandbox for its default client."""
    response = httpx.post(f"{url}/oauth/token", timeout=30, data={
        "grant_type": "client_credentials", "client_id": CREDENTIALS["ZUORA_CLIENT_ID"],
        "client_secret": CREDENTIALS["ZUORA_CLIENT_SECRET"]})
    response.raise_for_status()
    return response.json()["access_token"]


def zuora_http(url: str) -> httpx.Client:
    """An authorized HTTP client on the sandbox: someone acting in Zuora behind apply's back."""
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {sandbox_token(url)}"}, timeout=30)


def remote_jobs(url: str) -> list[tuple[str, str | None]]:
    """(remote id, idempotency key) of every job the sandbox holds, both kinds."""
    state = admin(url, "state")
    return ([(j["bulkKey"], j["idempotencyKey"]) for j in state["mass_actions"]]
            + [(j["Id"], j["idempotencyKey"]) for j in state["custom_object_jobs"]])


def settings_of(repo: Path):
    """The repo's settings, as the CLI loads them."""
    return load_settings(chdir=str(repo))


def ledger_jobs(repo: Path) -> list:
    """Every JobRecord in the repo's ledger (read-only; [] without a ledger)."""
    ledger = read_ledger(settings_of(repo))
    if ledger is None:
        return []
    with ledger:
        return ledger.jobs()


def ledger_events(repo: Path) -> list[dict]:
    """Every event, oldest first."""
    ledger = read_ledger(settings_of(repo))
    with ledger:
        return list(ledger.iter_events())


def assert_exactly_once(repo: Path, url: str, names) -> None:
    """The core invariant: one remote job per spec, each one recorded in the ledger under its key."""
    remote = remote_jobs(url)
    jobs = ledger_jobs(repo)
    by_key = {j.idempotency_key: j for j in jobs}
    for remote_id, key in remote:
        assert key in by_key, f"remote job {remote_id} (key {key}) is not in the ledger"
        assert by_key[key].remote_id == remote_id
    assert Counter(by_key[key].name for _, key in remote) == Counter(set(names))
    assert {j.remote_id for j in jobs if j.remote_id} == {remote_id for remote_id, _ in remote}


def converge(repo: Path, *, attempts: int = 4, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `apply --auto-approve --wait` until it succeeds (at most `attempts` times); the last run."""
    for _ in range(attempts):
        proc = cli(repo, "apply", "--auto-approve", "--wait", "--timeout", "60", env=env)
        if proc.returncode == 0:
            return proc
    raise AssertionError(f"apply did not converge:\n{proc.stdout}\n{proc.stderr}")


def wait_until(predicate, timeout: float = 30, interval: float = 0.05, message: str = "condition not reached"):
    """Poll `predicate` until it returns something truthy; that value. AssertionError(message) at the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"{message} (within {timeout} s)")


def event_count(repo: Path) -> int:
    """How many events the repo's ledger holds (0 without a ledger); safe while a run writes it."""
    ledger = read_ledger(settings_of(repo))
    if ledger is None:
        return 0
    with ledger:
        return sum(1 for _ in ledger.iter_events())


def sleeps_with_file_open(pid: int, path: Path) -> bool:
    """Whether process `pid` has `path` open and its main thread sleeps in time.sleep (Linux /proc)."""
    target = os.path.realpath(path)
    try:
        opened = any(os.path.realpath(fd) == target for fd in Path(f"/proc/{pid}/fd").iterdir())
        wchan = Path(f"/proc/{pid}/wchan").read_text()
    except OSError:  # the process is gone, or a descriptor closed while we looked
        return False
    return opened and "nanosleep" in wchan

