"""What a person can do to the files by hand ends in a clear message and exit 1, never an internal error (exit 3).

A hand-edited ledger row, a plan file with an absurd number, a spec file linked from outside the
repository: each names the file and the place, and nothing in the ledger changes.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import time

from ops_fixtures import cli, state_files


def edit(settings, sql: str) -> None:
    """Change the ledger behind reconciler's back, as anyone holding the file could."""
    conn = sqlite3.connect(settings.ledger_path)
    conn.execute(sql)
    conn.commit()
    conn.close()


def test_a_job_row_with_a_time_that_is_not_one_is_named_with_exit_1(repo):
    edit(repo, "UPDATE jobs SET created_at = 'yesterday' WHERE id = 1")
    before = state_files(repo)
    for args in (("status",), ("plan", "--no-refresh"), ("apply", "--auto-approve")):
        proc = cli(repo, *args)
        assert proc.returncode == 1, (args, proc.stderr)
        assert "jobs row 1 has created_at 'yesterday', not an ISO 8601 time" in proc.stderr, proc.stderr
        assert "Internal error" not in proc.stderr and "Traceback" not in proc.stderr
    after = state_files(repo)
    ledger = repo.ledger_path.relative_to(repo.root / "state").as_posix()
    assert {k: v for k, v in after.items() if k != ledger} == {k: v for k, v in before.items() if k != ledger}


def test_a_lock_row_edited_by_hand_is_shown_and_taken_over_like_a_lapsed_one(repo):
    now = time.time()
    edit(repo, f"INSERT INTO locks VALUES ('x', 'me', '{socket.gethostname()}', 'not-a-pid', NULL, {now}, {now}, 60)")
    shown = cli(repo, "lock", "status")
    assert shown.returncode == 0 and "(edited by hand)" in shown.stdout, shown.stdout + shown.stderr
    assert json.loads(cli(repo, "lock", "status", "--json").stdout)["lock"]["pid"] == "not-a-pid"
    applied = cli(repo, "apply", "--auto-approve")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert cli(repo, "lock", "status").stdout.startswith("not locked")
    takeover = [line for line in cli(repo, "history").stdout.splitlines() if "lock_takeover" in line]
    assert takeover, "the takeover is in the audit log"


def test_a_plan_file_with_a_5000_digit_number_is_not_a_plan_file(repo):
    made = cli(repo, "plan", "--out", "p.json")
    assert made.returncode == 0, made.stderr
    path = repo.root / "p.json"
    path.write_text(path.read_text().replace('"serial": ', '"serial": ' + "9" * 5000 + ", \"x\": ", 1))
    proc = cli(repo, "apply", "p.json", "--auto-approve")
    assert proc.returncode == 1 and f"{path}: not a plan file" in proc.stderr, proc.stderr


def test_a_spec_file_linked_from_outside_the_repository_is_refused(fresh, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside") / "purge.yaml"
    outside.write_text("apiVersion: reconciler/v1\nkind: CustomObjectJob\nmetadata: {name: purge-all}\n"
                       "spec: {object: vehicle, operation: delete, allowDeleteAll: true}\n")
    (fresh.root / "specs" / "purge.yaml").symlink_to(outside)
    proc = cli(fresh, "validate")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "specs/purge.yaml: is a link pointing outside the repository" in proc.stdout + proc.stderr
