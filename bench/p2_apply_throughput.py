"""P2 apply throughput: 200 and 1,000 Mass Updater specs against `reconciler sandbox serve` at 40 ms a request.

The served sandbox adds 40 ms to every Zuora request (`/_sandbox/faults` latency_ms 40; /oauth/token
is not delayed). Measured: the wall time of `reconciler apply --auto-approve` (a subprocess, fresh
ledger, empty tenant each time) against
- (a) bench/sdkloop.py, a sequential loop over Zuora's official SDK (`zuora-sdk` 3.21,
  MassUpdaterApi.create_mass_updater: its token, then one POST /v1/bulk per file), timed by itself
  without the SDK's import (~20 s of building its pydantic models, which would flatter apply):
  goal apply >= 10x faster;
- (b) the floor: N x 40 ms / parallelism (16, reconciler.yaml's default) plus start-up, where
  start-up is `reconciler plan --no-refresh` of the same repository with no ledger (imports,
  validation and planning: what apply does before its first POST, the lock and token aside):
  goal apply <= 1.5x. Validation is warm on both (state/.cache/ is kept between runs).
Both sides must leave N mass actions in the tenant. Apply and loop runs alternate. The client's CPU
(user + system of the apply process) and the simulator's (of the serve process, from /proc) per
submission are reported beside them: both share the 2 cores.
"""

from __future__ import annotations

import json
import os
import resource
import shutil

from common import PYTHON, BENCH, Failed, Result, Sandbox, bench_env, reconciler_cmd, run, sandbox_credentials, seconds

NAME = "p2"
TITLE = "apply throughput"
SIZES = ((200, 3), (1000, 2))  # (specs, best of N)
LATENCY_MS = 40
PARALLELISM = 16
SPEEDUP_GOAL = 10.0
FLOOR_GOAL = 1.5


def _repo(ws, url: str, count: int):
    from validate_scale import build_repo

    root = ws.path(f"p2-{count}")
    build_repo(root, count, chain=False)
    (root / "reconciler.yaml").write_text(
        f"specs: specs\nenvironment: {url}\napply:\n  parallelism: {PARALLELISM}\n"
    )
    return root


def _fresh(sandbox: Sandbox, root) -> None:
    """An empty tenant with the latency set, and no ledger: every run starts from the same place (the
    validation cache under state/.cache/ stays, filled before the first run, so every run is warm)."""
    sandbox.admin("reset", {})
    sandbox.admin("faults", {"latency_ms": LATENCY_MS})
    for entry in (root / "state").iterdir():
        if entry.name != ".cache":
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()


def _submitted(sandbox: Sandbox, what: str, expected: int) -> None:
    count = len(sandbox.admin("state")["mass_actions"])
    if count != expected:
        raise Failed(f"{what} left {count} mass actions in the tenant, expected {expected}")


def _cpu_of(pid: int) -> float:
    """User + system CPU seconds a running process has used so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(ws) -> list[Result]:
    """Per size: alternate apply and the hand-written loop; best of each, start-up, CPU per submission."""
    env = bench_env(**sandbox_credentials())
    results = []
    with Sandbox() as sandbox:
        for count, repeat in SIZES:
            results += _measure_size(ws, sandbox, env, count, repeat)
    return results


def _measure_size(ws, sandbox: Sandbox, env: dict, count: int, repeat: int) -> list[Result]:
    root = _repo(ws, sandbox.url, count)
    files = sorted(str(p) for p in (root / "data").rglob("*.csv"))
    apply_cmd = reconciler_cmd("--chdir", str(root), "apply", "--auto-approve")
    loop_cmd = [PYTHON, str(BENCH / "sdkloop.py"), sandbox.url, "ImportFXRate", *files]
    startup_cmd = reconciler_cmd("--chdir", str(root), "plan", "--no-refresh")
    best = {"apply": float("inf"), "loop": float("inf"), "startup": float("inf")}
    cpu = {"apply": float("inf"), "sandbox": float("inf")}
    run(startup_cmd, env=env, what="start-up")  # fills the validation cache
    for _ in range(repeat):
        for side, cmd in (("apply", apply_cmd), ("loop", loop_cmd)):
            _fresh(sandbox, root)
            if side == "apply":
                best["startup"] = min(best["startup"], run(startup_cmd, env=env, what="start-up")[0])
            before, served = _children_cpu(), _cpu_of(sandbox.proc.pid)
            elapsed, proc = run(cmd, env=env, what=side)
            if side == "loop":
                elapsed = json.loads(proc.stdout)["loop_seconds"]  # the SDK's import left out
            if side == "apply":
                cpu["apply"] = min(cpu["apply"], _children_cpu() - before)
                cpu["sandbox"] = min(cpu["sandbox"], _cpu_of(sandbox.proc.pid) - served)
            _submitted(sandbox, side, count)
            best[side] = min(best[side], elapsed)
    network = count * LATENCY_MS / 1000 / PARALLELISM
    floor = network + best["startup"]
    return [
        Result(
            key=f"P2-loop-{count}", title=f"P2 apply {count} specs vs sequential zuora-sdk loop",
            figure=f"{seconds(best['apply'])} vs SDK loop {seconds(best['loop'])} (its import left out)",
            value=best["loop"] / best["apply"], goal=SPEEDUP_GOAL, op=">=", unit="x faster",
            extra={"seconds": best["apply"], "loop_seconds": best["loop"]},
        ),
        Result(
            key=f"P2-floor-{count}",
            title=f"P2 apply {count} specs vs floor {count}x{LATENCY_MS} ms/{PARALLELISM} + start-up",
            figure=f"{seconds(best['apply'])} vs floor {seconds(network)} + start-up {seconds(best['startup'])}",
            value=best["apply"] / floor, goal=FLOOR_GOAL,
            extra={"seconds": best["apply"], "floor_seconds": floor, "startup_seconds": best["startup"]},
        ),
        Result(
            key=f"P2-cpu-{count}", title=f"P2 apply {count} specs: CPU per submission",
            figure=f"client {cpu['apply'] / count * 1000:.2f} ms, simulator {cpu['sandbox'] / count * 1000:.2f} ms "
                   f"(of {seconds(cpu['apply'])} and {seconds(cpu['sandbox'])})",
            value=cpu["apply"] / count * 1000, goal=None, unit=" ms",
            extra={"client_cpu_seconds": cpu["apply"], "sandbox_cpu_seconds": cpu["sandbox"]},
        ),
    ]
