"""The HTTP routes: parse, call the service, answer in the envelope. Nothing else lives here."""
from __future__ import annotations

import functools
import hashlib
import hmac

from flask import Blueprint, Flask, Request, current_app, g, request

from ..domain import errors
from ..domain.errors import OtpError
from ..service_layer.limits import AbuseLimits
from ..service_layer.services import OtpService
from .envelope import request_msgid, respond, respond_error
from .schemas import load_generate, load_verify

bp = Blueprint("otp", __name__)


def service() -> OtpService:
    return current_app.extensions["otp_service"]


def _begin(api: str) -> tuple[dict, dict, Flask]:
    """Name the API, take the msgid, check the API key, then require a JSON body: in that order.

    Returns the body, the attributes of the request's `g` as a dict (`vars(g)`: `g.x` and `state["x"]` are the
    same value, without a call to g's Python-level __setattr__ or get() for each) and the app, each looked up once.
    """
    state = vars(g._get_current_object())
    req = request._get_current_object()
    app = current_app._get_current_object()
    state["api_id"], state["api_ver"] = api, "v1"
    is_json, body = _json_body(req, app)
    state["msgid"] = request_msgid(body, req)
    _authenticate(req, app)
    if not is_json:
        raise errors.invalid_request("Request body must be JSON (Content-Type: application/json).", 415)
    if body is None:
        raise errors.invalid_request("Request body is not valid JSON.")
    return body, state, app


def _json_body(req: Request, app: Flask) -> tuple[bool, object]:
    """(whether the body is declared JSON, the parsed body or None when it does not parse).

    The common request, `Content-Type: application/json` with a Content-Length within the limit, is read straight
    from the WSGI input: PEP 3333 lets an application read up to CONTENT_LENGTH bytes of `wsgi.input`, and that is
    all werkzeug's wrapper would do, at about 5% of a whole request's instructions (stream wrappers, the header
    parsed into a mimetype). Anything else (a chunked body, no or too large a length, another spelling of the
    type) takes werkzeug's `get_json`, so its answers (413, 415, 400) stay werkzeug's."""
    environ = req.environ
    length = environ.get("CONTENT_LENGTH", "")
    if (
        environ.get("CONTENT_TYPE") == "application/json"
        and length.isascii()  # str.isdigit() also says yes to "²", which int() refuses
        and length.isdigit()
        and len(length) <= 9  # int() refuses 4,300 digits and more; any length this long is too large anyway
        and int(length) <= app.config["MAX_CONTENT_LENGTH"]
        and "HTTP_TRANSFER_ENCODING" not in environ
    ):
        try:
            return True, app.json.loads(environ["wsgi.input"].read(int(length)))
        except ValueError:  # JSONDecodeError and UnicodeDecodeError both are
            return True, None
    is_json = req.is_json
    return is_json, req.get_json(silent=True) if is_json else None


def _authenticate(req: Request, app: Flask) -> None:
    """Bearer API key; configured as SHA-256 digests, every digest compared in constant time."""
    header = req.environ.get("HTTP_AUTHORIZATION", "")  # what req.headers["Authorization"] reads, without its mapping
    scheme, _, presented = header.partition(" ")
    digest = hashlib.sha256(presented.strip().encode()).hexdigest() if scheme.lower() == "bearer" else ""
    accepted = False
    for known in app.config["OTP_API_KEY_HASHES"]:
        accepted |= hmac.compare_digest(digest, known)
    if not accepted:
        raise errors.unauthorized()


def _answers_errors(route):
    """The contract's errors are answered where they happen, not by raising them through Flask's exception
    handling (which looks for a handler along the error's class hierarchy and each blueprint on every error);
    app.py's handler still answers any raised elsewhere, in the same envelope."""

    @functools.wraps(route)
    def answered():
        try:
            return route()
        except OtpError as error:
            return respond_error(error)

    return answered


@bp.post("/v1/otp/generate")
@_answers_errors
def generate():
    body, state, app = _begin("api.otp.generate")
    parsed = load_generate(body, app.config["OTP_DEFAULT_REGION"])
    contact = parsed.contact
    state["masked_key"] = contact.masked
    state["contact_type"] = contact.type  # for the delivery and block metrics
    limits: AbuseLimits = app.extensions["otp_limits"]
    admission = limits.admit_generate(contact, limits.client(request.environ))  # before anything of the key
    with limits.spending(admission):  # a generate that sends nothing gives its budget back
        outcome = app.extensions["otp_service"].generate(
            contact, user_id=parsed.user_id, template_id=parsed.template_id, msgid=state["msgid"]
        )
    state["outcome"] = "resent" if outcome.resend else "sent"
    return respond(result=_SUCCESS)


@bp.post("/v1/otp/verify")
@_answers_errors
def verify():
    body, state, app = _begin("api.otp.verify")
    parsed = load_verify(body, app.config["OTP_DEFAULT_REGION"])
    state["masked_key"] = parsed.contact.masked
    limits: AbuseLimits = app.extensions["otp_limits"]
    limits.admit_verify(limits.client(request.environ))  # before anything of the key
    app.extensions["otp_service"].verify(parsed.contact, parsed.otp, user_id=parsed.user_id)
    state["outcome"] = "verified"
    return respond(result=_SUCCESS)


# Both routes answer this result; the envelope only reads it.
_SUCCESS = {"response": "SUCCESS"}


@bp.get("/health")
def health():
    g.api_id, g.api_ver = "api.health", "v1"
    healthy = service().check_health()
    result = {"name": "otp-service", "healthy": healthy, "checks": [{"name": "store", "healthy": healthy}]}
    if healthy:
        return respond(result=result)
    error = errors.server_error(503)
    error.result = result
    return respond(503, error=error)
