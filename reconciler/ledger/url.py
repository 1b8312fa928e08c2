"""Where a ledger lives when it is not a file: a `postgresql://` URL, and its password kept out of sight.

Standard library only: the configuration decides path-or-URL before any driver is imported. A
`LedgerUrl` keeps the URL as given (libpq reads it, and PGPASSWORD, ~/.pgpass and the other PG*
variables fill in what it leaves out) and shows itself only as `display`, the URL with any password
replaced by `***`, so no message, `repr`, plan file or ledger row can carry it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from reconciler.errors import ConfigError

SCHEMES = ("postgresql", "postgres")
HIDDEN = "***"


def is_database_url(text: str) -> bool:
    """True when `ledger:` names a PostgreSQL server rather than a file."""
    return text.partition("://")[0].lower() in SCHEMES and "://" in text


def redact_url(url: str) -> str:
    """The URL with its password (in the user part or a `password=` parameter) replaced by ***."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return re.sub(r"(://[^:/@]*):[^@/]*@", rf"\1:{HIDDEN}@", url)
    netloc = parts.netloc
    user, at, host = netloc.rpartition("@")
    if at and ":" in user:
        netloc = f"{user.partition(':')[0]}:{HIDDEN}@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(k == "password" for k, _ in pairs):
            query = urlencode([(k, HIDDEN if k == "password" else v) for k, v in pairs])
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def password_of(url: str) -> str | None:
    """The password the URL itself carries, if any (to scrub it from a driver's messages)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    given = dict(parse_qsl(parts.query)).get("password")
    return parts.password or given or None


@dataclass(frozen=True)
class LedgerUrl:
    """A PostgreSQL ledger's URL (`{environment}` already filled in) and the setting it came from."""

    url: str = field(repr=False)
    source: str = "`ledger:` in reconciler.yaml"

    @classmethod
    def from_setting(cls, url: str, source: str) -> LedgerUrl:
        """Check the URL's shape (the server is only asked when a command opens the ledger)."""
        shown = redact_url(url)
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - parsing it is the check
        except ValueError as exc:
            raise ConfigError(f"{source}: {shown} is not a valid PostgreSQL URL ({exc}); write it as "
                              "postgresql://USER@HOST:PORT/DATABASE") from None
        if parts.fragment:
            raise ConfigError(f"{source}: {shown}: a PostgreSQL URL has no #fragment")
        if not parts.path.strip("/") and not parts.hostname:
            raise ConfigError(f"{source}: {shown} names no server and no database; write it as "
                              "postgresql://USER@HOST:PORT/DATABASE")
        return cls(url, source)

    @property
    def display(self) -> str:
        """The URL as it may be shown: password replaced by ***."""
        return redact_url(self.url)

    @property
    def password(self) -> str | None:
        return password_of(self.url)

    def __str__(self) -> str:
        return self.display

    def scrub(self, text: str) -> str:
        """`text` (a driver's message) with the URL and its password replaced by their redacted forms."""
        text = text.replace(self.url, self.display)
        secret = self.password
        return text.replace(secret, HIDDEN) if secret else text
