"""reconciler.yaml + environment variables -> Settings (frozen). Credentials come only from the environment."""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from reconciler.engine.environments import (
    CREDENTIALS_HINT,
    env_key_spellings,
    resolve_environment,
)
from reconciler.errors import ConfigError
from reconciler.ledger.url import LedgerUrl, is_database_url, redact_url
from reconciler.zuora.auth import Credentials  # the one credentials value, shown redacted

CONFIG_NAME = "reconciler.yaml"
_ALLOWED = {
    "specs": str,
    "ledger": str,
    "environment": str,
    "zuora": {"entity_ids": str, "org_ids": str, "version": str, "call_timeout": (1, 600)},
    "apply": {"parallelism": (1, 40), "custom_object_slots": (1, 5)},
    # The embedded sandbox's choice between Zuora's documented answers (`environment: local` only).
    "sandbox": {"replay_status": ("200", "409"), "v1_errors": ("http", "200"), "job_limit": ("400", "failed"),
                "tenant_type": ("production", "apisandbox", "developer-sandbox")},
}
_DEFAULTS = {"specs": "specs", "ledger": "state/{environment}/ledger.db", "environment": "local"}
# Keys that look like they hold a secret: refused outright so nobody commits one "just for now".
_CREDENTIAL_KEY = re.compile(r"secret|token|passw|client.?id|api.?key|credential|auth", re.IGNORECASE)


@dataclass(frozen=True)
class Settings:
    """Everything a command needs to know about the repo and the environment it targets."""

    root: Path  # repo root: the directory holding reconciler.yaml
    config_file: Path
    specs_dir: Path
    ledger_path: Path | None  # the SQLite file; None when the ledger is on PostgreSQL (ledger_url)
    state_dir: Path  # root/state/<env_key>; archived results go to state_dir / "results"
    environment: str  # as configured: a name or a URL
    env_key: str  # what {environment} becomes in paths: one per environment, however it is spelled
    base_url: str  # where to connect (canonical_base_url(base_url) is the environment's identity)
    is_local: bool
    sandbox_db: Path | None
    entity_ids: str | None
    org_ids: str | None
    zuora_version: str | None
    credentials: Credentials
    parallelism: int = 16
    custom_object_slots: int = 5
    call_timeout: float = 120.0  # seconds one HTTP attempt may take, whole answer included (Zuora's gateway: 120)
    # `sandbox:` of reconciler.yaml, for the embedded sandbox (sandbox.make_app's keyword arguments).
    sandbox_replay_status: int = 200
    sandbox_v1_errors: str = "http"
    sandbox_job_limit: str = "400"
    sandbox_tenant_type: str = "production"
    cwd: Path | None = None  # where relative command-line paths start (--chdir or the current directory)
    ledger_url: LedgerUrl | None = None  # a PostgreSQL ledger (`ledger:` or RECONCILER_LEDGER is a postgresql:// URL)

    @property
    def results_dir(self) -> Path:
        """Where archived result files go."""
        return self.state_dir / "results"

    @property
    def sent_dir(self) -> Path:
        """Where the files new-rows changes sent are archived (dataset.facts)."""
        return self.state_dir / "sent"


def find_config(start: Path) -> Path:
    """The reconciler.yaml in `start` or its nearest parent directory."""
    start = Path(start).absolute()
    for directory in (start, *start.parents):
        candidate = directory / CONFIG_NAME
        if candidate.is_file():
            return candidate
    raise ConfigError(
        f"no {CONFIG_NAME} found in {start} or any parent directory; "
        f"run `reconciler init` to create one, or pass --config FILE"
    )


def load_settings(config: str | None = None, chdir: str | None = None, env: Mapping[str, str] = os.environ) -> Settings:
    """Find and validate reconciler.yaml, apply ZUORA_ENVIRONMENT and read credentials from `env`."""
    base = Path.cwd()
    if chdir is not None:
        base = Path(os.path.abspath(base / Path(chdir).expanduser()))
        if not base.is_dir():
            raise ConfigError(f"--chdir {chdir}: no such directory")
    if config is not None:
        config_file = base / Path(config).expanduser()
        if not config_file.is_file():
            raise ConfigError(f"--config {config}: no such file ({config_file})")
    else:
        config_file = find_config(base)
    config_file = config_file.resolve()
    root = config_file.parent

    from reconciler.spec.load import load_yaml_file  # the one YAML reader (DESIGN §9)

    data = _check_config(load_yaml_file(config_file), config_file)
    source = f"{config_file}: environment"
    environment = data.get("environment", _DEFAULTS["environment"])
    if env.get("ZUORA_ENVIRONMENT"):
        environment, source = env["ZUORA_ENVIRONMENT"], "ZUORA_ENVIRONMENT"
    base_url, env_key, is_local = resolve_environment(environment, source)

    specs_dir = (root / data.get("specs", _DEFAULTS["specs"])).resolve()
    if not specs_dir.is_relative_to(root):
        raise ConfigError(f"{config_file}: specs: {data['specs']!r} must be a directory inside the repository {root}")
    template, ledger_source = data.get("ledger", _DEFAULTS["ledger"]), f"{config_file}: ledger"
    if env.get("RECONCILER_LEDGER"):
        template, ledger_source = env["RECONCILER_LEDGER"], "RECONCILER_LEDGER"
    ledger_url = _ledger_url(template, env_key, ledger_source)
    if ledger_url is None:
        env_key = _key_in_use(root, template, environment, env_key)
    ledger = template.replace("{environment}", env_key)
    zuora = data.get("zuora") or {}
    apply = data.get("apply") or {}
    answers = data.get("sandbox") or {}
    return Settings(
        root=root,
        config_file=config_file,
        specs_dir=specs_dir,
        ledger_path=None if ledger_url is not None else (root / Path(ledger).expanduser()).resolve(),
        ledger_url=ledger_url,
        state_dir=root / "state" / env_key,
        environment=environment,
        env_key=env_key,
        base_url=base_url,
        is_local=is_local,
        sandbox_db=root / "state" / "local" / "sandbox.db" if is_local else None,
        entity_ids=zuora.get("entity_ids"),
        org_ids=zuora.get("org_ids"),
        zuora_version=zuora.get("version"),
        credentials=_credentials(env),
        parallelism=apply.get("parallelism", 16),
        custom_object_slots=apply.get("custom_object_slots", 5),
        call_timeout=float(zuora.get("call_timeout") or 120),
        sandbox_replay_status=int(str(answers.get("replay_status", 200))),
        sandbox_v1_errors=str(answers.get("v1_errors", "http")),
        sandbox_job_limit=str(answers.get("job_limit", "400")),
        sandbox_tenant_type=str(answers.get("tenant_type", "production")),
        cwd=base,
    )


def _ledger_url(template: str, env_key: str, source: str) -> LedgerUrl | None:
    """The PostgreSQL ledger `ledger:` names, or None for a file path; any other URL is refused.

    A URL is never taken as a path: `postgresql://...` must not become a folder named `postgresql:`.
    """
    if is_database_url(template):
        return LedgerUrl.from_setting(template.replace("{environment}", env_key), source)
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", template):
        raise ConfigError(f"{source}: {redact_url(template)} is neither a file path nor a postgresql:// URL; "
                          "the ledger is a SQLite file (e.g. state/{environment}/ledger.db) or a PostgreSQL "
                          "database (postgresql://USER@HOST:PORT/DATABASE)")
    return None


def _key_in_use(root: Path, template: str, environment: str, env_key: str) -> str:
    """The canonical `env_key`, unless this environment's one existing ledger is under an older key.

    Two existing ledgers for one environment (each spelling got its own before) are refused: each may
    record jobs the other does not know, so neither may silently win.
    """
    if "{environment}" not in template:
        return env_key
    found = [key for key in env_key_spellings(environment)
             if (root / Path(template.replace("{environment}", key)).expanduser()).exists()]
    if len(found) > 1:
        paths = ", ".join(template.replace("{environment}", key) for key in found)
        raise ConfigError(
            f"{root}: environment {environment!r} has {len(found)} ledgers ({paths}), one per spelling "
            f"its URL had; they are one environment. Keep the one that recorded your applies and move the "
            f"other out of state/ (then `reconciler import NAME ID` any job only it knew)"
        )
    return found[0] if found else env_key


def _credentials(env: Mapping[str, str]) -> Credentials:
    client_id = env.get("ZUORA_CLIENT_ID") or None
    client_secret = env.get("ZUORA_CLIENT_SECRET") or None
    token = env.get("ZUORA_ACCESS_TOKEN") or None
    if bool(client_id) != bool(client_secret) and not token:
        present, missing = (
            ("ZUORA_CLIENT_ID", "ZUORA_CLIENT_SECRET") if client_id else ("ZUORA_CLIENT_SECRET", "ZUORA_CLIENT_ID")
        )
        raise ConfigError(f"{present} is set but {missing} is not; set both, or set ZUORA_ACCESS_TOKEN instead")
    return Credentials(client_id=client_id, client_secret=client_secret, access_token=token)


def _check_config(data: object, path: Path) -> dict:
    """Every problem of the parsed file at once, each naming the file and the key."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: must be a mapping of settings (specs, ledger, environment, zuora, apply, sandbox)")
    secrets = [key for key in _walk_keys(data) if _CREDENTIAL_KEY.search(key.rpartition(".")[2])]
    if secrets:
        raise ConfigError(f"{path}: {', '.join(secrets)}: not allowed here; {CREDENTIALS_HINT}")
    errors = []
    for key, value in data.items():
        rule = _ALLOWED.get(key)
        if rule is None:
            errors.append(_unknown(path, key, _ALLOWED))
        elif isinstance(rule, dict):
            if value is None:
                continue
            if not isinstance(value, dict):
                errors.append(f"{path}: {key}: must be a mapping of {', '.join(rule)}")
                continue
            for sub, subvalue in value.items():
                if sub not in rule:
                    errors.append(_unknown(path, f"{key}.{sub}", rule))
                else:
                    errors.extend(_check_value(path, f"{key}.{sub}", subvalue, rule[sub]))
        else:
            errors.extend(_check_value(path, key, value, rule, nullable=False))
    if errors:
        raise ConfigError("\n".join(errors))
    return data


def _check_value(path: Path, key: str, value: object, rule, nullable: bool = True) -> list[str]:
    if isinstance(rule, tuple) and isinstance(rule[0], str):  # a choice; YAML may read `409` as a number
        if isinstance(value, bool) or not isinstance(value, (str, int)) or str(value) not in rule:
            return [f"{path}: {key}: must be one of {', '.join(rule)} (got {value!r})"]
        return []
    if isinstance(rule, tuple):
        low, high = rule
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            return [f"{path}: {key}: must be an integer from {low} to {high} (got {value!r})"]
        return []
    if value is None and nullable:
        return []
    if not isinstance(value, str) or not value.strip():
        return [f"{path}: {key}: must be a non-empty string (got {value!r}); "
                "quote it if YAML reads it as something else"]
    if key.startswith("zuora.") and not all(" " <= ch <= "~" for ch in value):
        return [f"{path}: {key}: must be printable ASCII, as an HTTP header value is (got {value!r})"]
    return []


def _unknown(path: Path, key: str, allowed: dict) -> str:
    leaf = key.rpartition(".")[2]
    close = difflib.get_close_matches(leaf, allowed, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"{path}: {key}: unknown key (allowed: {', '.join(allowed)}){hint}"


def _walk_keys(data: dict, prefix: str = ""):
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        yield dotted
        if isinstance(value, dict):
            yield from _walk_keys(value, dotted + ".")
