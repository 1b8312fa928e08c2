"""`reconciler apply [PLANFILE]`: compute (or load) the plan, confirm, execute it exactly once, optionally wait.

The run holds the ledger lock for its whole length (DESIGN §5). A saved plan is checked against the
ledger and the specs before anything else and executed as it is; a computed plan is preceded by
in-doubt recovery and a refresh. Nothing remote is changed before the confirmation: `--auto-approve`,
or "yes" typed on a terminal; without a terminal and without the flag apply refuses.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from dataclasses import replace
from datetime import datetime, timezone
from typing import TextIO

from reconciler.commands._common import count, user_path
from reconciler.engine.answers import Result
from reconciler.engine.applier import Applier
from reconciler.engine.data import SentFiles
from reconciler.engine.environments import same_environment
from reconciler.engine.journal import LedgerJournal, crash_point
from reconciler.engine.recovery import recover_in_doubt
from reconciler.engine.plan import Plan, PlanOptions
from reconciler.engine.planfile import check_fresh, check_same_changes, read_plan_file, to_document
from reconciler.engine.planning import check_filters, compute_plan, replan_saved
from reconciler.engine.rules import selected
from reconciler.engine.run import Session
from reconciler.engine.waiter import (
    Progress,
    Waiter,
    WaitOutcome,
    longest_poll,
    moving,
    poll_seconds,
    quota_spacing,
    waiting,
)
from reconciler.errors import (
    ApplyFailed,
    AuthError,
    ConflictError,
    ExitCode,
    ReconcilerError,
    RemoteError,
    UsageError,
)
from reconciler.model import (
    COMPLETED,
    JOB_FAILED,
    MASS_ACTION,
    Action,
    Outcome,
    Phase,
    latest_by_name,
)
from reconciler.views import conflicts_named, describe, render_text
from reconciler.zuora.auth import credentials_for

PROMPT = "Apply these changes? Only 'yes' is accepted: "


def apply(settings, out, *, plan_file=None, auto_approve=False, wait=False, timeout=None, parallelism=None,
          lock_timeout=0.0, color=False, answers: TextIO | None = None, targets=(), excludes=(),
          selectors=(), reruns=(), clock=time.monotonic, sleep=time.sleep) -> int:
    """Converge Zuora on the specs: exit 0 when every change succeeded, 1 on refusal, conflict or failure.

    The confirmation is read from `answers` (the terminal's stdin in the CLI); without it and without
    `auto_approve`, apply refuses. `clock` and `sleep` pace --wait's polls and heartbeats (a test moves
    the clock); the client's deadline for --timeout is always on the real one.
    """
    if timeout is not None and (not wait or timeout <= 0):
        raise UsageError("--timeout SECONDS limits --wait: pass --wait too, with a timeout above 0")
    if parallelism is not None:
        settings = replace(settings, parallelism=parallelism)
    crash = crash_point()
    saved = digest = None
    if plan_file:
        if targets or excludes or selectors or reruns:
            raise UsageError("a saved plan is applied exactly as it was made: give --target, --exclude, --selector "
                             "and --rerun to `reconciler plan --out FILE` instead")
        saved = read_plan_file(user_path(settings, plan_file))
        digest = hashlib.sha256(json.dumps(to_document(saved), sort_keys=True).encode()).hexdigest()
    from reconciler.spec.load import load_desired

    desired = load_desired(settings)  # invalid specs stop here, before the ledger is touched
    check_filters(settings, desired, targets=targets, excludes=excludes, selectors=selectors, reruns=reruns)
    credentials_for(settings, settings.credentials)  # so does a real Zuora without credentials
    session = Session(settings, command="apply", lock_timeout=lock_timeout, plan_digest=digest)
    run = None
    try:
        run = _Run(settings, out, session, desired, saved=saved, crash=crash, auto_approve=auto_approve, wait=wait,
                   timeout=timeout, color=color, answers=answers,
                   filters=dict(targets=tuple(targets), excludes=tuple(excludes), selectors=tuple(selectors)),
                   reruns=set(reruns), pace=(clock, sleep))
        return run.go()
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (errors.Terminated)
        if run is not None:
            run.outcome = "interrupted"
            run.report_stopped()
        raise
    finally:
        session.close(run.outcome if run is not None else "error")


class _Run:
    """One apply: the plan, the confirmation, the passes and the summary."""

    def __init__(self, settings, out, session, desired, *, saved, crash, auto_approve, wait, timeout, color,
                 answers, filters, reruns, pace):
        self.settings, self.out, self.session, self.desired = settings, out, session, desired
        self.clock, self.sleep = pace
        self.saved, self.auto_approve, self.wait, self.timeout = saved, auto_approve, wait, timeout
        self.color, self.answers, self.filters, self.reruns = color, answers, filters, reruns
        self.outcome = "error"
        self.deadline: float | None = None
        self.failed: set[str] = set()
        self.blocked: list = []  # changes held by a failed or stopped dependency
        self.progress = Progress(out, tty=bool(getattr(out, "isatty", lambda: False)()), clock=self.clock)
        self.journal = LedgerJournal(session, crash=crash)
        self.applier = Applier(session.client, self.journal, root=settings.root,
                               lineage=session.ledger.lineage, parallelism=settings.parallelism,
                               outbox=SentFiles(settings, session.ledger, desired, session.blobs),
                               sleep=self.sleep)  # confirming a stop waits on the same clock as --wait
        options = PlanOptions.from_cli(**filters, now=datetime.now(timezone.utc))
        specs = desired.by_name()
        scope = {c.name for c in saved.changes} if saved is not None else None
        self.in_scope = ((lambda name: name in scope) if scope is not None
                         else (lambda name: selected(name, specs.get(name), options)))

    def go(self) -> int:
        """Plan, confirm, execute, wait; the exit code."""
        # --timeout bounds the whole run, every remote call included (the client sends nothing, and waits for
        # nothing, past it); only the time a person takes to answer the confirmation is not counted.
        self.deadline = time.monotonic() + self.timeout if self.timeout else None
        if self.deadline is not None:
            self.session.client.set_deadline(self.deadline)
        plan = self._first_plan()
        render_text(plan, self.out, color=self.color)
        if plan.has_conflicts:
            self.outcome = "conflict"
            raise ConflictError(_conflicts(plan))
        todo = plan.actionable
        waits = [c for c in plan.changes if c.action is Action.WAIT]
        self.blocked = list(plan.blocked)
        self.failed.update(c.name for c in self.blocked)  # never submitted by a later pass of --wait
        running = self.wait and any(moving(j) and self.in_scope(j.name) for j in self.session.ledger.live_jobs())
        if not todo and not (self.wait and (waits or running)):
            if waits:
                self.out.write(f"Nothing to apply now: {count(len(waits), 'change')} waiting (see above); "
                               "run apply again later, or with --wait.\n")
            if self.blocked:
                self.outcome = "blocked"
                raise ApplyFailed(_blocked(self.blocked))
            self.outcome = "no-changes"
            return ExitCode.OK
        if (todo or waits) and not self._confirmed():
            self.out.write("Apply cancelled.\n")
            self.outcome = "cancelled"
            return ExitCode.ERROR
        results = self._execute(todo) if todo else []
        waited = self._wait(self.deadline) if self.wait else None
        return self._finish(results, waited)

    def _first_plan(self) -> Plan:
        if self.saved is not None:
            ledger = self.session.ledger
            self.outcome = "stale"
            here = self.settings.environment  # a plan made under another spelling of it is still this one's
            check_fresh(self.saved, lineage=ledger.lineage, serial=ledger.serial, spec_digest=self.desired.digest,
                        environment=self.saved.environment if same_environment(self.saved.environment, here) else here)
            self._authenticate()  # after the freshness check: its remote_call event moves the serial
            if self.saved.changes:
                check_same_changes(self.saved, replan_saved(self.settings, ledger, self.desired, self.saved))
            self.outcome = "error"
            return self.saved
        self._authenticate()
        try:
            for line in recover_in_doubt(self.session):
                self.out.write(line + "\n")
        except AuthError:
            raise
        except RemoteError as err:
            self.out.write(f"could not look for in-doubt submissions ({err}); the plan shows them as conflicts\n")
        return self._plan()

    def _authenticate(self) -> None:
        """Before any intent is written: refused credentials end the run here, with one message (AuthError)."""
        self.session.client.authenticate()

    def _plan(self, refresh_only: set[str] | None = None) -> Plan:
        targets = self.filters["targets"]
        if self.saved is not None:
            targets = tuple(sorted({c.name for c in self.saved.changes}))
        return compute_plan(self.settings, session=self.session, refresh=True, targets=targets,
                            excludes=tuple(sorted(set(self.filters["excludes"]) | self.failed)),
                            selectors=self.filters["selectors"], reruns=tuple(sorted(self.reruns)),
                            desired=self.desired, refresh_only=refresh_only)

    def report_stopped(self) -> None:
        """On Ctrl-C or SIGTERM: what this run submitted, what stays unconfirmed, what keeps running in Zuora."""
        self.progress.clear()
        try:
            jobs = self.session.ledger.jobs_matching(ids=self.journal.jobs) if self.journal.jobs else []
            jobs.sort(key=lambda j: (j.name, j.generation))  # by name: parallel submissions take ids in any order
        except ReconcilerError as err:
            self.out.write(f"\nStopped; could not read what this run submitted ({err}): `reconciler status` shows it.\n")
            return
        sent = [j for j in jobs if j.remote_id]
        unconfirmed = [j for j in jobs if j.phase == Phase.INTENT]
        running = [j for j in sent if waiting(j)]
        names = ", ".join(j.name for j in sent) or "none"
        self.out.write(f"\nStopped: {count(len(sent), 'job')} submitted by this run ({names}).\n")
        for job in unconfirmed:
            self.out.write(f"  {job.name}: submission unconfirmed; the next apply resumes it with the same "
                           "Idempotency-Key\n")
        if running:
            self.out.write("Still running in Zuora: " + ", ".join(f"{j.name} ({j.remote_status or j.phase})"
                                                             for j in running)
                           + "; `reconciler status --wait` follows them.\n")
        else:
            self.out.write("Nothing this run submitted is still running in Zuora.\n")
        self.out.flush()

    def _confirmed(self) -> bool:
        if self.auto_approve:
            return True
        if self.answers is None:
            self.outcome = "refused"
            raise UsageError("apply needs a confirmation and there is no terminal to ask on; nothing was changed. "
                             "Review the plan above, then run again with --auto-approve (as CI does)")
        self.out.write("\n" + PROMPT)
        self.out.flush()
        asked = time.monotonic()
        answer = self.answers.readline().strip()
        if self.deadline is not None:  # the person's time is not the run's
            self.deadline += time.monotonic() - asked
            self.session.client.set_deadline(self.deadline)
        return answer == "yes"

    def _execute(self, changes) -> list[Result]:
        self._check_lock()
        self.progress.say(f"Applying {count(len(changes), 'change')} (parallelism {self.settings.parallelism}):")
        results = self.applier.run(changes)
        for result in results:
            self.progress.say(_line(result))
        self._check_lock()
        self.reruns -= {r.name for r in results}  # a rerun is honoured once per apply
        self.failed.update(r.name for r in results if r.failed or r.outcome is Outcome.DEFERRED)
        if self.wait:
            self.progress.follow.update(r.remote_id for r in results if r.remote_id)
            self.progress.update([j for j in self._followed_jobs() if self.in_scope(j.name)])
        return results

    def _check_lock(self) -> None:
        """End the run (exit 1, naming the new holder) once it knows another run took its lock over."""
        if self.session.lock_lost is not None:
            self.outcome = "lock-lost"
            self.session.check_lock()

    def _followed_jobs(self):
        """The jobs --wait shows and waits on: every live one (all that may still move) and those it follows.

        Progress skips any other job, so this reads what reading every job ever recorded would give it.
        """
        return self.session.ledger.jobs_matching(live=True, ids=self.progress.jobs, remote_ids=self.progress.follow)

    def _next_plan(self, due: set[str]) -> Plan:
        self._check_lock()
        return self._plan(refresh_only=due)

    def _wait(self, deadline: float | None) -> WaitOutcome:
        if self.saved is not None and not self.saved.changes:
            return WaitOutcome()
        waiter = Waiter(plan_next=self._next_plan, execute=self._execute, jobs=self._followed_jobs,
                        in_scope=self.in_scope, progress=self.progress,
                        deadline=None if deadline is None else self.clock() + deadline - time.monotonic(),
                        poll=poll_seconds(self.settings), longest=longest_poll(self.settings), sleep=self.sleep,
                        clock=self.clock, spacing=quota_spacing(self.session.client))
        try:
            return waiter.run(self.failed)
        finally:
            self.progress.clear()

    def _finish(self, results: list[Result], waited: WaitOutcome | None) -> int:
        self.progress.clear()
        results = results + (waited.results if waited else [])
        outcomes = Counter(r.outcome for r in results)
        failed = [r for r in results if r.failed]
        deferred = [r for r in results if r.outcome is Outcome.DEFERRED]
        moves = ", ".join(f"{outcomes[o]} {o}" for o in Outcome
                          if o is not Outcome.FAILED and (o is not Outcome.DEFERRED or deferred))
        self.out.write(f"\nApply complete: {moves}; {len(failed)} failed.\n")
        for result in failed:
            self.out.write(f"  ! {result.name}: {result.error}\n      {result.hint}\n")
        for result in deferred:
            self.out.write(f"  … {result.name}: {result.error}\n      {result.hint}\n")
        head = self.session.ledger.head()
        self.out.write(f"Audit head: {head} (give it to `reconciler audit verify --head` later to prove this history "
                       "was kept)\n")
        problems = [f"{count(len(failed), 'change')} failed"] if failed else []
        if waited is not None:
            problems += self._report_wait(waited)
            if deferred:  # --wait was asked to see them through; without it they are waits, as in a plan
                problems.append(f"{count(len(deferred), 'change')} found no free custom object job slot")
            self.blocked += waited.blocked
        if self.blocked:
            problems.append(_blocked(self.blocked))
        if waited is not None and waited.timed_out:
            self.outcome = "timeout"
            running = ", ".join(f"{j.name} ({j.remote_status})" for j in waited.running) or "none"
            raise ApplyFailed(f"timed out after {self.timeout:g} s; jobs still running: {running}. They keep running "
                              "in Zuora: `reconciler status --refresh` follows them, and the next apply picks up "
                              "from there")
        if problems:
            self.outcome = "failed"
            raise ApplyFailed("; ".join(problems) + " (see above)")
        self.outcome = "applied"
        return ExitCode.OK

    def _report_wait(self, waited: WaitOutcome) -> list[str]:
        """Print how the followed jobs ended, conflicts and stuck waits; the problems among them."""
        problems = []
        latest = latest_by_name(self.session.ledger.jobs_matching(ids=self.progress.jobs))
        # Mass Updater says `Completed`, custom objects `completed`: one word, one count
        ended = Counter((j.remote_status or j.phase).lower() for j in latest.values() if not moving(j))
        if ended:
            self.out.write("Jobs: " + ", ".join(f"{n} {status}" for status, n in sorted(ended.items())) + ".\n")
        for job in latest.values():
            if job.remote_status in JOB_FAILED:
                reason = job.detail.get("error") or "see `reconciler show " + job.name + "`"
                self.out.write(f"  ! {job.name}: job {job.remote_id} ended {job.remote_status}: {reason}\n")
            elif job.remote_status in COMPLETED and job.failed:
                what = count(job.failed, "failed row" if job.kind == MASS_ACTION else "failed record")
                self.out.write(f"  {job.name}: completed with {what}; "
                               f"`reconciler errors {job.name}` lists them\n")
        failed_jobs = [j for j in latest.values() if j.remote_status in JOB_FAILED]
        if failed_jobs:
            problems.append(f"{count(len(failed_jobs), 'job')} failed in Zuora")
        for change in waited.conflicts:
            self.out.write(f"  ! {change.name}: conflict: {describe(change)}\n")
        for change in waited.blocked:
            self.out.write(f"  ⊘ {change.name}: blocked: {describe(change)}\n")
        if waited.conflicts:
            problems.append(f"{count(len(waited.conflicts), 'conflict')} appeared")
        for change in waited.stuck:
            self.out.write(f"  … {change.name}: {change.reason}\n")
        if waited.stuck:
            problems.append(f"{count(len(waited.stuck), 'change')} can no longer proceed")
        return problems


def _line(result: Result) -> str:
    if result.failed:
        return f"  ! {result.name}: {result.action} failed: {result.error}"
    if result.outcome is Outcome.DEFERRED:
        return f"  … {result.name}: {result.action} deferred: {result.error}"
    where = f" {result.remote_id}" if result.remote_id else ""
    status = f" ({result.status})" if result.status else ""
    return f"  {result.outcome.symbol} {result.name}: {result.outcome}{where}{status}"


def _blocked(changes) -> str:
    shown = "; ".join(f"{c.name}: {c.resolve or c.reason}" for c in changes[:5])
    more = f"; and {len(changes) - 5} more" if len(changes) > 5 else ""
    return (f"{count(len(changes), 'change')} blocked by a dependency that failed or was stopped, not submitted "
            f"— {shown}{more}")


def _conflicts(plan: Plan) -> str:
    found = [c for c in plan.changes if c.action is Action.CONFLICT]
    return (f"apply refuses to run: the plan has {count(len(found), 'conflict')} a person must resolve — "
            f"{conflicts_named(plan)}. Resolve them, or leave them out with --exclude NAME")
