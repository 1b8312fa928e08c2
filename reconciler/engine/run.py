"""One command run wired together: settings, the ledger, the Zuora client and who is acting.

Commands that only read use `read_ledger`; commands that write open a `Session`, which records the
run, optionally holds the ledger lock (with a heartbeat) and records remote calls as events (under
the spec name the calling thread is working on): every mutation and every failed call at once, a
successful read only once it is known to have changed something (`take_reads` / `keep_reads`, used
by engine/refresh.py), so a long wait leaves one event per decision, not one per poll.
A heartbeat that finds the lock taken over sets `lock_lost`; the apply journal then writes no more
intents and `check_lock` ends the run naming the new holder.
"""

from __future__ import annotations

import getpass
import logging
import os
import socket
import subprocess
import threading
from collections import deque
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from reconciler.engine.environments import canonical_base_url, environment_identity
from reconciler.errors import LedgerError, LockHeldError
from reconciler.ledger.interface import LedgerStore
from reconciler.ledger.store import Actor, Binding, Ledger

if TYPE_CHECKING:
    from reconciler.dataset.blobs import Blobs
    from reconciler.zuora.client import ZuoraClient

log = logging.getLogger("reconciler.session")

HEARTBEAT_SECONDS = 15.0
READ_METHODS = ("GET", "HEAD")
READS_HELD = 4  # a thread's successful reads held back until one proves to matter (a poll is 1, an archive 2)


def current_actor(root: Path, env: Mapping[str, str] = os.environ) -> Actor:
    """Who is acting: the CI actor, commit and run URL when in GitHub Actions, else git and the OS user."""
    ci_url = None
    if env.get("GITHUB_RUN_ID") and env.get("GITHUB_REPOSITORY"):
        server = env.get("GITHUB_SERVER_URL", "https://github.com").rstrip("/")
        ci_url = f"{server}/{env['GITHUB_REPOSITORY']}/actions/runs/{env['GITHUB_RUN_ID']}"
    user = env.get("GITHUB_ACTOR") or _os_user()
    commit = env.get("GITHUB_SHA") or _git_head(root)
    return Actor(user=user, host=socket.gethostname(), pid=os.getpid(), commit=commit, ci_run_url=ci_url)


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        return f"uid-{os.getuid()}" if hasattr(os, "getuid") else "unknown"


def _git_head(root: Path) -> str | None:
    try:
        proc = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return (proc.stdout.strip() or None) if proc.returncode == 0 else None


def binding(settings) -> Binding:
    """The environment a ledger is bound to, in its canonical spelling; a ledger created under another
    spelling of the same environment (`localhost` for `127.0.0.1`, a URL for its name) is accepted."""
    return Binding(settings.env_key, canonical_base_url(settings.base_url), identity=environment_identity)


def retry_line(call) -> str:
    """`retrying POST /v1/bulk in 4 s (2/6): HTTP 503`: a failed attempt about to be sent again."""
    wait = f"{call.retry_in:.0f} s" if call.retry_in >= 1 else f"{call.retry_in:.1f} s"
    of = f"{call.attempt + 1}/{call.max_attempts}" if call.max_attempts else f"attempt {call.attempt + 1}"
    why = f"HTTP {call.status}" if call.status else (call.error or call.outcome)
    why = why.removeprefix(f"{call.method} {call.path}: ")
    return f"retrying {call.method} {call.path} in {wait} ({of}): {why}"


def read_ledger(settings) -> LedgerStore | None:
    """Open the ledger read-only; None when it does not exist yet (nothing is created)."""
    if settings.ledger_url is not None:
        from reconciler.ledger.postgres import PgLedger  # psycopg only for a PostgreSQL ledger

        return PgLedger.open_read(settings.ledger_url, binding(settings))
    return Ledger.open_read(settings.ledger_path, binding(settings))


def write_ledger(settings) -> LedgerStore:
    """Open the ledger for writing, creating and migrating it as needed."""
    if settings.ledger_url is not None:
        from reconciler.ledger.postgres import PgLedger

        return PgLedger.open_write(settings.ledger_url, binding(settings))
    return Ledger.open_write(settings.ledger_path, binding(settings))


class Session:
    """A writing command run: ledger open for writing, run recorded, lock held when asked."""

    def __init__(self, settings, *, command: str, lock_timeout: float | None = None,
                 plan_digest: str | None = None, env: Mapping[str, str] = os.environ, retry=None):
        self.settings = settings
        self._retry = retry  # a zuora.RetryPolicy; None = the client's default
        self.actor = current_actor(settings.root, env)
        self.ledger = write_ledger(settings)
        self.lock_id: str | None = None
        self.lock_lost: str | None = None  # why this run no longer holds its lock, once it knows
        self._lost_told = False  # check_lock raised it: the caller reports it, close need not repeat it
        self.run_id: int | None = None
        self._stop_heartbeat = threading.Event()
        self._heartbeat: threading.Thread | None = None
        self._local = threading.local()
        self._client: ZuoraClient | None = None
        self._client_lock = threading.Lock()
        try:
            if lock_timeout is not None:
                self.lock_id = self.ledger.acquire_lock(self.actor, timeout=lock_timeout)
                self._heartbeat = threading.Thread(target=self._beat, args=(self.lock_id,), name="ledger-heartbeat",
                                                   daemon=True)
                self._heartbeat.start()
            self.run_id = self.ledger.start_run(command, self.actor, plan_digest)
        except BaseException:
            self._release()
            raise

    # --- lifecycle ----------------------------------------------------------------------------

    def close(self, outcome: str) -> None:
        """Record the run's outcome, close the client, release the lock and the ledger.

        A lock lost meanwhile is reported (stderr and a `lock_lost` event), never raised: the run's
        own outcome and exit code stand.
        """
        try:
            if self.run_id is not None:
                self.ledger.finish_run(self.run_id, outcome)
        finally:
            if self._client is not None:
                self._client.close()
            self._release()

    def _release(self) -> None:
        self._stop_heartbeat.set()
        if self._heartbeat is not None:
            self._heartbeat.join(timeout=5)
        try:
            if self.lock_id is not None:
                lost = self.ledger.release_own_lock(self.lock_id, run_id=self.run_id)
                if lost is not None and not self._lost_told:
                    log.warning("%s", lost)
        except LedgerError as err:  # reported, not raised: it must not replace the run's own error or exit code
            log.warning("could not release the ledger lock %s: %s; the next run takes it over once this process "
                        "has exited (from another host: once its lease lapsed)", self.lock_id, err)
        finally:
            self.ledger.close()

    def lose_lock(self, err: LockHeldError) -> None:
        """Note that the lock is gone (`check_lock` then stops the run); the first reason found is kept."""
        if self.lock_lost is None:
            self.lock_lost = str(err)

    def check_lock(self) -> None:
        """Raise LockHeldError, naming the new holder, once this run knows it lost its lock."""
        if self.lock_lost is not None:
            self._lost_told = True
            raise LockHeldError(self.lock_lost)

    def _beat(self, lock_id: str) -> None:
        while not self._stop_heartbeat.wait(HEARTBEAT_SECONDS):
            try:
                self.ledger.heartbeat(lock_id)
            except LockHeldError as err:  # taken over: the run stops at its next step (check_lock says why)
                self.lose_lock(err)
                return
            except Exception as err:  # e.g. the ledger stayed busy: the next beat tries again
                log.warning("lock heartbeat failed: %s", err)

    # --- the client -----------------------------------------------------------------------------

    @property
    def blobs(self) -> Blobs:
        """Where this run's ledger keeps results and sent files (files under state/, or its database)."""
        return self.ledger.blobs(self.settings.root)

    @property
    def client(self) -> ZuoraClient:
        """The run's one Zuora client (created on first use, so ledger-only runs need no credentials)."""
        with self._client_lock:
            if self._client is None:
                from reconciler.zuora.client import ZuoraClient  # httpx only for runs that call Zuora

                self._client = ZuoraClient.from_settings(self.settings, on_call=self._record_call, retry=self._retry)
            return self._client

    @contextmanager
    def acting_on(self, name: str | None):
        """Attribute the remote calls made by this thread to spec `name`."""
        previous = getattr(self._local, "name", None)
        self._local.name = name
        self._local.reads = deque(maxlen=READS_HELD)  # reads made for another spec never count for this one
        try:
            yield
        finally:
            self._local.name = previous

    def _record_call(self, call) -> None:
        if call.retry_in is not None:  # one line per retry, so a slow run shows why it is slow
            log.warning("%s", retry_line(call))
        event = dict(
            run_id=self.run_id, event_type="remote_call", name=getattr(self._local, "name", None),
            method=call.method, path=call.path, http_status=call.status, request_id=call.request_id,
            track_id=call.track_id, idempotency_key=call.idempotency_key, outcome=call.outcome,
            detail={"attempt": call.attempt, "duration_ms": call.duration_ms, "error": call.error},
        )
        if call.method in READ_METHODS and call.outcome == "ok":
            reads = getattr(self._local, "reads", None)
            if reads is None:
                reads = self._local.reads = deque(maxlen=READS_HELD)
            reads.append(event)  # a poll that changed nothing leaves no trace
            return
        self.ledger.record_event(**event)

    def take_reads(self) -> list[dict]:
        """This thread's successful reads not recorded yet (record_event keywords), oldest first; forgotten here."""
        reads = getattr(self._local, "reads", None)
        if not reads:
            return []
        taken = list(reads)
        reads.clear()
        return taken

    def keep_reads(self) -> None:
        """Record this thread's held-back reads: what they returned changed something (e.g. a result archived)."""
        for event in self.take_reads():
            self.ledger.record_event(**event)
