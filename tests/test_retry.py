"""The retry policy and failure classification, without the network."""

from __future__ import annotations

import random
from email.utils import format_datetime
from datetime import datetime, timezone

import pytest

from reconciler.errors import RemoteError
from reconciler.zuora.retry import (
    Attempted,
    Failure,
    GiveUp,
    Retry,
    RetryPolicy,
    code_category,
    decide,
    error_details,
    next_delay,
    outcome_of,
    retry_after_seconds,
)


def policy(**kw) -> RetryPolicy:
    return RetryPolicy(rng=random.Random(7), sleep=lambda s: None, **kw)


def test_backoff_is_full_jitter_under_an_exponential_ceiling_and_the_cap():
    p = policy(base=0.5, cap=30.0)
    for attempt in range(1, 25):
        ceiling = min(30.0, 0.5 * 2 ** (attempt - 1))
        samples = [p.backoff(attempt) for _ in range(50)]
        assert all(0.0 <= s <= ceiling for s in samples)
    assert max(p.backoff(20) for _ in range(200)) > 15  # jitter spreads over the whole range


def test_delay_never_undercuts_what_the_server_asked_for():
    p = policy()
    assert all(p.delay(1, retry_after=7.0) >= 7.0 for _ in range(50))
    assert all(p.delay(1) <= 0.5 for _ in range(50))


def test_permits_bounds_attempts_and_total_time():
    p = policy(max_attempts=3, max_elapsed=10.0)
    assert p.permits(1, 0.0, 1.0) and p.permits(2, 5.0, 5.0)
    assert not p.permits(3, 0.0, 0.0)  # the third attempt was the last
    assert not p.permits(1, 9.5, 1.0)  # would end past 10 s


def failure(retryable=True, reached_server=True, retry_after=None):
    return Failure(RemoteError("boom", status=503, retryable=retryable), reached_server=reached_server,
                   retry_after=retry_after)


def test_an_unkeyed_post_that_reached_the_server_is_never_sent_again():
    p = policy()
    assert next_delay(p, failure(), attempt=1, elapsed=0, resendable=False) is None
    assert next_delay(p, failure(reached_server=False), attempt=1, elapsed=0, resendable=False) is not None
    assert next_delay(p, failure(), attempt=1, elapsed=0, resendable=True) is not None


def test_non_retryable_failures_and_exhausted_budgets_give_up():
    p = policy(max_attempts=6, max_elapsed=120.0)
    assert next_delay(p, failure(retryable=False), attempt=1, elapsed=0, resendable=True) is None
    assert next_delay(p, failure(), attempt=6, elapsed=0, resendable=True) is None
    assert next_delay(p, failure(retry_after=600.0), attempt=1, elapsed=0, resendable=True) is None
    assert next_delay(p, failure(retry_after=3.0), attempt=1, elapsed=0, resendable=True) >= 3.0


@pytest.mark.parametrize(
    "headers, expected",
    [
        ({"retry-after": "7"}, 7.0),
        ({"retry-after": "2.5", "ratelimit-reset": "60"}, 2.5),  # Retry-After wins
        ({"ratelimit-reset": "12"}, 12.0),
        ({"ratelimit-reset": str(1_000_000_000 + 1_000 + 30)}, 30.0),  # an epoch timestamp
        ({"retry-after": "-5"}, 0.0),
        ({"retry-after": "soon"}, None),
        ({"ratelimit-reset": "nan"}, None),
        ({}, None),
    ],
)
def test_retry_after_seconds(headers, expected):
    assert retry_after_seconds(headers, now=lambda: 1_000_000_000 + 1_000) == expected


def test_rate_limit_reset_only_means_wait_on_a_429():
    headers = {"ratelimit-reset": "45"}  # sent on every answer, 503s included
    assert retry_after_seconds(headers, rate_limited=False) is None
    assert retry_after_seconds({**headers, "retry-after": "3"}, rate_limited=False) == 3.0


def test_retry_after_as_an_http_date():
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc).timestamp()
    header = format_datetime(datetime(2026, 1, 2, 3, 4, 50, tzinfo=timezone.utc), usegmt=True)
    assert retry_after_seconds({"retry-after": header}, now=lambda: now) == 45.0


@pytest.mark.parametrize(
    "code, category",
    [(53100320, 20), ("50000070", 70), (70, 70), ("71013061", 61), ("abc", None), (123, None), (None, None)],
)
def test_code_category(code, category):
    assert code_category(code) == category


@pytest.mark.parametrize(
    "body, expected",
    [
        ({"success": False, "reasons": [{"code": 53100320, "message": "bad term"}]}, ("bad term", 53100320)),
        ({"success": False, "reasons": [{"code": "50000040", "message": "a"}, {"code": 1, "message": "b"}]}, ("a; b", "50000040")),
        ({"success": False, "reasons": [{"code": 58730020}]}, ("no message given", 58730020)),
        ({"code": 71013040, "message": "Not Found."}, ("Not Found.", 71013040)),
        ({"message": "Authentication error"}, ("Authentication error", None)),
        ({"Success": False, "Errors": [{"Code": "INVALID_VALUE", "Message": "nope"}]}, ("nope", "INVALID_VALUE")),
        ({"FaultCode": "INVALID_QUERY", "FaultMessage": "bad query"}, ("bad query", "INVALID_QUERY")),
        ({"error": {"code": 71012560, "message": "Service limit reached"}}, ("Service limit reached", 71012560)),
        ({"success": False, "reasons": "not a list"}, None),
        ({"unrelated": 1}, None),
        (["not", "a", "dict"], None),
        (None, None),
    ],
)
def test_error_details_reads_every_zuora_error_shape(body, expected):
    assert error_details(body) == expected


def attempted(**kw) -> Attempted:
    values = dict(method="GET", attempt=1, elapsed=0.0, resendable=True)
    values.update(kw)
    return Attempted(**values)


def test_decide_retries_a_transient_failure_after_the_backoff():
    decision = decide(policy(), failure(retry_after=3.0), attempted())
    assert isinstance(decision, Retry) and decision.after >= 3.0 and not decision.refresh


def test_decide_says_why_it_gave_up():
    exhausted = decide(policy(max_attempts=2), failure(), attempted(attempt=2))
    assert isinstance(exhausted, GiveUp) and exhausted.error.remote_message == "boom (gave up after 2 attempt(s))"
    unkeyed = decide(policy(), failure(), attempted(method="POST", resendable=False))
    assert isinstance(unkeyed, GiveUp)
    assert unkeyed.error.remote_message == "boom (not retried: a POST without an Idempotency-Key may already have " \
                                           "taken effect)"
    refused = decide(policy(), failure(retryable=False), attempted())
    assert isinstance(refused, GiveUp) and refused.error.remote_message == "boom"


def unauthorized() -> Failure:
    return Failure(RemoteError("expired", status=401), reached_server=False, unauthorized=True)


def test_decide_refreshes_a_refused_token_once_and_explains_a_static_one():
    assert decide(policy(), unauthorized(), attempted(bearer=True)) == Retry(0.0, refresh=True)
    again = decide(policy(), unauthorized(), attempted(bearer=True, attempt=2, refreshed=True))
    assert isinstance(again, GiveUp) and again.error.status == 401
    static = decide(policy(), unauthorized(), attempted(bearer=True, static_token=True))
    assert isinstance(static, GiveUp) and "ZUORA_ACCESS_TOKEN was rejected" in static.error.remote_message
    token_request = decide(policy(), unauthorized(), attempted(method="POST", bearer=False))
    assert isinstance(token_request, GiveUp) and token_request.error.remote_message == "expired"


def test_decide_keeps_the_outcome_unknown_after_an_earlier_attempt_may_have_acted():
    decision = decide(policy(), unauthorized(), attempted(method="POST", bearer=True, static_token=True, keyed=True,
                                                          acted=True, attempt=2))
    assert isinstance(decision, GiveUp) and decision.error.retryable
    assert decision.error.remote_message.endswith("(after an earlier attempt that may have taken effect: outcome "
                                                  "unknown)")


def test_outcome_of_names_the_failure_kind_or_the_decision():
    dropped = Failure(RemoteError("cut"), "dropped")
    assert outcome_of(dropped, Retry(1.0)) == "dropped"
    assert outcome_of(failure(), Retry(1.0)) == "retry"
    assert outcome_of(failure(), GiveUp(failure().error)) == "error"


def test_the_pacer_waits_only_once_the_window_has_no_request_left():
    from reconciler.zuora.retry import Pacer

    now = [100.0]
    pacer = Pacer(clock=lambda: now[0], max_wait=120, now=lambda: 1_700_000_000.0)
    assert pacer.wait() == 0  # nothing known yet
    pacer.observe({"ratelimit-remaining": "2", "ratelimit-reset": "30"})
    assert [pacer.wait(), pacer.wait(), pacer.wait()] == [0, 0, 30]  # two left, then the window's end
    now[0] += 30
    assert pacer.wait() == 0  # the window reset
    pacer.observe({"ratelimit-remaining": "0", "ratelimit-reset": str(1_700_000_000 + 12)})  # an epoch
    assert pacer.wait() == 12
    pacer.observe({"ratelimit-remaining": "0", "ratelimit-reset": "2760"})  # the hour: longer than a call may wait
    assert pacer.wait() == 0
    pacer.observe({"ratelimit-remaining": "many", "ratelimit-reset": "5"})  # not numbers: ignored
    assert pacer.wait() == 0
