"""The one exception hierarchy, the exit-code contract (DESIGN §8), and SIGTERM turned into one of them."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes: one documented contract for every command."""

    OK = 0
    ERROR = 1  # expected error, invalid input, conflict, failed change, held lock
    CHANGES = 2  # plan --detailed-exitcode: changes present
    INTERNAL = 3  # unexpected internal error
    INTERRUPTED = 130  # SIGINT (Ctrl-C)
    TERMINATED = 143  # SIGTERM (what a cancelled CI job sends)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread: a run stops as on Ctrl-C, and exits 143."""


def stop_like_ctrl_c_on_sigterm():
    """From now on SIGTERM raises Terminated (a KeyboardInterrupt) in the main thread, so a cancelled CI job's
    run stops as on Ctrl-C: nothing new is sent, calls in flight are recorded, the lock is released, exit 143.
    Returns the handler it replaced (None off the main thread, where nothing is installed)."""
    import signal
    import threading

    def stop(signum, frame):
        raise Terminated()

    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, stop)


class ReconcilerError(Exception):
    """Base of every expected failure; the message says what to do next."""

    exit_code: ExitCode = ExitCode.ERROR


class ConfigError(ReconcilerError):
    """reconciler.yaml or the environment variables are wrong."""


class SpecError(ReconcilerError):
    """The spec repository is invalid; carries every problem found."""

    def __init__(self, problems, message: str | None = None):
        self.problems = tuple(problems)
        super().__init__(message or f"{len(self.problems)} problem(s) in the specs")


class LedgerError(ReconcilerError):
    """The ledger cannot be opened, read or written."""


class LockHeldError(LedgerError):
    """Another run holds the ledger lock."""


class UsageError(ReconcilerError):
    """A command-line argument is wrong: a bad --selector, a --target or --rerun naming no spec."""


class PlanFileError(ReconcilerError):
    """A saved plan file is unreadable, malformed or stale."""


class LocalFileError(ReconcilerError):
    """A local file the Zuora client sends or writes (an input CSV, a download) cannot be read or written."""


class InvalidIdError(ReconcilerError):
    """A remote id (a bulk key, a custom object job id) that cannot name a Zuora job in a URL path."""


class RemoteError(ReconcilerError):
    """Zuora (or the sandbox) answered with an error or could not be reached."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | int | None = None,
        request_id: str | None = None,
        endpoint: str | None = None,
        retryable: bool = False,
    ):
        self.status = status
        self.code = code
        self.remote_message = message
        self.request_id = request_id
        self.endpoint = endpoint
        self.retryable = retryable
        parts = [endpoint] if endpoint else []
        if status is not None:
            parts.append(f"HTTP {status}")
        if code is not None:
            parts.append(f"code {code}")
        prefix = f"{' '.join(parts)}: " if parts else ""
        suffix = f" (Zuora-Request-Id {request_id})" if request_id else ""
        super().__init__(f"{prefix}{message}{suffix}")


class AuthError(RemoteError):
    """Zuora did not authenticate us: the token endpoint refused the client credentials or failed, or Zuora
    refused the bearer token (a static ZUORA_ACCESS_TOKEN, or a freshly issued one).

    It ends the whole run and is never a verdict on the request that was waiting for the token: a
    submission being sent or resumed keeps its intent, and the next run resumes it with the same key.
    """


class StateError(ReconcilerError):
    """What was asked does not fit the job's state: not submitted yet, still running, missing in Zuora,
    or recorded differently in the ledger than the plan expects."""


class ResultError(ReconcilerError):
    """A finished job's result (response file, error list, input file) cannot be fetched or read."""


class OutputError(ReconcilerError):
    """A file the user asked for (e.g. --failed-rows) cannot be written."""


class WaitTimedOut(ReconcilerError):
    """--wait gave up before every followed job ended; the jobs keep running in Zuora."""


class ConflictError(ReconcilerError):
    """The plan holds conflicts that must be resolved by a person first."""


class ApplyFailed(ReconcilerError):
    """At least one change failed; the others went on."""
