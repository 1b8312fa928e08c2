"""SIGTERM (what a cancelled CI job sends) stops apply as Ctrl-C does: nothing new is sent, what was sent
is recorded, the lock is released, the run says what keeps running in Zuora; exit 143 (130 for SIGINT)."""

from __future__ import annotations

import signal

import pytest

from apply_support import (
    assert_exactly_once, cli, ledger_jobs, make_repo, remote_jobs, served_sandbox, start_cli, wait_until,
)

EXIT = {signal.SIGTERM: (143, "Terminated."), signal.SIGINT: (130, "Interrupted.")}


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_during_the_wait_stops_cleanly_and_names_what_keeps_running(tmp_path, signum):
    with served_sandbox(pending_seconds=3600) as url:  # the jobs stay Pending / accepted: --wait waits
        repo = make_repo(tmp_path, url, create=(), delete=())
        proc = start_cli(repo, "apply", "--auto-approve", "--wait")
        try:
            wait_until(lambda: len([j for j in ledger_jobs(repo) if j.remote_id]) == 2, timeout=60,
                       message="apply submitted both specs")
            proc.send_signal(signum)
            out, err = proc.communicate(timeout=60)
        finally:
            proc.kill()
        code, word = EXIT[signum]
        assert proc.returncode == code, out + err
        assert err.rstrip().endswith(word) and "Traceback" not in err, err
        assert "Stopped: 2 jobs submitted by this run (fx-a, fx-b)." in out, out
        assert "Still running in Zuora: fx-a (Pending), fx-b (Pending); `reconciler status --wait` follows them." \
            in out, out
        assert cli(repo, "lock", "status").stdout.startswith("not locked")  # no 60 s wait for the next run
        again = cli(repo, "apply", "--auto-approve")
        assert again.returncode == 0 and "No changes." in again.stdout, again.stdout + again.stderr
        assert len(remote_jobs(url)) == 2
        assert_exactly_once(repo, url, ("fx-a", "fx-b"))
