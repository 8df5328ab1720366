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
from pathlib import Path

from gunicorn.app.base import BaseApplication
from gunicorn.glogging import Logger

from .logs import JsonFormatter, RequestContextFilter

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
    """Open the store in the new worker (after the fork), so its first request does not wait for the connection."""
    from ..adapters.store import StoreUnavailable

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


# -- logging -------------------------------------------------------------------------------------------------------------
class JsonLogger(Logger):
    """gunicorn's own lines (start-up, worker boots and deaths) and its access log, as JSON lines like the app's."""

    def setup(self, cfg) -> None:
        super().setup(cfg)
        for target in (self.error_log, self.access_log):
            for handler in target.handlers:
                handler.setFormatter(JsonFormatter())
                if not any(isinstance(f, RequestContextFilter) for f in handler.filters):
                    handler.addFilter(RequestContextFilter())

    def access(self, resp, req, environ, request_time) -> None:
        if not self.access_log_enabled:
            return
        status = resp.status.split(None, 1)[0] if isinstance(resp.status, str) else resp.status
        headers = dict((name.lower(), value) for name, value in resp.headers)
        try:
            self.access_log.info(
                "access",
                extra={
                    "msgid": headers.get("x-request-id", "-"),
                    "method": environ.get("REQUEST_METHOD"),
                    "path": environ.get("PATH_INFO"),  # never the query string: nothing of ours goes there
                    "status": int(status),
                    "bytes": getattr(resp, "sent", None),
                    "latency_ms": round(request_time.total_seconds() * 1000, 1),
                    "remote": environ.get("REMOTE_ADDR"),
                    "user_agent": environ.get("HTTP_USER_AGENT"),
                },
            )
        except Exception:
            self.exception("could not write an access log line")


# -- the application -----------------------------------------------------------------------------------------------------
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
