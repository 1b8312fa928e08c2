"""What spec validation remembers between runs, addressed by content: state/.cache/spec-checks.json.

Two kinds of entries, both only for inputs that passed every check (a file with a problem is checked
again each run, so its messages always come from the rules themselves):
- a spec file: its path and the sha256 of its bytes -> its parsed documents (index, line, value);
- a data file: the sha256 of its bytes, the spec's kind, action type or operation and object -> the
  digest a plan shows (dataset.summary.Digest: row count, MPU totals, key values).

Everything is trusted only under the same rules: `rules_key` covers the JSON Schema, the source of
the modules that parse and check, and the version, so another reconciler never reads this file's
entries. What the path checks find (a link leaving the repository, a missing file) is never cached:
they run every time. A missing, damaged or foreign file is ignored; `save` never fails a command (a
read-only or missing directory just keeps no cache). The file holds spec documents (which live in git
anyway) and the digests a plan document shows; no CSV rows.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
from importlib import resources
from pathlib import Path

from reconciler import __version__
from reconciler.dataset.summary import Digest

CACHE_FILE = "spec-checks.json"
MAX_CACHE_BYTES = 256 * 1024 * 1024
MAX_DATA_ENTRIES = 200_000  # data verdicts kept from earlier runs besides this run's own
# The modules whose code decides a verdict or shapes what is remembered.
_RULES = ("spec/load.py", "spec/rules.py", "spec/schema.py", "spec/datafiles.py", "spec/columns.py", "spec/cache.py",
          "dataset/summary.py", "dataset/table.py", "actions.py", "model.py")

SpecDocs = list  # [[index among the file's documents, line, value], ...]


@functools.lru_cache(maxsize=1)
def rules_key() -> str:
    """What every remembered entry depends on: the schema, the checking code, the version."""
    from reconciler.spec.schema import schema_text

    digest = hashlib.sha256(schema_text().encode("utf-8"))
    package = resources.files("reconciler")
    for name in _RULES:
        digest.update(package.joinpath(name).read_bytes())
    digest.update(__version__.encode())
    return digest.hexdigest()


def data_key(sha256: str, kind: str, mode: str, where: tuple[str, str]) -> str:
    """The address of a data file's verdict: its content and what it is checked as."""
    return "|".join((sha256, kind, mode, *where))


class CheckCache:
    """This run's view of the cache file: what earlier runs left, and what this run used or learned."""

    def __init__(self, path: Path | None):
        self.path = path
        specs, data = self._read() if path is not None else ({}, {})
        self.stored_specs: dict[str, list] = specs
        self.stored_data: dict[str, list] = data
        self.specs: dict[str, list] = {}
        self.data: dict[str, list] = {}

    @classmethod
    def under(cls, root: Path) -> "CheckCache":
        """The cache of the repository at `root`: under state/.cache/, none without state/ (nothing is created)."""
        state = root / "state"
        return cls(state / ".cache" / CACHE_FILE if state.is_dir() else None)

    def spec_docs(self, source: str, sha256: str) -> SpecDocs | None:
        """The documents a spec file with these bytes parsed to, when an earlier run found nothing wrong."""
        entry = self.stored_specs.get(source)
        if entry is None or entry[0] != sha256:
            return None
        self.specs[source] = entry
        return entry[1]

    def remember_spec(self, source: str, sha256: str, docs: SpecDocs) -> None:
        """A spec file that parsed and passed its own checks."""
        if self.path is not None:
            self.specs[source] = [sha256, docs]

    def digest(self, key: str) -> Digest | None:
        """The digest of a data file that passed its checks before."""
        entry = self.data.get(key) or self.stored_data.get(key)
        if entry is None:
            return None
        try:
            rows, totals, summary = entry
            found = Digest(rows=int(rows), totals=tuple((str(c), str(t)) for c, t in totals),
                           summary=tuple((str(k), v if isinstance(v, str) else tuple(map(str, v))) for k, v in summary))
        except (TypeError, ValueError):
            return None
        self.data[key] = entry
        return found

    def remember_data(self, key: str, digest: Digest) -> None:
        """A data file that passed its checks, and its digest."""
        if self.path is not None:
            self.data[key] = [digest.rows, [list(t) for t in digest.totals],
                              [[k, v if isinstance(v, str) else list(v)] for k, v in digest.summary]]

    def save(self) -> None:
        """Write what this run used and learned, when it differs from what the file holds."""
        if self.path is None or (self.specs == self.stored_specs and self.data.keys() <= self.stored_data.keys()):
            return
        data = dict(self.data)
        for key, entry in self.stored_data.items():  # files other runs checked (e.g. `validate some/path`)
            if len(data) >= MAX_DATA_ENTRIES:
                break
            data.setdefault(key, entry)
        body = {"key": rules_key(), "specs": self.specs, "data": data}
        temp = None
        try:
            self.path.parent.mkdir(exist_ok=True)
            fd, temp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(body, handle, separators=(",", ":"))  # ASCII: a lone surrogate a YAML escape made survives
            os.replace(temp, self.path)
        except (OSError, ValueError):
            if temp is not None:
                Path(temp).unlink(missing_ok=True)

    def _read(self) -> tuple[dict, dict]:
        assert self.path is not None
        try:
            if self.path.stat().st_size > MAX_CACHE_BYTES:
                return {}, {}
            body = json.loads(self.path.read_bytes())
            if not isinstance(body, dict) or body.get("key") != rules_key():
                return {}, {}
            specs, data = body["specs"], body["data"]
            if not isinstance(specs, dict) or not isinstance(data, dict):
                return {}, {}
            return ({k: v for k, v in specs.items() if _spec_entry(v)},
                    {k: v for k, v in data.items() if isinstance(v, list) and len(v) == 3})
        except (OSError, ValueError, TypeError, KeyError, RecursionError):
            return {}, {}


def _spec_entry(entry: object) -> bool:
    """[sha256, [[index, line, value], ...]]: the shape remember_spec writes."""
    return (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str) and isinstance(entry[1], list)
            and all(isinstance(d, list) and len(d) == 3 and isinstance(d[0], int) and isinstance(d[1], int)
                    for d in entry[1]))
