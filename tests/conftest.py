"""Shared fixtures. Every test runs with a temporary HOME and no Zuora credentials from the outside."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


REPO_STATE = REPO_ROOT / "state"


def _state_snapshot() -> dict[str, tuple]:
    """Every entry under the repository's own state/ (state/local after a quick start, ...) with its type,
    size and mtime: a test that creates, deletes, writes or touches anything there changes it."""
    if not REPO_STATE.exists():
        return {}
    entries = {".": ("dir", None, REPO_STATE.stat().st_mtime_ns)}
    for path in sorted(REPO_STATE.rglob("*")):
        info = path.lstat()
        kind = "dir" if path.is_dir() else "file"
        entries[path.relative_to(REPO_STATE).as_posix()] = (kind, None if kind == "dir" else info.st_size,
                                                            info.st_mtime_ns)
    return entries


# Taken when the session starts, whatever is there already (a quick start leaves state/local behind).
_state_before = _state_snapshot()


@pytest.fixture(autouse=True)
def isolated_environment(tmp_path_factory, monkeypatch):
    """Keep tests away from the real user's files, credentials and CI variables."""
    global _state_before
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    for var in list(os.environ):
        if var.startswith(("ZUORA_", "GITHUB_", "RECONCILER_")) or var in ("NO_COLOR", "CI"):
            monkeypatch.delenv(var, raising=False)
    yield
    after = _state_snapshot()
    if after != _state_before:
        changed = sorted(name for name in _state_before.keys() | after.keys()
                         if _state_before.get(name) != after.get(name))
        _state_before = after  # blame this test only, not every test after it
        pytest.fail(f"a test changed the repository's own state/ directory ({REPO_STATE}): {', '.join(changed)}",
                    pytrace=False)
