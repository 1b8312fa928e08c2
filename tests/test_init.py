"""`reconciler init`: every file, all-or-nothing refusal, --force, and a scaffold that works."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from reconciler import __version__
from reconciler.commands.init import FILES, LEDGERS, POSTGRES_FILES, init, render
from reconciler.errors import UsageError

REPO_ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = REPO_ROOT / "reconciler" / "templates"
TARGETS = [target for _, target in FILES]


def files_under(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def run(*args, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "reconciler", *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_init_creates_every_file_in_a_new_directory(tmp_path):
    root = tmp_path / "billing-ops"
    out = io.StringIO()
    assert init(root, out, force=False) == 0
    assert sorted(files_under(root)) == sorted(TARGETS)
    for template, target in FILES:
        assert (root / target).read_bytes() == render(template)
        assert f"Created {root / target}\n" in out.getvalue()
    for step in ("reconciler validate", "reconciler plan", "reconciler apply"):
        assert step in out.getvalue()


def test_scaffold_names_the_expected_files():
    assert set(TARGETS) == {
        "reconciler.yaml", "specs/fx-rates.yaml", "data/fx-rates-example.csv", "state/.gitignore",
        ".gitattributes", ".github/workflows/reconcile.yml",
    }


def test_every_template_file_is_used_and_none_is_a_dotfile():
    # Package-data globs (`templates/*`, `templates/**/*`) skip names starting with a dot.
    sources = {p.relative_to(TEMPLATES).as_posix() for p in TEMPLATES.rglob("*") if p.is_file()
               and "__pycache__" not in p.parts}
    assert sources == {template for files in LEDGERS.values() for template, _ in files}
    assert not [name for name in sources if any(part.startswith(".") for part in name.split("/"))]


@pytest.mark.slow
def test_every_template_ships_in_the_wheel(tmp_path):
    """Build a real wheel (offline: no build isolation) from a copy of the project and look inside it."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO_ROOT / name, source / name)
    # A copy, so the build's build/ and *.egg-info never land in the working tree.
    shutil.copytree(REPO_ROOT / "reconciler", source / "reconciler",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = tmp_path / "dist"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
         "--disable-pip-version-check", "-q", "-w", str(dist), str(source)],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [wheel] = dist.glob("zuora_reconciler-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        shipped = {name.removeprefix("reconciler/templates/") for name in names
                   if name.startswith("reconciler/templates/")}
        assert shipped == {template for files in LEDGERS.values() for template, _ in files}
        for template in shipped:  # byte for byte what init renders from
            assert archive.read(f"reconciler/templates/{template}") == (TEMPLATES / template).read_bytes()


def test_workflow_pins_the_version_that_wrote_it(tmp_path):
    init(tmp_path, io.StringIO(), force=False)
    workflow = (tmp_path / ".github/workflows/reconcile.yml").read_text(encoding="utf-8")
    assert f"RECONCILER_REQUIREMENT: zuora-reconciler=={__version__}\n" in workflow
    assert "reconciler==" not in workflow.replace("zuora-reconciler==", "")  # never PyPI's unrelated `reconciler`
    assert "@RECONCILER_VERSION@" not in workflow


def test_config_spells_out_every_setting_with_its_default(tmp_path):
    init(tmp_path, io.StringIO(), force=False)
    text = (tmp_path / "reconciler.yaml").read_text(encoding="utf-8")
    for line in (
        "specs: specs", "ledger: state/{environment}/ledger.db", "environment: local", "entity_ids: null",
        "org_ids: null", "version: null", "parallelism: 16", "custom_object_slots: 5", "replay_status: 200",
        "v1_errors: http", "job_limit: 400", "tenant_type: production",
    ):
        assert line in text
    assert text.count("#") > 10  # commented


def test_the_postgres_variant_says_where_the_ledger_is_and_commits_nothing(tmp_path):
    import yaml

    out = io.StringIO()
    assert init(tmp_path / "pg", out, force=False, ledger="postgres") == 0
    init(tmp_path / "file", io.StringIO(), force=False)
    assert sorted(files_under(tmp_path / "pg")) == sorted(TARGETS)  # the same files, other contents
    assert "set the repository secret RECONCILER_LEDGER" in out.getvalue()
    pg, file = (files_under(tmp_path / name) for name in ("pg", "file"))
    assert {name for name in TARGETS if pg[name] != file[name]} == {
        "reconciler.yaml", "state/.gitignore", ".github/workflows/reconcile.yml"}
    config = pg["reconciler.yaml"].decode()
    assert yaml.safe_load(config) == yaml.safe_load(file["reconciler.yaml"])  # every setting the same
    assert "RECONCILER_LEDGER" in config and "Nothing is committed back to git and no runner needs state/" in config
    assert pg["state/.gitignore"].decode().splitlines()[-2:] == ["*", "!.gitignore"]  # nothing of state/ committed
    with pytest.raises(UsageError, match="--ledger mysql: choose one of sqlite, postgres"):
        init(tmp_path / "bad", io.StringIO(), force=False, ledger="mysql")
    assert not (tmp_path / "bad").exists()
    assert [target for _, target in POSTGRES_FILES] == TARGETS


def test_init_refuses_to_overwrite_and_writes_nothing(tmp_path):
    (tmp_path / "specs").mkdir()
    (tmp_path / "reconciler.yaml").write_text("environment: us-production\n", encoding="utf-8")
    (tmp_path / "specs" / "fx-rates.yaml").write_text("# mine\n", encoding="utf-8")
    before = files_under(tmp_path)
    out = io.StringIO()
    with pytest.raises(UsageError) as caught:
        init(tmp_path, out, force=False)
    message = str(caught.value)
    assert str(tmp_path / "reconciler.yaml") in message and str(tmp_path / "specs" / "fx-rates.yaml") in message
    assert "--force" in message
    assert files_under(tmp_path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reconciler.yaml", "specs"]
    assert out.getvalue() == ""


def test_force_overwrites_existing_files(tmp_path):
    (tmp_path / "reconciler.yaml").write_text("environment: us-production\n", encoding="utf-8")
    out = io.StringIO()
    assert init(tmp_path, out, force=True) == 0
    assert (tmp_path / "reconciler.yaml").read_bytes() == render("reconciler.yaml")
    assert f"Overwrote {tmp_path / 'reconciler.yaml'}\n" in out.getvalue()
    assert f"Created {tmp_path / 'state/.gitignore'}\n" in out.getvalue()


def test_init_refuses_a_file_where_a_directory_is_needed(tmp_path):
    target = tmp_path / "not-a-dir"
    target.write_text("x", encoding="utf-8")
    with pytest.raises(UsageError, match="not a directory"):
        init(target, io.StringIO(), force=True)
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "state").write_text("x", encoding="utf-8")
    with pytest.raises(UsageError, match="state: is a file"):
        init(tmp_path / "repo", io.StringIO(), force=True)
    assert files_under(tmp_path / "repo") == {"state": b"x"}


def test_cli_exit_codes(tmp_path):
    first = run("init", "repo", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "Next steps:" in first.stdout and "cd repo" in first.stdout
    second = run("init", "repo", cwd=tmp_path)
    assert second.returncode == 1
    assert "refusing to overwrite" in second.stderr and "reconciler.yaml" in second.stderr
    assert "Traceback" not in second.stderr
    assert run("init", "repo", "--force", cwd=tmp_path).returncode == 0


def test_git_keeps_csv_bytes_and_ignores_only_the_sandbox_state(tmp_path):
    init(tmp_path, io.StringIO(), force=False)
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)

    def git(*args):
        return subprocess.run(["git", *args], cwd=tmp_path, capture_output=True, text=True).stdout

    assert git("check-attr", "text", "--", "data/fx-rates-example.csv").strip().endswith("text: unset")
    assert git("check-attr", "binary", "--", "state/us-production/ledger.db").strip().endswith("binary: set")
    ignored = {"state/local/ledger.db", "state/local/sandbox.db", "state/us-production/ledger.db-wal",
               "state/us-production/ledger.db-shm"}
    kept = {"state/us-production/ledger.db", "state/us-production/audit.jsonl",
            "state/us-production/results/abc.zip"}
    for path in ignored | kept:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_bytes(b"x")
    listed = set(git("check-ignore", *sorted(ignored | kept)).split())
    assert listed == ignored


def test_scaffold_validates(tmp_path):
    init(tmp_path, io.StringIO(), force=False)
    result = run("validate", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_scaffold_plans(tmp_path):
    init(tmp_path, io.StringIO(), force=False)
    result = run("plan", "--no-refresh", "--detailed-exitcode", cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr  # one spec to submit
    assert "fx-rates-example" in result.stdout


def test_repository_examples_cover_every_operation_and_validate():
    import yaml

    from reconciler.actions import ACTION_TYPES, OPERATIONS

    documents = [doc for path in sorted((REPO_ROOT / "specs").rglob("*.yaml"))
                 for doc in yaml.safe_load_all(path.read_text(encoding="utf-8"))]
    assert {d["spec"]["actionType"] for d in documents if d["kind"] == "MassAction"} == set(ACTION_TYPES)
    assert {d["spec"]["operation"] for d in documents if d["kind"] == "CustomObjectJob"} == set(OPERATIONS)
    assert any(d["spec"].get("dependsOn") for d in documents)
    result = run("validate", "--json", cwd=REPO_ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["specs"] == len(documents)
