"""P1 plan scale: `reconciler plan --no-refresh --json` over 1,000 and 10,000 generated specs.

Each spec has its own 20-row ImportFXRate CSV (bench/validate_scale.py builds the repo); there is no
ledger, so every spec is a `submit`, or a `wait` for the spec it depends on (the repo chains specs in
tens with `dependsOn`). The floor is one Python process that reads and sha256-hashes
the same files (bench/floor.py). Goals at 10,000 (1,000 is reported for context): warm (the
validation cache under state/.cache/ filled by the run before) <= 3x the floor, cold (cache
removed before each run) <= 5x; and warm with a 100,000-job ledger (bench/ledgergen.py) <= 1.1x
the same 10,000 specs on an empty ledger.
"""

from __future__ import annotations

import json
import shutil

from common import Failed, Result, floor_cmd, interleaved, reconciler_cmd, run, seconds, timed

NAME = "p1"
TITLE = "plan scale"
GOAL = 3.0  # warm: a repository's second plan
COLD_GOAL = 5.0  # the first run, nothing remembered under state/.cache/
LEDGER_SPECS = 10000
LEDGER_GOAL = 1.1  # a 100,000-job ledger against an empty one
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
    """Both sizes, plan and floor interleaved: warm (state/.cache/ holds the last run's checks) and cold."""
    results = []
    for count, repeat in SIZES:
        root = ws.fx_repo(count)
        check_plan(root, count)
        warm, cold = timed(plan_cmd(root), what="reconciler plan"), timed(plan_cmd(root), what="reconciler plan")

        def first_run(root=root, cold=cold):
            shutil.rmtree(root / "state" / ".cache", ignore_errors=True)
            return cold()

        best = interleaved({"plan": warm, "cold": first_run, "floor": timed(floor_cmd(root), what="floor")}, repeat)
        warm()  # leave the cache in place for whatever runs next
        for side, goal, label in (("plan", GOAL, "warm"), ("cold", COLD_GOAL, "cold")):
            results.append(Result(
                key=f"P1-{count}" + ("" if side == "plan" else "-cold"),
                title=f"P1 plan {count} specs, {label}",
                figure=f"{seconds(best[side])} vs floor {seconds(best['floor'])}",
                value=best[side] / best["floor"],
                goal=goal if count == 10000 else None,
                extra={"seconds": best[side], "floor_seconds": best["floor"]},
            ))
    results += _with_a_big_ledger(ws)
    return results


def _with_a_big_ledger(ws) -> list[Result]:
    """Warm plan of the 10,000 specs with a 100,000-job, 1,000,000-event ledger (bench/ledgergen.py: the
    specs are among its names, unchanged; as many removed specs are retired) against an empty ledger,
    the goal; and, for context, against a ledger of the same specs with two jobs each and one removed
    spec (the same plan: all unchanged, where the empty ledger's plan submits every spec)."""
    from p4_ledger_scale import plan_summary, repo_with_ledger

    count = LEDGER_SPECS
    big, _ = repo_with_ledger(ws, "p1-big-ledger", big=True, count=count)
    small, _ = repo_with_ledger(ws, "p1-small-ledger", big=True, count=count, jobs=2 * (count + 1), generations=2)
    empty, _ = repo_with_ledger(ws, "p1-empty-ledger", big=False, count=count)
    for root in (big, small):
        summary = plan_summary(root)
        if summary.get("unchanged") != count or any(summary[a] for a in summary if a != "unchanged"):
            raise Failed(f"plan on {root.name} should find {count} unchanged and nothing else: {summary}")
    check_plan(empty, count)  # and fills the validation caches: every side is warm
    best = interleaved({"big": timed(plan_cmd(big), what="plan (big ledger)"),
                        "small": timed(plan_cmd(small), what="plan (small ledger)"),
                        "empty": timed(plan_cmd(empty), what="plan (empty ledger)")}, 3)
    return [
        Result(key=f"P1-{count}-ledger", title=f"P1 plan {count} specs, 100,000-job ledger vs empty ledger (warm)",
               figure=f"{seconds(best['big'])} vs {seconds(best['empty'])}",
               value=best["big"] / best["empty"], goal=LEDGER_GOAL,
               extra={"seconds": best["big"], "empty_seconds": best["empty"]}),
        Result(key=f"P1-{count}-ledger-same-plan",
               title=f"P1 plan {count} specs, 100,000-job ledger vs a 20,002-job one (warm, the same plan)",
               figure=f"{seconds(best['big'])} vs {seconds(best['small'])}",
               value=best["big"] / best["small"], goal=None,
               extra={"seconds": best["big"], "small_seconds": best["small"]}),
    ]
