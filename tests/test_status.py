"""`reconciler status` on real ledgers produced by real applies on the embedded sandbox."""

from __future__ import annotations

import io
import json

import pytest

from ops_fixtures import Tty, advance, cli, fail_in_tenant, make_repo, settings_of, state_files, submit
from reconciler.commands.forget import forget
from reconciler.commands.status import JSON_FIELDS, status
from reconciler.errors import ReconcilerError, UsageError
from reconciler.sandbox import make_app, serve
from reconciler.engine.run import read_ledger, write_ledger


@pytest.fixture
def repo(repo_on_both_stores):
    """Every test here runs on the SQLite ledger and on its PostgreSQL copy."""
    return repo_on_both_stores

NAMES = ["fx-rates", "load-vehicles", "payments", "purge-old-vehicles", "update-vehicles"]


def run(settings, **kw) -> tuple[int, str]:
    out = io.StringIO()
    code = status(settings, out, **kw)
    return code, out.getvalue()


def as_json(settings, **kw) -> tuple[int, dict]:
    code, text = run(settings, as_json=True, **kw)
    return code, json.loads(text)


def test_no_ledger_says_so_exits_0_and_creates_nothing(fresh):
    code, text = run(fresh)
    assert code == 0
    assert text.startswith("no ledger yet (state/local/ledger.db does not exist)")
    assert as_json(fresh) == (0, {"jobs": []})
    assert run(fresh, names=("payments",))[0] == 0  # a spec without a ledger is fine
    assert run(fresh, refresh=True, wait=True)[0] == 0  # nothing to refresh: no Session, no ledger
    assert not (fresh.root / "state").exists()


def test_table_has_one_row_per_spec_with_progress_counts_and_age(repo):
    code, text = run(repo)
    assert code == 0
    lines = text.splitlines()
    assert lines[0].split() == ["NAME", "KIND", "REMOTE", "ID", "STATUS", "PROGRESS", "SUCCEEDED", "FAILED", "AGE"]
    rows = {line.split()[0]: line.split() for line in lines[1:-1]}
    assert sorted(rows) == NAMES
    assert lines[-1].startswith("(as of the last refresh, ") and "--refresh fetches it live" in lines[-1]
    assert rows["payments"][1:2] == ["MassAction"] and rows["payments"][3:7] == ["Completed", "4/4", "2", "2"]
    assert rows["fx-rates"][3:7] == ["Completed", "2/2", "2", "0"]
    assert rows["load-vehicles"][3:7] == ["completed", "3/3", "3", "0"]
    assert rows["payments"][7].endswith(("s", "m", "h", "d"))
    with read_ledger(repo) as ledger:
        ids = {j.name: j.remote_id for j in ledger.jobs()}
    assert all(rows[n][2] == ids[n] for n in NAMES)


def test_json_has_exactly_the_documented_shape(repo):
    code, document = as_json(repo)
    assert code == 0
    assert list(document) == ["jobs"]
    assert [job["name"] for job in document["jobs"]] == NAMES
    for job in document["jobs"]:
        assert tuple(job) == JSON_FIELDS
        assert set(JSON_FIELDS) == {"name", "kind", "remote_id", "status", "phase", "revision", "fingerprint",
                                    "total", "processed", "succeeded", "failed", "updated_at"}
    payments = next(j for j in document["jobs"] if j["name"] == "payments")
    assert payments["status"] == "Completed" and payments["phase"] == "done" and payments["revision"] == 1
    assert (payments["total"], payments["processed"], payments["succeeded"], payments["failed"]) == (4, 4, 2, 2)
    assert len(payments["fingerprint"]) == 64 and payments["updated_at"].startswith("20")


def test_names_select_rows(repo):  # an unknown name among them: tests/test_unknown_name.py
    code, document = as_json(repo, names=("payments", "fx-rates"))
    assert [j["name"] for j in document["jobs"]] == ["payments", "fx-rates"]


def test_a_spec_without_a_job_shows_as_not_applied(repo):
    (repo.root / "specs" / "more.yaml").write_text(
        "apiVersion: reconciler/v1\nkind: MassAction\nmetadata: {name: later}\n"
        "spec: {actionType: ImportFXRate, file: ../data/fx.csv, revision: 3}\n")
    code, text = run(repo, names=("later",))
    assert code == 0 and "(not applied)" in text
    row = as_json(repo, names=("later",))[1]["jobs"][0]
    assert row["name"] == "later" and row["kind"] == "MassAction" and row["revision"] == 3
    assert all(row[k] is None for k in ("remote_id", "status", "phase", "total", "updated_at"))
    [listed] = [line for line in run(repo)[1].splitlines() if line.startswith("later ")]  # without names too
    assert "(not applied)" in listed
    assert "later" in [row["name"] for row in as_json(repo)[1]["jobs"]]


def test_retired_jobs_are_hidden_unless_named(repo):
    forget(repo, io.StringIO(), name="fx-rates")
    code, text = run(repo)
    assert "fx-rates" not in text and "(1 retired job hidden; name it to see it)" in text
    code, text = run(repo, names=("fx-rates",))
    assert "Completed (retired)" in text
    assert as_json(repo, names=("fx-rates",))[1]["jobs"][0]["phase"] == "retired"


def test_a_failed_job_makes_the_exit_code_1(repo):
    fail_in_tenant(repo, submit(repo, "payments").remote_id)
    advance(repo, 3600)
    code, text = run(repo, refresh=True)
    assert code == 1
    assert "Failed" in text
    assert run(repo, names=("fx-rates",))[0] == 0  # only listed jobs count
    assert cli(repo, "status").returncode == 1
    assert cli(repo, "status", "fx-rates").returncode == 0


def test_a_failed_custom_object_job_makes_the_exit_code_1(repo):
    bad = repo.root / "bad-vehicles.csv"
    bad.write_text("make__c,CreatedDate\nVolvo,2020-01-01\n")  # a system field fails the whole job
    submit(repo, "load-vehicles", file=bad)
    advance(repo, 3600)
    code, document = as_json(repo, refresh=True, names=("load-vehicles",))
    assert code == 1 and document["jobs"][0]["status"] == "failed"


def test_refresh_fetches_live_status_and_records_the_drift(repo):
    job = submit(repo, "fx-rates")
    assert as_json(repo, names=("fx-rates",))[1]["jobs"][0]["status"] == "Pending"
    advance(repo, 3600)
    assert as_json(repo, names=("fx-rates",))[1]["jobs"][0]["status"] == "Pending"  # no refresh: the ledger
    code, document = as_json(repo, names=("fx-rates",), refresh=True)
    assert code == 0 and document["jobs"][0]["status"] == "Completed"
    with read_ledger(repo) as ledger:
        changes = [e for e in ledger.events("fx-rates") if e["event_type"] == "status_change"]
        assert changes[0]["detail"]["to"] == "Completed" and changes[0]["detail"]["source"] == "refresh"
        assert ledger.job(job.id).result_path  # the refresh archived the response file


def test_wait_prints_a_line_per_status_change_and_ends_terminal(repo):
    submit(repo, "fx-rates")
    submit(repo, "payments")
    out = io.StringIO()
    code = status(repo, out, names=("fx-rates", "payments"), wait=True, poll_seconds=1,
                  sleep=lambda seconds: advance(repo, 1))
    text = out.getvalue()
    assert code == 0
    changes = [line for line in text.splitlines() if line.startswith(("fx-rates:", "payments:"))]
    assert changes and changes[-1].split(": ")[1].endswith(("Completed (2/2 rows)", "Completed (4/4 rows)"))
    for name in ("fx-rates", "payments"):
        mine = [line.split(": ", 1)[1] for line in changes if line.startswith(name + ":")]
        assert "Completed" in mine[-1]
        assert all("->" in line for line in mine[1:])  # after the first line, only changes are printed
    assert "\r" not in text
    assert text.splitlines()[-4].startswith("NAME")  # then the table, and where its data comes from
    assert text.splitlines()[-1] == "(status fetched from Zuora just now)"


def test_wait_on_a_terminal_draws_a_progress_bar(repo):
    submit(repo, "fx-rates")
    out = Tty()
    code = status(repo, out, names=("fx-rates",), wait=True, poll_seconds=1, sleep=lambda s: advance(repo, 5))
    assert code == 0
    assert "\r\x1b[K[" in out.getvalue() and "1/1 jobs done" in out.getvalue()


def test_wait_does_not_wait_for_what_polling_cannot_move(repo):
    with write_ledger(repo) as ledger:  # an interrupted submission
        ledger.add_intent(run_id=None, name="fx-rates", kind="MassAction", generation=2, fingerprint="f" * 64,
                          fingerprint_version=1, revision=1, idempotency_key="interrupted", detail={})
    code, text = run(repo, names=("fx-rates",), wait=True, sleep=lambda s: pytest.fail("it waited"))
    assert code == 0
    assert "fx-rates: its submission is unconfirmed" in text and "not waiting for it" in text
    assert "(unconfirmed submission)" in text


@pytest.fixture
def pending(tmp_path):
    """The settings of a repo on a served sandbox whose fx-rates job stays Pending."""
    with serve(make_app(pending_seconds=100_000)) as server:
        root = make_repo(tmp_path / "repo")
        (root / "reconciler.yaml").write_text(f"environment: {server.url}\n")
        settings = settings_of(root)
        submit(settings, "fx-rates")
        yield settings


def test_wait_timeout_prints_the_table_then_exits_1(pending):
    settings, out = pending, io.StringIO()
    ticks = iter(range(100))
    with pytest.raises(ReconcilerError, match=r"timed out after 3s; still running: fx-rates \(Pending\)"):
        status(settings, out, wait=True, timeout=3, poll_seconds=1, sleep=lambda s: None,
               clock=lambda: next(ticks))
    assert "fx-rates: Pending" in out.getvalue()
    lines = out.getvalue().splitlines()
    assert lines[-3 - sum("(not applied)" in line for line in lines)].startswith("NAME")
    assert lines[-1] == "(status fetched from Zuora just now)"
    proc = cli(settings, "status", "--wait", "--timeout", "0.5")
    assert proc.returncode == 1 and "timed out" in proc.stderr


def test_reads_never_write(repo):
    before = state_files(repo)
    for kw in ({}, {"as_json": True}, {"names": ("payments",)}):
        run(repo, **kw)
    assert state_files(repo) == before


def test_cli_exit_codes_and_no_ledger_message(fresh, repo):
    proc = cli(fresh, "status", env={"RECONCILER_LEDGER": "state/{environment}/ledger.db"})  # not repo's
    assert proc.returncode == 0 and proc.stdout.startswith("no ledger yet")
    assert not (fresh.root / "state").exists()
    proc = cli(repo, "status", "--json")
    assert proc.returncode == 0 and len(json.loads(proc.stdout)["jobs"]) == 5



def test_timeout_only_limits_wait(repo):
    with pytest.raises(UsageError, match="--timeout SECONDS limits --wait"):
        run(repo, timeout=5)


def test_color_paints_the_status_and_keeps_columns_aligned(repo):
    plain = run(repo)[1].splitlines()
    painted = run(repo, color=True)[1].splitlines()
    assert "\x1b[32mCompleted\x1b[0m" in painted[1] + painted[3]
    strip = [line.replace("\x1b[32m", "").replace("\x1b[39m", "").replace("\x1b[0m", "") for line in painted]
    # AGE (the last column) may tick over between the two runs; every column before it must match.
    strip, plain = ([line.rsplit(None, 1)[0] for line in lines] for lines in (strip, plain))
    assert [line.split() for line in strip] == [line.split() for line in plain]
    assert [len(line) for line in strip] == [len(line) for line in plain]  # the codes take no column width
    proc = cli(repo, "status")  # not a terminal: no colors
    assert "\x1b[" not in proc.stdout


def test_a_long_wait_says_it_is_still_waiting_at_least_every_minute(pending):
    settings, out = pending, io.StringIO()
    ticks = iter(range(0, 10_000, 20))  # 20 s between two looks at the clock
    with pytest.raises(ReconcilerError, match="timed out after 300s"):
        status(settings, out, names=("fx-rates",), wait=True, timeout=300, poll_seconds=1, sleep=lambda s: None,
               clock=lambda: next(ticks))
    beats = [line for line in out.getvalue().splitlines() if line.startswith("still waiting after ")]
    assert len(beats) >= 4 and all("fx-rates Pending" in line for line in beats), out.getvalue()
