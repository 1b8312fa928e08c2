"""The retry policy and failure classification, without the network."""

from __future__ import annotations

import random
from email.utils import format_datetime
from datetime import datetime, timezone

import pytest

from reconciler.errors import RemoteError
from reconciler.zuora.retry import Failure, RetryPolicy, code_category, error_details, next_delay, retry_after_seconds


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
