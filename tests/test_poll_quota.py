"""`--wait` polls spend a bounded share (10 %) of the tenant's rate limit, as the RateLimit-* headers report it.

The spacing is pinned from a real sandbox's headers; the schedule on a clock the test moves; and over
loopback HTTP, `status --wait` and `apply --wait` on an API Sandbox tenant whose day is nearly spent keep
their polls within a tenth of what the day has left (the sandbox's own counts say so), every wait passing
on the sandbox's fake clock.
"""

from __future__ import annotations

import io
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from apply_support import CREDENTIALS, make_repo, served_sandbox
from reconciler.commands.apply import apply
from reconciler.commands.status import status
from reconciler.engine.config import load_settings
from reconciler.engine.waiter import POLL_QUOTA_SHARE, PollSchedule
from reconciler.errors import ReconcilerError
from reconciler.model import JobRecord, Phase
from reconciler.sandbox import make_app
from reconciler.zuora.retry import Pacer
from test_sandbox_helpers import FakeClock, wsgi_client

NOON = 1_700_000_000 - 40_000  # 12:53:20 UTC: the sandbox's day ends in 40,000 + 6,400 s


def spacing_after(tenant_type: str, used: dict | None = None) -> tuple[float, httpx.Headers]:
    """The client's spacing for a 10 % share after one answer of a sandbox of this tenant type."""
    clock = FakeClock(NOON)
    client = wsgi_client(make_app(clock=clock, tenant_type=tenant_type))
    if used:
        client.post("/_sandbox/rate", json={"api": used})
    headers = client.get("/objects/jobs").headers
    pacer = Pacer(clock=clock)
    pacer.observe(headers)
    return pacer.spacing(POLL_QUOTA_SHARE), headers


def test_an_api_sandbox_day_allows_a_poll_every_86_4_seconds_1000_a_day():
    spacing, headers = spacing_after("apisandbox")
    assert headers["RateLimit-Limit"] == "2500, 2500;w=60, 5000;w=3600, 10000;w=86400"
    assert spacing == pytest.approx(86.4)  # 86,400 s / (10 % of 10,000)
    assert spacing_after("developer-sandbox")[0] == pytest.approx(17.28)  # 10 % of 50,000 a day
    assert spacing_after("production")[0] == pytest.approx(86_400 / 2_700_000)  # 0.032 s: the back-off rules


def test_a_nearly_spent_window_stretches_the_spacing_to_a_tenth_of_what_it_has_left():
    spacing, headers = spacing_after("apisandbox", {"day": 9_000})
    assert headers["RateLimit-Remaining"] == "999" and int(headers["RateLimit-Reset"]) == 46_400
    assert spacing == pytest.approx(86_400 / 99.9)  # about 865 s: ~100 polls spread over a whole day
    spent, _ = spacing_after("apisandbox", {"day": 10_000})  # nothing left: no poll until the day resets
    assert spent == pytest.approx(46_400, abs=1)
    pacer = Pacer()
    assert pacer.spacing(POLL_QUOTA_SHARE) == 0.0  # nothing known yet: the back-off alone
    pacer.observe({"RateLimit-Remaining": "many", "RateLimit-Reset": "x"})
    assert pacer.spacing(POLL_QUOTA_SHARE) == 0.0


def _job(job_id: int) -> JobRecord:
    now = datetime.now(timezone.utc)
    return JobRecord(id=job_id, name=f"fx-{job_id}", kind="MassAction", generation=1, fingerprint="f",
                     fingerprint_version=1, revision=1, idempotency_key=f"k{job_id}", phase=Phase.ACTIVE,
                     created_at=now - timedelta(seconds=5), updated_at=now, remote_id=f"B-{job_id}",
                     remote_status="Pending")


@pytest.mark.parametrize("jobs", [1, 3])
def test_the_schedule_polls_each_of_n_jobs_at_most_every_n_spacings(jobs):
    clock = [0.0]
    schedule = PollSchedule(1.0, 30.0, clock=lambda: clock[0], spacing=lambda: 86.4)
    followed = [_job(i) for i in range(jobs)]
    schedule.update(followed)
    polls = 0
    while clock[0] < 86_400:
        clock[0] += schedule.delay()
        due = schedule.due()
        polls += len(due)
        schedule.update(followed, polled=due)
    assert schedule.delay() == pytest.approx(86.4 * jobs)  # the back-off's 1 s .. 30 s, stretched
    assert polls <= 1_000 + jobs  # 10 % of the day's 10,000, whatever the number of jobs


def test_status_and_apply_wait_keep_their_polls_within_a_tenth_of_what_the_day_has_left(tmp_path, monkeypatch):
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    clock = FakeClock(NOON)
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:  # a wait passes on the sandbox's clock; a runaway loop fails fast
        sleeps.append(seconds)
        assert len(sleeps) < 200, "polling is not bounded by the rate limit"
        clock.advance(seconds)

    with served_sandbox(clock, pending_seconds=86_400, tenant_type="apisandbox") as url:
        repo = make_repo(tmp_path / "repo", url, mass=("fx-a",), create=(), delete=())
        settings = load_settings(chdir=str(repo))
        assert apply(settings, io.StringIO(), auto_approve=True) == 0  # a job that stays Pending all day
        for command in ("status", "apply"):
            used = httpx.post(f"{url}/_sandbox/rate", json={"api": {"day": 9_000}}).json()["api"]["used"]["day"]
            sleeps.clear()
            with pytest.raises(ReconcilerError, match="timed out after 3000"):  # the job is still Pending
                if command == "status":
                    status(settings, io.StringIO(), names=("fx-a",), wait=True, timeout=3_000, sleep=sleep,
                           clock=lambda: clock.now)
                else:
                    apply(settings, io.StringIO(), auto_approve=True, wait=True, timeout=3_000, sleep=sleep,
                          clock=lambda: clock.now)
            spent = httpx.get(f"{url}/_sandbox/rate").json()["api"]["used"]["day"] - used
            assert 2 <= spent <= 0.1 * (10_000 - used), (command, spent, sleeps)
            # Spread over the day, not spent at once: one poll about every 865 s of the 3,000 (a sandbox's 0.25 s
            # interval, stretched), the first at once, and a call or two of the session's own.
            assert spent <= 3_000 / 865 + 4, (command, spent, sleeps)

