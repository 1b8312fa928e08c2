"""Every GitHub workflow (this repository's and the one `reconciler init` writes) passes actionlint
(with shellcheck on each `run:` script) and keeps secrets out of scripts and permissions minimal."""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from reconciler.commands.init import init

REPO_ROOT = Path(__file__).resolve().parent.parent
REPO_WORKFLOWS = sorted((REPO_ROOT / ".github" / "workflows").glob("*.y*ml"))
RECONCILE_WORKFLOWS = ("repo", "template")

SECRET_VARIABLES = ("ZUORA_CLIENT_ID", "ZUORA_CLIENT_SECRET", "ZUORA_ACCESS_TOKEN", "GH_TOKEN", "RECONCILER_LEDGER")


@pytest.fixture(scope="module")
def template_workflow(tmp_path_factory) -> Path:
    """The workflow exactly as `reconciler init` writes it."""
    root = tmp_path_factory.mktemp("scaffold")
    init(root, io.StringIO(), force=False)
    return root / ".github" / "workflows" / "reconcile.yml"


@pytest.fixture(scope="module")
def postgres_workflow(tmp_path_factory) -> Path:
    """The workflow `reconciler init --ledger postgres` writes."""
    root = tmp_path_factory.mktemp("scaffold-postgres")
    init(root, io.StringIO(), force=False, ledger="postgres")
    return root / ".github" / "workflows" / "reconcile.yml"


def reconcile_workflow(which: str, template_workflow: Path) -> Path:
    return REPO_ROOT / ".github" / "workflows" / "reconcile.yml" if which == "repo" else template_workflow


def load(path: Path) -> dict:
    # PyYAML reads the `on:` key as True (YAML 1.1); the tests never need it by name.
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def actionlint(path: Path) -> subprocess.CompletedProcess:
    for tool in ("actionlint", "shellcheck"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not on PATH; install the test extra: pip install -e '.[test]'")
    return subprocess.run(["actionlint", "-no-color", str(path)], capture_output=True, text=True, timeout=120)


def test_repository_has_both_workflows():
    assert {p.name for p in REPO_WORKFLOWS} >= {"ci.yml", "reconcile.yml"}


@pytest.mark.parametrize("path", REPO_WORKFLOWS, ids=lambda p: p.name)
def test_repository_workflow_passes_actionlint(path):
    result = actionlint(path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_init_template_workflows_pass_actionlint(template_workflow, postgres_workflow):
    for path in (template_workflow, postgres_workflow):
        result = actionlint(path)
        assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_catches_a_broken_workflow(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n"
        "      - run: echo $UNQUOTED ${{ github.event.pull_request.title }}\n",
        encoding="utf-8",
    )
    result = actionlint(broken)
    assert result.returncode == 1
    assert "shellcheck" in result.stdout and "untrusted" in result.stdout


def walk(node, path=()):
    """(path, string) for every string value in a parsed workflow."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from walk(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from walk(value, (*path, index))
    elif isinstance(node, str):
        yield path, node


@pytest.fixture
def all_workflows(template_workflow, postgres_workflow):
    return [*REPO_WORKFLOWS, template_workflow, postgres_workflow]


def test_no_expression_is_interpolated_into_a_script(all_workflows):
    for path in all_workflows:
        for where, value in walk(load(path)):
            if where[-1] == "run":
                assert "${{" not in value, f"{path.name} {where}: pass values to scripts through env:"


def test_secrets_appear_only_as_env_values(all_workflows):
    for path in all_workflows:
        for where, value in walk(load(path)):
            if "secrets." in value.replace(" ", "") and "${{" in value:
                assert len(where) >= 2 and where[-2] == "env", f"{path.name} {where}: a secret outside env:"


def test_scripts_never_read_a_secret_variable(all_workflows):
    for path in all_workflows:
        for where, value in walk(load(path)):
            if where[-1] == "run":
                for name in SECRET_VARIABLES:
                    assert name not in value, f"{path.name} {where} reads {name}; only the tools may"


def test_template_takes_credentials_from_secrets_and_environment_from_a_variable(template_workflow):
    for job in ("plan", "apply"):
        env = load(template_workflow)["jobs"][job]["env"]
        assert env["ZUORA_CLIENT_ID"] == "${{ secrets.ZUORA_CLIENT_ID }}"
        assert env["ZUORA_CLIENT_SECRET"] == "${{ secrets.ZUORA_CLIENT_SECRET }}"
        assert env["ZUORA_ENVIRONMENT"] == "${{ vars.ZUORA_ENVIRONMENT }}"


def test_repository_workflow_runs_on_the_local_sandbox_without_secrets():
    text = (REPO_ROOT / ".github" / "workflows" / "reconcile.yml").read_text(encoding="utf-8")
    assert "${{ secrets." not in text and "${{ vars." not in text
    header = text.split("\nname:")[0]  # the comment at the top says what it demonstrates
    assert "embedded `local`" in header and "sandbox" in header
    assert yaml.safe_load((REPO_ROOT / "reconciler.yaml").read_text(encoding="utf-8"))["environment"] == "local"


@pytest.mark.parametrize("which", RECONCILE_WORKFLOWS)
def test_permissions_are_minimal(which, template_workflow):
    workflow = load(reconcile_workflow(which, template_workflow))
    assert workflow["permissions"] == {}
    assert workflow["jobs"]["plan"]["permissions"] == {"contents": "read", "pull-requests": "write"}
    assert workflow["jobs"]["apply"]["permissions"] == {"contents": "write"}


def steps(workflow: dict, job: str) -> dict:
    return {step.get("name") or step["uses"]: step for step in workflow["jobs"][job]["steps"]}


@pytest.mark.parametrize("which", RECONCILE_WORKFLOWS)
def test_pull_request_job_plans_and_updates_one_comment(which, template_workflow):
    workflow = load(reconcile_workflow(which, template_workflow))
    plan = workflow["jobs"]["plan"]
    assert plan["if"] == "github.event_name == 'pull_request'"
    job_steps = steps(workflow, "plan")
    assert job_steps["Validate"]["run"] == "reconciler validate"
    script = job_steps["Plan"]["run"]
    assert "reconciler plan --detailed-exitcode --out plan.json --markdown > plan.md" in script
    assert '"$code" -ne 2' in script  # exit 2 (changes) is a success here
    upload = job_steps["Upload the plan"]
    assert upload["uses"].startswith("actions/upload-artifact@")
    assert upload["with"]["path"].split() == ["plan.json", "plan.md"]
    comment = job_steps["Post the plan on the pull request"]
    assert comment["env"]["GH_TOKEN"] == "${{ github.token }}"
    assert "<!-- reconciler-plan -->" in comment["run"]
    assert "--method PATCH" in comment["run"] and "--method POST" in comment["run"]


@pytest.mark.parametrize("which", RECONCILE_WORKFLOWS)
def test_default_branch_job_applies_serially_and_records_the_ledger(which, template_workflow):
    workflow = load(reconcile_workflow(which, template_workflow))
    apply = workflow["jobs"]["apply"]
    assert "github.event.repository.default_branch" in apply["if"]
    assert apply["concurrency"]["cancel-in-progress"] is False
    assert apply["concurrency"]["group"]
    job_steps = steps(workflow, "apply")
    assert "reconciler apply --auto-approve --wait --timeout 3600" in job_steps["Apply"]["run"]
    record = job_steps["Record the ledger"]
    assert record["if"].startswith("always()")
    assert "reconciler audit export --format jsonl --output" in record["run"]
    assert "[skip ci]" in record["run"] and "git push" in record["run"]
    # A killed apply's last commits are only in ledger.db-wal, which git never sees: checkpoint first.
    script = record["run"]
    assert "reconciler ledger checkpoint" in script
    assert script.index("reconciler ledger checkpoint") < script.index("reconciler audit export")
    assert script.index("reconciler ledger checkpoint") < script.index("git add")
    assert "ledger.db-wal" in script  # a ledger with a WAL is checkpointed even when its file looks old


def test_repository_workflow_matches_the_template(template_workflow):
    repo, template = load(REPO_ROOT / ".github" / "workflows" / "reconcile.yml"), load(template_workflow)
    assert repo[True] == template[True]  # the triggers (`on:`)
    for job in ("plan", "apply"):
        assert list(steps(repo, job)) == list(steps(template, job))
        for name, step in steps(template, job).items():
            if name != "Install reconciler":
                assert steps(repo, job)[name] == step, f"{job}: {name} differs from the template"


def test_the_postgres_workflow_reads_the_ledger_from_a_secret_and_commits_nothing(template_workflow,
                                                                                   postgres_workflow):
    sqlite, postgres = load(template_workflow), load(postgres_workflow)
    assert postgres[True] == sqlite[True]  # the same triggers and operator inputs
    for job in ("plan", "apply"):
        env = postgres["jobs"][job]["env"]
        assert env["RECONCILER_LEDGER"] == "${{ secrets.RECONCILER_LEDGER }}"
        assert {k: v for k, v in env.items() if k != "RECONCILER_LEDGER"} == sqlite["jobs"][job]["env"]
        check = steps(postgres, job)["Check that the ledger is set"]  # no secret: stop, never plan on nothing
        assert check["if"] == "env.RECONCILER_LEDGER == ''" and "exit 1" in check["run"]
    assert postgres["jobs"]["apply"]["permissions"] == {"contents": "read"}  # it cannot push a commit
    assert postgres["jobs"]["plan"]["permissions"] == sqlite["jobs"]["plan"]["permissions"]
    for where, value in walk(postgres):
        if where[-1] == "run":
            assert "git add" not in value and "git push" not in value and "state" not in value, where
    apply, sqlite_apply = steps(postgres, "apply"), steps(sqlite, "apply")
    assert "Record the ledger" not in apply and "Upload the state" not in apply
    for name in ("Apply", "Show the audit head", "Install reconciler"):
        assert apply[name] == sqlite_apply[name]
    assert "reconciler audit export --format jsonl" in apply["Export the audit log"]["run"]
    plan, sqlite_plan = steps(postgres, "plan"), steps(sqlite, "plan")
    assert {k: v for k, v in plan.items() if k != "Check that the ledger is set"} == sqlite_plan
    header = postgres_workflow.read_text(encoding="utf-8").split("\nname:")[0]
    assert "RECONCILER_LEDGER" in header and "nothing is committed" in header


def test_the_postgres_workflows_apply_job_needs_no_state_and_leaves_nothing_to_commit(tmp_path, pg_url,
                                                                                       postgres_workflow):
    """The apply job's own scripts, run as a runner would against a real server and the served sandbox."""
    import os

    from apply_support import CREDENTIALS, make_repo, served_sandbox
    from test_ledger_checkpoint import git, reconciler_on_path

    job = steps(load(postgres_workflow), "apply")
    runner = tmp_path / "runner"
    runner.mkdir()
    with served_sandbox() as url:
        work = make_repo(tmp_path / "work", url, mass=("fx-a",), create=("load-cars",), delete=())
        git(work, "init", "--quiet", "-b", "main")
        git(work, "add", "--all")
        git(work, "commit", "--quiet", "-m", "specs")
        env = {**os.environ, **CREDENTIALS, "PATH": reconciler_on_path(tmp_path), "RUNNER_TEMP": str(runner),
               "GITHUB_STEP_SUMMARY": str(runner / "summary.md"), "OPERATION": "apply", "NAME": "", "REMOTE_ID": "",
               "FORCE": "false", "RECONCILER_LEDGER": pg_url + "?options=-csearch_path%3D{environment}"}
        for name in ("Apply", "Show the audit head", "Export the audit log"):
            proc = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", job[name]["run"]], cwd=work, env=env,
                                  capture_output=True, text=True, timeout=120, check=False)
            assert proc.returncode == 0, (name, proc.stdout + proc.stderr)
    assert "Apply complete: 2 submitted" in (runner / "apply.out").read_text()
    assert (runner / "summary.md").read_text().startswith("Audit head: ")
    assert '"event_type":"result_archived"' in (runner / "audit.jsonl").read_text()  # results archived, in the DB
    assert not (work / "state").exists() and git(work, "status", "--porcelain") == ""  # nothing to commit
