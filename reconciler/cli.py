"""The command line: the only click user. It parses, routes, and maps errors to exit codes.

Command modules are imported inside each command so that `--help` and `--version` stay fast and
import none of yaml, jsonschema, httpx or sqlite-utils.
"""

from __future__ import annotations

import re
import sys

import click

from reconciler import __version__
from reconciler.errors import ExitCode, ReconcilerError, SpecError, Terminated, stop_like_ctrl_c_on_sigterm


class Context:
    """The global options, handed to every command (a plain class: dataclasses costs --help 12 ms)."""

    def __init__(self, config: str | None, chdir: str | None, verbose: bool, no_color: bool):
        self.config, self.chdir, self.verbose, self.no_color = config, chdir, verbose, no_color

    def settings(self):
        """Load reconciler.yaml and the environment (only commands that need them call this)."""
        from reconciler.engine.config import load_settings

        return load_settings(config=self.config, chdir=self.chdir)

    @property
    def out(self):
        return click.get_text_stream("stdout")


pass_ctx = click.make_pass_decorator(Context)


class Duration(click.ParamType):
    """Seconds, plain (`90`, `2.5`) or Terraform-style (`30s`, `2m`, `1h30m`)."""

    name = "duration"
    _PART = re.compile(r"(\d+(?:\.\d+)?)([hms])")
    _UNIT = {"h": 3600.0, "m": 60.0, "s": 1.0}

    def convert(self, value, param, ctx):
        if isinstance(value, (int, float)):
            return float(value)
        text = str(value).strip()
        try:
            return float(text)
        except ValueError:
            pass
        parts = self._PART.findall(text)
        if not parts or "".join(n + u for n, u in parts) != text or len({u for _, u in parts}) != len(parts):
            self.fail(f"{value!r} is not a duration: give seconds (90) or e.g. 30s, 2m, 1h30m", param, ctx)
        return sum(float(n) * self._UNIT[u] for n, u in parts)


DURATION = Duration()

_filter_options = [
    click.option("--target", "targets", multiple=True, metavar="NAME", help="Only these specs (repeatable)."),
    click.option("--exclude", "excludes", multiple=True, metavar="NAME", help="Leave these specs out (repeatable)."),
    click.option("--selector", "selectors", multiple=True, metavar="KEY=VALUE", help="Only specs with this label (repeatable, ANDed)."),
    click.option("--rerun", "reruns", multiple=True, metavar="NAME", help="Run this spec again although it completed (recorded in the audit log)."),
]


def filter_options(func):
    for option in reversed(_filter_options):
        func = option(func)
    return func


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="reconciler", message="%(prog)s %(version)s")
@click.option("--config", type=click.Path(dir_okay=False), help="Path to reconciler.yaml (default: found in the current directory or a parent).")
@click.option("--chdir", "-C", type=click.Path(file_okay=False), help="Run as if started in this directory.")
@click.option("-v", "--verbose", is_flag=True, help="Log remote calls (secrets redacted) and show tracebacks.")
@click.option("--no-color", is_flag=True, help="Never color the output (NO_COLOR is honoured too).")
@click.pass_context
def cli(ctx, config, chdir, verbose, no_color):
    """Declarative, GitOps-style reconciler for Zuora bulk operations.

    Each Mass Updater action or Custom Object bulk job is a YAML spec plus its CSV in git;
    `plan` shows what would change, `apply` converges Zuora exactly once per spec revision.
    """
    if verbose:
        import logging  # with traceback below, ~5 ms that --help and every quiet run skip

        logging.basicConfig(level=logging.DEBUG, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    ctx.obj = Context(config=config, chdir=chdir, verbose=verbose, no_color=no_color)


@cli.command()
@click.argument("directory", default=".", type=click.Path(file_okay=False))
@click.option("--force", is_flag=True, help="Overwrite files that already exist.")
@pass_ctx
def init(c, directory, force):
    """Scaffold reconciler.yaml, specs/, data/, state/.gitignore, .gitattributes and a CI workflow."""
    from reconciler.commands.init import init as run

    return run(directory, c.out, force=force)


@cli.command()
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print the problems as JSON.")
@pass_ctx
def validate(c, paths, as_json):
    """Check specs and their files; exit 0 when valid, 1 with every problem listed."""
    from reconciler.commands.validate import validate as run

    return run(c.settings(), c.out, paths=paths, as_json=as_json)


@cli.command()
@pass_ctx
def schema(c):
    """Print the JSON Schema of a spec document (for editors)."""
    from reconciler.commands.schema import schema as run

    return run(c.out)


@cli.command()
@click.option("--out", "out_file", type=click.Path(dir_okay=False), help="Save the plan to FILE for `apply FILE`.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan document as JSON.")
@click.option("--markdown", is_flag=True, help="Print the plan as a pull-request comment.")
@click.option("--detailed-exitcode", is_flag=True, help="Exit 0 with no changes, 2 with changes, 1 on error or conflict.")
@click.option("--no-refresh", is_flag=True, help="Plan from the ledger alone; fetch nothing and write nothing.")
@filter_options
@pass_ctx
def plan(c, out_file, as_json, markdown, detailed_exitcode, no_refresh, targets, excludes, selectors, reruns):
    """Show what apply would do: submit, upload, replace, stop, cancel, retire, wait, conflict."""
    from reconciler.commands.plan import plan as run

    return run(
        c.settings(), c.out, out_file=out_file, as_json=as_json, markdown=markdown,
        detailed_exitcode=detailed_exitcode, refresh=not no_refresh, color=_color(c),
        targets=targets, excludes=excludes, selectors=selectors, reruns=reruns,
    )


@cli.command()
@click.argument("plan_file", required=False, type=click.Path(dir_okay=False))
@click.option("--auto-approve", is_flag=True, help="Do not ask for confirmation.")
@click.option("--wait", is_flag=True, help="Keep going until every job is terminal, submitting dependents as they unblock.")
@click.option("--timeout", type=DURATION, default=None, metavar="DURATION", help="Give up waiting after this long (with --wait): 90, 30s, 2m, 1h30m.")
@click.option("--parallelism", type=click.IntRange(1, 40), default=None, help="Concurrent remote calls (default from reconciler.yaml).")
@click.option("--lock-timeout", type=DURATION, default=0.0, show_default=True, metavar="DURATION", help="How long to wait for another run's lock: 90, 30s, 2m, 1h30m.")
@filter_options
@pass_ctx
def apply(c, plan_file, auto_approve, wait, timeout, parallelism, lock_timeout, targets, excludes, selectors, reruns):
    """Converge: execute the plan (or a saved PLAN_FILE) exactly once."""
    from reconciler.commands.apply import apply as run

    return run(
        c.settings(), c.out, plan_file=plan_file, auto_approve=auto_approve, wait=wait, timeout=timeout,
        parallelism=parallelism, lock_timeout=lock_timeout, color=_color(c),
        answers=sys.stdin if sys.stdin.isatty() and sys.stdout.isatty() else None,
        targets=targets, excludes=excludes, selectors=selectors, reruns=reruns,
    )


@cli.command()
@click.argument("names", nargs=-1)
@click.option("--refresh", is_flag=True, help="Fetch live status first (records drift).")
@click.option("--wait", is_flag=True, help="Poll until every listed job is terminal.")
@click.option("--timeout", type=DURATION, default=None, metavar="DURATION", help="Give up waiting after this long: 90, 30s, 2m, 1h30m.")
@click.option("--json", "as_json", is_flag=True, help="Print the jobs as JSON.")
@pass_ctx
def status(c, names, refresh, wait, timeout, as_json):
    """Table of jobs: status, progress, success/error counts, age."""
    from reconciler.commands.status import status as run

    return run(c.settings(), c.out, names=names, refresh=refresh, wait=wait, timeout=timeout, as_json=as_json, color=_color(c))


@cli.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@pass_ctx
def show(c, name, as_json):
    """One spec's record: fingerprint, revision, file, every job and its events."""
    from reconciler.commands.show import show as run

    return run(c.settings(), c.out, name=name, as_json=as_json)


@cli.command()
@click.argument("name")
@click.option("--failed-rows", type=click.Path(dir_okay=False), help="Write a CSV of just the failed rows, same columns as the input.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@pass_ctx
def errors(c, name, failed_rows, as_json):
    """Failed rows of a spec's latest job (from the archived result)."""
    from reconciler.commands.errors import errors as run

    return run(c.settings(), c.out, name=name, failed_rows=failed_rows, as_json=as_json)


@cli.command()
@click.argument("name", required=False)
@click.option("--limit", type=click.IntRange(1), default=50, show_default=True, help="Newest N events.")
@click.option("--event", "event_types", metavar="TYPE", multiple=True,
              help="Only events of this type (repeatable), e.g. status_change, remote_call.")
@click.option("--all", "every", is_flag=True, help="Every event, the remote calls behind the decisions included.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@pass_ctx
def history(c, name, limit, event_types, every, as_json):
    """The audit log, newest first (decisions; --all adds the remote calls)."""
    from reconciler.commands.history import history as run

    return run(c.settings(), c.out, name=name, limit=limit, as_json=as_json, event_types=event_types, every=every)


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
def sandbox_serve(c, host, port, db, client_id, client_secret, pending_seconds, rows_per_second, replay_status,
                  v1_errors, job_limit, tenant_type, definitions_path, denied):
    """Serve the simulator over real HTTP (threaded) until interrupted."""
    from reconciler.commands.sandbox import serve as run

    return run(
        c.out, host=host, port=port, db=db, client_id=client_id, client_secret=client_secret,
        pending_seconds=pending_seconds, rows_per_second=rows_per_second,
        answers={"replay_status": int(replay_status), "v1_errors": v1_errors, "job_limit": job_limit,
                 "tenant_type": tenant_type, "definitions": definitions_path, "denied_permissions": denied},
    )


def _color(c: Context) -> bool:
    import os

    if c.no_color or os.environ.get("NO_COLOR"):
        return False
    return sys.stdout.isatty()


def _report(err: ReconcilerError) -> None:
    if isinstance(err, SpecError):
        for problem in err.problems:
            click.echo(problem.render(), err=True)
    click.echo(f"Error: {err}", err=True)


def main(argv=None) -> None:
    """Entry point: run the group and turn every outcome into a documented exit code."""
    args = sys.argv[1:] if argv is None else list(argv)
    ctx: click.Context | None = None
    previous = stop_like_ctrl_c_on_sigterm()
    try:
        ctx = cli.make_context("reconciler", args)  # parses the global options (-v in any spelling: -vC .)
        with ctx:
            code = cli.invoke(ctx)
    except click.exceptions.Abort:
        click.echo("Interrupted.", err=True)
        code = ExitCode.INTERRUPTED
    except click.exceptions.ClickException as err:
        err.show()
        code = ExitCode.ERROR
    except click.exceptions.Exit as err:
        code = err.exit_code
    except ReconcilerError as err:
        if _verbose(ctx):
            import traceback

            traceback.print_exc()
        _report(err)
        code = err.exit_code
    except Terminated:
        click.echo("Terminated.", err=True)
        code = ExitCode.TERMINATED
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        code = ExitCode.INTERRUPTED
    except BrokenPipeError:
        code = ExitCode.OK
    except Exception as err:  # the one place an unexpected error becomes exit 3
        if _verbose(ctx):
            import traceback

            traceback.print_exc()
        click.echo(f"Internal error: {type(err).__name__}: {err} (run with -v for the traceback)", err=True)
        code = ExitCode.INTERNAL
    finally:
        if previous is not None:
            import signal

            signal.signal(signal.SIGTERM, previous)
    sys.exit(int(code or 0))


def _verbose(ctx: click.Context | None) -> bool:
    """-v/--verbose as click parsed it (False when the arguments did not parse)."""
    return bool(ctx is not None and ctx.params.get("verbose"))
