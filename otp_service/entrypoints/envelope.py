"""Sunbird's response envelope: `id, ver, ts, params, responseCode, result` on every answer, success or error."""
from __future__ import annotations

import re
import time
import uuid
from datetime import datetime
from typing import Any

from flask import Request, Response, current_app, g, request

from ..domain import sunbird_codes
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
    "DESTINATION_NOT_ALLOWED": 400,
    "DELIVERY_FAILED": 502,
    "SERVER_ERROR": 500,
}

# A msgid is echoed in a response header and every log line: a plain token, matched whole (`$` alone would also
# match before a final newline, and a newline in a header breaks the response).
_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")

# Every envelope answer is about one caller's key or code: no cache between the caller and us may keep it.
NO_STORE = "no-store"


def response_code(status: int) -> str:
    if status < 400:
        return "OK"
    return {401: "UNAUTHORIZED", 404: "RESOURCE_NOT_FOUND", 429: "TOO_MANY_REQUESTS"}.get(
        status, "SERVER_ERROR" if status >= 500 else "CLIENT_ERROR"
    )


def timestamp(moment: datetime | None = None) -> str:
    """`yyyy-MM-dd HH:mm:ss:SSS+0000`, UTC."""
    if moment is None:
        return _now_timestamp()
    return moment.strftime("%Y-%m-%d %H:%M:%S:") + f"{moment.microsecond // 1000:03d}+0000"


_second_prefix: tuple[int, str] = (-1, "")  # (epoch second, "yyyy-MM-dd HH:mm:ss:") of the last answer


def _now_timestamp() -> str:
    """timestamp() of now, formatting the date and time only once a second (every answer carries one)."""
    global _second_prefix
    now = time.time()
    second = int(now)
    cached_second, prefix = _second_prefix
    if cached_second != second:
        prefix = time.strftime("%Y-%m-%d %H:%M:%S:", time.gmtime(second))
        _second_prefix = (second, prefix)
    return f"{prefix}{int((now - second) * 1000) % 1000:03d}+0000"


def request_msgid(body: Any = None, req: Request | None = None) -> str:
    """X-Request-ID, else the body's params.msgid, else a new UUID. Only plain tokens are echoed back."""
    for candidate in ((req or request).headers.get("X-Request-ID"), _body_msgid(body)):
        if isinstance(candidate, str) and _SAFE_REQUEST_ID.fullmatch(candidate):
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
    state = g._get_current_object()  # once: see api._state
    msgid = state.msgid if "msgid" in state else current_msgid()
    err = error.err if error else ""
    state.status = status
    state.err = error.contract_err if error else ""  # logs and metrics count the contract's code on v1 and v2
    body = {
        "id": state.get("api_id", "api.otp"),
        "ver": state.get("api_ver", "v1"),
        "ts": _now_timestamp(),
        "params": {
            "resmsgid": str(uuid.uuid4()),
            "msgid": msgid,
            "err": err,
            "status": err if error else "success",
            "errmsg": error.message if error else "",
        },
        "responseCode": response_code(status),
        "result": (error.result if error else result) or {},
    }
    app = current_app._get_current_object()  # type: ignore[attr-defined]  # a LocalProxy, typed as the Flask app
    provider = app.json
    encode = getattr(provider, "dumps_bytes", None) or provider.dumps  # bytes from ours; str from any other
    headers = {"X-Request-ID": msgid, "Cache-Control": NO_STORE}
    if error is not None and error.retry_after:
        headers["Retry-After"] = str(error.retry_after)
    return app.response_class(encode(body), status=status, headers=headers, mimetype="application/json")


def respond_error(error: OtpError) -> Response:
    status = error.status or STATUS_OF.get(error.err, 500)
    if g.get("api_ver") == "v2":
        error, status = userorg_error(error, status)
    return respond(status, error=error)


class UserorgError(OtpError):
    """One of the contract's errors as /v2 answers it: userorg-service's code, the same message and result."""

    def __init__(self, contract: OtpError, code: str, status: int):
        super().__init__(code, contract.message, contract.result, status=status)
        self.retry_after = contract.retry_after
        self._contract_err = contract.err

    @property
    def contract_err(self) -> str:
        return self._contract_err


def userorg_error(error: OtpError, status: int) -> tuple[OtpError, int]:
    """The /v2 answer of a contract error (domain/sunbird_codes.py): userorg's code, and its status where the two
    differ (a blocked key or a full send window is userorg's rate limit, 429)."""
    operation = sunbird_codes.OPERATION_OF_API.get(g.get("api_id", ""))
    if operation is None:  # not an OTP operation (cannot happen on /v2 today): the contract's code stays
        return error, status
    code, v2_status = sunbird_codes.v2_code(error.err, operation, error.userorg_key)
    status = v2_status or status
    return UserorgError(error, code, status), status


def standalone_error(status: int, error: OtpError) -> tuple[bytes, str]:
    """(the envelope's JSON, its msgid) for an error answered outside Flask: gunicorn's refusals of requests it
    could not parse (server.py). No request was read, so the msgid is a new UUID and the id `api.otp`."""
    from .jsonio import dumps_bytes

    msgid = str(uuid.uuid4())
    body = {
        "id": "api.otp",
        "ver": "v1",
        "ts": _now_timestamp(),
        "params": {
            "resmsgid": str(uuid.uuid4()),
            "msgid": msgid,
            "err": error.err,
            "status": error.err,
            "errmsg": error.message,
        },
        "responseCode": response_code(status),
        "result": error.result or {},
    }
    return dumps_bytes(body), msgid
