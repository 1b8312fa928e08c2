"""Spec loading: the desired state, fingerprints and digest, YAML edge cases, and random input."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from reconciler.spec import load as spec

from reconciler.spec import schema as specschema
from reconciler.engine.config import load_settings
from reconciler.errors import ConfigError, ReconcilerError, SpecError
from reconciler.model import CUSTOM_OBJECT_JOB, MASS_ACTION, Condition, Problem

FX = "Provider Exchange Rate Date,Currency (From),Currency (To),Exchange Rate\n2026-11-01,USD,EUR,0.92\n"
CARS = "make__c,year__c\nFord,1999\n"

REPO = {
    "specs/finance/fx.yaml": """\
apiVersion: reconciler/v1
kind: MassAction
metadata:
  name: fx-rates-2026-11
  description: November FX rates
  labels: {team: finance, period: "2026-11"}
spec:
  actionType: ImportFXRate
  file: ../../data/fx.csv
  revision: 2
  dependsOn: [load-vehicles]
""",
    "specs/vehicles.yml": """\
---
apiVersion: reconciler/v1
kind: CustomObjectJob
metadata: {name: load-vehicles}
spec:
  object: vehicle
  operation: create
  file: ../data/cars.csv
---
# an empty document is skipped
---
apiVersion: reconciler/v1
kind: CustomObjectJob
metadata: {name: purge-old-vehicles}
spec:
  namespace: default
  object: vehicle
  operation: delete
  filter:
    conditions:
      - {field: year__c, operator: LT, value: 2000}
      - {field: CreatedDate, operator: LT, value: 2020-01-01T00:00:00.000Z}
""",
    "specs/.hidden.yaml": "not: [a spec\n",
    "specs/.git/config.yaml": "also: [not a spec\n",
    "specs/README.md": "# ignored\n",
    "specs/rs.yaml": """\
apiVersion: reconciler/v1
kind: MassAction
metadata: {name: rs}
spec: {actionType: DeleteRevenueSchedule, file: ../data/rs.csv}
""",
    "data/fx.csv": FX,
    "data/cars.csv": CARS,
    "data/rs.csv": "Revenue Schedule Number\nRS-1\n",
}


def write_repo(root: Path, files: dict) -> Path:
    (root / "reconciler.yaml").write_text("environment: local\n")
    (root / "specs").mkdir(exist_ok=True)
    for relative, content in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return root


def desired(root: Path):
    return spec.load_desired(load_settings(chdir=str(root), env={}))


def test_the_desired_state_of_a_repo(tmp_path):
    state = desired(write_repo(tmp_path, REPO))
    assert [s.name for s in state.specs] == ["fx-rates-2026-11", "load-vehicles", "purge-old-vehicles", "rs"]
    fx, load, purge, _ = state.specs
    assert (fx.kind, fx.action_type, fx.revision, fx.source, fx.line) == (
        MASS_ACTION, "ImportFXRate", 2, "specs/finance/fx.yaml", 1)
    assert (fx.description, fx.labels, fx.depends_on) == (
        "November FX rates", (("period", "2026-11"), ("team", "finance")), ("load-vehicles",))
    assert (fx.file, fx.file_size) == ("data/fx.csv", len(FX))
    assert fx.file_sha256 == hashlib.sha256(FX.encode()).hexdigest()
    assert fx.fingerprint_version == spec.FINGERPRINT_VERSION == 1
    assert (load.kind, load.namespace, load.object, load.operation, load.revision) == (
        CUSTOM_OBJECT_JOB, "default", "vehicle", "create", 1)
    assert (load.source, load.line, load.file) == ("specs/vehicles.yml", 2, "data/cars.csv")
    assert purge.file is None and purge.file_sha256 is None
    # Dates stay text: a filter value is sent exactly as written.
    assert purge.conditions == (Condition("year__c", "LT", 2000),
                                Condition("CreatedDate", "LT", "2020-01-01T00:00:00.000Z"))
    assert purge.line == 12


def test_an_invalid_repo_raises_with_every_problem(tmp_path):
    write_repo(tmp_path, {**REPO, "data/fx.csv": "", "specs/x.yaml": "kind: MassAction\n"})
    with pytest.raises(SpecError) as raised:
        desired(tmp_path)
    assert [p.file for p in raised.value.problems] == ["data/fx.csv", "specs/x.yaml", "specs/x.yaml", "specs/x.yaml"]
    assert "the specs are invalid (4 problems in 2 files)" in str(raised.value)
    assert raised.value.exit_code == 1


def test_a_missing_specs_directory_is_a_problem(tmp_path):
    (tmp_path / "reconciler.yaml").write_text("specs: specs\n")
    _, problems = spec.validate_repo(load_settings(chdir=str(tmp_path), env={}))
    assert [p.render() for p in problems] == [
        "specs: specs directory not found; create it, or set `specs:` in reconciler.yaml to where your specs are"]


def test_an_empty_specs_directory_is_valid(tmp_path):
    (tmp_path / "reconciler.yaml").write_text("")
    (tmp_path / "specs").mkdir()
    state = desired(tmp_path)
    assert state.specs == () and len(state.digest) == 64


def test_symlinks_inside_the_repo_are_fine_and_recorded_by_their_path(tmp_path):
    write_repo(tmp_path, REPO)
    (tmp_path / "shared").symlink_to(tmp_path / "data")
    fx = tmp_path / "specs/finance/fx.yaml"
    fx.write_text(fx.read_text().replace("../../data/fx.csv", "../../shared/fx.csv"))
    assert desired(tmp_path).by_name()["fx-rates-2026-11"].file == "shared/fx.csv"


def test_a_zip_is_fingerprinted_by_its_bytes(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("fx.csv", FX)
    write_repo(tmp_path, {**REPO, "data/fx.zip": buffer.getvalue()})
    fx = tmp_path / "specs/finance/fx.yaml"
    fx.write_text(fx.read_text().replace("fx.csv", "fx.zip"))
    spec_ = desired(tmp_path).by_name()["fx-rates-2026-11"]
    assert spec_.file_sha256 == hashlib.sha256(buffer.getvalue()).hexdigest()


# ---------------------------------------------------------------- fingerprints and the digest


def edited(tmp_path, path: str, old: str, new: str):
    """(fingerprint of every spec, digest) before and after one textual edit of one file."""
    write_repo(tmp_path, REPO)
    before = desired(tmp_path)
    target = tmp_path / path
    text = target.read_text()
    assert old in text
    target.write_text(text.replace(old, new, 1))
    after = desired(tmp_path)
    return ({s.name: s.fingerprint for s in before.specs}, before.digest), (
        {s.name: s.fingerprint for s in after.specs}, after.digest)


FX_SPEC = "specs/finance/fx.yaml"
VEHICLES = "specs/vehicles.yml"


@pytest.mark.parametrize("path, old, new", [
    (FX_SPEC, "description: November FX rates", "description: FX rates for November"),
    (FX_SPEC, "labels: {team: finance, period: \"2026-11\"}", "labels: {team: treasury}"),
    (FX_SPEC, "  dependsOn: [load-vehicles]\n", ""),
    (VEHICLES, "metadata: {name: load-vehicles}", "metadata: {name: load-vehicles, description: cars}"),
])
def test_metadata_and_ordering_keep_the_fingerprint(tmp_path, path, old, new):
    (fingerprints, digest), (after, after_digest) = edited(tmp_path, path, old, new)
    assert fingerprints == after
    assert digest != after_digest  # but a saved plan still goes stale


@pytest.mark.parametrize("path, old, new, name", [
    ("data/fx.csv", "0.92", "0.93", "fx-rates-2026-11"),
    ("data/fx.csv", "\n", "\r\n", "fx-rates-2026-11"),
    (FX_SPEC, "revision: 2", "revision: 3", "fx-rates-2026-11"),
    ("specs/rs.yaml", "DeleteRevenueSchedule", "UpdateRevenueSchedule", "rs"),
    ("data/cars.csv", "Ford", "Opel", "load-vehicles"),
    (VEHICLES, "object: vehicle\n  operation: create", "object: car\n  operation: create", "load-vehicles"),
    (VEHICLES, "value: 2000}", "value: 2001}", "purge-old-vehicles"),
    (VEHICLES, "value: 2000}", "value: '2000'}", "purge-old-vehicles"),
    (VEHICLES, "operator: LT, value: 2000", "operator: LE, value: 2000", "purge-old-vehicles"),
    (VEHICLES, "namespace: default", "namespace: com_zuora", "purge-old-vehicles"),
    (VEHICLES, "      - {field: CreatedDate", "      - {field: UpdatedDate", "purge-old-vehicles"),
])
def test_what_is_sent_to_zuora_changes_the_fingerprint(tmp_path, path, old, new, name):
    (fingerprints, digest), (after, after_digest) = edited(tmp_path, path, old, new)
    assert fingerprints[name] != after[name]
    assert {k: v for k, v in fingerprints.items() if k != name} == {k: v for k, v in after.items() if k != name}
    assert digest != after_digest


def test_operation_and_allow_delete_all_are_part_of_the_fingerprint():
    base = dict(kind=CUSTOM_OBJECT_JOB, file_sha256=None, revision=1, namespace="default", object="v", operation="delete")
    assert spec.fingerprint(**base) != spec.fingerprint(**base, allow_delete_all=True)
    assert spec.fingerprint(**base) != spec.fingerprint(**{**base, "operation": "update"})
    assert spec.fingerprint(**base) == spec.fingerprint(**base)
    assert spec.fingerprint(**base, conditions=(Condition("a", "EQ", 1),)) != spec.fingerprint(
        **base, conditions=(Condition("a", "EQ", True),))


def test_the_digest_is_stable_and_independent_of_file_order(tmp_path):
    write_repo(tmp_path, REPO)
    first = desired(tmp_path).digest
    assert desired(tmp_path).digest == first
    vehicles = tmp_path / "specs/vehicles.yml"
    _, load, empty, purge = vehicles.read_text().split("---\n")
    assert "load-vehicles" in load and "purge-old-vehicles" in purge
    vehicles.write_text("---\n".join(["", purge, empty, load]))  # the same documents, the other way round
    assert desired(tmp_path).digest == first
    (tmp_path / "specs/vehicles.yml").rename(tmp_path / "specs/a-vehicles.yml")
    assert desired(tmp_path).digest != first  # the source of a spec is part of what a plan shows


# ---------------------------------------------------------------- YAML files for config


def test_load_yaml_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("a: 1\nb: [x, 2026-01-01, yes, ~]\n")
    assert spec.load_yaml_file(path) == {"a": 1, "b": ["x", "2026-01-01", True, None]}
    path.write_text("")
    assert spec.load_yaml_file(path) is None
    path.write_text("a: 1\nb: {\n")
    with pytest.raises(ConfigError, match=r"c.yaml:3: invalid YAML"):
        spec.load_yaml_file(path)
    with pytest.raises(ConfigError, match="cannot read the file"):
        spec.load_yaml_file(tmp_path / "missing.yaml")


# ---------------------------------------------------------------- the schema


def test_the_schema_is_valid_draft_2020_12():
    Draft202012Validator.check_schema(json.loads(spec.schema_text()))


def test_identical_documents_are_judged_once(tmp_path):
    write_repo(tmp_path, REPO)
    settings_ = load_settings(chdir=str(tmp_path), env={})
    first = spec.check_repo(settings_)
    judged = len(specschema._VERDICTS)
    again = spec.check_repo(settings_)
    assert again == first and len(specschema._VERDICTS) == judged
    document = {"apiVersion": "reconciler/v1", "kind": "MassAction", "metadata": {"name": "judged-once"},
                "spec": {"actionType": "ImportFXRate", "file": "fx.csv", "extra": 1, "other": 2}}
    reordered = {**document, "spec": {"other": 2, **document["spec"]}}
    assert specschema.problems(document) == specschema.problems(document)
    # Key order is part of the content: unknown fields are reported in the order the file has them.
    assert [m for _, m in specschema.problems(reordered)] == [m for _, m in specschema.problems(document)][::-1]


NAMES = st.sampled_from(["fx", "a-b", "load.v1", "Bad", "", "-x", "a" * 64])
SCALARS = st.none() | st.booleans() | st.integers(-5, 5) | st.floats(allow_nan=True) | st.text(max_size=12) | st.sampled_from(
    ["reconciler/v1", "MassAction", "CustomObjectJob", "ImportFXRate", "MPU", "create", "update", "delete", "EQ", "LT",
     "default", "com_zuora", "vehicle", "../data/fx.csv", "../data/cars.csv", "../../etc/passwd", "2026-01-01"])
KEYS = st.sampled_from(["apiVersion", "kind", "metadata", "spec", "name", "description", "labels", "file", "actionType",
                        "revision", "dependsOn", "namespace", "object", "operation", "filter", "conditions", "field",
                        "operator", "value", "allowDeleteAll"]) | st.text(max_size=8)
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=4),
                      max_leaves=8)


@st.composite
def near_valid_documents(draw):
    """A valid spec with random fields replaced or added, so the deeper checks run too."""
    kind = draw(st.sampled_from([MASS_ACTION, CUSTOM_OBJECT_JOB]))
    body = ({"actionType": "ImportFXRate", "file": "../data/fx.csv"} if kind == MASS_ACTION
            else {"object": "vehicle", "operation": draw(st.sampled_from(["create", "update", "delete"])),
                  "file": "../data/cars.csv"})
    body.update(draw(st.dictionaries(KEYS, VALUES, max_size=3)))
    document = {"apiVersion": "reconciler/v1", "kind": kind, "metadata": {"name": draw(NAMES)}, "spec": body}
    document.update(draw(st.dictionaries(KEYS, VALUES, max_size=2)))
    return document


DOCUMENTS = near_valid_documents() | VALUES


@settings(max_examples=200, deadline=None)
@given(document=DOCUMENTS)
def test_the_remembered_verdict_is_what_jsonschema_says(document):
    fresh = Draft202012Validator(specschema.inlined(specschema.load_schema()))
    assert (specschema.problems(document) == ()) == fresh.is_valid(document)
    assert specschema.problems(document) == specschema.problems(json.loads(json.dumps(document)))


def test_valid_documents_have_no_schema_problems():
    for text in REPO["specs/vehicles.yml"].split("---")[1:] + [REPO["specs/finance/fx.yaml"]]:
        document = yaml.safe_load(text)
        if document is not None:
            assert specschema.problems(json.loads(json.dumps(document, default=str))) == ()


@pytest.fixture
def scratch(tmp_path):
    return write_repo(tmp_path, {"data/fx.csv": FX, "data/cars.csv": CARS})


def check_never_crashes(root: Path) -> list[Problem]:
    try:
        check = spec.check_repo(load_settings(chdir=str(root), env={}))
    except ReconcilerError as err:  # allowed, though check_repo reports problems instead
        pytest.fail(f"check_repo raised {err!r} instead of reporting problems")
    assert all(isinstance(p, Problem) for p in check.problems)
    assert (check.desired is None) == bool(check.problems)
    return list(check.problems)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(documents=st.lists(DOCUMENTS, min_size=1, max_size=3))
def test_random_yaml_documents_give_problems_never_exceptions(scratch, documents):
    (scratch / "specs" / "random.yaml").write_text(yaml.safe_dump_all(documents, allow_unicode=True))
    check_never_crashes(scratch)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=300) | st.text(alphabet="[]{}:-,#&*!|>'\"%@`? \n\tab01", max_size=120))
def test_random_text_gives_problems_never_exceptions(scratch, text):
    (scratch / "specs" / "random.yaml").write_bytes(text.encode("utf-8", "surrogatepass"))
    check_never_crashes(scratch)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.binary(max_size=300), kind=st.sampled_from(["ImportFXRate", "MPU", "create", "update"]))
def test_random_bytes_as_a_data_file_give_problems_never_exceptions(scratch, content, kind):
    if kind in ("create", "update"):
        text = (f"apiVersion: reconciler/v1\nkind: CustomObjectJob\nmetadata: {{name: r}}\n"
                f"spec: {{object: v, operation: {kind}, file: ../data/random.csv}}\n")
    else:
        text = (f"apiVersion: reconciler/v1\nkind: MassAction\nmetadata: {{name: r}}\n"
                f"spec: {{actionType: {kind}, file: ../data/random.csv}}\n")
    (scratch / "specs" / "random.yaml").write_text(text)
    (scratch / "data" / "random.csv").write_bytes(content)
    check_never_crashes(scratch)
