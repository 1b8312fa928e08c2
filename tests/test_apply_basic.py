"""`reconciler apply` end to end: real subprocesses against the sandbox served on loopback HTTP."""

from __future__ import annotations

import hashlib
import io
import os
import pty
import select
import subprocess
import sys

import pytest

from apply_support import (
    CREDENTIALS, admin, assert_exactly_once, cli, fx_csv, ledger_events, ledger_jobs,
    make_repo, remote_jobs, served_sandbox, settings_of, start_cli, wait_until, zuora_http,
)

from reconciler.commands.apply import apply
from reconciler.errors import ExitCode

ALL = ("fx-a", "fx-b", "load-cars", "purge-cars")


@pytest.fixture
def fast():
    """A sandbox whose jobs run at once."""
    with served_sandbox() as url:
        yield url


@pytest.fixture
def slow():
    """A sandbox whose jobs stay Pending / accepted for an hour unless its clock is advanced."""
    with served_sandbox(pending_seconds=3600) as url:
        yield url


def test_apply_runs_every_spec_once_and_a_second_apply_changes_nothing(tmp_path, fast):
    # The purge depends on the load, so it deterministically removes the one pre-2000 car the load created.
    repo = make_repo(tmp_path, fast, depends={"fx-b": ["fx-a"], "purge-cars": ["load-cars"]})
    first = cli(repo, "apply", "--auto-approve", "--wait", "--timeout", "60")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "Apply complete: 4 submitted, 0 uploaded, 0 replaced, 0 stopped, 0 cancelled, 0 retired; 0 failed." in first.stdout
    assert_exactly_once(repo, fast, ALL)
    jobs = {j.name: j for j in ledger_jobs(repo)}
    assert {j.phase for j in jobs.values()} == {"done"} and jobs["load-cars"].uploaded
    assert admin(fast, "state")["records"] == {"car": 2}

    again = cli(repo, "apply", "--auto-approve")
    assert again.returncode == 0 and "No changes." in again.stdout, again.stdout + again.stderr
    assert len(remote_jobs(fast)) == 4
    assert cli(repo, "plan", "--detailed-exitcode").returncode == 0


def test_a_dependent_is_submitted_only_after_its_dependency_completed(tmp_path, fast):
    repo = make_repo(tmp_path, fast, create=(), delete=(), depends={"fx-b": ["fx-a"]})
    proc = cli(repo, "apply", "--auto-approve", "--wait", "--timeout", "60")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    events = ledger_events(repo)
    completed = next(e["id"] for e in events if e["name"] == "fx-a" and e["outcome"] == "Completed")
    intent = next(e["id"] for e in events if e["name"] == "fx-b" and e["event_type"] == "intent")
    assert completed < intent
    assert "fx-a: Pending -> Completed" in proc.stdout  # one line per status change when not on a terminal


def test_finished_jobs_have_their_results_archived_and_hashed(tmp_path, fast):
    repo = make_repo(tmp_path, fast)
    assert cli(repo, "apply", "--auto-approve", "--wait").returncode == 0
    jobs = ledger_jobs(repo)
    assert jobs and all(j.result_path and j.result_sha256 for j in jobs)
    for job in jobs:
        data = (repo / job.result_path).read_bytes()
        assert hashlib.sha256(data).hexdigest() == job.result_sha256
        assert job.result_path.startswith("state/") and f"/results/{job.name}/" in job.result_path


def test_an_apply_without_wait_leaves_archiving_to_the_next_run(tmp_path, slow):
    repo = make_repo(tmp_path, slow, create=(), delete=())
    assert cli(repo, "apply", "--auto-approve").returncode == 0
    assert not any(j.result_path for j in ledger_jobs(repo))
    admin(slow, "clock", {"advance_seconds": 7200})
    later = cli(repo, "apply", "--auto-approve")
    assert later.returncode == 0 and "No changes." in later.stdout
    assert all(j.result_path and j.remote_status == "Completed" for j in ledger_jobs(repo))


def test_without_a_terminal_or_auto_approve_apply_refuses_before_any_remote_change(tmp_path, fast):
    repo = make_repo(tmp_path, fast)
    proc = cli(repo, "apply")
    assert proc.returncode == 1
    assert "--auto-approve" in proc.stderr and "nothing was changed" in proc.stderr
    assert "+ fx-a" in proc.stdout  # the plan was shown first
    assert remote_jobs(fast) == [] and ledger_jobs(repo) == []


def _apply_in_a_terminal(repo, answer: bytes, *args: str) -> tuple[int, str]:
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "reconciler", "-C", str(repo), "apply", *args], stdin=slave,
                            stdout=slave, stderr=slave, env={**os.environ, **CREDENTIALS}, close_fds=True)
    os.close(slave)
    output = b""
    answered = False
    while True:
        ready, _, _ = select.select([master], [], [], 60)
        assert ready, output.decode(errors="replace")
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        output += chunk
        if not answered and b"Only 'yes' is accepted: " in output:
            os.write(master, answer + b"\n")
            answered = True
    os.close(master)
    return proc.wait(timeout=60), output.decode(errors="replace")


def test_a_terminal_user_who_types_yes_applies_and_sees_one_progress_line(tmp_path, fast):
    repo = make_repo(tmp_path, fast, mass=("fx-a",), create=(), delete=())
    code, output = _apply_in_a_terminal(repo, b"yes", "--wait")
    assert code == 0, output
    assert "Apply these changes? Only 'yes' is accepted: " in output and "1 submitted" in output
    assert "\r\x1b[K[####################] 1/1 jobs done · 3/3 rows · " in output
    assert "Pending -> " not in output  # the status-change lines are for logs, not terminals
    assert len(remote_jobs(fast)) == 1


@pytest.mark.parametrize("answer", [b"no", b"y", b"YES please"])
def test_any_other_answer_cancels(tmp_path, fast, answer):
    repo = make_repo(tmp_path, fast, mass=("fx-a",), create=(), delete=())
    code, output = _apply_in_a_terminal(repo, answer)
    assert code == 1 and "Apply cancelled." in output
    assert remote_jobs(fast) == [] and ledger_jobs(repo) == []


def test_an_edited_spec_replaces_its_pending_job(tmp_path, slow):
    repo = make_repo(tmp_path, slow, mass=("fx-a",), create=(), delete=())
    assert cli(repo, "apply", "--auto-approve").returncode == 0
    (repo / "data" / "fx-a.csv").write_text(fx_csv(7))
    proc = cli(repo, "apply", "--auto-approve")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "~ fx-a" in proc.stdout and "1 replaced" in proc.stdout
    old, new = sorted(ledger_jobs(repo), key=lambda j: j.generation)
    assert (old.phase, old.remote_status) == ("retired", "Stopped") and new.generation == 2
    assert {j["bulkKey"]: j["status"] for j in admin(slow, "state")["mass_actions"]} == {
        old.remote_id: "Stopped", new.remote_id: "Pending"}
    retired = [e for e in ledger_events(repo) if e["event_type"] == "retired"]
    assert retired[-1]["detail"]["reason"] == "replaced by generation 2"


def test_an_edited_delete_filter_cancels_the_accepted_job_and_submits_again(tmp_path, slow):
    repo = make_repo(tmp_path, slow, mass=(), create=())
    assert cli(repo, "apply", "--auto-approve").returncode == 0
    spec = repo / "specs" / "purge-cars.yaml"
    spec.write_text(spec.read_text().replace("value: 2000", "value: 1990"))
    proc = cli(repo, "apply", "--auto-approve")
    assert proc.returncode == 0 and "1 replaced" in proc.stdout, proc.stdout + proc.stderr
    statuses = [j["status"] for j in admin(slow, "state")["custom_object_jobs"]]
    assert statuses == ["cancelled", "accepted"]
    cancels = [e for e in ledger_events(repo) if e["method"] == "PATCH"]
    assert cancels and all(e["idempotency_key"].endswith("-cancel-g1") for e in cancels)


def test_removed_specs_are_stopped_or_cancelled_then_retired(tmp_path, slow):
    repo = make_repo(tmp_path, slow, mass=("fx-a",), create=())
    assert cli(repo, "apply", "--auto-approve").returncode == 0
    for name in ("fx-a", "purge-cars"):
        (repo / "specs" / f"{name}.yaml").unlink()
    proc = cli(repo, "apply", "--auto-approve", "--wait", "--timeout", "60")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 stopped, 1 cancelled, 0 retired" in proc.stdout  # each retired once it ended, in the same change
    assert {j.phase for j in ledger_jobs(repo)} == {"retired"}
    types = [e["event_type"] for e in ledger_events(repo) if e["name"] == "fx-a"]
    assert types.index("stop_requested") < types.index("stop_answered") < types.index("retired")
    assert cli(repo, "plan", "--detailed-exitcode").returncode == 0


def test_conflicts_refuse_the_apply_unless_excluded(tmp_path, fast):
    repo = make_repo(tmp_path, fast, create=(), delete=())
    assert cli(repo, "apply", "--auto-approve", "--wait").returncode == 0
    (repo / "data" / "fx-a.csv").write_text(fx_csv(9))  # changed after it completed, same revision
    (repo / "data" / "fx-c.csv").write_text(fx_csv(5))
    (repo / "specs" / "fx-c.yaml").write_text((repo / "specs" / "fx-a.yaml").read_text().replace("fx-a", "fx-c"))
    refused = cli(repo, "apply", "--auto-approve")
    assert refused.returncode == 1 and "apply refuses to run" in refused.stderr and "fx-a" in refused.stderr
    assert len(remote_jobs(fast)) == 2
    excluded = cli(repo, "apply", "--auto-approve", "--exclude", "fx-a")
    assert excluded.returncode == 0, excluded.stdout + excluded.stderr
    assert_exactly_once(repo, fast, ("fx-a", "fx-b", "fx-c"))


@pytest.mark.parametrize("job_limit", ["400", "failed"])
def test_no_free_custom_object_slot_is_deferred_not_failed_and_the_next_apply_submits_it(tmp_path, job_limit):
    """Zuora refuses a 6th active job with a 400, or (its documented form) creates it `failed` with 71012560."""
    with served_sandbox(job_limit=job_limit) as fast:
        repo = make_repo(tmp_path, fast, mass=(), delete=())
        with zuora_http(fast) as http:  # fill the tenant's five custom object slots behind our back
            blockers = [http.post("/objects/jobs", json={"namespace": "default", "object": "bus", "operation": "create"})
                        .json()["Id"] for _ in range(5)]
            proc = cli(repo, "apply", "--auto-approve")
            assert proc.returncode == 0, proc.stdout + proc.stderr
            assert "… load-cars: submit deferred: Zuora has no free custom object job slot" in proc.stdout
            assert "0 submitted" in proc.stdout and "1 deferred; 0 failed." in proc.stdout
            assert "run apply again once one of the tenant's active custom object jobs has ended" in proc.stdout
            [job] = ledger_jobs(repo)
            assert (job.phase, job.remote_status, job.remote_id) == ("done", "rejected", None)
            assert "no free custom object job slot" in job.detail["error"]
            assert ("71012560" if job_limit == "failed" else "HTTP 400") in job.detail["error"]
            waited = cli(repo, "apply", "--auto-approve", "--wait", "--timeout", "30")
            assert waited.returncode == 1 and "1 change found no free custom object job slot" in waited.stderr
            for job_id in blockers:
                http.patch(f"/objects/jobs/{job_id}/cancel").raise_for_status()
        again = cli(repo, "apply", "--auto-approve", "--wait")
        assert again.returncode == 0, again.stdout + again.stderr
        assert [j.generation for j in ledger_jobs(repo)] == [1, 2, 3]
        assert [j.remote_status for j in ledger_jobs(repo)] == ["rejected", "rejected", "completed"]


def test_wait_times_out_naming_the_jobs_still_running(tmp_path, slow):
    repo = make_repo(tmp_path, slow, mass=("fx-a",), create=(), delete=())
    proc = cli(repo, "apply", "--auto-approve", "--wait", "--timeout", "1")
    assert proc.returncode == 1 and "1 submitted" in proc.stdout
    assert "timed out after 1 s; jobs still running: fx-a (Pending)" in proc.stderr
    assert "They keep running in Zuora" in proc.stderr


def test_timeout_needs_wait(tmp_path, fast):
    repo = make_repo(tmp_path, fast)
    proc = cli(repo, "apply", "--auto-approve", "--timeout", "5")
    assert proc.returncode == 1 and "--timeout" in proc.stderr and remote_jobs(fast) == []


def test_wait_ends_when_a_dependent_can_never_run(tmp_path, slow):
    repo = make_repo(tmp_path, slow, create=(), delete=(), depends={"fx-b": ["fx-a"]})
    waiting = start_cli(repo, "apply", "--auto-approve", "--wait", "--timeout", "120")
    [(bulk_key, _)] = wait_until(lambda: remote_jobs(slow))
    with zuora_http(slow) as http:
        stopped = http.put(f"/v1/bulk/{bulk_key}/stop")
    assert stopped.status_code == 200  # someone stopped fx-a in the Zuora UI
    out, err = waiting.communicate(timeout=120)
    assert waiting.returncode == 1, out + err
    assert "⊘ fx-b: blocked: new; dependency fx-a stopped" in out
    assert "1 change blocked by a dependency that failed or was stopped" in err, out + err
    assert "fx-b: fix fx-a and bump its revision, or run with --rerun fx-a" in err
    assert "Jobs: 1 stopped." in out
    assert len(remote_jobs(slow)) == 1


@pytest.mark.parametrize("answer", ["no\n", "", "y\n"])
def test_anything_but_yes_on_the_given_stream_cancels_before_any_remote_change(tmp_path, fast, answer):
    repo = make_repo(tmp_path, fast, create=(), delete=())
    out = io.StringIO()
    code = apply(settings_of(repo), out, answers=io.StringIO(answer))
    assert code == ExitCode.ERROR and out.getvalue().rstrip().endswith("Apply cancelled."), out.getvalue()
    assert remote_jobs(fast) == [] and ledger_jobs(repo) == []


def test_yes_on_the_given_stream_applies(tmp_path, fast):
    repo = make_repo(tmp_path, fast, mass=("fx-a",), create=(), delete=())
    out = io.StringIO()
    assert apply(settings_of(repo), out, answers=io.StringIO("yes\n")) == ExitCode.OK, out.getvalue()
    assert "Apply these changes?" in out.getvalue() and len(remote_jobs(fast)) == 1


@pytest.mark.parametrize("flags", [["-vC"], ["-v", "-C"], ["--verbose", "--chdir"]])
def test_verbose_in_any_spelling_shows_the_traceback(tmp_path, flags):
    proc = subprocess.run([sys.executable, "-m", "reconciler", *flags, str(tmp_path / "nowhere"), "plan"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "no such directory" in proc.stderr
    quiet = subprocess.run([sys.executable, "-m", "reconciler", "-C", str(tmp_path / "nowhere"), "plan"],
                           capture_output=True, text=True, timeout=60)
    assert quiet.returncode == 1 and "Traceback" not in quiet.stderr
