"""gunicorn, driven from Python: each worker builds its own app after the fork, so no store connection,
thread or lock is ever shared across processes.

`otp-service serve` reads gunicorn.conf.py (the project's, or the file named by OTP_GUNICORN_CONFIG); without one
(an install from a wheel) it uses BASE_OPTIONS, the same values. The hooks here keep /metrics right under several
workers (one PROMETHEUS_MULTIPROC_DIR per server, emptied at start, dead workers marked) and log in JSON.
"""
from __future__ import annotations

import glob
import logging
import multiprocessing
import os
import runpy
import shutil
import tempfile
import types
from datetime import datetime
from pathlib import Path
from ssl import SSLError

from gunicorn import util
from gunicorn.app.base import BaseApplication
from gunicorn.glogging import Logger
from gunicorn.http import errors as http_errors
from gunicorn.http import message as http_message
from gunicorn.http.body import ChunkedReader
from gunicorn.http.wsgi import Response, default_environ
from werkzeug.exceptions import RequestEntityTooLarge

from ..domain import errors
from ..envreader import EnvReader
from .envelope import NO_STORE, standalone_error
from .logs import RequestContextFilter, choose_format, formatter, known_method

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONFIG_ENV = "OTP_GUNICORN_CONFIG"
PROJECT_CONFIG = Path(__file__).resolve().parents[2] / "gunicorn.conf.py"

log = logging.getLogger("otp_service.server")
_created_metrics_dir: str | None = None


def default_workers() -> int:
    return min(2 * multiprocessing.cpu_count() + 1, 8)


# -- hooks (they run in the gunicorn master, except post_worker_init) --------------------------------------------------
def on_starting(server) -> None:
    """Before any worker forks: give the workers one empty folder for their metric files."""
    global _created_metrics_dir
    folder = os.environ.get(MULTIPROC_ENV)
    if folder:
        os.makedirs(folder, exist_ok=True)
        # Files of a previous run would be summed with this one's (and their pids may be reused).
        for stale in glob.glob(os.path.join(folder, "*.db")):
            os.remove(stale)
    else:
        folder = tempfile.mkdtemp(prefix="otp-service-metrics-")
        _created_metrics_dir = folder
        os.environ[MULTIPROC_ENV] = folder
    server.log.info("metrics: workers write to %s (prometheus_client multiprocess mode)", folder)


def post_worker_init(worker) -> None:
    """In the new worker, whatever its class: refuse what gunicorn cannot parse in the envelope, bound chunked
    bodies, and open the store (after the fork), so the first request does not wait for the connection."""
    from ..adapters.store import StoreUnavailable
    from .app import MAX_BODY_BYTES  # here, not at the top: the master never imports the app

    answer_refusals_in_the_envelope(worker)
    bound_chunked_bodies(MAX_BODY_BYTES)

    app = getattr(worker, "wsgi", None)
    service = getattr(app, "extensions", {}).get("otp_service")
    if service is None:
        return
    try:
        service.store.open()
    except StoreUnavailable as exc:
        worker.log.warning("store not reachable at worker start (health answers 503 until it is): %s", exc)


def child_exit(server, worker) -> None:
    """A worker is gone (stopped, killed, timed out): its counters stay, its live gauges go."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


def on_exit(server) -> None:
    if _created_metrics_dir is not None:
        shutil.rmtree(_created_metrics_dir, ignore_errors=True)


# -- what gunicorn refuses before the app sees a request ---------------------------------------------------------------
# gunicorn answers a request it cannot parse (a malformed request line, a bad header, a request line or headers over
# its limits) from Worker.handle_error, with an HTML page, and logs the offending text ("Invalid request from ip=...:
# Invalid HTTP Version: '98765 77777&email=...'"). Every worker class (gthread, gevent, sync) calls
# `self.handle_error`, so binding ours on the worker instance replaces it for all of them.

# (status, reason, errmsg) for gunicorn's refusals; any other ParseException is a 400, anything else a 500.
_REFUSALS = (
    (http_errors.LimitRequestLine, 414, "URI Too Long", "Request line is too long."),
    (http_errors.LimitRequestHeaders, 431, "Request Header Fields Too Large", "Request header fields are too large."),
    (http_errors.ExpectationFailed, 417, "Expectation Failed", "Expect is not supported."),
    (http_errors.ForbiddenProxyRequest, 403, "Forbidden", "Request is forbidden."),
    (SSLError, 403, "Forbidden", "Request is forbidden."),
    # RFC 9112 suggests 501 for an unknown transfer coding; answered as the 400 it is for this API.
    (http_errors.UnsupportedTransferCoding, 400, "Bad Request", "Transfer-Encoding is not supported."),
)
_OUR_FAULTS = (http_errors.ConfigurationProblem, http_errors.InvalidResponseHeader,
               http_errors.InvalidResponseHeaderName)


def refusal(exc: BaseException) -> tuple[int, str, str] | None:
    """(status, reason, errmsg) when `exc` is gunicorn refusing the caller's request; None when it is a fault of
    ours (a 500)."""
    if isinstance(exc, _OUR_FAULTS):
        return None
    for kind, status, reason, message in _REFUSALS:
        if isinstance(exc, kind):
            return status, reason, message
    if isinstance(exc, http_errors.ParseException):
        return 400, "Bad Request", "Request is invalid."
    return None


def envelope_handle_error(self, req, client, addr, exc) -> None:
    """Worker.handle_error, answering in the envelope and logging only the kind of refusal (never the request
    line, a header or the query string it came from)."""
    started = datetime.now()
    addr = addr or ("", -1)  # a unix socket
    refused = refusal(exc)
    if refused is not None:
        status, reason, message = refused
        error = errors.invalid_request(message, status)
        self.log.warning("invalid request from ip=%s refused with %d: %s", addr[0], status, type(exc).__name__)
        if req is None:
            req = getattr(exc, "req", None)  # a bad header: the request line was read (for the access log)
    else:
        status, reason = 500, "Internal Server Error"
        error = errors.server_error(500)
        self.log.error("error handling a request: %s", type(exc).__name__, exc_info=(type(exc), exc, exc.__traceback__))
    body, msgid = standalone_error(status, error)
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        f"Date: {util.http_date()}\r\n"
        "Connection: close\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"X-Request-ID: {msgid}\r\n"
        f"Cache-Control: {NO_STORE}\r\n\r\n"
    )
    if req is not None:
        try:
            environ = default_environ(req, client, self.cfg)
            environ["REMOTE_ADDR"] = addr[0]
            resp = Response(req, client, self.cfg)
            resp.status = f"{status} {reason}"
            resp.headers = [("X-Request-ID", msgid)]
            resp.sent = len(body)
            self.log.access(resp, req, environ, datetime.now() - started)
        except Exception:
            self.log.debug("could not write an access line for a refused request")
    try:
        util.write(client, head.encode("latin-1") + body)
    except Exception:
        self.log.debug("could not send the refusal")


def answer_refusals_in_the_envelope(worker) -> None:
    worker.handle_error = types.MethodType(envelope_handle_error, worker)


class BoundedChunkedReader(ChunkedReader):
    """gunicorn's chunked-body reader, refusing at once a chunk that declares more than the app reads at all.

    The app stops reading at its limit (16 KiB, werkzeug's max_content_length: 413), but only once it has the bytes:
    a chunk size of FFFFFFFFFFFFFFFFFFFF made the reader wait for bytes the caller never sends, and the worker
    thread with it. RequestEntityTooLarge passes through werkzeug's stream and Flask answers it (413 envelope);
    gunicorn marks the body failed and closes the connection."""

    limit = 16 * 1024  # bytes; bound_chunked_bodies sets the app's

    def parse_chunk_size(self, unreader, data=None):
        size, rest = super().parse_chunk_size(unreader, data)
        if size > self.limit:
            raise RequestEntityTooLarge()
        return size, rest


def bound_chunked_bodies(limit: int) -> None:
    """gunicorn's Request builds its chunked reader from this module attribute; there is no setting for it."""
    BoundedChunkedReader.limit = limit
    http_message.ChunkedReader = BoundedChunkedReader


# -- logging -----------------------------------------------------------------------------------------------------------
class JsonLogger(Logger):
    """gunicorn's own lines (start-up, worker boots and deaths) and its access log, as JSON lines like the app's."""

    def setup(self, cfg) -> None:
        super().setup(cfg)
        env = EnvReader()
        fmt = choose_format(env.choice("OTP_LOG_FORMAT", "auto", ("auto", "json", "text")),
                            production=env.str("OTP_ENV", "development").lower() == "production")
        for target in (self.error_log, self.access_log):
            for handler in target.handlers:
                handler.setFormatter(formatter(fmt, getattr(handler, "stream", None)))
                if not any(isinstance(f, RequestContextFilter) for f in handler.filters):
                    handler.addFilter(RequestContextFilter())

    def access(self, resp, req, environ, request_time) -> None:
        """One line per answer. Nothing the caller wrote goes in it as written: the route the app matched (not
        the path, never the query string), the method if it is a known one, no header value (the msgid is the
        app's, a plain token)."""
        if not self.access_log_enabled:
            return
        status = resp.status.split(None, 1)[0] if isinstance(resp.status, str) else resp.status
        headers = dict((name.lower(), value) for name, value in resp.headers)
        request = environ.get("werkzeug.request")  # the app's Request, when the app saw this one
        rule = getattr(request, "url_rule", None)
        try:
            self.access_log.info(
                "access",
                extra={
                    "msgid": headers.get("x-request-id", "-"),
                    "method": known_method(environ.get("REQUEST_METHOD")),
                    "route": rule.rule if rule is not None else "<unmatched>",
                    "status": int(status),
                    "bytes": getattr(resp, "sent", None),
                    "latency_ms": round(request_time.total_seconds() * 1000, 1),
                    "remote": environ.get("REMOTE_ADDR"),
                },
            )
        except Exception:
            self.exception("could not write an access log line")


# -- the application ---------------------------------------------------------------------------------------------------
# What serve runs with when no gunicorn.conf.py is found; gunicorn.conf.py states the same values (a test checks).
WORKER_CLASSES = {"gevent": "otp_service.entrypoints.workers.GeventWorker", "gthread": "gthread"}
BASE_OPTIONS: dict = {
    "worker_class": WORKER_CLASSES["gevent"],  # see workers.py: hundreds of requests in flight per worker
    "worker_connections": 1000,
    "threads": 4,  # gthread only
    "timeout": 30,
    "graceful_timeout": 20,
    "keepalive": 5,
    "preload_app": False,  # each worker builds its own app, and so its own store session, after the fork
    "errorlog": "-",
    "control_socket_disable": True,  # gunicorn >= 25.1: one per user by default, so two servers would share one
    "logger_class": "otp_service.entrypoints.server.JsonLogger",
    "on_starting": on_starting,
    "post_worker_init": post_worker_init,
    "child_exit": child_exit,
    "on_exit": on_exit,
}


def config_file() -> Path | None:
    """OTP_GUNICORN_CONFIG, else the project's gunicorn.conf.py (a source checkout or the container's /app)."""
    named = os.environ.get(CONFIG_ENV, "").strip()
    if named:
        return Path(named)
    return PROJECT_CONFIG if PROJECT_CONFIG.is_file() else None


def read_config_file(path: Path) -> dict:
    """The gunicorn settings a config file defines (its other names are ignored, as gunicorn does)."""
    if not path.is_file():
        from ..config import ConfigError

        raise ConfigError(f"{CONFIG_ENV}: no file at {path}")
    return runpy.run_path(str(path))


class OtpServer(BaseApplication):
    def __init__(self, options: dict, config_path: Path | None = None):
        self.options = options
        self.config_path = config_path
        super().__init__()

    def load_config(self) -> None:
        layers = [BASE_OPTIONS, {"workers": default_workers(), "loglevel": os.environ.get("OTP_LOG_LEVEL") or "info"}]
        if self.config_path is not None:
            layers.append(read_config_file(self.config_path))  # read again on a reload (HUP)
        layers.append(self.options)
        for layer in layers:
            for name, value in layer.items():
                if value is not None and name in self.cfg.settings and name != "wsgi_app":
                    self.cfg.set(name, value)

    def load(self):
        from .app import create_app

        return create_app()


def run(bind: str, workers: int | None = None) -> int:
    path = config_file()
    if path is not None:
        read_config_file(path)  # a bad value stops here, with a message naming its variable
    OtpServer({"bind": bind, "workers": workers}, path).run()
    return 0
