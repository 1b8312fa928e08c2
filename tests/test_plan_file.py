"""The versioned plan file: exact document shape, round trip, strict reading, staleness."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timezone

import pytest

from reconciler.errors import PlanFileError
from reconciler.engine.plan import Change, Drift, FileRef, MassTarget, ObjectTarget, Plan
from reconciler.engine.planfile import check_fresh, from_document, read_plan_file, to_document, write_plan_file
from reconciler.model import Action

NOW = datetime(2026, 11, 3, 12, 0, 7, 123456, tzinfo=timezone.utc)


def sample_plan(**overrides) -> Plan:
    changes = (
        Change(name="fx-rates", kind="MassAction", action=Action.SUBMIT, reason="new", fingerprint="f" * 64,
               revision=1, generation=1, target=MassTarget("ImportFXRate"), file=FileRef("data/fx.csv", "a" * 64)),
        Change(name="load-vehicles", kind="CustomObjectJob", action=Action.UPLOAD,
               reason="job created, file not uploaded yet", fingerprint="e" * 64, revision=2,
               remote_id="0f1e2d3c-0000-4000-8000-000000000001", generation=3,
               idempotency_key="lineage:load-vehicles:3", depends_on=("fx-rates",),
               target=ObjectTarget("default", "vehicle", "create"), file=FileRef("data/vehicles.csv", "b" * 64)),
        Change(name="old", kind="MassAction", action=Action.CONFLICT, reason="spec changed after its job completed",
               fingerprint="d" * 64, revision=1, remote_id="b" * 32, generation=1,
               resolve="revert the change, bump revision to 2, or run with --rerun old"),
    )
    fields = dict(reconciler_version="0.1.0", created_at=NOW, environment="local", lineage="9d1c-lineage",
                  serial=42, spec_digest="c" * 64, changes=changes,
                  drift=(Drift("fx-old", "b" * 32, "Pending", "Completed"), Drift("gone", "c" * 32, "Pending", None)),
                  unchanged=3)
    return Plan(**{**fields, **overrides})


def test_document_has_the_shape_of_design_section_4():
    doc = to_document(sample_plan())
    assert list(doc) == ["format_version", "reconciler_version", "created_at", "environment", "ledger",
                         "spec_digest", "changes", "drift", "summary", "notes"]
    assert doc["format_version"] == 1
    assert doc["created_at"] == "2026-11-03T12:00:07.123456Z"
    assert doc["ledger"] == {"lineage": "9d1c-lineage", "serial": 42}
    assert list(doc["changes"][0]) == ["name", "kind", "action", "reason", "fingerprint", "revision", "remote_id",
                                       "generation", "idempotency_key", "depends_on", "detail"]
    assert doc["drift"][1] == {"name": "gone", "remote_id": "c" * 32, "recorded": "Pending", "observed": None}
    assert list(doc["summary"].items()) == [("submit", 1), ("upload", 1), ("replace", 0), ("stop", 0),
                                            ("cancel", 0), ("retire", 0), ("wait", 0), ("blocked", 0),
                                            ("conflict", 1), ("unchanged", 3)]


def test_plan_properties():
    plan = sample_plan()
    assert [c.name for c in plan.actionable] == ["fx-rates", "load-vehicles"]
    assert plan.has_changes and plan.has_conflicts
    empty = sample_plan(changes=(), drift=())
    assert not empty.has_changes and not empty.has_conflicts


def test_round_trip_through_a_file(tmp_path):
    plan = sample_plan()
    path = tmp_path / "plan.json"
    write_plan_file(plan, path)
    assert read_plan_file(path) == plan
    assert json.loads(path.read_text(encoding="utf-8")) == to_document(plan)
    assert [p.name for p in tmp_path.iterdir()] == ["plan.json"]  # no temporary file left behind


def test_writing_into_a_missing_directory_names_the_file(tmp_path):
    with pytest.raises(PlanFileError, match="cannot write plan file .*nowhere"):
        write_plan_file(sample_plan(), tmp_path / "nowhere" / "plan.json")


def _write(tmp_path, content) -> str:
    path = tmp_path / "plan.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
    return str(path)


def test_not_json_names_file_line_and_column(tmp_path):
    path = _write(tmp_path, '{\n  "format_version": 1,\n  oops\n}')
    with pytest.raises(PlanFileError, match=r"plan\.json:3:3: not valid JSON"):
        read_plan_file(path)


@pytest.mark.parametrize(("content", "message"), [
    (b"\xff\xfe{}", "not UTF-8"),
    ("[1, 2]", "top level: expected an object"),
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
])
def test_unreadable_content(tmp_path, content, message):
    with pytest.raises(PlanFileError, match=message):
        read_plan_file(_write(tmp_path, content))


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(PlanFileError, match="does not exist; make one with `reconciler plan --out"):
        read_plan_file(tmp_path / "absent.json")
    with pytest.raises(PlanFileError, match="is a directory, not a plan file"):
        read_plan_file(tmp_path)


def test_huge_file_is_refused_before_parsing(tmp_path):
    path = tmp_path / "huge.json"
    with open(path, "wb") as fh:
        fh.truncate(50 * 1024 * 1024 + 1)
    with pytest.raises(PlanFileError, match="huge.json is larger than 50 MB"):
        read_plan_file(path)


@pytest.mark.parametrize("version", [0, 2])
def test_wrong_format_version(tmp_path, version):
    doc = {**to_document(sample_plan()), "format_version": version}
    with pytest.raises(PlanFileError, match=f"plan.json: format_version {version} is not supported"):
        read_plan_file(_write(tmp_path, doc))


def test_newer_format_is_reported_by_version_not_by_its_new_fields():
    doc = {**to_document(sample_plan()), "format_version": 2, "signature": "…"}
    with pytest.raises(PlanFileError, match="format_version 2 is not supported .* a newer reconciler wrote it"):
        from_document(doc, "plan.json")


@pytest.mark.parametrize("key", ["format_version", "reconciler_version", "created_at", "environment", "ledger",
                                 "spec_digest", "changes", "drift", "summary"])
def test_missing_top_level_field(key):
    doc = to_document(sample_plan())
    del doc[key]
    with pytest.raises(PlanFileError, match=f"^plan.json: {key}: missing"):
        from_document(doc, "plan.json")


def _broken(edit):
    doc = to_document(sample_plan())
    edit(doc)
    return doc


@pytest.mark.parametrize(("edit", "message"), [
    (lambda d: d.update(format_version="1"), "format_version: expected an integer, got str"),
    (lambda d: d.update(format_version=True), "format_version: expected an integer, got bool"),
    (lambda d: d["ledger"].update(serial="42"), "ledger.serial: expected an integer, got str"),
    (lambda d: d["ledger"].pop("lineage"), "ledger.lineage: missing"),
    (lambda d: d.update(created_at="yesterday"), "created_at: not an ISO 8601 time"),
    (lambda d: d.update(created_at="2026-11-03T12:00:00"), "created_at: time without a UTC offset"),
    (lambda d: d["changes"][1].update(revision="2"), r"changes\[1\].revision: expected an integer or null"),
    (lambda d: d["changes"][0].pop("reason"), r"changes\[0\].reason: missing"),
    (lambda d: d["changes"][0].update(action="delete"), r"changes\[0\].action: unknown action 'delete'"),
    (lambda d: d["changes"][0].update(kind="Job"), r"changes\[0\].kind: unknown kind 'Job'"),
    (lambda d: d["changes"][0].update(detail=[]), r"changes\[0\].detail: expected an object, got list"),
    (lambda d: d["changes"][1].update(depends_on=[1]), r"changes\[1\].depends_on\[0\]: expected a string"),
    (lambda d: d["changes"][0].update(extra=1), r"changes\[0\].extra: unknown field"),
    (lambda d: d.update(changes={}), "changes: expected a list, got dict"),
    (lambda d: d["drift"].append("x"), r"drift\[2\]: expected an object"),
    (lambda d: d["drift"][0].update(remote_id=None), r"drift\[0\].remote_id: expected a string, got NoneType"),
    (lambda d: d["summary"].update(submit="1"), "summary.submit: expected an integer"),
    (lambda d: d["summary"].update(submit=7), "summary does not match the changes"),
])
def test_mistyped_fields_name_the_file_and_field(edit, message):
    with pytest.raises(PlanFileError, match=message) as caught:
        from_document(_broken(edit), "saved/plan.json")
    assert str(caught.value).startswith("saved/plan.json: ")


def test_fresh_plan_passes():
    check_fresh(sample_plan(), lineage="9d1c-lineage", serial=42, spec_digest="c" * 64, environment="local")


@pytest.mark.parametrize(("moved", "message"), [
    ({"serial": 43}, r"plan is stale: the ledger changed since \(serial 42 -> 43\)"),
    ({"lineage": "other"}, r"plan is stale: the ledger was replaced \(lineage 9d1c-lineage -> other\)"),
    ({"spec_digest": "0" * 64}, "plan is stale: specs or their files changed since"),
    ({"environment": "us-production"}, "plan is stale: it was made for environment 'local', this is 'us-production'"),
])
def test_stale_plan_says_what_moved(moved, message):
    current = {"lineage": "9d1c-lineage", "serial": 42, "spec_digest": "c" * 64, "environment": "local", **moved}
    with pytest.raises(PlanFileError, match=message):
        check_fresh(sample_plan(), **current)


@pytest.mark.parametrize("lineage", [None, "new-ledger-lineage"])
def test_plan_made_without_a_ledger_is_fresh_while_the_ledger_is_missing_or_empty(lineage):
    plan = dataclasses.replace(sample_plan(), lineage=None, serial=0)
    check_fresh(plan, lineage=lineage, serial=0, spec_digest="c" * 64, environment="local")
    with pytest.raises(PlanFileError, match=r"made before the ledger existed, and the ledger holds records now "
                                            r"\(serial 3\)"):
        check_fresh(plan, lineage="new-ledger-lineage", serial=3, spec_digest="c" * 64, environment="local")


def test_plan_pinned_to_a_ledger_is_stale_when_the_ledger_is_gone():
    with pytest.raises(PlanFileError, match=r"the ledger was replaced \(lineage 9d1c-lineage -> None\)"):
        check_fresh(sample_plan(), lineage=None, serial=0, spec_digest="c" * 64, environment="local")


def test_stale_plan_lists_every_reason():
    with pytest.raises(PlanFileError) as caught:
        check_fresh(sample_plan(), lineage="9d1c-lineage", serial=50, spec_digest="0" * 64, environment="local")
    assert "serial 42 -> 50" in str(caught.value) and "specs or their files changed" in str(caught.value)
