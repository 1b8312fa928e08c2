"""`reconciler import NAME REMOTE_ID` and `reconciler forget NAME` against the embedded sandbox."""

from __future__ import annotations

import io
import json
import os

import pytest

from ops_fixtures import advance, cli, submit
from reconciler.commands.adopt import adopt
from reconciler.commands.forget import forget
from reconciler.commands.plan import plan
from reconciler.errors import ConflictError, LockHeldError, ReconcilerError, SpecError, UsageError
from reconciler.ledger.store import Actor, Ledger
from reconciler.engine.run import binding, read_ledger
from reconciler.spec.load import load_desired
from reconciler.zuora.client import ZuoraClient

OTHER = Actor("someone", "other-host", 4242, None, None)


def adopt_(settings, name: str, remote_id: str) -> str:
    out = io.StringIO()
    assert adopt(settings, out, name=name, remote_id=remote_id) == 0
    return out.getvalue()


def forget_(settings, name: str) -> str:
    out = io.StringIO()
    assert forget(settings, out, name=name) == 0
    return out.getvalue()


def outside_mass_action(settings, action_type: str = "ImportFXRate", file: str = "data/fx.csv") -> str:
    """A job someone started without reconciler (a script, the UI): only Zuora knows it."""
    with ZuoraClient.from_settings(settings) as client:
        return client.submit_mass_action(action_type, settings.root / file, idempotency_key=None)


def outside_co_job(settings, operation: str = "create", object_: str = "vehicle") -> str:
    with ZuoraClient.from_settings(settings) as client:
        return client.create_co_job(namespace="default", object=object_, operation=operation,
                                    idempotency_key=None)["Id"]


def plan_of(settings) -> dict:
    """The plan document `reconciler plan --json` prints (also when it exits 1 on a conflict)."""
    out = io.StringIO()
    try:
        plan(settings, out, out_file=None, as_json=True, markdown=False, detailed_exitcode=False, refresh=True,
             color=False, targets=(), excludes=(), selectors=(), reruns=())
    except ConflictError:
        pass
    return json.loads(out.getvalue())


def events_of(settings, name: str) -> list[dict]:
    with read_ledger(settings) as ledger:
        return ledger.events(name)


# --- import -----------------------------------------------------------------------------------------


def test_import_records_the_job_under_the_current_fingerprint_and_names_who(fresh):
    bulk_key = outside_mass_action(fresh)
    advance(fresh, 3600)
    text = adopt_(fresh, "fx-rates", bulk_key)
    assert f"Imported {bulk_key} (MassAction ImportFXRate, Completed, 2/2 rows) as fx-rates generation 1" in text
    assert "Archived its result to state/local/results/fx-rates/" in text
    spec = load_desired(fresh).by_name()["fx-rates"]
    with read_ledger(fresh) as ledger:
        [job] = ledger.jobs("fx-rates")
        assert ledger.verify().ok
    assert (job.remote_id, job.remote_status, job.phase) == (bulk_key, "Completed", "done")
    assert (job.fingerprint, job.revision, job.generation) == (spec.fingerprint, spec.revision, 1)
    assert job.idempotency_key == f"import-{bulk_key}" and job.detail["imported"] is True
    assert (job.total, job.processed, job.succeeded, job.failed) == (2, 2, 2, 0)
    assert job.result_path and (fresh.root / job.result_path).exists()
    [event] = [e for e in events_of(fresh, "fx-rates") if e["event_type"] == "import"]
    assert event["actor"].endswith("@" + os.uname().nodename) and event["detail"]["imported_by"] == event["actor"]
    assert event["detail"]["remote_id"] == bulk_key and event["outcome"] == "Completed"
    actions = {c["name"]: c["action"] for c in plan_of(fresh)["changes"]}
    assert actions["load-vehicles"] == "submit" and "fx-rates" not in actions  # fx-rates is in sync now


def test_an_imported_custom_object_job_waiting_for_its_file_is_uploaded_by_the_next_plan(fresh):
    job_id = outside_co_job(fresh)
    adopt_(fresh, "load-vehicles", job_id)
    with read_ledger(fresh) as ledger:
        [job] = ledger.jobs("load-vehicles")
    assert (job.remote_status, job.phase, job.uploaded) == ("pending", "created", False)
    change = next(c for c in plan_of(fresh)["changes"] if c["name"] == "load-vehicles")
    assert change["action"] == "upload" and change["remote_id"] == job_id


def test_the_id_must_have_the_kinds_shape(fresh):
    with pytest.raises(UsageError, match="looks like a custom object job id, but fx-rates is a MassAction spec"):
        adopt(fresh, io.StringIO(), name="fx-rates", remote_id="1b1e6bd6-3c1f-4a2e-9d0c-5f7f2c1a0e01")
    with pytest.raises(UsageError, match="looks like a Mass Updater bulk key, but load-vehicles is a Custom"):
        adopt(fresh, io.StringIO(), name="load-vehicles", remote_id="0" * 32)
    with pytest.raises(UsageError, match="'B-1' is not a bulk key"):
        adopt(fresh, io.StringIO(), name="fx-rates", remote_id="B-1")
    assert not (fresh.root / "state" / "local" / "ledger.db").exists()


def test_the_job_must_match_the_spec(fresh):
    bulk_key = outside_mass_action(fresh)
    with pytest.raises(UsageError, match="does not match spec payments: actionType is 'ImportFXRate', not 'MPU'"):
        adopt(fresh, io.StringIO(), name="payments", remote_id=bulk_key)
    job_id = outside_co_job(fresh, operation="update")
    with pytest.raises(UsageError, match="operation is 'update', not 'create'"):
        adopt(fresh, io.StringIO(), name="load-vehicles", remote_id=job_id)
    with read_ledger(fresh) as ledger:
        assert ledger.jobs() == []


def test_a_job_zuora_does_not_know_is_refused(fresh):
    with pytest.raises(ReconcilerError, match=f"no job {'a' * 32} in Zuora \\(local\\)"):
        adopt(fresh, io.StringIO(), name="fx-rates", remote_id="a" * 32)
    with pytest.raises(ReconcilerError, match="no job 1b1e6bd6-3c1f-4a2e-9d0c-5f7f2c1a0e01 in Zuora"):
        adopt(fresh, io.StringIO(), name="load-vehicles", remote_id="1b1e6bd6-3c1f-4a2e-9d0c-5f7f2c1a0e01")


def test_an_id_already_recorded_is_refused(repo):
    with read_ledger(repo) as ledger:
        job = ledger.jobs("fx-rates")[0]
    with pytest.raises(UsageError, match=f"{job.remote_id} is already recorded as fx-rates generation 1"):
        adopt(repo, io.StringIO(), name="fx-rates", remote_id=job.remote_id)


def test_a_spec_whose_job_is_still_running_is_refused(repo):
    running = submit(repo, "fx-rates")
    other = outside_mass_action(repo)
    still = f"already has job {running.remote_id} \\(Pending\\) that is still running"
    with pytest.raises(ReconcilerError, match=still):
        adopt(repo, io.StringIO(), name="fx-rates", remote_id=other)
    advance(repo, 3600)
    adopt_(repo, "fx-rates", other)  # once it ended (recorded now), the import goes on
    with read_ledger(repo) as ledger:
        jobs = ledger.jobs("fx-rates")
    assert [(j.generation, j.remote_status, j.phase) for j in jobs] == [
        (1, "Completed", "done"), (2, "Completed", "done"), (3, "Completed", "done")]


def test_an_unconfirmed_submission_is_superseded_by_the_import(repo):
    spec = load_desired(repo).by_name()["fx-rates"]
    with Ledger.open_write(repo.ledger_path, binding(repo)) as ledger:
        ledger.add_intent(run_id=None, name="fx-rates", kind="MassAction", generation=2, fingerprint=spec.fingerprint,
                          fingerprint_version=1, revision=1, idempotency_key="lost-answer", detail={})
    bulk_key = outside_mass_action(repo)
    text = adopt_(repo, "fx-rates", bulk_key)
    assert text.startswith(f"Retired generation 2 of fx-rates: its unconfirmed submission was superseded by the "
                           f"import of {bulk_key}.")
    with read_ledger(repo) as ledger:
        jobs = ledger.jobs("fx-rates")
    assert [(j.generation, j.phase, j.remote_id) for j in jobs][1:] == [(2, "retired", None), (3, "active", bulk_key)]


def test_a_job_missing_in_zuora_is_superseded_by_the_import(repo):
    spec = load_desired(repo).by_name()["fx-rates"]
    with Ledger.open_write(repo.ledger_path, binding(repo)) as ledger:
        lost = ledger.add_intent(run_id=None, name="fx-rates", kind="MassAction", generation=2,
                                 fingerprint=spec.fingerprint, fingerprint_version=1, revision=1,
                                 idempotency_key="lost-job", detail={})
        ledger.record_submitted(lost.id, remote_id="f" * 32, status="Pending", phase="active", event={})
    bulk_key = outside_mass_action(repo)
    text = adopt_(repo, "fx-rates", bulk_key)
    assert f"job {'f' * 32} is missing in Zuora (404); superseded by the import" in text
    retired = next(e for e in events_of(repo, "fx-rates") if e["event_type"] == "retired")
    assert retired["detail"]["remote_id"] == "f" * 32


def test_an_invalid_spec_stops_the_import(repo):  # an unknown name: tests/test_unknown_name.py
    (repo.root / "specs" / "broken.yaml").write_text("kind: [\n")
    with pytest.raises(SpecError):
        adopt(repo, io.StringIO(), name="fx-rates", remote_id="a" * 32)


def test_import_waits_for_no_one_while_another_run_holds_the_lock(repo):
    with Ledger.open_write(repo.ledger_path, binding(repo)) as ledger:
        ledger.acquire_lock(OTHER)
        with pytest.raises(LockHeldError, match="locked by someone@other-host pid 4242"):
            adopt(repo, io.StringIO(), name="fx-rates", remote_id=outside_mass_action(repo))
        with pytest.raises(LockHeldError):
            forget(repo, io.StringIO(), name="fx-rates")


def test_import_through_the_command_line(fresh):
    bulk_key = outside_mass_action(fresh)
    proc = cli(fresh, "import", "fx-rates", bulk_key)
    assert proc.returncode == 0 and f"Imported {bulk_key}" in proc.stdout
    proc = cli(fresh, "import", "fx-rates", bulk_key)
    assert proc.returncode == 1 and "already recorded" in proc.stderr


# --- forget -----------------------------------------------------------------------------------------


def test_forget_retires_the_latest_job_without_any_remote_call(repo):
    with read_ledger(repo) as ledger:
        before = ledger.events(limit=1)[0]["id"]
        job = ledger.jobs("payments")[0]
    text = forget_(repo, "payments")
    assert text.startswith(f"Forgot payments: generation 1 ({job.remote_id}, Completed) is retired; recorded as "
                           "forgotten by operator by ")
    with read_ledger(repo) as ledger:
        added = [e for e in ledger.events(limit=50) if e["id"] > before]
        assert ledger.jobs("payments")[0].phase == "retired"
    assert [e["event_type"] for e in added] == ["retired"]  # no remote call at all
    assert added[0]["detail"]["reason"] == "forgotten by operator" and added[0]["actor"]
    conflict = next(c for c in plan_of(repo)["changes"] if c["name"] == "payments")
    assert conflict["action"] == "conflict" and "retired" in conflict["reason"]


def test_forget_warns_when_the_job_may_still_run(repo):
    submit(repo, "fx-rates")
    assert "it may still run in Zuora, which was not contacted" in forget_(repo, "fx-rates")


def test_forget_of_an_unconfirmed_submission_points_at_import(repo):
    with Ledger.open_write(repo.ledger_path, binding(repo)) as ledger:
        ledger.add_intent(run_id=None, name="fx-rates", kind="MassAction", generation=2, fingerprint="f" * 64,
                          fingerprint_version=1, revision=1, idempotency_key="lost", detail={})
    assert "`reconciler import fx-rates ID` records it" in forget_(repo, "fx-rates")


def test_forget_twice_is_harmless(repo):
    forget_(repo, "payments")
    assert "is already retired; nothing to do" in forget_(repo, "payments")


def test_forget_needs_a_record(repo, fresh):
    with pytest.raises(UsageError, match="payments has no job in the ledger"):
        forget(fresh, io.StringIO(), name="payments")
    assert not (fresh.root / "state").exists()
    proc = cli(repo, "forget", "fx-rates")
    assert proc.returncode == 0 and "Forgot fx-rates" in proc.stdout
