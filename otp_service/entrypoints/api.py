"""The HTTP routes: parse, call the service, answer in the envelope. Nothing else lives here."""
from __future__ import annotations

import hashlib
import hmac

from flask import Blueprint, Flask, Request, current_app, g, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from ..domain import errors
from ..service_layer.limits import AbuseLimits
from ..service_layer.services import OtpService
from .envelope import request_msgid, respond
from .schemas import load_generate, load_verify

bp = Blueprint("otp", __name__)


def service() -> OtpService:
    return current_app.extensions["otp_service"]


def _begin(api: str) -> tuple[object, Flask]:
    """Name the API, take the msgid, check the API key, then require a JSON body: in that order.

    Returns the body (any JSON value: the request schema checks it) and the app. What the request log and metrics
    need to know (api_id, msgid, the masked key, the outcome) goes on `g`, as attributes of the request's own
    `g` object, looked up once (`_state()`)."""
    # Flask types its proxies as the objects behind them, so the proxy's own method is unknown to the checker.
    req = request._get_current_object()  # type: ignore[attr-defined]
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    state = _state()
    state.api_id, state.api_ver = api, _version(req)
    is_json, body = _json_body(req, app)
    state.msgid = request_msgid(body, req)
    _authenticate(req, app)
    if not is_json:
        raise errors.invalid_request("Request body must be JSON (Content-Type: application/json).", 415)
    if body is None:
        raise errors.invalid_request("Request body is not valid JSON.")
    return body, app


def _state():
    """The request's `g` itself rather than the proxy: each attribute read or write through the `g` proxy looks
    the context up again (werkzeug's LocalProxy: several Python calls), and a request reads and writes about
    twenty. Kept because it is measured at more than 5% of a request's instructions (scripts/request_instructions.py,
    2026-12-01: new key 1.785 M through the proxy against 1.664 M, wrong code 1.432 M against 1.350 M). Attribute
    access on the object is the standard one."""
    return g._get_current_object()


def _version(req: Request) -> str:
    """`v2` on /v2/otp/*: the same behaviour, answered with userorg-service's error codes (envelope.respond_error)."""
    return "v2" if req.environ.get("PATH_INFO", "").startswith("/v2/") else "v1"


def _json_body(req: Request, app: Flask) -> tuple[bool, object]:
    """(whether the body is declared JSON, the parsed body or None when it does not parse).

    The common request, `Content-Type: application/json` with a Content-Length within the limit, is read straight
    from the WSGI input: PEP 3333 lets an application read up to CONTENT_LENGTH bytes of `wsgi.input`, and that is
    all werkzeug's wrapper would do. Kept because it is measured to save more than 5% of a whole request's
    instructions (scripts/request_instructions.py, 2026-12-01: new key 1.185 M through werkzeug against 1.122 M,
    wrong code 1.254 M against 1.193 M; the stream wrappers and the header parsed into a mimetype). Anything else
    (a chunked body, no or too large a length, another spelling of the type) takes werkzeug's `get_data`, so its
    answers (413 past max_content_length however the body is framed, 415, 400) stay werkzeug's.

    A body the server cannot read as it is framed (a chunk size of "ZZ", a chunk longer than its size, a stream
    cut off before its last chunk, an oversized trailer) raises the server's own exception from the stream: that
    is the caller's malformed request, a 400, not a failure of ours."""
    environ = req.environ
    length = environ.get("CONTENT_LENGTH", "")
    try:
        if (
            environ.get("CONTENT_TYPE") == "application/json"
            and length.isascii()  # str.isdigit() also says yes to "²", which int() refuses
            and length.isdigit()
            and len(length) <= 9  # int() refuses 4,300 digits and more; any length this long is too large anyway
            and int(length) <= app.config["MAX_CONTENT_LENGTH"]
            and "HTTP_TRANSFER_ENCODING" not in environ
        ):
            data = environ["wsgi.input"].read(int(length))
        elif not req.is_json:
            return False, None
        elif req.content_length is None and environ.get("wsgi.input_terminated"):
            data = _unsized_body(environ["wsgi.input"], app.config["MAX_CONTENT_LENGTH"])
        else:
            data = req.get_data(cache=False)
    except HTTPException:
        raise  # werkzeug's 413 (or the chunk bound's: server.BoundedChunkedReader), answered by app.py
    except Exception:
        raise errors.invalid_request("Request body could not be read.") from None
    try:
        return True, app.json.loads(data)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError both are
        return True, None


def _unsized_body(stream, limit: int) -> bytes:
    """A body without a Content-Length (chunked), from a server that ends the stream itself (PEP 3333's
    `wsgi.input_terminated`, which gunicorn sets): one byte past the limit is read, so a larger body is a 413.
    werkzeug's own stream stops at the limit and returns what it read, so a 10 MB body read as its first 16 KiB,
    and was answered as invalid JSON."""
    data = stream.read(limit + 1)
    if len(data) > limit:
        raise RequestEntityTooLarge()
    return data


def _authenticate(req: Request, app: Flask) -> None:
    """Bearer API key; configured as SHA-256 digests, every digest compared in constant time."""
    header = req.headers.get("Authorization", "")
    scheme, _, presented = header.partition(" ")
    digest = hashlib.sha256(presented.strip().encode()).hexdigest() if scheme.lower() == "bearer" else ""
    accepted = False
    for known in app.config["OTP_API_KEY_HASHES"]:
        accepted |= hmac.compare_digest(digest, known)
    if not accepted:
        raise errors.unauthorized()


@bp.post("/v1/otp/generate")
@bp.post("/v2/otp/generate")
def generate():
    body, app = _begin("api.otp.generate")
    parsed = load_generate(body, app.config["OTP_DEFAULT_REGION"])
    contact = parsed.contact or app.extensions["otp_service"].destination(
        parsed.identifier, parsed.contact, parsed.user_id
    )
    state = _state()
    state.masked_key = contact.masked
    state.contact_type = contact.type  # for the delivery and block metrics
    limits: AbuseLimits = app.extensions["otp_limits"]
    admission = limits.admit_generate(contact, limits.client(request.environ))  # before anything of the key
    with limits.spending(admission):  # a generate that sends nothing gives its budget back
        outcome = app.extensions["otp_service"].generate(
            contact, user_id=parsed.user_id, template_id=parsed.template_id, msgid=state.msgid
        )
    state.outcome = "resent" if outcome.resend else "sent"
    return respond(result=_SUCCESS)


@bp.post("/v1/otp/verify")
@bp.post("/v2/otp/verify")
def verify():
    body, app = _begin("api.otp.verify")
    parsed = load_verify(body, app.config["OTP_DEFAULT_REGION"])
    limits: AbuseLimits = app.extensions["otp_limits"]
    limits.admit_verify(limits.client(request.environ))  # before anything of the key
    contact = parsed.contact or app.extensions["otp_service"].destination(
        parsed.identifier, parsed.contact, parsed.user_id
    )
    state = _state()
    state.masked_key = contact.masked
    app.extensions["otp_service"].verify(contact, parsed.otp, user_id=parsed.user_id)
    state.outcome = "verified"
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
