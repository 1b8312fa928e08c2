"""The spec JSON Schema without jsonschema (standard library only): its text, a yes/no twin, friendly messages.

Valid documents pass the twin and never import jsonschema; spec.py runs jsonschema only on a document the
twin rejects, and turns each of its errors into a message here.
"""

from __future__ import annotations

import difflib
import functools
import json
import math
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
def fast_check():
    """A yes/no twin of the schema, so valid documents skip jsonschema (and its import) altogether."""
    try:
        return _compile(inlined(load_schema()))
    except KeyError:  # a keyword the twin does not know: let jsonschema judge every document
        return None


_ANNOTATIONS = {"$schema", "$id", "title", "description", "default"}
_IS = {
    "object": lambda x: isinstance(x, dict),
    "array": lambda x: isinstance(x, list),
    "string": lambda x: isinstance(x, str),
    "boolean": lambda x: isinstance(x, bool),
    "null": lambda x: x is None,
    "number": lambda x: isinstance(x, (int, float)) and not isinstance(x, bool),
    "integer": lambda x: (isinstance(x, int) and not isinstance(x, bool)) or (isinstance(x, float) and x.is_integer()),
}


def _compile(schema: dict):
    """Compile the subset of JSON Schema the spec schema uses. It may reject valid input, never accept invalid."""
    checks = []
    for key, want in schema.items():
        if key in _ANNOTATIONS or key in ("then", *_OBJECT_KEYWORDS):
            continue
        if key == "type":
            tests = [_IS[t] for t in ([want] if isinstance(want, str) else want)]
            checks.append(tests[0] if len(tests) == 1 else lambda x, tests=tests: any(t(x) for t in tests))
        elif key in ("const", "enum"):
            allowed = [want] if key == "const" else want
            if not all(isinstance(a, str) for a in allowed):
                raise KeyError(key)
            checks.append(lambda x, allowed=frozenset(allowed): isinstance(x, str) and x in allowed)
        elif key == "items":
            item = _compile(want)
            checks.append(lambda x, item=item: not isinstance(x, list) or all(map(item, x)))
        elif key in ("minItems", "maxItems", "uniqueItems"):
            size = {"minItems": lambda n, w=want: n >= w, "maxItems": lambda n, w=want: n <= w}.get(key)
            checks.append(lambda x, size=size: not isinstance(x, list) or (
                size(len(x)) if size else all(isinstance(v, str) for v in x) and len(set(x)) == len(x)))
        elif key in ("pattern", "minLength"):
            test = re.compile(want).search if key == "pattern" else (lambda x, w=want: len(x) >= w)
            checks.append(lambda x, test=test: not isinstance(x, str) or bool(test(x)))
        elif key in ("minimum", "maximum"):
            low, high = (want, math.inf) if key == "minimum" else (-math.inf, want)
            checks.append(lambda x, low=low, high=high: not _IS["number"](x) or low <= x <= high)
        elif key == "allOf":
            checks.append(_every([_compile(sub) for sub in want]))
        elif key == "if":
            condition, then = _compile(want), _compile(schema.get("then", {}))
            checks.append(lambda x, condition=condition, then=then: not condition(x) or then(x))
        else:
            raise KeyError(key)
    if any(key in schema for key in _OBJECT_KEYWORDS):
        checks.append(_compile_object(schema))
    return _every(checks)


_OBJECT_KEYWORDS = ("properties", "required", "additionalProperties", "propertyNames")


def _compile_object(schema: dict):
    """The object keywords of `schema` as one pass over a mapping's items (they ignore anything else)."""
    props = {name: _compile(sub) for name, sub in schema.get("properties", {}).items()}
    required = tuple(schema.get("required", ()))
    extra = schema.get("additionalProperties", {})
    if extra is not False and not isinstance(extra, dict):
        raise KeyError("additionalProperties")
    closed, extra = extra is False, (_compile(extra) if extra else None)
    names = _compile(schema["propertyNames"]) if "propertyNames" in schema else None

    def check(x) -> bool:
        if not isinstance(x, dict):
            return True
        for key in required:
            if key not in x:
                return False
        for key, value in x.items():
            sub = props.get(key)
            if sub is not None:
                if not sub(value):
                    return False
            elif closed or (extra is not None and not extra(value)):
                return False
            if names is not None and not names(key):
                return False
        return True

    return check


def _every(checks: list):
    """One check passing when all of `checks` pass."""
    if len(checks) == 1:
        return checks[0]

    def check(x) -> bool:
        for one in checks:
            if not one(x):
                return False
        return True

    return check



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
