"""Secrets stay out of text; header and path values are well-formed; the token cache is shared."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import pytest

from reconciler.errors import ConfigError, ReconcilerError, RemoteError
from reconciler.zuora.auth import TokenCache
from reconciler.zuora.wire import (
    Redactor,
    describe_body,
    file_id_of,
    is_sandbox,
    new_track_id,
    path_segment,
    validate_idempotency_key,
    validate_track_id,
)


def test_redactor_hides_known_secrets_and_anything_shaped_like_a_credential():
    redact = Redactor("s3cret-value", None, "")
    redact.add("tok-123456")
    text = redact(
        "secret s3cret-value, token tok-123456, Authorization: Bearer abc.def-ghi, "
        'form client_secret=xyz&grant_type=client_credentials, json {"access_token": "zzz", "x": 1}'
    )
    for leaked in ("s3cret-value", "tok-123456", "abc.def-ghi", "xyz", "zzz"):
        assert leaked not in text
    assert "grant_type=client_credentials" in text and '"x": 1' in text


def test_new_track_ids_are_valid_and_unique():
    ids = {new_track_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(validate_track_id(i) == i and len(i) <= 64 for i in ids)


@pytest.mark.parametrize("bad", ["", "x" * 65, "run:1", "run;1", 'run"1', "run'1", "rün", "a\nb"])
def test_track_id_validation(bad):
    with pytest.raises(ConfigError, match="Zuora-Track-Id"):
        validate_track_id(bad)


def test_idempotency_key_validation():
    assert validate_idempotency_key("k" * 255) == "k" * 255
    for bad in ("", "k" * 256, "line\nbreak", "ключ"):
        with pytest.raises(ValueError, match="Idempotency-Key"):
            validate_idempotency_key(bad)


def test_path_segments_are_quoted_and_traversal_is_refused():
    assert path_segment("402892f04c97b89a014c97bb30a50003") == "402892f04c97b89a014c97bb30a50003"
    assert path_segment("a/b?c") == "a%2Fb%3Fc"
    for bad in ("", " ", ".", ".."):
        with pytest.raises(ReconcilerError):
            path_segment(bad)


def test_file_id_comes_from_the_path_never_the_host():
    assert file_id_of("https://evil.example.com/v1/files/402892c84c9285b1014c9293f5320007?x=1") == (
        "402892c84c9285b1014c9293f5320007"
    )
    assert file_id_of("2c92c0f9") == "2c92c0f9"
    for bad in ("https://rest.zuora.com/v1/bulk/abc", "../../etc", ""):
        with pytest.raises(RemoteError):
            file_id_of(bad)


def test_describe_body_is_short_and_tag_free():
    html = b"<html><head><title>502</title></head><body><h1>Bad   Gateway</h1>" + b"x" * 500 + b"</body></html>"
    text = describe_body(html, "text/html", "a JSON object")
    assert "<" not in text and "502 Bad Gateway" in text and len(text) < 250
    assert describe_body(b"  ", None, "a JSON object") == "expected a JSON object, got an empty body (no content type)"


def test_token_cache_fetches_once_for_all_threads_and_refreshes_before_expiry():
    now = [1000.0]
    fetched = []

    def fetch():
        fetched.append(1)
        time.sleep(0.1)  # the first fetch is still out when the other threads ask
        return f"token-{len(fetched)}", 3600.0

    redact = Redactor()
    cache = TokenCache(fetch, clock=lambda: now[0], redactor=redact)
    start = threading.Barrier(16)

    def first_get():
        start.wait()
        cache.get()

    threads = [threading.Thread(target=first_get) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(fetched) == 1 and redact("token-1") == "<redacted>"
    now[0] += 3600 - 301  # still outside the 300 s margin
    assert cache.get() == "token-1"
    now[0] += 2  # inside it: refreshed before Zuora would refuse it
    assert cache.get() == "token-2"


def test_token_cache_invalidate_only_drops_the_refused_token():
    tokens = iter(["a", "b", "c"])
    cache = TokenCache(lambda: (next(tokens), 30.0))  # short lifetime: margin is 10 %, not 300 s
    assert cache.get() == "a"
    cache.invalidate("stale-from-another-thread")
    assert cache.get() == "a"
    cache.invalidate("a")
    assert cache.get() == "b"


@pytest.mark.parametrize("base_url, is_local, expected", [
    ("http://sandbox.local", True, True),  # the embedded sandbox
    ("http://127.0.0.1:8080", False, True),  # a served one
    ("http://localhost:8080/", False, True),
    ("http://[::1]:9000", False, True),
    ("https://rest.zuora.com", False, False),
    ("https://127.0.0.1:8443", False, False),  # https: a proxy to Zuora, not the sandbox
    ("http://example.com", False, False),
])
def test_is_sandbox_is_the_one_rule(base_url, is_local, expected):
    assert is_sandbox(SimpleNamespace(base_url=base_url, is_local=is_local)) is expected


def test_the_modules_the_configuration_and_operations_import_need_no_http_library():
    code = ("import sys\n"
            "import reconciler.zuora.auth, reconciler.zuora.operations, reconciler.zuora.retry, reconciler.zuora.wire\n"
            "print('httpx' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "False"
