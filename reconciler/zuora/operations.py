"""The Zuora operations (Mass Updater, custom object bulk jobs, observe), free of any HTTP library.

`ZuoraOperations` is given a `Transport` (in practice the client's `Connection`, the one httpx user)
and turns each operation into its `request`/`stream` calls, checking the answers. Bodies are given as
`body(stack) -> dict` callables returning the keyword arguments of one request (`json`, `data` +
`files`, or `content` + `headers`); files they open go on the `ExitStack` so every attempt reads them
afresh.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import IO, Any, Callable, Iterator, Mapping, Protocol, Sequence, TypeVar

from reconciler.errors import LocalFileError, RemoteError
from reconciler.model import CUSTOM_OBJECT_JOB, MASS_ACTION, Condition, Observation
from reconciler.zuora.retry import code_category, error_details
from reconciler.zuora.wire import bulk_key as checked_bulk_key
from reconciler.zuora.wire import co_job_id, file_id_of, path_segment

__all__ = ["CHUNK", "CO_PAGE_SIZE_MAX", "MAX_RESULT_FILE_BYTES", "Body", "Transport", "ZuoraOperations", "file_error",
           "parse_count"]

CHUNK = 1 << 16
# A response file is the uploaded rows (at most 4 MB, as a zip at most a 64 MB CSV: engine.results'
# MAX_CSV_BYTES) plus result columns, zipped: 64 MB is far above any real one and bounds a hostile one.
MAX_RESULT_FILE_BYTES = 64 * 1024 * 1024
CO_PAGE_SIZE_MAX = 40  # the SDK's bound for GET /objects/jobs (the docs say 100)

T = TypeVar("T")
Body = Callable[[ExitStack], dict[str, Any]]  # the keyword arguments of one attempt's request


class Transport(Protocol):
    """What the operations need from the client: one logical call, retried, errors as RemoteError."""

    def request(self, method: str, path: str, *, params: Mapping[str, Any] | None = None, body: Body | None = None,
                idempotency_key: str | None = None) -> dict[str, Any]:
        """The JSON object of a 2xx answer."""
        ...

    def stream(self, path: str, consume: Callable[[Iterator[bytes]], T]) -> T:
        """GET `path` and return `consume(chunks of the 2xx body)`; retried as a whole like `request`."""
        ...


class ZuoraOperations:
    """The Mass Updater and Custom Object bulk job operations, over the `Transport` it is given."""

    def __init__(self, transport: Transport):
        self._transport = transport

    # Mass Updater

    def submit_mass_action(self, action_type: str, file_path: Path, *, idempotency_key: str | None) -> str:
        """POST /v1/bulk (multipart `file` streamed from disk + `params`); returns the bulkKey."""
        path = Path(file_path)
        params = json.dumps({"actionType": action_type, "checksum": _md5_of(path)})
        content_type = "application/zip" if path.suffix.lower() == ".zip" else "text/csv"

        def body(stack: ExitStack) -> dict:
            handle = stack.enter_context(path.open("rb"))
            return {"data": {"params": params}, "files": {"file": (path.name, handle, content_type)}}

        data = self._transport.request("POST", "/v1/bulk", body=body, idempotency_key=idempotency_key)
        return checked_bulk_key(_required_str(data, "bulkKey", "POST /v1/bulk"), "POST /v1/bulk")

    def get_mass_action(self, bulk_key: str) -> dict:
        """GET /v1/bulk/{key}: the raw mass action body."""
        return self._transport.request("GET", f"/v1/bulk/{path_segment(bulk_key)}")

    def stop_mass_action(self, bulk_key: str) -> None:
        """PUT /v1/bulk/{key}/stop; a job already Stopping or Stopped counts as stopped."""
        try:
            self._transport.request("PUT", f"/v1/bulk/{path_segment(bulk_key)}/stop")
        except RemoteError as exc:
            # A stop whose answer was lost is refused when sent again: the job is no longer stoppable.
            # (Not found may come as a 404 or, like any v1 refusal, as a 200 whose code says category 40.)
            if exc.retryable or exc.status in (401, 404) or code_category(exc.code) == 40:
                raise
            if self.get_mass_action(bulk_key).get("status") not in ("Stopping", "Stopped"):
                raise

    def download_file(self, url_or_id: str, dest: Path) -> str:
        """GET /v1/files/{id} on our base URL, streamed to `dest`; returns the file's sha256 hex.

        The bytes go to a temporary file of this call's own (two processes archiving one result never
        share one) renamed onto `dest`; a body above MAX_RESULT_FILE_BYTES is refused (RemoteError).
        """
        path = f"/v1/files/{path_segment(file_id_of(url_or_id))}"
        dest = Path(dest)
        parts: list[Path] = []

        def save(chunks: Iterator[bytes]) -> str:
            digest = hashlib.sha256()
            size = 0
            try:
                dest.parent.mkdir(parents=True, exist_ok=True)
                fd, name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
                parts.append(Path(name))
                with os.fdopen(fd, "wb") as handle:
                    for chunk in chunks:  # a network failure here fails (and may retry) the whole download
                        size += len(chunk)
                        if size > MAX_RESULT_FILE_BYTES:
                            raise RemoteError(f"the file is larger than {MAX_RESULT_FILE_BYTES >> 20} MB, far above "
                                              "any Zuora response file; refusing it", endpoint=f"GET {path}")
                        digest.update(chunk)
                        handle.write(chunk)
                os.replace(name, dest)
            except OSError as exc:
                raise file_error(Path(exc.filename or dest), exc) from exc
            return digest.hexdigest()

        try:
            return self._transport.stream(path, save)
        finally:
            for part in parts:  # every attempt's own; the one renamed onto `dest` is gone already
                part.unlink(missing_ok=True)

    # Custom object bulk jobs

    def create_co_job(self, *, namespace: str, object: str, operation: str, conditions: Sequence[Condition] = (),
                      idempotency_key: str | None) -> dict:
        """POST /objects/jobs; returns the job (its `Id` is the remote id)."""
        payload: dict[str, Any] = {"namespace": namespace, "object": object, "operation": operation}
        if conditions:
            payload["filter"] = {
                "conditions": [{"field": c.field, "operator": c.operator, "value": c.value} for c in conditions]
            }
        data = self._transport.request("POST", "/objects/jobs", body=lambda stack: {"json": payload},
                             idempotency_key=idempotency_key)
        return _job(data, "POST /objects/jobs")

    def upload_co_file(self, job_id: str, file_path: Path, *, idempotency_key: str | None) -> dict:
        """POST /objects/jobs/{id}/files: the raw CSV streamed from disk; returns the job."""
        path = Path(file_path)
        endpoint = f"/objects/jobs/{path_segment(job_id)}/files"

        def body(stack: ExitStack) -> dict:
            handle = stack.enter_context(path.open("rb"))
            size = os.fstat(handle.fileno()).st_size
            headers = {"Content-Type": "text/csv", "Content-Length": str(size)}
            return {"content": _chunks(handle), "headers": headers}

        data = self._transport.request("POST", endpoint, body=body, idempotency_key=idempotency_key)
        return _job(data, f"POST {endpoint}")

    def get_co_job(self, job_id: str) -> dict:
        """GET /objects/jobs/{id}: the job."""
        path = f"/objects/jobs/{path_segment(job_id)}"
        return _job(self._transport.request("GET", path), f"GET {path}")

    def list_co_jobs(self, *, status: str | None = None, page_size: int = CO_PAGE_SIZE_MAX) -> Iterator[dict]:
        """GET /objects/jobs, following the cursor: every job, newest first."""
        params: dict[str, Any] = {"pageSize": max(1, min(int(page_size), CO_PAGE_SIZE_MAX))}
        if status:
            params["status"] = status
        seen: set[str] = set()
        while True:
            data = self._transport.request("GET", "/objects/jobs", params=params)
            jobs = data.get("jobs")
            if not isinstance(jobs, list):
                raise RemoteError("the answer has no `jobs` list", endpoint="GET /objects/jobs")
            jobs = [job for job in jobs if isinstance(job, dict)]
            for job in jobs:
                co_job_id(job.get("Id"), "GET /objects/jobs")
            yield from jobs
            cursor = data.get("cursor")
            if not jobs or not isinstance(cursor, str) or not cursor or cursor in seen:
                return
            seen.add(cursor)  # a server repeating a cursor must not loop us forever
            params["cursor"] = cursor

    def co_job_errors(self, job_id: str) -> list[dict]:
        """GET /objects/jobs/{id}/errors: the rejected rows ({code, message, row, record})."""
        path = f"/objects/jobs/{path_segment(job_id)}/errors"
        errors = self._transport.request("GET", path).get("errors")
        if not isinstance(errors, list):
            raise RemoteError("the answer has no `errors` list", endpoint=f"GET {path}")
        return [e for e in errors if isinstance(e, dict)]

    def cancel_co_job(self, job_id: str, *, idempotency_key: str | None) -> dict:
        """PATCH /objects/jobs/{id}/cancel; returns the job."""
        path = f"/objects/jobs/{path_segment(job_id)}/cancel"
        return _job(self._transport.request("PATCH", path, idempotency_key=idempotency_key), f"PATCH {path}")

    # Custom object definitions

    def list_co_definitions(self) -> dict[str, dict]:
        """GET /objects/definitions/default: every custom object definition of the tenant, by object name."""
        endpoint = "GET /objects/definitions/default"
        found = self._transport.request("GET", "/objects/definitions/default").get("definitions")
        if not isinstance(found, dict) or not all(isinstance(body, dict) for body in found.values()):
            raise RemoteError("the answer has no `definitions` object of definitions", endpoint=endpoint)
        return found

    def get_co_definition(self, object_name: str) -> dict:
        """GET /objects/definitions/default/{object} (the API name, case-sensitive): one definition."""
        path = f"/objects/definitions/default/{path_segment(object_name)}"
        body = self._transport.request("GET", path)
        if not isinstance(body.get("schema"), dict):
            raise RemoteError("the answer is not a definition (no `schema` object)", endpoint=f"GET {path}")
        return body

    # Common

    def observe(self, kind: str, remote_id: str) -> Observation:
        """The live status and counts of one job; `missing=True` when Zuora does not know it."""
        if kind not in (MASS_ACTION, CUSTOM_OBJECT_JOB):
            raise ValueError(f"unknown kind {kind!r}")
        try:
            body = self.get_mass_action(remote_id) if kind == MASS_ACTION else self.get_co_job(remote_id)
        except RemoteError as exc:
            # Only a Zuora error body counts as "not found": a stray 404 page (wrong base URL) does not.
            if exc.code is not None and (exc.status == 404 or code_category(exc.code) == 40):
                return Observation(remote_id=remote_id, kind=kind, status=None, missing=True)
            raise
        status = body.get("status")
        if not isinstance(status, str) or not status:
            where = f"/v1/bulk/{remote_id}" if kind == MASS_ACTION else f"/objects/jobs/{remote_id}"
            raise RemoteError("the answer has no `status`", endpoint=f"GET {where}")
        if kind == MASS_ACTION:
            reasons = error_details(body)
            return Observation(
                remote_id=remote_id, kind=kind, status=status,
                total=parse_count(body.get("totalCount")), processed=parse_count(body.get("processedCount")),
                succeeded=parse_count(body.get("successCount")), failed=parse_count(body.get("errorCount")),
                output_url=body.get("outputURL") or None, error=reasons[0] if reasons else None,
            )
        # A custom object job only reports recordsProcessed (rejected rows included); its rejected
        # rows are listed by /errors, so succeeded and failed stay unknown here.
        error = body.get("error")
        return Observation(
            remote_id=remote_id, kind=kind, status=status, processed=parse_count(body.get("recordsProcessed")),
            error=str(error.get("message")) if isinstance(error, dict) and error.get("message") else None,
        )


def parse_count(value) -> int | None:
    """A count given as a number or a string (Mass Updater); None when absent, blank or not a count."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str):
        text = value.strip()
        try:
            value = int(text) if text.isascii() and text.isdigit() else float(text)
        except ValueError:
            return None
    if isinstance(value, float):
        if not value.is_integer():
            return None
        value = int(value)
    return value if isinstance(value, int) and value >= 0 else None


def file_error(path: Path, exc: OSError) -> LocalFileError:
    """A local file that could not be read or written, said so that the user can fix it."""
    return LocalFileError(f"{path}: {exc.strerror or exc}; check that the file exists and is readable")


def _job(data: dict, endpoint: str) -> dict:
    co_job_id(_required_str(data, "Id", endpoint), endpoint)
    return data


def _required_str(data: dict, key: str, endpoint: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise RemoteError(f"the answer has no `{key}`", endpoint=endpoint)
    return value


def _md5_of(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)  # Zuora's integrity checksum, not a security use
    try:
        with path.open("rb") as handle:
            for block in _chunks(handle):
                digest.update(block)
    except OSError as exc:
        raise file_error(path, exc) from exc
    return digest.hexdigest()


def _chunks(handle: IO[bytes]) -> Iterator[bytes]:
    yield from iter(lambda: handle.read(CHUNK), b"")
