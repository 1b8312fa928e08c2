"""Which rows earlier jobs of a spec applied, and which rows the latest of them sent, from what is archived.

A Mass Updater response file repeats every input row with `Success` Y or N (blank: not processed), so
it says both. A custom object job's `/errors` lists the rows that failed, by row number in the file it
was sent (header = row 1); the others succeeded, so the sent file is needed too: the copy archived
as state/<env>/sent/... (what a new-rows change sends), else the spec's file when its sha256 is still
the one the job sent. Results and sent files are read from the ledger's blobs (dataset.blobs: files
under state/, or a PostgreSQL ledger's table); one whose sha256 no longer matches the ledger counts
as missing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from reconciler.dataset.blobs import Blobs
from reconciler.dataset.results import custom_object_failures, mass_updater_rows
from reconciler.dataset.table import Identity, Table, identity, read
from reconciler.errors import ResultError
from reconciler.model import MASS_ACTION, REJECTED, JobRecord, Phase

NOTHING_RAN = frozenset({"cancelled", REJECTED})  # statuses that applied no row


class Unknown(Exception):
    """What a job applied cannot be known from what is archived; the message says why and for which job."""


@dataclass(frozen=True)
class Archive:
    """Where a spec's files are: the repository root (the spec's current file is relative to it) and the
    ledger's blobs (results and sent files)."""

    root: Path
    current_file: str | None
    current_sha256: str | None
    blobs: Blobs


def ran(jobs: Iterable[JobRecord]) -> list[JobRecord]:
    """The jobs that reached Zuora (not rejected, not an unconfirmed intent), oldest first."""
    return sorted((j for j in jobs if j.remote_status != REJECTED and j.phase != Phase.INTENT),
                  key=lambda j: j.generation)


def applied_rows(jobs: Iterable[JobRecord], archive: Archive, action_type: str | None) -> Counter[Identity]:
    """The identities (with multiplicity) of every row these jobs applied successfully; Unknown if any is unknown."""
    applied: Counter[Identity] = Counter()
    for job in jobs:
        applied += _applied_by(job, archive, action_type)
    return applied


def sent_rows(job: JobRecord, archive: Archive, action_type: str | None) -> list[dict[str, str]] | None:
    """The rows `job` was sent, when something archived still holds them (None otherwise)."""
    table = _sent_table(job, archive)
    if table is not None:
        return table.records()
    if job.kind == MASS_ACTION and job.result_path:
        try:
            return [values for values, _ in mass_updater_rows(_checked(job, archive), action_type or "")[1]]
        except (ResultError, Unknown):
            return None
    return None


def _applied_by(job: JobRecord, archive: Archive, action_type: str | None) -> Counter[Identity]:
    if job.remote_status in NOTHING_RAN:
        return Counter()
    if not job.result_path:
        if not job.processed and job.remote_status in ("Stopped", "Failed", "failed"):
            return Counter()  # it ended before processing a row
        raise Unknown(f"the result of generation {job.generation} (job {job.remote_id}, {job.remote_status}) is not "
                      "archived, so which of its rows were applied is unknown")
    path = _checked(job, archive)
    try:
        if job.kind == MASS_ACTION:
            _, rows = mass_updater_rows(path, action_type or "")
            return Counter(identity(values) for values, success in rows if success == "Y")
        failed = {r.row for r in custom_object_failures(path).rows}
    except ResultError as exc:
        raise Unknown(str(exc)) from exc
    table = _sent_table(job, archive)
    if table is None:
        raise Unknown(f"the file generation {job.generation} (job {job.remote_id}) sent is not archived and the spec's "
                      "file has changed since, so which rows it applied is unknown")
    return Counter(identity(r) for number, r in enumerate(table.records(), start=2) if number not in failed)


def _checked(job: JobRecord, archive: Archive) -> Path:
    assert job.result_path is not None
    path = archive.blobs.fetch(job.result_path, job.result_sha256)
    if path is None:
        raise Unknown(f"{job.result_path}: the archived result of generation {job.generation} is missing or changed "
                      "since it was archived (its sha256 differs from the ledger's)")
    return path


def _sent_table(job: JobRecord, archive: Archive) -> Table | None:
    """The file `job` was sent: its archived copy, or the spec's file if it is still the one sent."""
    sent, sent_sha = job.detail.get("sent_file"), job.detail.get("sent_sha256")
    if isinstance(sent, str) and isinstance(sent_sha, str):
        path = archive.blobs.fetch(sent, sent_sha)
        return _read_or_none(path, sent) if path is not None else None  # never the spec's file instead
    if archive.current_file and archive.current_sha256 and job.detail.get("file_sha256") == archive.current_sha256:
        return _read_or_none(archive.root / archive.current_file, archive.current_file)
    return None


def _read_or_none(path: Path, display: str) -> Table | None:
    try:
        return read(path, display)
    except ResultError:
        return None
