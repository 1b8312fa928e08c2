"""Wire hygiene: secrets never in text; base URL, header and path values well-formed; which URLs are sandboxes.

Standard library only. Every string the Zuora client builds from a server answer or an exception passes
through a `Redactor` before it reaches a log line, a `Call` or a `RemoteError`; a hidden value reads
`<redacted>`, the one marker the ledger uses too. `is_sandbox` is the one rule for "these settings point at a
sandbox, not at Zuora" (the client's default credentials, apply's polling interval).
"""

from __future__ import annotations

import ipaddress
import re
import threading
import uuid
from typing import Protocol
from urllib.parse import quote, urlsplit

from reconciler.errors import ConfigError, InvalidIdError, RemoteError
from reconciler.model import REDACTED
SECRET_MIN = 4
# Shapes a credential takes in free text, whatever its value: a bearer header, or a token / secret
# field in JSON or in a form body.
_PATTERNS = (
    re.compile(r"(?i)(bearer\s+)[^\s\"',;]+"),
    re.compile(r"(?i)(\"?(?:access_token|client_secret|refresh_token)\"?\s*[:=]\s*\"?)[^\s\"&,}]+"),
)
_TRACK_ID_FORBIDDEN = set(':;"\'')
TRACK_ID_MAX = 64
IDEMPOTENCY_KEY_MAX = 255


class Redactor:
    """Replaces every known secret value, and anything shaped like a credential, with `<redacted>`."""

    def __init__(self, *secrets: str | None):
        self._lock = threading.Lock()
        self._secrets: set[str] = set()
        for secret in secrets:
            self.add(secret)

    def add(self, secret: str | None) -> None:
        """Remember one more value (a client secret, a freshly issued token) to hide."""
        # Hiding a 1-3 character "secret" would mangle every message and protect nothing.
        if secret and len(secret) >= SECRET_MIN:
            with self._lock:
                self._secrets.add(secret)

    def __call__(self, text: str) -> str:
        """`text` with every secret hidden."""
        with self._lock:
            secrets = sorted(self._secrets, key=len, reverse=True)
        for secret in secrets:
            text = text.replace(secret, REDACTED)
        for pattern in _PATTERNS:
            text = pattern.sub(lambda m: m.group(1) + REDACTED, text)
        return text


class Target(Protocol):
    """Where settings point: what `is_sandbox` reads."""

    @property
    def base_url(self) -> str: ...

    @property
    def is_local(self) -> bool: ...


def is_sandbox(settings: Target) -> bool:
    """True when `settings` point at a sandbox, never at Zuora: the embedded one (`is_local`), or a served one
    over plain http:// on a loopback host (the only plain http:// URLs the configuration accepts)."""
    if settings.is_local:
        return True
    try:
        url = urlsplit(settings.base_url or "")
        host = url.hostname
    except ValueError:
        return False
    return url.scheme.lower() == "http" and host is not None and is_loopback_host(host)


def is_loopback_host(host: str) -> bool:
    """True for `localhost` and any loopback address (127.0.0.0/8, ::1): where plain http:// is allowed."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def validate_base_url(base_url: str | None) -> str:
    """`base_url` without a trailing slash, if it is an http(s) URL with a host."""
    if not re.match(r"(?i)https?://[^/]", base_url or ""):
        raise ConfigError(f"Zuora base URL {base_url!r} must start with https:// (or http:// for a local sandbox)")
    return (base_url or "").rstrip("/")


def new_track_id() -> str:
    """A fresh per-run `Zuora-Track-Id`: `reconciler-<uuid4 hex>` (43 characters)."""
    return f"reconciler-{uuid.uuid4().hex}"


def validate_track_id(value: str) -> str:
    """Return `value` if Zuora accepts it as a Track-Id: 1-64 printable US-ASCII, none of `:;"'`."""
    if not isinstance(value, str) or not 0 < len(value) <= TRACK_ID_MAX:
        raise ConfigError(f"Zuora-Track-Id must be 1 to {TRACK_ID_MAX} characters, got {value!r}")
    bad = sorted({c for c in value if not _printable_ascii(c) or c in _TRACK_ID_FORBIDDEN})
    if bad:
        raise ConfigError(
            f"Zuora-Track-Id {value!r} contains {''.join(bad)!r}: use printable US-ASCII without : ; \" '"
        )
    return value


def validate_idempotency_key(value: str) -> str:
    """Return `value` if it is a usable Idempotency-Key: 1-255 printable US-ASCII characters."""
    if not isinstance(value, str) or not 0 < len(value) <= IDEMPOTENCY_KEY_MAX:
        raise ValueError(f"an Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_MAX} characters, got {len(str(value))}")
    if not all(_printable_ascii(c) for c in value):
        raise ValueError(f"an Idempotency-Key must be printable US-ASCII, got {value!r}")
    return value


def validate_header_value(name: str, value: str) -> str:
    """Return `value` if it can travel in header `name` (printable US-ASCII, no line breaks)."""
    if not all(_printable_ascii(c) for c in value):
        raise ConfigError(f"{name} must be printable US-ASCII, got {value!r}")
    return value


def _printable_ascii(char: str) -> bool:
    return " " <= char <= "~"


def path_segment(value: str) -> str:
    """A remote id (bulkKey, job Id) made safe for a URL path."""
    if not isinstance(value, str) or not value.strip() or value in (".", ".."):
        raise InvalidIdError(f"{value!r} is not a valid Zuora id")
    return quote(value, safe="")


_BULK_KEY = re.compile(r"[0-9A-Fa-f]{32}")
_UUID = re.compile(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}")
_FILE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def bulk_key(value: object, endpoint: str) -> str:
    """`value` if it is a Mass Updater bulkKey (32 hexadecimal characters), else a RemoteError.

    Ids Zuora returns become URL paths and archive file names: one of any other shape is refused at the
    boundary. The RemoteError has no status, so a POST answered this way stays in doubt (never rejected).
    """
    if not isinstance(value, str) or not _BULK_KEY.fullmatch(value):
        raise RemoteError(f"the answer's bulkKey {_shown(value)} is not 32 hexadecimal characters; refusing it",
                          endpoint=endpoint)
    return value


def co_job_id(value: object, endpoint: str) -> str:
    """`value` if it is a custom object bulk job Id (a UUID, 8-4-4-4-12 hexadecimal), else a RemoteError."""
    if not isinstance(value, str) or not _UUID.fullmatch(value):
        raise RemoteError(f"the answer's job Id {_shown(value)} is not a UUID; refusing it", endpoint=endpoint)
    return value


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def file_id_of(url_or_id: str) -> str:
    """The id of a Zuora file from an outputURL or a bare id: the URL's host is never used."""
    text = (url_or_id or "").strip()
    if "/" in text:
        match = re.search(r"/v1/files/([^/]+)/?$", urlsplit(text).path)
        if not match:
            raise RemoteError(f"{text!r} is not a Zuora file URL (.../v1/files/<id>)", endpoint="GET /v1/files")
        text = match.group(1)
    # Zuora documents 32-character object ids (hex in every example) but no shape for file ids: any
    # 1-64 letters, digits, `_` and `-` pass; nothing that could climb a path (`.`, `/`, `%`) does.
    if not _FILE_ID.fullmatch(text):
        raise RemoteError(f"{text!r} is not a Zuora file id", endpoint="GET /v1/files")
    return text


def describe_body(raw: bytes, content_type: str | None, expected: str) -> str:
    """A short, tag-free description of a body we cannot use (HTML error page, truncated JSON...)."""
    content_type = content_type or "no content type"
    if not raw.strip():
        return f"expected {expected}, got an empty body ({content_type})"
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]*>", " ", raw[:2000].decode("utf-8", "replace"))).strip()
    snippet = f": {text[:120]}" if text else ""
    return f"expected {expected}, got {len(raw)} bytes of {content_type}{snippet}"
