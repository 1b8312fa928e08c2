"""The versioned plan-file format (DESIGN §4): the Plan as JSON, its only reader and writer.

`to_document` is what `--json` prints and `--out` saves; `from_document` rebuilds the typed Plan and
refuses anything else, naming the file and the field. `check_fresh` and `check_same_changes` refuse a
saved plan the ledger or the specs have moved past.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NoReturn

from reconciler.engine.plan import (
    FORMAT_VERSION,
    Change,
    Drift,
    FileRef,
    MassTarget,
    ObjectTarget,
    Plan,
    Progress,
    Replaced,
)
from reconciler.errors import PlanFileError
from reconciler.model import KINDS, RESEND_ALL, RESEND_NEW_ROWS, Action, Condition, DataFacts, Since

MAX_PLAN_FILE_BYTES = 50 * 1024 * 1024


def to_document(plan: Plan) -> dict:
    """The plan as the JSON document of DESIGN §4 (what `--json` prints and `--out` saves)."""
    return {
        "format_version": plan.format_version,
        "reconciler_version": plan.reconciler_version,
        "created_at": _format_time(plan.created_at),
        "environment": plan.environment,
        "ledger": {"lineage": plan.lineage, "serial": plan.serial},
        "spec_digest": plan.spec_digest,
        "changes": [
            {
                "name": c.name,
                "kind": c.kind,
                "action": str(c.action),
                "reason": c.reason,
                "fingerprint": c.fingerprint,
                "revision": c.revision,
                "remote_id": c.remote_id,
                "generation": c.generation,
                "idempotency_key": c.idempotency_key,
                "depends_on": list(c.depends_on),
                "detail": c.detail,
            }
            for c in plan.changes
        ],
        "drift": [
            {"name": d.name, "remote_id": d.remote_id, "recorded": d.recorded, "observed": d.observed}
            for d in plan.drift
        ],
        "summary": plan.summary,
        "notes": [{"name": name, "note": note} for name, note in plan.notes],
    }


def from_document(doc: object, source: str) -> Plan:
    """Rebuild a Plan from its document; anything unexpected raises PlanFileError naming `source`."""
    r = _Reader(source)
    # The version comes first: a newer format may have other fields, and the version says why.
    version = r.get(r.obj(doc, "", ("format_version",), exact=False), "format_version", int, "")
    if version != FORMAT_VERSION:
        hint = "a newer reconciler wrote it; upgrade" if version > FORMAT_VERSION else "make the plan again"
        raise PlanFileError(f"{source}: format_version {version} is not supported (this reconciler reads "
                            f"{FORMAT_VERSION}); {hint}")
    top = r.obj(doc, "", _TOP_KEYS, exact=False)
    for key in top:
        if key not in (*_TOP_KEYS, "notes"):  # notes came later in format 1: optional
            r.fail(str(key), "unknown field")
    notes = []
    for i, item in enumerate(r.get(top, "notes", list, "") if "notes" in top else ()):
        note = r.obj(item, f"notes[{i}]", ("name", "note"))
        notes.append((r.get(note, "name", str, f"notes[{i}]"), r.get(note, "note", str, f"notes[{i}]")))
    ledger = r.obj(top["ledger"], "ledger", ("lineage", "serial"))
    changes = tuple(_read_change(r, item, f"changes[{i}]") for i, item in enumerate(r.get(top, "changes", list, "")))
    drift = tuple(_read_drift(r, item, f"drift[{i}]") for i, item in enumerate(r.get(top, "drift", list, "")))
    raw_summary = top["summary"]
    if isinstance(raw_summary, dict) and "blocked" not in raw_summary:  # written before `blocked` existed
        raw_summary = {**raw_summary, "blocked": 0}
    summary = r.obj(raw_summary, "summary", (*(str(a) for a in Action), "unchanged"))
    for key in summary:
        r.get(summary, key, int, "summary")
    plan = Plan(
        format_version=version,
        reconciler_version=r.get(top, "reconciler_version", str, ""),
        created_at=r.time(top, "created_at"),
        environment=r.get(top, "environment", str, ""),
        lineage=r.get(ledger, "lineage", (str, None), "ledger"),
        serial=r.get(ledger, "serial", int, "ledger"),
        spec_digest=r.get(top, "spec_digest", str, ""),
        changes=changes,
        drift=drift,
        unchanged=summary["unchanged"],
        notes=tuple(notes),
    )
    if plan.summary != summary:
        raise PlanFileError(f"{source}: summary does not match the changes listed; the file was edited "
                            "or damaged — make the plan again with `reconciler plan --out FILE`")
    return plan


def document_text(plan: Plan) -> str:
    """The plan document as JSON text: a top-level field a line, and each change or drift entry on a line
    of its own (compact, so the C encoder writes 10,000 changes at once; `indent=2` is pure Python)."""
    dumps = functools.partial(json.dumps, ensure_ascii=False, separators=(", ", ": "))
    fields = list(to_document(plan).items())
    lines = ["{"]
    for i, (key, value) in enumerate(fields):
        comma = "," if i < len(fields) - 1 else ""
        if isinstance(value, list) and value:
            items = ",\n".join(f"    {dumps(item)}" for item in value)
            lines.append(f"  {dumps(key)}: [\n{items}\n  ]{comma}")
        else:
            lines.append(f"  {dumps(key)}: {dumps(value)}{comma}")
    return "\n".join([*lines, "}"]) + "\n"


def write_plan_file(plan: Plan, path: str | os.PathLike) -> None:
    """Save the plan as JSON, atomically (a reader never sees half a file)."""
    target = Path(path)
    temp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    text = document_text(plan)
    try:
        temp.write_text(text, encoding="utf-8")
        os.replace(temp, target)
    except OSError as err:
        temp.unlink(missing_ok=True)
        raise PlanFileError(f"cannot write plan file {target}: {err.strerror or err}") from err


def read_plan_file(path: str | os.PathLike) -> Plan:
    """Load a saved plan; a missing, unreadable, oversized or malformed file raises PlanFileError."""
    source = str(path)
    try:
        if Path(path).is_dir():
            raise PlanFileError(f"{source} is a directory, not a plan file (made by `reconciler plan --out FILE`)")
        with open(path, "rb") as fh:
            data = fh.read(MAX_PLAN_FILE_BYTES + 1)
    except FileNotFoundError as err:
        raise PlanFileError(f"plan file {source} does not exist; make one with `reconciler plan --out {source}`") from err
    except OSError as err:
        raise PlanFileError(f"cannot read plan file {source}: {err.strerror or err}") from err
    if len(data) > MAX_PLAN_FILE_BYTES:
        raise PlanFileError(f"{source} is larger than {MAX_PLAN_FILE_BYTES // (1024 * 1024)} MB; "
                            "it is not a plan file made by `reconciler plan --out`")
    try:
        doc = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise PlanFileError(f"{source}: not UTF-8 text (byte {err.start}); is it a plan file?") from err
    except json.JSONDecodeError as err:
        raise PlanFileError(f"{source}:{err.lineno}:{err.colno}: not valid JSON: {err.msg}") from err
    except ValueError as err:  # an integer too long to convert (Python's 4300-digit limit)
        raise PlanFileError(f"{source}: not a plan file ({err})") from err
    except RecursionError as err:
        raise PlanFileError(f"{source}: JSON nested too deeply; it is not a plan file") from err
    return from_document(doc, source)


def check_fresh(plan: Plan, *, lineage: str | None, serial: int, spec_digest: str, environment: str) -> None:
    """Refuse a saved plan when anything it was computed from has moved since.

    `lineage`/`serial` are the ledger's now (None/0 when there is none). A plan made before any ledger
    existed pins lineage null and serial 0; it stays fresh while there is no ledger or only an empty
    one (serial 0: nothing recorded yet, e.g. the one apply just created), whatever its lineage.
    """
    moved = []
    if plan.environment != environment:
        moved.append(f"it was made for environment {plan.environment!r}, this is {environment!r}")
    if plan.lineage is None:
        if serial != 0:
            moved.append(f"it was made before the ledger existed, and the ledger holds records now (serial {serial})")
    elif plan.lineage != lineage:
        moved.append(f"the ledger was replaced (lineage {plan.lineage} -> {lineage})")
    elif plan.serial != serial:
        moved.append(f"the ledger changed since (serial {plan.serial} -> {serial})")
    if plan.spec_digest != spec_digest:
        moved.append("specs or their files changed since")
    if moved:
        raise PlanFileError(f"plan is stale: {'; '.join(moved)}. Make a new plan with `reconciler plan --out FILE`")


def check_same_changes(saved: Plan, fresh: Plan) -> None:
    """Refuse a saved plan whose actionable changes are not what the planner makes of the same states now.

    The pins of `check_fresh` cover the ledger and the specs, not the changes listed in the file: a
    change added or altered by hand (say, a submit of a revision that already completed) must not run.
    """
    def facts(change: Change) -> Change:
        return replace(change, reason="")  # the words may change between versions; what apply does may not

    mine, theirs = {facts(c) for c in saved.actionable}, {facts(c) for c in fresh.actionable}
    if mine != theirs:
        names = sorted({f.name for f in mine ^ theirs})
        raise PlanFileError(f"plan is stale: its changes for {', '.join(names)} are not what the ledger and the specs "
                            "give now (was the file edited, or did an unconfirmed submission age past 24 h?). "
                            "Make a new plan with `reconciler plan --out FILE`")


_TOP_KEYS = ("format_version", "reconciler_version", "created_at", "environment", "ledger", "spec_digest",
             "changes", "drift", "summary")
_CHANGE_KEYS = ("name", "kind", "action", "reason", "fingerprint", "revision", "remote_id", "generation",
                "idempotency_key", "depends_on", "detail")
_DRIFT_KEYS = ("name", "remote_id", "recorded", "observed")


def _read_change(r: _Reader, item: object, where: str) -> Change:
    obj = r.obj(item, where, _CHANGE_KEYS)
    kind = r.get(obj, "kind", str, where)
    action = r.get(obj, "action", str, where)
    if kind not in KINDS:
        r.fail(f"{where}.kind", f"unknown kind {kind!r} (expected one of {', '.join(KINDS)})")
    if action not in _ACTIONS:
        r.fail(f"{where}.action", f"unknown action {action!r} (expected one of {', '.join(_ACTIONS)})")
    change = Change(
        name=r.get(obj, "name", str, where),
        kind=kind,
        action=Action(action),
        reason=r.get(obj, "reason", str, where),
        fingerprint=r.get(obj, "fingerprint", (str, None), where),
        revision=r.get(obj, "revision", (int, None), where),
        remote_id=r.get(obj, "remote_id", (str, None), where),
        generation=r.get(obj, "generation", (int, None), where),
        idempotency_key=r.get(obj, "idempotency_key", (str, None), where),
        depends_on=r.strings(obj, "depends_on", where),
        **_read_detail(r, r.get(obj, "detail", dict, where), f"{where}.detail"),
    )
    if change.detail != obj["detail"]:
        r.fail(f"{where}.detail", "its fields do not fit together as reconciler writes them")
    return change


_DETAIL_KEYS = ("actionType", "namespace", "object", "operation", "file", "file_sha256", "conditions",
                "allowDeleteAll", "status", "remote_action", "replaces", "processed", "total", "note", "resume",
                "rerun", "previous_status", "resolve", "waiting_for", "dependencies", "then", "data")
_DATA_KEYS = ("rows", "send", "already_applied", "added", "changed", "removed", "since", "totals", "summary",
              "resend", "sent_sha256", "missing")
_ACTIONS = tuple(str(a) for a in Action)


def _read_detail(r: _Reader, detail: dict, where: str) -> dict:
    """The typed fields of Change that the document keeps under `detail`."""
    r.obj(detail, where, (), exact=False)
    for key in detail:
        if key not in _DETAIL_KEYS:
            r.fail(f"{where}.{key}", "unknown field")
    fields: dict = {}
    if "actionType" in detail:
        fields["target"] = MassTarget(r.get(detail, "actionType", str, where))
    elif "namespace" in detail:
        for key in ("object", "operation", "conditions"):
            if key not in detail:
                r.fail(f"{where}.{key}", "missing")
        conditions = []
        for i, item in enumerate(r.get(detail, "conditions", list, where)):
            c = r.obj(item, f"{where}.conditions[{i}]", ("field", "operator", "value"))
            conditions.append(Condition(r.get(c, "field", str, f"{where}.conditions[{i}]"),
                                        r.get(c, "operator", str, f"{where}.conditions[{i}]"),
                                        r.get(c, "value", (str, int, float, bool), f"{where}.conditions[{i}]")))
        fields["target"] = ObjectTarget(r.get(detail, "namespace", str, where), r.get(detail, "object", str, where),
                                        r.get(detail, "operation", str, where), tuple(conditions),
                                        r.optional(detail, "allowDeleteAll", where, (bool,)))
    if "file" in detail or "file_sha256" in detail:
        fields["file"] = FileRef(r.optional(detail, "file", where, (str,)),
                                 r.optional(detail, "file_sha256", where, (str,)))
    fields["status"] = r.optional(detail, "status", where, (str,))
    if "replaces" in detail:
        old = r.obj(detail["replaces"], f"{where}.replaces", ("remote_id", "kind", "generation", "status"))
        fields["replaces"] = Replaced(r.get(old, "remote_id", str, f"{where}.replaces"),
                                      r.get(old, "kind", str, f"{where}.replaces"),
                                      r.get(old, "generation", int, f"{where}.replaces"),
                                      r.get(old, "status", (str, None), f"{where}.replaces"))
    if "processed" in detail or "total" in detail:
        fields["progress"] = Progress(r.optional(detail, "processed", where, (int,)),
                                      r.optional(detail, "total", where, (int,)))
    fields["resume"] = bool(r.optional(detail, "resume", where, (bool,)))
    fields["rerun"] = bool(r.optional(detail, "rerun", where, (bool,)))
    fields["previous_status"] = r.optional(detail, "previous_status", where, (str,))
    fields["resolve"] = r.optional(detail, "resolve", where, (str,))
    fields["waiting_for"] = r.optional(detail, "waiting_for", where, (str,))
    if "dependencies" in detail:
        fields["dependencies"] = r.strings(detail, "dependencies", where)
    if "data" in detail:
        fields["data"] = _read_data(r, detail["data"], f"{where}.data")
    then = r.optional(detail, "then", where, (str,))
    if then is not None:
        if then not in _ACTIONS:
            r.fail(f"{where}.then", f"unknown action {then!r}")
        fields["then"] = Action(then)
    return fields


def _read_data(r: _Reader, item: object, where: str) -> DataFacts:
    data = r.obj(item, where, _DATA_KEYS)
    counts = {k: r.get(data, k, (int, None), where) for k in ("rows", "send", "added", "changed", "removed")}
    since = None
    if data["since"] is not None:
        obj = r.obj(data["since"], f"{where}.since", ("generation", "revision", "remote_id"))
        since = Since(r.get(obj, "generation", int, f"{where}.since"), r.get(obj, "revision", (int, None), f"{where}.since"),
                      r.get(obj, "remote_id", (str, None), f"{where}.since"))
    totals = r.get(data, "totals", dict, where)
    for currency, total in totals.items():
        if not isinstance(total, str):
            r.fail(f"{where}.totals.{currency}", "expected a string (an exact decimal)")
    summary = []
    for key, value in r.get(data, "summary", dict, where).items():
        summary.append((key, value if isinstance(value, str) else r.strings(data["summary"], key, f"{where}.summary")))
    resend = r.get(data, "resend", str, where)
    if resend not in (RESEND_ALL, RESEND_NEW_ROWS):
        r.fail(f"{where}.resend", f"expected {RESEND_ALL!r} or {RESEND_NEW_ROWS!r}")
    return DataFacts(**counts, already_applied=r.get(data, "already_applied", int, where), since=since,
                     totals=tuple(totals.items()), summary=tuple(summary), resend=resend,
                     sent_sha256=r.get(data, "sent_sha256", (str, None), where),
                     missing=r.get(data, "missing", (str, None), where))


def _read_drift(r: _Reader, item: object, where: str) -> Drift:
    obj = r.obj(item, where, _DRIFT_KEYS)
    return Drift(
        name=r.get(obj, "name", str, where),
        remote_id=r.get(obj, "remote_id", str, where),
        recorded=r.get(obj, "recorded", (str, None), where),
        observed=r.get(obj, "observed", (str, None), where),
    )


class _Reader:
    """Typed field access that names the file and the field path in every complaint."""

    _NAMES = {str: "a string", int: "an integer", list: "a list", dict: "an object", None: "null"}

    def __init__(self, source: str):
        self.source = source

    def fail(self, where: str, message: str) -> NoReturn:
        raise PlanFileError(f"{self.source}: {where or 'top level'}: {message}; "
                            "make the plan again with `reconciler plan --out FILE`")

    def obj(self, value: object, where: str, keys: Sequence[str], exact: bool = True) -> dict:
        if not isinstance(value, dict):
            self.fail(where, "expected an object")
        for key in keys:
            if key not in value:
                self.fail(_join(where, key), "missing")
        for key in value if exact else ():
            if key not in keys:
                self.fail(_join(where, str(key)), "unknown field")
        return value

    def get(self, obj: dict, key: str, types, where: str):
        value = obj[key]
        allowed = types if isinstance(types, tuple) else (types,)
        for t in allowed:
            if (t is None and value is None) or (t is not None and isinstance(value, t)
                                                 and not (t is int and isinstance(value, bool))):
                return value
        self.fail(_join(where, key), f"expected {' or '.join(self._NAMES[t] for t in allowed)}, "
                                     f"got {type(value).__name__}")

    def optional(self, obj: dict, key: str, where: str, types: tuple) -> Any:
        """The value when the key is there (of one of `types`, or null), else None."""
        return self.get(obj, key, (*types, None), where) if key in obj else None

    def strings(self, obj: dict, key: str, where: str) -> tuple[str, ...]:
        items = self.get(obj, key, list, where)
        for i, item in enumerate(items):
            if not isinstance(item, str):
                self.fail(f"{_join(where, key)}[{i}]", "expected a string")
        return tuple(items)

    def time(self, obj: dict, key: str) -> datetime:
        text = self.get(obj, key, str, "")
        try:
            value = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
        except ValueError:
            self.fail(key, f"not an ISO 8601 time: {text!r}")
        if value.tzinfo is None:
            self.fail(key, f"time without a UTC offset: {text!r}")
        return value


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _format_time(value: datetime) -> str:
    return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
