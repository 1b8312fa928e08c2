"""The repo's custom object definitions (definitions/<namespace>/<object>.json) and the checks `validate` runs
against them (standard library only). This module is the one reader and writer of those files.

Each file is the tenant's answer to GET /objects/definitions/<namespace>/<object>, as `reconciler definitions
pull` wrote it (sorted keys, two-space indent, so a pull request shows what changed). When a namespace's folder
exists, every custom object job of that namespace is checked against it: the object is defined; a create or
update file's columns are its fields, the required ones present and filled, values of the field's type,
format, length and enum, unique values not repeated in the file; a delete filter names filterable fields with
values of their type. Row numbers count the header as row 1.
"""

from __future__ import annotations

import csv
import difflib
import io
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from reconciler.actions import FILE_OPERATIONS, OPERATIONS, SYSTEM_FIELDS
from reconciler.model import CUSTOM_OBJECT_JOB, Problem

DIRECTORY = "definitions"
NAMESPACES = ("default", "com_zuora")
TYPES = ("string", "integer", "number", "boolean")
OBJECT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
MAX_ROW_PROBLEMS = 20


@dataclass(frozen=True)
class Field:
    """One field of a custom object definition (its `schema.properties` entry)."""

    name: str
    type: str
    format: str | None = None
    max_length: int | None = None
    enum: tuple | None = None
    minimum: float | None = None
    maximum: float | None = None
    has_default: bool = False
    system: bool = False

    @classmethod
    def from_json(cls, name: str, spec: dict, where: str) -> Field:
        """A field from its JSON; ValueError naming the place when it is not one."""
        if not isinstance(spec, dict) or spec.get("type") not in TYPES:
            raise ValueError(f"{where}.type must be one of {', '.join(TYPES)}")
        numbers = {}
        for key in ("maxLength", "minimum", "maximum"):
            value = spec.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise ValueError(f"{where}.{key} must be a number")
            numbers[key] = value
        enum = spec.get("enum")
        if enum is not None and not isinstance(enum, list):
            raise ValueError(f"{where}.enum must be a list")
        return cls(name, spec["type"], spec.get("format") if isinstance(spec.get("format"), str) else None,
                   numbers["maxLength"], tuple(map(str, enum)) if enum and not spec.get("multiselect") else None,
                   numbers["minimum"], numbers["maximum"], "default" in spec,
                   spec.get("origin") == "system" or name in SYSTEM_FIELDS or name == "Id")


@dataclass(frozen=True)
class ObjectDefinition:
    """A custom object's fields and their rules, read from definitions/<namespace>/<object>.json."""

    namespace: str
    object: str
    source: str  # the file, relative to the repo root
    fields: Mapping[str, Field]
    required: tuple[str, ...]
    filterable: tuple[str, ...]
    unique: tuple[str, ...]

    @classmethod
    def from_json(cls, namespace: str, body: object, source: str) -> ObjectDefinition:
        """The definition in a file's JSON (Zuora's CustomObjectDefinition); ValueError naming the place."""
        schema = body.get("schema") if isinstance(body, dict) else None
        if not isinstance(schema, dict):
            raise ValueError("must be a custom object definition: an object with a `schema` object")  # noqa: TRY004
        name = schema.get("object", body.get("type"))
        if not isinstance(name, str) or not OBJECT_NAME.match(name):
            raise ValueError("schema.object must be the object's API name (letters, digits and _)")
        properties = schema.get("properties")
        if not isinstance(properties, dict) or not properties:
            raise ValueError("schema.properties must be an object of fields")
        fields = {field: Field.from_json(field, spec, f"schema.properties.{field}") for field, spec in properties.items()}
        lists = {}
        for key in ("required", "filterable", "unique"):
            names = schema.get(key, [])
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise ValueError(f"schema.{key} must be a list of field names")
            unknown = [n for n in names if n not in fields]
            if unknown:
                raise ValueError(f"schema.{key} names {unknown[0]!r}, which is not in schema.properties")
            lists[key] = tuple(names)
        return cls(namespace, name, source, fields, lists["required"], lists["filterable"], lists["unique"])


def path_of(root: Path, namespace: str, object_name: str) -> Path:
    """Where the definition of `object_name` lives in the repo."""
    return Path(root) / DIRECTORY / namespace / f"{object_name}.json"


def render(body: dict) -> str:
    """A definition as the file holds it: sorted keys, two-space indent, a final newline."""
    return json.dumps(body, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write(root: Path, namespace: str, object_name: str, body: dict) -> str:
    """Write one definition file; "added", "changed" or "unchanged"."""
    if not OBJECT_NAME.match(object_name):
        raise ValueError(f"{object_name!r} is not a custom object API name")
    path = path_of(root, namespace, object_name)
    text = render(body)
    before = path.read_text(encoding="utf-8") if path.is_file() else None
    if before == text:
        return "unchanged"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return "added" if before is None else "changed"


def load(root: Path) -> tuple[dict[tuple[str, str], ObjectDefinition], set[str], list[Problem]]:
    """(definitions by (namespace, object), the namespaces that have a folder, problems of unreadable files)."""
    found: dict[tuple[str, str], ObjectDefinition] = {}
    namespaces: set[str] = set()
    problems: list[Problem] = []
    base = Path(root) / DIRECTORY
    if not base.is_dir():
        return found, namespaces, problems
    for namespace in NAMESPACES:
        folder = base / namespace
        if not folder.is_dir():
            continue
        namespaces.add(namespace)
        for path in sorted(folder.glob("*.json")):
            source = f"{DIRECTORY}/{namespace}/{path.name}"
            try:
                body = json.loads(path.read_bytes().decode("utf-8"))
            except UnicodeDecodeError:
                problems.append(Problem(source, "not UTF-8 text; run `reconciler definitions pull` again"))
                continue
            except json.JSONDecodeError as err:
                problems.append(Problem(source, f"not valid JSON: {err.msg} (column {err.colno})", line=err.lineno))
                continue
            except OSError as err:
                problems.append(Problem(source, f"cannot read the file: {err.strerror or err}"))
                continue
            try:
                definition = ObjectDefinition.from_json(namespace, body, source)
            except ValueError as err:
                problems.append(Problem(source, str(err)))
                continue
            if definition.object != path.stem:
                problems.append(Problem(source, f"defines {definition.object!r}; the file must be named "
                                                f"{definition.object}.json"))
                continue
            found[(namespace, definition.object)] = definition
    return found, namespaces, problems


def check_jobs(root: Path, docs: list) -> list[Problem]:
    """Every problem of the custom object jobs in `docs` (spec.rules.Document values) against the repo's
    definitions, and of the definition files themselves; nothing when the repo has no definitions/."""
    found, namespaces, problems = load(root)
    for doc in docs:
        spec = doc.get("spec")
        if doc.get("kind") != CUSTOM_OBJECT_JOB or not isinstance(spec, dict):
            continue
        namespace, name, operation = spec.get("namespace", "default"), spec.get("object"), spec.get("operation")
        if not all(isinstance(v, str) for v in (namespace, name, operation)) or namespace not in namespaces \
                or operation not in OPERATIONS:
            continue  # no definitions for the namespace, or the schema already said what is wrong
        definition = found.get((namespace, name))
        if definition is None:
            known = [o for n, o in found if n == namespace]
            close = difflib.get_close_matches(name, known, n=1)
            problems.append(doc.problem(("spec", "object"), (
                f"{DIRECTORY}/{namespace}/ has no definition of {name!r}" + (f"; did you mean {close[0]!r}?" if close
                else "") + f"; Zuora refuses jobs on objects the tenant does not define (`reconciler definitions "
                f"pull {name}` fetches it)")))
        elif operation in FILE_OPERATIONS:
            problems.extend(_file_problems(root, doc, definition, operation))
        else:
            problems.extend(_filter_problems(doc, definition))
    return problems


def _filter_problems(doc, definition: ObjectDefinition) -> list[Problem]:
    conditions = doc.get("spec", "filter", "conditions")
    problems = []
    for index, condition in enumerate(conditions if isinstance(conditions, list) else []):
        if not isinstance(condition, dict) or not isinstance(condition.get("field"), str):
            continue
        at = ("spec", "filter", "conditions", index)
        field = definition.fields.get(condition["field"])
        if field is None:
            problems.append(doc.problem(at + ("field",), f"{condition['field']!r} is not a field of "
                                        f"{definition.object}{_close(condition['field'], definition.fields)} "
                                        f"({definition.source})"))
        elif field.name not in definition.filterable:
            problems.append(doc.problem(at + ("field",), f"{field.name} is not filterable; Zuora filters only on "
                                        f"{', '.join(definition.filterable)} ({definition.source})"))
        elif "value" in condition:
            problem = value_problem(field, condition["value"])
            if problem:
                problems.append(doc.problem(at + ("value",), f"{field.name} {problem}"))
    return problems


def _close(name: str, choices) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.7)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _file_problems(root: Path, doc, definition: ObjectDefinition, operation: str) -> list[Problem]:
    raw = doc.get("spec", "file")
    if not isinstance(raw, str) or not raw or os.path.isabs(raw):
        return []
    path = os.path.normpath(os.path.join(os.path.dirname(doc.path), raw))
    real_root = os.path.realpath(root)
    if not os.path.realpath(path).startswith(real_root.rstrip(os.sep) + os.sep) or not os.path.isfile(path):
        return []  # the data file checks say why
    display = os.path.relpath(path, root).replace(os.sep, "/")
    try:
        with open(path, "rb") as handle:
            text = handle.read().decode("utf-8-sig")
        table = [row for row in csv.reader(io.StringIO(text, newline=""), strict=True)]
    except (OSError, UnicodeDecodeError, csv.Error):
        return []  # the data file checks report an unreadable file
    if not table:
        return []
    header = [name.strip() for name in table[0]]
    problems = [Problem(display, message, row=1, path=column)
                for column, message in _header_problems(header, definition, operation)]
    columns = [(i, definition.fields[n]) for i, n in enumerate(header)
               if n in definition.fields and not definition.fields[n].system]
    required = [definition.fields[n] for n in definition.required
                if n in header and not definition.fields[n].system and not definition.fields[n].has_default]
    seen: dict[str, dict[str, int]] = {name: {} for name in definition.unique if name in header}
    found, more = 0, 0
    for number, cells in enumerate(table[1:], start=2):
        if not any(cell.strip() for cell in cells) or len(cells) != len(header):
            continue  # blank lines are skipped; a wrong field count is the data file checks' to report
        for column, message in _row_problems(cells, header, columns, required, seen, number):
            if found < MAX_ROW_PROBLEMS:
                problems.append(Problem(display, message, row=number, path=column))
                found += 1
            else:
                more += 1
    if more:
        problems.append(Problem(display, f"and {more} more problem{'s' * (more != 1)} against "
                                         f"{definition.source}"))
    return problems


def _header_problems(header: list[str], definition: ObjectDefinition, operation: str) -> list[tuple[str, str]]:
    problems = []
    system = {f.lower() for f in SYSTEM_FIELDS}
    for name in header:
        if not name or name.lower() in system or (name.lower() == "id" and operation == "update"):
            continue  # empty names, system fields and Id are the data file checks' to judge
        if name not in definition.fields:
            problems.append((name, (f"not a field of {definition.object}{_close(name, definition.fields)}; its "
                                   f"fields are in {definition.source}")))
    for name in definition.required:
        field = definition.fields[name]
        if not field.system and not field.has_default and name not in header:
            problems.append((name, (f"required field of {definition.object} is missing (Zuora sets an absent column "
                                   "to the field's default, and it has none)")))
    return problems


def _row_problems(cells, header, columns, required, seen, number):
    out = []
    for field in required:
        if not cells[header.index(field.name)].strip():
            out.append((field.name, "required value is empty"))
    for index, field in columns:
        value = cells[index].strip()
        if value:
            problem = value_problem(field, value)
            if problem:
                out.append((field.name, problem))
    for name, values in seen.items():
        value = cells[header.index(name)].strip()
        if value:
            if value in values:
                out.append((name, (f"repeats row {values[value]}'s value {value!r}; {name} is unique, and Zuora "
                                  "rejects every row after the first")))
            else:
                values[value] = number
    return out


_INTEGER = re.compile(r"[+-]?\d+")
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)")
_FORMATS = {
    "date": (re.compile(r"\d{4}-\d{2}-\d{2}"), "a date written YYYY-MM-DD"),
    "date-time": (re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,3})?(?:Z|[+-]\d{2}:?\d{2})"),
                  "an ISO-8601 date-time such as 2026-11-01T00:00:00.000Z"),
    "uuid": (re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"),
             "a 36-character UUID"),
}


def value_problem(field: Field, value) -> str | None:
    """What is wrong with a CSV cell or a filter value for `field`, or None."""
    text = ("true" if value else "false") if isinstance(value, bool) else str(value).strip()
    if field.type == "boolean":
        return None if text.lower() in ("true", "false") else f"must be true or false (got {text!r})"
    if field.type in ("integer", "number"):
        if isinstance(value, bool) or not (_INTEGER if field.type == "integer" else _NUMBER).fullmatch(text):
            return f"must be {'an integer' if field.type == 'integer' else 'a number'} (got {text!r})"
        if field.minimum is not None and float(text) < field.minimum:
            return f"must be at least {field.minimum:g} (got {text})"
        if field.maximum is not None and float(text) > field.maximum:
            return f"must be at most {field.maximum:g} (got {text})"
        return None
    if isinstance(value, bool):
        return f"must be text (got {text})"
    if field.max_length is not None and len(text) > field.max_length:
        return f"is {len(text)} characters long; at most {field.max_length:g} are allowed"
    if field.enum is not None and text not in field.enum:
        return f"must be one of {', '.join(field.enum)} (got {text!r}){_close(text, field.enum)}"
    pattern = _FORMATS.get(field.format or "")
    if pattern and not pattern[0].fullmatch(text):
        return f"must be {pattern[1]} (got {text!r})"
    return None
