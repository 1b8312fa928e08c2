"""The command group, its global options and option types, and the entry point that maps every outcome
to a documented exit code (the commands themselves are in cli.core and cli.operator)."""

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



def color_of(c: Context) -> bool:
    """Whether to color the output: a terminal, and neither --no-color nor NO_COLOR."""
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
