"""P3 start-up: `reconciler --version` and `reconciler --help` against `python -c pass`. Goal: <= 2x (issue 17).

Both run through the installed console script, as a user types them. `--help` and `--version` must
import none of yaml, jsonschema, httpx, sqlite-utils (DESIGN §9); this benchmark checks it too, with
`python -X importtime`, and reports any of them found.
"""

from __future__ import annotations

from common import PYTHON, Result, interleaved, reconciler_cmd, run, seconds, timed

NAME = "p3"
TITLE = "start-up"
GOAL = 2.0
REPEAT = 15
HEAVY = ("yaml", "jsonschema", "httpx", "sqlite_utils")


def heavy_imports(args: list[str]) -> list[str]:
    """Top-level modules among HEAVY that `python -X importtime -m reconciler ARGS` imports."""
    _, proc = run([PYTHON, "-X", "importtime", "-m", "reconciler", *args])
    found = set()
    for line in proc.stderr.decode().splitlines():
        if "|" in line:
            module = line.rsplit("|", 1)[1].strip().split(".")[0]
            if module in HEAVY:
                found.add(module)
    return sorted(found)


def measure(ws) -> list[Result]:
    """Best of REPEAT, interleaved: bare interpreter, --version, --help."""
    best = interleaved(
        {
            "python": timed([PYTHON, "-c", "pass"]),
            "version": timed(reconciler_cmd("--version")),
            "help": timed(reconciler_cmd("--help")),
        },
        REPEAT,
    )
    results = []
    for side in ("version", "help"):
        heavy = heavy_imports([f"--{side}"])
        results.append(Result(
            key=f"P3-{side}",
            title=f"P3 start-up reconciler --{side}",
            figure=f"{seconds(best[side])} vs python -c pass {seconds(best['python'])}",
            value=best[side] / best["python"],
            goal=GOAL,
            note=f"imports {', '.join(heavy)}" if heavy else "",
            extra={"seconds": best[side], "floor_seconds": best["python"], "heavy_imports": heavy},
        ))
    return results
