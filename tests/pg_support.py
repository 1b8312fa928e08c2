"""A real PostgreSQL server for the tests: RECONCILER_TEST_POSTGRES_URL's, or a throwaway cluster.

Without RECONCILER_TEST_POSTGRES_URL the session starts its own cluster from the installed server
binaries (`initdb` + `pg_ctl`, found on PATH or under /usr/lib/postgresql/*/bin) in a temporary
directory, on a free loopback port, as the `postgres` user when running as root (the server refuses
to run as root), and stops it afterwards. Missing binaries fail the tests: `.ci/run` installs them,
and these tests must run, never skip. Every test gets a database of its own (`fresh_database`).

Authentication: trust for everyone on 127.0.0.1 except the role `secretive`, which needs its
password (scram-sha-256), so the wrong-password and redaction tests meet a real refusal.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg

EXTERNAL_URL = os.environ.get("RECONCILER_TEST_POSTGRES_URL")  # read at import: the tests' environment drops it
SECRET_ROLE = "secretive"
SECRET_PASSWORD = "s3cr3t-Pa55word"


def _binary(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if found is None:
        raise RuntimeError(f"{name} not found: install the PostgreSQL server (Debian: apt-get install postgresql), "
                           "or set RECONCILER_TEST_POSTGRES_URL to a server the tests may use")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_server_user() -> tuple[list[str], int | None, int | None]:
    """The command prefix and ids to run the server with: the `postgres` user when we are root."""
    if os.geteuid() != 0:
        return [], None, None
    user = pwd.getpwnam("postgres")
    return ["runuser", "-u", "postgres", "--"], user.pw_uid, user.pw_gid


@contextlib.contextmanager
def throwaway_cluster() -> Iterator[str]:
    """Start a cluster in a temporary directory; yields the superuser's URL (db `postgres`)."""
    prefix, uid, gid = _as_server_user()
    top = Path(tempfile.mkdtemp(prefix="reconciler-pg-"))
    data = top / "data"
    if uid is not None:
        os.chown(top, uid, gid or -1)
    port = _free_port()
    try:
        subprocess.run([*prefix, _binary("initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                        "--no-sync", "-E", "UTF8", "--locale=C"], check=True, capture_output=True)
        with (data / "pg_hba.conf").open("w") as hba:
            hba.write(f"host all {SECRET_ROLE} 127.0.0.1/32 scram-sha-256\n"
                      "host all all 127.0.0.1/32 trust\nlocal all all trust\n")
        options = f"-c listen_addresses=127.0.0.1 -p {port} -k {top} -c fsync=off -c max_connections=200"
        subprocess.run([*prefix, _binary("pg_ctl"), "-D", str(data), "-o", options, "-l", str(top / "log"),
                        "-w", "-t", "60", "start"], check=True, capture_output=True)
        url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        try:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(f"CREATE ROLE {SECRET_ROLE} LOGIN SUPERUSER PASSWORD '{SECRET_PASSWORD}'")
            yield url
        finally:
            subprocess.run([*prefix, _binary("pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                           capture_output=True)
    finally:
        shutil.rmtree(top, ignore_errors=True)


@contextlib.contextmanager
def server() -> Iterator[str]:
    """The admin URL of the server the tests use."""
    if EXTERNAL_URL:
        yield EXTERNAL_URL
    else:
        with throwaway_cluster() as url:
            yield url


def with_database(url: str, database: str, *, user: str | None = None, password: str | None = None) -> str:
    """`url` pointed at another database (and, given, another user and password)."""
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    name = user if user is not None else (parts.username or "")
    if password is not None:
        name = f"{name}:{password}"
    return urlunsplit((parts.scheme, f"{name}@{netloc}" if name else netloc, f"/{database}", parts.query, ""))


def fresh_database(admin_url: str) -> str:
    """Create an empty database; returns its URL."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return with_database(admin_url, name)


def objects(url: str) -> list[tuple[str, str]]:
    """Every table, index, function and schema a user made in the database, as (kind, name)."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT 'relation', c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%%' "
            "UNION ALL SELECT 'schema', nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg_%%' "
            "AND nspname NOT IN ('information_schema', 'public') "
            "UNION ALL SELECT 'function', p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2").fetchall()
    return [(kind, name) for kind, name in rows]
