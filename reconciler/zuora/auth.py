"""Zuora credentials and the bearer token sent with each call: OAuth client credentials or a static token.

Standard library only (the configuration imports `Credentials` without loading httpx). `Auth` hands the
client the token to send: a static `ZUORA_ACCESS_TOKEN` as is, or an OAuth token fetched through the
`request_token` callable it is given (the client's own request path: retries, `on_call` records) and
kept in a `TokenCache` shared by every thread until shortly before it expires.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from reconciler.errors import AuthError, ConfigError, RemoteError
from reconciler.model import REDACTED
from reconciler.zuora.wire import Redactor, Target, is_sandbox

__all__ = ["TOKEN_MARGIN", "Auth", "Credentials", "TokenCache", "credentials_for", "missing_credentials"]

TOKEN_MARGIN = 300.0  # refresh this long before expiry (or 10 % of the lifetime, if shorter)
DEFAULT_LIFETIME = 3600.0  # Zuora documents one hour
TOKEN_PATH = "/oauth/token"


@dataclass(frozen=True)
class Credentials:
    """OAuth client credentials or a bearer token, from environment variables only; never shown."""

    client_id: str | None = None
    client_secret: str | None = None
    access_token: str | None = None

    def __repr__(self) -> str:
        secret = REDACTED if self.client_secret else None
        token = REDACTED if self.access_token else None
        return f"Credentials(client_id={self.client_id!r}, client_secret={secret!r}, access_token={token!r})"

    __str__ = __repr__

    @property
    def usable(self) -> bool:
        """True when they can authenticate: a static token, or both halves of a client credential."""
        return bool(self.access_token or (self.client_id and self.client_secret))


def missing_credentials(base_url: str | None) -> ConfigError:
    """The one error for a real Zuora environment without credentials, naming the variables."""
    return ConfigError(f"no Zuora credentials for {base_url}: set ZUORA_CLIENT_ID and ZUORA_CLIENT_SECRET "
                       "(OAuth client credentials), or ZUORA_ACCESS_TOKEN")


def credentials_for(settings: Target, credentials: Credentials | None) -> Credentials:
    """The credentials a client for `settings` authenticates with; ConfigError when a real Zuora has none.

    The embedded sandbox (`environment: local`) always uses its documented default client, whatever
    ZUORA_* variables are exported (they may be a real tenant's); a served loopback sandbox uses them
    when they are set, else the defaults. Anything else needs them: checked before a ledger is written.
    """
    if is_sandbox(settings):
        from reconciler.sandbox.defaults import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET

        if settings.is_local or not (credentials and credentials.usable):
            return Credentials(DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET)
        return credentials
    if not (credentials and credentials.usable):
        raise missing_credentials(settings.base_url)
    return credentials


class TokenCache:
    """One OAuth access token shared by every thread, fetched once and refreshed before it expires."""

    def __init__(self, fetch: Callable[[], tuple[str, float]], *, clock: Callable[[], float] = time.monotonic,
                 redactor: Redactor | None = None):
        self._fetch = fetch  # returns (token, lifetime in seconds)
        self._clock = clock
        self._redactor = redactor
        self._lock = threading.Lock()
        self._token: str | None = None
        self._refresh_at = 0.0

    def get(self) -> str:
        """The current token, fetching a new one first when there is none or it is near expiry."""
        with self._lock:  # one fetch serves every waiting thread
            if self._token is None or self._clock() >= self._refresh_at:
                issued = self._clock()
                token, lifetime = self._fetch()
                if self._redactor is not None:
                    self._redactor.add(token)
                self._token = token
                self._refresh_at = issued + lifetime - min(TOKEN_MARGIN, lifetime * 0.1)
            return self._token

    def invalidate(self, token: str | None) -> None:
        """Forget `token` after Zuora refused it, unless another thread already replaced it."""
        with self._lock:
            if self._token == token:
                self._token = None


class Auth:
    """The bearer token for each call, from `credentials`; OAuth tokens come from `request_token(form)`."""

    def __init__(self, credentials: Credentials, *, base_url: str,
                 request_token: Callable[[dict[str, str]], dict[str, Any]],
                 clock: Callable[[], float] = time.monotonic, redactor: Redactor | None = None):
        self._credentials = credentials
        self._base_url = base_url
        self._request_token = request_token  # POST /oauth/token with this form, without a bearer
        self.static = bool(credentials.access_token)  # a token given as is: never refreshed
        self._tokens = TokenCache(self._fetch, clock=clock, redactor=redactor)

    def bearer(self) -> str:
        """The access token to send now, fetched or refreshed first when it is missing or near expiry."""
        return self._credentials.access_token or self._tokens.get()

    def invalidate(self, token: str | None) -> None:
        """Zuora refused `token`: the next `bearer()` fetches a fresh one (a static token stays)."""
        self._tokens.invalidate(token)

    def _fetch(self) -> tuple[str, float]:
        """POST /oauth/token with the client credentials: (access token, lifetime in seconds)."""
        client_id, client_secret = self._credentials.client_id, self._credentials.client_secret
        if not (client_id and client_secret):
            raise missing_credentials(self._base_url)
        form = {"client_id": client_id, "client_secret": client_secret, "grant_type": "client_credentials"}
        # Every failure here is an AuthError: whatever waits for this token was not sent with it, so no
        # answer from /oauth/token may ever be taken for Zuora's verdict on that request.
        try:
            data = self._request_token(form)
        except RemoteError as exc:
            if exc.status in (400, 401, 403):
                message = (f"Zuora refused the OAuth client credentials ({exc.remote_message}): "
                           "check ZUORA_CLIENT_ID and ZUORA_CLIENT_SECRET")
            else:
                message = f"could not get an OAuth token from Zuora ({exc.remote_message})"
            raise AuthError(message, status=exc.status, code=exc.code, request_id=exc.request_id,
                            endpoint=exc.endpoint, retryable=exc.retryable) from exc
        token = data.get("access_token")
        if not isinstance(token, str) or not token:
            raise AuthError("the token answer has no access_token", endpoint=f"POST {TOKEN_PATH}")
        expires_in = data.get("expires_in")
        if isinstance(expires_in, (int, float)) and not isinstance(expires_in, bool) and expires_in > 0:
            return token, float(expires_in)
        return token, DEFAULT_LIFETIME
