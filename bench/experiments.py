"""Before/after evidence for the fixes proposed in RESULTS.md, measured with bench/prototypes.py.

    python bench/experiments.py [p4] [p2] [--keep]

Each experiment times the same command with no patch and with the prototype patches, interleaved,
best of N, on the same data as the benchmark, and prints one line per variant with its ratio to
the benchmark's reference. Prints only; RESULTS.md's Before/after section is written from it.
"""

from __future__ import annotations

import argparse
import sys

from common import BENCH, PYTHON, Failed, Sandbox, Workspace, bench_env, interleaved, run, sandbox_credentials, seconds

PROTOTYPES = str(BENCH / "prototypes.py")


def patched(patches: str, *args: str) -> list[str]:
    """argv running the reconciler CLI under the named prototype patches ("none" for none)."""
    return [PYTHON, PROTOTYPES, patches, *args]


def p4(ws) -> None:
    """plan --no-refresh on the 1M-event ledger vs the empty one, and history, with and without the fixes."""
    import p4_ledger_scale

    big, _ = p4_ledger_scale._repo(ws, "p4-big", big=True)
    empty, _ = p4_ledger_scale._repo(ws, "p4-empty", big=False)
    variants = ("none", "live-jobs", "no-numpy", "live-jobs,no-numpy")
    sides = {}
    for patches in variants:
        for label, root in (("big", big), ("empty", empty)):
            sides[f"plan {label} [{patches}]"] = _timer(patched(patches, "-C", str(root), "plan", "--no-refresh"))
    for patches in ("none", "no-numpy"):
        sides[f"history [{patches}]"] = _timer(patched(patches, "-C", str(big), "history", "--limit", "50"))
    best = interleaved(sides, 5)
    for patches in variants:
        b, e = best[f"plan big [{patches}]"], best[f"plan empty [{patches}]"]
        print(f"P4 plan, patches {patches}: {seconds(b)} vs empty ledger {seconds(e)} = {b / e:.2f}x (goal <= 1.1x)")
    for patches in ("none", "no-numpy"):
        print(f"P4 history --limit 50, patches {patches}: {seconds(best[f'history [{patches}]'])} (goal < 0.3 s)")


def p2(ws) -> None:
    """apply of 200 specs at 40 ms latency, with and without the fixes, and the hand-written loop once."""
    import p2_apply_throughput as bench

    env = bench_env(**sandbox_credentials())
    variants = ("none", "no-numpy", "intent-fsync", "no-numpy,intent-fsync")
    best = {}
    with Sandbox() as sandbox:
        root = bench._repo(ws, sandbox.url)
        files = sorted(str(p) for p in (root / "data").rglob("*.csv"))

        def once(label, cmd):
            def measure():
                bench._fresh(sandbox, root)
                elapsed, _ = run(cmd, env=env, what=label)
                bench._submitted(sandbox, label)
                return elapsed
            return measure

        sides = {p: once(p, patched(p, "-C", str(root), "apply", "--auto-approve")) for p in variants}
        sides["loop"] = once("loop", [PYTHON, str(BENCH / "handwritten.py"), sandbox.url, "ImportFXRate", *files])
        best = interleaved(sides, 3)
    floor = bench.SPECS * bench.LATENCY_MS / 1000 / bench.PARALLELISM
    for patches in variants:
        t = best[patches]
        print(f"P2 apply, patches {patches}: {seconds(t)} = {best['loop'] / t:.2f}x faster than the loop "
              f"({seconds(best['loop'])}), {t / floor:.2f}x the floor {seconds(floor)}")


def _timer(cmd):
    return lambda: run(cmd, what=" ".join(cmd[2:4]))[0]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="p4, p2 (default: both)")
    parser.add_argument("--keep", action="store_true", help="keep the generated data under bench/work/")
    args = parser.parse_args(argv)
    if set(args.names) - {"p4", "p2"}:
        parser.error("experiments: p4, p2")
    ws = Workspace(keep=args.keep)
    try:
        for name, experiment in (("p4", p4), ("p2", p2)):
            if not args.names or name in args.names:
                experiment(ws)
    except Failed as err:
        print(err, file=sys.stderr)
        return 1
    finally:
        ws.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
