"""One environment, one identity: every spelling of an environment finds the same ledger.

`http://127.0.0.1:P` and `http://localhost:P/`, or `us-production` and `HTTPS://Rest.Zuora.com:443/`,
name one tenant. They share one ledger path, one binding and so one lineage (and the Idempotency-Keys
derived from it), and ledgers that earlier versions created under a spelling's own key still open.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from apply_support import cli, make_repo, remote_jobs, served_sandbox, settings_of

from reconciler.engine.config import load_settings
from reconciler.engine.environments import ENVIRONMENTS, canonical_base_url, resolve_environment
from reconciler.engine.run import binding, read_ledger
from reconciler.errors import ConfigError, LedgerError
from reconciler.ledger.store import Binding, Ledger


def ledgers(repo: Path) -> list[str]:
    return sorted(str(p.relative_to(repo)) for p in repo.glob("state/**/ledger.db"))


def lineage(repo: Path) -> str:
    ledger = read_ledger(settings_of(repo))
    assert ledger is not None
    with ledger:
        return ledger.lineage


# --- (1) two spellings of one served sandbox, two real runs -------------------------------------


def test_two_spellings_of_one_served_sandbox_share_one_ledger_and_the_second_apply_submits_nothing(tmp_path):
    with served_sandbox() as url:
        assert url.startswith("http://127.0.0.1:")
        port = url.rpartition(":")[2]
        repo = make_repo(tmp_path, url)
        first = cli(repo, "apply", "--auto-approve", "--wait", "--timeout", "60")
        assert first.returncode == 0, first.stdout + first.stderr
        assert "4 submitted" in first.stdout
        submitted = remote_jobs(url)
        assert len(submitted) == 4
        assert ledgers(repo) == [f"state/127-0-0-1-{port}/ledger.db"]
        before = lineage(repo)

        (repo / "reconciler.yaml").write_text(f"environment: http://LocalHost:{port}/\n")
        again = cli(repo, "apply", "--auto-approve", "--wait", "--timeout", "60")
        assert again.returncode == 0, again.stdout + again.stderr
        assert "No changes." in again.stdout, again.stdout
        assert remote_jobs(url) == submitted  # nothing submitted again: same ledger, same keys
        assert ledgers(repo) == [f"state/127-0-0-1-{port}/ledger.db"]
        assert lineage(repo) == before

        # The same through ZUORA_ENVIRONMENT, in IPv6 loopback's spelling (read only: nothing to connect to).
        status = cli(repo, "status", env={"ZUORA_ENVIRONMENT": f"http://[::1]:{port}"})
        assert status.returncode == 0, status.stdout + status.stderr
        assert ledgers(repo) == [f"state/127-0-0-1-{port}/ledger.db"]


# --- (2) the canonical form ---------------------------------------------------------------------


@pytest.mark.parametrize("name, url", [(n, u) for n, u in ENVIRONMENTS.items() if n != "local"])
def test_a_named_environment_and_every_spelling_of_its_url_are_one_environment(name, url):
    host = url.removeprefix("https://")
    spellings = [name, url, url + "/", f"{url}:443", f"{url}:443/", f"HTTPS://{host.upper()}",
                 f"https://{host.title()}:443//"]
    for spelling in spellings:
        base_url, env_key, is_local = resolve_environment(spelling)
        assert (base_url, env_key, is_local) == (url, name, False), spelling
        assert canonical_base_url(base_url) == url


@pytest.mark.parametrize("spelling", [
    "http://127.0.0.1:8080", "http://127.0.0.1:8080/", "http://localhost:8080", "http://LOCALHOST:8080/",
    "http://[::1]:8080", "HTTP://[::1]:8080/",
])
def test_the_loopback_names_are_one_spelling(spelling):
    base_url, env_key, _ = resolve_environment(spelling)
    assert env_key == "127-0-0-1-8080"
    assert canonical_base_url(base_url) == "http://127.0.0.1:8080"
    assert base_url == spelling.lower().rstrip("/")  # but it is connected to as spelled (::1 may be all it serves)


@pytest.mark.parametrize("url, canonical, env_key", [
    ("https://rest.example.com:443", "https://rest.example.com", "rest-example-com"),
    ("https://rest.example.com:8443/", "https://rest.example.com:8443", "rest-example-com-8443"),
    ("http://127.0.0.1:80", "http://127.0.0.1", "127-0-0-1"),
    ("http://localhost", "http://127.0.0.1", "127-0-0-1"),
    ("https://127.0.0.1:443", "https://127.0.0.1", "127-0-0-1"),
    ("https://Proxy.Internal/Zuora/", "https://proxy.internal/Zuora", "proxy-internal"),  # a path keeps its case
    ("http://127.8.9.10:5000", "http://127.8.9.10:5000", "127-8-9-10-5000"),  # only the three names are merged
])
def test_canonical_form_of_urls(url, canonical, env_key):
    base_url, key, _ = resolve_environment(url)
    assert (canonical_base_url(base_url), key) == (canonical, env_key)


@pytest.mark.parametrize("one, other", [
    ("http://127.0.0.1:8080", "http://127.0.0.1:8081"),
    ("http://127.0.0.1:8080", "https://127.0.0.1:8080"),
    ("us-production", "us-cloud1-production"),
    ("https://rest.zuora.com", "https://rest.zuora.com:8443"),
    ("https://proxy.internal/a", "https://proxy.internal/b"),
])
def test_different_environments_stay_different(one, other):
    assert canonical_base_url(resolve_environment(one)[0]) != canonical_base_url(resolve_environment(other)[0])


@pytest.mark.parametrize("stored", ["", "http://[::1", "https://rest.zuora.com:99999/", "not a url/"])
def test_a_stored_base_url_that_is_no_url_compares_as_written(stored):
    assert canonical_base_url(stored) == stored.rstrip("/")


def test_local_is_exactly_as_it_was(tmp_path):
    (tmp_path / "reconciler.yaml").write_text("environment: local\n")
    settings = load_settings(chdir=str(tmp_path), env={})
    assert (settings.env_key, settings.base_url, settings.is_local) == ("local", "http://sandbox.local", True)
    assert settings.ledger_path == tmp_path / "state" / "local" / "ledger.db"
    assert binding(settings) == Binding("local", "http://sandbox.local")


# --- (3) ledgers created before: found at their old path, their old binding accepted -------------


def repo_for(tmp_path: Path, environment: str, ledger: str | None = None) -> Path:
    lines = [f"environment: '{environment}'"] + ([f"ledger: {ledger}"] if ledger else [])
    (tmp_path / "reconciler.yaml").write_text("\n".join(lines) + "\n")
    return tmp_path


def old_ledger(path: Path, old_binding: Binding) -> str:
    """A ledger as the previous version created it: at `path`, bound as it bound (the key of the spelling)."""
    with Ledger.open_write(path, old_binding) as ledger:
        return ledger.lineage


@pytest.mark.parametrize("environment", ["us-production", "https://rest.zuora.com:443/", "HTTPS://REST.ZUORA.COM"])
def test_a_ledger_created_for_the_url_of_a_named_environment_opens_for_every_spelling(tmp_path, environment):
    old = tmp_path / "state" / "rest-zuora-com" / "ledger.db"
    created = old_ledger(old, Binding("rest-zuora-com", "https://rest.zuora.com"))
    settings = load_settings(chdir=str(repo_for(tmp_path, environment)), env={})
    assert settings.ledger_path == old and settings.state_dir == old.parent
    with Ledger.open_write(settings.ledger_path, binding(settings)) as ledger:
        assert ledger.lineage == created
    assert ledgers(tmp_path) == ["state/rest-zuora-com/ledger.db"]  # nothing created beside it


def test_a_ledger_created_for_localhost_opens_for_127_0_0_1(tmp_path):
    old = tmp_path / "state" / "localhost-8080" / "ledger.db"
    created = old_ledger(old, Binding("localhost-8080", "http://localhost:8080/"))
    settings = load_settings(chdir=str(repo_for(tmp_path, "http://127.0.0.1:8080")), env={})
    assert settings.ledger_path == old
    ledger = read_ledger(settings)
    assert ledger is not None
    with ledger:
        assert ledger.lineage == created


def test_an_old_spelling_stored_in_the_binding_is_accepted_at_a_fixed_path(tmp_path):
    # With a fixed ledger path only the binding tells environments apart; it stored the spelling.
    path = tmp_path / "ledger.db"
    created = old_ledger(path, Binding("rest-zuora-com-443", "https://rest.zuora.com:443"))
    settings = load_settings(chdir=str(repo_for(tmp_path, "us-production", "ledger.db")), env={})
    with Ledger.open_write(settings.ledger_path, binding(settings)) as ledger:
        assert ledger.lineage == created
    other = load_settings(chdir=str(tmp_path), env={"ZUORA_ENVIRONMENT": "eu-production"})
    with pytest.raises(LedgerError, match="belongs to environment rest-zuora-com-443"):
        Ledger.open_write(other.ledger_path, binding(other))


def test_the_canonical_ledger_is_the_one_created_when_there_is_none(tmp_path):
    settings = load_settings(chdir=str(repo_for(tmp_path, "https://rest.zuora.com/")), env={})
    with Ledger.open_write(settings.ledger_path, binding(settings)):
        pass
    assert ledgers(tmp_path) == ["state/us-production/ledger.db"]
    assert load_settings(chdir=str(tmp_path), env={"ZUORA_ENVIRONMENT": "us-production"}).ledger_path \
        == settings.ledger_path


def test_two_existing_ledgers_of_one_environment_are_refused_not_guessed_between(tmp_path):
    old_ledger(tmp_path / "state" / "localhost-8080" / "ledger.db", Binding("localhost-8080", "http://localhost:8080"))
    old_ledger(tmp_path / "state" / "127-0-0-1-8080" / "ledger.db",
               Binding("127-0-0-1-8080", "http://127.0.0.1:8080"))
    with pytest.raises(ConfigError, match="has 2 ledgers") as raised:
        load_settings(chdir=str(repo_for(tmp_path, "http://localhost:8080")), env={})
    assert "state/127-0-0-1-8080/ledger.db" in str(raised.value)
    assert "state/localhost-8080/ledger.db" in str(raised.value)


def test_a_plan_saved_under_one_spelling_applies_under_another(tmp_path):
    with served_sandbox() as url:
        port = url.rpartition(":")[2]
        repo = make_repo(tmp_path, url)
        (repo / "reconciler.yaml").write_text(f"environment: http://localhost:{port}\n")
        made = cli(repo, "plan", "--out", "p.json")
        assert made.returncode == 0, made.stdout + made.stderr
        (repo / "reconciler.yaml").write_text(f"environment: http://127.0.0.1:{port}/\n")
        applied = cli(repo, "apply", "p.json", "--auto-approve")
        assert applied.returncode == 0, applied.stdout + applied.stderr
        assert len(remote_jobs(url)) == 4
        (repo / "reconciler.yaml").write_text(f"environment: http://127.0.0.1:{int(port) + 1}\n")
        other = cli(repo, "apply", "p.json", "--auto-approve")
        assert other.returncode == 1 and "plan is stale" in other.stderr  # another environment is still refused
