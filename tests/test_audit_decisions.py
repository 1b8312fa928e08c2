"""An audit log of decisions, not polls: a long `apply --wait` leaves O(status changes) events per job.

A served sandbox whose Mass Updater job takes about 15 s (pending 3 s, then 12 rows at 1 row a second)
is polled every 0.25 s by `apply --wait`: about 60 reads, of which only the few that saw the status move
(and the download of the result) are recorded. Mutations and failed calls are all kept; `history`
shows the decisions by default and the calls with `--all` / `--event remote_call`.
"""

from __future__ import annotations

import json
import time

import pytest

from apply_support import admin, cli, fx_csv, ledger_events, make_repo, sandbox_process


@pytest.fixture(scope="module")
def slow_url():
    """A sandbox process whose jobs take seconds, as Zuora's do."""
    with sandbox_process("--pending-seconds", "3", "--rows-per-second", "1") as url:
        yield url


def test_a_fifteen_second_job_leaves_at_most_fifteen_events(slow_url, tmp_path):
    admin(slow_url, "reset", {})
    repo = make_repo(tmp_path / "repo", slow_url, mass=("fx-slow",), create=(), delete=())
    (repo / "data" / "fx-slow.csv").write_text(fx_csv(0, rows=12))
    started = time.monotonic()
    proc = cli(repo, "apply", "--auto-approve", "--wait", "--timeout", "120")
    took = time.monotonic() - started
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert took > 12, f"the job ended in {took:.1f} s; the test needs a long wait"

    events = [e for e in ledger_events(repo) if e["name"] == "fx-slow"]
    types = [e["event_type"] for e in events]
    assert len(events) <= 15, types
    print(f"{len(events)} events for a job that took {took:.0f} s: {types}")
    calls = [e for e in events if e["event_type"] == "remote_call"]
    assert [c["method"] for c in calls if c["method"] != "GET"] == ["POST"]  # the submission, kept
    # Each read kept is followed by what it changed, in the same order: a status change or the archive.
    for call in (c for c in calls if c["method"] == "GET"):
        after = events[events.index(call) + 1:]
        assert after and after[0]["event_type"] in ("status_change", "remote_call", "result_archived"), types
    moves = [(e["detail"]["from"], e["detail"]["to"]) for e in events if e["event_type"] == "status_change"]
    assert moves[-1][1] == "Completed"
    assert len([c for c in calls if c["method"] == "GET"]) <= len(moves) + 1  # + the result file's download
    assert "result_archived" in types

    assert cli(repo, "audit", "verify").returncode == 0


def test_failed_reads_are_kept_and_history_shows_decisions_by_default(slow_url, tmp_path):
    admin(slow_url, "reset", {})
    repo = make_repo(tmp_path / "repo", slow_url, mass=("fx-flaky",), create=(), delete=())
    assert cli(repo, "apply", "--auto-approve").returncode == 0
    admin(slow_url, "faults", {"error_rate": 1.0, "seed": 1})
    try:
        refreshed = cli(repo, "status", "--refresh")
    finally:
        admin(slow_url, "faults", {})
    assert refreshed.returncode == 1, refreshed.stdout + refreshed.stderr
    failed = [e for e in ledger_events(repo) if e["event_type"] == "remote_call" and e["method"] == "GET"]
    assert failed and all(e["outcome"] != "ok" for e in failed)  # every failed poll attempt, no success

    default = cli(repo, "history", "--json", "--limit", "1000")
    shown = {e["event_type"] for e in json.loads(default.stdout)["events"]}
    assert {"intent", "submitted"} <= shown and "remote_call" not in shown
    text = cli(repo, "history").stdout
    rows = [line for line in text.splitlines() if line[:1].isdigit()]
    assert rows and not [row for row in rows if " remote_call " in row] and "--all shows every event" in text

    every = {e["event_type"] for e in json.loads(cli(repo, "history", "--all", "--json").stdout)["events"]}
    assert "remote_call" in every and shown < every
    only = json.loads(cli(repo, "history", "--event", "remote_call", "--event", "intent", "--json").stdout)
    assert {e["event_type"] for e in only["events"]} == {"remote_call", "intent"}

    bad = cli(repo, "history", "--event", "status-change")
    assert bad.returncode == 1 and "no such event type" in bad.stderr and "status_change" in bad.stderr
    assert "Traceback" not in bad.stderr
    both = cli(repo, "history", "--all", "--event", "intent")
    assert both.returncode == 1 and "not both" in both.stderr


def test_every_event_type_written_is_in_the_catalogue():
    """`history --event` validates against EVENT_TYPES: a type written anywhere must be listed there."""
    import re
    from pathlib import Path

    from reconciler.ledger.store import EVENT_TYPES

    root = Path(__file__).resolve().parent.parent / "reconciler"
    written = set()
    for source in root.rglob("*.py"):
        if "sandbox" in source.parts:
            continue
        written |= set(re.findall(r"""event_type["']?\s*[=:]\s*["']([a-z_]+)["']""", source.read_text()))
        written |= set(re.findall(r"""_job_event\([^)]*?["']([a-z_]+)["']\s*,\s*\{""", source.read_text()))
        written |= set(re.findall(r"""_note\(change, ["']([a-z_]+)["']""", source.read_text()))
    assert written and written <= set(EVENT_TYPES), written - set(EVENT_TYPES)
