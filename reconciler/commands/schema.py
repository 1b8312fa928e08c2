"""`reconciler schema`: print the spec JSON Schema, for editors and other tools."""

from __future__ import annotations

from reconciler.errors import ExitCode
from reconciler.spec import load as spec


def schema(out) -> int:
    """Write the JSON Schema of a spec document to `out`."""
    text = spec.schema_text()
    out.write(text if text.endswith("\n") else text + "\n")
    return ExitCode.OK
