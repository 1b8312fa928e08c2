"""Output that fits: tables within the terminal's width (`COLUMNS`), full values in `--json`; `status`
says how fresh its data is and lists specs never applied; apply's summary counts statuses in one casing.
All through the real command line on applied repos (the embedded sandbox)."""

from __future__ import annotations

import json

import pytest

from ops_fixtures import cli

NARROW = {"COLUMNS": "80"}


def widest(text: str) -> int:
    return max(len(line) for line in text.splitlines())


@pytest.mark.parametrize("command", [("status",), ("history", "--all", "--limit", "30"), ("show", "payments"),
                                     ("errors", "payments")])
def test_tables_fit_the_terminal_width(repo, command):
    wide = cli(repo, *command)
    narrow = cli(repo, *command, env=NARROW)
    assert wide.returncode == narrow.returncode and narrow.returncode in (0, 1), narrow.stderr
    table = [line for line in narrow.stdout.splitlines() if line[:1].isalnum() and "  " in line]
    assert table and max(len(line) for line in table) <= 80, narrow.stdout
    if widest(wide.stdout) > 80:  # something had to give, and says so
        assert "…" in narrow.stdout
    if command[0] == "show":  # its spec and job lines too: hashes, keys and paths
        assert widest(narrow.stdout) <= 80, narrow.stdout


def test_status_keeps_names_whole_and_json_keeps_every_value(repo):
    text = cli(repo, "status", env={"COLUMNS": "100"}).stdout  # the remote ids give way first
    names = [line.split()[0] for line in text.splitlines()[1:] if line and not line.startswith("(")]
    assert {"payments", "fx-rates", "load-vehicles", "purge-old-vehicles"} <= set(names)
    document = json.loads(cli(repo, "status", "--json", env=NARROW).stdout)
    assert all("…" not in (job["remote_id"] or "") for job in document["jobs"])
    assert any(len(job["remote_id"] or "") >= 32 for job in document["jobs"])


def test_status_says_when_it_was_refreshed_and_lists_specs_never_applied(repo):
    (repo.root / "specs" / "later.yaml").write_text(
        "apiVersion: reconciler/v1\nkind: MassAction\nmetadata: {name: later}\n"
        "spec: {actionType: ImportFXRate, file: ../data/fx.csv}\n")
    text = cli(repo, "status").stdout
    [later] = [line for line in text.splitlines() if line.startswith("later ")]
    assert "(not applied)" in later
    assert "(as of the last refresh, " in text and "--refresh fetches it live" in text
    live = cli(repo, "status", "--refresh").stdout
    assert "(status fetched from Zuora just now)" in live and "as of the last refresh" not in live
    assert "later" in {row["name"] for row in json.loads(cli(repo, "status", "--json").stdout)["jobs"]}
