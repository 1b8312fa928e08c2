"""P4 ledger scale: a ledger of 1,000,000 events and 100,000 jobs must not slow the read commands.

- `plan --no-refresh` on 100 specs against that ledger <= 1.1x the same on an empty ledger. The 100
  specs are among the ledger's names (their latest job completed with the same fingerprint), so the
  planner really pairs them; the other 19,900 names are removed specs whose last job was retired.
- `history --limit 50` under 0.3 s (absolute: it is what a person waits for), with the ratio to the
  same command on the empty ledger for context.
Reads must not change the ledger: its size and mtime are checked after the runs.
bench/ledgergen.py builds the ledger (about 40 s); the in-process `Ledger.recorded_state()` times
are printed for context, since that is the first suspect when the plan ratio is missed.
"""

from __future__ import annotations

import json
import time

from common import Failed, Result, interleaved, reconciler_cmd, run, seconds, timed

NAME = "p4"
TITLE = "ledger scale"
SPECS = 100
PLAN_GOAL = 1.1
HISTORY_GOAL = 0.3
REPEAT = 5


def repo_with_ledger(ws, name: str, big: bool, count: int = SPECS, **shape):
    """A repo of `count` specs with its ledger (big: ledgergen.build's, `shape` its jobs and generations;
    or empty but created); returns (root, settings)."""
    from ledgergen import build
    from validate_scale import build_repo

    from reconciler.engine.config import load_settings
    from reconciler.ledger.store import Ledger
    from reconciler.engine.run import binding
    from reconciler.spec.load import load_desired

    root = ws.path(name)
    build_repo(root, count)
    settings = load_settings(chdir=str(root), env={})
    if big:
        start = time.perf_counter()
        counts = build(settings.ledger_path, binding(settings), load_desired(settings), **shape)
        print(f"  built a ledger of {counts['jobs']:,} jobs and {counts['events']:,} events "
              f"in {seconds(time.perf_counter() - start)}", flush=True)
    else:
        Ledger.open_write(settings.ledger_path, binding(settings)).close()
    return root, settings


def plan_summary(root) -> dict:
    _, proc = run(reconciler_cmd("--chdir", str(root), "plan", "--no-refresh", "--json"), what="reconciler plan")
    return json.loads(proc.stdout)["summary"]


def _recorded_state_seconds(settings) -> float:
    from reconciler.ledger.store import Ledger
    from reconciler.engine.run import binding

    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        with Ledger.open_read(settings.ledger_path, binding(settings)) as ledger:
            ledger.recorded_state()
        best = min(best, time.perf_counter() - start)
    return best


def _fingerprint(path):
    stat = path.stat()
    extras = sorted(p.name for p in path.parent.iterdir() if p.name.startswith(path.name + "-"))
    return stat.st_size, stat.st_mtime_ns, extras


def measure(ws) -> list[Result]:
    """Build both repos, check what plan sees, then time plan and history on both ledgers."""
    big, big_settings = repo_with_ledger(ws, "p4-big", big=True)
    empty, empty_settings = repo_with_ledger(ws, "p4-empty", big=False)
    before = _fingerprint(big_settings.ledger_path)

    summary = plan_summary(big)
    if summary.get("unchanged") != SPECS or any(summary[a] for a in summary if a != "unchanged"):
        raise Failed(f"plan on the big ledger should find {SPECS} unchanged and nothing else: {summary}")
    summary = plan_summary(empty)
    if summary["submit"] + summary["wait"] != SPECS or summary["conflict"]:
        raise Failed(f"plan on the empty ledger should submit (or wait for) {SPECS} specs: {summary}")

    plan = ("plan", "--no-refresh")
    history = ("history", "--limit", "50")
    best = interleaved(
        {
            "plan_big": timed(reconciler_cmd("--chdir", str(big), *plan), what="plan (big ledger)"),
            "plan_empty": timed(reconciler_cmd("--chdir", str(empty), *plan), what="plan (empty ledger)"),
            "history_big": timed(reconciler_cmd("--chdir", str(big), *history), what="history (big ledger)"),
            "history_empty": timed(reconciler_cmd("--chdir", str(empty), *history), what="history (empty ledger)"),
        },
        REPEAT,
    )
    if _fingerprint(big_settings.ledger_path) != before:
        raise Failed("a read command changed the ledger file (size, mtime or -wal/-shm files)")
    read_big, read_empty = _recorded_state_seconds(big_settings), _recorded_state_seconds(empty_settings)
    return [
        Result(
            key="P4-plan", title=f"P4 plan --no-refresh {SPECS} specs, 1M-event ledger",
            figure=f"{seconds(best['plan_big'])} vs empty ledger {seconds(best['plan_empty'])}",
            value=best["plan_big"] / best["plan_empty"], goal=PLAN_GOAL,
            note=f"in-process Ledger.recorded_state(): {seconds(read_big)} vs {seconds(read_empty)}",
            extra={"seconds": best["plan_big"], "empty_seconds": best["plan_empty"],
                   "recorded_state_seconds": read_big, "recorded_state_empty_seconds": read_empty},
        ),
        Result(
            key="P4-history", title="P4 history --limit 50, 1M-event ledger",
            figure=f"{seconds(best['history_big'])} ({best['history_big'] / best['history_empty']:.2f}x "
                   f"the empty ledger's {seconds(best['history_empty'])})",
            value=best["history_big"], goal=HISTORY_GOAL, op="<", unit=" s",
            extra={"seconds": best["history_big"], "empty_seconds": best["history_empty"]},
        ),
    ]
