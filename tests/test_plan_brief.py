"""A plan read from latest jobs only (where `judged_by_latest` allows) is the plan every job gives.

Random histories are written through the ledger's own API on both stores (intents, rejections,
running and finished jobs, archived and unarchived results, retirements, custom object jobs that may
hold a slot), then planned against random specs, reruns and observations twice: from every job of
every name, and the way `compute_plan` reads (`Ledger.recorded_state(names, brief)`).
"""

from __future__ import annotations

import random
from collections import Counter
from datetime import datetime, timezone

import pytest

from reconciler.engine.plan import PlanOptions
from reconciler.engine.planner import judged_by_latest, make_plan
from reconciler.ledger.rows import Actor
from reconciler.model import (
    CUSTOM_OBJECT_JOB,
    MASS_ACTION,
    REJECTED,
    DesiredState,
    Observation,
    ObservedState,
)
from test_planner import fingerprint, spec

ALICE = Actor("alice", "host-a", 1)
STEPS = ("intent", "rejected", "running", "done", "unarchived", "failed", "retired")
EARLIER = ("done",) * 6 + STEPS  # most earlier jobs ended and had their result archived; some did not


def _history(led, run: int, rng: random.Random, name: str, kind: str) -> tuple[int, int]:
    """A few jobs of one name, oldest first; returns the (revision, edit) of its latest."""
    revision = edit = 1
    count = rng.randint(1, 4)
    for n in range(count):
        revision = max(1, revision + rng.choice((0, 0, 1, -1)))
        edit = rng.randint(0, 1)
        generation = led.next_generation(name)
        job = led.add_intent(run_id=run, name=name, kind=kind, generation=generation,
                             fingerprint=fingerprint(name, revision, edit), fingerprint_version=1, revision=revision,
                             idempotency_key=f"{name}-{generation}", detail={"file": f"data/{name}.csv"})
        step = rng.choice(STEPS if n == count - 1 else EARLIER)
        if step == "intent":
            continue
        if step == "rejected":
            led.record_rejected(job.id, error="HTTP 400: bad file", event={"run_id": run})
            continue
        remote = f"{name}-{generation}"
        led.record_submitted(job.id, remote_id=remote, status="Pending" if kind == MASS_ACTION else "pending",
                             phase="active", event={"run_id": run})
        if step == "running":
            continue
        status = {"failed": "Failed"}.get(step, "Completed" if kind == MASS_ACTION else "completed")
        url = None if step == "failed" else f"https://x/v1/files/{remote}"
        led.record_observation(job.id, Observation(remote, kind, status, output_url=url), run_id=run, source="test")
        if step in ("done", "retired"):
            led.record_result(job.id, path=f"results/{remote}.csv", sha256="0" * 64, run_id=run)
        if step == "retired":
            led.record_retired(job.id, run_id=run, reason="spec removed", actor=ALICE)
    return revision, edit


@pytest.mark.parametrize("seed", range(4))
def test_the_brief_read_plans_exactly_what_every_job_plans(opener, seed):
    rng = random.Random(seed)
    specs, observed = [], []
    with opener() as led:
        run = led.start_run("apply", ALICE)
        for i in range(40):
            name, kind = f"s{i:02}", rng.choice((MASS_ACTION, CUSTOM_OBJECT_JOB))
            revision, edit = _history(led, run, rng, name, kind)
            if rng.random() < 0.85:  # most names still have a spec: as it ran, edited, bumped or lowered
                revision = max(1, revision + rng.choice((0, 0, 0, 1, -1)))
                specs.append(spec(name, kind, revision=revision, edit=edit if rng.random() < 0.7 else 1 - edit))
        for job in led.live_jobs():
            if job.remote_id and rng.random() < 0.5:  # what a refresh may have found
                observed.append(Observation(job.remote_id, job.kind, rng.choice(("Processing", "Completed", "Failed",
                                                                                "in_progress", "completed"))))
        led.finish_run(run, "ok")
    desired = DesiredState(tuple(specs), "d" * 64)
    names = {s.name for s in specs}
    reruns = rng.sample(sorted(names), 3)
    options = PlanOptions.from_cli(now=datetime.now(timezone.utc), reruns=reruns, custom_object_slots=3)
    tips = []

    def brief(tip):
        tips.append(tip)
        return judged_by_latest(desired.by_name().get(tip.latest.name), tip, options)

    with opener(write=False) as led:
        everything, short = led.recorded_state(), led.recorded_state(names, brief)
        live = Counter(j.name for j in led.live_jobs())
    assert any(len(r.jobs) < len(everything.by_name()[r.name].jobs) for r in short.records)  # it did leave jobs out
    for tip in tips:  # what the tip says of a name's jobs is true
        jobs = everything.by_name()[tip.latest.name].jobs
        assert tip.latest == jobs[-1]
        assert tip.live_jobs == live[tip.latest.name]
        assert tip.top_revision == max((j.revision for j in jobs if j.remote_status != REJECTED), default=None)
    plans = [make_plan(desired, state, ObservedState(tuple(observed)), options, environment="local",
                       reconciler_version="test") for state in (everything, short)]
    assert plans[0] == plans[1]
    recorded, read = everything.by_name(), short.by_name()
    for change in plans[1].changes:  # engine.data reads a change's earlier results from all of its jobs
        assert read.get(change.name) == recorded.get(change.name)
    assert plans[0].changes  # the histories gave the planner something to do
