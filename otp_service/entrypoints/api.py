"""The HTTP routes: parse, call the service, answer in the envelope. Nothing else lives here."""
from __future__ import annotations

import hashlib
import hmac

from flask import Blueprint, current_app, g, request

from ..domain import errors
from ..service_layer.services import OtpService
from .envelope import request_msgid, respond
from .schemas import load_generate, load_verify

bp = Blueprint("otp", __name__)


def service() -> OtpService:
    return current_app.extensions["otp_service"]


def _begin(api: str) -> dict:
    """Name the API, take the msgid, check the API key, then require a JSON body: in that order."""
    g.api_id, g.api_ver = api, "v1"
    body = request.get_json(silent=True) if request.is_json else None
    g.msgid = request_msgid(body)
    _authenticate()
    if not request.is_json:
        raise errors.invalid_request("Request body must be JSON (Content-Type: application/json).", 415)
    if body is None:
        raise errors.invalid_request("Request body is not valid JSON.")
    return body


def _authenticate() -> None:
    """Bearer API key; configured as SHA-256 digests, every digest compared in constant time."""
    header = request.headers.get("Authorization", "")
    scheme, _, presented = header.partition(" ")
    digest = hashlib.sha256(presented.strip().encode()).hexdigest() if scheme.lower() == "bearer" else ""
    accepted = False
    for known in current_app.config["OTP_API_KEY_HASHES"]:
        accepted |= hmac.compare_digest(digest, known)
    if not accepted:
        raise errors.unauthorized()


@bp.post("/v1/otp/generate")
def generate():
    body = _begin("api.otp.generate")
    parsed = load_generate(body, current_app.config["OTP_DEFAULT_REGION"])
    g.masked_key = parsed.contact.masked
    g.contact_type = parsed.contact.type  # for the delivery and block metrics
    outcome = service().generate(
        parsed.contact, user_id=parsed.user_id, template_id=parsed.template_id, msgid=g.msgid
    )
    g.outcome = "resent" if outcome.resend else "sent"
    return respond(result={"response": "SUCCESS"})


@bp.post("/v1/otp/verify")
def verify():
    body = _begin("api.otp.verify")
    parsed = load_verify(body, current_app.config["OTP_DEFAULT_REGION"])
    g.masked_key = parsed.contact.masked
    service().verify(parsed.contact, parsed.otp, user_id=parsed.user_id)
    g.outcome = "verified"
    return respond(result={"response": "SUCCESS"})


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
