"""The only yaml user: read spec files, check every document, and build the desired state.

Every problem (YAML, schema, cross-document, data file) is collected with file, line and field path;
bad input never raises anything but a ReconcilerError (ConfigError, SpecError). The schema's verdict
and the wording of its errors are in schema.py; the rules beyond the schema in rules.py.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import yaml

from reconciler.errors import ConfigError, SpecError
from reconciler.model import DesiredState, Problem
from reconciler.spec import definitions as specdefinitions
from reconciler.spec import rules as specrules
from reconciler.spec.rules import FINGERPRINT_VERSION, fingerprint
from reconciler.spec import schema as specschema
from reconciler.spec.cache import CheckCache
from reconciler.spec.schema import schema_text

__all__ = ["FINGERPRINT_VERSION", "RepoCheck", "check_repo", "fingerprint", "load_desired", "load_yaml_file",
           "schema_text", "validate_repo"]

MAX_SPEC_BYTES = 1024 * 1024
MAX_NODES = 20_000  # per document: stops alias bombs ("billion laughs") before they expand
MAX_DEPTH = 64
MAX_NESTING = 1000  # a cheap upper estimate of nesting, checked before parsing
_SPEC_SUFFIXES = (".yaml", ".yml")
_TAG = "tag:yaml.org,2002:"
_SCALARS = {_TAG + t for t in ("null", "bool", "int", "float")}
_AS_TEXT = {_TAG + "str", _TAG + "timestamp"}  # dates stay text: values are sent to Zuora as written
_BaseLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_RESOLVED: dict = {}  # (plain scalar text, implicit flags) -> its tag
MAX_RESOLVED = 50_000


class _Loader(_BaseLoader):
    """The safe loader, remembering each scalar's resolved tag: specs repeat the same keys and values."""

    def resolve(self, kind, value, implicit):
        """The tag of a node, as the safe loader resolves it (it has no path resolvers, so only text matters)."""
        if kind is not yaml.ScalarNode or len(value) > 64:
            return super().resolve(kind, value, implicit)
        tag = _RESOLVED.get((value, implicit))
        if tag is None:
            tag = super().resolve(kind, value, implicit)
            if len(_RESOLVED) < MAX_RESOLVED:
                _RESOLVED[(value, implicit)] = tag
        return tag
_CONSTRUCTOR = yaml.constructor.SafeConstructor()  # stateless for scalars


class _TooComplex(Exception):
    pass


class _Unusual(Exception):
    """A document _quick leaves to _build: a problem to report, or a limit to check."""


@dataclass(frozen=True)
class RepoCheck:
    """The outcome of validating a repo: the desired state when valid, and every problem found."""

    desired: DesiredState | None
    problems: tuple[Problem, ...]
    documents: int  # spec documents checked

    @property
    def summary(self) -> str:
        """`3 problems in 2 files`, or `12 specs valid` when there are none."""
        if self.problems:
            files = len({p.file for p in self.problems})
            return f"{_count(len(self.problems), 'problem')} in {_count(files, 'file')}"
        return f"{_count(self.documents, 'spec')} valid"


# ---------------------------------------------------------------- YAML


def load_yaml_file(path: Path) -> object:
    """Parse a single-document YAML file (reconciler.yaml); ConfigError naming file and line when malformed."""
    docs, problems = _load_file(os.fspath(path), str(path))
    if problems:
        raise ConfigError("\n".join(p.render() for p in problems))
    if len(docs) > 1:
        raise ConfigError(f"{path}:{docs[1].line}: expected a single YAML document, found several")
    return docs[0].value if docs else None


def _load_file(path: str, source: str, cache: CheckCache | None = None) -> tuple[list[specrules.Document], list[Problem]]:
    """The file's documents and its problems; documents a `cache` remembers for these bytes come from it
    (`Document.known`: nothing of their own to report)."""
    try:
        with open(path, "rb") as stream:
            if os.fstat(stream.fileno()).st_size > MAX_SPEC_BYTES:
                return [], [Problem(source, f"file is larger than {MAX_SPEC_BYTES // 1024} KB; is it really a spec?")]
            data = stream.read()
    except OSError as err:
        return [], [Problem(source, f"cannot read the file: {err.strerror or err}")]
    if b"\0" in data:
        line = data.count(b"\n", 0, data.index(b"\0")) + 1
        return [], [Problem(source, "binary file (NUL bytes), not YAML", line=line)]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        message = f"not UTF-8 (invalid byte 0x{data[err.start]:02x}); save the file as UTF-8"
        return [], [Problem(source, message, line=line)]
    sha = None
    if cache is not None and cache.path is not None:
        sha = hashlib.sha256(data).hexdigest()
        known = cache.spec_docs(source, sha)
        if known is not None:
            return [specrules.Document(source, path, line, value, lines=None, index=index, sha256=sha, known=True,
                                       locate=functools.partial(_line_map, text, index))
                    for index, line, value in known], []
    if _too_deep(text):
        return [], [Problem(source, f"nested more than {MAX_NESTING} levels deep; no spec is, is this really one?")]
    docs, problems = [], []
    loader = _Loader(text)
    try:
        index = -1
        while loader.check_node():
            node = loader.get_node()
            index += 1
            if node is None or (node.tag == _TAG + "null" and isinstance(node, yaml.ScalarNode)):
                continue  # an empty document
            doc = specrules.Document(source, path, node.start_mark.line + 1, None, index=index, sha256=sha)
            try:
                doc.value = _quick(node, 0, [MAX_NODES])
                doc.lines, doc.locate = None, functools.partial(_line_map, text, index)
            except _Unusual:  # the full build, which says what is wrong and where
                try:
                    doc.value = _build(node, (), doc.lines, problems, doc, [MAX_NODES])
                except _TooComplex:
                    problems.append(doc.problem((), f"document is nested deeper than {MAX_DEPTH} levels or too large"))
                    continue
            docs.append(doc)
    except yaml.MarkedYAMLError as err:
        what = f"{err.context}: {err.problem}" if err.context else err.problem
        line = err.problem_mark.line + 1 if err.problem_mark else None
        problems.append(Problem(source, f"invalid YAML: {what}", line=line))
    except yaml.reader.ReaderError as err:
        character = chr(err.character) if isinstance(err.character, int) else str(err.character)
        line = text.count("\n", 0, max(text.find(character), 0)) + 1
        problems.append(Problem(source, f"invalid YAML: the control character {character!r} is not allowed", line=line))
    except yaml.YAMLError as err:
        problems.append(Problem(source, f"invalid YAML: {err}"))
    finally:
        loader.dispose()
    return docs, problems


def _too_deep(text: str) -> bool:
    """libyaml recurses on the C stack and can crash the process on absurd nesting: refuse it up front."""
    if text.count("[") + text.count("{") > MAX_NESTING:
        depth = 0
        for match in re.finditer(r"[\[\]{}]", text):
            depth = depth + 1 if match.group() in "[{" else max(depth - 1, 0)
            if depth > MAX_NESTING:
                return True
    return re.search(rf"^[ \t?:-]{{{MAX_NESTING}}}", text, re.MULTILINE) is not None


def _quick(node, depth: int, budget: list) -> object:
    """_build for a document with nothing to report, without its line map; _Unusual for anything else."""
    budget[0] -= 1
    if budget[0] < 0 or depth > MAX_DEPTH:
        raise _Unusual
    kind = node.__class__
    if kind is yaml.ScalarNode:
        if node.tag in _AS_TEXT:
            return node.value
        if node.tag in _SCALARS:
            return _scalar(node)
    elif kind is yaml.MappingNode:
        result: dict = {}
        for key_node, value_node in node.value:
            if key_node.__class__ is not yaml.ScalarNode or key_node.value in result:
                raise _Unusual
            result[key_node.value] = _quick(value_node, depth + 1, budget)
        return result
    elif kind is yaml.SequenceNode:
        return [_quick(item, depth + 1, budget) for item in node.value]
    raise _Unusual


def _line_map(text: str, index: int) -> dict:
    """The line of every field of the `index`th document of `text` (which loaded before without a problem)."""
    loader = _Loader(text)
    try:
        for _ in range(index + 1):
            loader.check_node()  # as _load_file walks the documents
            node = loader.get_node()
        doc = specrules.Document("", "", 0, None)
        _build(node, (), doc.lines, [], doc, [MAX_NODES])
        return doc.lines
    finally:
        loader.dispose()


def _build(node, at: tuple, lines: dict, problems: list, doc: specrules.Document, budget: list) -> object:
    budget[0] -= 1
    if budget[0] < 0 or len(at) > MAX_DEPTH:
        raise _TooComplex
    if isinstance(node, yaml.MappingNode):
        result: dict = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                problems.append(doc.problem(at, "mapping keys must be plain strings"))
                continue
            key = key_node.value
            if key in result:
                problems.append(Problem(doc.source, f"duplicate key {key!r} (first at line {lines[at + (key,)]})",
                                        line=key_node.start_mark.line + 1, path=specrules.dotted(at + (key,))))
            lines[at + (key,)] = key_node.start_mark.line + 1
            result[key] = _build(value_node, at + (key,), lines, problems, doc, budget)
        return result
    if isinstance(node, yaml.SequenceNode):
        items = []
        for index, item in enumerate(node.value):
            lines[at + (index,)] = item.start_mark.line + 1
            items.append(_build(item, at + (index,), lines, problems, doc, budget))
        return items
    if node.tag in _AS_TEXT:
        return node.value
    if node.tag in _SCALARS:
        return _scalar(node)
    problems.append(doc.problem(at, f"unsupported YAML tag {node.tag}; use plain strings, numbers and booleans"))
    return node.value


def _scalar(node) -> object:
    """A null, bool, int or float scalar's value; as text when Python cannot hold it as a finite number."""
    try:
        value = _CONSTRUCTOR.yaml_constructors[node.tag](_CONSTRUCTOR, node)
    except (ValueError, OverflowError):  # e.g. an integer past Python's 4300-digit limit
        return node.value
    if isinstance(value, float) and not math.isfinite(value):
        return node.value  # as text, so the schema names the field's expected type
    return value


# ---------------------------------------------------------------- schema


def _schema_problems(doc: specrules.Document) -> list[Problem]:
    return [doc.problem(at, message) for at, message in specschema.problems(doc.value)]


# ---------------------------------------------------------------- the repo


def validate_repo(settings, paths: Sequence[str] = ()) -> tuple[DesiredState | None, list[Problem]]:
    """Validate every spec (or those under `paths`): the desired state when valid, and every problem."""
    check = check_repo(settings, paths)
    return check.desired, list(check.problems)


def load_desired(settings) -> DesiredState:
    """The validated desired state of the whole repo; SpecError carrying every problem otherwise."""
    check = check_repo(settings)
    if check.problems:
        raise SpecError(check.problems, f"the specs are invalid ({check.summary}); fix them, "
                                        "`reconciler validate` lists them again")
    return check.desired


def check_repo(settings, paths: Sequence[str] = ()) -> RepoCheck:
    """validate_repo, also telling how many spec documents were checked."""
    root = Path(settings.root)
    problems: list[Problem] = []
    files = _spec_files(Path(settings.specs_dir), root, problems)
    selected = _select(files, paths, settings, problems) if paths else set(files)
    cache = CheckCache.under(root)
    docs, parsed = [], {}  # parsed: spec file -> its documents, while none has a problem (to remember)
    for path in files:
        source = specrules.rel(path, root)
        found, load_problems = _load_file(path, source, cache)
        for doc in found:
            doc.selected = path in selected
        docs.extend(found)
        if path in selected:
            problems.extend(load_problems)
            if not load_problems and found and found[0].sha256 is not None and not found[0].known:
                parsed[source] = found
    data = specrules.DataFiles(root, cache)
    specs = []
    for doc in (d for d in docs if d.selected):
        own = [] if doc.known else _schema_problems(doc) + specrules.kind_problems(doc)
        file_info = data.check(doc, own)
        if own:
            parsed.pop(doc.source, None)
        problems.extend(own)
        if not own and file_info is not False:
            specs.append(specrules.desired_spec(doc, file_info))
    problems.extend(specrules.cross_problems(docs))
    problems.extend(specdefinitions.check_jobs(root, [d for d in docs if d.selected]))  # only with definitions/
    for source, found in parsed.items():  # files with nothing of their own to report, for the next run
        cache.remember_spec(source, found[0].sha256, [[d.index, d.line, d.value] for d in found])
    cache.save()
    problems = sorted(dict.fromkeys(problems), key=lambda p: (p.file, p.line or 0, p.row or 0))
    desired = None if problems else specrules.desired_state(specs)
    return RepoCheck(desired, tuple(problems), sum(1 for d in docs if d.selected))


def _spec_files(specs_dir: Path, root: Path, problems: list) -> list[str]:
    if not specs_dir.is_dir():
        problems.append(Problem(specrules.rel(specs_dir, root), "specs directory not found; create it, or set "
                                                                "`specs:` in reconciler.yaml to where your specs are"))
        return []
    found: list[str] = []
    real_root = os.path.realpath(root)
    top = os.fspath(specs_dir)
    # Below the specs directory only links can lead elsewhere (linked directories are not entered, as
    # os.walk does not), so only they and the directory itself need resolving.
    top_inside = specrules.inside(os.path.realpath(top), real_root)
    pending = [top]
    while pending:
        try:
            listing = os.scandir(pending.pop())
        except OSError:
            continue  # unreadable: skipped, as os.walk skips it
        with listing as entries:
            for entry in entries:
                name = entry.name
                if name.startswith("."):
                    continue  # .git and friends
                if entry.is_dir():
                    if not entry.is_symlink():
                        pending.append(entry.path)
                    continue
                if not name.endswith(_SPEC_SUFFIXES):
                    continue
                real_inside = (specrules.inside(os.path.realpath(entry.path), real_root) if entry.is_symlink()
                               else top_inside)
                if real_inside:
                    found.append(entry.path)
                else:  # what a spec says must be in the repository's history, like its data file
                    problems.append(Problem(specrules.rel(entry.path, root), "is a link pointing outside the "
                                                                             "repository; a spec file must be inside it"))
    return sorted(found, key=lambda p: specrules.rel(p, root))


def _select(files: list[str], paths: Sequence[str], settings, problems: list) -> set[str]:
    base = os.fspath(settings.cwd or Path.cwd())
    specs_dir = os.fspath(settings.specs_dir)
    selected: set[str] = set()
    for raw in paths:
        target = os.path.abspath(os.path.join(base, raw))
        if not os.path.exists(target):
            problems.append(Problem(raw, "no such file or directory"))
        elif not specrules.inside(target, specs_dir):
            problems.append(Problem(raw, f"not inside the specs directory {specrules.rel(specs_dir, settings.root)}/"))
        elif os.path.isdir(target):
            selected.update(f for f in files if specrules.inside(f, target))
        elif target in files:
            selected.add(target)
        else:
            problems.append(Problem(raw, "not a spec file (*.yaml or *.yml)"))
    return selected


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' * (n != 1)}"
