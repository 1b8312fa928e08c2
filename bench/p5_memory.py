"""P5 memory: uploading a 15 MB custom object CSV (operation create); peak RSS of apply <= 100 MB.

`reconciler apply --auto-approve` runs against `reconciler sandbox serve` (so the simulator, which
keeps the upload in memory, is another process). Each measured command runs under a fresh
intermediate Python that waits for it and reports resource.getrusage(RUSAGE_CHILDREN).ru_maxrss, so
no earlier child pollutes the figure. The peak RSS of `reconciler --version` is printed as the
baseline, and the ratio to it for context. Apply must leave one job with its file uploaded.
"""

from __future__ import annotations

import json
import shutil

from common import PYTHON, Failed, Result, Sandbox, bench_env, reconciler_cmd, run, sandbox_credentials

NAME = "p5"
TITLE = "memory"
FILE_BYTES = 15_000_000  # 15 MB, just under the 15 MiB Zuora limit
GOAL_MB = 100.0
REPEAT = 2
MEASURE = """
import json, resource, subprocess, sys
proc = subprocess.run(sys.argv[2:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
with open(sys.argv[1], "w") as fh:
    json.dump({"returncode": proc.returncode, "maxrss_kib": peak, "stderr": proc.stderr.decode()[-2000:]}, fh)
"""


def peak_rss_mb(cmd: list[str], scratch, env: dict, ok=(0,)) -> float:
    """Peak RSS in MB (10^6 bytes) of `cmd` and its children, run under a fresh intermediate Python."""
    report = scratch / "rss.json"
    run([PYTHON, "-c", MEASURE, str(report), *cmd], env=env, what="rss probe")
    result = json.loads(report.read_text())
    if result["returncode"] not in ok:
        raise Failed(f"{cmd[1:4]} exited {result['returncode']}: {result['stderr']}")
    return result["maxrss_kib"] * 1024 / 1e6


def write_csv(path, size: int) -> int:
    """A vehicle CSV of about `size` bytes (never above); returns the number of data rows."""
    header = "make__c,model__c,year__c,vin__c,color__c,mileage__c\n"
    colours = ("white", "red", "blue", "black", "silver")
    rows, written = 0, len(header)
    with open(path, "w", encoding="utf-8", newline="") as fh:
        fh.write(header)
        while True:
            line = f"Volvo,FH16,{1990 + rows % 35},YV2RT40A5RB{rows:06d},{colours[rows % 5]},{rows * 7 % 900000}\n"
            if written + len(line) > size:
                return rows
            fh.write(line)
            written += len(line)
            rows += 1


def _repo(ws, url: str):
    root = ws.path("p5")
    (root / "specs").mkdir()
    (root / "data").mkdir()
    rows = write_csv(root / "data" / "vehicles.csv", FILE_BYTES)
    (root / "reconciler.yaml").write_text(f"specs: specs\nenvironment: {url}\n")
    (root / "specs" / "vehicles.yaml").write_text(
        "apiVersion: reconciler/v1\nkind: CustomObjectJob\nmetadata: {name: load-vehicles}\n"
        "spec:\n  object: vehicle\n  operation: create\n  file: ../data/vehicles.csv\n"
    )
    return root, rows


def measure(ws) -> list[Result]:
    """Apply the 15 MB upload REPEAT times from scratch; the highest peak counts."""
    env = bench_env(**sandbox_credentials())
    with Sandbox("--pending-seconds", "600") as sandbox:  # the job stays put: only the upload is measured
        root, rows = _repo(ws, sandbox.url)
        baseline = peak_rss_mb(reconciler_cmd("--version"), root, env)
        peaks = []
        for _ in range(REPEAT):
            sandbox.admin("reset", {})
            shutil.rmtree(root / "state", ignore_errors=True)
            peaks.append(peak_rss_mb(reconciler_cmd("--chdir", str(root), "apply", "--auto-approve"), root, env))
            jobs = sandbox.admin("state")["custom_object_jobs"]
            if len(jobs) != 1 or jobs[0].get("status") == "pending":
                raise Failed(f"apply should leave one job with its file uploaded: {jobs}")
    peak = max(peaks)
    return [Result(
        key="P5-rss", title=f"P5 apply uploading a {FILE_BYTES / 1e6:.0f} MB custom object CSV ({rows:,} rows)",
        figure=f"peak RSS {peak:.1f} MB ({peak / baseline:.1f}x `reconciler --version`'s {baseline:.1f} MB)",
        value=peak, goal=GOAL_MB, unit=" MB",
        extra={"peak_mb": peaks, "baseline_mb": baseline, "rows": rows},
    )]
