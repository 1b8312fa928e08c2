"""README.md stays honest: every command and flag is documented, its commands parse, and its quick start works."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from reconciler.cli import cli
from reconciler.errors import ExitCode

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
# The product's promise: the README's quick start, word for word.
MAIN_COMMAND = "pip install . && reconciler apply --auto-approve --wait"
TEST_COMMAND = "pip install -e '.[test]' && python -m pytest -q"


def walk(group: click.Group, path: tuple[str, ...] = ()):
    """(command path, command) for every command and subcommand below `group`, depth first."""
    for name in sorted(group.commands):
        command = group.commands[name]
        yield path + (name,), command
        if isinstance(command, click.Group):
            yield from walk(command, path + (name,))


COMMANDS = list(walk(cli))
LEAVES = [(path, command) for path, command in COMMANDS if not isinstance(command, click.Group)]


def ids(items):
    return [" ".join(path) for path, _ in items]


def section(level: int, title: str) -> str:
    """The README text under the heading `title` (exact) up to the next heading of the same or a higher level."""
    lines = README.splitlines()
    marker = "#" * level + " " + title
    assert marker in lines, f"README.md has no heading {marker!r}"
    start = lines.index(marker) + 1
    end = next((i for i in range(start, len(lines)) if re.match(rf"#{{1,{level}}} ", lines[i])), len(lines))
    return "\n".join(lines[start:end])


def code_blocks(text: str, languages: tuple[str, ...]) -> list[list[str]]:
    """The lines of every fenced block in `text` whose language is one of `languages` ("" for none)."""
    blocks, inside, keep = [], False, False
    for line in text.splitlines():
        if not inside:
            fence = re.match(r"^```(\w*)\s*$", line)
            if fence:
                inside, keep = True, fence.group(1) in languages
                if keep:
                    blocks.append([])
        elif line.startswith("```"):
            inside = False
        elif keep:
            blocks[-1].append(line)
    return blocks


def documented_invocations() -> list[list[str]]:
    """Arguments of every `reconciler ...` command shown in the README's console and sh blocks."""
    found = []
    for block in code_blocks(README, ("console", "sh")):
        joined = "\n".join(block).replace("\\\n", " ").splitlines()
        is_console = any(line.startswith("$ ") for line in joined)
        for line in joined:
            if is_console:
                if not line.startswith("$ "):
                    continue  # output
                line = line[2:]
            for part in line.split("&&"):
                words = shlex.split(part, comments=True)
                while words and re.match(r"^[A-Z_]+=", words[0]):
                    words.pop(0)  # VAR=value prefix
                if not words or words[0] != "reconciler":
                    continue
                cut = next((i for i, w in enumerate(words) if w in ("|", ">", ">>", "2>&1", ";")), len(words))
                found.append(words[1:cut])
    return found


# --------------------------------------------------------------------------------- commands and flags


@pytest.mark.parametrize("path, command", COMMANDS, ids=ids(COMMANDS))
def test_every_command_has_help_and_is_in_the_readme(path, command):
    result = CliRunner().invoke(cli, [*path, "--help"], prog_name="reconciler")
    assert result.exit_code == 0, result.output
    summary = (command.help or "").strip()
    assert summary, f"`reconciler {' '.join(path)}` has no help text"
    assert " ".join(summary.split()) in " ".join(result.output.split())
    assert f"reconciler {' '.join(path)}" in README


@pytest.mark.parametrize("path, command", LEAVES, ids=ids(LEAVES))
def test_every_flag_is_in_its_command_reference_section(path, command):
    text = section(3, f"`reconciler {' '.join(path)}`")
    flags = [opt for param in command.params if isinstance(param, click.Option)
             for opt in (*param.opts, *param.secondary_opts)]
    missing = [flag for flag in flags if not re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text)]
    assert not missing, f"the README's section on `reconciler {' '.join(path)}` does not mention {missing}"


def test_global_options_are_documented():
    text = section(3, "Global options")
    ctx = click.Context(cli)
    options = [p for p in cli.get_params(ctx) if isinstance(p, click.Option)]
    flags = [opt for param in options for opt in (*param.opts, *param.secondary_opts)]
    assert "--help" in flags and "--version" in flags
    missing = [flag for flag in flags if not re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text)]
    assert not missing, f"the README's global options do not mention {missing}"


def test_every_command_shown_in_the_readme_parses():
    invocations = documented_invocations()
    assert ["apply", "--auto-approve", "--wait"] in invocations  # the parser found the quick start
    assert len(invocations) > 20
    for args in invocations:
        # --help is eager: a wrong command or option still fails, but nothing runs.
        result = CliRunner().invoke(cli, [*args, "--help"], prog_name="reconciler")
        assert result.exit_code == 0, f"`reconciler {shlex.join(args)}` from README.md: {result.output}"


def test_exit_code_table_matches_the_contract():
    text = section(3, "Exit codes")
    documented = {int(code) for code in re.findall(r"^\| (\d+) \|", text, flags=re.MULTILINE)}
    assert documented == {int(code) for code in ExitCode}


def test_architecture_lists_the_actual_modules():
    block = next(b for b in code_blocks(README, ("",)) if b and b[0] == "reconciler/")
    listed = {line.split()[0] for line in block[1:] if line.startswith("  ") and not line.startswith("   ")}
    actual = set()
    for name in package_files():
        top, _, rest = name.partition("/")
        if rest:
            actual.add(top + "/")
        elif top.endswith(".py") and top not in ("__init__.py", "__main__.py"):
            actual.add(top)
    assert listed == actual, f"not in README: {sorted(actual - listed)}; gone: {sorted(listed - actual)}"


def package_files() -> list[str]:
    """Paths under reconciler/, relative to it: the committed ones (work in progress is not the product yet)."""
    package = ROOT / "reconciler"
    git = shutil.which("git")
    if git and (ROOT / ".git").exists():
        listed = subprocess.run([git, "-C", str(package), "ls-files"], capture_output=True, text=True)
        if listed.returncode == 0 and listed.stdout.strip():
            return listed.stdout.split()
    return [p.relative_to(package).as_posix() for p in package.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts]


# --------------------------------------------------------------------------------- the quick start


def quick_start_commands() -> list[str]:
    """The commands of the quick start's sh block, without their comments."""
    (block,) = code_blocks(section(2, "Quick start"), ("sh",))
    return [line.split("#", 1)[0].strip() for line in block if line.strip()]


def test_quick_start_is_the_promise():
    assert quick_start_commands() == [MAIN_COMMAND, TEST_COMMAND]


def test_readme_test_command_is_what_ci_runs():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    ci_pytest = next(shlex.split(line) for line in ci if "-m pytest" in line)
    ci_install = next(shlex.split(line) for line in ci if "pip install" in line)
    install, test = (shlex.split(part) for part in TEST_COMMAND.split("&&"))
    # Same pytest arguments, same editable install with the same extras.
    assert ci_pytest[ci_pytest.index("pytest") + 1:] == test[test.index("pytest") + 1:]
    assert ci_install[ci_install.index("-e") + 1] == install[install.index("-e") + 1]
    assert "pytest" in ci_pytest[ci_pytest.index("-m") + 1]


def clone_of_the_repo(dest: Path) -> Path:
    """A fresh copy of the repository at HEAD: `git clone`, or the tracked files when that is impossible."""
    git = shutil.which("git")
    if git and (ROOT / ".git").exists():
        done = subprocess.run([git, "clone", "--quiet", str(ROOT), str(dest)], capture_output=True, text=True)
        if done.returncode == 0:
            return dest
    tracked = subprocess.run([git, "-C", str(ROOT), "ls-files", "-z"], capture_output=True, check=True).stdout
    for name in filter(None, tracked.decode().split("\0")):
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
    return dest


def run(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "reconciler", *args], cwd=repo, capture_output=True,
                          text=True, timeout=120)


def plan_lines(text: str) -> list[str]:
    """The plan part of an apply's output: the change lines and the summary, without ids or timings."""
    lines = text.splitlines()
    end = next(i for i, line in enumerate(lines) if line.startswith("Plan: "))
    return [line for line in lines[: end + 1] if line.strip()]


@pytest.mark.slow
def test_quick_start_converges_in_a_fresh_clone(tmp_path):
    repo = clone_of_the_repo(tmp_path / "repo")
    assert not (repo / "state" / "local").exists()
    main = MAIN_COMMAND.split("&&")[1].split()
    assert main[0] == "reconciler"

    first = run(repo, *main[1:])
    assert first.returncode == 0, first.stdout + first.stderr
    # The README shows this very output (ids aside): what is submitted now and what waits.
    sample = section(2, "Quick start").split(f"$ {MAIN_COMMAND.split('&& ')[1]}\n", 1)[1]
    assert plan_lines(first.stdout) == plan_lines(sample)

    # Converged in one command: the README's follow-up plan finds nothing left to do.
    done = run(repo, "plan", "--detailed-exitcode")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() in sample  # "No changes. Zuora matches the specs (9 unchanged)."
    assert "Apply complete: 9 submitted" in first.stdout
    status = run(repo, "status", "--wait", "--timeout", "60")
    assert status.returncode == 0 and status.stdout.count("ompleted") >= 9, status.stdout + status.stderr
