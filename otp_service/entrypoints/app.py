"""The Flask app factory: one app per process, one error handler that answers every failure in the envelope,
one JSON log line and one set of metrics per request."""
from __future__ import annotations

import logging
import re
import time
from typing import Callable

from flask import Flask, Request, Response, current_app, g, request
from flask.sessions import NullSession, SessionInterface
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from ..adapters.notifications import Channel
from ..adapters.store import Store, StoreUnavailable
from ..adapters.user_directory import UserDirectory
from ..bootstrap import build_service
from ..config import Settings
from ..domain import errors
from ..domain.contacts import ContactType
from ..domain.errors import OtpError
from ..service_layer.limits import LIMIT_NAMES, AbuseLimits
from ..service_layer.services import ContentionError
from . import api, devtools
from .envelope import respond_error
from .jsonio import FastJSONProvider
from .logs import KNOWN_METHODS, configure_from, development_api_key
from .metrics import CONTENT_TYPE, Metrics
from .openapi import document as openapi_document

MAX_BODY_BYTES = 16 * 1024
log = logging.getLogger("otp_service.http")


def create_app(
    settings: Settings | None = None,
    *,
    store: Store | None = None,
    channels: dict[ContactType, Channel] | None = None,
    directory: UserDirectory | None = None,
    clock: Callable[[], float] = time.time,
) -> Flask:
    settings = settings or Settings.from_env()
    configure_from(settings)
    # No static files: every route answers JSON (but the development pages: devtools.py serves their own).
    app = _OtpFlask("otp_service", static_folder=None)
    app.json.sort_keys = False  # type: ignore[attr-defined]  # DefaultJSONProvider's; Flask types app.json as the base
    app.config.update(
        MAX_CONTENT_LENGTH=MAX_BODY_BYTES,
        # OPTIONS is a wrong method here like any other (405 in the envelope), not Flask's empty text/html 200.
        PROVIDE_AUTOMATIC_OPTIONS=False,
        OTP_SETTINGS=settings,
        OTP_DEFAULT_REGION=settings.default_region,
        OTP_API_KEY_HASHES=settings.api_key_hashes or development_api_key(settings),
    )
    service = build_service(settings, store=store, channels=channels, directory=directory, clock=clock)
    app.extensions["otp_service"] = service
    for contact_type, channel in service.channels.items():
        log.info("channel for %s: %s", contact_type.value, channel.describe())
    abuse = settings.abuse
    budgets = {
        (channel, period): getattr(abuse, f"{channel}_budget_per_{period}")
        for channel in ("sms", "email")
        for period in ("minute", "day")
        if getattr(abuse, f"{channel}_budget_per_{period}")
    }
    metrics = Metrics(
        channels=tuple(sorted({channel.name for channel in service.channels.values()})), store=service.store.name,
        limits=LIMIT_NAMES, budgets=budgets,
    )
    app.extensions["otp_metrics"] = metrics
    app.extensions["otp_limits"] = AbuseLimits(abuse, service.store, service.keys, observer=metrics, clock=clock)
    if not abuse.trusted_proxies and (abuse.ip_send_limit or abuse.ip_verify_limit):
        log.info("per-address limits count the socket peer; behind a gateway, name it in OTP_TRUSTED_PROXIES")
    app.register_blueprint(api.bp)
    devtools.register(app, settings, service.channels)  # GET /try, GET /dev/inbox: development only
    _register_operator_routes(app)
    _register_error_handlers(app)
    _register_request_log(app)
    return app


class _NoSessions(SessionInterface):
    """The API keeps no session (callers authenticate with an API key on every request). Flask's default
    interface still looks for a secret key and makes a new empty session on every request (1.6 us); this one
    hands every request the same NullSession, which refuses any write, and so is never saved."""

    _none = NullSession()

    def open_session(self, app, request):
        return self._none

    def save_session(self, app, session, response):  # not called: Flask skips saving a NullSession
        return None


class _OtpFlask(Flask):
    """Flask, with JSON through orjson (`FastJSONProvider`) and no sessions (`_NoSessions`), both through the
    extension points Flask documents for them."""

    json_provider_class = FastJSONProvider
    session_interface = _NoSessions()

    def log_exception(self, exc_info) -> None:
        """Flask's line for an exception no handler answered names the request's path and method, which are the
        caller's text; this one names the matched route, as the request log does."""
        rule = request.url_rule if request else None
        self.logger.error(
            "exception on route %s", rule.rule if rule is not None else "<unmatched>", exc_info=exc_info
        )


def _metrics() -> Metrics:
    return current_app.extensions["otp_metrics"]


def _register_operator_routes(app: Flask) -> None:
    """Two read-only routes for operators and tools, with no API key: neither can reveal a key, a code or a user."""
    spec = openapi_document()

    @app.get("/metrics")
    def metrics():
        return Response(_metrics().exposition(), mimetype=None, content_type=CONTENT_TYPE)

    @app.get("/v1/otp/openapi.json")
    def openapi():
        return app.json.response(spec)


def _register_error_handlers(app: Flask) -> None:
    @app.errorhandler(OtpError)
    def contract_error(error: OtpError):
        return respond_error(error)

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        response = respond_error(_from_http(error))
        if isinstance(error, MethodNotAllowed) and error.valid_methods:
            response.headers["Allow"] = ", ".join(sorted(error.valid_methods))  # RFC 9110: a 405 names them
        return response

    @app.errorhandler(StoreUnavailable)
    def store_down(error: StoreUnavailable):
        log.error("store unavailable: %s", error)
        _metrics().store_error("unavailable")
        return respond_error(errors.server_error(503))

    @app.errorhandler(ContentionError)
    def contention(error: ContentionError):
        log.warning("too many concurrent writes on key=%s", error)
        _metrics().store_error("contention")
        failure = errors.server_error(503)
        failure.retry_after = 1
        return respond_error(failure)

    @app.errorhandler(Exception)
    def unexpected(error: Exception):
        log.exception("unexpected failure")
        return respond_error(errors.server_error(500))


def _from_http(error: HTTPException) -> OtpError:
    status = error.code or 500
    if status == 404:
        return errors.resource_not_found(_shown_path())
    if status == 405:
        return errors.invalid_request(f"Method {request.method} is not allowed on this route.", 405)
    if status == 408:  # workers.DeadlineInput: the body did not arrive within OTP_BODY_READ_TIMEOUT_SECONDS
        return errors.invalid_request("Request body was not received in time.", 408)
    if status == 413:
        return errors.invalid_request(f"Request body is larger than {MAX_BODY_BYTES // 1024} KiB.", 413)
    if status == 415:
        return errors.invalid_request("Request body must be JSON (Content-Type: application/json).", 415)
    if status < 500:
        return errors.invalid_request("Request is invalid.", status)
    return errors.server_error(status)


_SHOWN_PATH = re.compile(r"[A-Za-z0-9/_.\-]{0,64}")


def _shown_path() -> str:
    """The unknown path, echoed in the 404's errmsg only when it is short plain ASCII."""
    path = request.path.strip("/")
    if _SHOWN_PATH.fullmatch(path):
        return path or "/"
    return "requested"


class _TimedRequest(Request):
    """Flask's request, stamped when it is made: the request log's latency counts from here (a before_request
    hook would do the same at the cost of one more hook call per request)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.started = time.perf_counter()




_GENERATE_ROUTES = frozenset({"/v1/otp/generate", "/v2/otp/generate"})


def _register_request_log(app: Flask) -> None:
    """One JSON line and one set of metrics per request, whatever answered it (a route or an error handler).

    This runs on every request, so it looks up Flask's context-locals once each and keeps its own references to
    the metrics and channels."""
    metrics: Metrics = app.extensions["otp_metrics"]
    channels = app.extensions["otp_service"].channels
    app.request_class = _TimedRequest

    @app.after_request
    def log_request(response):
        state = g._get_current_object()  # once: see api._state
        req = request._get_current_object()  # type: ignore[attr-defined]  # a LocalProxy, typed as the Request
        seconds = time.perf_counter() - req.started
        rule = req.url_rule
        route = rule.rule if rule is not None else "<unmatched>"
        err = state.get("err", "") or ""
        status = response.status_code
        method = req.method if req.method in KNOWN_METHODS else "other"
        metrics.observe_request(route, method, status, err, seconds)
        if route in _GENERATE_ROUTES:
            _count_delivery_and_block(metrics, channels, state.get("contact_type"), status, err)
        elif route == "/health" and status == 503:
            metrics.store_error("unavailable")
        level = logging.DEBUG if route == "/metrics" else logging.WARNING if status >= 500 else logging.INFO
        if log.isEnabledFor(level):
            log.log(
                level,
                "request",
                extra={
                    "msgid": state.get("msgid", "-"),
                    "route": route,
                    "method": method,
                    "status": status,
                    "err": err,
                    "outcome": state.get("outcome"),
                    "key": state.get("masked_key"),
                    "latency_ms": round(seconds * 1000, 1),
                },
            )
        return response


def _count_delivery_and_block(
    metrics: Metrics, channels: dict, contact_type: ContactType | None, status: int, err: str
) -> None:
    """A generate that reached its channel answers 200 (accepted) or DELIVERY_FAILED; MAX_LIMIT_EXHAUSTED is
    answered only after the block was written. Both happen after the body was validated, and the route recorded
    its contact type (`g.contact_type`) then."""
    if contact_type is None or (status != 200 and err not in ("DELIVERY_FAILED", "MAX_LIMIT_EXHAUSTED")):
        return
    if err == "MAX_LIMIT_EXHAUSTED":
        metrics.blocked(contact_type.value)
        return
    channel = channels.get(contact_type)
    if channel is not None:
        metrics.delivery(channel.name, accepted=status == 200)
