"""The committed ledger holds every commit: checkpoints on close, `reconciler ledger checkpoint`, the WAL bound.

git commits `state/<environment>/ledger.db` but never `ledger.db-wal` (state/.gitignore). A writer
that dies leaves its last commits only in the WAL; these tests kill a real apply, run the workflow's
own record step, clone the pushed repository and find every job there. They also check the command
on its own (missing, foreign, corrupt ledgers; a live writer beside it; a busy ledger) and that a
long-lived reader cannot make the WAL grow without bound.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from apply_support import cli, ledger_jobs, make_repo, settings_of
from reconciler.engine.run import binding
from reconciler.ledger.store import Actor, Binding, Ledger, wal_path, wal_size

ROOT = Path(__file__).resolve().parents[1]
CRASH = "RECONCILER_TEST_CRASH_AT"
KILLED = -signal.SIGKILL
BIND = Binding("test", "https://test.invalid")
ACTOR = Actor(user="tester", host="h", pid=os.getpid())


def git(cwd: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@x", "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, f"git {' '.join(args)}: {proc.stdout}{proc.stderr}"
    return proc.stdout


def pushed_repo(tmp_path: Path, url: str, **specs) -> tuple[Path, Path]:
    """A repo of make_repo(url, **specs) with init's state/.gitignore, committed and pushed to a bare origin
    as CI sees it: (origin, work tree)."""
    origin, work = tmp_path / "origin.git", tmp_path / "work"
    git(tmp_path, "init", "--quiet", "--bare", "-b", "main", str(origin))
    make_repo(work, url, **specs)
    (work / "state").mkdir()
    shutil.copy(ROOT / "reconciler" / "templates" / "state" / "gitignore", work / "state" / ".gitignore")
    git(work, "init", "--quiet", "-b", "main")
    git(work, "add", "--all")
    git(work, "commit", "--quiet", "-m", "specs")
    git(work, "remote", "add", "origin", str(origin))
    git(work, "push", "--quiet", "origin", "HEAD:refs/heads/main")
    return origin, work


def record_step() -> str:
    """The `Record the ledger` script of this repository's workflow (the template's is the same)."""
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "reconcile.yml").read_text())
    [step] = [s for s in workflow["jobs"]["apply"]["steps"] if s.get("name") == "Record the ledger"]
    return step["run"]


def reconciler_on_path(tmp_path: Path) -> str:
    """A `reconciler` executable that runs this tree (the workflow calls the installed command)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "reconciler"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m reconciler "$@"\n')
    shim.chmod(0o755)
    return f"{bin_dir}{os.pathsep}{os.environ['PATH']}"


def views(repo: Path) -> dict:
    """What a reader sees: status and history as JSON, `audit verify`'s verdict."""
    found = {}
    every = ("history", "--all", "--json", "--limit", "10000")  # remote calls too: the export holds them
    for key, args in (("status", ("status", "--json")), ("history", every), ("verify", ("audit", "verify"))):
        proc = cli(repo, *args)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        found[key] = json.loads(proc.stdout) if "--json" in args else proc.stdout
    return found


def test_a_killed_apply_is_committed_whole_by_the_record_step(tmp_path, url):
    """SIGKILL mid-apply, then the workflow's record step; a fresh clone of the pushed branch sees every job."""
    origin, work = pushed_repo(tmp_path, url)
    runner_temp = tmp_path / "runner"
    runner_temp.mkdir()
    (runner_temp / "apply-started").touch()

    crashed = cli(work, "apply", "--auto-approve", env={CRASH: "after-record:purge-cars"})
    assert crashed.returncode == KILLED, crashed.stdout + crashed.stderr
    ledger = settings_of(work).ledger_path
    assert wal_size(ledger) > 0, "the killed apply left no WAL: this test would prove nothing"
    truth = views(work)  # read through the WAL
    assert len(truth["status"]["jobs"]) >= 3 and "OK" in truth["verify"], truth

    env = {**os.environ, "PATH": reconciler_on_path(tmp_path), "RUNNER_TEMP": str(runner_temp),
           "BRANCH": "main", "GITHUB_SHA": git(work, "rev-parse", "HEAD").strip(),
           "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}
    step = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", record_step()], cwd=work, env=env,
                          capture_output=True, text=True, timeout=300)
    assert step.returncode == 0, step.stdout + step.stderr
    assert not wal_path(ledger).exists() or wal_size(ledger) == 0

    clone = tmp_path / "clone"
    git(tmp_path, "clone", "--quiet", str(origin), str(clone))
    relative = ledger.relative_to(work)
    assert (clone / relative).exists() and not (clone / f"{relative}-wal").exists()
    assert views(clone) == truth
    assert [j.idempotency_key for j in ledger_jobs(clone)] == [j.idempotency_key for j in ledger_jobs(work)]
    exported = (clone / relative.parent / "audit.jsonl").read_text().splitlines()
    assert len(exported) == len(truth["history"]["events"])


# --- `reconciler ledger checkpoint` on its own --------------------------------------------------


def repo_with_ledger(tmp_path: Path, url: str = "https://test.invalid") -> tuple[Path, Path]:
    """A repo bound to `url` and its ledger path (not created)."""
    repo = make_repo(tmp_path / "repo", url, mass=("fx-a",), create=(), delete=())
    return repo, settings_of(repo).ledger_path


def fill(ledger: Ledger, events: int, size: int = 100) -> None:
    for i in range(events):
        ledger.record_event(run_id=None, event_type="note", name=f"n{i}", detail={"pad": "x" * size})


def event_count_of_file_alone(path: Path, tmp_path: Path) -> int:
    """The events a copy of the ledger file alone holds, as a git clone would see it (no -wal beside it)."""
    alone = tmp_path / "alone" / path.name
    alone.parent.mkdir(exist_ok=True)
    shutil.copy(path, alone)
    conn = sqlite3.connect(alone)
    try:
        return conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    finally:
        conn.close()


def test_checkpoint_of_a_ledger_whose_writer_died(tmp_path):
    """A writer killed with commits only in its WAL: the command copies them in and leaves no -wal."""
    repo, path = repo_with_ledger(tmp_path)
    script = (f"from reconciler.ledger.store import Ledger, Binding\n"
              f"import os\n"
              f"l = Ledger.open_write({str(path)!r}, Binding({settings_of(repo).env_key!r}, 'https://test.invalid'))\n"
              f"for i in range(25): l.record_event(run_id=None, event_type='note', name=str(i))\n"
              f"os.kill(os.getpid(), 9)\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == KILLED, proc.stderr
    assert wal_size(path) > 0 and event_count_of_file_alone(path, tmp_path) == 0

    done = cli(repo, "ledger", "checkpoint")
    assert done.returncode == 0, done.stderr
    assert "WAL frames copied back" in done.stdout and "no ledger.db-wal is left" in done.stdout
    assert not wal_path(path).exists() and not path.with_name("ledger.db-shm").exists()
    assert event_count_of_file_alone(path, tmp_path) == 25
    assert "OK: 25 events" in cli(repo, "audit", "verify").stdout

    again = cli(repo, "ledger", "checkpoint")  # a resting ledger: nothing to do, still fine
    assert again.returncode == 0 and "nothing to copy back" in again.stdout


def test_checkpoint_refuses_a_missing_a_foreign_and_a_corrupt_ledger(tmp_path):
    repo, path = repo_with_ledger(tmp_path)
    missing = cli(repo, "ledger", "checkpoint")
    assert missing.returncode == 1 and "there is no ledger at" in missing.stderr
    assert not path.exists()  # nothing was created

    Ledger.open_write(path, Binding("elsewhere", "https://elsewhere.invalid")).close()
    foreign = cli(repo, "ledger", "checkpoint")
    assert foreign.returncode == 1 and "belongs to environment elsewhere" in foreign.stderr

    path.write_bytes(b"SQLite format 3\x00" + b"\xff" * 4000)
    corrupt = cli(repo, "ledger", "checkpoint")
    assert corrupt.returncode == 1 and "is not a reconciler ledger" in corrupt.stderr, corrupt.stderr
    path.write_text("not a database")
    assert "is not a reconciler ledger" in cli(repo, "ledger", "checkpoint").stderr


def test_checkpoint_beside_a_live_writer_that_holds_the_lock(tmp_path):
    """A live run keeps its connection and lock: the checkpoint copies the WAL, says so, and the run carries on."""
    repo, path = repo_with_ledger(tmp_path)
    writer = Ledger.open_write(path, binding(settings_of(repo)))
    lock_id = writer.acquire_lock(ACTOR)  # held by this live process
    fill(writer, 10)
    done = cli(repo, "ledger", "checkpoint")
    assert done.returncode == 0, done.stderr
    assert "ledger.db-wal is empty (another process still has the ledger open)" in done.stdout
    assert "a live run (" in done.stderr and "holds the ledger lock" in done.stderr
    assert event_count_of_file_alone(path, tmp_path) == 10
    fill(writer, 5)  # the writer is unaffected
    writer.release_own_lock(lock_id, run_id=None)
    writer.close()
    assert event_count_of_file_alone(path, tmp_path) == 15
    with Ledger.open_read(path, binding(settings_of(repo))) as reader:
        assert reader.verify().ok


def test_checkpoint_exits_1_when_a_reader_keeps_the_wal_busy(tmp_path):
    """A reader holding an old snapshot keeps the newer frames out of the file: exit 1 saying so."""
    repo, path = repo_with_ledger(tmp_path)
    writer = Ledger.open_write(path, binding(settings_of(repo)))
    fill(writer, 3)
    reader = sqlite3.connect(path, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT COUNT(*) FROM events").fetchone()  # its snapshot: 3 events
    fill(writer, 3)
    try:
        busy = cli(repo, "ledger", "checkpoint")
        assert busy.returncode == 1, busy.stdout + busy.stderr
        assert "kept the ledger busy" in busy.stderr and "run `reconciler ledger checkpoint` again" in busy.stderr
    finally:
        reader.execute("COMMIT")
        reader.close()
    assert cli(repo, "ledger", "checkpoint").returncode == 0
    writer.close()


# --- checkpoints of the writers themselves ------------------------------------------------------


def test_a_closing_writer_checkpoints_although_a_reader_stays_connected(tmp_path):
    """The last writer to close cannot turn WAL off while a reader is connected; its commits still reach the file."""
    path = tmp_path / "ledger.db"
    writer = Ledger.open_write(path, BIND)
    fill(writer, 3)
    reader = Ledger.open_read(path, BIND)  # connected to the ledger in WAL mode, reading nothing now
    assert len(reader.events()) == 3
    fill(writer, 4)
    writer.close()
    try:
        assert wal_path(path).exists()  # WAL could not be turned off: the reader is still connected
        assert event_count_of_file_alone(path, tmp_path) == 7
        assert wal_size(path) == 0
    finally:
        reader.close()


def test_the_wal_is_checkpointed_when_it_outgrows_its_bound(tmp_path):
    path = tmp_path / "ledger.db"
    limit = 64 * 1024
    writer = Ledger.open_write(path, BIND, wal_limit_bytes=limit)
    largest = 0
    for _ in range(100):
        fill(writer, 1, size=2000)
        largest = max(largest, wal_size(path))
    assert largest <= limit + 32 * 1024  # at most one transaction over the bound before it is copied back
    writer.close()


@pytest.mark.parametrize("bounded", [True, False])
def test_a_long_lived_reader_grows_the_wal_only_while_it_reads(tmp_path, bounded):
    """While a reader holds an old snapshot nothing can be copied back; once it lets go, the next commit
    shrinks the WAL again, which SQLite's own (PASSIVE) autocheckpoint never does."""
    path = tmp_path / "ledger.db"
    limit = 64 * 1024
    writer = Ledger.open_write(path, BIND, wal_limit_bytes=limit if bounded else 1 << 40)
    reader = sqlite3.connect(path, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT COUNT(*) FROM events").fetchone()
    fill(writer, 300, size=2000)
    assert wal_size(path) > 8 * limit  # the reader pins the WAL: it had to grow
    reader.execute("COMMIT")
    reader.close()
    fill(writer, 1)
    if bounded:
        assert wal_size(path) <= limit
    else:
        assert wal_size(path) > 8 * limit  # without the bound the file stays at its largest
    writer.close()
    assert event_count_of_file_alone(path, tmp_path) == 301
