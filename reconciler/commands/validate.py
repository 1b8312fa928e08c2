"""`reconciler validate [PATH...]`: every problem at once, exit 0 when valid and 1 when not."""

from __future__ import annotations

import json

from reconciler.errors import ExitCode
from reconciler.spec import load as spec


def validate(settings, out, *, paths=(), as_json: bool = False) -> int:
    """Check the specs (all, or those under `paths`) and their files; print problems and a summary."""
    check = spec.check_repo(settings, paths)
    problems = check.problems
    if as_json:
        document = {
            "valid": not problems,
            "specs": check.documents,
            "problems": [
                {"file": p.file, "line": p.line, "path": p.path, "row": p.row, "message": p.message} for p in problems
            ],
        }
        out.write(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    else:
        for problem in problems:
            out.write(problem.render() + "\n")
        out.write(check.summary + "\n")
    return ExitCode.ERROR if problems else ExitCode.OK
