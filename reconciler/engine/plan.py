"""The Plan value and the versioned plan-file format (DESIGN §4); the only reader and writer of it.

A plan is pinned to what it was computed from — the environment, the ledger's lineage and serial,
and the digest of every spec and file — so `apply FILE` can refuse a stale one (`check_fresh`).
A plan never holds secrets or CSV contents: only names, hashes, remote ids and reasons.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import NoReturn

from reconciler.errors import PlanFileError, UsageError
from reconciler.model import ACTIONS, KINDS

FORMAT_VERSION = 1
MAX_PLAN_FILE_BYTES = 50 * 1024 * 1024
NOT_ACTIONABLE = frozenset({"wait", "conflict"})


@dataclass(frozen=True, kw_only=True)
class PlanOptions:
    """What the user asked the planner for: filters, reruns, the clock and the slot limit."""

    targets: frozenset[str] = frozenset()
    excludes: frozenset[str] = frozenset()
    selectors: tuple[tuple[str, str], ...] = ()  # label key=value pairs, ANDed
    reruns: frozenset[str] = frozenset()
    now: datetime
    custom_object_slots: int = 5

    def __post_init__(self):
        if self.now.tzinfo is None:
            raise ValueError("PlanOptions.now must be timezone-aware (UTC)")

    @classmethod
    def from_cli(
        cls,
        *,
        targets: Iterable[str] = (),
        excludes: Iterable[str] = (),
        selectors: Sequence[str] = (),
        reruns: Iterable[str] = (),
        now: datetime,
        custom_object_slots: int = 5,
    ) -> PlanOptions:
        """Build options from the raw --target/--exclude/--selector/--rerun values."""
        pairs = []
        for raw in selectors:
            key, sep, value = raw.partition("=")
            if not sep or not key.strip():
                raise UsageError(f"--selector {raw!r}: expected KEY=VALUE, e.g. --selector team=finance")
            pairs.append((key.strip(), value.strip()))
        return cls(
            targets=frozenset(targets),
            excludes=frozenset(excludes),
            selectors=tuple(sorted(set(pairs))),
            reruns=frozenset(reruns),
            now=now,
            custom_object_slots=custom_object_slots,
        )


@dataclass(frozen=True)
class Change:
    """One planned action on one spec name; `reason` explains it, `detail` carries kind-specific data."""

    name: str
    kind: str
    action: str  # one of model.ACTIONS
    reason: str
    fingerprint: str | None = None
    revision: int | None = None
    remote_id: str | None = None  # the job acted on (upload, replace, stop, cancel, retire)
    generation: int | None = None  # the generation the applier records the (new or resumed) job under
    idempotency_key: str | None = None  # set only when resuming an existing intent or upload
    depends_on: tuple[str, ...] = ()
    detail: dict = field(default_factory=dict, hash=False)  # JSON values only


@dataclass(frozen=True)
class Drift:
    """A recorded remote status that differs from the observed one; reported, never acted on."""

    name: str
    remote_id: str
    recorded: str | None
    observed: str | None  # None when the job is missing remotely


@dataclass(frozen=True, kw_only=True)
class Plan:
    """Everything `apply` needs, pinned to the states it was computed from."""

    format_version: int = FORMAT_VERSION
    reconciler_version: str
    created_at: datetime
    environment: str
    lineage: str | None
    serial: int
    spec_digest: str
    changes: tuple[Change, ...] = ()
    drift: tuple[Drift, ...] = ()
    unchanged: int = 0

    @property
    def summary(self) -> dict[str, int]:
        """Counts per action in DESIGN §4's order, then `unchanged`."""
        counts = dict.fromkeys(ACTIONS, 0)
        for change in self.changes:
            counts[change.action] += 1
        counts["unchanged"] = self.unchanged
        return counts

    @property
    def actionable(self) -> tuple[Change, ...]:
        """The changes apply would carry out now (everything but wait and conflict)."""
        return tuple(c for c in self.changes if c.action not in NOT_ACTIONABLE)

    @property
    def has_changes(self) -> bool:
        """True when Zuora differs from the specs: any change, including wait and conflict."""
        return bool(self.changes)

    @property
    def has_conflicts(self) -> bool:
        """True when a person must resolve something before apply may touch those specs."""
        return any(c.action == "conflict" for c in self.changes)


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
                "action": c.action,
                "reason": c.reason,
                "fingerprint": c.fingerprint,
                "revision": c.revision,
                "remote_id": c.remote_id,
                "generation": c.generation,
                "idempotency_key": c.idempotency_key,
                "depends_on": list(c.depends_on),
                "detail": _json_copy(c.detail),
            }
            for c in plan.changes
        ],
        "drift": [
            {"name": d.name, "remote_id": d.remote_id, "recorded": d.recorded, "observed": d.observed}
            for d in plan.drift
        ],
        "summary": plan.summary,
    }


def _json_copy(value):
    """json.loads(json.dumps(value)) without the text in between for plain JSON values (the common case)."""
    kind = type(value)
    if kind is str or kind is int or kind is float or kind is bool or value is None:
        return value
    if kind is dict and all(type(key) is str for key in value):
        return {key: _json_copy(item) for key, item in value.items()}
    if kind is list or kind is tuple:
        return [_json_copy(item) for item in value]
    return json.loads(json.dumps(value))


def from_document(doc: object, source: str) -> Plan:
    """Rebuild a Plan from its document; anything unexpected raises PlanFileError naming `source`."""
    r = _Reader(source)
    # The version comes first: a newer format may have other fields, and the version says why.
    version = r.get(r.obj(doc, "", ("format_version",), exact=False), "format_version", int, "")
    if version != FORMAT_VERSION:
        hint = "a newer reconciler wrote it; upgrade" if version > FORMAT_VERSION else "make the plan again"
        raise PlanFileError(f"{source}: format_version {version} is not supported (this reconciler reads "
                            f"{FORMAT_VERSION}); {hint}")
    top = r.obj(doc, "", _TOP_KEYS)
    ledger = r.obj(top["ledger"], "ledger", ("lineage", "serial"))
    changes = tuple(_read_change(r, item, f"changes[{i}]") for i, item in enumerate(r.get(top, "changes", list, "")))
    drift = tuple(_read_drift(r, item, f"drift[{i}]") for i, item in enumerate(r.get(top, "drift", list, "")))
    summary = r.obj(top["summary"], "summary", (*ACTIONS, "unchanged"))
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
    )
    if plan.summary != summary:
        raise PlanFileError(f"{source}: summary does not match the changes listed; the file was edited "
                            "or damaged — make the plan again with `reconciler plan --out FILE`")
    return plan


def write_plan_file(plan: Plan, path: str | os.PathLike) -> None:
    """Save the plan as JSON, atomically (a reader never sees half a file)."""
    target = Path(path)
    temp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    text = json.dumps(to_document(plan), indent=2, ensure_ascii=False) + "\n"
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
    def facts(change: Change) -> tuple:
        return (change.name, change.kind, change.action, change.fingerprint, change.revision, change.remote_id,
                change.generation, change.idempotency_key, tuple(change.depends_on),
                json.dumps(change.detail, sort_keys=True))

    mine, theirs = {facts(c) for c in saved.actionable}, {facts(c) for c in fresh.actionable}
    if mine != theirs:
        names = sorted({f[0] for f in mine ^ theirs})
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
    if action not in ACTIONS:
        r.fail(f"{where}.action", f"unknown action {action!r} (expected one of {', '.join(ACTIONS)})")
    depends_on = r.get(obj, "depends_on", list, where)
    for i, dep in enumerate(depends_on):
        if not isinstance(dep, str):
            r.fail(f"{where}.depends_on[{i}]", "expected a string")
    return Change(
        name=r.get(obj, "name", str, where),
        kind=kind,
        action=action,
        reason=r.get(obj, "reason", str, where),
        fingerprint=r.get(obj, "fingerprint", (str, None), where),
        revision=r.get(obj, "revision", (int, None), where),
        remote_id=r.get(obj, "remote_id", (str, None), where),
        generation=r.get(obj, "generation", (int, None), where),
        idempotency_key=r.get(obj, "idempotency_key", (str, None), where),
        depends_on=tuple(depends_on),
        detail=r.get(obj, "detail", dict, where),
    )


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
