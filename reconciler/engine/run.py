"""One command run wired together: settings, the ledger, the Zuora client and who is acting.

Commands that only read use `read_ledger`; commands that write open a `Session`, which records the
run, optionally holds the ledger lock (with a heartbeat), records every remote call as an event
(under the spec name the calling thread is working on), refreshes live status and archives results.
A heartbeat that finds the lock taken over sets `lock_lost`; the apply journal then writes no more
intents and `check_lock` ends the run naming the new holder.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import logging
import os
import socket
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Iterable, Mapping

from reconciler.errors import LedgerError, LockHeldError, RemoteError
from reconciler.ledger.store import Actor, Binding, Ledger
from reconciler.model import (
    Phase,
    CUSTOM_OBJECT_JOB,
    JobRecord,
    Observation,
    ObservedState,
)

log = logging.getLogger("reconciler.session")

HEARTBEAT_SECONDS = 15.0
REFRESHABLE = (Phase.CREATED, Phase.ACTIVE)


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
    """The environment a ledger is bound to."""
    return Binding(settings.env_key, settings.base_url)


def read_ledger(settings) -> Ledger | None:
    """Open the ledger read-only; None when it does not exist yet (nothing is created)."""
    return Ledger.open_read(settings.ledger_path, binding(settings))


class Session:
    """A writing command run: ledger open for writing, run recorded, lock held when asked."""

    def __init__(self, settings, *, command: str, lock_timeout: float | None = None,
                 plan_digest: str | None = None, env: Mapping[str, str] = os.environ, retry=None):
        self.settings = settings
        self._retry = retry  # a zuora.RetryPolicy; None = the client's default
        self.actor = current_actor(settings.root, env)
        self.ledger = Ledger.open_write(settings.ledger_path, binding(settings))
        self.lock_id: str | None = None
        self.lock_lost: str | None = None  # why this run no longer holds its lock, once it knows
        self._lost_told = False  # check_lock raised it: the caller reports it, close need not repeat it
        self.run_id: int | None = None
        self._stop_heartbeat = threading.Event()
        self._heartbeat: threading.Thread | None = None
        self._local = threading.local()
        self._client = None
        self._client_lock = threading.Lock()
        try:
            if lock_timeout is not None:
                self.lock_id = self.ledger.acquire_lock(self.actor, timeout=lock_timeout)
                self._heartbeat = threading.Thread(target=self._beat, name="ledger-heartbeat", daemon=True)
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

    def _beat(self) -> None:
        while not self._stop_heartbeat.wait(HEARTBEAT_SECONDS):
            try:
                self.ledger.heartbeat(self.lock_id)
            except LockHeldError as err:  # taken over: the run stops at its next step (check_lock says why)
                self.lose_lock(err)
                return
            except Exception as err:  # e.g. the ledger stayed busy: the next beat tries again
                log.warning("lock heartbeat failed: %s", err)

    # --- the client -----------------------------------------------------------------------------

    @property
    def client(self):
        """The run's one Zuora client (created on first use, so ledger-only runs need no credentials)."""
        with self._client_lock:
            if self._client is None:
                from reconciler.zuora.client import ZuoraClient

                self._client = ZuoraClient.from_settings(self.settings, on_call=self._record_call, retry=self._retry)
            return self._client

    @contextmanager
    def acting_on(self, name: str | None):
        """Attribute the remote calls made by this thread to spec `name`."""
        previous = getattr(self._local, "name", None)
        self._local.name = name
        try:
            yield
        finally:
            self._local.name = previous

    def _record_call(self, call) -> None:
        self.ledger.record_event(
            run_id=self.run_id, event_type="remote_call", name=getattr(self._local, "name", None),
            method=call.method, path=call.path, http_status=call.status, request_id=call.request_id,
            track_id=call.track_id, idempotency_key=call.idempotency_key, outcome=call.outcome,
            detail={"attempt": call.attempt, "duration_ms": call.duration_ms, "error": call.error},
        )

    # --- refresh and results ----------------------------------------------------------------------

    def refresh(self, names: Iterable[str] | None = None) -> ObservedState:
        """Fetch live status of every non-terminal recorded job (concurrently), record drift, archive results."""
        wanted = set(names) if names is not None else None
        jobs = [
            j for j in self.ledger.live_jobs()
            if j.remote_id and (wanted is None or j.name in wanted)
            and (j.phase in REFRESHABLE or _result_pending(j))
        ]
        if not jobs:
            return ObservedState()
        with ThreadPoolExecutor(max_workers=min(self.settings.parallelism, len(jobs))) as pool:
            observations = list(pool.map(self._observe, jobs))
        return ObservedState(tuple(o for o in observations if o is not None))

    def _observe(self, job: JobRecord) -> Observation | None:
        with self.acting_on(job.name):
            obs = self.client.observe(job.kind, job.remote_id)
            self.record_observation(job, obs, source="refresh")
        return obs

    def record_observation(self, job: JobRecord, obs: Observation, *, source: str) -> JobRecord:
        """Store a job's live status (drift events included) and archive its result once it has ended."""
        if job.phase in REFRESHABLE:
            self.ledger.record_observation(job.id, obs, run_id=self.run_id, source=source)
        fresh = self.ledger.job(job.id)
        if _result_pending(fresh):
            self.archive(fresh, obs)
        return fresh

    def _record_row_counts(self, job: JobRecord, obs: Observation, errors: list) -> None:
        if obs.status is not None and not obs.missing:
            self.ledger.record_observation(job.id, _row_counts(obs, errors), run_id=self.run_id, source="errors")

    def archive(self, job: JobRecord, obs: Observation) -> str | None:
        """Store a finished job's result under state/<env>/results/ and its sha256 in the ledger."""
        results = self.settings.results_dir / job.name
        stem = f"g{job.generation}-{job.remote_id}"
        try:
            if job.kind == CUSTOM_OBJECT_JOB:
                errors = self.client.co_job_errors(job.remote_id)
                dest = results / f"{stem}.errors.json"
                dest.parent.mkdir(parents=True, exist_ok=True)
                payload = json.dumps({"job": job.remote_id, "errors": errors}, indent=2, sort_keys=True).encode()
                _write_atomic(dest, payload)
                digest = hashlib.sha256(payload).hexdigest()
                self._record_row_counts(job, obs, errors)
            else:
                url = obs.output_url or job.detail.get("output_url")
                if not url:  # Failed, or stopped while Pending: Zuora makes no response file
                    return None
                dest = results / f"{stem}.csv.zip"
                dest.parent.mkdir(parents=True, exist_ok=True)
                digest = self.client.download_file(url, dest)
        except (RemoteError, OSError) as err:
            log.warning("could not archive the result of %s (%s): %s", job.name, job.remote_id, err)
            self.ledger.record_event(
                run_id=self.run_id, event_type="result_archive_failed", name=job.name,
                idempotency_key=job.idempotency_key, outcome="error", detail={"error": str(err)},
            )
            return None
        relative = dest.relative_to(self.settings.root).as_posix()
        self.ledger.record_result(job.id, path=relative, sha256=digest, run_id=self.run_id)
        return relative


def _row_counts(obs: Observation, errors: list) -> Observation:
    """A custom object job's body has no success/error counts; its /errors list gives them."""
    failed = len({e.get("row") for e in errors if isinstance(e, dict) and isinstance(e.get("row"), int)})
    processed = obs.processed
    succeeded = max(processed - failed, 0) if processed is not None else None
    return replace(obs, total=processed if processed is not None else obs.total, failed=failed, succeeded=succeeded)


def _result_pending(job: JobRecord) -> bool:
    """A finished job whose result exists remotely but is not archived yet."""
    if job.phase != Phase.DONE or job.result_path:
        return False
    return job.kind == CUSTOM_OBJECT_JOB or bool(job.detail.get("output_url"))


def _write_atomic(dest: Path, payload: bytes) -> None:
    tmp = dest.with_name(dest.name + ".tmp")
    tmp.write_bytes(payload)
    os.replace(tmp, dest)
