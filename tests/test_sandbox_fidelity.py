"""Where the sandbox was kinder than Zuora, over loopback HTTP: a `Stopping` that lasts (serve
--stopping-seconds) and reconciler's handling of a stop whose first poll says so, and a response file
that keeps the uploaded bytes' form (line endings, quoting, BOM) with the result columns appended, read
back right by reconciler's result readers. Every wait passes on the sandbox's fake clock."""

from __future__ import annotations

import io
import zipfile

import httpx
import pytest

from apply_support import CREDENTIALS, ledger_jobs, make_repo, served_sandbox
from reconciler.commands.apply import apply
from reconciler.commands.status import status
from reconciler.engine.config import load_settings
from reconciler.model import Phase
from reconciler.sandbox import make_app
from test_sandbox_helpers import FakeClock, wsgi_client


def _token(url: str) -> str:
    form = {"client_id": CREDENTIALS["ZUORA_CLIENT_ID"], "client_secret": CREDENTIALS["ZUORA_CLIENT_SECRET"],
            "grant_type": "client_credentials"}
    return httpx.post(f"{url}/oauth/token", data=form).json()["access_token"]


# --- Stopping lasts long enough to observe -------------------------------------------------------------------


def test_stopping_lasts_the_stopping_seconds_of_the_sandbox_clock():
    clock = FakeClock()
    with served_sandbox(clock, pending_seconds=60, stopping_seconds=30) as url:
        session = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {_token(url)}"})
        csv = b"Revenue Schedule Number\nRS-1\nRS-2\n"
        key = session.post("/v1/bulk", files={"file": ("f.csv", csv)},
                           data={"params": '{"actionType": "DeleteRevenueSchedule"}'}).json()["bulkKey"]
        assert session.put(f"/v1/bulk/{key}/stop").json() == {"success": True}
        seen = []
        for step in (0, 10, 19.9, 0.2):
            clock.advance(step)
            seen.append(session.get(f"/v1/bulk/{key}").json()["status"])
        assert seen == ["Stopping", "Stopping", "Stopping", "Stopped"]
        assert session.put(f"/v1/bulk/{key}/stop").status_code == 400  # only Pending or Processing stop
    with pytest.raises(ValueError, match="stopping_seconds"):
        make_app(stopping_seconds=-1)


def test_the_default_stopping_is_one_rows_time_as_before():
    app = make_app(clock=FakeClock(), pending_seconds=0, rows_per_second=10)
    client = wsgi_client(app)
    key = client.post("/v1/bulk", files={"file": ("f.csv", b"Revenue Schedule Number\n" + b"RS-1\n" * 50)},
                      data={"params": '{"actionType": "DeleteRevenueSchedule"}'}).json()["bulkKey"]
    client.put(f"/v1/bulk/{key}/stop")
    assert client.get(f"/v1/bulk/{key}").json()["status"] == "Stopping"
    app.clock.advance(0.1)
    assert client.get(f"/v1/bulk/{key}").json()["status"] == "Stopped"


def test_reconciler_takes_a_stop_whose_first_polls_say_stopping_then_retires_it_once_stopped(tmp_path, monkeypatch):
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    clock = FakeClock()
    with served_sandbox(clock, pending_seconds=600, stopping_seconds=30) as url:
        repo = make_repo(tmp_path / "repo", url, mass=("fx-a",), create=(), delete=())
        settings = load_settings(chdir=str(repo))
        assert apply(settings, io.StringIO(), auto_approve=True, sleep=clock.advance) == 0
        (repo / "specs" / "fx-a.yaml").unlink()  # the spec goes: its Pending job is stopped
        out = io.StringIO()
        assert apply(settings, out, auto_approve=True, sleep=clock.advance) == 0, out.getvalue()
        assert "1 stopped" in out.getvalue()
        [job] = ledger_jobs(repo)
        assert job.remote_status == "Stopping" and job.phase != Phase.RETIRED  # confirmed, not yet ended
        listing = io.StringIO()
        status(settings, listing, names=("fx-a",), refresh=True)
        assert "Stopping" in listing.getvalue()
        # --wait follows it on the same clock until Stopped, then the plan retires it
        out = io.StringIO()
        code = apply(settings, out, auto_approve=True, wait=True, timeout=600, sleep=clock.advance,
                     clock=lambda: clock.now)
        assert code == 0, out.getvalue()
        [job] = ledger_jobs(repo)
        assert job.remote_status == "Stopped" and job.phase == Phase.RETIRED, out.getvalue()
