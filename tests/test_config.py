"""reconciler.yaml discovery and validation, environments, and credentials from the environment only."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from reconciler.engine.config import Credentials, find_config, load_settings
from reconciler.engine.environments import ENVIRONMENTS, LOCAL_BASE_URL
from reconciler.errors import ConfigError

SECRET = "s3cr3t-value-that-must-not-leak"
TOKEN = "tok-0123456789abcdef"


@pytest.fixture
def repo(tmp_path):
    """A repo whose reconciler.yaml holds `text` (default: the documented defaults)."""

    def make(text: str = "specs: specs\nledger: state/{environment}/ledger.db\nenvironment: local\n") -> Path:
        (tmp_path / "reconciler.yaml").write_text(text)
        (tmp_path / "specs" / "team").mkdir(parents=True, exist_ok=True)
        return tmp_path.resolve()

    return make


def test_found_from_a_subdirectory(repo, monkeypatch):
    root = repo()
    monkeypatch.chdir(root / "specs" / "team")
    settings = load_settings(env={})
    assert settings.root == root
    assert settings.config_file == root / "reconciler.yaml"
    assert settings.specs_dir == root / "specs"
    assert settings.ledger_path == root / "state" / "local" / "ledger.db"
    assert settings.state_dir == root / "state" / "local"
    assert settings.results_dir == root / "state" / "local" / "results"
    assert settings.cwd == root / "specs" / "team"


def test_local_is_the_embedded_sandbox(repo):
    root = repo("")  # an empty file means every default
    settings = load_settings(chdir=str(root), env={})
    assert (settings.environment, settings.env_key, settings.is_local) == ("local", "local", True)
    assert settings.base_url == LOCAL_BASE_URL == "http://sandbox.local"
    assert settings.sandbox_db == root / "state" / "local" / "sandbox.db"
    assert (settings.parallelism, settings.custom_object_slots) == (16, 5)
    assert (settings.entity_ids, settings.org_ids, settings.zuora_version) == (None, None, None)
    assert (settings.sandbox_replay_status, settings.sandbox_v1_errors, settings.sandbox_job_limit) == (200, "http", "400")


@pytest.mark.parametrize("text", ["sandbox: {replay_status: 409, v1_errors: 200, job_limit: failed}\n",
                                  "sandbox: {replay_status: '409', v1_errors: '200', job_limit: failed}\n"])
def test_the_sandbox_block_picks_zuoras_other_answers_for_local(repo, text):
    settings = load_settings(chdir=str(repo(text)), env={})
    assert (settings.sandbox_replay_status, settings.sandbox_v1_errors, settings.sandbox_job_limit) == (409, "200", "failed")


def test_no_config_anywhere_says_how_to_start(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"no reconciler.yaml found in .*run `reconciler init`"):
        load_settings(env={})
    with pytest.raises(ConfigError, match="reconciler init"):
        find_config(tmp_path)


def test_explicit_config_file_is_relative_to_the_current_directory(repo, tmp_path, monkeypatch):
    root = repo()
    other = root / "prod.yaml"
    other.write_text("environment: us-production\nspecs: specs/team\n")
    monkeypatch.chdir(root / "specs")
    settings = load_settings(config="../prod.yaml", env={})
    assert settings.config_file == other
    assert settings.root == root
    assert settings.specs_dir == root / "specs" / "team"
    assert settings.environment == "us-production"
    with pytest.raises(ConfigError, match="--config nope.yaml: no such file"):
        load_settings(config="nope.yaml", env={})


def test_chdir_moves_the_search_without_changing_directory(repo, tmp_path_factory, monkeypatch):
    root = repo()
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    monkeypatch.chdir(elsewhere)
    settings = load_settings(chdir=str(root / "specs"), env={})
    assert settings.root == root
    assert Path.cwd() == elsewhere
    assert settings.cwd == root / "specs"
    relative = os.path.relpath(root, elsewhere)
    assert load_settings(chdir=relative, env={}).root == root
    assert load_settings(chdir=str(root), config="reconciler.yaml", env={}).root == root
    with pytest.raises(ConfigError, match="--chdir /no/such/dir: no such directory"):
        load_settings(chdir="/no/such/dir", env={})


def test_zuora_environment_overrides_the_file(repo):
    root = repo("environment: us-apisandbox\nzuora: {entity_ids: e1, org_ids: o1, version: '211.0'}\n")
    settings = load_settings(chdir=str(root), env={"ZUORA_ENVIRONMENT": "eu-production"})
    assert (settings.environment, settings.env_key) == ("eu-production", "eu-production")
    assert settings.base_url == "https://rest.eu.zuora.com"
    assert settings.ledger_path == root / "state" / "eu-production" / "ledger.db"
    assert settings.sandbox_db is None and settings.is_local is False
    assert (settings.entity_ids, settings.org_ids, settings.zuora_version) == ("e1", "o1", "211.0")
    assert load_settings(chdir=str(root), env={}).base_url == "https://rest.apisandbox.zuora.com"


@pytest.mark.parametrize("name, url", [
    ("us-production", "https://rest.zuora.com"),
    ("us-cloud1-production", "https://rest.na.zuora.com"),
    ("us-apisandbox", "https://rest.apisandbox.zuora.com"),
    ("us-cloud1-apisandbox", "https://rest.sandbox.na.zuora.com"),
    ("us-sandbox", "https://rest.test.zuora.com"),
    ("eu-production", "https://rest.eu.zuora.com"),
    ("eu-apisandbox", "https://rest.sandbox.eu.zuora.com"),
    ("eu-sandbox", "https://rest.test.eu.zuora.com"),
    ("ap-production", "https://rest.ap.zuora.com"),
    ("ap-sandbox", "https://rest.test.ap.zuora.com"),
])
def test_named_environments(repo, name, url):
    settings = load_settings(chdir=str(repo(f"environment: {name}\n")), env={})
    assert (settings.base_url, settings.env_key, settings.is_local) == (url, name, False)
    assert set(ENVIRONMENTS) == {"local", "us-production", "us-cloud1-production", "us-apisandbox", "us-cloud1-apisandbox",
                                 "us-sandbox", "eu-production", "eu-apisandbox", "eu-sandbox", "ap-production", "ap-sandbox"}


@pytest.mark.parametrize("url, base_url, env_key", [
    ("https://rest.example.com", "https://rest.example.com", "rest-example-com"),
    ("https://Rest.Example.com:8443/", "https://rest.example.com:8443", "rest-example-com-8443"),
    ("https://proxy.internal/zuora/", "https://proxy.internal/zuora", "proxy-internal"),
    ("http://127.0.0.1:5000", "http://127.0.0.1:5000", "127-0-0-1-5000"),
    ("http://127.8.9.10:80", "http://127.8.9.10", "127-8-9-10"),  # the default port is dropped
    # Connected to as spelled, but one environment: the key of its canonical spelling, 127.0.0.1.
    ("http://localhost:8080", "http://localhost:8080", "127-0-0-1-8080"),
    ("http://[::1]:9000", "http://[::1]:9000", "127-0-0-1-9000"),
    ("HTTPS://REST.Example.com:443/", "https://rest.example.com", "rest-example-com"),
    ("https://rest.zuora.com", "https://rest.zuora.com", "us-production"),  # a named environment's URL is the name
    ("https://Rest.EU.zuora.com:443/", "https://rest.eu.zuora.com", "eu-production"),
])
def test_url_environments(repo, url, base_url, env_key):
    root = repo("ledger: state/{environment}/ledger.db\n")
    settings = load_settings(chdir=str(root), env={"ZUORA_ENVIRONMENT": url})
    assert (settings.environment, settings.base_url, settings.env_key) == (url, base_url, env_key)
    assert settings.ledger_path == root / "state" / env_key / "ledger.db"
    assert settings.state_dir == root / "state" / env_key


@pytest.mark.parametrize("url, message", [
    ("http://rest.zuora.com", "plain http:// on a non-loopback host"),
    ("http://10.0.0.1:8080", "plain http:// on a non-loopback host"),
    ("http://127.0.0.1.example.com", "plain http:// on a non-loopback host"),
    ("http://0.0.0.0:80", "plain http:// on a non-loopback host"),
    ("ftp://rest.zuora.com", "must be an https:// URL with a host"),
    ("https://", "must be an https:// URL with a host"),
    ("https://user:pw@rest.zuora.com", "must not contain a user or password"),
    ("https://rest.zuora.com/?tenant=1", "without a query or fragment"),
    ("https://rest.zuora.com:99999", "is not a valid URL"),
    ("us-prod", "unknown environment 'us-prod'; did you mean 'us-production'?"),
])
def test_bad_environments_are_refused(repo, url, message):
    root = repo(f"environment: '{url}'\n")
    with pytest.raises(ConfigError, match=message.replace("?", r"\?")) as raised:
        load_settings(chdir=str(root), env={})
    assert "reconciler.yaml: environment" in str(raised.value)
    with pytest.raises(ConfigError, match="ZUORA_ENVIRONMENT"):
        load_settings(chdir=str(root), env={"ZUORA_ENVIRONMENT": url})


@pytest.mark.parametrize("url", ["https://u:hunter2@rest.zuora.com", "ftp://u:hunter2@x", "https://u:hunter2@h:99999"])
def test_a_password_in_a_url_is_never_echoed(repo, url):
    with pytest.raises(ConfigError, match="must not contain a user or password") as raised:
        load_settings(chdir=str(repo()), env={"ZUORA_ENVIRONMENT": url})
    assert "hunter2" not in str(raised.value)


def test_credentials_come_from_the_environment_and_never_show(repo):
    root = repo()
    env = {"ZUORA_CLIENT_ID": "client-1", "ZUORA_CLIENT_SECRET": SECRET}
    settings = load_settings(chdir=str(root), env=env)
    assert settings.credentials == Credentials(client_id="client-1", client_secret=SECRET)
    for text in (repr(settings), str(settings), repr(settings.credentials), str(settings.credentials)):
        assert SECRET not in text
        assert "client_secret='<redacted>'" in text
    token = load_settings(chdir=str(root), env={"ZUORA_ACCESS_TOKEN": TOKEN}).credentials
    assert token.access_token == TOKEN and token.client_id is None
    assert TOKEN not in repr(token) and "access_token='<redacted>'" in repr(token)
    assert load_settings(chdir=str(root), env={}).credentials == Credentials()


def test_half_a_client_credential_is_an_error(repo):
    root = repo()
    with pytest.raises(ConfigError, match="ZUORA_CLIENT_ID is set but ZUORA_CLIENT_SECRET is not"):
        load_settings(chdir=str(root), env={"ZUORA_CLIENT_ID": "client-1"})
    with pytest.raises(ConfigError, match="ZUORA_CLIENT_SECRET is set but ZUORA_CLIENT_ID is not") as raised:
        load_settings(chdir=str(root), env={"ZUORA_CLIENT_SECRET": SECRET})
    assert SECRET not in str(raised.value)


@pytest.mark.parametrize("text", [
    f"zuora:\n  client_secret: {SECRET}\n",
    f"access_token: {SECRET}\n",
    f"zuora: {{clientId: abc, password: {SECRET}}}\n",
])
def test_credentials_in_the_file_are_refused(repo, text):
    root = repo(text)
    with pytest.raises(ConfigError, match="credentials come only from the environment") as raised:
        load_settings(chdir=str(root), env={})
    assert SECRET not in str(raised.value)
    assert str(root / "reconciler.yaml") in str(raised.value)


@pytest.mark.parametrize("text, message", [
    ("specz: specs\n", "specz: unknown key (allowed: specs, ledger, environment, zuora, apply, sandbox); did you mean "
                        "'specs'?"),
    ("sandbox: {replay_status: 201}\n", "sandbox.replay_status: must be one of 200, 409 (got 201)"),
    ("sandbox: {v1_errors: true}\n", "sandbox.v1_errors: must be one of http, 200 (got True)"),
    ("sandbox: {job_limit: [400]}\n", "sandbox.job_limit: must be one of 400, failed (got [400])"),
    ("sandbox: {replay: 409}\n", "sandbox.replay: unknown key (allowed: replay_status, v1_errors, job_limit, "
                                  "tenant_type)"),
    ("sandbox: {tenant_type: sandbox}\n", "sandbox.tenant_type: must be one of production, apisandbox, "
                                           "developer-sandbox (got 'sandbox')"),
    ("apply: {paralelism: 4}\n", "apply.paralelism: unknown key (allowed: parallelism, custom_object_slots); did you mean 'parallelism'?"),
    ("zuora: {versoin: '1'}\n", "zuora.versoin: unknown key"),
    ("apply: {parallelism: 0}\n", "apply.parallelism: must be an integer from 1 to 40 (got 0)"),
    ("apply: {parallelism: 41}\n", "apply.parallelism: must be an integer from 1 to 40 (got 41)"),
    ("apply: {parallelism: '16'}\n", "apply.parallelism: must be an integer from 1 to 40 (got '16')"),
    ("apply: {parallelism: true}\n", "apply.parallelism: must be an integer from 1 to 40 (got True)"),
    ("apply: {custom_object_slots: 6}\n", "apply.custom_object_slots: must be an integer from 1 to 5 (got 6)"),
    ("specs: 5\n", "specs: must be a non-empty string (got 5)"),
    ("environment: ''\n", "environment: must be a non-empty string"),
    ("ledger: null\n", "ledger: must be a non-empty string (got None)"),
    ("zuora: {version: 211.0}\n", "zuora.version: must be a non-empty string (got 211.0); quote it"),
    ("zuora: [a, b]\n", "zuora: must be a mapping of entity_ids, org_ids, version"),
    ("zuora: {entity_ids: café}\n", "zuora.entity_ids: must be printable ASCII, as an HTTP header value is"),
    ("zuora: {org_ids: \"a\\tb\"}\n", "zuora.org_ids: must be printable ASCII"),
    ("apply: fast\n", "apply: must be a mapping of parallelism, custom_object_slots"),
    ("- specs\n", "must be a mapping of settings"),
    ("specs: specs\nspecs: other\n", "duplicate key 'specs'"),
    ("specs: [unclosed\n", "reconciler.yaml:2: invalid YAML"),
    ("specs: a\n---\nspecs: b\n", "reconciler.yaml:3: expected a single YAML document"),
    ("specs: ../elsewhere\n", "specs: '../elsewhere' must be a directory inside the repository"),
])
def test_bad_config_gets_a_clear_message(repo, text, message):
    root = repo(text)
    with pytest.raises(ConfigError) as raised:
        load_settings(chdir=str(root), env={})
    assert message in str(raised.value)
    assert str(root / "reconciler.yaml") in str(raised.value)


def test_every_config_problem_is_reported_at_once(repo):
    root = repo("specz: x\napply: {parallelism: 99, custom_object_slots: 0}\n")
    with pytest.raises(ConfigError) as raised:
        load_settings(chdir=str(root), env={})
    assert len(str(raised.value).splitlines()) == 3


def test_config_that_is_not_utf8_or_binary(repo):
    root = repo()
    (root / "reconciler.yaml").write_bytes(b"environment: caf\xe9\n")
    with pytest.raises(ConfigError, match=r"reconciler.yaml:1: not UTF-8"):
        load_settings(chdir=str(root), env={})
    (root / "reconciler.yaml").write_bytes(b"\x00\x01\x02")
    with pytest.raises(ConfigError, match="binary file"):
        load_settings(chdir=str(root), env={})


def test_custom_ledger_path(repo):
    root = repo("ledger: /var/tmp/ledgers/{environment}.db\nenvironment: us-sandbox\n")
    assert load_settings(chdir=str(root), env={}).ledger_path == Path("/var/tmp/ledgers/us-sandbox.db")
