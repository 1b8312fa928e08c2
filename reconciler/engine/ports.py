"""What the applier needs from outside it: the remote operations (`Remote`) and where it reports (`Journal`).

zuora.client.ZuoraClient is the Remote; engine.journal.LedgerJournal the Journal. The applier sees
only these protocols, so it imports neither the ledger nor an HTTP library.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import Protocol, Sequence

from reconciler.engine.plan import Change
from reconciler.model import Condition, Observation, Phase


class Remote(Protocol):
    """The remote operations the applier needs (reconciler.zuora.client.ZuoraClient has them)."""

    def submit_mass_action(self, action_type: str, file_path: Path, *, idempotency_key: str | None) -> str: ...

    def stop_mass_action(self, bulk_key: str) -> None: ...

    def create_co_job(self, *, namespace: str, object: str, operation: str, conditions: Sequence[Condition] = (),
                      idempotency_key: str | None) -> dict: ...

    def upload_co_file(self, job_id: str, file_path: Path, *, idempotency_key: str | None) -> dict: ...

    def cancel_co_job(self, job_id: str, *, idempotency_key: str | None) -> dict: ...

    def observe(self, kind: str, remote_id: str) -> Observation: ...


class Outbox(Protocol):
    """The file a change sends when it is not the spec's own (engine.data.SentFiles: the rows not applied yet)."""

    def file_for(self, change: Change) -> Path | None: """The file to send, written before the intent; None: the spec's."""


class Journal(Protocol):
    """Where the applier reports intents and results; each call is committed before it returns."""

    def working_on(self, name: str) -> AbstractContextManager: """Attribute this thread's remote calls to `name`."""

    def intent(self, change: Change, key: str) -> int: """Commit an intent row before the POST; its job handle."""

    def submitted(self, job: int, change: Change, *, remote_id: str, status: str | None, phase: Phase) -> None:
        """Record the remote job a submission created."""

    def rejected(self, job: int, change: Change, *, error: str) -> None:
        """Record that Zuora refused the submission: nothing exists remotely."""

    def uploaded(self, change: Change, *, remote_id: str, status: str | None) -> None:
        """Record that a custom object job's file was uploaded."""

    def stop_requested(self, change: Change, *, remote_id: str) -> None: """Event: a stop is about to be sent."""

    def stop_answered(self, change: Change, *, remote_id: str) -> None: """Event: Zuora accepted the stop."""

    def upload_intent(self, change: Change, *, remote_id: str, key: str) -> None:
        """Event: a custom object job's file is about to be uploaded with this key."""

    def cancel_intent(self, change: Change, *, remote_id: str, key: str) -> None:
        """Event: a cancel with this key is about to be sent."""

    def observed(self, change: Change, obs: Observation) -> None: """Record a job's live status."""

    def retired(self, change: Change, *, remote_id: str | None, reason: str) -> None:
        """Retire the job (ledger only)."""

    def retire_ended(self, change: Change, *, remote_id: str, reason: str) -> bool:
        """Retire a halted job of a removed spec once it has ended and its result is archived; whether it did."""
