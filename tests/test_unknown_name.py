"""Every command that takes a spec name refuses an unknown one the same way: an error that names it, exit 1,
and nothing written (plan and apply check their filters before they open the ledger for writing).

One parametrized test instead of a copy per command's test file. Each case runs against an applied
repository and against one with no ledger yet.
"""

from __future__ import annotations

import pytest
from ops_fixtures import cli, state_files

NOT_FOUND = "no spec or job named 'nope'"
CASES = {
    "status": (("status", "nope"), NOT_FOUND),
    "status-among-known": (("status", "payments", "nope"), NOT_FOUND),
    "show": (("show", "nope"), NOT_FOUND),
    "errors": (("errors", "nope"), NOT_FOUND),
    "history": (("history", "nope"), NOT_FOUND),
    "forget": (("forget", "nope"), NOT_FOUND),
    "import": (("import", "nope", "a" * 32), "no spec named 'nope': import adopts a job for a spec of this repository"),
    "plan-target": (("plan", "--target", "nope"), "--target nope: no spec named 'nope' in the specs or the ledger"),
    "plan-exclude": (("plan", "--exclude", "nope"), "--exclude nope: no spec named 'nope' in the specs or the ledger"),
    "plan-rerun": (("plan", "--rerun", "nope"), "--rerun nope: no spec named 'nope'"),
    "apply-target": (("apply", "--auto-approve", "--target", "nope"),
                     "--target nope: no spec named 'nope' in the specs or the ledger"),
}


@pytest.mark.parametrize("ledger", ["applied", "no-ledger"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_an_unknown_name_is_an_error_naming_it_with_exit_1(request, case, ledger):
    args, message = CASES[case]
    settings = request.getfixturevalue("repo" if ledger == "applied" else "fresh")
    before = state_files(settings)
    had_state = (settings.root / "state").exists()
    proc = cli(settings, *args)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stderr.startswith(f"Error: {message}"), proc.stderr
    assert proc.stdout == ""
    # Refused before anything is opened for writing: no run recorded, no lock left, no ledger created.
    assert state_files(settings) == before
    assert (settings.root / "state").exists() == had_state


@pytest.mark.parametrize("command", ["plan", "apply"])
def test_a_bad_selector_is_refused_before_the_ledger_is_touched(repo, command):
    before = state_files(repo)
    proc = cli(repo, command, *(["--auto-approve"] if command == "apply" else []), "--selector", "teamfinance")
    assert proc.returncode == 1 and "--selector 'teamfinance': expected KEY=VALUE" in proc.stderr, proc.stderr
    assert state_files(repo) == before  # no run row, no stale lock
    assert cli(repo, "lock", "status").stdout.startswith("not locked")

