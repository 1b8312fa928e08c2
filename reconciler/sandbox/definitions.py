"""Custom object definitions: the tenant's objects and fields, GET /objects/definitions/default[/{object}].

A definition has Zuora's shape (README "Custom object definitions", from the 2023-12-15 swagger's
GETAllCustomObjectDefinitionsInNamespaceResponse and CustomObjectDefinition examples): `Id`, `CreatedById`,
`CreatedDate`, `UpdatedById`, `UpdatedDate`, `type` (the object's API name) and `schema` with `object`, `label`,
`properties` (each field's `type`, `format`, `maxLength`, `enum`, `default`, `minimum`, `maximum`, `label`,
`origin`: system | custom), `required`, `filterable`, `unique`, `relationships` and `type: object`.
The system fields are in `properties`, `required` and `filterable`, as Zuora lists them.

The tenant's definitions live in its database (table co_definitions); every app writes its own set when
it starts: the demo set below, or what `load` read from a `--definitions` file or a repo's definitions/.
Namespace `default` only: `com_zuora` (Zuora's standard objects) is not modelled and stays unchecked.
"""

from __future__ import annotations

import json
import os
import re
import uuid

from .web import ApiError, Context, Response, json_response

SYSTEM = {"Id": "uuid", "CreatedById": "uuid", "CreatedDate": "date-time", "UpdatedById": "uuid",
          "UpdatedDate": "date-time"}
TYPES = ("string", "integer", "number", "boolean")
NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
DEMO_USER = "2c92c0f9-6a07-409d-016a-0a58ab1172eb"
DEMO_DATE = "2026-01-01T00:00:00.000Z"
DEFINITION_NAMESPACE = uuid.UUID("8f0c36a6-5d1c-4a55-9b0f-0b9ad2c3f1e4")
NOT_FOUND = 71000040  # invented: definition resource (710000-710030) + not found (reference B.8)


def definition(object_name: str, label: str, fields: dict, *, required=(), filterable=(), unique=()) -> dict:
    """A definition in Zuora's shape from its custom fields (name -> field); the system fields are added."""
    properties = {name: {"format": fmt, "label": name, "origin": "system", "type": "string"}
                  for name, fmt in SYSTEM.items()}
    properties.update({name: {**field, "origin": "custom"} for name, field in fields.items()})
    return {
        "CreatedById": DEMO_USER, "CreatedDate": DEMO_DATE, "UpdatedById": DEMO_USER, "UpdatedDate": DEMO_DATE,
        "Id": str(uuid.uuid5(DEFINITION_NAMESPACE, object_name)), "type": object_name,
        "schema": {"object": object_name, "label": label, "type": "object", "properties": properties,
                   "required": [*required, *SYSTEM], "filterable": [*filterable, *SYSTEM], "unique": list(unique),
                   "relationships": []},
    }


def _text(label, max_length=512, **more):
    return {"type": "string", "label": label, "maxLength": max_length, **more}


# The demo set, seeded when no definitions are given: the objects the examples and the tests use.
DEMO = {name: definition(name, label, fields, required=required, filterable=filterable, unique=unique)
        for name, label, fields, required, filterable, unique in [
            ("vehicle", "Vehicle", {
                "make__c": _text("Make", 8192), "model__c": _text("Model"),
                "year__c": {"type": "integer", "label": "Year", "minimum": 1900, "maximum": 2100},
                "vin__c": _text("VIN", 17), "color__c": _text("Color", 64),
                "mileage__c": {"type": "integer", "label": "Mileage", "minimum": 0},
                "seats__c": {"type": "integer", "label": "Seats", "minimum": 0},
                "registration__c": _text("Registration", 32),
                "in_service__c": {"type": "boolean", "label": "In service", "default": True},
                "delivered__c": {"type": "string", "format": "date", "label": "Delivered"}},
             ["make__c"], ["model__c", "year__c", "vin__c", "registration__c"], ["registration__c"]),
            ("car", "Car", {
                "make__c": _text("Make"), "model__c": _text("Model"),
                "year__c": {"type": "integer", "label": "Year", "minimum": 1900, "maximum": 2100},
                "seats__c": {"type": "integer", "label": "Seats", "minimum": 0}},
             ["make__c"], ["make__c", "model__c", "year__c"], []),
            ("bus", "Bus", {"make__c": _text("Make"), "seats__c": {"type": "integer", "label": "Seats"}},
             [], ["make__c"], []),
            ("passenger", "Passenger", {"name__c": _text("Name"), "age__c": {"type": "integer", "label": "Age"}},
             [], ["name__c", "age__c"], []),
            ("driver", "Driver", {"name__c": _text("Name"), "licence__c": _text("Licence", 32)},
             [], ["name__c"], ["licence__c"]),
        ]}


def check(body, where: str) -> dict:
    """`body` as a definition (Zuora's shape); ValueError naming `where` and the place when it is not one."""
    if not isinstance(body, dict) or not isinstance(body.get("schema"), dict):
        raise ValueError(f"{where}: a definition must be an object with a 'schema' object")  # noqa: TRY004
    schema = body["schema"]
    name = schema.get("object", body.get("type"))
    if not isinstance(name, str) or not NAME.match(name):
        raise ValueError(f"{where}: schema.object must be the object's API name (letters, digits and _)")
    properties = schema.get("properties")
    if not isinstance(properties, dict) or not properties:
        raise ValueError(f"{where}: schema.properties must be an object of fields")
    for field, spec in properties.items():
        if not isinstance(spec, dict) or spec.get("type") not in TYPES:
            raise ValueError(f"{where}: schema.properties.{field}.type must be one of {', '.join(TYPES)}")
        if "enum" in spec and not isinstance(spec["enum"], list):
            raise ValueError(f"{where}: schema.properties.{field}.enum must be a list")
        if "maxLength" in spec and (isinstance(spec["maxLength"], bool) or not isinstance(spec["maxLength"], int)):
            raise ValueError(f"{where}: schema.properties.{field}.maxLength must be an integer")
    for key in ("required", "filterable", "unique"):
        names = schema.get(key, [])
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ValueError(f"{where}: schema.{key} must be a list of field names")
        unknown = [n for n in names if n not in properties]
        if unknown:
            raise ValueError(f"{where}: schema.{key} names {unknown[0]!r}, which is not in schema.properties")
    return body


def load(path: str) -> dict:
    """The definitions at `path`, by object name: a JSON file holding the GET /objects/definitions/default
    answer ({"definitions": {...}}) or one definition, or a directory of them (a repo's definitions/, whose
    default/ namespace is read). ValueError names the file and the place of any problem."""
    if os.path.isdir(path):
        base = os.path.join(path, "default") if os.path.isdir(os.path.join(path, "default")) else path
        found = {}
        for name in sorted(os.listdir(base)):
            if name.endswith(".json"):
                found.update(load(os.path.join(base, name)))
        return found
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except OSError as err:
        raise ValueError(f"{path}: cannot read it: {err.strerror or err}") from None
    try:
        body = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not UTF-8 text") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: line {err.lineno} column {err.colno}: not valid JSON ({err.msg})") from None
    if isinstance(body, dict) and isinstance(body.get("definitions"), dict):
        return {name: complete(check(each, f"{path}: definitions.{name}"), name)
                for name, each in body["definitions"].items()}
    checked = check(body, path)
    name = checked["schema"].get("object", checked.get("type"))
    return {name: complete(checked, name)}


def complete(body: dict, object_name: str) -> dict:
    """A checked definition as Zuora answers it once created: what Zuora adds to the custom fields one posts
    (the system fields in `properties`, `required` and `filterable`; the definition's own Id, creator and
    dates; `type`) is added where the file leaves it out, so a hand-written definition reads back in the shape
    an exported one has. What the file gives is kept."""
    schema = dict(body["schema"])
    properties = dict(schema["properties"])
    for name, fmt in SYSTEM.items():
        properties.setdefault(name, {"format": fmt, "label": name, "origin": "system", "type": "string"})
    schema["properties"] = properties
    for key in ("required", "filterable"):
        given = list(schema.get(key, []))
        schema[key] = given + [name for name in SYSTEM if name not in given]
    schema.setdefault("unique", [])
    schema.setdefault("object", object_name)
    schema.setdefault("type", "object")
    defaults = {"Id": str(uuid.uuid5(DEFINITION_NAMESPACE, object_name)), "CreatedById": DEMO_USER,
                "CreatedDate": DEMO_DATE, "UpdatedById": DEMO_USER, "UpdatedDate": DEMO_DATE, "type": object_name}
    return {**defaults, **body, "schema": schema}


def install(conn, found: dict) -> None:
    """Make `found` (object name -> definition) the tenant's definitions, replacing the ones it had."""
    conn.execute("DELETE FROM co_definitions")
    conn.executemany("INSERT INTO co_definitions (namespace, object, body) VALUES ('default', ?, ?)",
                     [(name, json.dumps(body, sort_keys=True)) for name, body in found.items()])


def lookup(conn, namespace: str, object_name: str) -> dict | None:
    """The definition of an object, None when the tenant has none (com_zuora: always None, unchecked)."""
    row = conn.one("SELECT body FROM co_definitions WHERE namespace = ? AND object = ?", (namespace, object_name))
    return json.loads(row["body"]) if row else None


def listing(ctx: Context) -> Response:
    """GET /objects/definitions/default: {"count", "definitions": {object: definition}}; ?select=type."""
    require(ctx, "view", 71000012, "view custom object definitions")
    rows = ctx.conn.all("SELECT object, body FROM co_definitions WHERE namespace = 'default' ORDER BY object")
    found = {row["object"]: json.loads(row["body"]) for row in rows}
    if ctx.request.param("select") == "type":
        found = {name: {"type": body.get("type", name)} for name, body in found.items()}
    return json_response(200, {"count": len(found), "definitions": found})


def get(ctx: Context, object_name: str) -> Response:
    """GET /objects/definitions/default/{object} (case-sensitive); 404 when the tenant has no such object."""
    require(ctx, "view", 71000012, "view custom object definitions")
    found = lookup(ctx.conn, "default", object_name)
    if found is None:
        raise ApiError(404, f"Custom object definition '{object_name}' not found.", code=NOT_FOUND)
    return json_response(200, found)


PERMISSIONS = ("view", "edit", "delete")


def require(ctx: Context, permission: str, code: int, doing: str) -> None:
    """403 in Zuora's form unless the API user holds the Custom Objects permission (view | edit | delete)."""
    denied = set(ctx.settings.denied_permissions) | set(ctx.conn.meta("denied_permissions", []))
    if permission in denied:
        raise ApiError(403, f"User does not have permission to {doing}.", code=code)


def check_filter(found: dict, conditions: list) -> None:
    """A delete filter's conditions against the definition: filterable fields, values of the field's type."""
    schema = found["schema"]
    for condition in conditions:
        field = condition["field"]
        spec = schema["properties"].get(field)
        if spec is None:
            raise ApiError(400, f"filter field '{field}' is not a field of {schema['object']}", code=71013321)
        if field not in schema.get("filterable", []):
            raise ApiError(400, f"filter field '{field}' is not filterable; filterable fields of {schema['object']}: "
                           f"{', '.join(schema.get('filterable', []))}", code=71013320)
        problem = value_problem(spec, condition["value"])
        if problem:
            raise ApiError(400, f"filter value for '{field}' {problem}", code=71013320)


_INTEGER = re.compile(r"^[+-]?\d+$")
_NUMBER = re.compile(r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,3})?(?:Z|[+-]\d{2}:?\d{2})$")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_FORMATS = {"date": (_DATE, "a date YYYY-MM-DD"), "date-time": (_DATE_TIME, "an ISO-8601 date-time"),
            "uuid": (_UUID, "a 36-character UUID")}


def value_problem(spec: dict, value) -> str | None:
    """What is wrong with a value (a CSV cell, or a filter's JSON value) for a field, or None."""
    kind = spec.get("type")
    text = ("true" if value else "false") if isinstance(value, bool) else str(value).strip()
    if kind == "boolean":
        return None if text.lower() in ("true", "false") else f"must be true or false (got {text!r})"
    if kind in ("integer", "number"):
        if isinstance(value, bool) or not (_INTEGER if kind == "integer" else _NUMBER).match(text):
            return f"must be {'an integer' if kind == 'integer' else 'a number'} (got {text!r})"
        number = float(text)
        if "minimum" in spec and number < spec["minimum"]:
            return f"must be at least {spec['minimum']} (got {text})"
        if "maximum" in spec and number > spec["maximum"]:
            return f"must be at most {spec['maximum']} (got {text})"
        return None
    if isinstance(value, bool) or (not isinstance(value, str) and kind == "string" and spec.get("format")):
        return f"must be text (got {value!r})"
    if "maxLength" in spec and len(text) > spec["maxLength"]:
        return f"is {len(text)} characters long; at most {spec['maxLength']} are allowed"
    if spec.get("enum") and not spec.get("multiselect") and text not in spec["enum"]:
        return f"must be one of {', '.join(map(str, spec['enum']))} (got {text!r})"
    pattern = _FORMATS.get(spec.get("format"))
    if pattern and not pattern[0].match(text):
        return f"must be {pattern[1]} (got {text!r})"
    return None


# Row-level codes: resource 710125 (record) + the category of the problem (reference B.8).
UNKNOWN_FIELD, MISSING_FIELD, DUPLICATE = 71012521, 71012522, 71012530
TYPE_CODES = {"integer": 71012523, "number": 71012524, "boolean": 71012525, "string": 71012526}


def row_problem(conn, job, found: dict, given: dict, record_id: str | None):
    """(code, message) of the first reason Zuora rejects one row of a create/update file, or None."""
    schema = found["schema"]
    properties = schema["properties"]
    unknown = [name for name in given if name not in properties]
    if unknown:
        return UNKNOWN_FIELD, f"Unknown field{'s' * (len(unknown) > 1)} for {schema['object']}: {', '.join(unknown)}"
    for name in schema.get("required", []):
        spec = properties[name]
        if spec.get("origin") != "system" and "default" not in spec and not given.get(name, "").strip():
            return MISSING_FIELD, f"{name} is required"
    for name, value in given.items():
        if value.strip():
            problem = value_problem(properties[name], value)
            if problem:
                code = TYPE_CODES.get(properties[name]["type"]) if properties[name].get("format") is None else None
                return code or 71012520, f"{name} {problem}"
    for name in schema.get("unique", []):
        value = given.get(name, "").strip()
        if value and conn.one(
                "SELECT 1 FROM records WHERE namespace = ? AND object = ? AND id != ? AND"
                " json_extract(fields, ?) = ?",
                (job["namespace"], job["object"], record_id or "", f'$."{name}"', given[name])):
            return DUPLICATE, f"{name} must be unique: a record with {name} {value!r} exists"
    return None
