"""Zuora environments: the named ones and their base URLs, and one canonical identity for each tenant.

A named environment and its base URL, or two spellings of one URL (host case, default port, trailing
slash, the loopback names of one served sandbox), are one environment: its canonical base URL is what
the ledger's binding, its path key and the Idempotency-Key use (issue 16, item 4).
"""

from __future__ import annotations

import difflib
import re
from urllib.parse import SplitResult, urlsplit

from reconciler.errors import ConfigError
from reconciler.zuora.wire import is_loopback_host  # the one loopback rule (wire.is_sandbox uses it too)

LOCAL_BASE_URL = "http://sandbox.local"  # virtual: the embedded sandbox answers it in-process
ENVIRONMENTS = {
    "local": LOCAL_BASE_URL,
    "us-production": "https://rest.zuora.com",
    "us-cloud1-production": "https://rest.na.zuora.com",
    "us-apisandbox": "https://rest.apisandbox.zuora.com",
    "us-cloud1-apisandbox": "https://rest.sandbox.na.zuora.com",
    "us-sandbox": "https://rest.test.zuora.com",
    "eu-production": "https://rest.eu.zuora.com",
    "eu-apisandbox": "https://rest.sandbox.eu.zuora.com",
    "eu-sandbox": "https://rest.test.eu.zuora.com",
    "ap-production": "https://rest.ap.zuora.com",
    "ap-sandbox": "https://rest.test.ap.zuora.com",
}
CREDENTIALS_HINT = (
    "credentials come only from the environment (ZUORA_CLIENT_ID + ZUORA_CLIENT_SECRET, or ZUORA_ACCESS_TOKEN)"
)


def resolve_environment(environment: str, source: str = "environment") -> tuple[str, str, bool]:
    """(base_url, env_key, is_local) for an environment name or URL; `source` names where it came from.

    `base_url` is where to connect: the URL as spelled, with scheme and host lowercased, a default port
    and a trailing slash dropped. `env_key` is the canonical one of every spelling of the environment
    (see `canonical_base_url`): a named environment's name, also when reached through its URL.
    """
    if environment in ENVIRONMENTS:
        return ENVIRONMENTS[environment], environment, environment == "local"
    url = _check_url(environment, source)
    base_url = _unparse(url.scheme, url.hostname or "", url.port, url.path)
    return base_url, _env_key(canonical_base_url(base_url)), False


def canonical_base_url(base_url: str) -> str:
    """The one spelling of an environment's base URL: what tells two environments apart.

    Scheme and host lowercased, the scheme's default port and any trailing slash dropped, and the
    loopback names localhost, 127.0.0.1 and ::1 written 127.0.0.1. A named environment is its base URL
    (`ENVIRONMENTS`). Anything that is not an http(s) URL with a host comes back without a trailing slash.
    """
    try:
        url = urlsplit(base_url)
        host, port = url.hostname, url.port
    except ValueError:  # a bad port or IPv6 literal: only a stored ledger's value could be one
        return base_url.rstrip("/")
    if url.scheme not in ("http", "https") or not host:
        return base_url.rstrip("/")
    if host in _LOOPBACK_NAMES:
        host = _LOOPBACK_NAMES[0]
    return _unparse(url.scheme, host, port, url.path)


def same_environment(one: str, other: str) -> bool:
    """True when two spellings (names or URLs, as reconciler.yaml or a plan file has them) are one environment."""
    try:
        return resolve_environment(one)[1] == resolve_environment(other)[1]
    except ConfigError:
        return one == other


def environment_identity(environment: str, base_url: str) -> str:
    """How the ledger's binding check compares environments (ledger.store.Binding.identity).

    The canonical base URL, whatever the environment was called in paths: a ledger created for
    `https://rest.zuora.com` (key `rest-zuora-com`) is the ledger of `us-production`.
    """
    return canonical_base_url(base_url)


_LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")  # one served sandbox, three spellings; the first is canonical
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _check_url(environment: str, source: str) -> SplitResult:
    """`environment` parsed, if it is a URL the configuration accepts; else a ConfigError saying why."""
    if "://" not in environment:
        close = difflib.get_close_matches(environment, ENVIRONMENTS, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(
            f"{source}: unknown environment {environment!r}; {hint}use one of {', '.join(ENVIRONMENTS)}, "
            f"an https:// base URL, or an http:// URL on a loopback address"
        )
    if "@" in environment.partition("://")[2].partition("/")[0]:
        # Checked first, so no later message can echo a password.
        raise ConfigError(f"{source}: the URL must not contain a user or password; {CREDENTIALS_HINT}")
    try:
        url = urlsplit(environment)
        host, _ = url.hostname, url.port  # .port raises for a bad port
    except ValueError as err:
        raise ConfigError(f"{source}: {environment!r} is not a valid URL ({err})") from None
    if url.scheme not in ("http", "https") or not host:
        raise ConfigError(f"{source}: {environment!r} must be an https:// URL with a host")
    if url.query or url.fragment:
        raise ConfigError(f"{source}: {environment!r} must be a base URL without a query or fragment")
    if url.scheme == "http" and not is_loopback_host(host):
        raise ConfigError(
            f"{source}: {environment!r} uses plain http:// on a non-loopback host; "
            f"use https://, or http:// only on 127.0.0.1, localhost or ::1 (a served sandbox)"
        )
    return url


def _unparse(scheme: str, host: str, port: int | None, path: str) -> str:
    """scheme://host[:port]/path with scheme and host lowercased, without the default port or a trailing slash."""
    scheme, host = scheme.lower(), host.lower()
    netloc = f"[{host}]" if ":" in host else host
    if port is not None and port != _DEFAULT_PORTS.get(scheme):
        netloc += f":{port}"
    return f"{scheme}://{netloc}{path.rstrip('/')}"


def _env_key(canonical: str) -> str:
    """What {environment} becomes in paths for a canonical base URL: the name of a named environment,
    else its host and port (as in the URL) with every other character turned into `-`."""
    for name, url in ENVIRONMENTS.items():
        if url == canonical:
            return name
    return _host_key(urlsplit(canonical).netloc)


def _host_key(hostport: str) -> str:
    return re.sub(r"[^a-z0-9]", "-", hostport.lower().replace("[", "").replace("]", ""))


def env_key_spellings(environment: str) -> list[str]:
    """The keys earlier versions gave this environment's spellings, canonical first, without repeats.

    They named a URL's ledger after its host and port as spelled (`localhost-8080`,
    `rest-zuora-com-443`), so one environment could have a ledger under several keys; those ledgers
    must still be found. `environment` is a name or an accepted URL.
    """
    if environment == "local":
        return ["local"]
    base_url, env_key, _ = resolve_environment(environment)
    url = urlsplit(canonical_base_url(base_url))
    host = url.hostname or ""
    hosts = list(_LOOPBACK_NAMES) if host in _LOOPBACK_NAMES else [host]
    ports: list[int | None] = [url.port] if url.port is not None else [None, _DEFAULT_PORTS[url.scheme]]
    keys = [env_key, *(_host_key(h if port is None else f"{h}:{port}") for h in hosts for port in ports)]
    return list(dict.fromkeys(keys))
