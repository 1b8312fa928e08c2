"""`python -m reconciler` and the `reconciler` command's entry point.

`reconciler --version` is answered here, before click and the command line are imported (it is what
scripts and CI run most often; bench P3); everything else goes to reconciler.cli.
"""

import sys


def main() -> None:
    """Run the command line on sys.argv."""
    if sys.argv[1:] == ["--version"]:
        from reconciler import __version__

        sys.stdout.write(f"reconciler {__version__}\n")
        return
    from reconciler.cli import main as run

    run()


if __name__ == "__main__":
    main()
