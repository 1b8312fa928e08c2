"""DESIGN §9's import rules, enforced by walking every module's imports."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "reconciler"
STDLIB = set(sys.stdlib_module_names)
OWNERS = {  # third-party top-level module -> the one reconciler module allowed to import it
    "click": "cli",
    "yaml": "spec",
    "jsonschema": "spec",
    "httpx": "zuora",
    "sqlite_utils": "ledger",
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Absolute names of everything a module imports (relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                prefix = ".".join(base)
                target = f"{prefix}.{node.module}" if node.module else prefix
            else:
                target = node.module
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return found


MODULES = {module_name(p): imports_of(p) for p in sorted(PACKAGE.rglob("*.py"))}


def internal(names: set[str]) -> set[str]:
    return {n for n in names if n == "reconciler" or n.startswith("reconciler.")}


def third_party(names: set[str]) -> set[str]:
    tops = {n.split(".")[0] for n in names}
    return {t for t in tops if t not in STDLIB and t != "reconciler"}


def test_modules_were_found():
    assert "reconciler.cli" in MODULES and "reconciler.model" in MODULES


@pytest.mark.parametrize("name", ["reconciler.model", "reconciler.errors"])
def test_foundation_modules_use_only_the_standard_library(name):
    assert third_party(MODULES[name]) == set()
    assert internal(MODULES[name]) <= {"reconciler", "reconciler.model", "reconciler.errors"} | {
        n for n in internal(MODULES[name]) if n.startswith(("reconciler.model.", "reconciler.errors."))
    }


PURE = ("reconciler.planner", "reconciler.planrules", "reconciler.plan")


@pytest.mark.parametrize("name", PURE)
def test_planner_and_plan_are_pure(name):
    assert third_party(MODULES[name]) == set()
    allowed = {"reconciler.model", "reconciler.errors", *PURE}
    bad = {n for n in internal(MODULES[name]) if n not in allowed and n.rpartition(".")[0] not in allowed}
    assert bad == set(), f"{name} imports {bad}"


def test_each_third_party_library_has_one_owner():
    for module, names in MODULES.items():
        for lib in third_party(names):
            owner = OWNERS.get(lib)
            assert owner is not None, f"{module} imports {lib}, which is not a declared dependency"
            assert module == f"reconciler.{owner}", f"{module} imports {lib}; only reconciler.{owner} may"


def test_applier_does_not_import_the_ledger():
    names = MODULES.get("reconciler.applier", set())
    assert not any(n.startswith("reconciler.ledger") for n in names)


def test_nothing_but_cli_imports_commands():
    for module, names in MODULES.items():
        if module == "reconciler.cli" or module.startswith("reconciler.commands"):
            continue
        assert not any(n.startswith("reconciler.commands") for n in names), module


def test_sandbox_imports_nothing_else_from_reconciler():
    for module, names in MODULES.items():
        if module.startswith("reconciler.sandbox"):
            bad = {n for n in internal(names) if not n.startswith("reconciler.sandbox")}
            assert bad == set(), f"{module} imports {bad}"


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["plan", "--help"], ["sandbox", "serve", "--help"]])
def test_help_and_version_import_no_heavy_library(args):
    code = (
        "import sys\n"
        "from reconciler.cli import main\n"
        "try:\n"
        f"    main({args!r})\n"
        "except SystemExit as e:\n"
        "    assert e.code == 0, e.code\n"
        "heavy = [m for m in ('yaml', 'jsonschema', 'httpx', 'sqlite_utils') if m in sys.modules]\n"
        "sys.stderr.write(__import__('json').dumps(heavy))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(proc.stderr.strip().splitlines()[-1]) == []
    assert proc.stdout.strip()
