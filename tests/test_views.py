"""Text, JSON and markdown renderings of a plan, and the shared table helper."""

from __future__ import annotations

import hashlib
import io
import json
from datetime import datetime, timezone

from reconciler.engine.config import load_settings
from reconciler.model import Action, ObservedState, RecordedState
from reconciler.engine.plan import Change, Drift, ObjectTarget, Plan, PlanOptions
from reconciler.engine.planfile import to_document
from reconciler.engine.planner import make_plan
from reconciler.spec.load import load_desired
from reconciler.views import MARKER, render_json, render_markdown, render_table, render_text, summary_line

NOW = datetime(2026, 11, 3, 12, 0, tzinfo=timezone.utc)


def change(name, action, reason="new", kind="MassAction", remote_id=None, **fields):
    return Change(name=name, kind=kind, action=Action(action), reason=reason, fingerprint="f" * 64, revision=1,
                  remote_id=remote_id, generation=1, **fields)


def plan_with(changes=(), drift=(), unchanged=0) -> Plan:
    return Plan(reconciler_version="0.1.0", created_at=NOW, environment="local", lineage="lin", serial=7,
                spec_digest="c" * 64, changes=tuple(changes), drift=tuple(drift), unchanged=unchanged)


def rendered(render, plan, **kwargs) -> str:
    out = io.StringIO()
    render(plan, out, **kwargs)
    return out.getvalue()


def test_summary_line_matches_design():
    plan = plan_with([change("a", "submit"), change("b", "submit"), change("c", "upload"), change("d", "replace"),
                      change("e", "stop"), change("f", "retire"), change("g", "wait")], unchanged=12)
    assert summary_line(plan) == ("Plan: 2 to submit, 1 to upload, 1 to replace, 1 to stop, 0 to cancel, "
                                  "1 to retire; 1 waiting; 0 conflicts; 12 unchanged.")


def test_text_colors_only_when_asked():
    plan = plan_with([change("a", "submit"), change("b", "conflict", "x", resolve="do y"), change("c", "upload"),
                      change("d", "wait")])
    colored = rendered(render_text, plan, color=True)
    assert "\x1b[32m+\x1b[0m a" in colored and "\x1b[31m!\x1b[0m b" in colored
    assert "\x1b[36m↑\x1b[0m c" in colored and "\x1b[2m…\x1b[0m d" in colored
    plain = rendered(render_text, plan, color=False)
    assert "\x1b" not in plain
    assert "  ! b  MassAction  -  x — do y\n" in plain


def test_text_with_nothing_to_do_but_drift():
    plan = plan_with(drift=[Drift("fx", "k1", "Pending", "Completed")], unchanged=4)
    assert rendered(render_text, plan, color=False) == (
        "Drift (recorded -> observed; written to the ledger, not an action):\n"
        "  fx  k1  Pending -> Completed\n"
        "\n"
        "No changes. Zuora matches the specs (4 unchanged).\n"
    )


def test_json_is_the_plan_document_in_order():
    plan = plan_with([change("a", "submit")], unchanged=1)
    text = rendered(render_json, plan)
    assert json.loads(text) == to_document(plan)
    assert text.index('"format_version"') < text.index('"ledger"') < text.index('"summary"')


def test_table_aligns_columns_and_shows_none_as_dash():
    out = io.StringIO()
    render_table([["fx-rates", "Completed", 40], ["b", None, 7]], ["NAME", "STATUS", "ROWS"], out)
    assert out.getvalue() == ("NAME      STATUS     ROWS\n"
                              "fx-rates  Completed  40\n"
                              "b         -          7\n")


def test_markdown_calls_out_conflicts_and_folds_changes():
    plan = plan_with([change("a", "submit"), change("old", "conflict", "spec changed after its job completed",
                                                    remote_id="k9", resolve="bump revision to 2, or --rerun old")],
                     drift=[Drift("fx", "k1", "Pending", None)], unchanged=2)
    text = rendered(render_markdown, plan)
    assert text.startswith(MARKER + "\n### reconciler plan for local\n")
    assert "| `+` submit | 1 |" in text and "| unchanged | 2 |" in text
    assert "- **old**: spec changed after its job completed. Way out: bump revision to 2, or --rerun old" in text
    assert text.index("Way out") < text.index("<details><summary>2 changes</summary>")
    assert "| `!` | old | MassAction | k9 | spec changed after its job completed — bump revision" in text
    assert "| fx | k1 | Pending | missing (404) |" in text
    assert "truncated" not in text


def test_markdown_escapes_user_text():
    plan = plan_with([change("a|b", "conflict", "x <script> | `rm -rf` & co", resolve="run `reconciler forget a`")])
    text = rendered(render_markdown, plan)
    assert "a\\|b" in text
    assert "x &lt;script&gt; \\| \\`rm -rf\\` &amp; co" in text
    assert "<script>" not in text and "`rm -rf`" not in text


def test_markdown_with_no_changes():
    text = rendered(render_markdown, plan_with(unchanged=5))
    assert "**No changes.** Zuora matches the specs (5 unchanged)." in text
    assert "<details>" not in text


def test_markdown_is_cut_at_the_limit_with_whole_rows_and_a_note():
    changes = [change(f"spec-{i:05d}", "submit", "revision 1 -> 2 " + "é" * 10) for i in range(5000)]
    drift = [Drift(f"spec-{i:05d}", f"k{i}", "Pending", "Completed") for i in range(300)]
    text = rendered(render_markdown, plan_with(changes, drift))
    size = len(text.encode("utf-8"))
    assert 55_000 < size <= 60_000
    shown = text.count("| `+` | spec-")
    drift_shown = text.count("| Pending | Completed |")
    assert 0 < shown < 5000 and drift_shown < 300
    assert f"> … {5000 - shown} more changes and {300 - drift_shown} more drift entries not shown (comment truncated at 60 KB); " \
           "run `reconciler plan` for the full plan" in text
    assert text.rstrip().endswith("UTC</sub>") and "</details>" in text
    for line in text.splitlines():
        assert not line.startswith("| `+`") or line.endswith("|")


def test_plans_carry_no_csv_contents(tmp_path):
    # The desired state is loaded from a real repo, so the file's contents pass through everything a plan is made of.
    csv = tmp_path / "data" / "fx.csv"
    csv.parent.mkdir()
    csv.write_text("Group ID,Provider Exchange Rate Date,Currency (From),Currency (To),Exchange Rate\n"
                   "SECRETGROUP,2026-11-01,USD,EUR,1.2345\n", encoding="utf-8")
    digest = hashlib.sha256(csv.read_bytes()).hexdigest()
    (tmp_path / "reconciler.yaml").write_text("environment: local\n")
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "fx.yaml").write_text("apiVersion: reconciler/v1\nkind: MassAction\nmetadata: {name: fx}\n"
                                                "spec: {actionType: ImportFXRate, file: ../data/fx.csv}\n")
    desired = load_desired(load_settings(chdir=str(tmp_path), env={}))
    plan = make_plan(desired, RecordedState(), ObservedState(), PlanOptions(now=NOW),
                     environment="local", reconciler_version="0.1.0")
    outputs = [rendered(render_markdown, plan), rendered(render_json, plan), rendered(render_text, plan, color=False)]
    for text in outputs:
        assert "SECRETGROUP" not in text and "1.2345" not in text
    assert "data/fx.csv" in outputs[1] and digest in outputs[1]


def test_markdown_neutralises_links_images_and_mentions_from_the_server():
    reason = "previous submission was rejected: see [the fix](https://evil.example) ![x](https://evil.example/p.png) @octocat"
    text = rendered(render_markdown, plan_with([change("a", "submit", reason)]))
    assert "](" not in text.replace("\\](", "") and "![" not in text
    assert "@octocat" not in text and "&#64;octocat" in text
    assert "\\[the fix\\](https://evil.example)" in text


def test_a_cut_comment_keeps_every_conflict_and_destructive_change():
    ordinary = [change(f"spec-{i:05d}", "submit", "revision 1 -> 2 " + "é" * 10) for i in range(5000)]
    risky = [change("zz-stop", "stop", "spec removed: stop job (Processing)"),
             change("zz-purge", "submit", "new", kind="CustomObjectJob",
                    target=ObjectTarget("default", "car", "delete", allow_delete_all=True)),
             change("zz-conflict", "conflict", "revision went down", resolve="set revision to 3")]
    text = rendered(render_markdown, plan_with([*ordinary, *risky]))
    assert len(text.encode("utf-8")) <= 60_000
    for name in ("zz-stop", "zz-purge", "zz-conflict"):
        assert f"| {name} |" in text, name
    shown = text.count("| `+` | spec-")
    assert 0 < shown < 5000 and f"> … {5000 - shown} more changes not shown" in text
