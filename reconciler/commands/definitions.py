"""`reconciler definitions pull [OBJECT...]`: the tenant's custom object definitions into definitions/."""

from __future__ import annotations

from reconciler.errors import ExitCode


def pull(settings, out, *, objects=()) -> int:
    """Fetch the definitions (every object, or those named) and say which files were added, changed or removed."""
    from reconciler.engine.definitions import pull as fetch

    outcome = fetch(settings, objects)
    for path, status in outcome:
        out.write(f"{status:>9}  {path}\n")
    changed = sum(1 for _, status in outcome if status != "unchanged")
    out.write(f"{len(outcome)} definition{'s' * (len(outcome) != 1)} from {settings.environment}; {changed} "
              f"file{'s' * (changed != 1)} changed. Review and commit definitions/; `reconciler validate` checks "
              "the custom object jobs against it.\n")
    return ExitCode.OK
