"""DESIGN §9's import rules, as import-linter contracts (pyproject.toml), and the type check (mypy).

The contracts are checked on the real package; each is also checked to break on a copy of the
package with one forbidden import added, so a contract that matches nothing cannot pass unseen.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CONTRACTS = re.findall(r'^name = "(.+)"$', (REPO / "pyproject.toml").read_text(encoding="utf-8").partition(
    "[tool.importlinter]")[2], re.M)
LINT = "from importlinter.cli import lint_imports_command; lint_imports_command()"


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([sys.executable, "-c", LINT, "--no-cache", "--config", str(root / "pyproject.toml")],
                          cwd=root, env=env, capture_output=True, text=True)


def test_the_import_contracts_hold():
    proc = lint_imports(REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout and " kept" in proc.stdout


BREAKS = [  # (module that gains an import, the import, the contract that must then break)
    ("model.py", "import reconciler.ledger", "Layers"),
    ("spec/rules.py", "import reconciler.zuora", "Layers"),
    ("sandbox/store.py", "import reconciler.model", "Layers"),
    ("engine/planner.py", "import reconciler.engine.run", "are pure"),
    ("engine/applier.py", "import reconciler.ledger.store", "applier talks to the ledger"),
    ("engine/waiter.py", "import httpx", "one owning package"),
    ("zuora/__init__.py", "import zuora_sdk", "never imports zuora_sdk"),
]


@pytest.fixture(scope="module")
def package_copy(tmp_path_factory):
    root = tmp_path_factory.mktemp("arch")
    shutil.copytree(REPO / "reconciler", root / "reconciler", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    return root


@pytest.mark.parametrize("module, line, contract", BREAKS, ids=[b[0] for b in BREAKS])
def test_each_contract_breaks_on_a_forbidden_import(package_copy, module, line, contract):
    path = package_copy / "reconciler" / module
    original = path.read_text(encoding="utf-8")
    path.write_text(f"{original}\n{line}\n", encoding="utf-8")
    try:
        proc = lint_imports(package_copy)
    finally:
        path.write_text(original, encoding="utf-8")
    assert proc.returncode == 1, proc.stdout
    words = " ".join(proc.stdout.split())  # import-linter wraps long contract names
    [name] = [n for n in CONTRACTS if contract in n]
    assert f"{name} BROKEN" in words, proc.stdout
    assert "1 broken" in words, proc.stdout


def test_mypy_is_clean_for_the_typed_packages(tmp_path):
    """engine/, model.py, ledger/ and zuora/ (pyproject's [tool.mypy] files) type-check without an error."""
    proc = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(REPO / "pyproject.toml"),
                           "--cache-dir", str(tmp_path / "mypy")], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Success: no issues found" in proc.stdout


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["plan", "--help"], ["sandbox", "serve", "--help"]])
def test_help_and_version_import_no_heavy_library(args):
    code = (
        "import sys\n"
        "from reconciler.cli import main\n"
        "try:\n"
        f"    main({args!r})\n"
        "except SystemExit as e:\n"
        "    assert e.code == 0, e.code\n"
        "heavy = [m for m in ('yaml', 'jsonschema', 'httpx', 'sqlite_utils', 'psycopg') if m in sys.modules]\n"
        "sys.stderr.write(__import__('json').dumps(heavy))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(proc.stderr.strip().splitlines()[-1]) == []
    assert proc.stdout.strip()


def test_version_is_answered_before_click_is_imported_and_says_what_click_would():
    fast = subprocess.run([sys.executable, "-c", "import sys; sys.argv = ['reconciler', '--version']\n"
                           "from reconciler.__main__ import main; main()\n"
                           "sys.stderr.write(str('click' in sys.modules))"],
                          capture_output=True, text=True, check=True)
    assert fast.stderr == "False"
    full = subprocess.run([sys.executable, "-c", "from reconciler.cli import main; main(['--version'])"],
                          capture_output=True, text=True)
    assert full.returncode == 0 and fast.stdout == full.stdout == f"reconciler {__import__('reconciler').__version__}\n"


def test_a_command_run_never_imports_trio_or_the_httpx_command_line(tmp_path):
    """Where trio and httpx's CLI (rich, pygments) are installed, httpx imports them; a command run blocks
    them. Stand-ins that fail on import are put first on the path: the client still builds and works."""
    for name in ("trio", "rich", "pygments"):
        (tmp_path / f"{name}.py").write_text("raise RuntimeError('imported')\n")
    code = ("import sys\n"
            "from reconciler.__main__ import block_unused_imports\n"
            "block_unused_imports()\n"
            "import httpx, httpcore\n"
            "from reconciler.zuora.client import ZuoraClient\n"
            "httpx.Client().close()\n"
            "print(sorted(m for m in ('trio', 'rich', 'pygments') if sys.modules.get(m)))\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    blocked = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert (blocked.returncode, blocked.stdout.strip()) == (0, "[]"), blocked.stderr
    unblocked = subprocess.run([sys.executable, "-c", code.replace("block_unused_imports()\n", "")],
                               capture_output=True, text=True, env=env)
    assert unblocked.returncode != 0 and "RuntimeError: imported" in unblocked.stderr  # the stand-ins do bite
