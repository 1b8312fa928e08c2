"""A row applied once is never sent again by a revision bump or --rerun (issue 12), against the real sandbox.

The sandbox process (one per module, over loopback HTTP) posts a payment for every MPU row that
passes its checks, so the number of posted payments is the sum of the jobs' success counts there.
"""

from __future__ import annotations

import hashlib
import json
import signal

import pytest

from apply_support import admin, cli, ledger_jobs, make_repo, served_sandbox, settings_of

HEADER = ("Group ID,Billing Account ID,Payment Invoice,Payment Amount,Currency,Payment Date,Payment Method ID,"
          "Payment Type,Reference ID,#Note")
ACCOUNT, METHOD, INVOICE = "8a8aa3c48fb5e16a018fb7d2e4a10011", "8a8aa0b98f3c0e5d018f3c8b2a1d9001", \
    "8a8aa3c48fb5e16a018fb7d2e4a10157"


def payment(ref: str, amount: str, applied: str | None = None, currency: str = "USD", note: str = "") -> str:
    invoice = f"{INVOICE}:{applied or amount}"
    return f",{ACCOUNT},{invoice},{amount},{currency},2026-11-04,{METHOD},External,{ref},{note}"


PAYMENTS = [payment("P-1", "100.00"), payment("P-2", "200.00"), payment("P-3", "150.00"),
            payment("P-4", "50.00", applied="80.00")]  # P-4 applies more than it pays: Zuora refuses the row
FIXED = [*PAYMENTS[:3], payment("P-4", "80.00"), payment("P-5", "250.00")]

MPU_SPEC = """\
apiVersion: reconciler/v1
kind: MassAction
metadata: {{name: pay}}
spec:
  actionType: MPU
  file: ../data/pay.csv
  revision: {revision}
{extra}"""


def write_payments(repo, rows, *, revision=1, extra=""):
    (repo / "data" / "pay.csv").write_text("\n".join([HEADER, *rows]) + "\n")
    (repo / "specs" / "pay.yaml").write_text(MPU_SPEC.format(revision=revision, extra=extra))


def posted(url: str) -> int:
    """Payments the sandbox holds: every MPU row it applied, in every job."""
    return sum(int(j["successCount"]) for j in admin(url, "state")["mass_actions"] if j["actionType"] == "MPU")


def plan_data(repo, *args, code: int = 0) -> dict:
    proc = cli(repo, "plan", "--json", *args)
    assert proc.returncode == code, proc.stdout + proc.stderr  # a conflict exits 1
    changes = {c["name"]: c for c in json.loads(proc.stdout)["changes"]}
    return changes


def apply_wait(repo, *args, env=None):
    proc = cli(repo, "apply", "--auto-approve", "--wait", "--timeout", "60", *args, env=env)
    return proc


@pytest.fixture
def repo(tmp_path, url):
    root = make_repo(tmp_path / "repo", url, mass=(), create=(), delete=())
    write_payments(root, PAYMENTS)
    first = apply_wait(root)
    assert first.returncode == 0, first.stdout + first.stderr
    assert posted(url) == 3
    return root


def test_a_first_run_archives_the_specs_own_file_byte_for_byte(repo):
    [job] = ledger_jobs(repo)
    data = (repo / "data" / "pay.csv").read_bytes()
    assert (settings_of(repo).root / job.detail["sent_file"]).read_bytes() == data
    assert job.detail["sent_sha256"] == hashlib.sha256(data).hexdigest()


def test_the_payments_story_ends_with_exactly_five_posted_payments(repo, url):
    write_payments(repo, FIXED, revision=2)
    change = plan_data(repo)["pay"]
    data = change["detail"]["data"]
    assert change["action"] == "submit"
    assert {k: data[k] for k in ("rows", "send", "already_applied", "added", "changed", "removed")} == \
        {"rows": 5, "send": 2, "already_applied": 3, "added": 1, "changed": 1, "removed": 0}
    assert data["since"]["generation"] == 1 and data["resend"] == "new-rows"
    assert data["totals"] == {"USD": "330.00"}  # P-4 fixed (80.00) and P-5 (250.00): the rows sent
    text = cli(repo, "plan").stdout
    assert "MPU · 5 rows · sends 2 (3 already applied)" in text and "USD 330.00" in text

    applied = apply_wait(repo)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert posted(url) == 5
    job = max(ledger_jobs(repo), key=lambda j: j.generation)
    sent = settings_of(repo).root / job.detail["sent_file"]
    assert job.detail["sent_sha256"] == hashlib.sha256(sent.read_bytes()).hexdigest() == data["sent_sha256"]
    assert sent.read_text().splitlines()[1:] == [FIXED[3], FIXED[4]]
    assert cli(repo, "plan", "--detailed-exitcode").returncode == 0


def test_rerun_of_a_spec_whose_rows_all_applied_sends_nothing(tmp_path, url):
    root = make_repo(tmp_path / "repo", url, mass=(), create=(), delete=())
    write_payments(root, PAYMENTS[:3])
    assert apply_wait(root).returncode == 0
    jobs = len(admin(url, "state")["mass_actions"])
    proc = cli(root, "plan", "--rerun", "pay", "--detailed-exitcode")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "= pay: nothing new to send (3 of 3 rows already applied)" in proc.stdout
    assert json.loads(cli(root, "plan", "--json", "--rerun", "pay").stdout)["notes"] == [
        {"name": "pay", "note": "nothing new to send (3 of 3 rows already applied)"}]
    assert apply_wait(root, "--rerun", "pay").returncode == 0
    assert len(admin(url, "state")["mass_actions"]) == jobs and posted(url) == 3


def test_resend_all_sends_every_row_again_and_the_comment_warns(repo, url):
    write_payments(repo, FIXED, revision=2, extra="  resend: all\n")
    data = plan_data(repo)["pay"]["detail"]["data"]
    assert (data["send"], data["already_applied"], data["resend"]) == (5, 0, "all")
    markdown = cli(repo, "plan", "--markdown").stdout
    assert "to review closely" in markdown
    assert "**pay** (submit): sends again rows an earlier generation applied (resend: all): 5 rows" in markdown
    assert apply_wait(repo).returncode == 0
    assert posted(url) == 3 + 5


def test_an_edit_after_completion_says_what_each_way_out_sends(repo):
    write_payments(repo, FIXED)  # no revision bump
    change = plan_data(repo, code=1)["pay"]
    assert change["action"] == "conflict"
    assert ("A bump or --rerun sends the 2 rows not applied yet (3 already applied); with `resend: all` it sends "
            "all 5 rows again") in change["detail"]["resolve"]


def test_a_missing_result_is_a_conflict_never_a_full_resend(repo, url):
    (job,) = ledger_jobs(repo)
    (settings_of(repo).root / job.result_path).write_bytes(b"edited")
    write_payments(repo, FIXED, revision=2)
    change = plan_data(repo, code=1)["pay"]
    assert change["action"] == "conflict"
    assert change["reason"].startswith("rows already applied are unknown:")
    assert "resend: all" in change["detail"]["resolve"]
    assert apply_wait(repo).returncode == 1
    assert posted(url) == 3


def test_a_saved_plan_applies_the_rows_it_named_and_refuses_an_edited_count(repo, url, tmp_path):
    write_payments(repo, FIXED, revision=2)
    saved = tmp_path / "plan.json"
    assert cli(repo, "plan", "--out", str(saved)).returncode == 0
    edited = json.loads(saved.read_text())
    edited["changes"][0]["detail"]["data"]["send"] = 5
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps(edited))
    refused = cli(repo, "apply", "--auto-approve", str(forged))
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "plan is stale: its changes for pay are not what the ledger and the specs give now" in refused.stderr
    assert posted(url) == 3
    assert cli(repo, "plan", "--out", str(saved)).returncode == 0  # the refused run moved the serial
    applied = cli(repo, "apply", "--auto-approve", str(saved))
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert apply_wait(repo).returncode == 0
    assert posted(url) == 5


def test_a_submission_killed_after_its_intent_resumes_with_the_same_file_and_key(repo, url):
    write_payments(repo, FIXED, revision=2)
    killed = cli(repo, "apply", "--auto-approve", env={"RECONCILER_TEST_CRASH_AT": "after-intent:pay"})
    assert killed.returncode == -signal.SIGKILL
    intent = max(ledger_jobs(repo), key=lambda j: j.generation)
    sent = settings_of(repo).root / intent.detail["sent_file"]
    before = sent.read_bytes()
    sent.unlink()  # even the archived copy gone: the file is derived again, byte for byte
    plan = plan_data(repo)["pay"]
    assert plan["detail"]["resume"] is True and plan["idempotency_key"] == intent.idempotency_key
    assert apply_wait(repo).returncode == 0
    assert sent.read_bytes() == before
    assert posted(url) == 5
    assert [j["idempotencyKey"] for j in admin(url, "state")["mass_actions"]].count(intent.idempotency_key) == 1


def test_an_idempotent_action_type_sends_every_row(tmp_path, url):
    root = make_repo(tmp_path / "repo", url, mass=("fx-a",), create=(), delete=())
    assert apply_wait(root).returncode == 0
    spec = root / "specs" / "fx-a.yaml"
    spec.write_text(spec.read_text() + "  revision: 2\n")
    data = plan_data(root)["fx-a"]["detail"]["data"]
    assert (data["rows"], data["send"], data["resend"], data["sent_sha256"]) == (3, 3, "all", None)
    assert data["summary"] == {"pairs": ["USD->EUR"], "dates": "2026-11-01..2026-11-03"}
    assert (data["added"], data["changed"], data["removed"]) == (0, 0, 0)


def test_a_custom_object_create_sends_only_the_records_not_created_yet(tmp_path, url):
    root = make_repo(tmp_path / "repo", url, mass=(), create=("load-cars",), delete=())
    assert apply_wait(root).returncode == 0
    assert admin(url, "state")["records"] == {"car": 3}
    with (root / "data" / "load-cars.csv").open("a") as handle:
        handle.write("MAN,TGX,2025\n")
    spec = root / "specs" / "load-cars.yaml"
    spec.write_text(spec.read_text() + "  revision: 2\n")
    data = plan_data(root)["load-cars"]["detail"]["data"]
    assert (data["rows"], data["send"], data["already_applied"], data["added"]) == (4, 1, 3, 1)
    assert data["summary"] == {"object": "default.car", "operation": "create",
                               "columns": ["make__c", "model__c", "year__c"]}
    assert apply_wait(root).returncode == 0
    assert admin(url, "state")["records"] == {"car": 4}


def test_a_create_revenue_schedule_resend_leaves_out_the_schedules_created(tmp_path, url):
    root = make_repo(tmp_path / "repo", url, mass=(), create=(), delete=())
    rows = ["Subscription Charge Key", "C-0001", "C-0002"]
    (root / "data" / "rs.csv").write_text("\n".join(rows) + "\n")
    spec = ("apiVersion: reconciler/v1\nkind: MassAction\nmetadata: {name: rs}\nspec:\n  actionType: "
            "CreateRevenueSchedule\n  file: ../data/rs.csv\n")
    (root / "specs" / "rs.yaml").write_text(spec)
    assert apply_wait(root).returncode == 0
    (root / "data" / "rs.csv").write_text("\n".join([*rows, "C-0003"]) + "\n")
    (root / "specs" / "rs.yaml").write_text(spec + "  revision: 2\n")
    data = plan_data(root)["rs"]["detail"]["data"]
    assert (data["send"], data["already_applied"], data["summary"]) == (1, 2, {"charges": "1"})


# --- counting and totals, on the real functions over real files -------------------------------------


def _rows(*lines: str) -> list[dict[str, str]]:
    from reconciler.dataset.table import parse

    return parse("\n".join(["Reference ID,Payment Amount,#Note", *lines]).encode(), "test.csv").records()


def test_changed_rows_are_paired_by_the_key_and_otherwise_count_as_removed_and_added():
    from reconciler.dataset.facts import _diff

    before = _rows("P-1,10.00,a", "P-2,20.00,b", "P-3,30.00,c")
    after = _rows("P-1,10.00,comment edited", "P-2,25.00,b", "P-4,40.00,d", " P-4 , 40.00 ,twice")
    assert _diff(before, after, ("Reference ID",)) == (2, 1, 1)  # P-4 twice added, P-2 changed, P-3 removed
    assert _diff(before, after, ()) == (3, 0, 2)  # no key: P-2 is removed and added
    assert _diff(None, after, ("Reference ID",)) == (None, None, None)


def test_totals_are_exact_per_currency_over_many_decimals(tmp_path):
    from reconciler.dataset.blobs import FileBlobs
    from reconciler.dataset.facts import outgoing
    from reconciler.model import DesiredSpec

    lines = [HEADER, payment("A", "0.1"), payment("B", "0.2"), payment("C", "1.005", currency="EUR"),
             payment("D", "2", currency="eur"), payment("E", "1234567890.123456789")]
    (tmp_path / "pay.csv").write_text("\n".join(lines) + "\n")
    spec = DesiredSpec(name="pay", kind="MassAction", source="s.yaml", line=1, fingerprint="f" * 64,
                       fingerprint_version=1, action_type="MPU", file="pay.csv", file_sha256="x")
    facts = outgoing(spec, (), tmp_path, FileBlobs(tmp_path)).facts
    assert facts.totals == (("EUR", "3.005"), ("USD", "1234567890.423456789"))
    assert (facts.rows, facts.send, facts.resend, facts.since) == (5, 5, "new-rows", None)


def test_the_digest_the_checks_make_is_the_one_a_full_read_gives(tmp_path):
    """Without history a plan uses the spec checks' one-pass digest; it must equal reading the file again."""
    from dataclasses import replace

    from reconciler.dataset.blobs import FileBlobs
    from reconciler.dataset.facts import outgoing
    from reconciler.spec.load import load_desired

    root = make_repo(tmp_path / "repo", "http://127.0.0.1:9", mass=("fx-a",), create=("load-cars",), delete=())
    write_payments(root, [*FIXED, payment("P-6", "0.015", currency="eur")])
    specs = load_desired(settings_of(root)).specs
    assert {s.name for s in specs} == {"fx-a", "load-cars", "pay"}
    for spec in specs:
        assert spec.file_facts is not None
        blobs = FileBlobs(root)
        fast, full = outgoing(spec, (), root, blobs), outgoing(replace(spec, file_facts=None), (), root, blobs)
        assert fast.facts == full.facts, spec.name
        if spec.name == "pay":
            assert fast.facts.totals == (("EUR", "0.015"), ("USD", "780.00"))
            assert full.payload == (root / "data" / "pay.csv").read_bytes()


def test_an_edited_file_of_a_pending_job_stops_it_first_then_sends_what_it_did_not_apply(tmp_path):
    with served_sandbox(pending_seconds=3600) as url:
        root = make_repo(tmp_path / "repo", url, mass=(), create=(), delete=())
        write_payments(root, PAYMENTS[:3])
        assert cli(root, "apply", "--auto-approve").returncode == 0
        write_payments(root, FIXED[:4])  # edited while the job waits in Pending
        change = plan_data(root)["pay"]
        assert change["action"] == "stop"
        assert change["reason"] == ("spec changed: stop job (Pending) first; the rows it did not apply are sent once "
                                    "it has ended")
        stopped = cli(root, "apply", "--auto-approve")
        assert stopped.returncode == 0 and "- pay: stopped" in stopped.stdout, stopped.stdout + stopped.stderr
        assert plan_data(root)["pay"]["detail"]["data"]["send"] == 4  # the stopped job applied nothing
        assert cli(root, "apply", "--auto-approve").returncode == 0
        admin(url, "clock", {"advance_seconds": 7200})
        assert cli(root, "status", "--refresh").returncode == 0
        assert posted(url) == 4
