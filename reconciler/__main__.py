"""`python -m reconciler`: the same entry point as the `reconciler` command."""

from reconciler.cli import main

main()
