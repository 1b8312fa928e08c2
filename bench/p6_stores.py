"""P6 the two ledger stores side by side: a 200-spec apply and `plan --no-refresh` on SQLite and PostgreSQL.

The same repo (bench/validate_scale.py's 200 ImportFXRate specs) against `reconciler sandbox serve` at
40 ms a request, once with the default SQLite ledger and once with `RECONCILER_LEDGER` pointing at a
PostgreSQL database on loopback: RECONCILER_BENCH_POSTGRES_URL's server, else a throwaway cluster
started from the installed binaries (tests/pg_support.py). Measured, best of REPEAT with the two
stores interleaved: the wall time of `apply --auto-approve` from an empty ledger and tenant, and of
`plan --no-refresh --json` over the ledger that apply left. Each figure is PostgreSQL / SQLite;
goal: PostgreSQL costs at most 1.5x SQLite's apply (the remote calls dominate) and 3x its plan.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import uuid

from common import ROOT, Failed, Result, Sandbox, bench_env, reconciler_cmd, run, sandbox_credentials, seconds

NAME = "p6"
TITLE = "ledger stores"
SPECS = 200
LATENCY_MS = 40
REPEAT = 3
APPLY_GOAL = 1.5
PLAN_GOAL = 3.0


@contextlib.contextmanager
def _server():
    given = os.environ.get("RECONCILER_BENCH_POSTGRES_URL")
    if given:
        yield given
        return
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        from pg_support import throwaway_cluster
    except ImportError as exc:  # psycopg missing: pip install -e '.[test]'
        raise Failed(f"no PostgreSQL for P6: {exc}") from exc
    try:
        with throwaway_cluster() as url:
            yield url
    except RuntimeError as exc:
        raise Failed(str(exc)) from exc


def _schema(admin_url: str) -> str:
    """A ledger URL in a new, empty schema of the server's database."""
    return admin_url + f"?options=-csearch_path%3Dp6_{uuid.uuid4().hex[:10]}"


def measure(ws) -> list[Result]:
    """Both stores, interleaved, REPEAT times each: apply from nothing, then plan over its ledger."""
    from validate_scale import build_repo

    best = {side: float("inf") for side in ("apply-sqlite", "apply-postgres", "plan-sqlite", "plan-postgres")}
    with _server() as admin_url, Sandbox() as sandbox:
        root = ws.path("p6")
        build_repo(root, SPECS, chain=False)
        (root / "reconciler.yaml").write_text(f"specs: specs\nenvironment: {sandbox.url}\n")
        for _ in range(REPEAT):
            for store in ("sqlite", "postgres"):
                sandbox.admin("reset", {})
                sandbox.admin("faults", {"latency_ms": LATENCY_MS})
                shutil.rmtree(root / "state", ignore_errors=True)
                extra = {"RECONCILER_LEDGER": _schema(admin_url)} if store == "postgres" else {}
                env = bench_env(**sandbox_credentials(), **extra)
                elapsed, _ = run(reconciler_cmd("--chdir", str(root), "apply", "--auto-approve"), env=env,
                                 what=f"apply on {store}")
                if len(sandbox.admin("state")["mass_actions"]) != SPECS:
                    raise Failed(f"apply on {store} did not submit {SPECS} specs")
                best[f"apply-{store}"] = min(best[f"apply-{store}"], elapsed)
                planned, _ = run(reconciler_cmd("--chdir", str(root), "plan", "--no-refresh", "--json"), env=env,
                                 what=f"plan on {store}")
                best[f"plan-{store}"] = min(best[f"plan-{store}"], planned)
    return [
        Result(key="P6-apply", title=f"P6 apply {SPECS} specs, PostgreSQL vs SQLite ledger",
               figure=f"{seconds(best['apply-postgres'])} vs {seconds(best['apply-sqlite'])}",
               value=best["apply-postgres"] / best["apply-sqlite"], goal=APPLY_GOAL,
               extra={"postgres_seconds": best["apply-postgres"], "sqlite_seconds": best["apply-sqlite"]}),
        Result(key="P6-plan", title=f"P6 plan --no-refresh {SPECS} specs, PostgreSQL vs SQLite ledger",
               figure=f"{seconds(best['plan-postgres'])} vs {seconds(best['plan-sqlite'])}",
               value=best["plan-postgres"] / best["plan-sqlite"], goal=PLAN_GOAL,
               extra={"postgres_seconds": best["plan-postgres"], "sqlite_seconds": best["plan-sqlite"]}),
    ]
