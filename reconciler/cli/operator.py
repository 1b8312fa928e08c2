"""The operator's commands: audit, import and forget, lock, ledger, definitions, and the sandbox server.

Each imports its command module when it runs, so `--help` stays fast.
"""

from __future__ import annotations

import click

from reconciler.cli.base import cli, pass_ctx


@cli.group()
def audit():
    """Verify or export the tamper-evident event log."""


@audit.command("verify")
@click.option("--head", metavar="HASH[:COUNT]", help="Also check the ledger still extends this head (as apply prints it).")
@pass_ctx
def audit_verify(c, head):
    """Recompute the hash chain and the job rows it binds; exit 1 naming the first bad row."""
    from reconciler.commands.audit import verify as run

    return run(c.settings(), c.out, head=head)


@audit.command("export")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]), default="jsonl", show_default=True)
@click.option("--output", type=click.Path(dir_okay=False), help="Write to FILE instead of standard output.")
@pass_ctx
def audit_export(c, fmt, output):
    """Every event with its hashes, for verification outside the tool."""
    from reconciler.commands.audit import export as run

    return run(c.settings(), c.out, fmt=fmt, output=output)


@cli.command("import")
@click.argument("name")
@click.argument("remote_id")
@pass_ctx
def import_(c, name, remote_id):
    """Adopt an existing bulk key / custom object job id for a spec."""
    from reconciler.commands.adopt import adopt as run

    return run(c.settings(), c.out, name=name, remote_id=remote_id)


@cli.command()
@click.argument("name")
@pass_ctx
def forget(c, name):
    """Retire a spec's record without any remote call."""
    from reconciler.commands.forget import forget as run

    return run(c.settings(), c.out, name=name)


@cli.group()
def lock():
    """Inspect or release the ledger lock."""


@lock.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@pass_ctx
def lock_status(c, as_json):
    """Show who holds the lock."""
    from reconciler.commands.lock import status as run

    return run(c.settings(), c.out, as_json=as_json)


@lock.command("release")
@click.argument("lock_id")
@click.option("--force", is_flag=True, help="Release it even though its holder's process is alive on this host.")
@pass_ctx
def lock_release(c, lock_id, force):
    """Release a lock by its id (recorded in the audit log)."""
    from reconciler.commands.lock import release as run

    return run(c.settings(), c.out, lock_id=lock_id, force=force)


@cli.group()
def ledger():
    """Maintain the ledger: checkpoint its file, copy it between SQLite and PostgreSQL."""


@ledger.command("checkpoint")
@pass_ctx
def ledger_checkpoint(c):
    """Copy the ledger's WAL into the file (after a killed run; CI runs it before git add)."""
    from reconciler.commands.ledger import checkpoint as run

    return run(c.settings(), c.out)


@ledger.command("copy")
@click.argument("source", metavar="SRC")
@click.argument("destination", metavar="DST")
@pass_ctx
def ledger_copy(c, source, destination):
    """Copy the ledger to a new SQLite file or PostgreSQL database (chain, lineage and serial kept)."""
    from reconciler.commands.ledger import copy as run

    return run(c.settings(), c.out, source=source, destination=destination)


@cli.group()
def definitions():
    """Custom object definitions: fetch the tenant's into definitions/ for validate to check against."""


@definitions.command("pull")
@click.argument("objects", nargs=-1, metavar="[OBJECT...]")
@pass_ctx
def definitions_pull(c, objects):
    """Write the tenant's custom object definitions (all, or those named) to definitions/default/."""
    from reconciler.commands.definitions import pull as run

    return run(c.settings(), c.out, objects=objects)


@cli.group()
def sandbox():
    """The Zuora simulator: the embedded `local` environment, served over HTTP."""


@sandbox.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True, help="0 picks a free port.")
@click.option("--db", type=click.Path(dir_okay=False), help="SQLite file for the tenant (default: in memory).")
@click.option("--client-id", default=None, help="OAuth client id it accepts (36 characters; default documented).")
@click.option("--client-secret", default=None, help="OAuth client secret it accepts (default documented).")
@click.option("--pending-seconds", type=click.FloatRange(0), default=None, help="How long a job waits before processing.")
@click.option("--rows-per-second", type=click.FloatRange(0, min_open=True), default=None, help="Processing speed.")
@click.option("--stopping-seconds", type=click.FloatRange(0), default=0, show_default=True,
              help="How long a stopped mass action stays Stopping (at least one row's time).")
@click.option("--replay-status", type=click.Choice(["200", "409"]), default="200", show_default=True,
              help="Status of a replayed Idempotency-Key success (409: the stored body with status 409).")
@click.option("--v1-errors", type=click.Choice(["http", "200"]), default="http", show_default=True,
              help="v1 errors as their HTTP status, or as HTTP 200 with success: false.")
@click.option("--job-limit", type=click.Choice(["400", "failed"]), default="400", show_default=True,
              help="The 6th active custom object job: a 400, or created failed with 71012560.")
@click.option("--tenant-type", type=click.Choice(["production", "apisandbox", "developer-sandbox"]),
              default="production", show_default=True, help="Whose rate limits to enforce, as Zuora does per tenant type.")
@click.option("--definitions", "definitions_path", type=click.Path(), default=None,
              help="Custom object definitions: a JSON file (the GET /objects/definitions/default answer, or one "
                   "definition) or a repo's definitions/ folder (default: the demo set).")
@click.option("--without-permission", "denied", multiple=True, type=click.Choice(["view", "edit", "delete"]),
              help="A Custom Objects permission the API user lacks: its calls get Zuora's 403 (repeatable).")
@pass_ctx
def sandbox_serve(c, host, port, db, client_id, client_secret, pending_seconds, rows_per_second, stopping_seconds,
                  replay_status, v1_errors, job_limit, tenant_type, definitions_path, denied):
    """Serve the simulator over real HTTP (threaded) until interrupted."""
    from reconciler.commands.sandbox import serve as run

    return run(
        c.out, host=host, port=port, db=db, client_id=client_id, client_secret=client_secret,
        pending_seconds=pending_seconds, rows_per_second=rows_per_second,
        answers={"replay_status": int(replay_status), "v1_errors": v1_errors, "job_limit": job_limit,
                 "tenant_type": tenant_type, "definitions": definitions_path, "denied_permissions": denied,
                 "stopping_seconds": stopping_seconds},
    )
