"""The everyday commands: init, validate, schema, plan, apply, status, show, errors, history.

Each imports its command module when it runs, so `--help` stays fast.
"""

from __future__ import annotations

import sys

import click

from reconciler.cli.base import DURATION, color_of, cli, filter_options, pass_ctx


@cli.command()
@click.argument("directory", default=".", type=click.Path(file_okay=False))
@click.option("--force", is_flag=True, help="Overwrite files that already exist.")
@click.option("--ledger", type=click.Choice(["sqlite", "postgres"]), default="sqlite", show_default=True,
              help="Where CI keeps the ledger: a SQLite file it commits back, or a PostgreSQL database "
                   "(the RECONCILER_LEDGER secret) with nothing committed.")
@pass_ctx
def init(c, directory, force, ledger):
    """Scaffold reconciler.yaml, specs/, data/, state/.gitignore, .gitattributes and a CI workflow."""
    from reconciler.commands.init import init as run

    return run(directory, c.out, force=force, ledger=ledger)


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
        detailed_exitcode=detailed_exitcode, refresh=not no_refresh, color=color_of(c),
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
        parallelism=parallelism, lock_timeout=lock_timeout, color=color_of(c),
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

    return run(c.settings(), c.out, names=names, refresh=refresh, wait=wait, timeout=timeout, as_json=as_json, color=color_of(c))


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
