"""What spec validation remembers between runs (spec.cache): the same verdicts warm as cold, never trusted
when the bytes, the rules or the paths changed, and never a reason for a command to fail."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.engine.config import load_settings
from reconciler.spec import cache as speccache
from reconciler.spec import load as spec
from test_spec import CARS, DOCUMENTS, FX, REPO, write_repo

CACHE = Path("state") / ".cache" / speccache.CACHE_FILE


def check(root: Path) -> spec.RepoCheck:
    return spec.check_repo(load_settings(chdir=str(root), env={}))


def cached(root: Path) -> dict:
    return json.loads((root / CACHE).read_text(encoding="utf-8"))


@pytest.fixture
def repo(tmp_path) -> Path:
    write_repo(tmp_path, REPO)
    (tmp_path / "state").mkdir()
    return tmp_path


def test_a_warm_run_gives_what_a_cold_run_gives_and_remembers_clean_files_only(repo):
    (repo / "specs" / "broken.yaml").write_text("apiVersion: reconciler/v1\nkind: MassAction\n"
                                                "metadata: {name: broken}\nspec: {actionType: Nope}\n")
    cold = check(repo)
    body = cached(repo)
    assert body["key"] == speccache.rules_key()
    assert sorted(body["specs"]) == ["specs/finance/fx.yaml", "specs/rs.yaml", "specs/vehicles.yml"]
    assert len(body["data"]) == 3  # fx.csv, cars.csv, rs.csv: the delete job has no file
    warm = check(repo)
    assert warm == cold and any("Nope" in p.message for p in warm.problems)

    (repo / "specs" / "broken.yaml").unlink()
    cold_state = check(repo).desired
    os.remove(repo / CACHE)
    assert cold_state == check(repo).desired == check(repo).desired  # warm, after a cold run that wrote it


def test_what_the_cache_holds_is_what_a_run_uses_and_only_under_the_same_rules(repo):
    check(repo)
    body = cached(repo)
    fx_key = next(k for k in body["data"] if "|ImportFXRate|" in k)
    body["data"][fx_key][0] = 999  # a planted row count
    (repo / CACHE).write_text(json.dumps(body), encoding="utf-8")
    facts = {s.name: s.file_facts for s in check(repo).desired.specs}
    assert facts["fx-rates-2026-11"].rows == 999

    body["key"] = "0" * 64  # written by other rules: not trusted, and rewritten under today's
    (repo / CACHE).write_text(json.dumps(body), encoding="utf-8")
    assert {s.name: s.file_facts for s in check(repo).desired.specs}["fx-rates-2026-11"].rows == 1
    assert cached(repo)["key"] == speccache.rules_key()


def test_changed_bytes_are_checked_again_with_lines_and_rows(repo):
    check(repo)
    fx_spec = repo / "specs" / "finance" / "fx.yaml"
    fx_spec.write_text(fx_spec.read_text().replace("revision: 2", "revision: two"))
    problems = check(repo).problems
    assert [(p.file, p.line, p.path) for p in problems] == [("specs/finance/fx.yaml", 10, "spec.revision")]
    fx_spec.write_text(fx_spec.read_text().replace("revision: two", "revision: 2"))
    assert check(repo).problems == ()

    (repo / "data" / "fx.csv").write_text(FX + "2026-11-02,USD,EUR,zero\n")
    problems = check(repo).problems
    assert len(problems) == 1 and (problems[0].file, problems[0].row) == ("data/fx.csv", 3)  # the file's line


def test_the_path_checks_run_on_every_run(repo, tmp_path_factory):
    check(repo)
    outside = tmp_path_factory.mktemp("outside") / "cars.csv"
    outside.write_text(CARS)  # the same bytes the cache knows, reached through a link leaving the repository
    (repo / "data" / "cars.csv").unlink()
    (repo / "data" / "cars.csv").symlink_to(outside)
    assert [p.message for p in check(repo).problems] == ["data/cars.csv is a link pointing outside the repository"]
    (repo / "data" / "cars.csv").unlink()
    assert [p.message for p in check(repo).problems] == ["file not found: data/cars.csv"]


def test_a_duplicate_name_across_cached_files_is_still_found_with_its_line(repo):
    check(repo)
    (repo / "specs" / "again.yaml").write_text(REPO["specs/rs.yaml"])
    problems = check(repo).problems
    assert {(p.file, p.line) for p in problems} == {("specs/rs.yaml", 3), ("specs/again.yaml", 3)}


@pytest.mark.parametrize("damage", [b"", b"{not json", b'{"key": 1}', b"\xff\xfe", b"[]",
                                    b'{"key": "KEY", "specs": 3, "data": {}}',
                                    b'{"key": "KEY", "specs": {"specs/rs.yaml": ["x", [[0, "a", {}]]]}, "data": {}}',
                                    b'{"key": "KEY", "specs": {}, "data": {"a|b": [1, 2, 3], "c": 1}}'])
def test_a_damaged_cache_is_ignored_and_replaced(repo, damage):
    expected = check(repo)
    (repo / CACHE).write_bytes(damage.replace(b"KEY", speccache.rules_key().encode()))
    assert check(repo) == expected
    assert cached(repo)["key"] == speccache.rules_key()


def test_a_planted_digest_of_the_wrong_shape_is_not_trusted(repo):
    expected = check(repo)
    body = cached(repo)
    for key in body["data"]:
        body["data"][key] = ["many", [], []]
    (repo / CACHE).write_text(json.dumps(body), encoding="utf-8")
    assert check(repo) == expected


def test_no_state_directory_means_no_cache_and_nothing_created(tmp_path):
    write_repo(tmp_path, REPO)
    assert check(tmp_path).problems == ()
    assert not (tmp_path / "state").exists()


def test_an_unwritable_cache_path_never_fails_a_command(repo):
    """A file where the cache directory would be (a read-only directory fails the same way, but not as root)."""
    (repo / "state" / ".cache").write_text("a file where the cache directory would be")
    proc = subprocess.run([sys.executable, "-m", "reconciler", "-C", str(repo), "validate", "--json"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert json.loads(proc.stdout)["specs"] == 4


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(documents=st.lists(DOCUMENTS, min_size=1, max_size=3))
def test_random_documents_are_judged_the_same_warm_and_cold(repo, documents):
    (repo / "specs" / "random.yaml").write_text(yaml.safe_dump_all(documents, allow_unicode=True))
    (repo / CACHE).unlink(missing_ok=True)
    cold = check(repo)
    assert check(repo) == cold
