"""Rendering of plans (text, JSON, pull-request markdown) and aligned tables, to an injected stream.

Nothing here decides anything: a view shows what the Plan holds. No CSV contents (only counts, totals
and key values) and no secrets ever reach a Plan, so none can reach a view.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from datetime import timezone
from typing import TextIO

from reconciler.actions import MASS_ACTIONS, OPERATIONS
from reconciler.engine.plan import ROLLBACK_NOTE, Change, MassTarget, ObjectTarget, Plan
from reconciler.engine.planfile import document_text
from reconciler.model import RESEND_ALL, Action

_RESET = "\x1b[0m"
_COLORS = {
    "submit": "\x1b[32m",  # green
    "upload": "\x1b[36m",  # cyan
    "replace": "\x1b[33m",  # yellow
    "stop": "\x1b[31m",  # red
    "cancel": "\x1b[31m",
    "conflict": "\x1b[31m",
    "blocked": "\x1b[31m",
    "retire": "\x1b[2m",  # dim
    "wait": "\x1b[2m",
}
MARKER = "<!-- reconciler-plan -->"
_CONFLICTS_ON_TOP = 20  # more than this are only in the changes table, so the comment stays readable


def terminal_width(stream: TextIO, env: Mapping[str, str] = os.environ) -> int | None:
    """How wide a table may be: `COLUMNS` when set, else the terminal's width; None (no limit) for a pipe."""
    columns = env.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    try:
        if stream.isatty():
            return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):
        pass
    return None


def render_table(rows: Sequence[Sequence[object]], headers: Sequence[str] | None, stream: TextIO, *,
                 width: int | None = None, cut_first: Sequence[int] = ()) -> None:
    """Write rows as left-aligned columns separated by two spaces (None shows as '-').

    Given a `width`, columns are narrowed until a line fits — those in `cut_first` (indexes) first, then
    the widest — and a value cut short ends in `…` (the `--json` twin of every table has the full
    values). ANSI colors do not count toward the width.
    """
    table = [list(headers)] if headers else []
    table += [["-" if cell is None else str(cell) for cell in row] for row in rows]
    if width is not None and table:
        table = _fit_columns(table, width, cut_first)
    for line in _align(table):
        stream.write(line + "\n")


def fit_line(line: str, width: int | None) -> str:
    """The line, cut to `width` columns with `…` when it is longer (unchanged without a width)."""
    return line if width is None or len(line) <= width else line[:max(width - 1, 1)] + "…"


_NARROWEST = 8  # a column is never cut below this (or its header)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _fit_columns(table: list[list[str]], width: int, cut_first: Sequence[int]) -> list[list[str]]:
    widths = [max(_visible(row[i]) for row in table) for i in range(len(table[0]))]
    floor = [min(w, max(_NARROWEST, _visible(table[0][i]))) for i, w in enumerate(widths)]
    excess = sum(widths) + 2 * (len(widths) - 1) - width
    for i in cut_first:
        cut = max(0, min(widths[i] - floor[i], excess))
        widths[i] -= cut
        excess -= cut
    while excess > 0:
        widest = max(range(len(widths)), key=lambda i: (widths[i] - floor[i], i))
        room = widths[widest] - floor[widest]
        if room <= 0:
            break  # every column at its narrowest: the line stays too long rather than unreadable
        widths[widest] -= 1  # a character at a time: the wide columns end up sharing the cut
        excess -= 1
    return [[_cut(cell, w) for cell, w in zip(row, widths)] for row in table]


def _visible(cell: str) -> int:
    return len(_ANSI.sub("", cell))


def _cut(cell: str, width: int) -> str:
    if _visible(cell) <= width:
        return cell
    if _ANSI.search(cell):  # a colored status: cut the text inside the color
        plain = _ANSI.sub("", cell)
        return cell.replace(plain, plain[:width - 1] + "…")
    return cell[:width - 1] + "…"


def summary_line(plan: Plan) -> str:
    """`Plan: 2 to submit, 1 to upload, ...; 1 waiting; 0 conflicts; 12 unchanged.`"""
    s = plan.summary
    moves = ", ".join(f"{s[a]} to {a}" for a in Action if a.actionable)
    conflicts = f"{s['conflict']} conflict{'' if s['conflict'] == 1 else 's'}"
    blocked = f"; {s['blocked']} blocked" if s["blocked"] else ""  # shown only when there are some
    return f"Plan: {moves}; {s['wait']} waiting{blocked}; {conflicts}; {s['unchanged']} unchanged."


def highlights(change: Change) -> list[str]:
    """What a reader must not miss beside the reason: the way out of a conflict, rows not rolled back."""
    found = []
    if change.action in (Action.CONFLICT, Action.BLOCKED) and change.resolve:
        found.append(change.resolve)
    if change.progress is not None:
        processed, total = change.progress.processed, change.progress.total
        if processed is not None and total is not None:
            found.append(f"{processed} of {total} {ROLLBACK_NOTE}")
        elif processed is not None:
            found.append(f"{processed} {ROLLBACK_NOTE}")
        else:
            found.append(ROLLBACK_NOTE)
    return found


def data_line(change: Change) -> str | None:
    """What a change does to the data, compactly: `MPU · 5 rows · sends 2 (3 already applied) · USD 580.00`."""
    data = change.data
    if data is None:
        return None
    target = change.target
    if isinstance(target, MassTarget):
        parts = [target.action_type]
    elif isinstance(target, ObjectTarget):
        parts = [f"{target.object} {target.operation}"]
    else:
        parts = []
    summary = dict(data.summary)
    if data.rows is None:  # a delete: what it selects (its warning says it when it is about to run)
        if "selects" in summary and warnings(change) is None:
            parts.append(str(summary["selects"]))
        return " · ".join(parts) if parts else None
    parts.append(f"{data.rows} row{'s' * (data.rows != 1)}")
    if data.send is None:
        parts.append("sends ? (rows already applied unknown)" if data.missing else "sends the rows not applied yet")
    elif data.already_applied:
        parts.append(f"sends {data.send} ({data.already_applied} already applied)")
    elif data.send != data.rows:
        parts.append(f"sends {data.send}")
    if data.since is not None and data.added is not None:
        parts.append(f"+{data.added} ~{data.changed} -{data.removed} since generation {data.since.generation}")
    parts += [f"{currency} {total}" for currency, total in data.totals]
    for key in ("pairs", "dates", "object_types"):
        value = summary.get(key)
        if value:
            parts.append(value if isinstance(value, str) else ", ".join(value))
    return " · ".join(parts)


def data_and_warning(change: Change) -> str:
    """The data line and the warning of a change, as the line below it and the markdown data column show them."""
    warned = warnings(change) if change.progress is None else None  # rows kept are said on the change's line
    return " · ".join(text for text in (data_line(change), warned) if text)


def warnings(change: Change) -> str | None:
    """Why a reviewer must look twice: a delete, every record deleted, a stop of a Processing job, a resend."""
    target, data = change.target, change.data
    if isinstance(target, ObjectTarget) and target.operation == "delete" and change.action.actionable:
        selects = dict(data.summary).get("selects") if data is not None else None
        return f"deletes {selects}" if selects else "deletes custom object records"
    if change.action in (Action.STOP, Action.CANCEL, Action.REPLACE) and (change.status == "Processing" or (
            change.replaces is not None and change.replaces.status == "Processing")):
        return f"{change.action}s a job while it is Processing: rows already processed are not rolled back"
    if data is not None and change.action.actionable and _resends(change):
        return f"sends again rows an earlier generation applied (resend: all): {data.rows} rows"
    return None


def _resends(change: Change) -> bool:
    """A change of an action type Zuora does not run idempotently that sends every row after an earlier run."""
    data, target = change.data, change.target
    if data is None or data.since is None or data.resend != RESEND_ALL:
        return False
    if isinstance(target, MassTarget):
        action = MASS_ACTIONS.get(target.action_type)
        return action is not None and not action.idempotent
    operation = OPERATIONS.get(target.operation) if isinstance(target, ObjectTarget) else None
    return operation is not None and not operation.idempotent


def describe(change: Change) -> str:
    """The reason with its highlights, as one line."""
    return " — ".join([change.reason, *highlights(change)])


def conflicts_named(plan: Plan, limit: int = 5) -> str:
    """`a: way out; b: way out; and 3 more (see the plan)`: the first conflicts, for an error message."""
    found = [c for c in plan.changes if c.action is Action.CONFLICT]
    ways = "; ".join(f"{c.name}: {c.resolve or c.reason}" for c in found[:limit])
    return ways + (f"; and {len(found) - limit} more (see the plan)" if len(found) > limit else "")


def blocked_named(plan: Plan, limit: int = 5) -> str:
    """`b: way out; and 3 more (see the plan)`: the first blocked changes, for an error message."""
    found = plan.blocked
    ways = "; ".join(f"{c.name}: {c.resolve or c.reason}" for c in found[:limit])
    return ways + (f"; and {len(found) - limit} more (see the plan)" if len(found) > limit else "")


def render_text(plan: Plan, stream: TextIO, *, color: bool) -> None:
    """Human text: one line per change, then drift, then the summary line (ANSI colors when asked)."""
    rows = [[c.name, c.kind, c.remote_id or "-", describe(c)] for c in plan.changes]
    for change, line in zip(plan.changes, _align(rows)):
        symbol = change.action.symbol
        if color:
            symbol = f"{_COLORS[change.action]}{symbol}{_RESET}"
        stream.write(f"  {symbol} {line}\n")
        below = data_and_warning(change)
        if below:
            stream.write(f"      {below}\n")
    for name, note in plan.notes:
        stream.write(f"  = {name}: {note}\n")
    if plan.drift:
        if plan.changes:
            stream.write("\n")
        stream.write("Drift (recorded -> observed; written to the ledger, not an action):\n")
        drift_rows = [[d.name, d.remote_id, f"{d.recorded or '(unknown)'} -> {_status(d.observed)}"] for d in plan.drift]
        for line in _align(drift_rows):
            stream.write(f"  {line}\n")
    if plan.changes or plan.drift:
        stream.write("\n")
    if plan.changes:
        stream.write(summary_line(plan) + "\n")
    else:
        stream.write(f"No changes. Zuora matches the specs ({plan.unchanged} unchanged).\n")


def render_json(plan: Plan, stream: TextIO) -> None:
    """The plan document (what `plan --out` saves), a change a line, in document order."""
    stream.write(document_text(plan))


def render_markdown(plan: Plan, stream: TextIO, *, limit_bytes: int = 60_000, audit_head: str | None = None) -> None:
    """A pull-request comment: summary table, conflicts on top, changes folded, cut to limit_bytes; the ledger's
    audit head (HASH:COUNT) in the footer when given, so the comment witnesses the history it was planned on."""
    head = _markdown_head(plan)
    change_rows = [
        f"| `{c.action.symbol}` | {_md(c.name)} | {c.kind} | {_md(c.remote_id or '')} | {_md(describe(c))} | "
        f"{_md(data_and_warning(c))} |"
        for c in plan.changes
    ]
    drift_rows = [
        f"| {_md(d.name)} | {_md(d.remote_id)} | {_md(d.recorded or '(unknown)')} | {_md(_status(d.observed))} |"
        for d in plan.drift
    ]
    foot = [
        "",
        f"<sub>reconciler {_md(plan.reconciler_version)} · ledger serial {plan.serial} · "
        f"specs sha256 {plan.spec_digest[:12]} · {plan.created_at.astimezone(timezone.utc):%Y-%m-%d %H:%M:%S} UTC</sub>",
    ]
    if audit_head is not None:
        foot.append(f"<sub>audit head `{_md(audit_head)}` (`reconciler audit verify --head` checks a ledger still "
                    "extends it)</sub>")

    def assemble(changes_shown: int, drift_shown: int) -> str:
        lines = list(head)
        if change_rows:
            kept = sorted(order[:changes_shown])
            lines += ["", f"<details><summary>{len(change_rows)} change{'s' * (len(change_rows) != 1)}</summary>",
                      "", "| | name | kind | remote id | reason | data |", "|:-:|---|---|---|---|---|",
                      *(change_rows[i] for i in kept), "", "</details>"]
        if drift_rows:
            lines += ["", "#### Drift (recorded → observed; not an action)", "",
                      "| name | remote id | recorded | observed |", "|---|---|---|---|", *drift_rows[:drift_shown]]
        hidden = [f"{n} more {what}" for n, what in ((len(change_rows) - changes_shown, "changes"),
                                                    (len(drift_rows) - drift_shown, "drift entries")) if n]
        if hidden:
            lines += ["", f"> … {' and '.join(hidden)} not shown (comment truncated at {limit_bytes / 1000:g} KB); "
                          "run `reconciler plan` for the full plan"]
        return "\n".join(lines + foot) + "\n"

    # When the comment must be cut, conflicts and destructive changes are the rows kept first.
    order = sorted(range(len(plan.changes)), key=lambda i: (not _must_show(plan.changes[i]), i))
    text = assemble(len(change_rows), len(drift_rows))
    if _size(text) > limit_bytes:
        # Keep whole rows, changes first, within what is left once the fixed parts and the note fit.
        budget = limit_bytes - _size(assemble(0, 0))
        changes_shown, budget = _fit([change_rows[i] for i in order], budget)
        drift_shown, _ = _fit(drift_rows, budget)
        text = assemble(changes_shown, drift_shown)
    stream.write(text)


def _markdown_head(plan: Plan) -> list[str]:
    summary = plan.summary
    lines = [MARKER, f"### reconciler plan for {_md(plan.environment)}", ""]
    if not plan.changes:
        return lines + [f"**No changes.** Zuora matches the specs ({plan.unchanged} unchanged)."]
    lines += [f"**{summary_line(plan)}**", "", "| action | count |", "|---|--:|"]
    lines += [f"| `{a.symbol}` {a} | {summary[a]} |" for a in Action if a is not Action.BLOCKED or summary[a]]
    lines.append(f"| unchanged | {summary['unchanged']} |")
    warned = [(c, w) for c in plan.changes if (w := warnings(c))]
    if warned:
        lines += ["", f"#### ⚠ {len(warned)} change{'s' * (len(warned) != 1)} to review closely", ""]
        lines += [f"- **{_md(c.name)}** ({c.action}): {_md(w)}" for c, w in warned[:_CONFLICTS_ON_TOP]]
        if len(warned) > _CONFLICTS_ON_TOP:
            lines.append(f"- … and {len(warned) - _CONFLICTS_ON_TOP} more in the changes below")
    if plan.notes:
        lines += ["", *(f"- `=` **{_md(name)}**: {_md(note)}" for name, note in plan.notes[:_CONFLICTS_ON_TOP])]
    conflicts = [c for c in plan.changes if c.action is Action.CONFLICT]
    if conflicts:
        lines += ["", f"#### `!` {len(conflicts)} conflict{'s' * (len(conflicts) != 1)}: apply refuses "
                      "to run until they are resolved or left out with --exclude", ""]
        lines += [f"- **{_md(c.name)}**: {_md(c.reason)}. Way out: {_md(c.resolve or '')}"
                  for c in conflicts[:_CONFLICTS_ON_TOP]]
        if len(conflicts) > _CONFLICTS_ON_TOP:
            lines.append(f"- … and {len(conflicts) - _CONFLICTS_ON_TOP} more in the changes below")
    return lines


def _fit(rows: list[str], budget: int) -> tuple[int, int]:
    shown = 0
    for row in rows:
        cost = _size(row) + 1  # its newline
        if cost > budget:
            break
        budget -= cost
        shown += 1
    return shown, budget


def _size(text: str) -> int:
    return len(text.encode("utf-8"))


def _must_show(change: Change) -> bool:
    """A conflict or a blocked change, or one that destroys, cuts short or sends again: a stop, a cancel, a replace,
    a delete, a resend."""
    if change.action in (Action.CONFLICT, Action.BLOCKED, Action.STOP, Action.CANCEL, Action.REPLACE):
        return True
    return warnings(change) is not None


def _md(text: str) -> str:
    """Escape text for a markdown table cell or list item: no HTML, no code spans, no links or images,
    no @mentions, no cell breaks. Text from Zuora (reasons, statuses, ids) passes through here."""
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace("|", "\\|").replace("`", "\\`").replace("[", "\\[").replace("]", "\\]")
            .replace("@", "&#64;").replace("\r", " ").replace("\n", " "))


def _status(status: str | None) -> str:
    return "missing (404)" if status is None else status


def _align(rows: list[list[str]]) -> list[str]:
    if not rows:
        return []
    widths = [max(_visible(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return ["  ".join([*(cell + " " * (w - _visible(cell)) for cell, w in zip(row, widths)), row[-1]]).rstrip()
            for row in rows]
