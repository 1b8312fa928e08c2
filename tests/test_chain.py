"""The audit chain's algorithm on plain dicts: what the hash covers and what verify_chain reports."""

from __future__ import annotations

import hashlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.ledger.chain import (
    EVENT_FIELDS,
    GENESIS_HASH,
    canonical_event,
    canonical_json,
    event_hash,
    verify_chain,
)


def make_chain(n: int) -> list[dict]:
    """n events with every field set, chained the way the ledger chains them."""
    events, prev = [], GENESIS_HASH
    for i in range(1, n + 1):
        event = {
            "id": i, "ts": f"2026-01-01T00:00:{i:02d}+00:00", "run_id": 1, "name": f"spec-{i}",
            "event_type": "remote_call", "method": "POST", "path": "/v1/bulk", "http_status": 200,
            "request_id": f"req-{i}", "track_id": "track", "idempotency_key": f"key-{i}", "outcome": "ok",
            "actor": "alice@host", "detail": {"n": i, "nested": {"b": [1, 2], "a": "é"}}, "prev_hash": prev,
        }
        event["hash"] = event_hash(event)
        prev = event["hash"]
        events.append(event)
    return events


def check(events: list[dict], *, head: str | None = None, count: int | None = None):
    intact = make_chain(len(events)) if events else []
    return verify_chain(
        events,
        head_hash=head if head is not None else (intact[-1]["hash"] if intact else GENESIS_HASH),
        events_count=count if count is not None else len(intact),
    )


def test_canonical_form_is_sorted_compact_json_without_the_hash():
    event = make_chain(1)[0]
    body = canonical_event(event)
    assert b'"hash"' not in body
    assert json.loads(body) == {k: v for k, v in event.items() if k != "hash"}
    assert body == json.dumps(json.loads(body), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    assert event["hash"] == hashlib.sha256(body).hexdigest()


def test_hash_does_not_depend_on_key_order_and_covers_prev_hash():
    event = make_chain(1)[0]
    assert event_hash(dict(reversed(list(event.items())))) == event["hash"]
    assert event_hash({**event, "prev_hash": "1" * 64}) != event["hash"]


def test_an_exported_line_verifies_on_its_own():
    for event in make_chain(3):
        line = json.loads(json.dumps(event, ensure_ascii=False))
        assert event_hash(line) == line["hash"]


def test_canonical_json_refuses_nan():
    with pytest.raises(ValueError):
        canonical_json({"x": float("nan")})


def test_an_intact_chain_verifies():
    report = check(make_chain(5))
    assert report.ok and report.count == 5 and report.first_bad_id is None
    assert report.head_hash == make_chain(5)[-1]["hash"]


def test_an_empty_log_verifies_against_the_genesis_head():
    report = check([])
    assert report.ok and report.count == 0 and report.head_hash == GENESIS_HASH
    assert not check([], head="1" * 64).ok  # an empty log under any other head lost its events


@pytest.mark.parametrize("field", [f for f in EVENT_FIELDS if f != "id"])
def test_an_edited_field_names_its_row(field):
    events = make_chain(5)
    value = events[2][field]
    events[2][field] = value + 1 if isinstance(value, int) else {"n": 99} if isinstance(value, dict) else value + "x"
    report = check(events)
    assert not report.ok and report.first_bad_id == 3, report


def test_an_edited_id_names_the_missing_row():
    events = make_chain(5)
    events[2]["id"] = 30
    report = check(sorted(events, key=lambda e: e["id"]))
    assert not report.ok and report.first_bad_id == 3 and "deleted" in report.message


def test_a_deleted_row_is_named():
    events = make_chain(5)
    del events[2]
    report = check(events)
    assert not report.ok and report.first_bad_id == 3 and "ids jump from 2 to 4" in report.message


def test_a_deleted_first_row_is_named():
    report = check(make_chain(5)[1:])
    assert not report.ok and report.first_bad_id == 1


def test_deleting_a_row_and_renumbering_breaks_the_link():
    events = make_chain(5)
    del events[2]
    for i, event in enumerate(events, start=1):
        event["id"] = i
    report = check(events)
    assert not report.ok and report.first_bad_id == 3


def test_swapped_rows_are_named():
    events = make_chain(5)
    events[1], events[2] = {**events[2], "id": 2}, {**events[1], "id": 3}
    report = check(events)
    assert not report.ok and report.first_bad_id == 2


def test_a_truncated_tail_shows_against_the_recorded_count():
    report = check(make_chain(5)[:3], head=make_chain(5)[-1]["hash"], count=5)
    assert not report.ok and report.first_bad_id == 4 and "4..5 were removed" in report.message


def test_rows_added_without_the_ledger_show():
    events = make_chain(4)
    report = check(events, head=events[2]["hash"], count=3)
    assert not report.ok and report.first_bad_id == 4 and "added" in report.message


def test_a_head_that_does_not_match_shows():
    report = check(make_chain(3), head="f" * 64)
    assert not report.ok and report.first_bad_id == 3 and "head hash" in report.message


def test_an_unhashable_value_is_a_bad_row_not_a_crash():
    events = make_chain(3)
    events[1]["detail"] = {"x": float("nan")}
    report = check(events)
    assert not report.ok and report.first_bad_id == 2


@given(
    index=st.integers(min_value=0, max_value=3),
    field=st.sampled_from([f for f in EVENT_FIELDS if f not in ("id", "hash")]),
    value=st.one_of(st.none(), st.integers(), st.text(max_size=8), st.dictionaries(st.text(max_size=3), st.integers())),
)
def test_any_single_change_is_detected(index, field, value):
    events = make_chain(4)
    if events[index][field] == value:
        return
    events[index][field] = value
    report = check(events)
    assert not report.ok and report.first_bad_id == index + 1
