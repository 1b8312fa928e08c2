"""Validation at scale: a temporary repo of N specs, each with its own 20-row ImportFXRate CSV.

Times `validate_repo` in-process and `reconciler validate` as a subprocess, and prints seconds per
1,000 specs. Standalone it prints only:

    python bench/validate_scale.py [--specs 1000] [--repeat 3] [--json]

In the harness (`python bench/run.py validate`), `measure` adds the goal (well under 1 s per 1,000
specs, as a subprocess) and the ratio against the read+hash floor (bench/floor.py) over the same repo.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from reconciler.engine.config import load_settings  # noqa: E402
from reconciler.spec.load import validate_repo  # noqa: E402

TITLE = "validation scale"
CURRENCIES = ["EUR", "GBP", "JPY", "CAD", "AUD", "CHF", "SEK", "NOK", "DKK", "NZD"]


def build_repo(root: Path, count: int, *, chain: bool = True) -> None:
    """reconciler.yaml, state/, `count` spec files and `count` CSV files (20 data rows each).

    With `chain`, specs depend on each other in runs of ten (fx-0001 on fx-0000, ...), as a month's
    files often do; without it they are all independent.
    """
    (root / "reconciler.yaml").write_text("specs: specs\nenvironment: local\n")
    (root / "state").mkdir()  # as `reconciler init` makes it: validation keeps its cache under state/.cache
    for index in range(count):
        group = root / "specs" / f"team-{index % 10}"
        data = root / "data" / f"team-{index % 10}"
        group.mkdir(parents=True, exist_ok=True)
        data.mkdir(parents=True, exist_ok=True)
        rows = ["Provider Exchange Rate Date,Currency (From),Currency (To),Exchange Rate,Group ID"]
        rows += [f"2026-11-{day:02d},USD,{CURRENCIES[day % 10]},{0.5 + day / 100:.4f},g{index}" for day in range(1, 21)]
        (data / f"fx-{index:04d}.csv").write_text("\n".join(rows) + "\n")
        depends = f"\n  dependsOn: [fx-{index - 1:04d}]" if chain and index % 10 else ""
        (group / f"fx-{index:04d}.yaml").write_text(
            "apiVersion: reconciler/v1\n"
            "kind: MassAction\n"
            "metadata:\n"
            f"  name: fx-{index:04d}\n"
            "  description: Monthly FX rates\n"
            "  labels: {team: finance}\n"
            "spec:\n"
            "  actionType: ImportFXRate\n"
            f"  file: ../../data/team-{index % 10}/fx-{index:04d}.csv\n"
            f"  revision: 1{depends}\n"
        )


def time_in_process(root: Path, count: int, repeat: int) -> float:
    """Best wall seconds of `validate_repo` over the repo; RuntimeError when it is not all valid."""
    settings = load_settings(chdir=str(root), env={})
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        desired, problems = validate_repo(settings)
        best = min(best, time.perf_counter() - start)
        if problems or desired is None or len(desired.specs) != count:
            raise RuntimeError(f"unexpected result: {len(problems)} problems, first: {problems[:1]}")
    return best


def measure(ws) -> list:
    """Harness entry: `reconciler validate` over 1,000 specs, per 1,000 specs and against the floor."""
    from common import Result, floor_cmd, interleaved, reconciler_cmd, seconds, timed

    count, repeat = 1000, 5
    root = ws.fx_repo(count)
    best = interleaved(
        {"validate": timed(reconciler_cmd("--chdir", str(root), "validate"), what="reconciler validate"),
         "floor": timed(floor_cmd(root), what="floor")},
        repeat,
    )
    in_process = time_in_process(root, count, repeat)
    per_thousand = best["validate"] * 1000 / count
    return [
        Result(
            key="V-seconds", title=f"Validate {count} specs (subprocess)",
            figure=f"{seconds(best['validate'])}, in-process validate_repo {seconds(in_process)}",
            value=per_thousand, goal=1.0, unit=" s", note="seconds per 1,000 specs",
            extra={"seconds": best["validate"], "in_process_seconds": in_process},
        ),
        Result(
            key="V-floor", title=f"Validate {count} specs vs read+hash floor",
            figure=f"{seconds(best['validate'])} vs floor {seconds(best['floor'])}",
            value=best["validate"] / best["floor"], goal=None,
            extra={"seconds": best["validate"], "floor_seconds": best["floor"]},
        ),
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--specs", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3, help="best of N runs")
    parser.add_argument("--json", action="store_true", help="print one JSON line instead of text")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="reconciler-bench-") as tmp:
        root = Path(tmp)
        build_repo(root, args.specs)
        try:
            in_process = [time_in_process(root, args.specs, args.repeat)]
        except RuntimeError as err:
            print(err, file=sys.stderr)
            return 1

        command = [sys.executable, "-m", "reconciler", "--chdir", str(root), "validate"]
        subprocess_times = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            proc = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
            subprocess_times.append(time.perf_counter() - start)
            if proc.returncode != 0:
                print(f"reconciler validate exited {proc.returncode}: {proc.stdout[-500:]}{proc.stderr[-500:]}",
                      file=sys.stderr)
                return 1

    per_thousand = 1000 / args.specs
    result = {
        "specs": args.specs,
        "in_process_seconds_per_1000_specs": round(min(in_process) * per_thousand, 4),
        "subprocess_seconds_per_1000_specs": round(min(subprocess_times) * per_thousand, 4),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"validate_repo (in-process), {args.specs} specs: best {min(in_process):.3f} s "
              f"= {result['in_process_seconds_per_1000_specs']:.3f} s per 1,000 specs")
        print(f"reconciler validate (subprocess), {args.specs} specs: best {min(subprocess_times):.3f} s "
              f"= {result['subprocess_seconds_per_1000_specs']:.3f} s per 1,000 specs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
