"""Run the benchmarks, print one line per figure and record them in bench/RESULTS.md.

    python bench/run.py [NAME ...] [--keep]      NAME: p1 p2 p3 p4 p5 validate (default: all)

Not part of the test suite: nothing here asserts a time. Every figure is a ratio of two things
measured in the same run; absolute times are printed for context. Results are kept per figure in
bench/results.json (so running one benchmark updates its rows and leaves the others as they were)
and rendered into the table between the markers of bench/RESULTS.md; the rest of that file
(profiling findings, before/after) is written by hand and left alone.
"""

from __future__ import annotations

import argparse
import compileall
import importlib
import importlib.util
import json
import os
import platform
import sys
import time
import traceback
from datetime import datetime, timezone

from common import BENCH, ROOT, Failed, Result, Workspace, seconds

# (name, module, command modules it needs, key prefix of its results): cheapest first, so a broken
# build fails fast.
BENCHMARKS = [
    ("p3", "p3_startup", (), "P3"),
    ("validate", "validate_scale", ("validate",), "V"),
    ("p1", "p1_plan_scale", ("plan",), "P1"),
    ("p4", "p4_ledger_scale", ("plan", "history"), "P4"),
    ("p2", "p2_apply_throughput", ("apply",), "P2"),
    ("p5", "p5_memory", ("apply",), "P5"),
    ("p6", "p6_stores", ("apply", "plan"), "P6"),
]
ORDER = [prefix for *_, prefix in BENCHMARKS]
RESULTS_JSON = BENCH / "results.json"
RESULTS_MD = BENCH / "RESULTS.md"
START, END = "<!-- results:start -->", "<!-- results:end -->"


def missing_commands(commands) -> list[str]:
    """Command modules that do not exist yet (another helper may still be writing them)."""
    return [c for c in commands if importlib.util.find_spec(f"reconciler.commands.{c}") is None]


def machine() -> dict:
    """What the figures were measured on."""
    return {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def run_one(module_name: str, needs, prefix: str, ws: Workspace) -> list[Result]:
    """One benchmark's results; a skip or failure becomes one result under `prefix` with the reason."""
    module = importlib.import_module(module_name)
    missing = missing_commands(needs)
    if missing:
        why = f"skipped: reconciler.commands.{', '.join(missing)} not there yet"
        return [Result(key=prefix, title=f"{prefix} {module.TITLE}", figure="-", value=None, goal=None, note=why)]
    try:
        return module.measure(ws)
    except (Failed, RuntimeError, OSError, ValueError, KeyError) as err:
        traceback.print_exc()
        return [Result(key=prefix, title=f"{prefix} {module.TITLE}", figure="-", value=None,
                       goal=None, note=f"failed: {str(err).splitlines()[0][:300]}")]


def _rank(item) -> tuple:
    """Benchmarks in BENCHMARKS order, each one's figures in the order it measured them."""
    key, row = item
    prefix = key.split("-")[0]
    return (ORDER.index(prefix) if prefix in ORDER else len(ORDER), row.get("position", 0), key)


def record(results: list[Result], info: dict) -> dict:
    """Merge this run's results into bench/results.json (rows of benchmarks not run stay); the whole table."""
    table = json.loads(RESULTS_JSON.read_text()) if RESULTS_JSON.exists() else {}
    for position, r in enumerate(results):
        measured_before = any(k.startswith(r.key + "-") for k in table)
        if r.value is None and r.note.startswith("skipped") and measured_before:
            continue  # keep the last real measurement rather than a skip
        if "-" in r.key:
            table.pop(r.key.split("-")[0], None)  # a real figure replaces the placeholder row
        table[r.key] = {
            "title": r.title, "figure": r.figure, "value": r.value, "value_text": r.value_text(),
            "goal": r.goal_text(), "met": r.verdict, "note": r.note, "extra": r.extra, "position": position,
            **info,
        }
    table = dict(sorted(table.items(), key=_rank))
    RESULTS_JSON.write_text(json.dumps(table, indent=2) + "\n")
    return table


def render(table: dict, info: dict) -> str:
    """The generated part of RESULTS.md."""
    lines = [
        START,
        f"Last run: {info['date']} on {info['cores']} cores, Python {info['python']} ({info['platform']}).",
        "Each row keeps the machine and date it was measured on.",
        "",
        "| benchmark | figure (context) | ratio | goal | met? | measured | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in table.values():
        when = f"{row['date']}, {row['cores']} cores, py {row['python']}"
        lines.append(
            f"| {row['title']} | {row['figure']} | {row['value_text']} | {row['goal']} | {row['met']} "
            f"| {when} | {row['note']} |"
        )
    lines.append(END)
    return "\n".join(lines)


def write_markdown(table: dict, info: dict) -> None:
    """Replace the generated table in RESULTS.md, keeping the hand-written rest."""
    text = RESULTS_MD.read_text() if RESULTS_MD.exists() else f"# Benchmark results\n\n{START}\n{END}\n"
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    RESULTS_MD.write_text(head + render(table, info) + tail)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="benchmarks to run (default: all)")
    parser.add_argument("--keep", action="store_true", help="keep the generated data under bench/work/")
    args = parser.parse_args(argv)
    known = [name for name, *_ in BENCHMARKS]
    unknown = [n for n in args.names if n not in known]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(known)}")

    # As an installed package has it (pip byte-compiles on install): where PYTHONDONTWRITEBYTECODE is set,
    # an editable checkout would otherwise compile itself again in every measured process.
    compileall.compile_dir(ROOT / "reconciler", quiet=1)
    info = machine()
    print(f"{info['cores']} cores, Python {info['python']}, {info['date']}")
    started = time.perf_counter()
    ws = Workspace(keep=args.keep)
    results: list[Result] = []
    try:
        for name, module, needs, prefix in BENCHMARKS:
            if args.names and name not in args.names:
                continue
            t0 = time.perf_counter()
            for result in run_one(module, needs, prefix, ws):
                print(result.line(), f"[{result.note}]" if result.note and result.value is not None else "",
                      flush=True)
                results.append(result)
            print(f"  ({name} took {seconds(time.perf_counter() - t0)})", flush=True)
    finally:
        ws.close()
    table = record(results, info)
    write_markdown(table, info)
    print(f"Total {seconds(time.perf_counter() - started)}; recorded in {RESULTS_MD.relative_to(BENCH.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
