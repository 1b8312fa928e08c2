"""Long waits and flaky networks, as a CI log shows them: heartbeats, one line per retry, the base URL.

The heartbeat test waits for a real job of a few seconds (a served sandbox processing one row a second)
on a clock that runs 30 times fast, once through a pipe and once on a terminal; a real
pseudo-terminal shows the progress line. Polling's back-off on Zuora is pinned
on the schedule itself with a clock the test moves (a sandbox is always polled every 0.25 s, so no
loopback run can show it).
"""

from __future__ import annotations

import io
import os
import pty
import re
import select
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import pytest

from apply_support import CREDENTIALS, admin, cli, make_repo, sandbox_process
from ops_fixtures import Tty
from reconciler.commands.apply import apply
from reconciler.engine.config import load_settings
from reconciler.engine.waiter import CLEAR_LINE, PollSchedule
from reconciler.model import JobRecord, Phase


FAST = 30  # the heartbeat test's clock: seconds it counts per real second


@pytest.fixture(scope="module")
def one_row_a_second():
    with sandbox_process("--pending-seconds", "0", "--rows-per-second", "1") as url:
        yield url


def long_fx_csv(rows: int, seed: int) -> str:
    """An ImportFXRate file of `rows` days of rates (fx_csv stays inside one month)."""
    start = datetime(2026, 1, 1)
    lines = ["Provider Exchange Rate Date,Currency (From),Currency (To),Exchange Rate"]
    lines += [f"{start + timedelta(days=i):%Y-%m-%d},USD,EUR,0.{9000 + seed * 100 + i}" for i in range(rows)]
    return "\n".join(lines) + "\n"


def run_on_a_terminal(repo, *args: str, timeout: float) -> tuple[int, str]:
    """`reconciler -C repo ARGS` with stdout and stderr on a pseudo-terminal; (exit code, what it printed)."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "reconciler", "-C", str(repo), *args], stdin=subprocess.DEVNULL,
                            stdout=follower, stderr=follower, env={**os.environ, **CREDENTIALS})
    os.close(follower)
    chunks, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 1)
        if ready:
            try:
                data = os.read(leader, 65536)
            except OSError:  # the terminal closed: the process has exited
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    os.close(leader)
    return proc.wait(timeout=30), b"".join(chunks).decode("utf-8", "replace")


def test_a_long_wait_prints_a_heartbeat_at_least_every_minute(one_row_a_second, tmp_path, monkeypatch):
    """A job of about 6 s on a clock that runs 30 times fast: the minutes a real wait takes, in seconds."""
    admin(one_row_a_second, "reset", {})
    for name, key in CREDENTIALS.items():
        monkeypatch.setenv(name, key)
    for name, out in (("piped", io.StringIO()), ("tty", Tty())):
        repo = make_repo(tmp_path / name, one_row_a_second, mass=(f"fx-{name}",), create=(), delete=())
        (repo / "data" / f"fx-{name}.csv").write_text(long_fx_csv(6, seed=len(name)))
        code = apply(load_settings(chdir=str(repo)), out, auto_approve=True, wait=True, timeout=3600,
                     clock=lambda: time.monotonic() * FAST, sleep=lambda s: time.sleep(s / FAST))
        assert code == 0, out.getvalue()
        # splitlines() ends a line at the \r of CLEAR_LINE too: what follows the erase is the line
        beats = [line.rpartition(CLEAR_LINE[1:])[2] for line in out.getvalue().splitlines() if "still waiting after " in line]
        assert beats and all(re.fullmatch(rf"still waiting after \d+m(\d\ds)?: fx-{name} (Pending|Processing)( \(.*\))?",
                                          line) for line in beats), out.getvalue()
        assert any(f"fx-{name} Processing (" in line for line in beats), beats


def test_a_terminal_gets_one_updating_progress_line(one_row_a_second, tmp_path):
    admin(one_row_a_second, "reset", {})
    repo = make_repo(tmp_path / "tty", one_row_a_second, mass=("fx-tty",), create=(), delete=())
    (repo / "data" / "fx-tty.csv").write_text(long_fx_csv(3, seed=1))
    code, screen = run_on_a_terminal(repo, "apply", "--auto-approve", "--wait", "--timeout", "60", timeout=90)
    assert code == 0, screen
    assert CLEAR_LINE in screen and "fx-tty" in screen.rpartition(CLEAR_LINE)[0], screen
    assert "Apply complete" in screen


def test_each_retry_is_one_line_naming_the_call_the_delay_and_the_attempt(one_row_a_second, tmp_path):
    admin(one_row_a_second, "reset", {})
    repo = make_repo(tmp_path / "repo", one_row_a_second, mass=("fx-flaky",), create=(), delete=())
    admin(one_row_a_second, "faults", {"error_rate": 1.0, "seed": 7})
    try:
        proc = cli(repo, "apply", "--auto-approve")
    finally:
        admin(one_row_a_second, "faults", {})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("retrying ")]
    assert lines, proc.stderr
    assert all(re.fullmatch(r"retrying (GET|POST|PUT|PATCH) /\S+ in \d+(\.\d)? s \(\d/\d\): HTTP 5\d\d", line)
               for line in lines), lines
    assert lines[0].endswith(lines[0].split(": ")[-1]) and "(2/" in lines[0]
    assert CREDENTIALS["ZUORA_CLIENT_SECRET"] not in proc.stdout + proc.stderr


def test_a_connection_failure_names_the_base_url(tmp_path):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    repo = make_repo(tmp_path / "repo", url, mass=("fx-a",), create=(), delete=())
    proc = cli(repo, "apply", "--auto-approve")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert f"connection to {url} failed" in proc.stderr.splitlines()[-1], proc.stderr
    assert re.search(rf"retrying POST /oauth/token in \S+ s \(2/\d\): connection to {re.escape(url)} failed",
                     proc.stderr), proc.stderr


def _job(status: str, processed: int | None = None, total: int | None = None, age: float = 0) -> JobRecord:
    now = datetime.now(timezone.utc)
    return JobRecord(id=1, name="fx", kind="MassAction", generation=1, fingerprint="f", fingerprint_version=1,
                     revision=1, idempotency_key="k", phase=Phase.ACTIVE, created_at=now - timedelta(seconds=age),
                     updated_at=now, remote_id="B-1", remote_status=status, total=total, processed=processed)


def test_polls_back_off_from_one_second_to_thirty_and_start_over_when_the_job_moves():
    clock = [0.0]
    schedule = PollSchedule(1.0, 30.0, clock=lambda: clock[0])
    intervals = []
    schedule.update([_job("Pending")])
    for _ in range(8):
        wait = schedule.delay()
        intervals.append(wait)
        clock[0] += wait
        assert schedule.due() == {"fx"}
        schedule.update([_job("Pending")], polled={"fx"})
    assert intervals == [1, 2, 4, 8, 16, 30, 30, 30]
    schedule.update([_job("Processing", processed=10, total=1000, age=600)], polled={"fx"})
    assert schedule.delay() == 1  # it moved: watch it closely again


def test_a_poll_is_never_much_later_than_the_job_should_end():
    clock = [0.0]
    schedule = PollSchedule(1.0, 30.0, clock=lambda: clock[0])
    job = _job("Processing", processed=90, total=100, age=90)  # 1 row a second: done in about 10 s
    schedule.update([job])
    for _ in range(6):
        clock[0] += schedule.delay()
        schedule.update([job], polled={"fx"})
    assert schedule.delay() <= 10.5
