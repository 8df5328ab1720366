"""The ceiling for scripts/bench.py: a bare Flask app under the service's own gunicorn settings.

Every POST route answers the service's success envelope (fresh `ts` and `resmsgid`, `msgid` from X-Request-ID,
the X-Request-ID header) without reading the body, checking a key or touching a store: what Flask and gunicorn
cost on this machine, and so the most the service could ever do with them.

The gunicorn settings are not copied here: the server is `otp_service.entrypoints.server.OtpServer` (the class
`otp-service serve` runs), which layers BASE_OPTIONS, the default worker count and the project's gunicorn.conf.py
(or OTP_GUNICORN_CONFIG) exactly as for the service; only the app it loads differs. So the worker class, threads,
keep-alive, timeouts, logger class and hooks cannot drift from the service's.

    python3 scripts/ceiling_app.py --bind 127.0.0.1:8181 --workers 2

With `--cassandra` (and OTP_CASSANDRA_CONTACT_POINTS / OTP_CASSANDRA_KEYSPACE set), every POST also sends what the
service's route asks of Cassandra, through the service's own driver settings (build_cluster: the gevent connection
under the gevent worker), and nothing else: generate, the block's read and an INSERT ... IF NOT EXISTS of a new
key at once; verify, a read, then an INSERT ... IF NOT EXISTS (the node's work of a verify's UPDATE ... IF version).
That is the most any Flask service asking those statements could do here. `--cassandra lwt`: generate sends
only the INSERT, one lightweight transaction per request as the LWT ceiling does, behind HTTP and Flask.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import uuid
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flask import Flask, Response, request  # noqa: E402

from otp_service.entrypoints import server  # noqa: E402

_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def _timestamp() -> str:
    moment = datetime.now(timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%S:") + f"{moment.microsecond // 1000:03d}+0000"


class _Statements:
    """The routes' statements (see the module's docstring), over one session per worker, opened on first use."""

    def __init__(self, lwt_only: bool = False):
        self.lwt_only = lwt_only  # generate sends the INSERT alone: the LWT ceiling's request, behind HTTP and Flask
        self.session = None
        self.prepared: dict = {}

    def _ready(self):
        if self.session is None:
            from otp_service.adapters.cassandra_store import build_cluster, statements
            from otp_service.config import CassandraSettings, EnvReader

            settings = CassandraSettings.from_env(EnvReader())
            session = build_cluster(settings).connect()
            cql = statements(settings.keyspace)
            self.prepared = {name: session.prepare(cql[name]) for name in ("get_otp", "get_block", "insert_otp")}
            self.session = session
        return self.session

    @staticmethod
    def _row() -> tuple:
        import secrets
        import time

        now = int(time.time() * 1000)
        return ("email", f"ceiling-{secrets.token_hex(16)}", "ceiling", now, now, now + 600_000, 0, False, None, 1,
                now, now, None, 1, 600)

    def generate(self) -> None:
        session, row = self._ready(), self._row()
        if self.lwt_only:
            session.execute(self.prepared["insert_otp"], row)
            return
        block = session.execute_async(self.prepared["get_block"], row[:2])
        session.execute(self.prepared["insert_otp"], row)
        block.result()

    def verify(self) -> None:
        session = self._ready()
        session.execute(self.prepared["get_otp"], ("email", "ceiling-absent"))
        session.execute(self.prepared["insert_otp"], self._row())


def create_ceiling_app(cassandra: str = "") -> Flask:
    app = Flask("otp_ceiling")
    statements = _Statements(lwt_only=cassandra == "lwt") if cassandra else None

    def envelope(api_id: str, result: dict) -> Response:
        given = request.headers.get("X-Request-ID")
        msgid = given if given and _SAFE_REQUEST_ID.match(given) else str(uuid.uuid4())
        body = {
            "id": api_id,
            "ver": "v1",
            "ts": _timestamp(),
            "params": {"resmsgid": str(uuid.uuid4()), "msgid": msgid, "err": "", "status": "success", "errmsg": ""},
            "responseCode": "OK",
            "result": result,
        }
        response = Response(json.dumps(body), status=200, mimetype="application/json")
        response.headers["X-Request-ID"] = msgid
        return response

    @app.post("/v1/otp/generate")
    def generate():
        if statements is not None:
            statements.generate()
        return envelope("api.otp.generate", {"response": "SUCCESS"})

    @app.post("/v1/otp/verify")
    def verify():
        if statements is not None:
            statements.verify()
        return envelope("api.otp.verify", {"response": "SUCCESS"})

    @app.get("/health")
    def health():
        result = {"name": "otp-ceiling", "healthy": True, "checks": [{"name": "store", "healthy": True}]}
        return envelope("api.health", result)

    return app


class CeilingServer(server.OtpServer):
    """The service's gunicorn application class, loading the ceiling app instead of the service."""

    cassandra = ""

    def load(self):
        return create_ceiling_app(self.cassandra)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bind", default="127.0.0.1:8181")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--cassandra", nargs="?", const="statements", choices=("statements", "lwt"), default="",
                        help="also send each route's Cassandra statements; `lwt`: generate sends only the INSERT ... "
                             "IF NOT EXISTS (the LWT ceiling's one request, behind HTTP and Flask)")
    args = parser.parse_args(argv)
    path = server.config_file()
    CeilingServer.cassandra = args.cassandra
    CeilingServer({"bind": args.bind, "workers": args.workers}, path).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
