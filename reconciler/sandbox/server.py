"""A threaded HTTP/1.1 server for any WSGI app, able to stream and to drop a connection on purpose.

wsgiref's server is single-threaded and always answers, so this small one is used instead: each
connection gets a daemon thread; request bodies (Content-Length or chunked) reach the app as a
bounded stream; a DroppedConnection (any ConnectionResetError) raised by the app closes the socket
without a single byte of response. A body that ends before its Content-Length or its last chunk is
no request at all (the client died mid-upload): reading it raises ClientGone, so the handler's
transaction rolls back and nothing, not even a refusal, is stored under its Idempotency-Key.
"""

from __future__ import annotations

import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

DRAIN_LIMIT = 64 * 1024 * 1024  # unread request bytes we still swallow so the client sees our answer


class ClientGone(ConnectionResetError):
    """The client hung up before its request body was complete."""


class _BoundedReader:
    """At most `length` bytes of the request body."""

    def __init__(self, stream, length: int):
        self._stream = stream
        self.remaining = length

    def read(self, size: int = -1) -> bytes:
        if self.remaining <= 0:
            return b""
        size = self.remaining if size is None or size < 0 else min(size, self.remaining)
        data = self._stream.read(size)  # a buffered socket file: short only at end of stream
        if len(data) < size:
            raise ClientGone(f"the request body ended {self.remaining - len(data)} bytes short of its "
                             "Content-Length")
        self.remaining -= len(data)
        return data


class _ChunkedReader:
    """A Transfer-Encoding: chunked request body, decoded."""

    def __init__(self, stream):
        self._stream = stream
        self._left = 0
        self.remaining = 1  # unknown until the last chunk is seen

    def _next_chunk(self) -> None:
        line = self._stream.readline(1024)
        if not line:
            raise ClientGone("the chunked request body ended before its last chunk")
        try:
            size = int(line.split(b";")[0].strip() or b"0", 16)
        except ValueError:
            size = 0
        if size == 0:
            while self._stream.readline(1024).strip():  # trailers, up to the blank line
                pass
            self.remaining = 0
        self._left = size

    def read(self, size: int = -1) -> bytes:
        out = []
        wanted = sys.maxsize if size is None or size < 0 else size
        while wanted > 0 and self.remaining:
            if self._left == 0:
                self._next_chunk()
                continue
            data = self._stream.read(min(wanted, self._left))
            if len(data) < min(wanted, self._left):
                raise ClientGone("the chunked request body ended inside a chunk")
            self._left -= len(data)
            wanted -= len(data)
            out.append(data)
            if self._left == 0:
                self._stream.readline(8)  # the CRLF after each chunk
        return b"".join(out)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; with Nagle's algorithm on, each keep-alive
    # request then waits ~40 ms for the peer's delayed ACK.
    disable_nagle_algorithm = True
    server_version = "ZuoraSandbox/1"

    def log_message(self, format, *args):  # noqa: A002 - signature fixed by the base class
        """Stay quiet: the sandbox serves tests and demos."""

    def _handle(self) -> None:
        app = self.server.app
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = _ChunkedReader(self.rfile)
            length = None
        else:
            try:
                length = max(0, int(self.headers.get("Content-Length") or 0))
            except ValueError:
                length = 0
            body = _BoundedReader(self.rfile, length)
        path, _, query = self.path.partition("?")
        environ = {
            "wsgi.version": (1, 0), "wsgi.url_scheme": "http", "wsgi.input": body, "wsgi.errors": sys.stderr,
            "wsgi.multithread": True, "wsgi.multiprocess": False, "wsgi.run_once": False,
            "REQUEST_METHOD": self.command, "SCRIPT_NAME": "", "PATH_INFO": _unquote(path), "QUERY_STRING": query,
            "SERVER_NAME": self.server.server_address[0], "SERVER_PORT": str(self.server.server_address[1]),
            "SERVER_PROTOCOL": self.request_version, "REMOTE_ADDR": self.client_address[0],
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
        }
        if length is not None:
            environ["CONTENT_LENGTH"] = str(length)
        for name, value in self.headers.items():
            key = "HTTP_" + name.upper().replace("-", "_")
            if key not in ("HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH"):
                environ[key] = value if key not in environ else environ[key] + "," + value
        started = {}

        def start_response(status, headers, exc_info=None):
            started["status"], started["headers"] = status, headers
            return lambda data: None

        try:
            result = app(environ, start_response)
        except ConnectionResetError:
            self._drop()
            return
        try:
            self._drain(body)
            self._write(started["status"], started["headers"], result)
        finally:
            close = getattr(result, "close", None)
            if close:
                close()

    def _drain(self, body) -> None:
        drained = 0
        try:
            while body.remaining and drained <= DRAIN_LIMIT:
                drained += len(body.read(64 * 1024))
        except ClientGone:
            pass  # the answer is written anyway; whoever hung up does not read it
        if body.remaining:
            self.close_connection = True

    def _write(self, status: str, headers: list, result) -> None:
        code, _, reason = status.partition(" ")
        self.send_response(int(code), reason)
        names = {name.lower() for name, _ in headers}
        for name, value in headers:
            self.send_header(name, value)
        chunked = "content-length" not in names
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if self.command == "HEAD":
            return
        for data in result:
            if not data:
                continue
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)
            self.wfile.flush()
        if chunked:
            self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _drop(self) -> None:
        """Close the socket without writing anything (fault injection)."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle


def _unquote(path: str) -> str:
    return unquote(path, encoding="latin-1")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address, app):
        self.app = app
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)


class Server:
    """A served sandbox: `.url`, `.start()` (daemon thread), `.serve_forever()`, `.shutdown()`."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0):
        self._httpd = _Server((host, port), app)
        self._thread: threading.Thread | None = None
        bound_host, bound_port = self._httpd.server_address[:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        self.url = f"http://{shown}:{bound_port}"

    def start(self) -> "Server":
        """Serve in a daemon thread; returns self."""
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="sandbox-server", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread until shutdown() or an interrupt."""
        self._httpd.serve_forever()

    def shutdown(self) -> None:
        """Stop serving and close the listening socket."""
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> "Server":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.shutdown()
