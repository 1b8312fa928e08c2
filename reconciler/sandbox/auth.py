"""OAuth client credentials (POST /oauth/token) and bearer-token checks on every Zuora endpoint."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import urllib.parse
import uuid

from .web import MISSING_FIELD, ApiError, Request, Response, json_response

WWW_AUTHENTICATE = "Basic realm=Zuora API, ZSession realm=Zuora API, Bearer realm=Zuora API"
FORM_LIMIT = 64 * 1024


def unauthorized() -> ApiError:
    """The documented 401: ProxyUnauthorizedResponse plus WWW-Authenticate (reference F.2)."""
    return ApiError(
        401, "Authentication error", headers=[("WWW-Authenticate", WWW_AUTHENTICATE)],
        body={"message": "Authentication error"},
    )


def user_id(client_id: str) -> str:
    """The 32-hex user id the sandbox attributes a client's work to (CreatedById)."""
    return hashlib.md5(client_id.encode()).hexdigest()


def user_email(client_id: str) -> str:
    """The uploader e-mail shown as uploadedBy."""
    return f"api-{user_id(client_id)[:8]}@sandbox.zuora.local"


def _hash(token: str) -> str:
    # Only a hash is stored, so the db file never holds a usable token.
    return hashlib.sha256(token.encode()).hexdigest()


def issue_token(conn, req: Request, now: float, settings) -> Response:
    """POST /oauth/token: form-encoded client_credentials -> a bearer token valid expires_in seconds."""
    if req.media_type != "application/x-www-form-urlencoded":
        raise ApiError(400, "Content-Type must be application/x-www-form-urlencoded", code=90000020)
    try:
        form = urllib.parse.parse_qs(req.body(FORM_LIMIT, "form").decode("utf-8"), keep_blank_values=True)
    except UnicodeDecodeError:
        raise ApiError(400, "The form body is not valid UTF-8", code=90000020) from None
    fields = {name: (form.get(name) or [""])[0] for name in ("client_id", "client_secret", "grant_type")}
    for name, value in fields.items():
        if not value:
            raise ApiError(400, f"Missing required field '{name}'", code=90000000 + MISSING_FIELD)
    if fields["grant_type"] != "client_credentials":
        raise ApiError(400, "grant_type must be 'client_credentials'", code=90000020)
    if len(fields["client_id"]) != 36:
        raise ApiError(400, "client_id must be exactly 36 characters", code=90000020)
    if len(fields["client_secret"]) > 42:
        raise ApiError(400, "client_secret must be at most 42 characters", code=90000020)
    good_id = hmac.compare_digest(fields["client_id"].encode(), settings.client_id.encode())
    good_secret = hmac.compare_digest(fields["client_secret"].encode(), settings.client_secret.encode())
    if not (good_id and good_secret):
        raise unauthorized()
    token = secrets.token_hex(16)
    conn.execute("DELETE FROM tokens WHERE expires_at <= ?", (now,))
    conn.execute(
        "INSERT INTO tokens (token_hash, expires_at) VALUES (?, ?)", (_hash(token), now + settings.token_seconds)
    )
    uid = user_id(settings.client_id)
    entity = uuid.UUID(uid)
    return json_response(200, {
        "access_token": token,
        "expires_in": settings.token_seconds,
        "jti": secrets.token_hex(16),
        "scope": f"user.{uid} entity.{entity} entity.read service.bulk.read service.bulk.write tenant.9999",
        "token_type": "bearer",
    }, headers=[("Cache-Control", "no-store")])


def check_bearer(conn, req: Request, now: float) -> None:
    """Raise the documented 401 unless the request carries a valid, unexpired bearer token."""
    scheme, _, token = (req.header("authorization") or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise unauthorized()
    row = conn.one("SELECT expires_at FROM tokens WHERE token_hash = ?", (_hash(token.strip()),))
    if row is None or row["expires_at"] <= now:
        raise unauthorized()
    left = conn.meta("revoke_after")  # POST /_sandbox/tokens: revoke every token after N more calls
    if left is not None:
        if int(left) <= 1:
            conn.execute("DELETE FROM tokens")
            conn.execute("DELETE FROM meta WHERE key = 'revoke_after'")
        else:
            conn.set_meta("revoke_after", int(left) - 1)
