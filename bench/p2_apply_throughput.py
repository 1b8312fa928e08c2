"""P2 apply throughput: 200 Mass Updater specs against `reconciler sandbox serve` at 40 ms a request.

The served sandbox adds 40 ms to every Zuora request (`/_sandbox/faults` latency_ms 40; /oauth/token
is not delayed). Measured: the wall time of `reconciler apply --auto-approve` (a subprocess, fresh
ledger, empty tenant each time) against
- (a) bench/handwritten.py, a sequential loop of plain httpx POSTs of the same files to /v1/bulk
  (token, then one POST per file): goal apply >= 10x faster;
- (b) the floor 200 x 40 ms / parallelism (16, reconciler.yaml's default): goal apply <= 1.5x.
Both sides must leave 200 mass actions in the tenant. Apply and loop runs alternate.
"""

from __future__ import annotations

import shutil

from common import PYTHON, BENCH, Failed, Result, Sandbox, bench_env, reconciler_cmd, run, sandbox_credentials, seconds

NAME = "p2"
TITLE = "apply throughput"
SPECS = 200
LATENCY_MS = 40
PARALLELISM = 16
REPEAT = 3
SPEEDUP_GOAL = 10.0
FLOOR_GOAL = 1.5


def _repo(ws, url: str):
    from validate_scale import build_repo

    root = ws.path("p2")
    build_repo(root, SPECS, chain=False)
    (root / "reconciler.yaml").write_text(
        f"specs: specs\nenvironment: {url}\napply:\n  parallelism: {PARALLELISM}\n"
    )
    return root


def _fresh(sandbox: Sandbox, root) -> None:
    """An empty tenant with the latency set, and no ledger: every run starts from the same place."""
    sandbox.admin("reset", {})
    sandbox.admin("faults", {"latency_ms": LATENCY_MS})
    shutil.rmtree(root / "state", ignore_errors=True)


def _submitted(sandbox: Sandbox, what: str) -> None:
    count = len(sandbox.admin("state")["mass_actions"])
    if count != SPECS:
        raise Failed(f"{what} left {count} mass actions in the tenant, expected {SPECS}")


def measure(ws) -> list[Result]:
    """Alternate apply and the hand-written loop REPEAT times; best of each."""
    env = bench_env(**sandbox_credentials())
    with Sandbox() as sandbox:
        root = _repo(ws, sandbox.url)
        files = sorted(str(p) for p in (root / "data").rglob("*.csv"))
        apply_cmd = reconciler_cmd("--chdir", str(root), "apply", "--auto-approve")
        loop_cmd = [PYTHON, str(BENCH / "handwritten.py"), sandbox.url, "ImportFXRate", *files]
        best = {"apply": float("inf"), "loop": float("inf")}
        for _ in range(REPEAT):
            for side, cmd in (("apply", apply_cmd), ("loop", loop_cmd)):
                _fresh(sandbox, root)
                elapsed, _ = run(cmd, env=env, what=side)
                _submitted(sandbox, side)
                best[side] = min(best[side], elapsed)
    floor = SPECS * LATENCY_MS / 1000 / PARALLELISM
    return [
        Result(
            key="P2-loop", title=f"P2 apply {SPECS} specs vs sequential httpx loop",
            figure=f"{seconds(best['apply'])} vs loop {seconds(best['loop'])}",
            value=best["loop"] / best["apply"], goal=SPEEDUP_GOAL, op=">=", unit="x faster",
            extra={"seconds": best["apply"], "loop_seconds": best["loop"]},
        ),
        Result(
            key="P2-floor", title=f"P2 apply {SPECS} specs vs floor {SPECS}x{LATENCY_MS} ms/{PARALLELISM}",
            figure=f"{seconds(best['apply'])} vs floor {seconds(floor)}",
            value=best["apply"] / floor, goal=FLOOR_GOAL,
            extra={"seconds": best["apply"], "floor_seconds": floor},
        ),
    ]
