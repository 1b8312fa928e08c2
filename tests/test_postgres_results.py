"""Results and sent files in a PostgreSQL ledger: a second runner with no shared files reads what the first
archived (`errors`, the rows a new-rows resend leaves out), nothing lands in state/, and `ledger copy`
carries them to a SQLite ledger's state/ and back with the chain's head unchanged."""

from __future__ import annotations

import io
import shutil

from apply_support import (
    CARS_CSV,
    CREATE_SPEC,
    admin,
    cli,
    make_repo,
    served_sandbox,
    write_spec,
)
from test_row_exactly_once import FIXED, PAYMENTS, posted, write_payments

from reconciler.commands.audit import verify
from reconciler.commands.errors import errors
from reconciler.commands.ledger import copy
from reconciler.engine.config import load_settings
from reconciler.engine.planning import compute_plan
from reconciler.engine.run import read_ledger

SCHEMA = "?options=-csearch_path%3D{environment}"
MORE_CARS = CARS_CSV + "MAN,TGX,2025\n"


def settings(repo, ledger: str):
    import os

    return load_settings(chdir=str(repo), env={**os.environ, "RECONCILER_LEDGER": ledger})


def failed_rows(repo, ledger: str) -> str:
    out = io.StringIO()
    assert errors(settings(repo, ledger), out, name="pay") == 0
    return out.getvalue()


def head(repo, ledger: str) -> str:
    out = io.StringIO()
    assert verify(settings(repo, ledger), out) == 0, out.getvalue()
    return out.getvalue().split(" head ")[1].split()[0]


def cars(url: str) -> int:
    return sum(n for name, n in admin(url, "state")["records"].items() if name.endswith("car"))


def test_a_second_runner_reads_the_first_ones_results_and_sends_only_new_rows(tmp_path, pg_url):
    ledger = pg_url + SCHEMA
    with served_sandbox() as url:
        first, second = (make_repo(tmp_path / name, url, mass=(), create=("load-cars",), delete=())
                         for name in ("first", "second"))
        for clone in (first, second):
            write_payments(clone, PAYMENTS)
        applied = cli(first, "apply", "--auto-approve", "--wait", "--timeout", "60", env={"RECONCILER_LEDGER": ledger})
        assert applied.returncode == 0, applied.stdout + applied.stderr
        assert (posted(url), cars(url)) == (3, 3)

        # The second clone has no file of the first's: the failed rows come from the database.
        text = failed_rows(second, ledger)
        assert "(generation 1, Completed): 1 failed row of 4" in text and "(from state/" in text

        # A revision bump there sends only what no generation applied: the payments' response file and the
        # cars' /errors plus the file the first clone sent (its spec file changed since) are all read back.
        write_payments(second, FIXED, revision=2)
        (second / "data" / "load-cars.csv").write_text(MORE_CARS)
        write_spec(second, "load-cars", CREATE_SPEC, revision=2)
        plan = {c.name: c for c in compute_plan(settings(second, ledger), session=None, refresh=False).changes}
        assert (plan["pay"].data.send, plan["pay"].data.already_applied) == (2, 3)
        assert (plan["load-cars"].data.send, plan["load-cars"].data.already_applied) == (1, 3)
        again = cli(second, "apply", "--auto-approve", "--wait", "--timeout", "60", env={"RECONCILER_LEDGER": ledger})
        assert again.returncode == 0, again.stdout + again.stderr
        assert (posted(url), cars(url)) == (5, 4)
        for clone in (first, second):
            assert not (clone / "state").exists()  # ledger, results and sent files: all in the database

        # The sent file is checked like a result: changed in the database, the rows applied are unknown.
        import psycopg

        with psycopg.connect(pg_url) as conn:
            conn.execute(f'SET search_path = "{settings(second, ledger).env_key}"')
            sent = conn.execute("SELECT ref FROM blobs WHERE ref LIKE %s", ("%/sent/load-cars/g1.csv",)).fetchone()[0]
            saved = conn.execute("SELECT data FROM blobs WHERE ref = %s", (sent,)).fetchone()[0]
            conn.execute("UPDATE blobs SET data = %s WHERE ref = %s", (b"make__c\nedited\n", sent))
        (second / "data" / "load-cars.csv").write_text(MORE_CARS + "DAF,XF,2026\n")
        write_spec(second, "load-cars", CREATE_SPEC, revision=3)
        plan = {c.name: c for c in compute_plan(settings(second, ledger), session=None, refresh=False).changes}
        assert plan["load-cars"].action == "conflict" and "rows already applied are unknown" in plan["load-cars"].reason
        with psycopg.connect(pg_url) as conn:
            conn.execute(f'SET search_path = "{settings(second, ledger).env_key}"')
            conn.execute("UPDATE blobs SET data = %s WHERE ref = %s", (saved, sent))

        # To a SQLite ledger: the blobs become the files of state/, the chain's head is the same.
        on_server = head(second, ledger)
        out = io.StringIO()
        assert copy(settings(second, ledger), out, source=ledger, destination="back.db") == 0
        assert "8 result and sent files" in out.getvalue(), out.getvalue()  # 4 jobs, each a result and a sent file
        back = str(second / "back.db")
        assert head(second, back) == on_server
        assert "(generation 2, Completed): 0 failed rows of 2" in failed_rows(second, back)
        state = settings(second, back).state_dir
        assert sorted(p.parent.name for p in (state / "sent").rglob("*.csv")) == ["load-cars"] * 2 + ["pay"] * 2

        # And back to PostgreSQL, from those files; then no file is needed any more.
        other = pg_url + "?options=-csearch_path%3Dcopied"
        assert copy(settings(second, back), io.StringIO(), source=back, destination=other) == 0
        shutil.rmtree(state)
        assert head(second, other) == on_server
        assert "(generation 2, Completed): 0 failed rows of 2" in failed_rows(second, other)
    with read_ledger(settings(second, back)) as copied:  # the SQLite copy's results were those files
        (job,) = [j for j in copied.jobs("pay") if j.generation == 2]
        assert copied.blobs(second).check(job.result_path, job.result_sha256) == "missing"
