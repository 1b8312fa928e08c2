"""What every benchmark shares: results, repeated timing, subprocesses, generated repos, the floor.

Every figure is a ratio of two things measured in the same run (these machines are noisy); the
absolute times are printed for context only. Timing is best-of-N with the two sides interleaved
(A, B, A, B, ...) so a slow patch of the machine hurts both sides alike.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
if str(ROOT) not in sys.path:  # run as `python bench/run.py` from a checkout
    sys.path.insert(0, str(ROOT))
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

PYTHON = sys.executable
FLOOR_SCRIPT = BENCH / "floor.py"


def console_script() -> str:
    """The installed `reconciler` entry point beside this Python (not a pyenv shim), else `python -m`."""
    import sysconfig

    script = Path(sysconfig.get_path("scripts")) / "reconciler"
    return str(script) if script.exists() else ""


def reconciler_cmd(*args: str) -> list[str]:
    """argv for `reconciler ARGS` as a user runs it (the console script when installed)."""
    script = console_script()
    return [script, *args] if script else [PYTHON, "-m", "reconciler", *args]


@dataclass
class Result:
    """One measured figure: `value` (a ratio, unless `unit` says otherwise) against `goal` with `op`."""

    key: str  # stable id, e.g. "P1-10000"
    title: str  # e.g. "P1 plan 10000 specs"
    figure: str  # absolute numbers, for context, e.g. "4.21 s vs floor 1.60 s"
    value: float | None  # the ratio (None when the benchmark could not run)
    goal: float | None
    op: str = "<="
    unit: str = "x"
    note: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def met(self) -> bool | None:
        """True/False against the goal; None when there is no goal or no value."""
        if self.value is None or self.goal is None:
            return None
        compare = {"<": float.__lt__, "<=": float.__le__, ">": float.__gt__, ">=": float.__ge__}[self.op]
        return compare(float(self.value), float(self.goal))

    @property
    def verdict(self) -> str:
        """MET, MISSED or n/a."""
        return {True: "MET", False: "MISSED", None: "n/a"}[self.met]

    def goal_text(self) -> str:
        """The goal as printed, e.g. `<= 3x`."""
        return "-" if self.goal is None else f"{self.op} {self.goal:g}{self.unit}"

    def value_text(self) -> str:
        """The value as printed, e.g. `2.63x`."""
        return "-" if self.value is None else f"{self.value:.2f}{self.unit}"

    def line(self) -> str:
        """The one printed line, e.g. `P1 plan 10000 specs: 4.21 s vs floor 1.60 s = 2.63x (goal <= 3x) MET`."""
        if self.value is None:
            return f"{self.title}: {self.figure} ({self.note or 'not measured'})"
        goal = "" if self.goal is None else f" (goal {self.goal_text()}) {self.verdict}"
        return f"{self.title}: {self.figure} = {self.value_text()}{goal}"


class Failed(Exception):
    """A measured command did not do what the benchmark needs (wrong exit code, wrong output)."""


def bench_env(**extra: str) -> dict:
    """The environment for measured children: no colour, no CI or Zuora variables from the caller."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ZUORA_", "GITHUB_", "RECONCILER_"))}
    env["NO_COLOR"] = "1"
    env.update(extra)
    return env


def run(cmd: list[str], *, cwd: Path | None = None, env: dict | None = None, ok=(0,),
        what: str = "") -> tuple[float, subprocess.CompletedProcess]:
    """Run `cmd` to completion; (wall seconds, completed process); Failed on an unexpected exit code."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd or ROOT, env=env or bench_env(), capture_output=True)
    elapsed = time.perf_counter() - start
    if proc.returncode not in ok:
        tail = (proc.stdout[-800:] + proc.stderr[-1500:]).decode("utf-8", "replace")
        raise Failed(f"{what or ' '.join(map(str, cmd[:4]))} exited {proc.returncode}: {tail}")
    return elapsed, proc


def interleaved(sides: dict, repeat: int) -> dict[str, float]:
    """Run each side's callable (returning seconds) `repeat` times, A/B/A/B; best time per side."""
    best = {name: float("inf") for name in sides}
    for _ in range(repeat):
        for name, measure in sides.items():
            best[name] = min(best[name], measure())
    return best


def floor_cmd(root: Path) -> list[str]:
    """The floor: one Python process that reads and sha256-hashes every file of the repo (not state/)."""
    return [PYTHON, str(FLOOR_SCRIPT), str(root)]


def timed(cmd: list[str], **kwargs):
    """A zero-argument callable that runs `cmd` and returns its wall seconds (for `interleaved`)."""
    return lambda: run(cmd, **kwargs)[0]


class Workspace:
    """Generated data for one `run.py` invocation under bench/work/, built once and reused within it."""

    def __init__(self, keep: bool = False):
        self.dir = BENCH / "work" / time.strftime("run-%Y%m%d-%H%M%S")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.keep = keep
        self._repos: dict[int, Path] = {}

    def fx_repo(self, count: int) -> Path:
        """A repo of `count` ImportFXRate specs, each with its own 20-row CSV (no ledger)."""
        if count not in self._repos:
            from validate_scale import build_repo

            root = self.dir / f"fx-{count}"
            root.mkdir()
            build_repo(root, count)
            self._repos[count] = root
        return self._repos[count]

    def path(self, name: str) -> Path:
        """A fresh directory for one benchmark's own data."""
        target = self.dir / name
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        return target

    def close(self) -> None:
        """Remove the generated data unless asked to keep it."""
        if not self.keep:
            shutil.rmtree(self.dir, ignore_errors=True)


def seconds(value: float) -> str:
    """A duration for printing: `1.23 s` or `45 ms`."""
    return f"{value:.2f} s" if value >= 1 else f"{value * 1000:.0f} ms"


class Sandbox:
    """`reconciler sandbox serve` in a child process, with its admin API (stdlib HTTP, no client code)."""

    def __init__(self, *args: str):
        self.proc = subprocess.Popen(
            reconciler_cmd("sandbox", "serve", "--port", "0", *args), cwd=ROOT, env=bench_env(),
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        line = self.proc.stdout.readline().strip()
        prefix = "Sandbox listening on "
        if not line.startswith(prefix):
            self.stop()
            raise Failed(f"reconciler sandbox serve printed {line!r} instead of its URL")
        self.url = line[len(prefix):]

    def admin(self, path: str, payload: dict | None = None) -> dict:
        """GET (payload None) or POST JSON to /_sandbox/PATH; the JSON answer."""
        import json
        import urllib.request

        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(f"{self.url}/_sandbox/{path}", data=data,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())

    def stop(self) -> None:
        """SIGTERM, as CI would; the serve command shuts down cleanly on it."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def sandbox_credentials() -> dict:
    """The environment variables that log in to a served sandbox with its documented default client."""
    from reconciler.sandbox import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET

    return {"ZUORA_CLIENT_ID": DEFAULT_CLIENT_ID, "ZUORA_CLIENT_SECRET": DEFAULT_CLIENT_SECRET}
