"""The spec JSON Schema: its text (enums from reconciler/actions.py), the one jsonschema validator, the messages.

jsonschema is imported when the first document is judged, never before (`--help` does not need it), and
its validator is built once per process. Each verdict is remembered by the document's content in the
process (across runs, spec.cache remembers whole files that passed); each jsonschema error becomes a
message in plain words.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import json
import re
from importlib import resources

from reconciler.actions import ACTION_TYPES, OPERATIONS


# The schema's enums that the registry owns: (the property holding the enum, its values).
_REGISTRY_ENUMS = (("actionType", ACTION_TYPES), ("operation", tuple(OPERATIONS)))


def schema_text() -> str:
    """The spec JSON Schema (draft 2020-12) shipped as package data, its enums filled in from reconciler.actions."""
    return render_enums(resources.files("reconciler").joinpath("schema/spec.schema.json").read_text(encoding="utf-8"),
                        _REGISTRY_ENUMS)


def render_enums(text: str, enums) -> str:
    """Schema `text` with the enum of each (property name, values) of `enums` listing those values."""
    for name, values in enums:
        text = _ENUM.sub(lambda m, v=values, n=name: _render_enum(m, v) if m["name"] == n else m[0], text)
    return text


_ENUM = re.compile(r'(?P<head>"(?P<name>\w+)": \{\s*"enum": \[)(?P<items>[^\]]*)(?P<tail>\])')


def _render_enum(match: re.Match, values) -> str:
    """The enum of `match` listing `values`, laid out as the shipped file lays it out (inline or one per line)."""
    items = match["items"]
    if "\n" not in items:
        return match["head"] + ", ".join(json.dumps(v) for v in values) + match["tail"]
    indent = items[: len(items) - len(items.lstrip())]  # newline and the items' indentation
    closing = items[len(items.rstrip(" ")) - 1:] if items.endswith(" ") else "\n"
    return match["head"] + ",".join(indent + json.dumps(v) for v in values) + closing + match["tail"]


@functools.lru_cache(maxsize=1)
def load_schema() -> dict:
    """The spec JSON Schema, parsed once."""
    return json.loads(schema_text())


def inlined(schema: dict) -> dict:
    """`schema` with its local $refs replaced by their definitions (jsonschema then validates about twice as fast)."""
    return _inline(schema, schema["$defs"])


def _inline(node, defs):
    if isinstance(node, dict):
        if "$ref" in node:
            return _inline(defs[node["$ref"].rpartition("/")[2]], defs)
        return {k: _inline(v, defs) for k, v in node.items() if k != "$defs"}
    if isinstance(node, list):
        return [_inline(v, defs) for v in node]
    return node


@functools.lru_cache(maxsize=1)
def validator():
    """The one jsonschema validator of the spec schema, built on first use (importing jsonschema then, not before)."""
    from jsonschema import Draft202012Validator

    return Draft202012Validator(inlined(load_schema()), format_checker=None)


Verdict = tuple[tuple[tuple, str], ...]  # (field path, message) pairs; () when the document is valid

# The verdict on each document judged in this process, by its content.
_VERDICTS: dict[bytes, Verdict] = {}
MAX_VERDICTS = 100_000
# The document as JSON, keys in their order: the order of unknown fields is part of what is reported.
_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, check_circular=False).encode


def problems(document: object) -> Verdict:
    """(field path, message) of everything the schema finds wrong with a parsed document; () when it is valid."""
    key = hashlib.sha256(_encode(document).encode("utf-8", "surrogatepass")).digest()
    verdict = _VERDICTS.get(key)
    if verdict is None:
        verdict = tuple(pair for error in validator().iter_errors(document)
                        for pair in explain(error, tuple(error.absolute_path)))
        if len(_VERDICTS) < MAX_VERDICTS:
            _VERDICTS[key] = verdict
    return verdict


_NAME_RULE = "must be lowercase letters, digits, '.', '_' or '-', start with a letter or digit, at most 63 characters"
_TYPES = {"object": "a mapping", "array": "a list", "string": "a string", "integer": "a whole number",
          "number": "a number", "boolean": "true or false", "null": "empty"}


def explain(error, at: tuple) -> list[tuple[tuple, str]]:
    """(field path, message) pairs saying in plain words what a jsonschema error at `at` means."""
    kind, expected, got = error.validator, error.validator_value, error.instance
    if kind == "required":
        return [(at + (name,), "required field is missing") for name in expected if name not in got]
    if kind == "additionalProperties":
        allowed = list(error.schema.get("properties", {}))
        out = []
        for key in (k for k in got if k not in allowed):
            close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            out.append((at + (key,), f"unknown field {key!r}{hint} (allowed here: {', '.join(allowed)})"))
        return out
    if kind == "type":
        wanted = " or ".join(_TYPES[t] for t in ([expected] if isinstance(expected, str) else expected))
        if not at:
            return [(at, f"a spec document must be a mapping with apiVersion, kind, metadata and spec "
                         f"(got {_show(got)})")]
        return [(at, f"must be {wanted} (got {_show(got)})")]
    if kind == "enum":
        close = difflib.get_close_matches(str(got), [str(e) for e in expected], n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return [(at, f"must be one of {', '.join(map(str, expected))} (got {_show(got)}){hint}")]
    if kind == "const":
        return [(at, f"must be {expected!r} (got {_show(got)})")]
    if kind == "pattern":
        if "propertyNames" in error.schema_path:
            return [(at, f"label key {got!r} must be 1 to 63 characters without '=', ',' or spaces")]
        if expected == load_schema()["$defs"]["name"]["pattern"]:
            return [(at, f"{_NAME_RULE} (got {_show(got)})")]
        return [(at, f"must be letters, digits and '_' only, the API name (got {_show(got)})")]
    limits = {"minimum": "at least", "maximum": "at most", "minItems": "at least", "maxItems": "at most"}
    if kind in ("minimum", "maximum"):
        return [(at, f"must be {limits[kind]} {expected} (got {_show(got)})")]
    if kind in ("minItems", "maxItems"):
        return [(at, f"must have {limits[kind]} {expected} item{'s' * (expected != 1)} (got {len(got)})")]
    if kind == "minLength":
        return [(at, "must not be empty")]
    if kind == "uniqueItems":
        return [(at, "must not list the same name twice")]
    return [(at, error.message)]


def _show(value: object) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return "a mapping" if isinstance(value, dict) else "a list"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
