"""`python -m reconciler` and the `reconciler` command's entry point.

`reconciler --version` is answered here, before click and the command line are imported (it is what
scripts and CI run most often; bench P3); everything else goes to reconciler.cli.

A command is a short-lived batch that builds many small objects and few reference cycles (a plan of
10,000 specs holds about a million), so the cycle collector runs a hundred times less often than its
default: its passes over everything alive cost a plan of 10,000 specs a fifth of its time.
"""

import gc
import sys


def main() -> None:
    """Run the command line on sys.argv."""
    if sys.argv[1:] == ["--version"]:
        from reconciler import __version__

        sys.stdout.write(f"reconciler {__version__}\n")
        return
    gc.set_threshold(70_000, 10, 10)
    from reconciler.cli import main as run

    run()


if __name__ == "__main__":
    main()
