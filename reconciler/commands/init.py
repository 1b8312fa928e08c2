"""`reconciler init`: scaffold a spec repository that validates and plans out of the box.

`--ledger sqlite` (the default) writes the workflow that commits the SQLite ledger, its results and an
audit export back to the branch after every apply; `--ledger postgres` the variant whose ledger
(results included) is a PostgreSQL database named by the RECONCILER_LEDGER secret, which commits
nothing and needs no state/, with a reconciler.yaml and state/.gitignore that say so.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from reconciler import __version__
from reconciler.errors import ExitCode, UsageError

# (template under reconciler/templates, path in the new repository). Template names have no
# leading dot because package-data globs skip dotfiles, and an installed wheel must ship them all.
FILES = (
    ("reconciler.yaml", "reconciler.yaml"),
    ("specs/fx-rates.yaml", "specs/fx-rates.yaml"),
    ("data/fx-rates-example.csv", "data/fx-rates-example.csv"),
    ("state/gitignore", "state/.gitignore"),
    ("gitattributes", ".gitattributes"),
    ("workflows/reconcile.yml", ".github/workflows/reconcile.yml"),
)
# The same files with the ledger on PostgreSQL: another config, state/.gitignore and workflow.
_POSTGRES = {"reconciler.yaml": "reconciler-postgres.yaml", "state/gitignore": "state/gitignore-postgres",
             "workflows/reconcile.yml": "workflows/reconcile-postgres.yml"}
POSTGRES_FILES = tuple((_POSTGRES.get(template, template), target) for template, target in FILES)
LEDGERS = {"sqlite": FILES, "postgres": POSTGRES_FILES}

VERSION_PLACEHOLDER = b"@RECONCILER_VERSION@"

NEXT_STEPS = """\
Next steps:
{cd}  reconciler validate                  check the specs and their CSV files
  reconciler plan                      see what apply would do
  reconciler apply --auto-approve      run it on the embedded sandbox (environment: local)
  reconciler status                    follow the job

Then add your own specs and CSV files, commit, and push: {workflow} posts the
plan on every pull request and applies on merge. For real Zuora, set the repository secrets
ZUORA_CLIENT_ID and ZUORA_CLIENT_SECRET and the repository variable ZUORA_ENVIRONMENT.
"""
POSTGRES_STEP = """\
The workflow keeps the ledger on PostgreSQL: set the repository secret RECONCILER_LEDGER to its
postgresql:// URL (README: The ledger on PostgreSQL). Nothing is committed back.
"""


def render(template: str) -> bytes:
    """The bytes `init` writes for one template; the workflow pins the version that wrote it."""
    node = resources.files("reconciler").joinpath("templates")
    for part in template.split("/"):
        node = node.joinpath(part)
    return node.read_bytes().replace(VERSION_PLACEHOLDER, __version__.encode("ascii"))


def init(directory, out, *, force: bool, ledger: str = "sqlite") -> int:
    """Write the scaffold into `directory`: all files or, when any exists and not `force`, none. `ledger`
    (sqlite or postgres) picks the workflow and the config that go with where the ledger is."""
    root = Path(directory)
    if ledger not in LEDGERS:
        raise UsageError(f"--ledger {ledger}: choose one of {', '.join(LEDGERS)}")
    if root.exists() and not root.is_dir():
        raise UsageError(f"{root}: exists and is not a directory; choose another DIR for `reconciler init`")
    targets = [(template, root / target) for template, target in LEDGERS[ledger]]
    _check_writable(root, [path for _, path in targets])
    existing = [path for _, path in targets if path.exists() or path.is_symlink()]
    if existing and not force:
        names = ", ".join(str(path) for path in existing)
        raise UsageError(f"refusing to overwrite existing files: {names}; nothing was written (use --force to overwrite them)")
    contents = [(path, render(template)) for template, path in targets]
    for path, data in contents:
        verb = "Overwrote" if path in existing else "Created"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        out.write(f"{verb} {path}\n")
    cd = "" if root.resolve() == Path.cwd().resolve() else f"  cd {directory}\n"
    out.write("\n" + NEXT_STEPS.format(cd=cd, workflow=root / FILES[-1][1]))
    if ledger == "postgres":
        out.write("\n" + POSTGRES_STEP)
    return ExitCode.OK


def _check_writable(root: Path, paths: list[Path]) -> None:
    """Fail before writing anything when a target is a directory or a parent is a file."""
    for path in paths:
        if path.is_dir():
            raise UsageError(f"{path}: is a directory, `reconciler init` needs to write a file there; move it away")
        for parent in path.relative_to(root).parents:
            candidate = root / parent
            if candidate.exists() and not candidate.is_dir():
                raise UsageError(f"{candidate}: is a file, `reconciler init` needs a directory there; move it away")
