"""The operator path runs in CI: the workflow's own `Apply` and `Record the ledger` scripts, as a manual run
(workflow_dispatch) executes them, against a real git remote and the sandbox over loopback.

Each operator action (rerun, import, forget, lock release) runs under the run's lock, lands in the
audit log under the GitHub user who started the run, and is committed to the branch like an apply.
"""

from __future__ import annotations

import os
import subprocess

import pytest
import yaml

from apply_support import (
    CREDENTIALS,
    MASS_SPEC,
    admin,
    cli,
    fx_csv,
    ledger_events,
    ledger_jobs,
    settings_of,
    write_spec,
)
from reconciler.zuora.client import ZuoraClient
from test_ledger_checkpoint import ROOT, git, pushed_repo, reconciler_on_path

OPERATOR = "octo-operator"


def step(name: str) -> dict:
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "reconcile.yml").read_text())
    [found] = [s for s in workflow["jobs"]["apply"]["steps"] if s.get("name") == name]
    return found


@pytest.fixture
def ci(tmp_path, url):
    """A repository pushed to a bare origin, and a function running one manual workflow run's steps in it."""
    origin, work = pushed_repo(tmp_path, url, mass=("fx-a", "fx-b"), create=(), delete=())
    runner = tmp_path / "runner"
    runner.mkdir()
    path = reconciler_on_path(tmp_path)

    def run(operation: str, name: str = "", remote_id: str = "", force: str = "false"):
        env = {**os.environ, **CREDENTIALS, "PATH": path, "RUNNER_TEMP": str(runner),
               "BRANCH": "main", "GITHUB_SHA": git(work, "rev-parse", "HEAD").strip(), "GITHUB_ACTOR": OPERATOR,
               "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1", "OPERATION": operation, "NAME": name,
               "REMOTE_ID": remote_id, "FORCE": force, "GITHUB_STEP_SUMMARY": str(runner / "summary.md")}
        results = []
        for script in (step("Apply")["run"], step("Show the audit head")["run"], step("Record the ledger")["run"]):
            results.append(subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script], cwd=work, env=env,
                                          capture_output=True, text=True, timeout=300))
            if results[-1].returncode != 0:
                break
        return results

    return work, origin, run


def test_the_dispatch_inputs_name_every_operator_action():
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "reconcile.yml").read_text())
    inputs = workflow[True]["workflow_dispatch"]["inputs"]
    assert inputs["operation"]["options"] == ["apply", "rerun", "import", "forget", "lock-release"]
    assert inputs["operation"]["default"] == "apply"
    assert set(inputs) == {"operation", "name", "remote_id", "force"}
    # The inputs reach the script as environment variables, never interpolated into it.
    apply = step("Apply")
    assert apply["env"]["NAME"] == "${{ inputs.name }}" and "${{" not in apply["run"]


def test_forget_and_rerun_run_in_ci_under_the_github_user_and_are_committed(tmp_path, ci):
    work, origin, run = ci
    applied, _, recorded = run("apply")
    assert applied.returncode == 0 and recorded.returncode == 0, applied.stdout + applied.stderr + recorded.stderr
    summary = (tmp_path / "runner" / "summary.md").read_text()
    assert summary.startswith("Audit head: ") and cli(work, "audit", "verify", "--head",
                                                      summary.split()[2]).returncode == 0

    git(work, "rm", "--quiet", "specs/fx-a.yaml")  # a removed spec whose record should simply go
    git(work, "commit", "--quiet", "-m", "drop fx-a")
    forgot, _, recorded = run("forget", name="fx-a")
    assert forgot.returncode == 0, forgot.stdout + forgot.stderr
    assert recorded.returncode == 0, recorded.stdout + recorded.stderr
    assert "record forget of" in git(work, "log", "-1", "--format=%s") and OPERATOR in git(work, "log", "-1",
                                                                                               "--format=%s")
    rerun, *after = run("rerun", name="fx-b")
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert len(after) == 2 and after[-1].returncode == 0, after

    clone = tmp_path / "clone"
    git(tmp_path, "clone", "--quiet", str(origin), str(clone))
    events = ledger_events(clone)
    retired = [e for e in events if e["event_type"] == "retired" and e["name"] == "fx-a"]
    assert retired and retired[-1]["actor"].startswith(f"{OPERATOR}@")
    rerun_intents = [e for e in events if e["event_type"] == "intent" and e["name"] == "fx-b" and e["detail"]["rerun"]]
    assert rerun_intents and rerun_intents[-1]["actor"].startswith(f"{OPERATOR}@")
    assert cli(clone, "audit", "verify").returncode == 0


def test_import_adopts_a_job_started_outside_reconciler_in_ci(ci, url, monkeypatch):
    work, _, run = ci
    assert run("apply")[0].returncode == 0
    (work / "data" / "fx-c.csv").write_text(fx_csv(7))
    write_spec(work, "fx-c", MASS_SPEC)
    git(work, "add", "--all")
    git(work, "commit", "--quiet", "-m", "fx-c, already run by hand")
    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    with ZuoraClient.from_settings(settings_of(work)) as client:  # someone ran it by hand, outside the tool
        bulk_key = client.submit_mass_action("ImportFXRate", work / "data" / "fx-c.csv", idempotency_key=None)
    imported, *after = run("import", name="fx-c", remote_id=bulk_key)
    assert imported.returncode == 0, imported.stdout + imported.stderr
    assert len(after) == 2 and after[-1].returncode == 0, after
    adopted = [e for e in ledger_events(work) if e["event_type"] == "import"]
    assert adopted and adopted[-1]["actor"].startswith(f"{OPERATOR}@")
    assert len(admin(url, "state")["mass_actions"]) == 3  # fx-a, fx-b and the one run by hand: none again
    assert "record import of" in git(work, "log", "-1", "--format=%s")


@pytest.mark.parametrize("operation, fields, says", [
    ("rerun", {}, "rerun needs the name input"),
    ("forget", {}, "forget needs the name input"),
    ("import", {"name": "fx-a"}, "import needs the remote_id input"),
    ("lock-release", {}, "lock-release needs the lock id as the remote_id input"),
])
def test_a_missing_input_stops_the_run_before_anything_is_written(ci, operation, fields, says):
    work, _, run = ci
    (failed,) = run(operation, **fields)
    assert failed.returncode != 0 and says in failed.stderr, failed.stdout + failed.stderr
    assert ledger_jobs(work) == []


def test_lock_release_of_an_unknown_lock_says_so(ci):
    work, _, run = ci
    assert run("apply")[0].returncode == 0
    (released,) = run("lock-release", remote_id="no-such-lock")
    assert released.returncode == 1
    assert "Traceback" not in released.stderr and released.stderr.strip(), released.stderr
    assert subprocess.run(["git", "status", "--porcelain"], cwd=work, capture_output=True, text=True).stdout == ""
