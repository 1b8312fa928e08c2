"""Shared fixtures. Every test runs with a temporary HOME and no Zuora credentials from the outside."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def isolated_environment(tmp_path_factory, monkeypatch):
    """Keep tests away from the real user's files, credentials and CI variables."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    for var in list(os.environ):
        if var.startswith(("ZUORA_", "GITHUB_", "RECONCILER_")) or var in ("NO_COLOR", "CI"):
            monkeypatch.delenv(var, raising=False)
    yield
    assert not (REPO_ROOT / "state" / "local").exists() or _created_before_session(), (
        "a test wrote into the repository's own state/ directory"
    )


_SESSION_START_STATE = (REPO_ROOT / "state" / "local").exists()


def _created_before_session() -> bool:
    return _SESSION_START_STATE
