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
        import psycopg

        with psycopg.connect(pg_url) as conn:  # nor does the ledger itself hold it, in any table
            conn.execute(f'SET search_path = "{settings_of(repo).env_key}"')
            for table in ("meta", "runs", "jobs", "events", "locks"):
                dump = repr(conn.execute(f"SELECT * FROM {table}").fetchall())
                assert SECRET_PASSWORD not in dump and (table == "locks" or dump != "[]")
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


def test_two_clones_with_sigkills_end_with_one_job_per_spec_that_both_see(tmp_path, pg_url):
    """Two clones, no shared files, one ledger: applies started side by side, each killed once it has
    written a few events of its own, then both converge; every spec was submitted exactly once."""
    import random
    import signal

    from apply_support import converge, event_count, wait_until

    with served_sandbox() as url:
        ledger = pg_url + SCHEMA_OPTION
        clones = [on_postgres(make_repo(tmp_path / f"clone-{i}", url, mass=("fx-a", "fx-b", "fx-c")), ledger)
                  for i in range(2)]
        rng, killed = random.Random(20261204), 0
        for _ in range(3):
            target = event_count(clones[0]) + rng.randint(1, 8)
            procs = [start_cli(clone, "apply", "--auto-approve", "--lock-timeout", "60") for clone in clones]
            wait_until(lambda: all(p.poll() is not None for p in procs) or event_count(clones[0]) >= target,
                       timeout=90, message="neither apply wrote its events nor ended")
            victim = rng.choice(procs)
            if victim.poll() is None:
                victim.kill()
            for p in procs:
                p.communicate(timeout=120)
            killed += victim.returncode == -signal.SIGKILL
        assert killed >= 1, "no run was killed mid-way: the kills did not test anything"
        for clone in clones:
            converge(clone)
        names = ("fx-a", "fx-b", "fx-c", "load-cars", "purge-cars")
        assert_exactly_once(clones[0], url, names)
        seen = [[(j.name, j.remote_id) for j in settings_ledger_jobs(clone)] for clone in clones]
        assert seen[0] == seen[1] and len({name for name, _ in seen[0]}) == len(names)
        for clone in clones:
            assert cli(clone, "audit", "verify").returncode == 0


def test_a_server_that_goes_away_mid_apply_exits_1_and_the_next_apply_converges(tmp_path, pg_url, pg_server):
    import psycopg

    from apply_support import converge, event_count, wait_until

    with served_sandbox() as url:
        admin(url, "faults", {"latency_ms": 200})
        repo = on_postgres(make_repo(tmp_path, url), pg_url + SCHEMA_OPTION)
        proc = start_cli(repo, "apply", "--auto-approve")
        wait_until(lambda: proc.poll() is not None or event_count(repo) >= 2, timeout=60,
                   message="apply never started writing")
        with psycopg.connect(pg_server, autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'reconciler' "
                         "AND datname = %s", (pg_url.rsplit("/", 1)[1],))
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 1, out + err
        assert "lost the connection to the PostgreSQL ledger" in err and "Traceback" not in err, err
        admin(url, "faults", {"latency_ms": 0})
        converge(repo)
        assert_exactly_once(repo, url, ALL)
        assert cli(repo, "audit", "verify").returncode == 0


def test_lock_status_and_release_on_postgres_show_no_password(tmp_path, pg_url):
    from reconciler.engine.run import binding
    from reconciler.ledger.postgres import PgLedger
    from reconciler.ledger.store import Actor

    with served_sandbox() as url:
        repo = on_postgres(make_repo(tmp_path, url), secret_url(pg_url))
        settings = settings_of(repo)
        with PgLedger.open_write(settings.ledger_url, binding(settings)) as led:
            lock_id = led.acquire_lock(Actor("ci-bot", "runner-7", 4242, None, "https://ci.example/runs/9"))
        status = cli(repo, "lock", "status")
        assert status.returncode == 0 and "ci-bot@runner-7" in status.stdout and lock_id in status.stdout
        refused = cli(repo, "apply", "--auto-approve")
        assert refused.returncode == 1 and "ci-bot@runner-7" in refused.stderr
        released = cli(repo, "lock", "release", lock_id, "--force")
        assert released.returncode == 0, released.stdout + released.stderr
        assert "not locked" in cli(repo, "lock", "status").stdout
        no_password_anywhere(repo, status.stdout, status.stderr, refused.stdout, refused.stderr, released.stdout,
                             released.stderr)
        assert remote_jobs(url) == []


def test_a_select_only_role_can_read_but_not_write(tmp_path, pg_url):
    import psycopg

    with served_sandbox() as url:
        repo = on_postgres(make_repo(tmp_path, url), pg_url + SCHEMA_OPTION)
        assert cli(repo, "apply", "--auto-approve").returncode == 0
        schema_name = settings_of(repo).env_key
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute("CREATE ROLE reader LOGIN")
            conn.execute(f'GRANT USAGE ON SCHEMA "{schema_name}" TO reader')
            conn.execute(f'GRANT SELECT ON ALL TABLES IN SCHEMA "{schema_name}" TO reader')
        reader = {"RECONCILER_LEDGER": with_database(pg_url, pg_url.rsplit("/", 1)[1], user="reader") + SCHEMA_OPTION}
        for args in (("status",), ("history",), ("plan", "--no-refresh"), ("audit", "verify"), ("lock", "status")):
            proc = cli(repo, *args, env=reader)
            assert proc.returncode == 0, (args, proc.stdout + proc.stderr)
        denied = cli(repo, "apply", "--auto-approve", env=reader)
        assert denied.returncode == 1 and "permission denied" in denied.stderr and "Traceback" not in denied.stderr


def test_without_psycopg_a_postgres_ledger_names_the_extra_to_install(tmp_path):
    repo = make_repo(tmp_path, "http://127.0.0.1:9")
    code = (
        "import sys, importlib.abc\n"
        "class Hide(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.partition('.')[0] == 'psycopg': raise ModuleNotFoundError(name, name=name)\n"
        "sys.meta_path.insert(0, Hide())\n"
        "from reconciler.cli import main\n"
        "main(['-C', sys.argv[1], 'status'])\n"
    )
    proc = subprocess.run([os.sys.executable, "-c", code, str(repo)], capture_output=True, text=True,
                          env={**os.environ, "RECONCILER_LEDGER": "postgresql://u:hunter2@127.0.0.1:1/x"})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "zuora-reconciler[postgres]" in proc.stderr and "Traceback" not in proc.stderr
    assert "hunter2" not in proc.stderr
