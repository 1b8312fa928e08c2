"""HTTP primitives for the simulator: requests, responses, per-family error bodies, multipart, gzip."""

from __future__ import annotations

import gzip
import json
import secrets
import urllib.parse
import zlib
from dataclasses import dataclass, field
from typing import Iterable

V1, OBJECTS, OAUTH, ADMIN, OTHER = "v1", "objects", "oauth", "admin", "other"

# 6-digit resource code per API family; an error code is resource * 100 + category (reference F.1, B.8).
RESOURCE = {V1: 500000, OBJECTS: 710130, OAUTH: 900000}

# Categories shared by both code schemes (reference F.1 and B.8).
FORMAT, UNKNOWN_FIELD, MISSING_FIELD, MISSING_PARAM = 20, 21, 22, 23
RULE, NOT_FOUND, METHOD, LOCKING, INTERNAL, TEMPORARY, LIMIT, MALFORMED = 30, 40, 45, 50, 60, 61, 70, 90

GZIP_TYPES = ("application/json", "application/xml", "text/html", "text/csv", "text/plain")
GZIP_MIN_BYTES = 1000


class ApiError(Exception):
    """An error response; rendered in the shape of the API family the request belongs to."""

    def __init__(self, status, message, *, category=FORMAT, code=None, headers=(), body=None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.category = category
        self.code = code
        self.headers = list(headers)
        self.body = body

    def payload(self, family: str):
        """The JSON body for this error in `family`'s documented shape."""
        if self.body is not None:
            return self.body
        code = self.code if self.code is not None else RESOURCE.get(family, 500000) * 100 + self.category
        if family == V1:
            return {"success": False, "processId": process_id(), "reasons": [{"code": code, "message": self.message}]}
        if family in (OBJECTS, OAUTH):
            return {"code": code, "message": self.message}
        if family == ADMIN:
            return {"error": self.message}
        return {"message": self.message}


class DroppedConnection(ConnectionResetError):
    """Raised after an effect is committed to make the connection close without any response."""


def process_id() -> str:
    """A v1-style processId: 16 upper-case hex characters."""
    return secrets.token_hex(8).upper()


def family_of(path: str) -> str:
    """Which API family (and so which error shape) a path belongs to."""
    for prefix, family in (("/v1", V1), ("/objects", OBJECTS), ("/oauth", OAUTH), ("/_sandbox", ADMIN)):
        if path == prefix or path.startswith(prefix + "/"):
            return family
    return OTHER


@dataclass
class Response:
    """A response before the common headers (request id, rate limits, gzip) are added."""

    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: list = field(default_factory=list)
    chunks: Iterable[bytes] | None = None  # streamed instead of `body` when set


def json_response(status: int, payload, headers=()) -> Response:
    """A JSON response."""
    return Response(status, json.dumps(payload, separators=(",", ":")).encode(), headers=list(headers))


class Request:
    """The parts of a WSGI environ the simulator uses."""

    def __init__(self, environ):
        self.environ = environ
        self.method = environ.get("REQUEST_METHOD", "GET").upper()
        self.path = environ.get("PATH_INFO") or "/"
        self.query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        self.headers = {"content-type": environ.get("CONTENT_TYPE", "")}
        for key, value in environ.items():
            if key.startswith("HTTP_"):
                self.headers[key[5:].replace("_", "-").lower()] = value

    def param(self, name: str, default=None):
        """The last value of a query parameter (blank if given blank), or `default` when absent."""
        values = self.query.get(name)
        return values[-1] if values else default

    def header(self, name: str, default=None):
        """A request header by case-insensitive name."""
        return self.headers.get(name.lower(), default)

    @property
    def media_type(self) -> str:
        """The Content-Type without parameters, lower-cased."""
        return (self.headers.get("content-type") or "").split(";")[0].strip().lower()

    def base_url(self) -> str:
        """Scheme and host the client used, for absolute URLs in bodies (outputURL)."""
        environ = self.environ
        host = self.headers.get("host") or f"{environ.get('SERVER_NAME', 'localhost')}:{environ.get('SERVER_PORT', '80')}"
        return f"{self.environ.get('wsgi.url_scheme', 'http')}://{host}"

    def body(self, limit: int, what: str = "request body") -> bytes:
        """Read the body (gunzipped if Content-Encoding says so), refusing more than `limit` bytes."""
        stream = self.environ.get("wsgi.input")
        try:
            length = int(self.environ.get("CONTENT_LENGTH") or -1)
        except ValueError:
            raise ApiError(400, "Content-Length is not a number") from None
        if length > limit:
            raise ApiError(413, f"The {what} exceeds the limit of {limit} bytes")
        if stream is None or (length < 0 and "chunked" not in self.headers.get("transfer-encoding", "")):
            raw = b""
        else:
            raw = stream.read(limit + 1 if length < 0 else length)
        if len(raw) > limit:
            raise ApiError(413, f"The {what} exceeds the limit of {limit} bytes")
        encoding = (self.headers.get("content-encoding") or "identity").strip().lower()
        if encoding == "gzip":
            return gunzip(raw, limit, what)
        if encoding != "identity":
            raise ApiError(415, f"Unsupported Content-Encoding '{encoding}'; use gzip or none")
        return raw


def gunzip(data: bytes, limit: int, what: str = "request body") -> bytes:
    """Inflate gzip data, refusing more than `limit` inflated bytes (no gzip bombs)."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error:
        raise ApiError(400, "The request body is not valid gzip (Content-Encoding: gzip)") from None
    if len(out) > limit:
        raise ApiError(413, f"The {what} exceeds the limit of {limit} bytes once decompressed")
    if not inflater.eof:
        raise ApiError(400, "The request body is truncated gzip (Content-Encoding: gzip)")
    return out


def maybe_gzip(response: Response, accept_encoding: str) -> Response:
    """Gzip a large text/JSON body when the client accepts it, as Zuora does."""
    accepted = [part.split(";")[0].strip().lower() for part in accept_encoding.split(",")]
    base_type = response.content_type.split(";")[0].strip().lower()
    if (
        "gzip" in accepted
        and response.chunks is None
        and len(response.body) > GZIP_MIN_BYTES
        and base_type in GZIP_TYPES
    ):
        response.body = gzip.compress(response.body, mtime=0)
        response.headers.append(("Content-Encoding", "gzip"))
        response.headers.append(("Vary", "Accept-Encoding"))
    return response


@dataclass
class Context:
    """What a handler gets: the open transaction, the sandbox time, settings and the request."""

    conn: object
    now: float
    settings: object
    request: Request
    idempotency_key: str | None = None


@dataclass
class Part:
    """One part of a multipart/form-data body."""

    name: str
    data: bytes
    filename: str | None
    content_type: str | None


def _header_params(value: str) -> tuple[str, dict]:
    """Split `form-data; name="x"; filename="y"` into its value and parameters."""
    head, _, rest = value.partition(";")
    params = {}
    for item in _split_params(rest):
        key, _, val = item.partition("=")
        val = val.strip()
        if len(val) >= 2 and val[0] == val[-1] == '"':
            val = val[1:-1].replace('\\"', '"')
        params[key.strip().lower()] = val
    return head.strip().lower(), params


def _split_params(text: str) -> list[str]:
    """Split on semicolons that are not inside double quotes."""
    items, current, quoted = [], [], False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == ";" and not quoted:
            items.append("".join(current))
            current = []
        else:
            current.append(char)
    items.append("".join(current))
    return [item for item in items if item.strip()]


def parse_multipart(body: bytes, content_type: str) -> dict[str, Part]:
    """Parse a multipart/form-data body; malformed input raises a 400 ApiError."""
    media, params = _header_params(content_type or "")
    if media != "multipart/form-data":
        raise ApiError(400, "Content-Type must be multipart/form-data")
    boundary = params.get("boundary", "")
    if not boundary or len(boundary) > 200:
        raise ApiError(400, "multipart/form-data Content-Type has no boundary")
    delimiter = b"\r\n--" + boundary.encode("latin-1")
    sections = (b"\r\n" + body).split(delimiter)
    if len(sections) < 3 or not sections[-1].startswith(b"--"):
        raise ApiError(400, "Malformed multipart/form-data body (missing boundary or closing delimiter)")
    parts: dict[str, Part] = {}
    for section in sections[1:-1]:
        section = section[2:] if section.startswith(b"\r\n") else section.lstrip(b" \t")[2:]
        raw_headers, sep, data = section.partition(b"\r\n\r\n")
        if not sep:
            raise ApiError(400, "Malformed multipart/form-data part (no blank line after its headers)")
        headers = {}
        for line in raw_headers.decode("latin-1").split("\r\n"):
            key, colon, value = line.partition(":")
            if colon:
                headers[key.strip().lower()] = value.strip()
        disposition, disp_params = _header_params(headers.get("content-disposition", ""))
        name = disp_params.get("name")
        if disposition != "form-data" or not name:
            raise ApiError(400, "Malformed multipart/form-data part (no Content-Disposition name)")
        parts.setdefault(name, Part(name, data, disp_params.get("filename"), headers.get("content-type")))
    return parts
