"""`audit verify` covers the records decisions are made from, not only the events (issue 16, item 6).

Each test edits a real applied ledger behind reconciler's back, as anyone holding the file could, and
checks that verify names what was done, or (for a rewrite of the whole history) that the head an
earlier apply printed catches what no recomputation can.
"""

from __future__ import annotations

import json
import re
import sqlite3

import pytest

from ops_fixtures import cli
from reconciler.ledger.chain import GENESIS_HASH, event_hash, job_digest


def edit(settings, *statements: str) -> None:
    conn = sqlite3.connect(settings.ledger_path)
    conn.executescript("DROP TRIGGER IF EXISTS events_no_update; DROP TRIGGER IF EXISTS events_no_delete;")
    for sql in statements:
        conn.execute(sql)
    conn.commit()
    conn.close()


def rows(settings, sql: str) -> list[dict]:
    conn = sqlite3.connect(settings.ledger_path)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(sql)]
    finally:
        conn.close()


def rechain(settings, keep=lambda event: True, detail=lambda d: d) -> None:
    """Rewrite the whole log as someone who knows the algorithm would: drop events, renumber, rehash, fix meta."""
    events = [e for e in rows(settings, "SELECT * FROM events ORDER BY id") if keep(e)]
    conn = sqlite3.connect(settings.ledger_path)
    conn.executescript("DROP TRIGGER IF EXISTS events_no_update; DROP TRIGGER IF EXISTS events_no_delete;"
                       "DELETE FROM events;")
    prev = GENESIS_HASH
    for number, event in enumerate(events, start=1):
        parsed = detail(json.loads(event["detail"]))
        event.update(id=number, prev_hash=prev, detail=parsed)
        event["hash"] = prev = event_hash(event)
        event["detail"] = json.dumps(parsed, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        conn.execute(f"INSERT INTO events ({', '.join(event)}) VALUES ({', '.join('?' * len(event))})",
                     tuple(event.values()))
    conn.execute("UPDATE meta SET head_hash = ?, events_count = ? WHERE id = 1", (prev, len(events)))
    conn.commit()
    conn.close()


def verify(settings, *args: str):
    proc = cli(settings, "audit", "verify", *args)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def first_job(settings) -> dict:
    return rows(settings, "SELECT * FROM jobs ORDER BY id LIMIT 1")[0]


def test_an_untouched_ledger_verifies_with_its_jobs(repo):
    proc = verify(repo)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "events and the job rows they bind" in proc.stdout


def test_every_job_row_matches_the_digest_its_latest_event_recorded(repo):
    events = rows(repo, "SELECT * FROM events ORDER BY id")
    for job in rows(repo, "SELECT * FROM jobs"):
        bound = [json.loads(e["detail"]) for e in events if e["idempotency_key"] == job["idempotency_key"]]
        digests = [d["job_sha256"] for d in bound if "job_sha256" in d]
        assert digests and digests[-1] == job_digest(job), job["name"]


def test_a_changed_fingerprint_is_named(repo):
    job = first_job(repo)
    edit(repo, f"UPDATE jobs SET fingerprint = 'edited' WHERE id = {job['id']}")
    proc = verify(repo)
    assert proc.returncode == 1
    assert proc.stdout.startswith(f"FAILED: job {job['id']} ({job['name']} generation 1): its fingerprint differs "
                                  "from its intent event"), proc.stdout


@pytest.mark.parametrize("change", [
    "phase = 'retired'", "remote_status = 'Failed'", "remote_id = NULL", "result_sha256 = 'x'",
    "detail = '{}'", "uploaded = 1 - uploaded",
])
def test_a_row_changed_without_its_event_is_named(repo, change):
    job = first_job(repo)
    edit(repo, f"UPDATE jobs SET {change} WHERE id = {job['id']}")
    proc = verify(repo)
    assert proc.returncode == 1
    assert f"job {job['id']} ({job['name']} generation 1): the row is not the one its latest event" in proc.stdout


def test_progress_counts_and_times_are_not_decisions(repo):
    edit(repo, "UPDATE jobs SET processed = 0, updated_at = '2020-01-01T00:00:00+00:00'")
    assert verify(repo).returncode == 0


def test_a_deleted_job_row_is_named_and_apply_will_not_run_its_spec_again(repo):
    job = first_job(repo)
    edit(repo, f"DELETE FROM jobs WHERE id = {job['id']}")
    proc = verify(repo)
    assert proc.returncode == 1
    assert f"{job['name']} generation 1 has an intent" in proc.stdout and "no job row" in proc.stdout
    jobs_before = rows(repo, "SELECT id FROM jobs")
    applied = cli(repo, "apply", "--auto-approve", "--target", job["name"])
    assert applied.returncode == 1, applied.stdout + applied.stderr
    assert f"refusing to record {job['name']} generation 1: the audit log holds the intent" in applied.stdout
    assert rows(repo, "SELECT id FROM jobs") == jobs_before


def test_a_row_added_by_hand_is_named(repo):
    job = first_job(repo)
    columns = [c for c in job if c != "id"]
    copy = {**job, "idempotency_key": "made-up", "generation": 9}
    edit(repo, f"INSERT INTO jobs ({', '.join(columns)}) VALUES ({', '.join(repr(copy[c]) if copy[c] is not None else 'NULL' for c in columns)})")
    proc = verify(repo)
    assert proc.returncode == 1
    assert "no intent event has its idempotency key 'made-up'" in proc.stdout


def test_a_flipped_superseded_flag_is_named(repo):
    job = first_job(repo)
    edit(repo, f"UPDATE jobs SET superseded = 1 - superseded WHERE id = {job['id']}")
    proc = verify(repo)
    assert proc.returncode == 1 and "superseded flag" in proc.stdout


def test_a_deleted_run_is_named(repo):
    edit(repo, "PRAGMA foreign_keys = OFF", "DELETE FROM runs WHERE id = 1")
    proc = verify(repo)
    assert proc.returncode == 1 and "run 1 is named by its events but has no row in runs" in proc.stdout


def test_a_ledger_written_before_rows_were_bound_still_verifies_against_its_intents(repo):
    """Events from before job_sha256 existed: rechained without it, as the previous version wrote them."""
    rechain(repo, detail=lambda d: {k: v for k, v in d.items() if k != "job_sha256"})
    assert verify(repo).returncode == 0
    job = first_job(repo)
    edit(repo, f"UPDATE jobs SET revision = 99 WHERE id = {job['id']}")
    proc = verify(repo)
    assert proc.returncode == 1 and "its revision differs from its intent event" in proc.stdout


def test_a_rewritten_history_verifies_alone_but_not_against_the_head_apply_printed(fresh):
    applied = cli(fresh, "apply", "--auto-approve")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    head = re.search(r"^Audit head: ([0-9a-f]{64}:\d+) ", applied.stdout, re.M)
    assert head is not None, applied.stdout
    assert verify(fresh, "--head", head[1]).returncode == 0
    victim = first_job(fresh)["name"]
    edit(fresh, f"DELETE FROM jobs WHERE name = '{victim}'")
    rechain(fresh, keep=lambda e: e["name"] != victim)
    alone = verify(fresh)
    assert alone.returncode == 0, alone.stdout  # what no recomputation can prove: the README says so
    assert "new" in cli(fresh, "plan", "--no-refresh", "--target", victim).stdout
    witnessed = verify(fresh, "--head", head[1])
    assert witnessed.returncode == 1
    assert f"does not extend the head {head[1]} seen before" in witnessed.stdout


def test_a_head_is_checked_at_its_count(repo):
    head = re.search(r"head ([0-9a-f]{64}):(\d+)", verify(repo).stdout)
    assert head is not None
    assert verify(repo, "--head", f"{head[1]}:{head[2]}").returncode == 0
    assert verify(repo, "--head", head[1].upper()).returncode == 0  # the count is optional, case is not kept
    assert verify(repo, "--head", f"{head[1]}:{int(head[2]) - 1}").returncode == 1
    assert verify(repo, "--head", f"{'0' * 63}1").returncode == 1


@pytest.mark.parametrize("bad", ["nothex", "abc:1", f"{'a' * 64}:0", f"{'a' * 64}:x", ""])
def test_a_malformed_head_is_a_usage_error(repo, bad):
    proc = verify(repo, "--head", bad)
    assert proc.returncode == 1
    assert "--head" in proc.stderr and "64-hex-digit hash" in proc.stderr


def test_the_pull_request_comment_carries_the_audit_head_it_was_planned_on(repo, fresh):
    pattern = r"audit head `([0-9a-f]{64}:\d+)`"
    head = re.search(r"head ([0-9a-f]{64}:\d+)", verify(repo).stdout)[1]
    read_only = re.search(pattern, cli(repo, "plan", "--no-refresh", "--markdown").stdout)
    assert read_only is not None and read_only[1] == head  # reading moves nothing
    refreshed = re.search(pattern, cli(repo, "plan", "--markdown").stdout)
    assert refreshed is not None and verify(repo, "--head", refreshed[1]).returncode == 0
    assert "audit head" not in cli(fresh, "plan", "--markdown").stdout  # no ledger, no head
