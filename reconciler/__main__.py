"""`python -m reconciler` and the `reconciler` command's entry point.

`reconciler --version` is answered here, before click and the command line are imported (it is what
scripts and CI run most often; bench P3); everything else goes to reconciler.cli.

A command is a short-lived batch that builds many small objects and few reference cycles (a plan of
10,000 specs holds about a million), so the cycle collector runs a hundred times less often than its
default: its passes over everything alive cost a plan of 10,000 specs a fifth of its time.

Two optional packages that our dependencies import whenever they happen to be installed, and that
reconciler never uses, are blocked for a command run: httpcore imports `trio` for its trio backend
(~80 ms; the client is synchronous) and httpx imports its command-line client `httpx._main`, which
imports rich and pygments (~40 ms). Where they are installed, that was a tenth of an apply of 200 specs
(bench P2). Both libraries fall back as they do when the package is missing.
"""

import gc
import sys

UNUSED_IMPORTS = ("trio", "httpx._main")


def block_unused_imports() -> None:
    """Make `import` of each UNUSED_IMPORTS module raise ImportError in this process (a None entry)."""
    for name in UNUSED_IMPORTS:
        sys.modules.setdefault(name, None)


def main() -> None:
    """Run the command line on sys.argv."""
    if sys.argv[1:] == ["--version"]:
        from reconciler import __version__

        sys.stdout.write(f"reconciler {__version__}\n")
        return
    gc.set_threshold(70_000, 10, 10)
    block_unused_imports()
    from reconciler.cli import main as run

    run()


if __name__ == "__main__":
    main()
