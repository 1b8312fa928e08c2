"""Authentication failures: never a verdict on the request waiting for the token, and a run-level stop.

Real subprocesses against a sandbox served on 127.0.0.1; nothing of ours is mocked.
"""

from __future__ import annotations

from apply_support import (
    CREDENTIALS, admin, assert_exactly_once, cli, ledger_jobs, make_repo, remote_jobs, sandbox_token, served_sandbox,
)

WRONG_SECRET = {"ZUORA_CLIENT_SECRET": "not-the-sandbox-secret"}
NO_OAUTH = {"ZUORA_CLIENT_ID": "", "ZUORA_CLIENT_SECRET": ""}


def _output(proc) -> str:
    return proc.stdout + proc.stderr


def test_a_refused_token_while_resuming_a_submission_never_closes_it_and_never_makes_a_second_job(tmp_path):
    with served_sandbox() as url:
        repo = make_repo(tmp_path, url, mass=("fx-a",), create=(), delete=())
        admin(url, "faults", {"drop_rate": 1.0, "retry_after": 0})  # every Zuora answer is lost (token calls pass)
        first = cli(repo, "apply", "--auto-approve")
        admin(url, "faults", {})
        assert first.returncode == 1, _output(first)
        [intent] = ledger_jobs(repo)
        assert intent.phase == "intent"  # outcome unknown: the job was created, its answer lost
        [(remote_id, key)] = remote_jobs(url)
        assert key == intent.idempotency_key

        refused = cli(repo, "apply", "--auto-approve", env=WRONG_SECRET)
        assert refused.returncode == 1, _output(refused)
        assert "ZUORA_CLIENT_SECRET" in _output(refused)
        [still] = ledger_jobs(repo)
        assert (still.id, still.phase, still.idempotency_key) == (intent.id, "intent", key)  # not "rejected"

        resumed = cli(repo, "apply", "--auto-approve")
        assert resumed.returncode == 0, _output(resumed)
        assert remote_jobs(url) == [(remote_id, key)]  # one job for the revision, under the first key
        [job] = ledger_jobs(repo)
        assert (job.id, job.remote_id, job.generation) == (intent.id, remote_id, 1)
        assert_exactly_once(repo, url, ["fx-a"])


def test_refused_client_credentials_stop_the_run_before_any_intent_with_one_message(tmp_path):
    with served_sandbox() as url:
        repo = make_repo(tmp_path, url, mass=("fx-a", "fx-b"), create=("load-cars",), delete=())
        proc = cli(repo, "apply", "--auto-approve", env=WRONG_SECRET)
        assert proc.returncode == 1, _output(proc)
        assert _output(proc).count("Zuora refused the OAuth client credentials") == 1, _output(proc)
        assert "ZUORA_CLIENT_ID" in proc.stderr and "ZUORA_CLIENT_SECRET" in proc.stderr
        assert ledger_jobs(repo) == [] and remote_jobs(url) == []  # no intent, no rejected generation
        plan = cli(repo, "plan")
        assert plan.returncode == 0 and plan.stdout.count("new") >= 3, _output(plan)
        assert "resume" not in plan.stdout and "rejected" not in plan.stdout


def test_a_refused_static_token_stops_the_run_before_any_intent_naming_the_variable(tmp_path):
    with served_sandbox() as url:
        repo = make_repo(tmp_path, url, mass=("fx-a",), create=("load-cars",), delete=())
        proc = cli(repo, "apply", "--auto-approve", env={**NO_OAUTH, "ZUORA_ACCESS_TOKEN": "f" * 32})
        assert proc.returncode == 1, _output(proc)
        assert _output(proc).count("ZUORA_ACCESS_TOKEN was rejected") == 1, _output(proc)
        assert ledger_jobs(repo) == [] and remote_jobs(url) == []


def test_a_token_revoked_mid_run_ends_the_run_and_keeps_only_the_intent_whose_post_was_sent(tmp_path):
    with served_sandbox() as url:
        repo = make_repo(tmp_path, url, mass=("fx-a", "fx-b", "fx-c"), create=(), delete=())
        token = {**NO_OAUTH, "ZUORA_ACCESS_TOKEN": sandbox_token(url)}
        admin(url, "tokens", {"revoke_after": 2})  # the check of the token and fx-a's POST; fx-b's POST is refused
        proc = cli(repo, "apply", "--auto-approve", "--parallelism", "1", env=token)
        assert proc.returncode == 1, _output(proc)
        assert _output(proc).count("ZUORA_ACCESS_TOKEN was rejected") == 1, _output(proc)
        phases = {j.name: j.phase for j in ledger_jobs(repo)}
        assert phases == {"fx-a": "active", "fx-b": "intent"}, phases  # fx-c never started: no intent
        [(_, key_a)] = remote_jobs(url)

        again = cli(repo, "apply", "--auto-approve", env=CREDENTIALS)
        assert again.returncode == 0, _output(again)
        assert "resume" in again.stdout
        assert_exactly_once(repo, url, ["fx-a", "fx-b", "fx-c"])
        assert all(j.generation == 1 for j in ledger_jobs(repo))
        assert key_a in {key for _, key in remote_jobs(url)}


def test_the_embedded_sandbox_ignores_exported_zuora_credentials_and_a_served_one_uses_them(tmp_path):
    real = {"ZUORA_CLIENT_ID": "0" * 36, "ZUORA_CLIENT_SECRET": "a-real-tenant-secret",
            "ZUORA_ACCESS_TOKEN": "a-real-tenant-token"}
    repo = make_repo(tmp_path / "local", "local", mass=("fx-a",), create=(), delete=())
    proc = cli(repo, "apply", "--auto-approve", env=real)
    assert proc.returncode == 0, _output(proc)
    [job] = ledger_jobs(repo)
    assert job.phase == "active" and job.remote_id
    with served_sandbox() as url:  # a served loopback sandbox takes them when set
        served = make_repo(tmp_path / "served", url, mass=("fx-a",), create=(), delete=())
        proc = cli(served, "apply", "--auto-approve", env=real)
        assert proc.returncode == 1 and "ZUORA_ACCESS_TOKEN was rejected" in proc.stderr, _output(proc)
        assert ledger_jobs(served) == [] and remote_jobs(url) == []


def test_a_real_environment_without_credentials_fails_before_the_ledger_exists(tmp_path):
    for environment in ("us-production", "https://rest.test.zuora.com"):
        repo = make_repo(tmp_path / environment.replace(":", "").replace("/", ""), environment, mass=("fx-a",),
                         create=(), delete=())
        proc = cli(repo, "apply", "--auto-approve", env={**NO_OAUTH, "ZUORA_ACCESS_TOKEN": ""})
        assert proc.returncode == 1, _output(proc)
        for variable in ("ZUORA_CLIENT_ID", "ZUORA_CLIENT_SECRET", "ZUORA_ACCESS_TOKEN"):
            assert variable in proc.stderr, _output(proc)
        state = repo / "state"
        assert not state.exists() or not any(p.is_file() for p in state.rglob("*")), list(state.rglob("*"))
