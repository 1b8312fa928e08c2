"""The command line: the only click user. It parses, routes, and maps errors to exit codes.

base.py holds the group, the global options and the entry point; core.py the everyday commands;
operator.py the operator's. Command modules are imported inside each command so that `--help` and
`--version` stay fast and import none of yaml, jsonschema, httpx or sqlite-utils.
"""

from reconciler.cli import core, operator  # noqa: F401  (importing them adds their commands to the group)
from reconciler.cli.base import cli, main

__all__ = ["cli", "main"]
