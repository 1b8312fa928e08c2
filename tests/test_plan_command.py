"""`reconciler plan` on real tmp repos: the embedded sandbox, real ledger files, and the CLI in a subprocess."""

from __future__ import annotations

import hashlib
import io
import json
import sqlite3
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest

from reconciler.engine.refresh import refresh
from reconciler.commands.plan import plan
from reconciler.engine.planning import compute_plan
from reconciler.engine.config import load_settings
from reconciler.errors import ConflictError, UsageError
from reconciler.ledger.store import Binding, Ledger
from reconciler.engine.plan import PlanOptions
from reconciler.engine.planfile import check_fresh, read_plan_file
from reconciler.engine.planner import make_plan
from reconciler.sandbox import make_app
from reconciler.engine.run import Session, binding, read_ledger
from reconciler.spec.load import load_desired
from reconciler.views import MARKER
from reconciler.zuora.client import ZuoraClient

FX_RATE = "0.921377"  # a value that must never show up in a plan
FX_CSV = f"Provider Exchange Rate Date,Currency (From),Currency (To),Exchange Rate\n2026-11-01,USD,EUR,{FX_RATE}\n"
FX_CSV_EDITED = FX_CSV + "2026-11-01,USD,GBP,0.79\n"


def mass(name: str, file: str, extra: str = "") -> str:
    return (f"apiVersion: reconciler/v1\nkind: MassAction\nmetadata:\n  name: {name}\nspec:\n"
            f"  actionType: ImportFXRate\n  file: ../data/{file}\n{extra}")


@pytest.fixture
def repo(tmp_path) -> Path:
    """A repo with two FX specs on the embedded sandbox; no ledger yet."""
    root = tmp_path / "repo"
    (root / "specs").mkdir(parents=True)
    (root / "data").mkdir()
    (root / "reconciler.yaml").write_text("specs: specs\nenvironment: local\n")
    (root / "data" / "fx.csv").write_text(FX_CSV)
    (root / "data" / "fx-eu.csv").write_text(FX_CSV)
    (root / "specs" / "fx.yaml").write_text(mass("fx-rates", "fx.csv") + "---\n" + mass("fx-eu", "fx-eu.csv"))
    return root


def settings_of(root: Path):
    return load_settings(chdir=str(root))


def submit(root: Path, *names: str) -> None:
    """Record and submit the named specs the way apply does: intent, POST with its key, result."""
    settings = settings_of(root)
    specs = load_desired(settings).by_name()
    with Ledger.open_write(settings.ledger_path, binding(settings)) as ledger, \
            ZuoraClient.from_settings(settings) as client:
        for name in names:
            spec = specs[name]
            generation = ledger.next_generation(name)
            key = f"{ledger.lineage}:{name}:{generation}"
            job = ledger.add_intent(run_id=None, name=name, kind=spec.kind, generation=generation,
                                    fingerprint=spec.fingerprint, fingerprint_version=spec.fingerprint_version,
                                    revision=spec.revision, idempotency_key=key, detail={"file": spec.file})
            bulk_key = client.submit_mass_action(spec.action_type, settings.root / spec.file, idempotency_key=key)
            ledger.record_submitted(job.id, remote_id=bulk_key, status="Pending", phase="active", event={})


def advance_sandbox_clock(root: Path, seconds: float = 600) -> None:
    """Move the embedded sandbox's persisted clock, so its jobs finish (pending, then rows per second)."""
    app = make_app(db_path=str(root / "state" / "local" / "sandbox.db"))
    with httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://sandbox.local") as admin:
        admin.post("/_sandbox/clock", json={"advance_seconds": seconds}).raise_for_status()


def run_plan(root: Path, **kw) -> tuple[int, str]:
    """The command function, as the CLI calls it, with its output captured."""
    options = dict(out_file=None, as_json=False, markdown=False, detailed_exitcode=False, refresh=True, color=False,
                   targets=(), excludes=(), selectors=(), reruns=())
    out = io.StringIO()
    code = plan(settings_of(root), out, **{**options, **kw})
    return code, out.getvalue()


def cli(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "reconciler", "plan", *args], cwd=root, capture_output=True,
                          text=True, timeout=120)


def ledger_of(root: Path) -> Path:
    return root / "state" / "local" / "ledger.db"


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def ledger_files(root: Path) -> dict[str, str]:
    """The ledger and any -wal/-shm/-journal beside it, by name, with their sha256."""
    return {p.name: digest(p) for p in ledger_of(root).parent.glob("ledger.db*")}


def runs(root: Path) -> list[tuple]:
    conn = sqlite3.connect(ledger_of(root).as_uri() + "?mode=ro", uri=True)
    try:
        return conn.execute("SELECT command, outcome FROM runs ORDER BY id").fetchall()
    finally:
        conn.close()


def events(root: Path, event_type: str) -> list[dict]:
    with read_ledger(settings_of(root)) as ledger:
        return [e for e in ledger.events() if e["event_type"] == event_type]


# --- outputs ------------------------------------------------------------------------------------------

def test_text_lists_each_change_then_the_summary_and_creates_no_ledger(repo):
    code, text = run_plan(repo)
    assert code == 0
    assert text.splitlines()[0].split() == ["+", "fx-eu", "MassAction", "-", "new"]
    assert text.splitlines()[-1] == ("Plan: 2 to submit, 0 to upload, 0 to replace, 0 to stop, 0 to cancel, "
                                     "0 to retire; 0 waiting; 0 conflicts; 0 unchanged.")
    assert not (repo / "state").exists()  # no ledger, nothing to refresh: nothing created, sandbox untouched


def test_text_is_colored_only_when_asked(repo):
    assert "\x1b[32m+\x1b[0m fx-eu" in run_plan(repo, color=True)[1]
    assert "\x1b[" not in run_plan(repo, color=False)[1]


def test_json_is_the_plan_document_pinned_to_no_ledger(repo):
    code, text = run_plan(repo, as_json=True)
    doc = json.loads(text)
    assert code == 0
    assert doc["ledger"] == {"lineage": None, "serial": 0}
    assert doc["spec_digest"] == load_desired(settings_of(repo)).digest
    assert [(c["name"], c["action"], c["generation"]) for c in doc["changes"]] == [
        ("fx-eu", "submit", 1), ("fx-rates", "submit", 1)]
    assert doc["summary"]["submit"] == 2 and doc["drift"] == []


def test_markdown_has_the_marker_and_no_csv_contents(repo):
    code, text = run_plan(repo, markdown=True)
    assert code == 0
    assert text.startswith(MARKER + "\n")
    assert "| `+` submit | 2 |" in text
    assert FX_RATE not in text and "Currency (From)" not in text


def test_json_and_markdown_together_are_refused(repo):
    with pytest.raises(UsageError, match="choose one output format"):
        run_plan(repo, as_json=True, markdown=True)


def test_out_saves_a_plan_file_pinned_to_the_ledger_that_apply_accepts(repo):
    submit(repo, "fx-rates")
    (repo / "data" / "fx-eu.csv").write_text(FX_CSV_EDITED)  # not submitted yet: still "new", a new digest
    code, text = run_plan(repo, out_file="saved.plan.json")
    assert code == 0
    assert text.endswith("Saved the plan to saved.plan.json; apply it with `reconciler apply saved.plan.json`.\n")
    saved = read_plan_file(repo / "saved.plan.json")
    settings = settings_of(repo)
    with read_ledger(settings) as ledger:
        lineage, serial = ledger.lineage, ledger.serial
    assert (saved.lineage, saved.serial) == (lineage, serial)
    assert saved.spec_digest == load_desired(settings).digest
    check_fresh(saved, lineage=lineage, serial=serial, spec_digest=saved.spec_digest, environment="local")
    assert [(c.name, c.action) for c in saved.changes] == [("fx-eu", "submit")]


def test_out_with_json_prints_exactly_the_saved_document(repo):
    code, text = run_plan(repo, as_json=True, out_file="p.json")
    assert code == 0
    assert json.loads(text) == json.loads((repo / "p.json").read_text())


def test_out_is_relative_to_where_the_command_started(repo):
    (repo / "plans").mkdir()
    result = subprocess.run([sys.executable, "-m", "reconciler", "--chdir", "plans", "plan", "--out", "p.json"],
                            cwd=repo, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert read_plan_file(repo / "plans" / "p.json").lineage is None


# --- exit codes ---------------------------------------------------------------------------------------

def test_detailed_exitcode_is_2_with_changes_and_0_without(repo):
    assert cli(repo).returncode == 0  # changes, but no --detailed-exitcode
    assert cli(repo, "--detailed-exitcode").returncode == 2
    submit(repo, "fx-rates", "fx-eu")
    advance_sandbox_clock(repo)
    result = cli(repo, "--detailed-exitcode")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No changes. Zuora matches the specs (2 unchanged)." in result.stdout


def test_conflicts_print_the_plan_then_exit_1_with_the_way_out(repo):
    submit(repo, "fx-rates")
    advance_sandbox_clock(repo)
    (repo / "data" / "fx.csv").write_text(FX_CSV_EDITED)  # changed after it completed, same revision
    result = cli(repo, "--detailed-exitcode")
    assert result.returncode == 1
    assert "! fx-rates" in result.stdout and "spec changed after its job completed" in result.stdout
    assert "1 conflict;" in result.stdout
    assert result.stderr.startswith("Error: the plan has 1 conflict a person must resolve — fx-rates: revert "
                                    "the change, bump revision to 2, or run with --rerun fx-rates (a bump or "
                                    "--rerun sends all 2 rows again).")
    out = io.StringIO()
    with pytest.raises(ConflictError, match="--exclude NAME") as caught:  # without --detailed-exitcode too
        plan(settings_of(repo), out, out_file=None, as_json=False, markdown=False, detailed_exitcode=False,
             refresh=True, color=False, targets=(), excludes=(), selectors=(), reruns=())
    assert caught.value.exit_code == 1 and "! fx-rates" in out.getvalue()  # the plan was printed first


def test_conflict_excluded_plans_the_rest(repo):
    submit(repo, "fx-rates")
    advance_sandbox_clock(repo)
    (repo / "data" / "fx.csv").write_text(FX_CSV_EDITED)
    code, text = run_plan(repo, excludes=("fx-rates",), detailed_exitcode=True)
    assert code == 2
    changes = [line for line in text.split("\n\n")[0].splitlines() if not line.startswith("      ")]  # data below
    assert [line.split()[1] for line in changes] == ["fx-eu"]


def test_saved_plan_with_conflicts_says_apply_will_refuse_it(repo):
    submit(repo, "fx-rates")
    advance_sandbox_clock(repo)
    (repo / "data" / "fx.csv").write_text(FX_CSV_EDITED)
    result = cli(repo, "--out", "p.json")
    assert result.returncode == 1
    assert "Saved the plan to p.json; apply will refuse it while it holds conflicts." in result.stdout
    assert read_plan_file(repo / "p.json").has_conflicts


# --- refresh and drift --------------------------------------------------------------------------------

def test_refresh_records_drift_and_the_plan_shows_it(repo):
    submit(repo, "fx-rates")
    advance_sandbox_clock(repo)
    code, text = run_plan(repo, as_json=True)
    doc = json.loads(text)
    [drift] = doc["drift"]
    assert (drift["name"], drift["recorded"], drift["observed"]) == ("fx-rates", "Pending", "Completed")
    [change] = doc["changes"]
    assert (change["name"], change["action"]) == ("fx-eu", "submit")
    assert doc["summary"]["unchanged"] == 1
    [event] = events(repo, "status_change")
    assert (event["name"], event["detail"]["from"], event["detail"]["to"]) == ("fx-rates", "Pending", "Completed")
    with read_ledger(settings_of(repo)) as ledger:
        assert doc["ledger"] == {"lineage": ledger.lineage, "serial": ledger.serial}  # pinned after the refresh
        [job] = ledger.jobs("fx-rates")
        assert (job.remote_status, job.phase) == ("Completed", "done")
        assert job.result_path and (repo / job.result_path).is_file()  # the response file was archived
    assert runs(repo) == [("plan", "planned")]
    again = json.loads(run_plan(repo, as_json=True)[1])
    assert again["drift"] == [] and len(events(repo, "status_change")) == 1


def test_drift_is_shown_in_the_text(repo):
    submit(repo, "fx-rates")
    advance_sandbox_clock(repo)
    _, text = run_plan(repo)
    drift = text.split("Drift (recorded -> observed; written to the ledger, not an action):\n")[1]
    assert drift.splitlines()[0].split()[0] == "fx-rates"
    assert drift.splitlines()[0].endswith("Pending -> Completed")


def test_classifying_before_or_after_the_refresh_gives_the_same_changes(repo):
    submit(repo, "fx-rates")
    advance_sandbox_clock(repo)
    submit(repo, "fx-eu")
    (repo / "data" / "fx-eu.csv").write_text(FX_CSV_EDITED)
    settings = settings_of(repo)
    desired = load_desired(settings)
    session = Session(settings, command="plan")
    try:
        before = session.ledger.recorded_state()
        observed = refresh(session)
        after = session.ledger.recorded_state()
    finally:
        session.close("planned")
    options = PlanOptions.from_cli(now=datetime.now(timezone.utc))
    plans = [make_plan(desired, state, observed, options, environment="local", reconciler_version="t",
                       drift_since=before) for state in (before, after)]
    assert (plans[0].changes, plans[0].unchanged, plans[0].drift) == (plans[1].changes, plans[1].unchanged,
                                                                      plans[1].drift)
    assert [d.name for d in plans[1].drift] == ["fx-rates"] and after.serial > before.serial


def test_a_bad_target_is_refused_before_the_refresh_writes_anything(repo):
    submit(repo, "fx-rates")
    advance_sandbox_clock(repo)
    with read_ledger(settings_of(repo)) as ledger:
        serial = ledger.serial
    with pytest.raises(UsageError, match="--target typo: no spec named 'typo'"):
        run_plan(repo, targets=("typo",))
    with read_ledger(settings_of(repo)) as ledger:
        assert ledger.serial == serial and ledger.jobs()[0].remote_status == "Pending"


def test_compute_plan_needs_a_session_to_refresh(repo):
    with pytest.raises(ValueError, match="needs a session"):
        compute_plan(settings_of(repo), session=None, refresh=True)


def test_no_refresh_reads_the_ledger_and_changes_no_byte(repo):
    submit(repo, "fx-rates")
    advance_sandbox_clock(repo)
    before = ledger_files(repo)
    assert list(before) == ["ledger.db"]
    code, text = run_plan(repo, refresh=False, as_json=True)
    doc = json.loads(text)
    assert code == 0 and doc["drift"] == []  # nothing was fetched
    assert [c["name"] for c in doc["changes"]] == ["fx-eu"] and doc["summary"]["unchanged"] == 1
    assert ledger_files(repo) == before
    result = cli(repo, "--no-refresh")
    assert result.returncode == 0, result.stderr
    assert ledger_files(repo) == before


def test_no_refresh_without_a_ledger_creates_nothing(repo):
    result = cli(repo, "--no-refresh", "--detailed-exitcode")
    assert result.returncode == 2, result.stderr
    assert not (repo / "state").exists()


# --- bad input ----------------------------------------------------------------------------------------

def test_invalid_specs_exit_1_with_every_validate_message(repo):
    (repo / "specs" / "bad.yaml").write_text(mass("bad", "missing.csv", "  revision: 0\n"))
    result = cli(repo)
    assert result.returncode == 1
    assert "specs/bad.yaml:7: spec.file:" in result.stderr and "missing.csv" in result.stderr
    assert "specs/bad.yaml:8: spec.revision:" in result.stderr
    assert result.stderr.splitlines()[-1].startswith("Error: ") and "2 problem" in result.stderr.splitlines()[-1]
    validate = subprocess.run([sys.executable, "-m", "reconciler", "validate"], cwd=repo, capture_output=True,
                              text=True, timeout=120)
    problems = [line for line in validate.stdout.splitlines() + validate.stderr.splitlines()
                if line.startswith("specs/bad.yaml:")]
    assert len(problems) == 2 and all(line in result.stderr for line in problems)
    assert result.stdout == "" and not (repo / "state").exists()


@pytest.mark.parametrize("args", [(), ("--no-refresh",)])
def test_a_corrupt_ledger_exits_1_naming_it_and_stays_unchanged(repo, args):
    ledger = ledger_of(repo)
    ledger.parent.mkdir(parents=True)
    ledger.write_bytes(b"SQLite format 3\x00" + b"\x07" * 4000)
    result = cli(repo, *args)
    assert result.returncode == 1
    assert str(ledger) in result.stderr and "Internal error" not in result.stderr
    assert ledger.read_bytes() == b"SQLite format 3\x00" + b"\x07" * 4000
    assert sorted(p.name for p in ledger.parent.iterdir()) == ["ledger.db"]


@pytest.mark.parametrize("args", [(), ("--no-refresh",)])
def test_a_ledger_of_another_environment_is_refused(repo, args):
    Ledger.open_write(ledger_of(repo), Binding("us-production", "https://rest.zuora.com")).close()
    before = digest(ledger_of(repo))
    result = cli(repo, *args)
    assert result.returncode == 1
    assert "belongs to environment us-production" in result.stderr
    assert digest(ledger_of(repo)) == before



def test_the_conflict_error_names_the_first_five_ways_out_and_counts_the_rest(repo):
    jobs = [f"fx-{i}" for i in range(7)]
    for name in jobs:
        (repo / "data" / f"{name}.csv").write_text(FX_CSV)
    (repo / "specs" / "many.yaml").write_text("---\n".join(mass(name, f"{name}.csv") for name in jobs))
    submit(repo, *jobs)
    advance_sandbox_clock(repo)
    for name in jobs:
        (repo / "data" / f"{name}.csv").write_text(FX_CSV_EDITED)
    with pytest.raises(ConflictError) as caught:
        run_plan(repo)
    message = str(caught.value)
    assert message.startswith("the plan has 7 conflicts a person must resolve — fx-0: revert the change")
    assert "fx-4: revert" in message and "fx-5" not in message
    assert "; and 2 more (see the plan). Or leave them out with --exclude NAME" in message
