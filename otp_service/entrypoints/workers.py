"""The default gunicorn worker: gunicorn's gevent worker, with the limits a worker that holds hundreds of requests
at once needs.

Under gevent one worker process serves up to `worker_connections` connections, each in a greenlet that yields
whenever it waits on a socket (the provider, the user directory, Cassandra, the client). So a request waiting
300 ms on Twilio costs no thread and no CPU, and throughput stops depending on the providers' latency. The worker
monkey-patches the process when it starts (gunicorn's gevent worker does, before it loads the app), so
`requests`, `smtplib`, `time.sleep` and the threading primitives all yield; the Cassandra driver picks its gevent
connection class then too (cassandra_store.connection_class).

What this module adds to gunicorn's worker, both per worker process:
- a bound on the requests in flight (OTP_MAX_IN_FLIGHT): one more is answered at once with 503 SERVER_ERROR and
  `Retry-After: 1` in the envelope, instead of queueing behind the others past the gateway's timeout;
- a deadline for the request body (OTP_BODY_READ_TIMEOUT_SECONDS, from when the headers are in): a client that
  trickles its body gets 408 INVALID_REQUEST and its connection is closed. (gunicorn's gevent worker already cuts
  a connection whose request line and headers are not complete within `keepalive` seconds.)
"""
from __future__ import annotations

import logging
import socket
import time
import uuid
from typing import Any

import gevent
from gunicorn.workers.ggevent import GeventWorker as _GunicornGeventWorker
from werkzeug.exceptions import RequestTimeout

from ..config import EnvReader
from ..domain import errors
from .envelope import response_code, timestamp
from .jsonio import dumps_bytes

log = logging.getLogger("otp_service.server")

DEFAULT_MAX_IN_FLIGHT = 500
DEFAULT_BODY_READ_TIMEOUT = 5.0
RETRY_AFTER_SECONDS = 1

_API_IDS = {"/v1/otp/generate": "api.otp.generate", "/v1/otp/verify": "api.otp.verify", "/health": "api.health",
            "/v2/otp/generate": "api.otp.generate", "/v2/otp/verify": "api.otp.verify"}


def limits_from_env(env: EnvReader | None = None) -> tuple[int, float]:
    """(OTP_MAX_IN_FLIGHT, OTP_BODY_READ_TIMEOUT_SECONDS); gunicorn.conf.py reads them too, so a bad value stops
    start-up in the master, naming the variable, rather than every worker as it boots."""
    env = env or EnvReader()
    return (
        env.int("OTP_MAX_IN_FLIGHT", DEFAULT_MAX_IN_FLIGHT, 1, 100_000),
        env.float("OTP_BODY_READ_TIMEOUT_SECONDS", DEFAULT_BODY_READ_TIMEOUT, 0.1),
    )


class ServingLimits:
    """WSGI middleware: the in-flight bound and the body deadline (see the module's docstring). It counts without a
    lock: it runs only in a gevent worker, where greenlets switch at I/O, never inside `+= 1`."""

    def __init__(self, app, max_in_flight: int, body_timeout: float):
        self.app = app
        self.max_in_flight = max_in_flight
        self.body_timeout = body_timeout
        self.in_flight = 0
        self.refused = 0
        self._last_warning = 0.0

    def __getattr__(self, name):  # the wrapped app's attributes (post_worker_init reads `extensions`)
        return getattr(self.app, name)

    def __call__(self, environ, start_response):
        if self.in_flight >= self.max_in_flight:
            return self._overloaded(environ, start_response)
        self.in_flight += 1
        try:
            if environ.get("CONTENT_LENGTH", "0") not in ("", "0") or "HTTP_TRANSFER_ENCODING" in environ:
                environ["wsgi.input"] = DeadlineInput(environ["wsgi.input"], self.body_timeout,
                                                      environ.get("gunicorn.socket"))
            return self.app(environ, start_response)
        finally:
            self.in_flight -= 1

    def _overloaded(self, environ, start_response):
        self.refused += 1
        now = time.monotonic()
        if now - self._last_warning >= 1.0:  # one line a second at most: a flood must not become a log flood
            self._last_warning = now
            log.warning("over the in-flight bound (%d): answering 503 with Retry-After (%d refused so far)",
                        self.max_in_flight, self.refused)
        given = environ.get("HTTP_X_REQUEST_ID", "")
        msgid = given if given and len(given) <= 128 and all(c.isalnum() or c in "._:-" for c in given) \
            else str(uuid.uuid4())
        failure = errors.server_error(503)
        body = dumps_bytes({
            "id": _API_IDS.get(environ.get("PATH_INFO", ""), "api.otp"),
            "ver": "v2" if environ.get("PATH_INFO", "").startswith("/v2/") else "v1",
            "ts": timestamp(),
            "params": {"resmsgid": str(uuid.uuid4()), "msgid": msgid, "err": failure.err, "status": failure.err,
                       "errmsg": failure.message},
            "responseCode": response_code(503),
            "result": {},
        })
        metrics = getattr(self.app, "extensions", {}).get("otp_metrics")
        if metrics is not None:  # counted like any answer: otp_http_requests_total{status="503",err="SERVER_ERROR"}
            path = environ.get("PATH_INFO", "")
            method = environ.get("REQUEST_METHOD", "")
            metrics.observe_request(path if path in _API_IDS else "<unmatched>",
                                    method if method in ("GET", "POST") else "other", 503, failure.err, 0.0)
        start_response("503 SERVICE UNAVAILABLE", [
            ("Content-Type", "application/json"), ("Content-Length", str(len(body))),
            ("Retry-After", str(RETRY_AFTER_SECONDS)), ("X-Request-ID", msgid),
        ])
        return [body]


class DeadlineInput:
    """`wsgi.input` that must be read to its end within `timeout` seconds of the request's start. Past it, a read
    raises werkzeug's RequestTimeout (the app answers 408 in the envelope) and the connection's reading side is shut,
    so gunicorn closes it after that answer instead of waiting on the rest of the body."""

    def __init__(self, stream, timeout: float, sock: socket.socket | None):
        self.stream = stream
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self.sock = sock

    def _call(self, method, *args):
        left = self.deadline - time.monotonic()
        timer = gevent.Timeout(max(left, 0.0))
        timer.start()
        try:
            return method(*args)
        except gevent.Timeout as expired:
            if expired is not timer:
                raise
            self._cut()
            raise RequestTimeout(f"The request body did not arrive within {self.timeout:g} s.") from None
        finally:
            timer.close()

    def _cut(self) -> None:
        if self.sock is not None:
            try:
                self.sock.shutdown(socket.SHUT_RD)
            except OSError:
                pass

    def read(self, *args):
        return self._call(self.stream.read, *args)

    def readline(self, *args):
        return self._call(self.stream.readline, *args)

    def readlines(self, *args):
        return self._call(self.stream.readlines, *args)

    def __iter__(self):
        while True:
            line = self.readline()
            if not line:
                return
            yield line


class GeventWorker(_GunicornGeventWorker):
    """gunicorn's gevent worker (StreamServer and gunicorn's own HTTP parser), its app wrapped in ServingLimits."""

    wsgi: Any  # set by gunicorn's Worker.load_wsgi

    def load_wsgi(self):
        super().load_wsgi()
        max_in_flight, body_timeout = limits_from_env()
        self.wsgi = ServingLimits(self.wsgi, max_in_flight, body_timeout)
