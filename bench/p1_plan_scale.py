"""P1 plan scale: `reconciler plan --no-refresh --json` over 1,000 and 10,000 generated specs.

Each spec has its own 20-row ImportFXRate CSV (bench/validate_scale.py builds the repo); there is no
ledger, so every spec is a `submit`, or a `wait` for the spec it depends on (the repo chains specs in
tens with `dependsOn`). The floor is one Python process that reads and sha256-hashes
the same files (bench/floor.py). Goal: <= 3x the floor at 10,000 (1,000 is reported for context).
"""

from __future__ import annotations

import json

from common import Failed, Result, floor_cmd, interleaved, reconciler_cmd, run, seconds, timed

NAME = "p1"
TITLE = "plan scale"
GOAL = 3.0
SIZES = ((1000, 5), (10000, 3))  # (specs, best of N)


def plan_cmd(root) -> list[str]:
    """The measured command."""
    return reconciler_cmd("--chdir", str(root), "plan", "--no-refresh", "--json")


def check_plan(root, count: int) -> None:
    """The plan really covers every spec (a fast wrong answer is not a result)."""
    _, proc = run(plan_cmd(root), what="reconciler plan")
    summary = json.loads(proc.stdout)["summary"]
    if summary["submit"] + summary["wait"] != count or summary["conflict"]:
        raise Failed(f"plan over {count} specs should submit or wait for each of them: {summary}")


def measure(ws) -> list[Result]:
    """Both sizes, plan and floor interleaved."""
    results = []
    for count, repeat in SIZES:
        root = ws.fx_repo(count)
        check_plan(root, count)
        best = interleaved(
            {"plan": timed(plan_cmd(root), what="reconciler plan"), "floor": timed(floor_cmd(root), what="floor")},
            repeat,
        )
        results.append(Result(
            key=f"P1-{count}",
            title=f"P1 plan {count} specs",
            figure=f"{seconds(best['plan'])} vs floor {seconds(best['floor'])}",
            value=best["plan"] / best["floor"],
            goal=GOAL if count == 10000 else None,
            extra={"seconds": best["plan"], "floor_seconds": best["floor"]},
        ))
    return results
