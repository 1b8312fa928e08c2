"""`reconciler validate`: a table of bad specs and data files, each with the exact problem it must produce."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from reconciler.commands.schema import schema
from reconciler.commands.validate import validate
from reconciler.engine.config import load_settings
from reconciler.spec.load import check_repo

FX = "Provider Exchange Rate Date,Currency (From),Currency (To),Exchange Rate\n"
FX_OK = FX + "2026-11-01,USD,EUR,0.92\n"
VEHICLES = "make__c,year__c\nFord,1999\n"
UUID = "6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b"


@dataclass(frozen=True)
class Link:
    """A symbolic link to write into the repo instead of a file."""

    target: str


@dataclass(frozen=True)
class Sparse:
    """A file of this many bytes that takes no disk space (content never read: the size check comes first)."""

    size: int


def mass(name="fx", action="ImportFXRate", file="../data/fx.csv", extra=""):
    """A MassAction spec; line 4 is the name, 6 the actionType, 7 the file, 8 onwards `extra`."""
    return (f"apiVersion: reconciler/v1\nkind: MassAction\nmetadata:\n  name: {name}\nspec:\n"
            f"  actionType: {action}\n  file: {file}\n{extra}")


def job(name="cars", operation="create", file="../data/cars.csv", extra=""):
    """A CustomObjectJob spec; line 4 is the name, 6 object, 7 operation, 8 file (when given), then `extra`."""
    file_line = f"  file: {file}\n" if file else ""
    return (f"apiVersion: reconciler/v1\nkind: CustomObjectJob\nmetadata:\n  name: {name}\nspec:\n"
            f"  object: vehicle\n  operation: {operation}\n{file_line}{extra}")


def zipped(**members: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in members.items():
            archive.writestr(name.replace("_", "."), text)
    return buffer.getvalue()


def write_repo(root: Path, files: dict) -> None:
    (root / "reconciler.yaml").write_text("specs: specs\nenvironment: local\n")
    (root / "specs").mkdir(exist_ok=True)
    for relative, content in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, Link):
            path.symlink_to(content.target)
        elif isinstance(content, Sparse):
            with open(path, "wb") as handle:
                handle.truncate(content.size)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")


S = "specs/s.yaml"
CSV = "data/fx.csv"
CARS = "data/cars.csv"
LOCAL = {CSV: FX_OK}  # the data file most cases need

# id -> (files, expected file, expected line, expected CSV row, fragment of the rendered problem)
CASES = {
    # --- YAML and documents
    "invalid-yaml": ({S: "apiVersion: reconciler/v1\nkind: [MassAction\n"}, S, 3, None, "invalid YAML"),
    "mapping-values": ({S: "apiVersion: reconciler/v1\nkind: a: b\n"}, S, 2, None, "mapping values are not allowed"),
    "spec-not-utf8": ({S: b"apiVersion: reconciler/v1\n# caf\xe9\n"}, S, 2, None, "not UTF-8 (invalid byte 0xe9)"),
    "control-character": ({S: "apiVersion: reconciler/v1\nkind: Mass\x07Action\n"}, S, 2, None,
                          "invalid YAML: the control character '\\x07' is not allowed"),
    "spec-binary": ({S: b"\x89PNG\r\n\x1a\n\x00\x00"}, S, 3, None, "binary file (NUL bytes), not YAML"),
    "spec-huge": ({S: "# padding\n" * 110_000}, S, None, None, "larger than 1024 KB"),
    "document-is-list": ({S: "- a\n- b\n"}, S, 1, None, "a spec document must be a mapping"),
    "document-is-text": ({S: "just some words\n"}, S, 1, None, "a spec document must be a mapping"),
    "duplicate-key": ({S: mass(extra="  file: ../data/fx.csv\n"), **LOCAL}, S, 8, None, "spec.file: duplicate key 'file' (first at line 7)"),
    "unsupported-tag": ({S: mass(extra="  revision: !!binary aGVsbG8=\n"), **LOCAL}, S, 8, None, "unsupported YAML tag"),
    "deep-nesting": ({S: "a: " + "[" * 100_000 + "]" * 100_000 + "\n"}, S, None, None, "nested more than 1000 levels"),
    "deep-block-nesting": ({S: "a:\n" + "- " * 100_000 + "x\n"}, S, None, None, "nested more than 1000 levels"),
    "nesting-in-range": ({S: "a: " + "[" * 900 + "]" * 900 + "\n"}, S, 1, None, "nested deeper than 64 levels or too large"),
    "alias-bomb": ({S: "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n" for p, c in zip("abcdefgh", "bcdefghi"))},
        S, 1, None, "nested deeper than 64 levels or too large"),
    # --- schema
    "api-version": ({S: mass().replace("reconciler/v1", "reconciler/v2"), **LOCAL}, S, 1, None,
                    "apiVersion: must be 'reconciler/v1' (got 'reconciler/v2')"),
    "api-version-missing": ({S: mass().replace("apiVersion: reconciler/v1\n", ""), **LOCAL}, S, 1, None,
                            "apiVersion: required field is missing"),
    "kind-unknown": ({S: mass().replace("kind: MassAction", "kind: MassUpdate"), **LOCAL}, S, 2, None,
                     "kind: must be one of MassAction, CustomObjectJob (got 'MassUpdate')"),
    "metadata-missing": ({S: "apiVersion: reconciler/v1\nkind: MassAction\nspec: {actionType: MPU, file: x.csv}\n"},
                         S, 1, None, "metadata: required field is missing"),
    "name-uppercase": ({S: mass(name="FX-Rates"), **LOCAL}, S, 4, None, "metadata.name: must be lowercase letters"),
    "name-too-long": ({S: mass(name="a" * 64), **LOCAL}, S, 4, None, "at most 63 characters"),
    "label-not-string": ({S: mass().replace("  name: fx\n", "  name: fx\n  labels: {team: 7}\n"), **LOCAL}, S, 5, None,
                         "metadata.labels.team: must be a string (got 7)"),
    "label-key": ({S: mass().replace("  name: fx\n", "  name: fx\n  labels: {'a=b': x}\n"), **LOCAL}, S, 5, None,
                  "label key 'a=b' must be"),
    "description-number": ({S: mass().replace("  name: fx\n", "  name: fx\n  description: 12\n"), **LOCAL}, S, 5, None,
                           "metadata.description: must be a string (got 12)"),
    "unknown-top-field": ({S: mass() + "specs: {}\n", **LOCAL}, S, 8, None, "unknown field 'specs'; did you mean 'spec'?"),
    "dependson-typo": ({S: mass(extra="  dependson: [x]\n"), **LOCAL}, S, 8, None,
                       "spec.dependson: unknown field 'dependson'; did you mean 'dependsOn'?"),
    "action-type": ({S: mass(action="ImportFxRate"), **LOCAL}, S, 6, None, "did you mean 'ImportFXRate'?"),
    "revision-zero": ({S: mass(extra="  revision: 0\n"), **LOCAL}, S, 8, None, "spec.revision: must be at least 1 (got 0)"),
    "revision-text": ({S: mass(extra="  revision: '2'\n"), **LOCAL}, S, 8, None, "spec.revision: must be a whole number (got '2')"),
    "revision-bool": ({S: mass(extra="  revision: yes\n"), **LOCAL}, S, 8, None, "must be a whole number (got true)"),
    "revision-huge": ({S: mass(extra="  revision: " + "9" * 5000 + "\n"), **LOCAL}, S, 8, None, "must be a whole number (got '999"),
    "revision-inf": ({S: mass(extra="  revision: .inf\n"), **LOCAL}, S, 8, None, "must be a whole number (got '.inf')"),
    "depends-not-list": ({S: mass(extra="  dependsOn: other\n"), **LOCAL}, S, 8, None, "spec.dependsOn: must be a list"),
    "depends-repeated": ({S: mass(extra="  dependsOn: [a, a]\n") + "---\n" + mass(name="a"), **LOCAL}, S, 8, None,
                         "must not list the same name twice"),
    "mass-file-missing": ({S: mass().replace("  file: ../data/fx.csv\n", "")}, S, 5, None,
                          "spec.file: required field is missing"),
    "operation": ({S: job(operation="upsert"), CARS: VEHICLES}, S, 7, None, "spec.operation: must be one of create, update, delete"),
    "namespace": ({S: job(extra="  namespace: zuora\n"), CARS: VEHICLES}, S, 9, None, "spec.namespace: must be one of default, com_zuora"),
    "object-name": ({S: job().replace("object: vehicle", "object: my vehicle"), CARS: VEHICLES}, S, 6, None,
                    "spec.object: must be letters, digits and '_' only"),
    "three-conditions": ({S: job(operation="delete", file=None, extra="  filter:\n    conditions:\n" + "      - {field: a, operator: EQ, value: 1}\n" * 3)},
                         S, 9, None, "spec.filter.conditions: must have at most 2 items (got 3)"),
    "no-conditions": ({S: job(operation="delete", file=None, extra="  filter: {conditions: []}\n")}, S, 8, None,
                      "must have at least 1 item (got 0)"),
    "condition-operator": ({S: job(operation="delete", file=None, extra="  filter:\n    conditions:\n      - {field: year__c, operator: NE, value: 1}\n")},
                           S, 10, None, "spec.filter.conditions[0].operator: must be one of EQ, GT, LT, GE, LE (got 'NE')"),
    "condition-value": ({S: job(operation="delete", file=None, extra="  filter:\n    conditions:\n      - {field: year__c, operator: EQ, value: [1]}\n")},
                        S, 10, None, "spec.filter.conditions[0].value: must be a string or a number or true or false"),
    "condition-missing-value": ({S: job(operation="delete", file=None, extra="  filter:\n    conditions:\n      - {field: year__c, operator: EQ}\n")},
                                S, 10, None, "spec.filter.conditions[0].value: required field is missing"),
    # --- rules per kind
    "create-without-file": ({S: job(file=None)}, S, 5, None, "spec.file: required for operation create"),
    "delete-with-file": ({S: job(operation="delete", extra="  allowDeleteAll: true\n"), CARS: VEHICLES}, S, 8, None,
                         "spec.file: not allowed for operation delete"),
    "delete-everything": ({S: job(operation="delete", file=None)}, S, 7, None,
                          "a delete without a filter deletes every 'vehicle' record"),
    "filter-on-update": ({S: job(operation="update", file="../data/cars.csv", extra="  filter: {conditions: [{field: a, operator: EQ, value: 1}]}\n"),
                          CARS: f"Id,make__c\n{UUID},Ford\n"}, S, 9, None, "spec.filter: only allowed for operation delete"),
    "mass-file-extension": ({S: mass(file="../data/fx.txt"), "data/fx.txt": FX_OK}, S, 7, None,
                            "spec.file: must be a .csv file, or a .zip holding one .csv"),
    # --- data files
    "file-not-found": ({S: mass(file="../data/missing.csv")}, S, 7, None, "file not found: data/missing.csv"),
    "file-outside-repo": ({S: mass(file="../../outside.csv")}, S, 7, None, "points outside the repository"),
    "file-absolute": ({S: mass(file="/etc/hosts.csv")}, S, 7, None, "must be a path relative to the spec file"),
    "file-is-directory": ({S: mass(file="../data/dir.csv"), "data/dir.csv/x": "x"}, S, 7, None, "not a regular file: data/dir.csv"),
    "file-link-outside": ({S: mass(), CSV: Link("/etc/hostname")}, S, 7, None, "data/fx.csv is a link pointing outside"),
    # --- names and dependencies
    "duplicate-name": ({S: mass(), "specs/t.yaml": mass(), **LOCAL}, "specs/t.yaml", 4, None,
                       "duplicate name 'fx', also used at specs/s.yaml:4"),
    "depends-unknown": ({S: mass(extra="  dependsOn: [fx2]\n") + "---\n" + mass(name="fx-1"), **LOCAL}, S, 8, None,
                        "spec.dependsOn[0]: no spec is named 'fx2'; did you mean"),
    "depends-self": ({S: mass(extra="  dependsOn: [fx]\n"), **LOCAL}, S, 8, None, "a spec cannot depend on itself"),
    "depends-cycle": ({S: mass(name="a", extra="  dependsOn: [b]\n") + "---\n" + mass(name="b", extra="  dependsOn: [a]\n"), **LOCAL},
                      S, 8, None, "spec.dependsOn: dependency cycle: a -> b -> a"),
    # --- Mass Updater files
    "missing-column": ({S: mass(), CSV: "Provider Exchange Rate Date,Currency (From),Currency (To)\n2026-11-01,USD,EUR\n"},
                       CSV, None, 1, "Exchange Rate: required column is missing"),
    "column-case": ({S: mass(), CSV: FX.replace("Exchange Rate\n", "exchange rate\n") + "2026-11-01,USD,EUR,1\n"},
                    CSV, None, 1, "did you mean 'exchange rate'?"),
    "bad-month": ({S: mass(), CSV: FX + "2026-13-01,USD,EUR,0.92\n"}, CSV, None, 2,
                  "Provider Exchange Rate Date: must be a date written YYYY-MM-DD (got '2026-13-01')"),
    "not-a-real-day": ({S: mass(), CSV: FX + "2026-11-01,USD,EUR,0.9\n2026-02-30,USD,EUR,0.92\n"}, CSV, None, 3,
                       "must be a date written YYYY-MM-DD (got '2026-02-30')"),
    "us-date": ({S: mass(), CSV: FX + "11/01/2026,USD,EUR,0.92\n"}, CSV, None, 2, "YYYY-MM-DD (got '11/01/2026')"),
    "thousands-separator": ({S: mass(), CSV: FX + '2026-11-01,USD,EUR,"100,000.50"\n'}, CSV, None, 2,
                            "Exchange Rate: must be a positive plain decimal"),
    "accounting-amount": ({S: mass(), CSV: FX + "2026-11-01,USD,EUR,($100)\n"}, CSV, None, 2, "got '($100)'"),
    "exponent": ({S: mass(), CSV: FX + "2026-11-01,USD,EUR,1e5\n"}, CSV, None, 2, "plain decimal such as 1234.56"),
    "zero-rate": ({S: mass(), CSV: FX + "2026-11-01,USD,EUR,0.000\n"}, CSV, None, 2, "positive plain decimal"),
    "currency": ({S: mass(), CSV: FX + "2026-11-01,US,EUR,0.92\n"}, CSV, None, 2,
                 "Currency (From): must be a 3-letter currency code such as USD (got 'US')"),
    "same-currency": ({S: mass(), CSV: FX + "2026-11-01,EUR,EUR,1\n"}, CSV, None, 2, "is the same currency as Currency (From)"),
    "empty-required": ({S: mass(), CSV: FX + "2026-11-01,USD,EUR,\n"}, CSV, None, 2, "Exchange Rate: required value is empty"),
    "duplicate-header": ({S: mass(), CSV: FX.strip() + ",Currency (To)\n2026-11-01,USD,EUR,1,GBP\n"}, CSV, None, 1,
                         "Currency (To): duplicate column (also column 3)"),
    "field-count": ({S: mass(), CSV: FX + "2026-11-01,USD,EUR\n"}, CSV, None, 2, "has 3 fields, the header has 4"),
    "empty-csv": ({S: mass(), CSV: ""}, CSV, None, 1, "the file is empty"),
    "header-only": ({S: mass(), CSV: FX}, CSV, None, None, "no data rows"),
    "csv-not-utf8": ({S: mass(), CSV: FX.encode() + "2026-11-01,USD,EUR,0.92,café\n".encode("latin-1")}, CSV, None, None,
                     "not UTF-8 (invalid byte 0xe9 on line 2)"),
    "bad-quoting": ({S: mass(), CSV: FX + '2026-11-01,"USD"X,EUR,1\n'}, CSV, None, None, "malformed CSV near line 2"),
    "group-id-length": ({S: mass(), CSV: FX.strip() + ",Group ID\n2026-11-01,USD,EUR,1," + "g" * 256 + "\n"}, CSV, None, 2,
                        "Group ID: is 256 characters long; at most 255 are allowed"),
    "object-type": ({S: mass(action="UpdateAccountingCode"), CSV: "Object Key,Object Type\nINV-1,Invoice Line\n"}, CSV, None, 2,
                    "Object Type: must be one of Credit Balance Adjustment"),
    "revenue-keys": ({S: mass(action="CreateRevenueSchedule"), CSV: "Group ID,Notes\ng,x\n"}, CSV, None, 1,
                     "needs a 'Subscription Charge Key' or a 'Linked Transaction Key' column"),
    "linked-type": ({S: mass(action="CreateRevenueSchedule"), CSV: "Linked Transaction Key,Linked Transaction Type\nK-1,Invoice\n"},
                    CSV, None, 2, "Linked Transaction Type: must be one of Invoice Item"),
    "rs-number-length": ({S: mass(action="DeleteRevenueSchedule"), CSV: "Revenue Schedule Number\n" + "R" * 51 + "\n"}, CSV, None, 2,
                         "at most 50 are allowed"),
    "payment-type": ({S: mass(action="MPU"), CSV: "Payment Amount,Currency,Payment Date,Payment Method ID,Payment Type\n10.00,USD,2026-11-01,PM1,Cash\n"},
                     CSV, None, 2, "Payment Type: must be one of External, Electronic (got 'Cash')"),
    "payment-invoice": ({S: mass(action="MPU"), CSV: "Payment Amount,Currency,Payment Date,Payment Method ID,Billing Account ID,Payment Invoice\n10,USD,2026-11-01,PM1,A1,INV1=10\n"},
                        CSV, None, 2, "must be written InvoiceID1:amount|InvoiceID2:amount"),
    "zip-two-files": ({S: mass(file="../data/fx.zip"), "data/fx.zip": zipped(a_csv=FX_OK, b_csv=FX_OK)}, "data/fx.zip", None, None,
                      "a zip must hold exactly one .csv file (it holds a.csv, b.csv)"),
    "zip-bad-row": ({S: mass(file="../data/fx.zip"), "data/fx.zip": zipped(fx_csv=FX + "2026-11-01,USD,EUR,-1\n")}, "data/fx.zip", None, 2,
                    "Exchange Rate: must be a positive plain decimal"),
    "zip-fake": ({S: mass(file="../data/fx.zip"), "data/fx.zip": FX_OK}, "data/fx.zip", None, None, "is named .zip but is not a zip archive"),
    "mass-too-big": ({S: mass(), CSV: Sparse(4 * 1024 * 1024 + 1)}, CSV, None, None, "Mass Updater files may be at most 4 MB"),
    # --- custom object files
    "update-without-id": ({S: job(operation="update"), CARS: VEHICLES}, CARS, None, 1, "an update file needs an Id column"),
    "create-with-id": ({S: job(), CARS: f"id,make__c\n{UUID},Ford\n"}, CARS, None, 1, "id: not allowed in a create file"),
    "system-field": ({S: job(), CARS: "make__c,CreatedDate\nFord,2020-01-01\n"}, CARS, None, 1, "CreatedDate: is a system field"),
    "id-not-uuid": ({S: job(operation="update"), CARS: f"Id,make__c\n{UUID},Ford\n42,Opel\n"}, CARS, None, 3,
                    "Id: must be a record id, a 36-character UUID (got '42')"),
    "object-zip": ({S: job(), CARS: zipped(cars_csv=VEHICLES)}, CARS, None, None, "custom object jobs take a plain UTF-8 CSV"),
    "object-too-big": ({S: job(), CARS: Sparse(15 * 1024 * 1024 + 1)}, CARS, None, None, "custom object files may be at most 15 MB"),
}


def settings_for(root: Path):
    return load_settings(chdir=str(root), env={})


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_each_bad_input_gives_its_problem(case, tmp_path):
    files, file, line, row, fragment = CASES[case]
    write_repo(tmp_path, files)
    check = check_repo(settings_for(tmp_path))
    assert check.desired is None
    problems = check.problems
    matches = [p for p in problems if p.file == file and p.line == line and p.row == row and fragment in p.render()]
    assert matches, "\n".join(p.render() for p in problems)


def test_the_table_is_big_enough():
    assert len(CASES) >= 40


def test_every_problem_in_a_repo_is_reported_at_once(tmp_path):
    write_repo(tmp_path, {
        "specs/a.yaml": mass(name="fx", extra="  dependsOn: [cars, ghost]\n  revison: 2\n"),
        "specs/b.yaml": job(name="cars", operation="update") + "---\n" + job(name="purge", operation="delete", file=None),
        "specs/c.yml": mass(name="fx", action="MPU", file="../data/pay.csv"),
        "specs/d.yaml": "apiVersion: reconciler/v1\nkind: [\n",
        CSV: FX + "2026-11-31,USD,EUR,1\n2026-11-01,USD,EUR,1,extra\n",
        CARS: VEHICLES,
        "data/pay.csv": "Payment Amount,Currency,Payment Date\n1,USD,2026-01-01\n",
    })
    out = io.StringIO()
    code = validate(settings_for(tmp_path), out, paths=(), as_json=False)
    lines = out.getvalue().splitlines()
    expected = [
        "data/cars.csv: row 1: Id: an update file needs an Id column",
        "data/fx.csv: row 2: Provider Exchange Rate Date: must be a date written YYYY-MM-DD (got '2026-11-31')",
        "data/fx.csv: row 3: has 5 fields, the header has 4",
        "data/pay.csv: row 1: Payment Method ID: required column is missing",
        "specs/a.yaml:4: metadata.name: duplicate name 'fx', also used at specs/c.yml:4",
        "specs/a.yaml:8: spec.dependsOn[1]: no spec is named 'ghost'",
        "specs/a.yaml:9: spec.revison: unknown field 'revison'; did you mean 'revision'?",
        "specs/b.yaml:16: spec.operation: a delete without a filter deletes every 'vehicle' record",
        "specs/c.yml:4: metadata.name: duplicate name 'fx', also used at specs/a.yaml:4",
        "specs/d.yaml:3: invalid YAML",
    ]
    for fragment in expected:
        assert any(line.startswith(fragment) for line in lines), f"{fragment!r} not in:\n{out.getvalue()}"
    problems = lines[:-1]
    assert len(problems) == 10
    assert lines[-1] == "10 problems in 7 files"
    assert code == 1


def test_a_valid_repo_says_how_many_specs(tmp_path):
    write_repo(tmp_path, {S: mass() + "---\n" + job(), "specs/more/t.yml": mass(name="fx2", file="../../data/fx.csv"), CSV: FX_OK, CARS: VEHICLES})
    out = io.StringIO()
    assert validate(settings_for(tmp_path), out, paths=(), as_json=False) == 0
    assert out.getvalue() == "3 specs valid\n"


def test_json_output_lists_problems_with_their_place(tmp_path):
    write_repo(tmp_path, {S: mass(extra="  revision: 0\n"), CSV: FX + "2026-11-01,USD,EUR,x\n"})
    out = io.StringIO()
    assert validate(settings_for(tmp_path), out, paths=(), as_json=True) == 1
    document = json.loads(out.getvalue())
    assert document["valid"] is False and document["specs"] == 1
    assert document["problems"] == [
        {"file": CSV, "line": None, "path": "Exchange Rate", "row": 2,
         "message": "must be a positive plain decimal such as 1234.56, without thousands separators (got 'x')"},
        {"file": S, "line": 8, "path": "spec.revision", "row": None, "message": "must be at least 1 (got 0)"},
    ]


def test_json_output_of_a_valid_repo(tmp_path):
    write_repo(tmp_path, {S: mass(), CSV: FX_OK})
    out = io.StringIO()
    assert validate(settings_for(tmp_path), out, paths=(), as_json=True) == 0
    assert json.loads(out.getvalue()) == {"valid": True, "specs": 1, "problems": []}


def test_paths_limit_the_report_but_not_the_names_it_resolves(tmp_path):
    write_repo(tmp_path, {
        "specs/good/a.yaml": mass(name="a", file="../../data/fx.csv", extra="  dependsOn: [b]\n"),
        "specs/bad/b.yaml": mass(name="b", file="../../data/fx.csv", extra="  revision: 0\n"),
        CSV: FX_OK,
    })
    out = io.StringIO()
    assert validate(settings_for(tmp_path), out, paths=("specs/good",), as_json=False) == 0
    assert out.getvalue() == "1 spec valid\n"
    out = io.StringIO()
    assert validate(settings_for(tmp_path), out, paths=("specs/bad/b.yaml", "specs/nope.yaml"), as_json=False) == 1
    assert out.getvalue().splitlines() == [
        "specs/bad/b.yaml:8: spec.revision: must be at least 1 (got 0)",
        "specs/nope.yaml: no such file or directory",
        "2 problems in 2 files",
    ]


def test_paths_outside_the_specs_directory_are_problems(tmp_path):
    write_repo(tmp_path, {S: mass(), CSV: FX_OK})
    settings = load_settings(chdir=str(tmp_path / "data"), env={})
    out = io.StringIO()
    assert validate(settings, out, paths=("fx.csv", "../specs/s.yaml"), as_json=False) == 1
    assert out.getvalue().splitlines()[0] == "fx.csv: not inside the specs directory specs/"


def test_a_data_file_shared_by_two_specs_is_reported_once(tmp_path):
    write_repo(tmp_path, {S: mass(name="a") + "---\n" + mass(name="b"), CSV: FX + "bad,USD,EUR,1\n"})
    problems = check_repo(settings_for(tmp_path)).problems
    assert [p.render() for p in problems] == [
        "data/fx.csv: row 2: Provider Exchange Rate Date: must be a date written YYYY-MM-DD (got 'bad')"]


def test_schema_command_prints_the_packaged_schema():
    out = io.StringIO()
    assert schema(out) == 0
    document = json.loads(out.getvalue())
    assert document["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert set(document["properties"]) == {"apiVersion", "kind", "metadata", "spec"}


def test_the_command_line_exits_1_and_lists_problems(tmp_path):
    write_repo(tmp_path, {S: mass(action="Nope"), CSV: FX_OK})
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZUORA_")}
    proc = subprocess.run([sys.executable, "-m", "reconciler", "validate"], cwd=tmp_path, capture_output=True,
                          text=True, env=env)
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout.splitlines() == [
        "specs/s.yaml:6: spec.actionType: must be one of UpdateAccountingCode, CreateRevenueSchedule, "
        "UpdateRevenueSchedule, DeleteRevenueSchedule, ImportFXRate, MPU (got 'Nope')",
        "1 problem in 1 file",
    ]
    proc = subprocess.run([sys.executable, "-m", "reconciler", "-C", str(tmp_path / "specs"), "validate", "--json"],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 1 and json.loads(proc.stdout)["valid"] is False
