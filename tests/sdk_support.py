"""Zuora's official Python SDK (`zuora-sdk` 3.21.0) for tests/test_zuora_sdk.py, loaded in well under a second.

`import zuora_sdk` runs its package `__init__`, which imports all 90 API classes and 1,741 pydantic models
(20 to 30 s on the CI machine's two cores, more than this test file's whole time budget). `load()` puts
the three packages (`zuora_sdk`, `zuora_sdk.api`, `zuora_sdk.models`) in `sys.modules` as plain modules
over the SDK's own directories, without running their `__init__`: each submodule is then imported from
the installed SDK as it is, on first use, and a name the package `__init__` would have exported (the
SDK's ApiClient resolves a response type with `getattr(zuora_sdk.models, "GetMassUpdateResponse")`) is
looked up in that `__init__`'s own import lines. Every line of SDK code that runs is the SDK's; nothing
is replaced, only not imported. `ZuoraClient` itself needs every API class at once (its method
annotations name them all), so the tests make the OAuth call its `_auth()` makes, through the same
OAuthApi.

`violations(model)` is what the SDK would not check: its models skip validation ("avoid validation" in
each generated `__init__`), so a field of the wrong type reaches the caller unnoticed. It checks each
field against the type the SDK declares for it (generated from Zuora's OpenAPI document), strictly as
JSON, recursing into nested models.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
import sys
import types
from pathlib import Path

PACKAGES = ("zuora_sdk", "zuora_sdk.api", "zuora_sdk.models")
EXPORT = re.compile(r"^from (zuora_sdk\.[\w.]+) import (\w+)$", re.M)


def load() -> types.ModuleType:
    """The SDK's top package, its submodules importable one by one (idempotent)."""
    if "zuora_sdk" in sys.modules:
        return sys.modules["zuora_sdk"]
    spec = importlib.util.find_spec("zuora_sdk")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("zuora-sdk is not installed: pip install -e '.[test]'")
    root = Path(list(spec.submodule_search_locations)[0])
    for name in PACKAGES:
        folder = root.joinpath(*name.split(".")[1:])
        exports = {cls: module for module, cls in EXPORT.findall((folder / "__init__.py").read_text(encoding="utf-8"))}
        package = types.ModuleType(name, f"zuora_sdk's {name} package, loaded lazily by tests/sdk_support.py")
        package.__path__ = [str(folder)]
        package.__file__ = str(folder / "__init__.py")
        package.__getattr__ = _exporter(name, exports)  # type: ignore[method-assign]
        sys.modules[name] = package
        if name != "zuora_sdk":
            setattr(sys.modules["zuora_sdk"], name.rsplit(".", 1)[1], package)
    version = re.search(r'^__version__ = "([^"]+)"', (root / "__init__.py").read_text(encoding="utf-8"), re.M)
    sys.modules["zuora_sdk"].__version__ = version.group(1) if version else "unknown"
    return sys.modules["zuora_sdk"]


def _exporter(package: str, exports: dict[str, str]):
    def __getattr__(attribute: str):
        if attribute in exports:
            return getattr(importlib.import_module(exports[attribute]), attribute)
        raise AttributeError(f"module {package!r} has no attribute {attribute!r}")
    return __getattr__


def violations(model, where: str = "") -> list[str]:
    """Each field of `model` (and of the models inside it) whose value is not of the type the SDK declares."""
    from pydantic import BaseModel, TypeAdapter, ValidationError

    found = []
    for name, field in type(model).model_fields.items():
        if name == "additional_properties":
            continue
        value, label = getattr(model, name), f"{where}{field.alias or name}"
        if value is None:
            if field.is_required():
                found.append(f"{label}: required by the SDK, missing")
            continue
        items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else [value]
        if any(isinstance(item, BaseModel) for item in items):
            for item in items:
                found += violations(item, f"{label}.") if isinstance(item, BaseModel) else [f"{label}: {item!r}"]
            continue
        try:
            TypeAdapter(field.annotation).validate_json(json.dumps(value), strict=True)
        except ValidationError as error:
            found.append(f"{label}: {value!r} is not {field.annotation} ({error.errors()[0]['msg']})")
    return found
