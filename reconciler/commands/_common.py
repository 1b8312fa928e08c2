"""Helpers shared by the operating commands: the missing ledger, name lookup, times and JSON output."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import TextIO

from reconciler.errors import OutputError, UsageError
from reconciler.model import DesiredSpec, JobRecord, Phase, iso


def no_ledger(settings) -> str:
    """The line printed by reading commands when the environment has no ledger yet."""
    return (f"no ledger yet ({ledger_location(settings)} does not exist): nothing has been "
            f"applied in environment {settings.environment}")


def ledger_location(settings) -> str:
    """Where the ledger is, as it may be shown: its path, or its PostgreSQL URL with the password hidden."""
    if settings.ledger_url is not None:
        return settings.ledger_url.display
    return display_path(settings, settings.ledger_path)


def display_path(settings, path: Path) -> str:
    """A path relative to the repo root when it is inside it, else absolute."""
    path = Path(path)
    try:
        return path.relative_to(settings.root).as_posix()
    except ValueError:
        return str(path)


def user_path(settings, given: str) -> Path:
    """A path given on the command line, relative to where the command was started."""
    return (Path(settings.cwd or Path.cwd()) / Path(given).expanduser()).absolute()


class Specs:
    """The repo's specs by name, loaded once on demand; tolerant of an invalid repo (reads must still work)."""

    def __init__(self, settings):
        self._settings = settings
        self._loaded = False
        self.by_name: dict[str, DesiredSpec] = {}
        self.problems = 0

    def load(self) -> Specs:
        """Validate the repo once; an invalid repo leaves `by_name` empty and counts its problems."""
        if not self._loaded:
            from reconciler.spec import load as spec

            check = spec.check_repo(self._settings)
            self.by_name = check.desired.by_name() if check.desired is not None else {}
            self.problems = len(check.problems)
            self._loaded = True
        return self

    def get(self, name: str) -> DesiredSpec | None:
        """The spec named `name`, or None (removed, never existed, or the repo is invalid)."""
        return self.load().by_name.get(name)

    def unknown(self, name: str, what: str = "spec or job") -> UsageError:
        """The error for a name that is neither a spec nor in the ledger."""
        self.load()
        if self.problems:
            return UsageError(
                f"no {what} named {name!r} in the ledger; the specs are invalid ({self.problems} problem(s)), so "
                "spec names could not be checked: run `reconciler validate`"
            )
        return UsageError(f"no {what} named {name!r}; `reconciler status` lists the jobs, `reconciler plan` the specs")


def is_retired(job: JobRecord) -> bool:
    """True when the job is ledger history only."""
    return job.phase == Phase.RETIRED


def when(value: datetime | str | None) -> str | None:
    """A time as `YYYY-MM-DD HH:MM:SS` UTC (None stays None)."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:  # an edited row: show what is there
            return value
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def age(since: datetime | None, now: datetime | None = None) -> str:
    """How long ago, compactly: 42s, 5m, 3h, 2d."""
    if since is None:
        return "-"
    now = now or datetime.now(timezone.utc)
    seconds = max(0, int((now - since).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def write_json(out: TextIO, document: object) -> None:
    """One indented JSON document and a newline."""
    out.write(json.dumps(document, indent=2, ensure_ascii=False, default=str) + "\n")


@contextmanager
def atomic_file(path: Path, *, newline: str | None = None) -> Iterator[TextIO]:
    """A text file written whole or not at all: readers never see half of it, a failure leaves no file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tmp.open("w", encoding="utf-8", newline=newline) as handle:
            yield handle
        os.replace(tmp, path)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write the file ({exc.strerror or exc}); check the path and "
                              "its directory's permissions") from exc
    finally:
        tmp.unlink(missing_ok=True)


def count(n: int, noun: str) -> str:
    """`1 job`, `2 jobs`."""
    return f"{n} {noun}{'s' * (n != 1)}"


EVENT_HEADERS = ("ID", "TIME", "ACTOR", "EVENT", "NAME", "CALL", "HTTP", "OUTCOME")


def event_row(event: dict) -> list:
    """One audit event as a table row: id, time, actor, type, name, method and path, HTTP status, outcome."""
    call = " ".join(part for part in (event.get("method"), event.get("path")) if part) or None
    return [event.get("id"), when(event.get("ts")), event.get("actor"), event.get("event_type"), event.get("name"),
            call, event.get("http_status"), event.get("outcome")]


def job_document(job: JobRecord, states: Mapping[int, str | None] | None = None) -> dict:
    """Every recorded field of a job, for JSON (times ISO 8601); with `states` (result_states), `result_file`
    says whether the archived result is still what the ledger recorded."""
    document = {
        "id": job.id, "name": job.name, "kind": job.kind, "generation": job.generation,
        "remote_id": job.remote_id, "status": job.remote_status, "phase": job.phase, "revision": job.revision,
        "fingerprint": job.fingerprint, "fingerprint_version": job.fingerprint_version,
        "idempotency_key": job.idempotency_key, "uploaded": job.uploaded, "total": job.total,
        "processed": job.processed, "succeeded": job.succeeded, "failed": job.failed, "rerun": job.rerun,
        "detail": job.detail, "result_path": job.result_path, "result_sha256": job.result_sha256,
        "created_at": iso(job.created_at, "auto"), "updated_at": iso(job.updated_at, "auto"),
    }
    if states is not None:
        document["result_file"] = states.get(job.id)
    return document


def result_state(blobs, job: JobRecord) -> str | None:
    """Whether a job's archived result (a file under state/, or a PostgreSQL ledger's blob) is still what the
    ledger recorded: ok, missing, changed or unreadable; None when nothing is archived."""
    if not job.result_path:
        return None
    return blobs.check(job.result_path, job.result_sha256)


def result_states(blobs, jobs) -> dict[int, str | None]:
    """result_state of each job, by ledger id (read while the ledger is open)."""
    return {job.id: result_state(blobs, job) for job in jobs}
