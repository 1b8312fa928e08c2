"""The PostgreSQL ledger through the command line: configuration, real applies on the served sandbox,
reads that create nothing, several runners on one ledger, and bad input that says what to fix."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from apply_support import admin, assert_exactly_once, cli, make_repo, remote_jobs, served_sandbox, settings_of, start_cli
from pg_support import SECRET_PASSWORD, SECRET_ROLE, objects, with_database
from reconciler.engine.config import load_settings
from reconciler.errors import ConfigError

ALL = ("fx-a", "fx-b", "load-cars", "purge-cars")
SCHEMA_OPTION = "?options=-csearch_path%3D{environment}"


def secret_url(pg_url: str) -> str:
    """The test database as the password-protected role, {environment} as the schema."""
    return with_database(pg_url, pg_url.rsplit("/", 1)[1], user=SECRET_ROLE, password=SECRET_PASSWORD) + SCHEMA_OPTION


def on_postgres(repo: Path, url: str) -> Path:
    config = repo / "reconciler.yaml"
    config.write_text(config.read_text() + f"ledger: {url}\n")
    return repo


def no_password_anywhere(repo: Path, *outputs: str) -> None:
    for text in outputs:
        assert SECRET_PASSWORD not in text
    for path in repo.rglob("*"):
        assert "postgresql:" not in path.name and "postgres:" not in path.name, path
        if path.is_file() and path.name != "reconciler.yaml":
            assert SECRET_PASSWORD.encode() not in path.read_bytes(), path


# --- configuration --------------------------------------------------------------------------------


def test_a_url_in_ledger_is_a_database_not_a_path(tmp_path, pg_url):
    repo = on_postgres(make_repo(tmp_path, "http://127.0.0.1:9"), secret_url(pg_url))
    settings = load_settings(chdir=str(repo))
    assert settings.ledger_path is None
    assert settings.ledger_url.url.endswith("search_path%3D127-0-0-1-9") and SECRET_PASSWORD in settings.ledger_url.url
    assert SECRET_PASSWORD not in repr(settings) and SECRET_PASSWORD not in settings.ledger_url.display
    assert f"{SECRET_ROLE}:***@" in settings.ledger_url.display


def test_reconciler_ledger_overrides_the_configured_ledger(tmp_path, pg_url):
    repo = make_repo(tmp_path, "http://127.0.0.1:9")
    settings = load_settings(chdir=str(repo), env={"RECONCILER_LEDGER": pg_url + SCHEMA_OPTION})
    assert settings.ledger_path is None and settings.ledger_url.source == "RECONCILER_LEDGER"
    back = load_settings(chdir=str(repo), env={"RECONCILER_LEDGER": "elsewhere/{environment}.db"})
    assert back.ledger_url is None and back.ledger_path == repo / "elsewhere" / "127-0-0-1-9.db"


@pytest.mark.parametrize("value, says", [
    ("mysql://u:hunter2@db/x", "neither a file path nor a postgresql:// URL"),
    ("postgresql://u:hunter2@db:port/x", "not a valid PostgreSQL URL"),
    ("postgresql://u:hunter2@db/x#frag", "no #fragment"),
])
def test_a_bad_ledger_url_is_refused_naming_the_setting_not_the_password(tmp_path, value, says):
    repo = make_repo(tmp_path, "http://127.0.0.1:9")
    with pytest.raises(ConfigError) as caught:
        load_settings(chdir=str(repo), env={"RECONCILER_LEDGER": value})
    assert says in str(caught.value) and "RECONCILER_LEDGER" in str(caught.value)
    assert "hunter2" not in str(caught.value)
    proc = cli(repo, "status", env={"RECONCILER_LEDGER": value})
    assert proc.returncode == 1 and says in proc.stderr and "hunter2" not in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr


# --- commands on a real server --------------------------------------------------------------------


def test_apply_status_history_and_audit_on_postgres_and_reads_create_nothing(tmp_path, pg_url):
    with served_sandbox() as url:
        repo = on_postgres(make_repo(tmp_path, url), secret_url(pg_url))
        outputs = []
        for args in (("plan", "--no-refresh"), ("status",), ("history",), ("validate",), ("lock", "status")):
            proc = cli(repo, *args)
            assert proc.returncode == 0, proc.stdout + proc.stderr
            outputs += [proc.stdout, proc.stderr]
        assert objects(pg_url) == []  # not even the schema
        applied = cli(repo, "apply", "--auto-approve", "--wait", "--timeout", "60")
        assert applied.returncode == 0, applied.stdout + applied.stderr
        assert "Apply complete: 4 submitted" in applied.stdout
        assert_exactly_once(repo, url, ALL)
        before = objects(pg_url)
        for args in (("plan", "--no-refresh", "--markdown"), ("plan", "--no-refresh", "--out", "saved.json"),
                     ("status",), ("history",), ("audit", "verify"), ("lock", "status"), ("ledger", "checkpoint")):
            proc = cli(repo, *args)
            assert proc.returncode == 0, proc.stdout + proc.stderr
            outputs += [proc.stdout, proc.stderr]
        assert objects(pg_url) == before
        assert any(o.startswith("OK: ") for o in outputs)  # audit verify
        assert any(f"{SECRET_ROLE}:***@" in o for o in outputs)  # audit verify names the ledger, redacted
        no_password_anywhere(repo, applied.stdout, applied.stderr, *outputs)
        again = cli(repo, "apply", "--auto-approve")
        assert again.returncode == 0 and "No changes." in again.stdout, again.stdout + again.stderr


def test_two_clones_on_one_ledger_never_both_submit_a_spec(tmp_path, pg_url):
    with served_sandbox() as url:
        admin(url, "faults", {"latency_ms": 50})  # each run holds the lock a while
        ledger = pg_url + SCHEMA_OPTION
        clones = [on_postgres(make_repo(tmp_path / f"clone-{i}", url), ledger) for i in range(2)]
        procs = [start_cli(clone, "apply", "--auto-approve", "--lock-timeout", "120")
                 for clone in clones for _ in range(2)]
        outputs = [p.communicate(timeout=240) for p in procs]
        assert [p.returncode for p in procs] == [0] * 4, outputs
        assert sum("Apply complete: 4 submitted" in out for out, _ in outputs) == 1
        assert_exactly_once(clones[0], url, ALL)
        assert len(remote_jobs(url)) == 4
        for clone in clones:
            assert not (clone / "state").exists() or not list((clone / "state").rglob("ledger.db"))
            assert [j.remote_id for j in settings_ledger_jobs(clone)] == [j.remote_id for j in settings_ledger_jobs(clones[0])]


def settings_ledger_jobs(repo: Path) -> list:
    from reconciler.engine.run import read_ledger

    with read_ledger(settings_of(repo)) as led:
        return led.jobs()


def test_an_unreachable_server_and_a_wrong_password_exit_1_naming_the_setting(tmp_path, pg_url):
    repo = make_repo(tmp_path, "http://127.0.0.1:9")
    for value, says in (("postgresql://nobody:hunter2@127.0.0.1:1/x", "cannot connect to the PostgreSQL ledger"),
                        (secret_url(pg_url).replace(SECRET_PASSWORD, "hunter2"), "password authentication failed")):
        for args in (("status",), ("apply", "--auto-approve")):
            proc = cli(repo, *args, env={"RECONCILER_LEDGER": value})
            assert proc.returncode == 1, proc.stdout + proc.stderr
            assert says in proc.stderr and "RECONCILER_LEDGER" in proc.stderr
            assert "hunter2" not in proc.stdout + proc.stderr and "Traceback" not in proc.stderr
    assert not list(repo.rglob("postgresql*"))


def test_psycopg_is_needed_only_for_a_postgres_ledger(tmp_path):
    repo = make_repo(tmp_path, "http://127.0.0.1:9")
    code = ("import sys; from reconciler.cli import main\n"
            "try: main(['-C', sys.argv[1], 'status'])\nexcept SystemExit: pass\n"
            "assert 'psycopg' not in sys.modules\n")
    subprocess.run([os.sys.executable, "-c", code, str(repo)], check=True, capture_output=True)
