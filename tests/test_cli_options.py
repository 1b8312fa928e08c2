"""Options that take a value in more than one spelling."""

from __future__ import annotations

import pytest
from ops_fixtures import cli


@pytest.mark.parametrize("value, accepted", [("90", True), ("2.5", True), ("30s", True), ("2m", True), ("1h30m", True),
                                             ("1x", False), ("m", False), ("1m1m", False), ("-5s", False)])
def test_timeouts_take_seconds_or_terraform_durations(repo, value, accepted):
    proc = cli(repo, "status", "--wait", "--timeout", value)
    if accepted:
        assert proc.returncode == 0, proc.stderr
    else:
        assert proc.returncode == 1 and f"'{value}' is not a duration" in proc.stderr, proc.stderr
