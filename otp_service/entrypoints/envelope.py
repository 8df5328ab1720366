"""Sunbird's response envelope: `id, ver, ts, params, responseCode, result` on every answer, success or error."""
from __future__ import annotations

import re
import uuid
from datetime import datetime, timezone
from typing import Any

from flask import Response, current_app, g, json, request

from ..domain.errors import OtpError

# The contract's error table: the HTTP status of each code (INVALID_REQUEST and SERVER_ERROR carry their own).
STATUS_OF = {
    "MANDATORY_PARAMETER_MISSING": 400,
    "INVALID_VALUE": 400,
    "INVALID_EMAIL": 400,
    "INVALID_PHONE": 400,
    "KEY_ALREADY_IN_USE": 400,
    "KEY_BLOCKED": 400,
    "MAX_LIMIT_EXHAUSTED": 400,
    "ERROR_RATE_LIMIT_EXCEEDED": 429,
    "ERROR_INVALID_OTP": 400,
    "OTP_VERIFICATION_FAILED": 400,
    "RESOURCE_NOT_FOUND": 404,
    "UNAUTHORIZED": 401,
    "INVALID_REQUEST": 400,
    "DELIVERY_FAILED": 502,
    "SERVER_ERROR": 500,
}

_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def response_code(status: int) -> str:
    if status < 400:
        return "OK"
    return {401: "UNAUTHORIZED", 404: "RESOURCE_NOT_FOUND", 429: "TOO_MANY_REQUESTS"}.get(
        status, "SERVER_ERROR" if status >= 500 else "CLIENT_ERROR"
    )


def timestamp(moment: datetime | None = None) -> str:
    """`yyyy-MM-dd HH:mm:ss:SSS+0000`, UTC."""
    moment = moment or datetime.now(timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%S:") + f"{moment.microsecond // 1000:03d}+0000"


def request_msgid(body: Any = None) -> str:
    """X-Request-ID, else the body's params.msgid, else a new UUID. Only plain tokens are echoed back."""
    for candidate in (request.headers.get("X-Request-ID"), _body_msgid(body)):
        if isinstance(candidate, str) and _SAFE_REQUEST_ID.match(candidate):
            return candidate
    return str(uuid.uuid4())


def _body_msgid(body: Any) -> Any:
    if isinstance(body, dict) and isinstance(body.get("params"), dict):
        return body["params"].get("msgid")
    return None


def current_msgid() -> str:
    if "msgid" not in g:
        g.msgid = request_msgid()
    return g.msgid


def api_id() -> str:
    return g.get("api_id", "api.otp")


def respond(status: int = 200, result: dict | None = None, error: OtpError | None = None) -> Response:
    g.status = status
    g.err = error.err if error else ""
    body = {
        "id": api_id(),
        "ver": g.get("api_ver", "v1"),
        "ts": timestamp(),
        "params": {
            "resmsgid": str(uuid.uuid4()),
            "msgid": current_msgid(),
            "err": error.err if error else "",
            "status": error.err if error else "success",
            "errmsg": error.message if error else "",
        },
        "responseCode": response_code(status),
        "result": (error.result if error else result) or {},
    }
    response = current_app.response_class(json.dumps(body), status=status, mimetype="application/json")
    response.headers["X-Request-ID"] = current_msgid()
    if error is not None and error.retry_after:
        response.headers["Retry-After"] = str(error.retry_after)
    return response


def respond_error(error: OtpError) -> Response:
    return respond(error.status or STATUS_OF.get(error.err, 500), error=error)
