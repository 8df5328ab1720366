"""gunicorn, driven from Python: each worker builds its own app after the fork, so no store connection,
thread or lock is ever shared across processes."""
from __future__ import annotations

import multiprocessing

from gunicorn.app.base import BaseApplication


def default_workers() -> int:
    return min(2 * multiprocessing.cpu_count() + 1, 8)


class OtpServer(BaseApplication):
    def __init__(self, options: dict):
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for name, value in self.options.items():
            if value is not None and name in self.cfg.settings:
                self.cfg.set(name, value)

    def load(self):
        from .app import create_app

        return create_app()


def run(bind: str, workers: int | None = None) -> int:
    OtpServer(
        {
            "bind": bind,
            "workers": workers or default_workers(),
            "worker_class": "gthread",
            "threads": 4,
            "timeout": 30,
            "graceful_timeout": 20,
            "keepalive": 5,
            "preload_app": False,
        }
    ).run()
    return 0
