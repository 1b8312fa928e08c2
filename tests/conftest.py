"""Shared fixtures. Every test runs with a temporary HOME and no Zuora credentials from the outside.

Fixtures used by more than one module live here; the helpers they are built from stay in
apply_support.py (the apply tests' served sandbox) and ops_fixtures.py (the operating commands' repos).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from apply_support import admin, sandbox_process
from pg_support import fresh_database, server
from ops_fixtures import applied, clean_environment, make_repo, settings_of
from reconciler.ledger.interface import Binding

REPO_ROOT = Path(__file__).resolve().parent.parent
LOCAL = Binding("local", "http://127.0.0.1:8080")  # the ledger binding of tests that open one directly


REPO_STATE = REPO_ROOT / "state"


def _state_snapshot() -> dict[str, tuple]:
    """Every entry under the repository's own state/ (state/local after a quick start, ...) with its type,
    size and mtime: a test that creates, deletes, writes or touches anything there changes it. Only
    state/.cache, where validating the repository's own specs keeps its verdicts, is left out."""
    if not REPO_STATE.exists():
        return {}
    entries = {}
    for path in sorted(REPO_STATE.rglob("*")):
        if path.relative_to(REPO_STATE).parts[0] == ".cache":
            continue
        info = path.lstat()
        kind = "dir" if path.is_dir() else "file"
        entries[path.relative_to(REPO_STATE).as_posix()] = (kind, None if kind == "dir" else info.st_size,
                                                            info.st_mtime_ns)
    return entries


# Taken when the session starts, whatever is there already (a quick start leaves state/local behind).
_state_before = _state_snapshot()


@pytest.fixture(autouse=True)
def isolated_environment(tmp_path_factory, monkeypatch):
    """Keep tests away from the real user's files, credentials and CI variables."""
    global _state_before
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    for var in list(os.environ):
        if var.startswith(("ZUORA_", "GITHUB_", "RECONCILER_", "PG")) or var in ("NO_COLOR", "CI"):
            monkeypatch.delenv(var, raising=False)
    yield
    after = _state_snapshot()
    if after != _state_before:
        changed = sorted(name for name in _state_before.keys() | after.keys()
                         if _state_before.get(name) != after.get(name))
        _state_before = after  # blame this test only, not every test after it
        pytest.fail(f"a test changed the repository's own state/ directory ({REPO_STATE}): {', '.join(changed)}",
                    pytrace=False)


# --- PostgreSQL: one real server per session, a database per test (pg_support.py) ------------------


@pytest.fixture(scope="session")
def pg_server():
    """The admin URL of a real PostgreSQL server: RECONCILER_TEST_POSTGRES_URL's, or a throwaway cluster."""
    with server() as url:
        yield url


@pytest.fixture
def pg_url(pg_server):
    """The URL of an empty database of this test's own."""
    return fresh_database(pg_server)


@pytest.fixture(params=["sqlite", "postgres"])
def both_stores(request, monkeypatch):
    """Run the test once on the SQLite ledger and once on a PostgreSQL one (RECONCILER_LEDGER, which the
    CLI's subprocesses inherit and settings_of reads), each environment in a schema of its own."""
    if request.param == "postgres":
        url = request.getfixturevalue("pg_url")
        monkeypatch.setenv("RECONCILER_LEDGER", url + "?options=-csearch_path%3D{environment}")
    return request.param


@pytest.fixture(params=["sqlite", "postgres"])
def opener(request, tmp_path):
    """open_write/open_read of either store, on a fresh ledger location bound to LOCAL by default."""
    from reconciler.ledger.postgres import PgLedger
    from reconciler.ledger.store import Ledger
    from reconciler.ledger.url import LedgerUrl

    if request.param == "sqlite":
        path = tmp_path / "ledger.db"
        return lambda write=True, binding=LOCAL: (Ledger.open_write(path, binding) if write
                                                  else Ledger.open_read(path, binding))
    url = LedgerUrl.from_setting(request.getfixturevalue("pg_url"), "RECONCILER_LEDGER")
    return lambda write=True, binding=LOCAL: (PgLedger.open_write(url, binding) if write
                                              else PgLedger.open_read(url, binding))


# --- the apply tests: one `reconciler sandbox serve` process per module -----------------------------


@pytest.fixture(scope="module")
def sandbox_url():
    """One fast `reconciler sandbox serve` process per test module (it outlives any apply a test kills)."""
    with sandbox_process("--pending-seconds", "0", "--rows-per-second", "1000") as url:
        yield url


@pytest.fixture(scope="module")
def sandbox_url_409():
    """The same, answering a repeated Idempotency-Key with 409 and the stored body (Zuora's other answer)."""
    with sandbox_process("--pending-seconds", "0", "--rows-per-second", "1000", "--replay-status", "409") as url:
        yield url


@pytest.fixture
def url(request):
    """The module's sandbox process, emptied before the test and with faults off after it.

    Parametrize it indirectly with the replay status (200, the default, or 409) to run a test in that mode;
    the 409 process starts only for a module that asks for it."""
    served = request.getfixturevalue("sandbox_url_409" if getattr(request, "param", 200) == 409 else "sandbox_url")
    admin(served, "reset", {})
    yield served
    admin(served, "faults", {})


# --- the operating commands' tests (status, show, errors, history, ...): real applied repos ---------


@pytest.fixture(scope="session")
def applied_template(tmp_path_factory):
    """One repo applied to the end, built once; tests get copies of it through `repo`."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        clean_environment(monkeypatch)
        monkeypatch.setenv("HOME", str(tmp_path_factory.mktemp("home")))
        return applied(tmp_path_factory.mktemp("applied") / "repo")


@pytest.fixture
def repo(applied_template, tmp_path):
    """A private copy of the applied repo (specs, data, ledger, results, sandbox tenant): its Settings."""
    root = tmp_path / "applied"
    shutil.copytree(applied_template.root, root)
    return settings_of(root)


@pytest.fixture(params=["sqlite", "postgres"])
def repo_on_both_stores(request, applied_template, tmp_path, monkeypatch):
    """`repo`, once as it is and once with its ledger moved to PostgreSQL by `ledger copy` (the SQLite
    file, results and sent files removed from state/, so every read is the database's; RECONCILER_LEDGER
    pointing at the copy): its Settings."""
    from reconciler.engine.run import binding
    from reconciler.ledger.copy import copy_ledger
    from reconciler.ledger.url import LedgerUrl

    root = tmp_path / "applied"
    shutil.copytree(applied_template.root, root)
    settings = settings_of(root)
    if request.param == "postgres":
        url = request.getfixturevalue("pg_url") + "?options=-csearch_path%3D{environment}"
        target = LedgerUrl.from_setting(url.replace("{environment}", settings.env_key), "the test")
        copy_ledger(settings.ledger_path, target, binding(settings), root=root)
        settings.ledger_path.unlink()
        for kept in (settings.results_dir, settings.sent_dir):
            shutil.rmtree(kept, ignore_errors=True)
        monkeypatch.setenv("RECONCILER_LEDGER", url)
        settings = settings_of(root)
    return settings


@pytest.fixture
def fresh(tmp_path):
    """A repo with specs and data but no ledger yet: its Settings."""
    return settings_of(make_repo(tmp_path / "repo"))
