"""`reconciler history [NAME]` on real ledgers produced by real applies, and on a very large one."""

from __future__ import annotations

import io
import json
import sqlite3

import pytest

from ops_fixtures import cli, state_files
from reconciler.commands.history import history
from reconciler.ledger.store import Ledger
from reconciler.engine.run import binding, read_ledger


@pytest.fixture
def repo(repo_on_both_stores):
    """Every test here runs on the SQLite ledger and on its PostgreSQL copy."""
    return repo_on_both_stores


def run(settings, **kw) -> tuple[int, str]:
    out = io.StringIO()
    code = history(settings, out, **kw)
    return code, out.getvalue()


def test_newest_first_with_the_documented_columns(repo):
    with read_ledger(repo) as ledger:
        newest = ledger.events(limit=3, exclude=["remote_call"])
    code, text = run(repo, limit=3)
    assert code == 0
    lines = text.splitlines()
    assert lines[0].split() == ["ID", "TIME", "ACTOR", "EVENT", "NAME", "CALL", "HTTP", "OUTCOME"]
    assert [int(line.split()[0]) for line in lines[1:4]] == [e["id"] for e in newest]
    assert lines[4].startswith("(older events not shown; --limit 30 shows more")


def test_remote_calls_show_method_path_status_and_outcome(repo):
    document = json.loads(run(repo, name="fx-rates", limit=500, as_json=True, every=True)[1])
    calls = [e for e in document["events"] if e["event_type"] == "remote_call"]
    submit = next(e for e in calls if e["method"] == "POST" and e["path"] == "/v1/bulk")
    text = run(repo, name="fx-rates", limit=500, event_types=["remote_call"])[1]
    row = next(line for line in text.splitlines() if line.startswith(f"{submit['id']} "))
    assert "POST /v1/bulk" in row and " 200 " in row and row.endswith("ok")
    assert submit["actor"] in row and submit["request_id"] and submit["track_id"]


def test_a_name_filters_and_json_carries_every_field(repo):
    code, text = run(repo, name="payments", limit=1000, as_json=True)
    document = json.loads(text)
    assert code == 0 and document["more"] is False
    events = document["events"]
    assert events and all(e["name"] == "payments" for e in events)
    assert [e["id"] for e in events] == sorted((e["id"] for e in events), reverse=True)
    assert set(events[0]) == {"id", "ts", "run_id", "name", "event_type", "method", "path", "http_status",
                              "request_id", "track_id", "idempotency_key", "outcome", "actor", "detail",
                              "prev_hash", "hash"}
    assert json.loads(run(repo, name="payments", limit=2, as_json=True)[1])["more"] is True


def test_no_ledger(fresh):  # an unknown name: tests/test_unknown_name.py
    code, text = run(fresh)
    assert code == 0 and text.startswith("no ledger yet")
    assert json.loads(run(fresh, as_json=True)[1]) == {"events": []}
    assert run(fresh, name="payments")[0] == 0
    assert not (fresh.root / "state").exists()


def test_a_spec_without_events_says_so(repo):
    (repo.root / "specs" / "later.yaml").write_text(
        "apiVersion: reconciler/v1\nkind: MassAction\nmetadata: {name: later}\n"
        "spec: {actionType: ImportFXRate, file: ../data/fx.csv}\n")
    assert run(repo, name="later") == (0, "no events for later yet\n")


def test_reads_never_write(repo):
    before = state_files(repo)
    run(repo)
    run(repo, name="payments", as_json=True)
    assert cli(repo, "history", "--limit", "5").returncode == 0
    assert state_files(repo) == before


def test_a_large_ledger_reads_only_the_newest_rows(fresh):
    """200,000 events (the same reads take about 2 ms on a million): only `limit` rows come back."""
    Ledger.open_write(fresh.ledger_path, binding(fresh)).close()
    conn = sqlite3.connect(fresh.ledger_path)
    conn.execute(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200000) "
        "INSERT INTO events (id, ts, name, event_type, method, path, http_status, outcome, actor, detail, "
        "prev_hash, hash) SELECT i, '2026-11-01T00:00:00+00:00', 'spec-' || (i % 1000), 'remote_call', 'GET', "
        "'/v1/bulk/k' || i, 200, 'ok', 'ci@runner', '{}', '-', '-' FROM n")
    conn.commit()
    conn.close()
    lines = run(fresh, limit=3, every=True)[1].splitlines()
    assert [line.split()[0] for line in lines[1:4]] == ["200000", "199999", "199998"]
    lines = run(fresh, limit=3, event_types=["remote_call"])[1].splitlines()
    assert [line.split()[0] for line in lines[1:4]] == ["200000", "199999", "199998"]
    lines = run(fresh, name="spec-7", limit=2, every=True)[1].splitlines()
    assert [line.split()[0] for line in lines[1:3]] == ["199007", "198007"]
