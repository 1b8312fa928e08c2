"""The planner, row by row of DESIGN §4's table, pinned by golden rendered plans (tests/golden/*.txt).

Rewrite the goldens with `UPDATE_GOLDEN=1 python -m pytest tests/test_planner.py`, then read every
changed file before committing it.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from reconciler.errors import ReconcilerError, UsageError
from reconciler.model import (
    Phase,
    CUSTOM_OBJECT_JOB, MASS_ACTION,
    REJECTED, Condition, DesiredSpec, DesiredState, JobRecord, Observation, ObservedState, RecordedState,
    SpecRecord, is_terminal,
)
from reconciler.engine.plan import PlanOptions
from reconciler.engine.planner import make_plan
from reconciler.views import render_text

GOLDEN = Path(__file__).parent / "golden"
NOW = datetime(2026, 11, 3, 12, 0, tzinfo=timezone.utc)
MA, CO = MASS_ACTION, CUSTOM_OBJECT_JOB


# --- factories ------------------------------------------------------------------------------------

def fingerprint(name: str, revision: int = 1, edit: int = 0) -> str:
    """A stand-in fingerprint: `edit` models a change of the file or the spec body."""
    return hashlib.sha256(f"{name}:{revision}:{edit}".encode()).hexdigest()


def spec(name, kind=MA, *, revision=1, edit=0, deps=(), labels=(), operation="create", fingerprint_version=1):
    """A validated spec; custom object deletes get a filter and no file."""
    common = dict(name=name, kind=kind, source=f"specs/{name}.yaml", line=1,
                  fingerprint=fingerprint(name, revision, edit), fingerprint_version=fingerprint_version,
                  revision=revision, labels=tuple(sorted(labels)), depends_on=tuple(deps))
    if kind == MA:
        return DesiredSpec(**common, action_type="ImportFXRate", file=f"data/{name}.csv",
                           file_sha256=hashlib.sha256(name.encode()).hexdigest(), file_size=120)
    if operation == "delete":
        return DesiredSpec(**common, namespace="default", object="vehicle", operation="delete",
                           conditions=(Condition("year__c", "LT", 2000),))
    return DesiredSpec(**common, namespace="default", object="vehicle", operation=operation,
                       file=f"data/{name}.csv", file_sha256=hashlib.sha256(name.encode()).hexdigest(), file_size=99)


def remote_id(name: str, kind: str, generation: int) -> str:
    digest = hashlib.md5(f"{name}/{generation}".encode()).hexdigest()
    if kind == MA:
        return digest
    return f"{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:]}"


def job(name, status, *, kind=MA, phase=None, generation=1, revision=1, edit=0, hours_ago=1.0,
        uploaded=True, processed=None, total=None, fingerprint_version=1, has_remote=True):
    """A ledger row; the phase follows from the status unless given."""
    if phase is None:
        phase = Phase.DONE if is_terminal(kind, status) else Phase.ACTIVE
    created = NOW - timedelta(hours=hours_ago)
    return JobRecord(
        id=generation, name=name, kind=kind, generation=generation,
        fingerprint=fingerprint(name, revision, edit), fingerprint_version=fingerprint_version,
        revision=revision, idempotency_key=f"lineage-1:{name}:{generation}", phase=phase,
        created_at=created, updated_at=created,
        remote_id=remote_id(name, kind, generation) if has_remote else None, remote_status=status,
        uploaded=uploaded, processed=processed, total=total,
    )


def rejected(name, *, kind=MA, error="HTTP 400: the file is not a valid CSV", phase=Phase.DONE, **kw):
    """A submission Zuora refused with a 4xx: recorded done with status rejected, no remote job."""
    return replace(job(name, REJECTED, kind=kind, phase=phase, has_remote=False, **kw),
                   detail={"error": error} if error else {})


def observe(j: JobRecord, status, *, missing=False, processed=None, total=None) -> Observation:
    return Observation(remote_id=j.remote_id, kind=j.kind, status=None if missing else status, missing=missing,
                       processed=processed, total=total)


def plan_of(specs=(), jobs=(), observed=(), **options):
    """make_plan over the given pieces; jobs are grouped by name in the order given."""
    records: dict[str, list[JobRecord]] = {}
    for j in jobs:
        records.setdefault(j.name, []).append(j)
    recorded = RecordedState(tuple(SpecRecord(n, tuple(js)) for n, js in records.items()), "lineage-1", 42)
    desired = DesiredState(tuple(specs), "d" * 64)
    opts = PlanOptions.from_cli(now=NOW, **options)
    return make_plan(desired, recorded, ObservedState(tuple(observed)), opts,
                     environment="local", reconciler_version="0.1.0")


def text(plan) -> str:
    out = io.StringIO()
    render_text(plan, out, color=False)
    return out.getvalue()


# --- golden cases: one per row of the table and per interaction worth pinning ---------------------

CASES = {}


def case(func):
    CASES[func.__name__] = func
    return func


@case
def new_specs():
    return plan_of([spec("fx-rates"), spec("load-vehicles", CO), spec("purge-vehicles", CO, operation="delete")])


@case
def revision_bump():
    return plan_of([spec("fx-rates", revision=2)], [job("fx-rates", "Completed")])


@case
def rerun_completed():
    return plan_of([spec("fx-rates")], [job("fx-rates", "Completed")], reruns=["fx-rates"])


@case
def upload_pending_file():
    created = job("load-vehicles", "pending", kind=CO, phase=Phase.CREATED, uploaded=False)
    return plan_of([spec("load-vehicles", CO)], [created])


@case
def replace_pending_mass_action():
    return plan_of([spec("fx-rates", edit=1)], [job("fx-rates", "Pending")])


@case
def replace_processing_shows_rows_not_rolled_back():
    running = job("fx-rates", "Processing", processed=5, total=40)
    return plan_of([spec("fx-rates", edit=1)], [running], [observe(running, "Processing", processed=12, total=40)])


@case
def revision_bump_or_rerun_while_running():
    return plan_of([spec("fx-rates", revision=2), spec("mpu-fix")],
                   [job("fx-rates", "Pending"), job("mpu-fix", "Processing")], reruns=["mpu-fix"])


@case
def replace_custom_object_job():
    return plan_of([spec("purge-vehicles", CO, operation="delete", edit=1)],
                   [job("purge-vehicles", "accepted", kind=CO)])


@case
def retry_after_change():
    return plan_of([spec("fx-rates", edit=1), spec("load-vehicles", CO, edit=1)],
                   [job("fx-rates", "Failed"), job("load-vehicles", "cancelled", kind=CO)])


@case
def unsuccessful_is_not_retried_without_rerun():
    return plan_of([spec("fx-rates"), spec("mpu-fix"), spec("load-vehicles", CO)],
                   [job("fx-rates", "Failed"), job("mpu-fix", "Stopped"), job("load-vehicles", "failed", kind=CO)],
                   reruns=["mpu-fix"])


@case
def spec_removed():
    processing = job("d-processing", "Processing", processed=3, total=10)
    return plan_of([], [
        job("a-pending", "Pending"),
        job("b-co-pending", "pending", kind=CO, phase=Phase.CREATED, uploaded=False),
        job("c-completed", "Completed"),
        processing,
        job("e-in-progress", "in_progress", kind=CO),
        job("f-stopping", "Stopping"),
        job("g-intent", None, phase=Phase.INTENT, has_remote=False),
        job("h-retired", "Completed", phase=Phase.RETIRED),
    ])


@case
def replacement_waits_for_unstoppable_job():
    return plan_of([spec("fx-rates", edit=1), spec("load-vehicles", CO, edit=1)],
                   [job("fx-rates", "Stopping"), job("load-vehicles", "in_progress", kind=CO)])


@case
def dependency_waiting():
    return plan_of(
        [spec("a-base"), spec("b-on-new", deps=["a-base"]),
         spec("c-running"), spec("d-on-running", deps=["c-running"]),
         spec("e-failed"), spec("f-on-failed", deps=["e-failed"]),
         spec("g-done"), spec("h-on-done", deps=["g-done"]),
         spec("i-on-two", deps=["a-base", "g-done"])],
        [job("c-running", "Processing"), job("e-failed", "Failed"), job("g-done", "Completed")],
    )


@case
def dependency_failed_or_stopped_blocks():
    """A failed or stopped dependency blocks its dependents, and theirs: waiting would never end."""
    return plan_of(
        [spec("a-failed"), spec("b-on-failed", deps=["a-failed"]), spec("c-on-blocked", deps=["b-on-failed"]),
         spec("d-stopped"), spec("e-on-stopped", deps=["d-stopped"])],
        [job("a-failed", "Failed"), job("d-stopped", "Stopped")],
    )


@case
def dependency_outside_target():
    return plan_of([spec("a-base"), spec("b-on-a", deps=["a-base"]), spec("c-on-a", deps=["a-base"])], [],
                   targets=["b-on-a", "c-on-a"], excludes=["c-on-a"])


@case
def slots_count_active_jobs():
    accepted, ended = job("active-1", "accepted", kind=CO), job("ended", "pending", kind=CO)
    running = [spec(n, CO) for n in ("active-1", "active-2", "ended", "uploading")]
    return plan_of(
        running + [spec(f"new-{i}", CO) for i in range(1, 4)],
        [accepted, job("active-2", "in_progress", kind=CO), ended,
         job("uploading", "pending", kind=CO, phase=Phase.CREATED, uploaded=False)],
        # refresh says "ended" completed: it no longer holds a slot
        [observe(accepted, "accepted"), observe(ended, "completed")],
    )


@case
def slots_all_taken():
    busy = [job(f"busy-{i}", "in_progress", kind=CO) for i in range(1, 5)]
    starting = job("starting", None, kind=CO, phase=Phase.INTENT, has_remote=False)
    specs = [spec(j.name, CO) for j in busy] + [spec("starting", CO), spec("new-co", CO), spec("new-ma")]
    return plan_of(specs, busy + [starting])


@case
def conflict_changed_after_completion():
    return plan_of([spec("fx-rates", edit=1)], [job("fx-rates", "Completed")])


@case
def conflict_missing_remotely():
    gone = job("fx-rates", "Pending")
    return plan_of([spec("fx-rates")], [gone], [observe(gone, None, missing=True)])


@case
def resume_young_intent():
    return plan_of([spec("fx-rates")], [job("fx-rates", None, phase=Phase.INTENT, hours_ago=2, has_remote=False)])


@case
def conflict_intent_in_doubt():
    return plan_of([spec("fx-rates"), spec("changed")],
                   [job("fx-rates", None, phase=Phase.INTENT, hours_ago=25, has_remote=False),
                    job("changed", None, phase=Phase.INTENT, edit=1, hours_ago=1, has_remote=False)])


@case
def retired_re_added():
    return plan_of([spec("same-revision"), spec("bumped", revision=2)],
                   [job("same-revision", "Completed", phase=Phase.RETIRED),
                    job("bumped", "Completed", phase=Phase.RETIRED)])


@case
def completed_revision_is_not_run_again_after_a_rerun_failed():
    jobs = [job("fx-rates", "Completed"), job("fx-rates", "Failed", generation=2)]
    return plan_of([spec("fx-rates", edit=1), spec("mpu-fix", edit=1)],
                   jobs + [job("mpu-fix", "Completed"), job("mpu-fix", "Pending", generation=2)])


@case
def revision_went_down():
    return plan_of([spec("fx-rates", revision=1)],
                   [job("fx-rates", "Completed", revision=1), job("fx-rates", "Completed", revision=2, generation=2)])


@case
def filters_target_exclude_selector():
    specs = [spec("a", labels=[("team", "finance")]), spec("b", labels=[("team", "finance")]),
             spec("c", labels=[("team", "ops")]), spec("d")]
    return plan_of(specs, [job("removed", "Completed")], targets=["a", "b", "c", "removed"], excludes=["b"],
                   selectors=["team=finance"])


@case
def drift_observed_overrides_recorded():
    pending = job("fx-rates", "Pending")
    processing = job("mpu-fix", "Processing")
    return plan_of([spec("fx-rates"), spec("mpu-fix", edit=1)], [pending, processing],
                   [observe(pending, "Completed"), observe(processing, "Failed")])


@case
def rejected_submission_is_submitted_again():
    return plan_of(
        [spec("a-unchanged"), spec("b-fixed", CO, edit=1), spec("c-bumped", revision=2),
         spec("d-retry-after-failure", edit=2)],
        [rejected("a-unchanged"),
         rejected("b-fixed", kind=CO, error="HTTP 422: only 5 custom object jobs may be active"),
         job("c-bumped", "Completed"), rejected("c-bumped", generation=2, revision=2, error=None),
         job("d-retry-after-failure", "Failed"), rejected("d-retry-after-failure", generation=2, edit=1)],
    )


@case
def spec_removed_after_rejected_submission():
    return plan_of([], [
        rejected("a-only-rejected"),
        job("b-completed-then-rejected", "Completed"), rejected("b-completed-then-rejected", generation=2),
        job("c-running-then-rejected", "Processing", processed=3, total=10),
        rejected("c-running-then-rejected", generation=2, edit=1),
        rejected("d-rejected-and-retired", phase=Phase.RETIRED),
    ])


@case
def in_sync():
    return plan_of([spec("fx-rates"), spec("load-vehicles", CO)],
                   [job("fx-rates", "Completed"), job("load-vehicles", "in_progress", kind=CO)])


@case
def what_changes_do_to_the_data():
    """The data facts engine.data adds after planning, as the text plan shows them below each change."""
    from dataclasses import replace as with_fields

    from reconciler.model import DataFacts, Since

    payments = with_fields(spec("payments", revision=2), action_type="MPU")
    plan = plan_of([spec("fx-rates", revision=2), payments, spec("purge", CO, operation="delete")],
                   [job("fx-rates", "Completed"), job("payments", "Completed")])
    facts = {
        "fx-rates": DataFacts(rows=20, send=20, added=2, changed=1, removed=0, since=Since(1, 1, "b" * 32),
                              summary=(("pairs", ("EUR->USD", "GBP->USD")), ("dates", "2026-11-01..2026-11-20"))),
        "payments": DataFacts(rows=5, send=2, already_applied=3, added=1, changed=1, removed=0,
                              since=Since(1, 1, "c" * 32), totals=(("EUR", "80.00"), ("USD", "500.00")),
                              resend="new-rows", sent_sha256="d" * 64),
        "purge": DataFacts(rows=None, send=None, summary=(("selects", "vehicle records where year__c LT 2000"),)),
    }
    return with_fields(plan, changes=tuple(with_fields(c, data=facts[c.name]) for c in plan.changes),
                       notes=(("load-cars", "nothing new to send (4 of 4 rows already applied)"),), unchanged=1)


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden(name):
    rendered = text(CASES[name]())
    path = GOLDEN / f"{name}.txt"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.parent.mkdir(exist_ok=True)
        path.write_text(rendered, encoding="utf-8")
    assert path.exists(), f"no golden {path}; run with UPDATE_GOLDEN=1 and review it"
    assert rendered == path.read_text(encoding="utf-8")


def test_every_golden_has_a_case():
    assert sorted(p.stem for p in GOLDEN.glob("*.txt")) == sorted(CASES)


# --- fields the applier relies on, beyond the rendered text ---------------------------------------

def test_resumed_intent_keeps_generation_and_idempotency_key():
    intent = job("fx-rates", None, phase=Phase.INTENT, generation=3, hours_ago=23.9, has_remote=False)
    [change] = plan_of([spec("fx-rates")], [intent]).changes
    assert (change.action, change.generation, change.idempotency_key) == ("submit", 3, intent.idempotency_key)


def test_intent_exactly_24_hours_old_is_in_doubt():
    intent = job("fx-rates", None, phase=Phase.INTENT, hours_ago=24, has_remote=False)
    [change] = plan_of([spec("fx-rates")], [intent]).changes
    assert change.action == "conflict"


def test_new_submit_takes_the_next_generation_and_a_fresh_key():
    jobs = [job("fx-rates", "Completed", generation=1), job("fx-rates", "Failed", generation=4, revision=2)]
    [change] = plan_of([spec("fx-rates", revision=3)], jobs).changes
    assert (change.action, change.generation, change.idempotency_key, change.remote_id) == ("submit", 5, None, None)


def test_upload_reuses_the_job_and_its_key():
    created = job("load-vehicles", "pending", kind=CO, phase=Phase.CREATED, uploaded=False, generation=2)
    [change] = plan_of([spec("load-vehicles", CO)], [created]).changes
    assert (change.remote_id, change.generation, change.idempotency_key) == (
        created.remote_id, 2, created.idempotency_key)


def test_replace_and_stop_act_on_the_recorded_bulk_key():
    running = job("fx-rates", "Processing")
    [replace] = plan_of([spec("fx-rates", edit=1)], [running]).changes
    [stop] = plan_of([], [running]).changes
    assert replace.remote_id == stop.remote_id == running.remote_id
    assert (replace.generation, replace.detail["remote_action"], stop.action) == (2, "stop", "stop")


def test_rerun_is_marked_in_the_detail():
    [change] = plan_of([spec("fx-rates")], [job("fx-rates", "Completed")], reruns=["fx-rates"]).changes
    assert change.detail["rerun"] is True


def test_rerun_lets_a_completed_revision_run_again_after_a_failed_rerun():
    jobs = [job("fx-rates", "Completed"), job("fx-rates", "Failed", generation=2)]
    [change] = plan_of([spec("fx-rates", edit=1)], jobs, reruns=["fx-rates"]).changes
    assert (change.action, change.generation, change.detail["rerun"]) == ("submit", 3, True)


def test_a_new_fingerprint_version_alone_does_not_look_edited():
    old = job("fx-rates", "Completed", edit=7, fingerprint_version=1)
    plan = plan_of([spec("fx-rates", fingerprint_version=2)], [old])
    assert (plan.changes, plan.unchanged) == ((), 1)


def test_filtered_out_jobs_still_hold_slots_and_gate_dependents():
    jobs = [job(f"busy-{i}", "in_progress", kind=CO) for i in range(5)]
    plan = plan_of([spec("new-co", CO), spec("base"), spec("dependent", deps=["base"])], jobs,
                   targets=["new-co", "dependent"])
    assert [(c.name, c.action) for c in plan.changes] == [("new-co", "wait"), ("dependent", "wait")]


def test_changes_come_in_dependency_order_then_by_name():
    plan = plan_of([spec("z-base"), spec("a-top", deps=["m-mid"]), spec("m-mid", deps=["z-base"]), spec("b")])
    assert [c.name for c in plan.changes] == ["b", "z-base", "m-mid", "a-top"]


def test_a_rejected_submission_takes_the_next_generation_and_a_fresh_key():
    [change] = plan_of([spec("fx-rates")], [job("fx-rates", "Failed"), rejected("fx-rates", generation=2)],
                       reruns=["fx-rates"]).changes
    assert (change.action, change.generation, change.idempotency_key, change.remote_id) == ("submit", 3, None, None)
    assert change.detail["previous_status"] == REJECTED and change.detail["rerun"] is True
    assert change.reason == "previous submission was rejected: HTTP 400: the file is not a valid CSV (rerun requested)"


def test_rejected_custom_object_jobs_hold_no_slot():
    refused = [rejected(f"co-{i}", kind=CO, error="HTTP 429") for i in range(5)]
    plan = plan_of([spec(j.name, CO) for j in refused] + [spec("new-co", CO)], refused, custom_object_slots=5)
    assert [c.action for c in plan.changes] == ["submit"] * 5 + ["wait"]  # 5 slots for 6 submits, none held


def test_a_rejected_rerun_does_not_count_as_completed_nor_run_the_revision_again_by_itself():
    jobs = [job("fx-rates", "Completed"), rejected("fx-rates", generation=2)]
    assert plan_of([spec("fx-rates")], jobs).changes == ()  # the rerun never happened: ask for it again
    [again] = plan_of([spec("fx-rates")], jobs, reruns=["fx-rates"]).changes
    assert (again.action, again.generation) == ("submit", 3)
    [edited] = plan_of([spec("fx-rates", edit=1)], jobs).changes
    assert (edited.action, edited.reason) == ("conflict", "spec changed after its job completed")


def test_a_spec_reverted_after_a_rejected_bump_is_in_sync():
    jobs = [job("fx-rates", "Completed"), rejected("fx-rates", generation=2, revision=2)]
    plan = plan_of([spec("fx-rates", revision=1)], jobs)
    assert (plan.changes, plan.unchanged) == ((), 1)


def test_a_retired_rejected_only_record_is_new_when_re_added():
    [change] = plan_of([spec("fx-rates")], [rejected("fx-rates", phase=Phase.RETIRED)]).changes
    assert (change.action, change.reason, change.generation) == ("submit", "new", 2)


def test_a_name_retired_through_its_rejected_submission_is_a_re_added_retired_spec():
    jobs = [job("fx-rates", "Completed"), rejected("fx-rates", generation=2, phase=Phase.RETIRED)]
    [change] = plan_of([spec("fx-rates")], jobs).changes
    assert (change.action, change.reason) == ("conflict", "re-added retired spec (retired at revision 1)")


def test_dependents_wait_while_a_dependency_is_submitted_again_after_a_rejection():
    plan = plan_of([spec("base"), spec("top", deps=["base"])], [rejected("base")])
    assert [(c.name, c.action) for c in plan.changes] == [("base", "submit"), ("top", "wait")]


@pytest.mark.parametrize("seed", range(5))
def test_shuffled_inputs_give_the_same_plan(seed):
    specs = [spec(f"s{i}", CO if i % 2 else MA, deps=[f"s{i - 3}"] if i >= 3 else [], edit=i % 3 == 0)
             for i in range(12)]
    jobs = [job(f"s{i}", status, kind=CO if i % 2 else MA)
            for i, status in [(0, "Completed"), (1, "accepted"), (3, "in_progress"), (4, "Failed"), (6, "Pending")]]
    jobs += [job(f"gone{i}", "Completed") for i in range(3)]
    observed = [observe(jobs[0], "Completed"), observe(jobs[2], "completed")]
    expected = plan_of(specs, jobs, observed, custom_object_slots=3)
    rng = random.Random(seed)
    for items in (specs, jobs, observed):
        rng.shuffle(items)
    assert plan_of(specs, jobs, observed, custom_object_slots=3) == expected


@pytest.mark.parametrize("flag", ["targets", "excludes"])
def test_filter_naming_no_spec_and_no_record_is_refused(flag):
    with pytest.raises(UsageError, match="no spec named 'typo'"):
        plan_of([spec("fx-rates")], **{flag: ["typo"]})


def test_rerun_needs_the_spec():
    with pytest.raises(UsageError, match="--rerun gone: no spec named 'gone'"):
        plan_of([], [job("gone", "Completed")], reruns=["gone"])


@pytest.mark.parametrize("raw", ["team", "=finance", ""])
def test_bad_selector_is_refused(raw):
    with pytest.raises(ReconcilerError, match="expected KEY=VALUE"):
        PlanOptions.from_cli(selectors=[raw], now=NOW)


def test_options_need_an_aware_clock():
    with pytest.raises(ValueError):
        PlanOptions(now=datetime(2026, 11, 3))


def test_a_custom_object_job_in_a_status_zuora_never_documented_still_holds_its_slot():
    busy = [job(f"busy-{i}", "queued", kind=CO) for i in range(5)]  # not terminal: it may well be running
    [change] = plan_of([spec(j.name, CO) for j in busy] + [spec("new-co", CO)], busy, custom_object_slots=5).changes
    assert (change.name, change.action, change.detail["waiting_for"]) == ("new-co", "wait", "slot")
