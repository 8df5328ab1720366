"""What every HTTP stand-in shares: a threaded server on 127.0.0.1 (port 0), a record of the requests it got, a
hang that `stop()` releases, and a JSON answer that tolerates a client that has already given up."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Server(ThreadingHTTPServer):
    request_queue_size = 1024  # the listen backlog: a service sends hundreds of requests at once (socketserver: 5)


class HttpStandIn:
    """Base of the stand-in dataclasses, which declare `requests` (a list) and `hang_seconds`, and answer in
    `_handle(handler)`. Start with `start()` (or `with`); `root_url` is then http://127.0.0.1:<port>."""

    thread_name = "http-standin"
    keep_alive = False  # HTTP/1.1 keep-alive, as a real service behind a gateway
    requests: list
    hang_seconds: float

    def __post_init__(self):
        self._lock = threading.Lock()
        self._release = threading.Event()
        self._server: ThreadingHTTPServer | None = None

    def start(self):
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1" if standin.keep_alive else "HTTP/1.0"

            def do_GET(self):  # noqa: N802 (http.server's naming)
                standin._handle(self)

            def do_POST(self):  # noqa: N802
                standin._handle(self)

            def log_message(self, *args):  # keep pytest's output clean
                pass

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, args=(0.05,), name=self.thread_name, daemon=True).start()
        return self

    def stop(self) -> None:
        self._release.set()  # let hanging handlers go
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def root_url(self) -> str:
        assert self._server is not None, "start() first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def received(self) -> list:
        with self._lock:
            return list(self.requests)

    def _record(self, request) -> None:
        with self._lock:
            self.requests.append(request)

    def _hang(self) -> None:
        """No answer until `stop()`, or `hang_seconds` at most, so a forgotten hang cannot stall the suite."""
        self._release.wait(self.hang_seconds)

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        raise NotImplementedError


def answer(h: BaseHTTPRequestHandler, status: int, payload: dict | None, *, raw: bytes | None = None,
           content_type: str = "application/json") -> None:
    body = raw if raw is not None else json.dumps(payload).encode()
    try:
        h.send_response(status)
        h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)
    except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout test): nothing to answer
        pass
