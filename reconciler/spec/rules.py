"""Spec rules that need no YAML: per-kind rules, data files, names and dependencies, fingerprints.

Standard library only (plus datafiles, actions and model); load.py parses and schema-checks the documents
and hands them here as Document values.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import stat
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from reconciler.actions import FILE_OPERATIONS, FILTER_OPERATIONS, MASS_ACTIONS
from reconciler.dataset.blobs import file_sha256
from reconciler.dataset.facts import first_run_facts, resend_of
from reconciler.dataset.summary import Tally
from reconciler.model import (
    canonical_json,
    CUSTOM_OBJECT_JOB,
    MASS_ACTION,
    Condition,
    DesiredSpec,
    DesiredState,
    Problem,
)
from reconciler.spec import cache as speccache, datafiles

FINGERPRINT_VERSION = 1


@dataclass
class Document:
    """One parsed YAML document and where each of its nodes came from."""

    source: str  # spec file relative to the repo root
    path: str  # absolute
    line: int
    value: object
    lines: dict | None = field(default_factory=dict)  # field path tuple -> line; None: ask `locate`
    selected: bool = True
    # Builds `lines` on first use: most documents never report a problem, so never need it.
    locate: Callable[[], dict] | None = field(default=None, repr=False, compare=False)
    index: int = 0  # among the file's YAML documents (empty ones included)
    sha256: str | None = None  # of the file's bytes, when a spec.cache.CheckCache is in use
    known: bool = False  # from the cache: passed its own checks before, with these bytes

    def line_of(self, at: tuple) -> int:
        """The line of the deepest node of `at` that exists (a missing field points at its parent)."""
        if self.lines is None:
            self.lines = self.locate() if self.locate is not None else {}
        for end in range(len(at), 0, -1):
            if at[:end] in self.lines:
                return self.lines[at[:end]]
        return self.line

    def problem(self, at: tuple, message: str) -> Problem:
        """A Problem located at field path `at` of this document."""
        return Problem(self.source, message, line=self.line_of(at), path=dotted(at))

    def get(self, *keys) -> object:
        """The value at a key path, or None when any step is missing or not a mapping."""
        value = self.value
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        return value


def kind_problems(doc: Document) -> list[Problem]:
    """Rules the schema cannot phrase well: file and filter per operation, a guard on delete-all."""
    spec, kind = doc.get("spec"), doc.get("kind")
    if not isinstance(spec, dict):
        return []
    out = []
    if kind == MASS_ACTION:
        file = spec.get("file")
        if isinstance(file, str) and file and not file.lower().endswith((".csv", ".zip")):
            out.append(doc.problem(("spec", "file"), "must be a .csv file, or a .zip holding one .csv"))
    if kind != CUSTOM_OBJECT_JOB:
        return out
    operation = spec.get("operation")
    if operation in FILE_OPERATIONS and "file" not in spec:
        out.append(doc.problem(("spec", "file"), f"required for operation {operation}: the records to {operation}"))
    if operation in FILTER_OPERATIONS:
        if "file" in spec:
            out.append(doc.problem(("spec", "file"), "not allowed for operation delete; a delete job selects "
                                                     "its records with spec.filter"))
        if "resend" in spec:
            out.append(doc.problem(("spec", "resend"), "not allowed for operation delete; it sends no rows"))
        if "filter" not in spec and spec.get("allowDeleteAll") is not True:
            out.append(doc.problem(("spec", "operation"), f"a delete without a filter deletes every "
                                                          f"{spec.get('object')!r} record; add spec.filter, or set "
                                                          "allowDeleteAll: true if that is really what you want"))
    elif operation in FILE_OPERATIONS and "filter" in spec:
        out.append(doc.problem(("spec", "filter"), f"only allowed for operation delete (this job is {operation})"))
    return out


class DataFiles:
    """Resolves and checks data files once each, reading every file a single time."""

    def __init__(self, root: Path, cache: speccache.CheckCache | None = None):
        self.root = os.fspath(root)
        self.cache = cache or speccache.CheckCache(None)
        self.real_root = os.path.realpath(self.root)
        self.real_dirs: dict[str, str] = {}  # many specs share a data directory: resolve it once
        self.seen: dict = {}

    def check(self, doc: Document, problems: list):
        """(repo path, sha256, size, its DataFacts digest) of the spec's file; None when it has none; False when it
        is unusable."""
        raw, kind, spec = doc.get("spec", "file"), doc.get("kind"), doc.get("spec")
        if not isinstance(raw, str) or not raw or kind not in (MASS_ACTION, CUSTOM_OBJECT_JOB):
            return None
        if kind == CUSTOM_OBJECT_JOB and spec.get("operation") in FILTER_OPERATIONS:
            return None  # kind_problems says the file is not allowed
        at = ("spec", "file")
        if os.path.isabs(raw) or raw.startswith("~"):
            problems.append(doc.problem(at, "must be a path relative to the spec file"))
            return False
        # The normalized path is the one recorded and read later, so it is the one checked here.
        lexical = os.path.normpath(os.path.join(os.path.dirname(doc.path), raw))
        if not inside(lexical, self.root):
            problems.append(doc.problem(at, f"points outside the repository ({raw}); data files must be inside it"))
            return False
        display = rel(lexical, self.root)
        directory, name = os.path.split(lexical)
        if directory not in self.real_dirs:
            self.real_dirs[directory] = os.path.realpath(directory)
        real = os.path.join(self.real_dirs[directory], name)
        try:
            info = os.lstat(real)
            if stat.S_ISLNK(info.st_mode):
                real = os.path.realpath(real)
                info = os.stat(real)
        except FileNotFoundError:
            problems.append(doc.problem(at, f"file not found: {display}"))
            return False
        except OSError as err:
            problems.append(doc.problem(at, f"cannot read {display}: {err.strerror or err}"))
            return False
        if not inside(real, self.real_root):
            problems.append(doc.problem(at, f"{display} is a link pointing outside the repository"))
            return False
        if not stat.S_ISREG(info.st_mode):
            problems.append(doc.problem(at, f"not a regular file: {display}"))
            return False
        if kind == MASS_ACTION:
            mode, check = spec.get("actionType"), datafiles.check_mass_action_file
        else:
            mode, check = spec.get("operation"), datafiles.check_custom_object_file
        if not isinstance(mode, str) or mode not in (MASS_ACTIONS if kind == MASS_ACTION else FILE_OPERATIONS):
            return False  # the schema already said why
        where = tuple(v if isinstance(v, str) else "" for v in (spec.get("namespace", "default"), spec.get("object")))
        key = (real, kind, mode, where)
        if key not in self.seen:
            self.seen[key] = self._verdict(real, info.st_size, kind, mode, where, display, check)
            problems.extend(self.seen[key][0])
        found, result = self.seen[key]
        return False if found else result

    def _verdict(self, real: str, size: int, kind: str, mode: str, where: tuple[str, str], display: str, check):
        """(problems, (display, sha256, size, digest)) of one file: remembered by content, or checked now.

        With a cache, a file under datafiles.BLOCK (most are) is read once: its bytes are hashed for the
        lookup and, when it is not known, checked as they are."""
        sha = key = content = None
        if self.cache.path is not None:
            try:
                if size < datafiles.BLOCK:
                    with open(real, "rb") as stream:
                        content = stream.read()
                    sha = hashlib.sha256(content).hexdigest()
                else:
                    sha = file_sha256(Path(real))
            except OSError:
                pass  # the check says why it cannot be read
            else:
                key = speccache.data_key(sha, kind, mode, where)
                known = self.cache.digest(key)
                if known is not None:
                    return [], (display, sha, len(content) if content is not None else size, known)
        digest, tallies = (None if content is not None else hashlib.sha256()), []

        def observe(header):
            fields = dict(action_type=mode) if kind == MASS_ACTION else dict(
                namespace=where[0], object=where[1], operation=mode)
            tallies.append(Tally(kind, header, **fields))
            return tallies[-1]

        found = check(real, mode, display, digest=digest, observe=observe, content=content)
        facts = tallies[0].digest() if tallies else None
        read = sha if digest is None else digest.hexdigest()
        if not found and facts is not None and key is not None and read == sha:
            self.cache.remember_data(key, facts)
        return found, (display, read, len(content) if content is not None else size, facts)


def inside(path: str, root: str) -> bool:
    """True when `path` is `root` or below it (both absolute and normalized)."""
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def cross_problems(docs: list[Document]) -> list[Problem]:
    """Unique names, known dependsOn targets, and no dependency cycles, across the whole repo."""
    out: list[Problem] = []
    by_name = defaultdict(list)
    for doc in docs:
        if isinstance(doc.get("metadata", "name"), str):
            by_name[doc.get("metadata", "name")].append(doc)
    for name, same in by_name.items():
        for doc in (d for d in same if d.selected and len(same) > 1):
            others = ", ".join(f"{o.source}:{o.line_of(('metadata', 'name'))}" for o in same if o is not doc)
            out.append(doc.problem(("metadata", "name"), f"duplicate name {name!r}, also used at {others}"))
    graph = defaultdict(set)
    for doc in docs:
        name, deps = doc.get("metadata", "name"), doc.get("spec", "dependsOn")
        for index, dep in enumerate(deps if isinstance(deps, list) else ()):
            at = ("spec", "dependsOn", index)
            if not isinstance(dep, str) or not isinstance(name, str):
                continue
            if dep == name:
                if doc.selected:
                    out.append(doc.problem(at, "a spec cannot depend on itself"))
            elif dep not in by_name:
                if doc.selected:
                    close = difflib.get_close_matches(dep, by_name, n=1)
                    hint = f"; did you mean {close[0]!r}?" if close else ""
                    out.append(doc.problem(at, f"no spec is named {dep!r}{hint}"))
            else:
                graph[name].add(dep)
    for cycle in _cycles(graph):
        for index, member in enumerate(cycle[:-1]):
            rotated = cycle[index:-1] + cycle[:index] + [member]
            for doc in (d for d in by_name[member] if d.selected):
                out.append(doc.problem(("spec", "dependsOn"), f"dependency cycle: {' -> '.join(rotated)}"))
    return out


def _cycles(graph: dict) -> list[list[str]]:
    """One cycle (first node repeated at the end) per back edge found by a depth-first walk."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    found, seen = [], set()
    for start in sorted(graph):
        if start in state:
            continue
        path, stack = [start], [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                cycle = path[path.index(nxt):]
                if frozenset(cycle) not in seen:
                    seen.add(frozenset(cycle))
                    found.append(cycle + [nxt])
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph.get(nxt, ()))))
    return found


# ---------------------------------------------------------------- desired state and fingerprints


def fingerprint(*, kind: str, file_sha256: str | None, revision: int, action_type: str | None = None,
                namespace: str | None = None, object: str | None = None, operation: str | None = None,
                conditions: Sequence[Condition] = (), allow_delete_all: bool = False, resend: str | None = None) -> str:
    """sha256 over what is sent to Zuora (kind, action or object/operation/filter, file bytes, resend) and the
    revision. `resend` counts only when the spec states it, so specs written before it keep their fingerprint."""
    body: dict = {"fingerprint_version": FINGERPRINT_VERSION, "kind": kind, "file_sha256": file_sha256,
                  "revision": revision}
    if resend is not None:
        body["resend"] = resend
    if kind == MASS_ACTION:
        body["actionType"] = action_type
    else:
        body.update(namespace=namespace, object=object, operation=operation, allowDeleteAll=allow_delete_all,
                    filter=[[c.field, c.operator, c.value] for c in conditions] or None)
    return hashlib.sha256(canonical_json(body).encode("utf-8")).hexdigest()


def desired_spec(doc: Document, file_info) -> DesiredSpec:
    """The DesiredSpec of a document that passed every check; file_info as DataFiles.check returned it."""
    meta, spec, kind = doc.value["metadata"], doc.value["spec"], doc.value["kind"]
    path, sha, size, digest = file_info or (None, None, None, None)
    conditions = tuple(Condition(c["field"], c["operator"], c["value"])
                       for c in (spec.get("filter") or {}).get("conditions", ()))
    fields = dict(kind=kind, revision=int(spec.get("revision", 1)), file_sha256=sha, resend=spec.get("resend"))
    if kind == MASS_ACTION:
        fields.update(action_type=spec["actionType"])
    else:
        fields.update(namespace=spec.get("namespace", "default"), object=spec["object"],
                      operation=spec["operation"], conditions=conditions,
                      allow_delete_all=spec.get("allowDeleteAll", False))
    facts = None
    if digest is not None:  # the file's digest from the checks' pass over it (dataset.summary.Tally)
        mode = resend_of(kind, fields.get("action_type"), fields.get("operation"), fields["resend"])
        facts = first_run_facts(mode, sha, digest)
    return DesiredSpec(
        name=meta["name"], source=doc.source, line=doc.line, fingerprint=fingerprint(**fields),
        fingerprint_version=FINGERPRINT_VERSION, description=meta.get("description"),
        labels=tuple(sorted((meta.get("labels") or {}).items())), depends_on=tuple(spec.get("dependsOn", ())),
        file=path, file_size=size, file_facts=facts, **fields,
    )


def desired_state(specs: list[DesiredSpec]) -> DesiredState:
    """All specs sorted by name, with the digest that pins a saved plan to them."""
    specs = sorted(specs, key=lambda s: s.name)
    # Everything a plan depends on, so a saved plan goes stale when any of it changes.
    pinned = [[s.name, s.fingerprint, s.source, list(s.depends_on), s.labels, s.description] for s in specs]
    digest = hashlib.sha256(json.dumps(pinned, ensure_ascii=False).encode("utf-8")).hexdigest()
    return DesiredState(specs=tuple(specs), digest=digest)


def rel(path, root) -> str:
    """`path` relative to `root`, with forward slashes (how problems and records name files)."""
    path, root = os.fspath(path), os.fspath(root)
    if inside(path, root) and path != root:
        return path[len(root.rstrip(os.sep)) + 1:].replace(os.sep, "/")
    return Path(os.path.relpath(path, root)).as_posix()


def dotted(at: tuple) -> str:
    """("spec", "filter", "conditions", 0) -> "spec.filter.conditions[0]"."""
    out = ""
    for part in at:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out
