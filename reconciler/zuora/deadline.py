"""Wall-clock deadlines for HTTP attempts: httpx's timeouts bound each read, not a whole answer.

An attempt runs `with bounded(at):` in its thread; every socket read and write made for it (through
`transport()`'s network backend) and every body chunk read (`on_time`) then ends by `at`, so a server
trickling one byte at a time times out like one that sends nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import httpcore
import httpx

# The wall-clock deadline of the attempt running in this thread (a call runs in the thread that makes it).

_DEADLINE = threading.local()


@contextmanager
def bounded(at: float) -> Iterator[None]:
    """Bound this thread's socket operations by `at` (an outer deadline, a token fetched mid-call, is kept)."""
    outer = getattr(_DEADLINE, "at", None)
    _DEADLINE.at = at if outer is None else min(outer, at)
    try:
        yield
    finally:
        _DEADLINE.at = outer


def left(timeout: float | None, error: type[Exception]) -> float | None:
    """`timeout` shortened to what is left of this thread's deadline; `error` once nothing is left."""
    at = getattr(_DEADLINE, "at", None)
    if at is None:
        return timeout
    left = at - time.monotonic()
    if left <= 0:
        raise error("the call's deadline passed")
    return left if timeout is None else min(timeout, left)


def on_time(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """`chunks`, ended by a timeout once this thread's deadline passed (any transport, the sandbox's too)."""
    for chunk in chunks:
        left(None, httpx.ReadTimeout)
        yield chunk


def overdue(at: float, limit: float) -> str | None:
    """Why an attempt that failed at its deadline failed, in words; None when it failed before."""
    if time.monotonic() < at - 0.01:
        return None
    if limit < 0:
        return "timed out: the run's time limit (--timeout) ran out while waiting for the answer"
    return (f"timed out: no complete answer within {limit:g} s (the call deadline, zuora.call_timeout "
            "in reconciler.yaml)")


class _DeadlineStream(httpcore.NetworkStream):
    """A socket whose every read and write ends by the deadline of the attempt using it."""

    def __init__(self, inner: httpcore.NetworkStream):
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, left(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, left(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: Any, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        return _DeadlineStream(self._inner.start_tls(ssl_context, server_hostname,
                                                     left(timeout, httpcore.ConnectTimeout)))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's network backend, its connections made `_DeadlineStream`s."""

    def __init__(self, inner: httpcore.NetworkBackend):
        self._inner = inner

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        return _DeadlineStream(self._inner.connect_tcp(host, port, left(timeout, httpcore.ConnectTimeout),
                                                       local_address, socket_options))

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        return _DeadlineStream(self._inner.connect_unix_socket(path, left(timeout, httpcore.ConnectTimeout),
                                                               socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def deadline_transport(*, verify: bool, limits: httpx.Limits) -> httpx.HTTPTransport:
    """httpx's own transport, its sockets bounded by each attempt's deadline (httpx's timeouts are per read:
    a server sending one byte a second would never trip them)."""
    transport = httpx.HTTPTransport(verify=verify, limits=limits)
    pool = getattr(transport, "_pool", None)
    if isinstance(pool, httpcore.ConnectionPool):  # httpx's internals; without them the per-chunk check remains
        pool._network_backend = _DeadlineBackend(pool._network_backend)
    return transport
