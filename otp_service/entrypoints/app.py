"""The Flask app factory: one app per process, one error handler that answers every failure in the envelope."""
from __future__ import annotations

import logging
import time
from typing import Callable

from flask import Flask, g, request
from werkzeug.exceptions import HTTPException

from ..adapters.notifications import Channel
from ..adapters.store import Store, StoreUnavailable
from ..adapters.user_directory import UserDirectory
from ..bootstrap import build_service
from ..config import Settings
from ..domain import errors
from ..domain.contacts import ContactType
from ..domain.errors import OtpError
from ..service_layer.services import ContentionError
from . import api
from .envelope import respond_error
from .logs import configure_logging, development_api_key

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
    configure_logging(settings.log_level)
    app = Flask("otp_service")
    app.json.sort_keys = False  # the envelope reads in its documented order
    app.config.update(
        MAX_CONTENT_LENGTH=MAX_BODY_BYTES,
        OTP_SETTINGS=settings,
        OTP_DEFAULT_REGION=settings.default_region,
        OTP_API_KEY_HASHES=settings.api_key_hashes or development_api_key(settings),
    )
    service = build_service(settings, store=store, channels=channels, directory=directory, clock=clock)
    app.extensions["otp_service"] = service
    for contact_type, channel in service.channels.items():
        log.info("channel for %s: %s", contact_type.value, channel.describe())
    app.register_blueprint(api.bp)
    _register_error_handlers(app)
    _register_request_log(app)
    return app


def _register_error_handlers(app: Flask) -> None:
    @app.errorhandler(OtpError)
    def contract_error(error: OtpError):
        return respond_error(error)

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        return respond_error(_from_http(error))

    @app.errorhandler(StoreUnavailable)
    def store_down(error: StoreUnavailable):
        log.error("store unavailable: %s", error)
        return respond_error(errors.server_error(503))

    @app.errorhandler(ContentionError)
    def contention(error: ContentionError):
        log.warning("too many concurrent writes on key=%s", error)
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
    if status == 413:
        return errors.invalid_request(f"Request body is larger than {MAX_BODY_BYTES // 1024} KiB.", 413)
    if status == 415:
        return errors.invalid_request("Request body must be JSON (Content-Type: application/json).", 415)
    if status < 500:
        return errors.invalid_request("Request is invalid.", status)
    return errors.server_error(status)


def _shown_path() -> str:
    path = request.path.strip("/")
    if len(path) <= 64 and all(c.isalnum() or c in "/_.-" for c in path):
        return path or "/"
    return "requested"


def _register_request_log(app: Flask) -> None:
    @app.before_request
    def start_clock():
        g.started = time.perf_counter()

    @app.after_request
    def log_request(response):
        latency_ms = (time.perf_counter() - g.get("started", time.perf_counter())) * 1000
        rule = request.url_rule.rule if request.url_rule is not None else "<unmatched>"
        log.info(
            "request route=%s method=%s status=%s err=%s outcome=%s key=%s latency_ms=%.1f",
            rule, request.method, response.status_code, g.get("err", "") or "-", g.get("outcome", "-"),
            g.get("masked_key", "-"), latency_ms,
        )
        return response
