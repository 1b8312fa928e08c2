"""`apply --wait`: poll, plan again, carry out what became actionable, and show progress until every job ends.

Each pass refreshes the jobs due for a poll (which records status changes and archives the results of
finished jobs), plans again and executes the changes that became actionable, typically dependents
whose dependencies just completed. On Zuora each job is polled 1 s after it was submitted or moved,
then at doubling intervals up to 30 s, and never much later than its rows should be done (PollSchedule);
a sandbox is polled every 0.25 s. Polls spend at most POLL_QUOTA_SHARE (10 %) of the tenant's rate limit,
as the client reads it from the RateLimit-* headers: with N jobs moving, each job's interval is at
least N times the client's `spacing(0.10)` (an API Sandbox's 10,000 a day: 86.4 s for one job, so at most
1,000 polls a day). A line saying what is still running is printed at least every
60 s, so a CI log never looks hung. The loop ends when nothing is actionable and no job that could still move is running;
waits left then can never resolve (a failed dependency) and are reported. Names whose change failed
or turned into a conflict are left out of later passes: they need a person.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Iterable, Sequence, TextIO

from reconciler.engine.answers import Result
from reconciler.engine.plan import Change, Plan
from reconciler.errors import AuthError, RemoteError
from reconciler.model import Action, JobRecord, Outcome, Phase
from reconciler.zuora.wire import is_sandbox

POLL_SANDBOX_SECONDS = 0.25  # the sandbox moves in milliseconds
POLL_ZUORA_SECONDS = 1.0  # a job's first poll on Zuora, and the first after it moved
POLL_ZUORA_LONGEST = 30.0  # Zuora's jobs take seconds to hours; polling faster only spends rate limit
POLL_QUOTA_SHARE = 0.10  # the most of any rate-limit window (minute, hour, day) polling may spend
HEARTBEAT_SECONDS = 60.0  # the longest a wait stays silent
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
    """How soon `--wait` (apply's and status's) polls a job first: fast on a sandbox, gently on Zuora."""
    return POLL_SANDBOX_SECONDS if is_sandbox(settings) else POLL_ZUORA_SECONDS


def longest_poll(settings) -> float:
    """The most `--wait` lets pass between two polls of one job (a sandbox: no backing off)."""
    return POLL_SANDBOX_SECONDS if is_sandbox(settings) else POLL_ZUORA_LONGEST


def quota_spacing(client) -> Callable[[], float]:
    """Seconds between polls for them to spend at most POLL_QUOTA_SHARE of the tenant's rate limit."""
    return lambda: client.spacing(POLL_QUOTA_SHARE)


def stretched(interval: float, spacing: float, polled: int) -> float:
    """`interval`, made long enough that `polled` jobs polled once each keep `spacing` seconds apart on average."""
    return max(interval, spacing * polled)


@dataclass
class _Pace:
    seen: tuple  # (status, processed) at the last poll
    interval: float
    due: float


class PollSchedule:
    """When each moving job is polled next: `first` seconds after it appeared or moved, then doubling up to
    `longest`, and never later than its remaining rows should take at the rate seen so far; but always at
    least `spacing()` x the number of moving jobs, so the polls keep inside their share of the rate limit."""

    def __init__(self, first: float, longest: float, *, clock: Callable[[], float] = time.monotonic,
                 now: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
                 spacing: Callable[[], float] = lambda: 0.0):
        self.first, self.longest = first, max(first, longest)
        self.clock, self.now, self.spacing = clock, now, spacing
        self._jobs: dict[int, _Pace] = {}
        self._names: dict[int, str] = {}

    def update(self, jobs: Iterable[JobRecord], polled: Iterable[str] | None = None) -> None:
        """Note the jobs as the ledger holds them now; `polled` names those just refreshed (None: all)."""
        at = self.clock()
        polled = None if polled is None else set(polled)
        current = {}
        jobs = [job for job in jobs if moving(job)]
        spacing = self.spacing() if jobs else 0.0
        for job in jobs:
            seen = (job.remote_status, job.processed)
            pace = self._jobs.get(job.id)
            if pace is None or pace.seen != seen:
                interval = self.first
            elif polled is None or job.name in polled:
                interval = min(pace.interval * 2, self.longest)
            else:  # not polled this pass: its turn stays as it was
                current[job.id] = pace
                continue
            interval = stretched(min(interval, max(self.first, self._time_left(job))), spacing, len(jobs))
            current[job.id] = _Pace(seen, interval, at + interval)
            self._names[job.id] = job.name
        self._jobs = current

    def delay(self) -> float:
        """Seconds until the next job is due (`first` when none is followed)."""
        if not self._jobs:
            return self.first
        return max(0.0, min(p.due for p in self._jobs.values()) - self.clock())

    def due(self) -> set[str]:
        """The names of the jobs due for a poll now."""
        at = self.clock() + 1e-3
        return {self._names[i] for i, p in self._jobs.items() if p.due <= at}

    def _time_left(self, job: JobRecord) -> float:
        """How long the job's remaining rows should take at its rate so far (infinite when unknown)."""
        if not job.total or not job.processed or job.processed >= job.total:
            return float("inf")
        elapsed = (self.now() - job.created_at).total_seconds()
        if elapsed <= 0:
            return float("inf")
        return (job.total - job.processed) * elapsed / job.processed


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
        self._said = clock()  # when the last whole line was printed

    def update(self, jobs: Sequence[JobRecord]) -> None:
        """Follow every job running during this apply or acted on by it; report what moved."""
        for job in jobs:
            before = self.jobs.get(job.id)
            if before is None and not waiting(job) and job.remote_id not in self.follow:
                continue
            if before is not None and before.remote_status != job.remote_status and not self.tty:
                self.out.write(f"{job.name}: {before.remote_status or 'unknown'} -> {job.remote_status}{_rows(job)}\n")
                self._said = self.clock()
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
        self._said = self.clock()

    def heartbeat(self, every: float = HEARTBEAT_SECONDS) -> None:
        """After `every` seconds without a line, say what is still running (on a terminal too)."""
        if self.clock() - self._said < every:
            return
        running = [j for j in self.jobs.values() if waiting(j)]
        jobs = ", ".join(f"{j.name} {j.remote_status or j.phase}{_rows(j)}" for j in running[:5])
        more = f" and {len(running) - 5} more" if len(running) > 5 else ""
        self.say(f"still waiting after {_span(self.clock() - self.started)}: "
                 f"{jobs + more or 'nothing running; planning again'}")

    def clear(self) -> None:
        """Remove the progress line (it is drawn again on the next update)."""
        if self._drawn:
            self.out.write(CLEAR_LINE)
            self._drawn = False


class Waiter:
    """The --wait loop; planning, executing and reading jobs are given as callables."""

    def __init__(self, *, plan_next: Callable[[set[str]], Plan],
                 execute: Callable[[Sequence[Change]], list[Result]], jobs: Callable[[], list[JobRecord]],
                 in_scope: Callable[[str], bool], progress: Progress, poll: float, longest: float | None = None,
                 deadline: float | None, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic, spacing: Callable[[], float] = lambda: 0.0):
        self.plan_next = plan_next  # refreshes the jobs of the names given, then plans
        self.execute = execute
        self.jobs = jobs
        self.in_scope = in_scope
        self.progress = progress
        self.schedule = PollSchedule(poll, poll if longest is None else longest, clock=clock, spacing=spacing)
        self.deadline = deadline
        self.sleep = sleep
        self.clock = clock

    def run(self, failed: set[str]) -> WaitOutcome:
        """Poll until nothing can move any more, or the deadline; `failed` grows with names left out."""
        outcome = WaitOutcome()
        refresh_failures = 0
        self.progress.update(self._scoped())
        self.schedule.update(self.jobs())
        while True:
            remaining = None if self.deadline is None else self.deadline - self.clock()
            if remaining is not None and remaining <= 0:
                outcome.timed_out = True
                outcome.running = [j for j in self._scoped() if moving(j) and j.name not in failed]
                return outcome
            pause = min(self.schedule.delay(), HEARTBEAT_SECONDS)
            self.sleep(pause if remaining is None else min(pause, remaining))
            self.progress.heartbeat()
            due = self.schedule.due()
            if not due and self._anything_moving():
                continue  # woken for the heartbeat or the deadline: nobody's turn yet
            try:
                plan = self.plan_next(due)
            except AuthError:
                raise  # the run cannot authenticate: it ends
            except RemoteError as err:  # one bad poll must not abandon jobs that are running fine
                refresh_failures += 1
                if refresh_failures >= MAX_REFRESH_FAILURES:
                    raise
                self.progress.say(f"could not refresh ({err}); trying again")
                continue
            refresh_failures = 0
            self.schedule.update(self.jobs(), polled=due)
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
                failed.update(r.name for r in results if r.failed or r.outcome is Outcome.DEFERRED)
                self.schedule.update(self.jobs(), polled=())  # the jobs just created get their first poll soon
                continue
            waits = [c for c in plan.changes if c.action == "wait" and c.name not in failed]
            everything = [j for j in self.jobs() if moving(j) and j.name not in failed]
            mine = [j for j in everything if self.in_scope(j.name)]
            # A wait may hang on any running job (a dependency or a slot outside the filters).
            if not mine and not (waits and everything):
                outcome.stuck = waits
                return outcome

    def _anything_moving(self) -> bool:
        return any(moving(j) for j in self.jobs())

    def _scoped(self) -> list[JobRecord]:
        return [j for j in self.jobs() if self.in_scope(j.name)]


def _span(seconds: float) -> str:
    """`45s`, `3m05s`, `1h02m`."""
    total = int(seconds)
    if total < 60:
        return f"{total}s"
    if total < 3600:
        return f"{total // 60}m{total % 60:02d}s"
    return f"{total // 3600}h{total % 3600 // 60:02d}m"


def _rows(job: JobRecord) -> str:
    if job.processed is None:
        return ""
    return f" ({job.processed}/{job.total} rows)" if job.total is not None else f" ({job.processed} rows)"
