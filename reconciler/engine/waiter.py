"""`apply --wait`: poll, plan again, carry out what became actionable, and show progress until every job ends.

Each pass refreshes (which records status changes and archives the results of finished jobs), plans
again and executes the changes that became actionable, typically dependents whose dependencies just
completed. The loop ends when nothing is actionable and no job that could still move is running;
waits left then can never resolve (a failed dependency) and are reported. Names whose change failed
or turned into a conflict are left out of later passes: they need a person.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence, TextIO

from reconciler.engine.applier import Result
from reconciler.engine.plan import Change, Plan
from reconciler.errors import AuthError, RemoteError
from reconciler.model import Action, JobRecord, Phase
from reconciler.zuora.wire import is_sandbox

POLL_SANDBOX_SECONDS = 0.25  # the sandbox moves in milliseconds
POLL_ZUORA_SECONDS = 2.0  # Zuora's jobs take seconds to minutes; polling faster only spends rate limit
MAX_REFRESH_FAILURES = 5  # passes in a row whose refresh failed before the wait gives up
_BAR = 20
CLEAR_LINE = "\r\x1b[K"  # back to the start of the progress line and erase it


@dataclass
class WaitOutcome:
    """How the wait ended: results of later passes, and what was left."""

    results: list[Result] = field(default_factory=list)
    timed_out: bool = False
    running: list[JobRecord] = field(default_factory=list)
    stuck: list[Change] = field(default_factory=list)
    conflicts: list[Change] = field(default_factory=list)
    blocked: list[Change] = field(default_factory=list)


def poll_seconds(settings) -> float:
    """How often `--wait` (apply's and status's) polls: fast on a sandbox, gently on Zuora."""
    return POLL_SANDBOX_SECONDS if is_sandbox(settings) else POLL_ZUORA_SECONDS


def moving(job: JobRecord) -> bool:
    """True when a job can still change by itself (a created job waiting for its upload cannot)."""
    return job.phase == Phase.ACTIVE


def waiting(job: JobRecord) -> bool:
    """True while a job has not ended: running remotely, or created and waiting for its file."""
    return job.phase in (Phase.CREATED, Phase.ACTIVE)


def progress_bar(jobs: Sequence[JobRecord], elapsed: float) -> str:
    """`[##########..........] 1/2 jobs done · 10/20 rows · 3s`, the line a terminal shows while waiting."""
    done = sum(1 for j in jobs if not waiting(j))
    counted = [j for j in jobs if j.total is not None]  # custom object jobs report no total
    processed = sum(j.processed or 0 for j in counted)
    total = sum(j.total or 0 for j in counted)
    filled = int(_BAR * done / len(jobs)) if jobs else _BAR
    rows = f" · {processed:,}/{total:,} rows" if total else ""
    return f"[{'#' * filled}{'.' * (_BAR - filled)}] {done}/{len(jobs)} jobs done{rows} · {elapsed:.0f}s"


class Progress:
    """Job progress: one updating line on a terminal, otherwise one line per status change."""

    def __init__(self, out: TextIO, *, tty: bool, clock: Callable[[], float] = time.monotonic):
        self.out = out
        self.tty = tty
        self.clock = clock
        self.started = clock()
        self.jobs: dict[int, JobRecord] = {}
        self.follow: set[str] = set()  # remote ids this apply created or acted on
        self._drawn = False

    def update(self, jobs: Sequence[JobRecord]) -> None:
        """Follow every job running during this apply or acted on by it; report what moved."""
        for job in jobs:
            before = self.jobs.get(job.id)
            if before is None and not waiting(job) and job.remote_id not in self.follow:
                continue
            if before is not None and before.remote_status != job.remote_status and not self.tty:
                self.out.write(f"{job.name}: {before.remote_status or 'unknown'} -> {job.remote_status}{_rows(job)}\n")
            self.jobs[job.id] = job
        if self.tty and self.jobs:
            self.out.write(CLEAR_LINE + progress_bar(list(self.jobs.values()), self.clock() - self.started))
            self._drawn = True
        self.out.flush()

    def say(self, text: str) -> None:
        """Print a whole line without garbling the progress line."""
        self.clear()
        self.out.write(text + "\n")
        self.out.flush()

    def clear(self) -> None:
        """Remove the progress line (it is drawn again on the next update)."""
        if self._drawn:
            self.out.write(CLEAR_LINE)
            self._drawn = False


class Waiter:
    """The --wait loop; planning, executing and reading jobs are given as callables."""

    def __init__(self, *, plan_next: Callable[[], Plan], execute: Callable[[Sequence[Change]], list[Result]],
                 jobs: Callable[[], list[JobRecord]], in_scope: Callable[[str], bool], progress: Progress,
                 poll: float, deadline: float | None, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic):
        self.plan_next = plan_next
        self.execute = execute
        self.jobs = jobs
        self.in_scope = in_scope
        self.progress = progress
        self.poll = poll
        self.deadline = deadline
        self.sleep = sleep
        self.clock = clock

    def run(self, failed: set[str]) -> WaitOutcome:
        """Poll until nothing can move any more, or the deadline; `failed` grows with names left out."""
        outcome = WaitOutcome()
        refresh_failures = 0
        self.progress.update(self._scoped())
        while True:
            remaining = None if self.deadline is None else self.deadline - self.clock()
            if remaining is not None and remaining <= 0:
                outcome.timed_out = True
                outcome.running = [j for j in self._scoped() if moving(j) and j.name not in failed]
                return outcome
            self.sleep(self.poll if remaining is None else min(self.poll, remaining))
            try:
                plan = self.plan_next()
            except AuthError:
                raise  # the run cannot authenticate: it ends
            except RemoteError as err:  # one bad poll must not abandon jobs that are running fine
                refresh_failures += 1
                if refresh_failures >= MAX_REFRESH_FAILURES:
                    raise
                self.progress.say(f"could not refresh ({err}); trying again")
                continue
            refresh_failures = 0
            self.progress.update(self._scoped())
            for change in plan.changes:
                if change.action is Action.CONFLICT:
                    outcome.conflicts.append(change)
                    failed.add(change.name)
                elif change.action is Action.BLOCKED and change.name not in failed:
                    outcome.blocked.append(change)  # a dependency failed while we waited: a person must act
                    failed.add(change.name)
            todo = [c for c in plan.actionable if c.name not in failed]
            if todo:
                results = self.execute(todo)
                outcome.results.extend(results)
                failed.update(r.name for r in results if r.failed)
                continue
            waits = [c for c in plan.changes if c.action == "wait" and c.name not in failed]
            everything = [j for j in self.jobs() if moving(j) and j.name not in failed]
            mine = [j for j in everything if self.in_scope(j.name)]
            # A wait may hang on any running job (a dependency or a slot outside the filters).
            if not mine and not (waits and everything):
                outcome.stuck = waits
                return outcome

    def _scoped(self) -> list[JobRecord]:
        return [j for j in self.jobs() if self.in_scope(j.name)]


def _rows(job: JobRecord) -> str:
    if job.processed is None:
        return ""
    return f" ({job.processed}/{job.total} rows)" if job.total is not None else f" ({job.processed} rows)"
