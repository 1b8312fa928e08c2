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


# --- The response file keeps the uploaded bytes' form -------------------------------------------------------

# A BOM, CRLF and a bare LF, quoted fields holding a comma, a doubled quote and a line break, an
# informational column, a blank line, and no newline at the end.
UPLOADED = ('\ufeffProvider Exchange Rate Date,Currency (From),Currency (To),Exchange Rate,"#Note, free text"\r\n'
            '2026-01-02,USD,EUR,0.92,"plain, with a comma"\r\n'
            '"2026-01-02",usd,GBP,0.79,"she said ""hi"""\n'
            '\r\n'
            '2026-01-02,USD,"JPY",147.1,"two\r\nlines"\r\n'
            '2026-01-02,USD,CHF,0.88,').encode()
FAILED = "Currency (From) must be a 3-letter currency code such as USD, not 'usd'"
RESPONSE = ('\ufeffProvider Exchange Rate Date,Currency (From),Currency (To),Exchange Rate,"#Note, free text"'
            ',Success,Error Message\r\n'
            '2026-01-02,USD,EUR,0.92,"plain, with a comma",Y,\r\n'
            f'"2026-01-02",usd,GBP,0.79,"she said ""hi""",N,"{FAILED}"\n'
            '\r\n'
            '2026-01-02,USD,"JPY",147.1,"two\r\nlines",Y,\r\n'
            '2026-01-02,USD,CHF,0.88,,Y,').encode()


def response_of(data: bytes, *, zipped_upload: bool = False) -> bytes:
    """The CSV inside the sandbox's response file for an ImportFXRate upload of `data`."""
    app = make_app(clock=FakeClock(), pending_seconds=0)
    client = wsgi_client(app)
    if zipped_upload:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("rates.csv", data)
        data = buffer.getvalue()
    key = client.post("/v1/bulk", files={"file": ("f", data)},
                      data={"params": '{"actionType": "ImportFXRate"}'}).json()["bulkKey"]
    app.clock.advance(60)
    body = client.get(f"/v1/bulk/{key}").json()
    assert body["status"] == "Completed", body
    with zipfile.ZipFile(io.BytesIO(client.get(body["outputURL"].replace("http://sandbox.local", "")).content)) as z:
        [entry] = z.infolist()
        return z.read(entry)


@pytest.mark.parametrize("zipped_upload", [False, True])
def test_the_response_file_is_the_uploaded_file_byte_for_byte_plus_the_result_columns(zipped_upload):
    assert response_of(UPLOADED, zipped_upload=zipped_upload) == RESPONSE


def test_a_short_row_is_padded_and_a_long_one_cut_so_the_result_columns_stay_under_their_names():
    uploaded = b"Revenue Schedule Number,#Note\nRS-1\nRS-2,a,b\n"
    expected = (b"Revenue Schedule Number,#Note,Success,Error Message\n"
                b"RS-1,,N,The row has 1 values but the header has 2 columns\n"
                b"RS-2,a,N,The row has 3 values but the header has 2 columns\n")
    app = make_app(clock=FakeClock(), pending_seconds=0)
    client = wsgi_client(app)
    key = client.post("/v1/bulk", files={"file": ("f", uploaded)},
                      data={"params": '{"actionType": "DeleteRevenueSchedule"}'}).json()["bulkKey"]
    app.clock.advance(60)
    url = client.get(f"/v1/bulk/{key}").json()["outputURL"].replace("http://sandbox.local", "")
    with zipfile.ZipFile(io.BytesIO(client.get(url).content)) as archive:
        assert archive.read(archive.infolist()[0]) == expected


def test_lf_files_stay_lf_and_quoting_stays_as_uploaded():
    uploaded = (b'"Provider Exchange Rate Date","Currency (From)","Currency (To)","Exchange Rate"\n'
                b'"2026-01-02","USD","EUR","0.92"\n')
    assert response_of(uploaded) == (b'"Provider Exchange Rate Date","Currency (From)","Currency (To)",'
                                     b'"Exchange Rate",Success,Error Message\n"2026-01-02","USD","EUR","0.92",Y,\n')


def test_reconcilers_readers_and_errors_failed_rows_read_such_a_file_right(tmp_path, monkeypatch):
    from reconciler.commands.errors import errors
    from reconciler.dataset.results import mass_updater_failures, mass_updater_rows

    archived = tmp_path / "response.csv.zip"
    with zipfile.ZipFile(archived, "w") as archive:
        archive.writestr("r.csv", RESPONSE)
    columns, rows = mass_updater_rows(archived, "ImportFXRate")
    assert columns == ("Provider Exchange Rate Date", "Currency (From)", "Currency (To)", "Exchange Rate",
                       "#Note, free text")
    assert [(values["#Note, free text"], success) for values, success in rows] == [
        ("plain, with a comma", "Y"), ('she said "hi"', "N"), ("two\r\nlines", "Y"), ("", "Y")]
    [failed] = mass_updater_failures(archived, "ImportFXRate").rows
    assert (failed.row, failed.message, failed.values["Currency (From)"]) == (3, FAILED, "usd")

    for name, value in CREDENTIALS.items():  # the same file through apply, the archive and errors --failed-rows
        monkeypatch.setenv(name, value)
    with served_sandbox(pending_seconds=0) as url:
        repo = make_repo(tmp_path / "repo", url, mass=("fx-a",), create=(), delete=())
        (repo / "data" / "fx-a.csv").write_bytes(UPLOADED)
        settings = load_settings(chdir=str(repo))
        out = io.StringIO()
        assert apply(settings, out, auto_approve=True, wait=True, timeout=60) == 0, out.getvalue()
        out = io.StringIO()
        assert errors(settings, out, name="fx-a", failed_rows="retry.csv") == 0
        assert any(line.startswith("3 ") and line.endswith(FAILED) for line in out.getvalue().splitlines()), \
            out.getvalue()
    assert (repo / "retry.csv").read_text() == (
        'Provider Exchange Rate Date,Currency (From),Currency (To),Exchange Rate,"#Note, free text"\n'
        '2026-01-02,usd,GBP,0.79,"she said ""hi"""\n')


# --- 4 MB and 15 MB, in the smaller reading (10^6 bytes), in validate and in the sandbox ----------------------


@pytest.mark.parametrize("kind, limit", [("mass", 4_000_000), ("object", 15_000_000)])
def test_the_size_limits_are_millions_of_bytes_in_validate_and_in_the_sandbox(tmp_path, kind, limit):
    from reconciler.spec.datafiles import check_custom_object_file, check_mass_action_file

    check = {"mass": lambda p: check_mass_action_file(p, "ImportFXRate", "f.csv"),
             "object": lambda p: check_custom_object_file(p, "create", "f.csv")}[kind]
    client = wsgi_client(make_app(clock=FakeClock()))

    def upload(data: bytes) -> int:
        if kind == "mass":
            return client.post("/v1/bulk", files={"file": ("f.csv", data)},
                               data={"params": '{"actionType": "ImportFXRate"}'}).status_code
        job = client.post("/objects/jobs", json={"namespace": "default", "object": "car", "operation": "create"})
        return client.post(f"/objects/jobs/{job.json()['Id']}/files", content=data,
                           headers={"Content-Type": "text/csv"}).status_code

    for size, too_big in ((limit, False), (limit + 1, True)):
        data = b"x" * size
        path = tmp_path / "f.csv"
        path.write_bytes(data)
        size_problems = [p for p in check(path) if "may be at most" in p.message]
        assert bool(size_problems) is too_big, (size, size_problems)
        assert (upload(data) == 413) is too_big, size  # at the limit: refused for its content (400), not its size
