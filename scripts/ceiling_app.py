"""The ceiling for scripts/bench.py: a bare Flask app under the service's own gunicorn settings.

Every POST route answers the service's success envelope (fresh `ts` and `resmsgid`, `msgid` from X-Request-ID,
the X-Request-ID header) without reading the body, checking a key or touching a store: what Flask and gunicorn
cost on this machine, and so the most the service could ever do with them.

The gunicorn settings are not copied here: the server is `otp_service.entrypoints.server.OtpServer` (the class
`otp-service serve` runs), which layers BASE_OPTIONS, the default worker count and the project's gunicorn.conf.py
(or OTP_GUNICORN_CONFIG) exactly as for the service; only the app it loads differs. So the worker class, threads,
keep-alive, timeouts, logger class and hooks cannot drift from the service's.

    python3 scripts/ceiling_app.py --bind 127.0.0.1:8181 --workers 2
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


def create_ceiling_app() -> Flask:
    app = Flask("otp_ceiling")

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
        return envelope("api.otp.generate", {"response": "SUCCESS"})

    @app.post("/v1/otp/verify")
    def verify():
        return envelope("api.otp.verify", {"response": "SUCCESS"})

    @app.get("/health")
    def health():
        result = {"name": "otp-ceiling", "healthy": True, "checks": [{"name": "store", "healthy": True}]}
        return envelope("api.health", result)

    return app


class CeilingServer(server.OtpServer):
    """The service's gunicorn application class, loading the ceiling app instead of the service."""

    def load(self):
        return create_ceiling_app()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bind", default="127.0.0.1:8181")
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args(argv)
    path = server.config_file()
    CeilingServer({"bind": args.bind, "workers": args.workers}, path).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
