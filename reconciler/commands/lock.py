"""`reconciler lock status | release ID`: who holds the ledger's run lock, and releasing it by force.

`status` only reads. `release` needs the lock's id as `status` prints it (so a stale copy of an id
cannot release a newer holder's lock), deletes the lock and appends a `lock_release` event naming
the operator and the holder. Use it when a run died on another host and you cannot wait for its
lease to lapse (60 s without a heartbeat). A holder whose process is still alive on this host is a
run in progress: releasing its lock would let a second run apply beside it, so that needs `--force`.
"""

from __future__ import annotations

import socket
from typing import TextIO

from reconciler.commands._common import no_ledger, write_json
from reconciler.errors import ExitCode, UsageError


def status(settings, out: TextIO, *, as_json: bool = False) -> int:
    """Print the lock holder (id, user, host, pid, CI run, since, heartbeat, expired) or `not locked`."""
    from reconciler.engine.run import read_ledger
    from reconciler.ledger.lock import pid_alive

    ledger = read_ledger(settings)
    lock = None
    if ledger is not None:
        with ledger:
            lock = ledger.current_lock()
    if lock is None:
        if as_json:
            write_json(out, {"locked": False, "lock": None})
        else:
            out.write(("not locked" if ledger is not None else no_ledger(settings) + "; not locked") + "\n")
        return ExitCode.OK
    gone = (lock["host"] == socket.gethostname() and isinstance(lock["pid"], int) and not pid_alive(lock["pid"]))
    document = {k: lock[k] for k in ("id", "user", "host", "pid", "ci_run_url", "acquired_at", "heartbeat_at",
                                     "lease_seconds", "expired")}
    document["holder_gone"] = gone
    if as_json:
        write_json(out, {"locked": True, "lock": document})
        return ExitCode.OK
    state = "expired: its lease lapsed, the next run takes it over" if lock["expired"] else "held"
    if gone:
        state = "stale: the holder process is gone, the next run on this host takes it over"
    lines = [("id", lock["id"]), ("holder", lock["holder"]), ("user", lock["user"]), ("host", lock["host"]),
             ("pid", lock["pid"]), ("CI run", lock["ci_run_url"] or "-"), ("since", lock["acquired_at"]),
             ("last heartbeat", lock["heartbeat_at"]), ("lease", f"{lock['lease_seconds']:g}s"), ("state", state)]
    out.write("locked\n")
    for label, value in lines:
        out.write(f"  {label.ljust(14)}  {value}\n")
    return ExitCode.OK


def release(settings, out: TextIO, *, lock_id: str, force: bool = False) -> int:
    """Release the lock with this id by force, recording who did it; exit 1 when no such lock is held, or
    (without `force`) when its holder's process is alive on this host."""
    from reconciler.engine.run import Session, read_ledger
    from reconciler.ledger.lock import pid_alive

    ledger = read_ledger(settings)
    if ledger is None:
        raise UsageError(f"{no_ledger(settings)}, so no lock is held")
    with ledger:
        lock = ledger.current_lock()
    if lock is None or lock["id"] != lock_id:
        held = f"the lock held now is {lock['id']}" if lock else "the ledger is not locked"
        raise UsageError(f"no lock {lock_id!r} is held ({held}); `reconciler lock status` shows the current one")
    here = lock["host"] == socket.gethostname()
    if here and isinstance(lock["pid"], int) and pid_alive(lock["pid"]) and not force:
        raise UsageError(f"lock {lock_id} is held by {lock['holder']}, whose process is still running on this host: "
                         "releasing it would let another run apply beside it. Wait for it to finish, stop it "
                         f"(kill -TERM {lock['pid']}, it releases the lock itself), or pass --force")
    session = Session(settings, command="lock release")
    outcome = "error"
    try:
        session.ledger.release_lock(lock_id, by=session.actor, forced=True)
        outcome = "ok"
    finally:
        session.close(outcome)
    out.write(f"Released lock {lock_id} held by {lock['holder']} since {lock['acquired_at']}; "
              f"recorded in the audit log as released by {session.actor.label}.\n")
    return ExitCode.OK
