"""`reconciler sandbox serve`: the Zuora simulator over real HTTP until interrupted."""

from __future__ import annotations

import signal
import threading

from reconciler import sandbox
from reconciler.errors import ConfigError


def serve(out, *, host, port, db, client_id, client_secret, pending_seconds, rows_per_second, answers=None) -> int:
    """Serve the sandbox; the first output line is `Sandbox listening on URL`; ^C or SIGTERM stops it (exit 0).

    `answers` holds sandbox.make_app's other settings: Zuora's other documented answers (replay_status, v1_errors,
    job_limit), tenant_type, and the custom object `definitions` file and `denied_permissions`.
    """
    client_id = sandbox.DEFAULT_CLIENT_ID if client_id is None else client_id
    client_secret = sandbox.DEFAULT_CLIENT_SECRET if client_secret is None else client_secret
    if len(client_id) != 36:
        raise ConfigError(
            f"--client-id must be exactly 36 characters, as Zuora requires (got {len(client_id)}); "
            f"leave it out to use the default {sandbox.DEFAULT_CLIENT_ID}"
        )
    if not client_secret or len(client_secret) > 42:
        raise ConfigError("--client-secret must be 1 to 42 characters, as Zuora requires")
    speeds = {"pending_seconds": pending_seconds, "rows_per_second": rows_per_second}
    try:
        app = sandbox.make_app(
            db, client_id=client_id, client_secret=client_secret,
            **{name: value for name, value in speeds.items() if value is not None}, **(answers or {}),
        )
    except ValueError as err:  # a bad setting, or a --db file that is not a sandbox database
        raise ConfigError(f"sandbox serve: {err}; fix the option (or pass another --db path)") from None
    try:
        server = sandbox.serve(app, host=host or "127.0.0.1", port=port or 0)
    except OSError as err:
        raise ConfigError(f"sandbox serve: cannot listen on {host}:{port}: {err}; pick another --port") from None
    out.write(f"Sandbox listening on {server.url}\n")
    out.flush()
    if threading.current_thread() is threading.main_thread():
        # `kill` and CI runners send SIGTERM: shut down as cleanly as on ^C.
        signal.signal(signal.SIGTERM, _interrupt)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
    return 0


def _interrupt(signum, frame):
    raise KeyboardInterrupt
