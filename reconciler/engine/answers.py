"""How a change ends and how Zuora's answers are judged, for the applier and those that report on it.

A change ends as a `Result` (or a `ChangeFailed` carrying what to do next); `idempotency_key` is the
deterministic key of one (ledger, name, fingerprint, generation); `is_definitive` says when Zuora
refused a request outright (nothing was created, so it may be forgotten); `service_limit` spots a
custom object job created `failed` for want of a slot.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from reconciler.errors import AuthError, ReconcilerError, RemoteError
from reconciler.model import Action, Outcome

KEY_MAX = 255
KEY_SUFFIX_ROOM = 32  # "-upload", "-cancel-g<generation>" must still fit
# Zuora's "service limit reached" (a job created failed, reference B.2) and the sandbox's 400 for a 6th active
# custom object job (an invented code: Zuora documents none for that 400).
NO_SLOT_CODES = frozenset({"71012560", "71013030"})
_KEY_CHARS = re.compile(r"^[\x21-\x7e]+$")


@dataclass(frozen=True)
class Result:
    """What became of one change: its outcome, and when it failed the error and what to do."""

    name: str
    action: Action
    outcome: Outcome
    remote_id: str | None = None
    status: str | None = None
    error: str | None = None
    hint: str | None = None

    @property
    def failed(self) -> bool:
        """True when the change did not go through."""
        return self.outcome is Outcome.FAILED


class ChangeFailed(ReconcilerError):
    """One change cannot go on; carries what to do next."""

    def __init__(self, message: str, hint: str, remote_id: str | None = None):
        super().__init__(message)
        self.hint = hint
        self.remote_id = remote_id


def idempotency_key(lineage: str, name: str, fingerprint: str, generation: int) -> str:
    """The deterministic Idempotency-Key of one (ledger, name, fingerprint, generation)."""
    key = f"rcl-{lineage}-{name}-{fingerprint[:20]}-g{generation}"
    if len(key) + KEY_SUFFIX_ROOM > KEY_MAX or not _KEY_CHARS.match(key):
        raise ValueError(f"cannot derive an Idempotency-Key for {name!r}: {key!r} is too long or not printable ASCII")
    return key


def is_definitive(err: RemoteError) -> bool:
    """True when Zuora answered and refused: nothing was created, so the request may be forgotten.

    A failure to authenticate (an AuthError: the token endpoint's answer, or a refused token) is never
    a verdict on the request that waited for the token.
    """
    if isinstance(err, AuthError) or err.status is None or err.retryable:
        return False
    if 400 <= err.status < 500:
        return err.status not in (408, 409, 429)
    # A 2xx carrying Zuora's `success: false` and an error code was refused; an unreadable 2xx
    # (a proxy's page, a cut body) may hide a created job, so its outcome stays unknown.
    return 200 <= err.status < 300 and err.code is not None


def service_limit(job: dict) -> str | None:
    """The error of a custom object job Zuora created already `failed` because the tenant had no free slot
    (code 71012560, "Service limit reached, please retry later.", reference B.2), else None."""
    error = job.get("error")
    if job.get("status") != "failed" or not isinstance(error, dict) or str(error.get("code")) not in NO_SLOT_CODES:
        return None
    return f"code {error.get('code')}: {error.get('message') or 'service limit reached'}"
