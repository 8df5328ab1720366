"""Log set-up: every line of a request carries its msgid. Keys appear only masked; codes never appear."""
from __future__ import annotations

import hashlib
import logging
import secrets
import sys

from flask import g, has_request_context

from ..config import Settings

_FORMAT = "%(asctime)s %(levelname)s %(name)s msgid=%(msgid)s %(message)s"


class RequestContextFilter(logging.Filter):
    """Adds `msgid` to every record: the request's, or '-' outside a request."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msgid = g.get("msgid", "-") if has_request_context() else "-"
        return True


def configure_logging(level: str = "INFO") -> None:
    """Idempotent: a second app in the same process (tests, workers) does not add a second handler."""
    root = logging.getLogger("otp_service")
    root.setLevel(level)
    if not any(getattr(h, "_otp_service", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(_FORMAT))
        handler.addFilter(RequestContextFilter())
        handler._otp_service = True  # type: ignore[attr-defined]
        root.addHandler(handler)
        root.propagate = True
    for handler in root.handlers:
        if not any(isinstance(f, RequestContextFilter) for f in handler.filters):
            handler.addFilter(RequestContextFilter())


def new_api_key() -> tuple[str, str]:
    """(key, its SHA-256 hex digest): the key goes to the caller, the digest into OTP_API_KEYS."""
    key = secrets.token_urlsafe(32)
    return key, hashlib.sha256(key.encode()).hexdigest()


def development_api_key(settings: Settings) -> tuple[str, ...]:
    """With no OTP_API_KEYS in development, make one for this process and say so."""
    key, digest = new_api_key()
    logging.getLogger("otp_service").warning(
        "development: OTP_API_KEYS is unset; this process accepts the API key %s (Authorization: Bearer <key>)", key
    )
    return (digest,)
