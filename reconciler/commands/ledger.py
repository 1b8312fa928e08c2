"""`reconciler ledger checkpoint` and `reconciler ledger copy SRC DST` (copy, results and sent files included:
ledger/copy.py).

`ledger checkpoint` puts every commit of the ledger into `ledger.db` itself, emptying its `-wal`.

Writers keep the ledger in WAL mode and checkpoint when they close; a writer that died (SIGKILL, an
OOM kill, a cancelled CI job) leaves its last commits only in `ledger.db-wal`, which state/.gitignore
keeps out of git. This command opens the existing ledger (SQLite recovers the WAL on connecting),
checks that it belongs to this environment, copies the WAL back (TRUNCATE checkpoint) and, when no
other process has it open, returns the file to its rollback-journal resting state with no `-wal` or
`-shm` beside it. CI runs it before `git add state`.

It is safe beside a live run: SQLite checkpoints under its own locks, so readers and writers carry
on. It does not take the run lock and does not wait for it (a SIGKILLed run's lock is still in the
ledger, and checkpointing is exactly what must happen then); when a live run holds the lock it says
so, because what that run commits afterwards lands in the WAL again until it closes. Exit 1 when the
ledger is missing, is not a ledger, belongs to another environment, or stayed busy so the WAL could
not be copied back completely.
"""

from __future__ import annotations

import socket
import sys
from typing import TextIO

from reconciler.commands._common import count, display_path, user_path
from reconciler.errors import ExitCode, LedgerError, UsageError


def checkpoint(settings, out: TextIO, *, err: TextIO | None = None) -> int:
    """Checkpoint the environment's ledger; print what was copied back and what rests beside the file."""
    from reconciler.engine.run import binding
    from reconciler.ledger.lock import pid_alive
    from reconciler.ledger.store import Ledger, wal_path, wal_size

    err = err or sys.stderr
    if settings.ledger_url is not None:
        out.write(f"nothing to checkpoint: the ledger is on PostgreSQL ({settings.ledger_url.display}), "
                  "whose commits need no copying back\n")
        return ExitCode.OK
    path = settings.ledger_path
    shown = display_path(settings, path)
    ledger = Ledger.open_checkpoint(path, binding(settings))
    try:
        lock = ledger.current_lock()
        done = ledger.checkpoint()
    finally:
        ledger.close()  # a writer's close: checkpoints again and, when it is alone, turns WAL off
    if not done.complete:
        raise LedgerError(
            f"{shown}: another process kept the ledger busy, so only {done.copied} of {done.frames} WAL frames "
            f"were copied back and {shown}-wal still holds the rest; run `reconciler ledger checkpoint` again "
            "once that process has finished"
        )
    wal = wal_path(path)
    left = wal_size(path)
    if done.frames < 0:
        copied = "it was not in WAL mode: nothing to copy back"
    else:
        copied = f"{done.frames} WAL frame{'s' * (done.frames != 1)} copied back"
    if not wal.exists():
        rest = f"no {wal.name} is left"
    elif left == 0:
        rest = f"{wal.name} is empty (another process still has the ledger open)"
    else:  # another writer committed between the checkpoint and now
        rest = f"{wal.name} holds {left} bytes written since by another process"
    out.write(f"Checkpointed {shown}: {copied}; {rest}.\n")
    live = lock is not None and not lock["expired"] and not (
        lock["host"] == socket.gethostname() and not pid_alive(int(lock["pid"])))
    if live:
        err.write(f"Note: a live run ({lock['holder']}) holds the ledger lock; what it commits from now on is "
                  "in the WAL until it ends. Checkpoint again after it has finished, before committing the ledger.\n")
    return ExitCode.OK


def copy(settings, out: TextIO, *, source: str, destination: str) -> int:
    """`ledger copy SRC DST`: the environment's ledger at SRC (path or postgresql:// URL) made anew at DST."""
    from reconciler.engine.run import binding
    from reconciler.ledger.copy import copy_ledger, shown

    origin, target = _location(settings, source, "SRC"), _location(settings, destination, "DST")
    done = copy_ledger(origin, target, binding(settings), root=settings.root)
    out.write(f"Copied the ledger {shown(origin)} to {shown(target)}: {count(done.runs, 'run')}, "
              f"{count(done.jobs, 'job')}, {count(done.events, 'event')}, {count(done.blobs, 'result and sent file')}"
              f"; lineage {done.lineage}, serial {done.serial}, head {done.head}; the copy verifies.\n")
    if done.missing:
        out.write(f"Not copied, because the source does not hold them ({len(done.missing)}; `reconciler show NAME` "
                  f"reports them missing): {', '.join(done.missing)}\n")
    return ExitCode.OK


def _location(settings, given: str, which: str):
    """A path (relative to where the command started) or a PostgreSQL URL; {environment} filled in."""
    from reconciler.ledger.url import LedgerUrl, is_database_url

    text = given.replace("{environment}", settings.env_key)
    if is_database_url(text):
        return LedgerUrl.from_setting(text, f"ledger copy {which}")
    if "://" in text:
        raise UsageError(f"ledger copy {which}: only a file path or a postgresql:// URL names a ledger")
    return user_path(settings, text)
