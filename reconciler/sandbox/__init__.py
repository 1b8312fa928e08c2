"""A faithful simulator of Zuora's Mass Updater and Custom Object bulk job APIs (DESIGN §7).

It is a thread-safe WSGI app (`make_app`) that `environment: local` runs in-process through
httpx.WSGITransport, and that `serve` (or `reconciler sandbox serve`) puts on real HTTP.

Default OAuth client (what `environment: local` uses; not a secret, the sandbox holds no data):

    DEFAULT_CLIENT_ID     = "reconciler-local-sandbox-client-0001"   (36 characters, as Zuora requires)
    DEFAULT_CLIENT_SECRET = "reconciler-local-sandbox-secret"        (31 characters; Zuora allows <= 42)

State lives in SQLite (`db_path`; None keeps it in memory for one process). Several processes may
share one file: WAL, a busy timeout and BEGIN IMMEDIATE for every read-modify-write keep them on
one consistent tenant. Time is `clock()` plus an offset persisted by POST /_sandbox/clock; job
lifecycles are computed from it when read, never by background threads.

Record Ids are deterministic: the n-th record ever created for an object in a tenant (deleted ones
count; POST /_sandbox/reset starts again at 1) gets uuid5(records.RECORD_ID_NAMESPACE,
f"{namespace}/{object}/{n}"), so the first `vehicle` record of a fresh tenant always has the same
Id. Custom object job ids stay random (uuid4).

Endpoints: POST /oauth/token; POST /v1/bulk, GET /v1/bulk/{key}, PUT /v1/bulk/{key}/stop,
GET /v1/files/{id}; POST/GET /objects/jobs, GET /objects/jobs/{id}, GET /objects/jobs/{id}/errors,
PATCH /objects/jobs/{id}/cancel, POST /objects/jobs/{id}/files; GET /objects/definitions/default[/{object}];
admin (no auth): GET /_sandbox/state, POST /_sandbox/clock, GET|POST /_sandbox/faults, POST /_sandbox/reset,
GET /_sandbox/records, POST /_sandbox/fail, POST /_sandbox/rate, POST /_sandbox/permissions.

Custom object definitions (definitions.py) are the demo set (vehicle, car, bus, passenger, driver) unless
`definitions` names a file or directory of them; jobs on other objects, unknown columns, wrong types, missing
required and duplicate unique values are refused as Zuora refuses them.

This package imports nothing from the rest of reconciler and nothing outside the standard library.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from .defaults import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET

if TYPE_CHECKING:
    from .app import SandboxApp
    from .server import Server

__all__ = [
    "DEFAULT_CLIENT_ID", "DEFAULT_CLIENT_SECRET", "DroppedConnection", "SandboxApp", "Server", "make_app", "serve",
]

# The simulator's classes load on first use: a client that only needs the default credentials
# (ZuoraClient against a served sandbox) then never imports the app, its store and its web layer.
_LAZY = {"SandboxApp": ".app", "Server": ".server", "DroppedConnection": ".web"}


def __getattr__(name: str):
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def make_app(
    db_path: str | None = None,
    *,
    clock=None,
    client_id: str = DEFAULT_CLIENT_ID,
    client_secret: str = DEFAULT_CLIENT_SECRET,
    pending_seconds: float = 2.0,
    rows_per_second: float = 100.0,
    token_seconds: int = 3599,
    replay_status: int = 200,
    v1_errors: str = "http",
    job_limit: str = "400",
    tenant_type: str = "production",
    definitions: str | None = None,
    denied_permissions=(),
    stopping_seconds: float = 0.0,
) -> SandboxApp:
    """A sandbox WSGI app on `db_path` (None: in memory); ValueError names a bad setting or unusable db.

    replay_status (200 | 409), v1_errors ("http" | "200") and job_limit ("400" | "failed") choose between
    Zuora's documented answers where it has two (README, "The sandbox"); tenant_type ("production" |
    "apisandbox" | "developer-sandbox") whose rate limits it enforces. `definitions` is a file or directory of
    custom object definitions (definitions.load) that replace the tenant's, the demo set when None;
    `denied_permissions` the Custom Objects permissions ("view", "edit", "delete") the API user lacks (403);
    `stopping_seconds` how long a stopped mass action stays `Stopping` (at least one row's processing time).
    """
    from . import definitions as co_definitions
    from .app import SandboxApp, make_settings
    from .store import Store

    settings = make_settings(client_id, client_secret, pending_seconds, rows_per_second, token_seconds,
                             replay_status=replay_status, v1_errors=v1_errors, job_limit=job_limit,
                             tenant_type=tenant_type, denied_permissions=denied_permissions,
                             stopping_seconds=stopping_seconds)
    found = co_definitions.DEMO if definitions is None else co_definitions.load(definitions)
    app = SandboxApp(Store(db_path), settings, clock=clock or time.time)
    app.install_definitions(found)
    return app


def serve(app, host: str = "127.0.0.1", port: int = 0) -> Server:
    """A threaded HTTP server for `app` on host:port (0 = any free port); call .start() or .serve_forever()."""
    from .server import Server

    return Server(app, host, port)
