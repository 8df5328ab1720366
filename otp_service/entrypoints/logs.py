"""Log set-up: JSON lines, one object per record, each carrying its request's msgid; or, on a developer's terminal,
one readable line per record (OTP_LOG_FORMAT=auto|json|text).

Keys appear only masked; codes never appear. A request's summary line is the record "request" with the fields
route, method, status, err, outcome, key (masked) and latency_ms; every other line has ts, level, logger, msgid
and message, plus `exc` (the traceback, as one string) when there is one.
"""
from __future__ import annotations

import hashlib
import logging
import secrets
import sys
import time

from flask import g, has_request_context

from ..config import Settings
from .jsonio import dumps_bytes

# Methods a log line or a metric label may carry as they are; any other (a caller may send any token) is "other".
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def known_method(method: str | None) -> str:
    return method if method in KNOWN_METHODS else "other"


# Attributes every LogRecord has; anything else on a record came from `extra=` and becomes a field of the line.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "msgid"}


class RequestContextFilter(logging.Filter):
    """Adds `msgid` to every record: the request's, or '-' outside a request."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "msgid") or record.msgid == "-":
            record.msgid = g.get("msgid", "-") if has_request_context() else "-"
        return True


_second: tuple[int, str] = (-1, "")  # (epoch second, "yyyy-mm-ddThh:mm:ss") of the last line


def _iso_utc(created: float) -> str:
    """`yyyy-mm-ddThh:mm:ss.mmm+00:00`, formatting the date and time only once a second."""
    global _second
    second = int(created)
    micros = round((created - second) * 1e6)  # as datetime.fromtimestamp rounds
    if micros >= 1_000_000:
        second, micros = second + 1, micros - 1_000_000
    cached, prefix = _second
    if cached != second:
        prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _second = (second, prefix)
    return f"{prefix}.{micros // 1000:03d}+00:00"


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines inside values are escaped by JSON itself)."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": _iso_utc(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msgid": getattr(record, "msgid", "-"),
            "message": record.getMessage(),
        }
        for name, value in record.__dict__.items():  # what `extra=` added, in the order it was given
            if name not in _STANDARD and name[0] != "_":
                line[name] = value
        line["pid"] = record.process
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc"] = record.exc_text
        return dumps_bytes(line, str).decode()  # anything JSON has no type for is written as its str()


_LEVEL_COLOURS = {"WARNING": "\033[33m", "ERROR": "\033[31m", "CRITICAL": "\033[1;31m"}
_HIGHLIGHT, _DIM, _RESET = "\033[1;36m", "\033[2m", "\033[0m"


class TextFormatter(logging.Formatter):
    """One readable line per record, for a developer's terminal: time, level, message, then the record's fields.

    `22:31:36.669 INFO  request  route=/v1/otp/generate status=200 key=u***@e***.com latency_ms=3.1 [trace-me-1]`.
    Keys are the same masked forms as in JSON; a record logged with extra={"_highlight": True} (the development
    API key) stands out, and with `colour` warnings and errors are coloured.
    """

    def __init__(self, colour: bool = False):
        super().__init__()
        self.colour = colour

    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(
            f"{name}={value}" for name, value in record.__dict__.items()
            if name not in _STANDARD and name[0] != "_" and value not in (None, "")
        )
        msgid = getattr(record, "msgid", "-")
        line = f"{_iso_utc(record.created)[11:23]} {record.levelname:<7} {record.getMessage()}"
        if fields:
            line += f"  {fields}"
        if msgid != "-":
            line += f"  [{msgid}]"
        if record.name.startswith("gunicorn"):
            line += "  (gunicorn)"
        if self.colour:
            colour = _HIGHLIGHT if getattr(record, "_highlight", False) else _LEVEL_COLOURS.get(record.levelname)
            if colour:
                line = f"{colour}{line}{_RESET}"
        elif getattr(record, "_highlight", False):
            line = f">>> {line}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        elif record.exc_text:
            line += "\n" + record.exc_text
        return line


def choose_format(setting: str, *, production: bool, stream=None) -> str:
    """"json" or "text": OTP_LOG_FORMAT's choice, where "auto" is text only on a terminal in development. Logs
    that a machine reads (containers, files, pipes) stay JSON lines."""
    if setting != "auto":
        return setting
    stream = sys.stderr if stream is None else stream
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        tty = False
    return "text" if tty and not production else "json"


def formatter(fmt: str, stream=None) -> logging.Formatter:
    if fmt == "text":
        stream = sys.stderr if stream is None else stream
        try:
            colour = stream.isatty()
        except (AttributeError, ValueError):
            colour = False
        return TextFormatter(colour=colour)
    return JsonFormatter()


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time (so a test's capture, or gunicorn's redirect, sees it)."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):  # StreamHandler.__init__ assigns it; the property always answers sys.stderr
        pass

    def emit(self, record: logging.LogRecord) -> None:
        # StreamHandler's emit, without its second lock and flush call where the stream sends each line anyway:
        # Python's standard error is line-buffered (write-through under PYTHONUNBUFFERED).
        try:
            stream = sys.stderr
            stream.write(self.format(record) + "\n")
            if not (getattr(stream, "line_buffering", False) or getattr(stream, "write_through", False)):
                stream.flush()
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)


def json_handler(fmt: str = "json") -> logging.Handler:
    handler = _StderrHandler()
    handler.setFormatter(formatter(fmt))
    handler.addFilter(RequestContextFilter())
    handler._otp_service = True  # type: ignore[attr-defined]
    return handler


def configure_logging(level: str = "INFO", fmt: str = "json", *, production: bool = False) -> None:
    """JSON lines (or, with fmt="text", readable lines) on standard error for the service's loggers and, at
    WARNING and above, every library's.

    Idempotent: a second app in the same process (tests, workers) does not add a second handler, only sets the
    format. The handler sits on the root logger so that a library's warning (the Cassandra driver's, say) is a
    line of the same kind.
    """
    # The logging HOWTO's "Optimization": no line shows the caller's file and line, the thread or the process
    # name, so records need not look them up (findCaller walks the stack on every call). The pid stays.
    logging._srcfile = None
    logging.logThreads = False
    logging.logMultiprocessing = False
    root = logging.getLogger()
    ours = logging.getLogger("otp_service")
    ours.setLevel(level)
    ours.propagate = True
    fmt = choose_format(fmt, production=production)
    existing = [h for h in root.handlers if getattr(h, "_otp_service", False)]
    if existing:
        for handler in existing:
            if (fmt == "text") != isinstance(handler.formatter, TextFormatter):
                handler.setFormatter(formatter(fmt))
    else:
        # The handler of an older set-up on our own logger would print each line twice.
        for old in [h for h in ours.handlers if getattr(h, "_otp_service", False)]:
            ours.removeHandler(old)
        root.addHandler(json_handler(fmt))


def new_api_key() -> tuple[str, str]:
    """(key, its SHA-256 hex digest): the key goes to the caller, the digest into OTP_API_KEYS."""
    key = secrets.token_urlsafe(32)
    return key, hashlib.sha256(key.encode()).hexdigest()


def development_api_key(settings: Settings) -> tuple[str, ...]:
    """With no OTP_API_KEYS in development, make one for this process and say so."""
    key, digest = new_api_key()
    logging.getLogger("otp_service").warning(
        "development: OTP_API_KEYS is unset; this process accepts the API key %s (Authorization: Bearer <key>)", key,
        extra={"_highlight": True},
    )
    return (digest,)


def configure_from(settings: Settings) -> None:
    """configure_logging with the settings' level and format."""
    configure_logging(settings.log_level, settings.log_format, production=settings.production)
