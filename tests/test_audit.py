"""`reconciler audit verify | export` on real ledgers produced by real applies, and on tampered copies."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import sqlite3

import pytest

from ops_fixtures import cli, state_files
from reconciler.ledger.chain import EVENT_FIELDS
from reconciler.commands.audit import export, verify
from reconciler.engine.run import read_ledger


def run_verify(settings) -> tuple[int, str]:
    out = io.StringIO()
    return verify(settings, out), out.getvalue()


def tamper(settings, sql: str, params: tuple = ()) -> None:
    """Edit the ledger file behind reconciler's back, as anyone holding the file could."""
    conn = sqlite3.connect(settings.ledger_path)
    conn.executescript("DROP TRIGGER IF EXISTS events_no_update; DROP TRIGGER IF EXISTS events_no_delete;")
    conn.execute(sql, params)
    conn.commit()
    conn.close()


def event_count(settings) -> int:
    with read_ledger(settings) as ledger:
        return ledger.events(limit=1)[0]["id"]


def recompute(event: dict) -> str:
    """The chain's hash, written from its description alone (DESIGN §6, chain.py), with hashlib and json."""
    fields = {k: v for k, v in event.items() if k != "hash"}
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def test_verify_ok_names_the_count_and_the_head(repo):
    with read_ledger(repo) as ledger:
        head = ledger.events(limit=1)[0]
    code, text = run_verify(repo)
    assert code == 0
    assert text == f"OK: {head['id']} events and the job rows they bind, head {head['hash']}:{head['id']} " \
                   "(state/local/ledger.db)\n"
    proc = cli(repo, "audit", "verify")
    assert proc.returncode == 0 and proc.stdout.startswith(f"OK: {head['id']} events")


def _changed(value):
    if value is None:
        return 7
    if isinstance(value, int):
        return value + 1
    return value + "x"


@pytest.mark.parametrize("field", EVENT_FIELDS)
@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_verify_names_the_row_whose_field_was_changed(repo, field, where):
    total = event_count(repo)
    row = {"first": 1, "middle": total // 2, "last": total}[where]
    conn = sqlite3.connect(repo.ledger_path)
    value = conn.execute(f"SELECT {field} FROM events WHERE id = ?", (row,)).fetchone()[0]
    conn.close()
    new = total + 100 if field == "id" else _changed(value)
    tamper(repo, f"UPDATE events SET {field} = ? WHERE id = ?", (new, row))
    code, text = run_verify(repo)
    assert code == 1
    assert text.startswith(f"FAILED: event {row}: ")


def test_verify_names_a_deleted_row(repo):
    tamper(repo, "DELETE FROM events WHERE id = 5")
    code, text = run_verify(repo)
    assert code == 1 and text.startswith("FAILED: event 5: ids jump from 4 to 6: event 5 was deleted")
    proc = cli(repo, "audit", "verify")
    assert proc.returncode == 1 and proc.stdout.startswith("FAILED: event 5:")


def test_verify_names_the_first_row_of_a_cut_tail(repo):
    total = event_count(repo)
    tamper(repo, "DELETE FROM events WHERE id > ?", (total - 3,))
    code, text = run_verify(repo)
    assert code == 1
    assert text.startswith(f"FAILED: event {total - 2}: the log ends at event {total - 3} but the ledger "
                           f"recorded {total} events")


def test_jsonl_export_is_one_event_per_line_that_an_auditor_can_recheck(repo, tmp_path):
    out = io.StringIO()
    assert export(repo, out, fmt="jsonl", output=str(tmp_path / "audit.jsonl")) == 0
    lines = (tmp_path / "audit.jsonl").read_text(encoding="utf-8").splitlines()
    assert out.getvalue() == f"Exported {len(lines)} events to {tmp_path / 'audit.jsonl'}\n"
    previous = "0" * 64
    for number, line in enumerate(lines, start=1):
        event = json.loads(line)
        assert list(event) == sorted(EVENT_FIELDS) and event["id"] == number
        assert event["prev_hash"] == previous and recompute(event) == event["hash"]
        previous = event["hash"]
    assert run_verify(repo)[1].split("head ")[1].split()[0] == f"{previous}:{len(lines)}"


def test_jsonl_export_to_standard_output_is_pure(repo):
    proc = cli(repo, "audit", "export")
    assert proc.returncode == 0
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(events) == event_count(repo) and all(recompute(e) == e["hash"] for e in events)


def test_csv_export_has_a_header_and_a_row_per_event(repo):
    out = io.StringIO()
    assert export(repo, out, fmt="csv") == 0
    rows = list(csv.reader(io.StringIO(out.getvalue())))
    assert rows[0] == list(EVENT_FIELDS)
    assert len(rows) == event_count(repo) + 1
    first = dict(zip(rows[0], rows[1]))
    assert first["id"] == "1" and first["prev_hash"] == "0" * 64  # apply's first event: authenticating
    assert any("kind" in json.loads(dict(zip(rows[0], row))["detail"] or "{}") for row in rows[1:])
    assert first["method"] == "POST" and first["idempotency_key"] == ""  # null is an empty cell


@pytest.mark.parametrize("text", ["=HYPERLINK(\"https://evil.example\")", "+1+1", "-2+3", "@SUM(A1)", "\tx"])
def test_csv_cells_that_a_spreadsheet_would_run_as_formulas_are_defused(repo, text):
    # Zuora's text (statuses, messages) reaches event fields; here one is planted by hand.
    tamper(repo, f"UPDATE events SET outcome = '{text}' WHERE id = 3")
    out = io.StringIO()
    export(repo, out, fmt="csv")
    rows = list(csv.reader(io.StringIO(out.getvalue())))
    third = dict(zip(rows[0], rows[3]))
    assert third["outcome"] == "'" + text
    assert all(not cell.startswith(("=", "+", "-", "@", "\t")) for row in rows[1:] for cell in row if cell), rows


def test_an_export_of_a_tampered_ledger_fails_the_outside_check(repo):
    tamper(repo, "UPDATE events SET outcome = 'ok (edited)' WHERE id = 3")
    out = io.StringIO()
    export(repo, out)
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [e["id"] for e in events if recompute(e) != e["hash"]] == [3]


def test_no_ledger(fresh, tmp_path):
    code, text = run_verify(fresh)
    assert code == 0 and text.startswith("no ledger yet")
    out = io.StringIO()
    assert export(fresh, out) == 0 and out.getvalue() == ""
    out = io.StringIO()
    assert export(fresh, out, fmt="csv") == 0 and out.getvalue() == ",".join(EVENT_FIELDS) + "\n"
    out = io.StringIO()
    assert export(fresh, out, output=str(tmp_path / "a.jsonl")) == 0
    assert "no ledger yet" in out.getvalue() and not (tmp_path / "a.jsonl").exists()
    assert not (fresh.root / "state").exists()


def test_reads_never_write(repo, tmp_path):
    before = state_files(repo)
    run_verify(repo)
    export(repo, io.StringIO())
    export(repo, io.StringIO(), fmt="csv", output=str(tmp_path / "a.csv"))
    assert cli(repo, "audit", "verify").returncode == 0
    assert state_files(repo) == before
