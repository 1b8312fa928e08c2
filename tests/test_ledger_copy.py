"""`reconciler ledger copy SRC DST` between SQLite and PostgreSQL: the same ledger, chain unbroken, on real stores."""

from __future__ import annotations

import re

import psycopg

from apply_support import MASS_SPEC, assert_exactly_once, cli, fx_csv, make_repo, served_sandbox, settings_of, write_spec
from pg_support import objects

ALL = ("fx-a", "fx-b", "load-cars", "purge-cars")
SCHEMA = "?options=-csearch_path%3D{environment}"


def head_of(proc) -> str:
    found = re.search(r"head ([0-9a-f]{64}:\d+)", proc.stdout)
    assert found, proc.stdout + proc.stderr
    return found.group(1)


def test_a_copy_to_postgres_and_back_is_the_same_ledger(tmp_path, pg_url):
    with served_sandbox() as url:
        repo = make_repo(tmp_path / "repo", url)
        applied = cli(repo, "apply", "--auto-approve", "--wait", "--timeout", "60")
        assert applied.returncode == 0, applied.stdout + applied.stderr
        on_file = cli(repo, "audit", "verify")
        assert on_file.returncode == 0
        saved = cli(repo, "plan", "--out", "saved.json")
        assert saved.returncode == 0, saved.stderr

        # A result that is not what the ledger recorded would be laundered by a copy: refused, nothing made.
        result = next(settings_of(repo).results_dir.rglob("*.csv.zip"))
        kept = result.read_bytes()
        result.write_bytes(kept + b"x")
        refused = cli(repo, "ledger", "copy", "state/{environment}/ledger.db", pg_url + SCHEMA)
        assert refused.returncode == 1 and "is changed" in refused.stderr and "Nothing was copied" in refused.stderr
        assert objects(pg_url) == []
        result.write_bytes(kept)

        copied = cli(repo, "ledger", "copy", "state/{environment}/ledger.db", pg_url + SCHEMA)
        assert copied.returncode == 0, copied.stdout + copied.stderr
        assert "4 jobs" in copied.stdout and "the copy verifies" in copied.stdout
        # four results, and the file load-cars (a custom object create: new-rows) sent
        assert "5 result and sent files" in copied.stdout
        on_server = {"RECONCILER_LEDGER": pg_url + SCHEMA}
        verified = cli(repo, "audit", "verify", "--head", head_of(on_file), env=on_server)
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert head_of(verified) == head_of(on_file)
        exported = [cli(repo, "audit", "export", "--format", "jsonl", *env, env=e).stdout
                    for env, e in (((), None), ((), on_server))]
        assert exported[0] == exported[1] and exported[0]
        # the same lineage and serial: the plan saved against the file applies against the copy
        assert cli(repo, "apply", "saved.json", "--auto-approve", env=on_server).returncode == 0

        again = cli(repo, "ledger", "copy", "state/{environment}/ledger.db", pg_url + SCHEMA)
        assert again.returncode == 1 and "already holds a ledger" in again.stderr

        # new work on the copy gets ids after the copied ones
        (repo / "data" / "fx-c.csv").write_text(fx_csv(7))
        write_spec(repo, "fx-c", MASS_SPEC)
        more = cli(repo, "apply", "--auto-approve", "--wait", "--timeout", "60", env=on_server)
        assert more.returncode == 0, more.stdout + more.stderr
        assert_exactly_once_on(repo, url, on_server)

        back = cli(repo, "ledger", "copy", pg_url + SCHEMA, "back.db", env=on_server)
        assert back.returncode == 0, back.stdout + back.stderr
        from_server = cli(repo, "audit", "verify", env=on_server)
        from_back = cli(repo, "audit", "verify", env={"RECONCILER_LEDGER": str(repo / "back.db")})
        assert from_back.returncode == 0 and head_of(from_back) == head_of(from_server) != head_of(on_file)
        assert "No changes." in cli(repo, "plan", "--no-refresh", env={"RECONCILER_LEDGER": "back.db"}).stdout


def assert_exactly_once_on(repo, url, env) -> None:
    import os

    old = os.environ.get("RECONCILER_LEDGER")
    os.environ["RECONCILER_LEDGER"] = env["RECONCILER_LEDGER"]
    try:
        assert_exactly_once(repo, url, (*ALL, "fx-c"))
    finally:
        if old is None:
            del os.environ["RECONCILER_LEDGER"]


def test_copy_refuses_a_missing_source_another_environment_and_a_broken_chain(tmp_path, pg_url):
    with served_sandbox() as url:
        repo = make_repo(tmp_path / "repo", url, mass=("fx-a",), create=(), delete=())
        missing = cli(repo, "ledger", "copy", "nowhere.db", pg_url)
        assert missing.returncode == 1 and "no ledger at" in missing.stderr
        assert cli(repo, "apply", "--auto-approve").returncode == 0
        other = make_repo(tmp_path / "other", "http://127.0.0.1:9", mass=(), create=(), delete=())
        foreign = cli(other, "ledger", "copy", str(settings_of(repo).ledger_path), pg_url)
        assert foreign.returncode == 1 and "belongs to environment" in foreign.stderr, foreign.stderr
        copied = cli(repo, "ledger", "copy", "state/{environment}/ledger.db", pg_url)
        assert copied.returncode == 0, copied.stderr
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute("ALTER TABLE jobs DISABLE TRIGGER ALL")
            conn.execute("UPDATE jobs SET fingerprint = 'edited'")
        broken = cli(repo, "ledger", "copy", pg_url, "copy.db", env={"RECONCILER_LEDGER": pg_url})
        assert broken.returncode == 1 and "does not verify" in broken.stderr and "Nothing was copied" in broken.stderr
        assert not (repo / "copy.db").exists()
        assert ("relation", "meta") in objects(pg_url)
