"""The OpenAPI 3 document of the five routes and the envelope, served at GET /v1/otp/openapi.json.

Built from the same tables the app answers with (the error codes and their statuses in envelope.STATUS_OF, the
request-ID pattern, the body limit), and checked against the running app by tests/test_openapi.py, so it cannot
drift silently. The body schemas describe what reaches validation; rules JSON Schema cannot say (an email's or a
phone number's syntax, the send window, the cool-down) are in the descriptions and answer documented 4xx envelopes.
"""
from __future__ import annotations

from copy import deepcopy
from typing import Any

from ..domain import sunbird_codes
from ..domain.contacts import IdentifierType
from .envelope import STATUS_OF

VERSION = "0.1.0"
REQUEST_ID_PATTERN = r"^[A-Za-z0-9._:\-]{1,128}$"
# The schemas may let through more than the service accepts (it answers a 4xx envelope), never less: what Python's
# str.strip() trims, as a character class (ECMA's \s lacks \x1c-\x1f and \x85).
_SPACE = r"[\s\x1c-\x1f\x85]*"
# The six identifier types, in any case (ECMA regexes have no inline case-insensitive flag).
TYPE_PATTERN = (
    rf"^{_SPACE}("
    + "|".join("".join(f"[{c.upper()}{c.lower()}]" for c in t.value) for t in IdentifierType)
    + rf"){_SPACE}$"
)
OTP_PATTERN = rf"^{_SPACE}[0-9]{{1,16}}{_SPACE}$"

# Which codes each operation can answer, by HTTP status (a subset of STATUS_OF; SERVER_ERROR and INVALID_REQUEST
# have several statuses, as the contract says).
_COMMON = {
    401: ["UNAUTHORIZED"],
    405: ["INVALID_REQUEST"],
    413: ["INVALID_REQUEST"],
    415: ["INVALID_REQUEST"],
    500: ["SERVER_ERROR"],
    503: ["SERVER_ERROR"],
}
GENERATE_ERRORS = {
    400: ["MANDATORY_PARAMETER_MISSING", "INVALID_VALUE", "INVALID_EMAIL", "INVALID_PHONE", "KEY_ALREADY_IN_USE",
          "KEY_BLOCKED", "MAX_LIMIT_EXHAUSTED", "DESTINATION_NOT_ALLOWED", "INVALID_REQUEST"],
    404: ["RESOURCE_NOT_FOUND"],
    429: ["ERROR_RATE_LIMIT_EXCEEDED"],
    502: ["DELIVERY_FAILED"],
    **_COMMON,
}
VERIFY_ERRORS = {
    400: ["MANDATORY_PARAMETER_MISSING", "INVALID_VALUE", "INVALID_EMAIL", "INVALID_PHONE", "KEY_ALREADY_IN_USE",
          "ERROR_INVALID_OTP", "OTP_VERIFICATION_FAILED", "INVALID_REQUEST"],
    404: ["RESOURCE_NOT_FOUND"],
    429: ["ERROR_RATE_LIMIT_EXCEEDED"],
    **_COMMON,
}
HEALTH_ERRORS = {405: ["INVALID_REQUEST"], 500: ["SERVER_ERROR"], 503: ["SERVER_ERROR"]}


def _v2(operation: str, errors: dict[int, list[str]]) -> dict[int, list[str]]:
    """An operation's codes as /v2 answers them: userorg's (domain/sunbird_codes.py), plus the two an error names
    itself (an unknown templateId on generate; a user-field type whose field is empty). A wrong method is answered
    by routing, before the route knows its version, so a 405 keeps the contract's code."""
    extra = [sunbird_codes.INVALID_REQUESTED_DATA]
    if operation == sunbird_codes.GENERATE:
        extra.append(sunbird_codes.INVALID_IDENTIFIER)
    answered = sunbird_codes.v2_codes_by_status(
        operation, {status: codes for status, codes in errors.items() if status != 405}, {400: extra}
    )
    return {**answered, 405: errors[405]}


V2_GENERATE_ERRORS = _v2(sunbird_codes.GENERATE, GENERATE_ERRORS)
V2_VERIFY_ERRORS = _v2(sunbird_codes.VERIFY, VERIFY_ERRORS)

_RESPONSE_CODE = {200: "OK", 401: "UNAUTHORIZED", 404: "RESOURCE_NOT_FOUND", 429: "TOO_MANY_REQUESTS"}
_DESCRIPTIONS = {
    200: "Success.",
    400: "The request was turned down; `params.err` says why (see the contract's error table).",
    401: "Missing or wrong API key.",
    404: "The user of `userId` is unknown to the user directory.",
    405: "Wrong method for this route.",
    413: "Body larger than 16 KiB.",
    415: "Body is not JSON (`Content-Type: application/json`).",
    429: "A send sooner than the cool-down after the last one, or over an abuse limit (per client address, number "
    "range, mail domain or channel budget: docs/api.md, \"Abuse limits\"); `Retry-After` says how many seconds to "
    "wait. The answer is the same for every key. On "
    "/v2 also a full send window or a blocked key (userorg's rate limit).",
    500: "Unexpected failure (never with a trace).",
    502: "The delivery channel did not accept the message. The send still counts.",
    503: "The store (or the user directory) cannot be reached, or too many concurrent writes on one key.",
}


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _envelope(api_ids: list[str], errs: list[str] | None, result: dict, status: int) -> dict:
    """An envelope whose params.err is one of `errs` ("" and status "success" when errs is None)."""
    code = _RESPONSE_CODE.get(status, "SERVER_ERROR" if status >= 500 else "CLIENT_ERROR")
    if errs is None:
        params = {"allOf": [_ref("Params"), {"type": "object", "properties": {
            "err": {"type": "string", "enum": [""]},
            "status": {"type": "string", "enum": ["success"]},
            "errmsg": {"type": "string", "enum": [""]},
        }}]}
    else:
        params = {"allOf": [_ref("Params"), {"type": "object", "properties": {
            "err": {"type": "string", "enum": errs},
            "status": {"type": "string", "enum": errs},
            "errmsg": {"type": "string", "minLength": 1},
        }}]}
    return {
        "allOf": [
            _ref("Envelope"),
            {
                "type": "object",
                "properties": {
                    "id": {"type": "string", "enum": api_ids},
                    "params": params,
                    "responseCode": {"type": "string", "enum": [code]},
                    "result": result,
                },
            },
        ]
    }


def _response(status: int, schema: dict, *, retry_after: bool = False, allow: bool = False) -> dict:
    headers: dict[str, Any] = {"X-Request-ID": {"$ref": "#/components/headers/X-Request-ID"}}
    if retry_after:
        headers["Retry-After"] = {"$ref": "#/components/headers/Retry-After"}
    if allow:
        headers["Allow"] = {"$ref": "#/components/headers/Allow"}
    return {
        "description": _DESCRIPTIONS[status],
        "headers": headers,
        "content": {"application/json": {"schema": schema}},
    }


def _error_responses(api_id: str, by_status: dict[int, list[str]], results: dict[int, dict] | None = None) -> dict:
    results = results or {}
    responses = {}
    for status, errs in sorted(by_status.items()):
        # Before a route knows its name (an unknown method, say), the envelope's id is the generic "api.otp".
        ids = [api_id, "api.otp"]
        responses[str(status)] = _response(
            status,
            _envelope(ids, errs, results.get(status, _ref("EmptyResult")), status),
            retry_after=status in (429, 503),
            allow=status == 405,
        )
    return responses


def _post(api_id: str, summary: str, description: str, body: str, errors: dict[int, list[str]],
          results: dict[int, dict] | None = None, version: str = "v1") -> dict:
    return {
        "operationId": api_id.replace("api.otp.", "") + "Otp" + ("V2" if version == "v2" else ""),
        "summary": summary,
        "description": description,
        "tags": ["otp"],
        "security": [{"apiKey": []}],
        "parameters": [{"$ref": "#/components/parameters/X-Request-ID"}],
        "requestBody": {"required": True, "content": {"application/json": {"schema": _ref(body)}}},
        "responses": {
            "200": _response(200, _envelope([api_id], None, _ref("SuccessResult"), 200)),
            **_error_responses(api_id, errors, results),
        },
    }


def _request(fields: dict[str, dict], required: list[str]) -> dict:
    return {
        "type": "object",
        "description": "The Sunbird request: `request` holds the fields; `id`, `ver` and `params` are accepted and "
        "ignored (`params.msgid` becomes the msgid when there is no X-Request-ID header).",
        "required": ["request"],
        "properties": {
            "id": {},
            "ver": {},
            "params": {},
            "request": {
                "type": "object",
                "required": required,
                "properties": fields,
                "additionalProperties": True,
            },
        },
        "additionalProperties": True,
    }


_KEY = {
    "anyOf": [{"type": "string"}, {"type": "integer"}],
    "description": "An email address (trimmed, lower-cased) or a phone number (to E.164, with the configured default "
    "country code when it has none; a phone number may be a JSON integer). Blank counts as missing. Required for "
    "`email` and `phone`; a user-field type may leave it out (the user record's field is used), and if given it "
    "must equal that field.",
    "example": "9876543210",
}
_TYPE = {"type": "string", "pattern": TYPE_PATTERN,
         "description": "`email`, `phone`, or one of Sunbird's user-field types `prevUsedEmail`, `prevUsedPhone`, "
         "`recoveryEmail`, `recoveryPhone` (these need `userId`), in any case.",
         "example": "phone"}
_ID: dict[str, Any] = {"type": "string", "nullable": True,
       "description": "At most 128 printable characters; blank or null counts as absent."}


def document() -> dict:
    """The OpenAPI 3.0 document, a fresh copy each call."""
    return deepcopy(_DOCUMENT)


_DOCUMENT: dict = {
    "openapi": "3.0.3",
    "info": {
        "title": "otp-service",
        "version": VERSION,
        "description": "One-time passwords for a Sunbird-style platform. Every answer, success or error, is the "
        "Sunbird envelope. The codes and their statuses are the contract's (SPEC.md, section 2).",
    },
    "servers": [{"url": "/"}],
    "tags": [{"name": "otp"}, {"name": "health"}],
    "paths": {
        "/v1/otp/generate": {
            "post": _post(
                "api.otp.generate",
                "Send a code to an email address or phone number",
                "Checks, in order: the key's syntax, `templateId`, the user directory (when configured), blocks, the "
                "send window, the cool-down. A live code is sent again (a resend); otherwise a new one is made. "
                "SUCCESS only once the channel accepted the message.",
                "GenerateRequest",
                GENERATE_ERRORS,
            )
        },
        "/v1/otp/verify": {
            "post": _post(
                "api.otp.verify",
                "Check a code; a right code is consumed",
                "A wrong code costs an attempt (OTP_VERIFICATION_FAILED, with the remaining count); the last one locks "
                "the code. No live code (never sent, expired, used, locked) is ERROR_INVALID_OTP, whichever it was.",
                "VerifyRequest",
                VERIFY_ERRORS,
                {400: {"oneOf": [_ref("EmptyResult"), _ref("AttemptsResult")]}},
            )
        },
        "/v2/otp/generate": {
            "post": _post(
                "api.otp.generate",
                "Send a code (userorg-service's v2 error codes)",
                "The behaviour of /v1/otp/generate, answered with `ver: v2` and userorg-service's error codes "
                "(`UOS_OTPCRT` + its numeric key; `UOS_0070` unauthorized, `UOS_0069` server error). A full send "
                "window and a blocked key answer userorg's rate limit, `UOS_OTPCRT0059` with HTTP 429.",
                "GenerateRequest",
                V2_GENERATE_ERRORS,
                version="v2",
            )
        },
        "/v2/otp/verify": {
            "post": _post(
                "api.otp.verify",
                "Check a code (userorg-service's v2 error codes)",
                "The behaviour of /v1/otp/verify, answered with `ver: v2` and userorg-service's error codes "
                "(`UOS_OTPVERFY` + its numeric key): a wrong code is `UOS_OTPVERFY0063` with the attempts, no live "
                "code `UOS_OTPVERFY0057`.",
                "VerifyRequest",
                V2_VERIFY_ERRORS,
                {400: {"oneOf": [_ref("EmptyResult"), _ref("AttemptsResult")]}},
                version="v2",
            )
        },
        "/health": {
            "get": {
                "operationId": "health",
                "summary": "Whether the service can reach its store",
                "tags": ["health"],
                "security": [],
                "parameters": [{"$ref": "#/components/parameters/X-Request-ID"}],
                "responses": {
                    "200": _response(200, _envelope(["api.health"], None, _ref("HealthResult"), 200)),
                    **_error_responses("api.health", HEALTH_ERRORS,
                                       {503: {"oneOf": [_ref("HealthResult"), _ref("EmptyResult")]}}),
                },
            }
        },
    },
    "components": {
        "securitySchemes": {
            "apiKey": {"type": "http", "scheme": "bearer",
                       "description": "An API key; the service is configured with its SHA-256 digest (OTP_API_KEYS)."}
        },
        "parameters": {
            "X-Request-ID": {
                "name": "X-Request-ID",
                "in": "header",
                "required": False,
                "description": "Becomes the answer's msgid and is logged with every line of the request, when it "
                f"matches `{REQUEST_ID_PATTERN}`; any other value is ignored and a new msgid is made.",
                "schema": {"type": "string"},
            }
        },
        "headers": {
            "X-Request-ID": {"description": "The msgid of this answer.", "schema": {"type": "string"}},
            "Retry-After": {"description": "Seconds to wait before trying again.",
                            "schema": {"type": "string", "pattern": "^[0-9]+$"}},
            "Allow": {"description": "The methods this route answers.", "schema": {"type": "string"}},
        },
        "schemas": {
            "GenerateRequest": _request(
                {"key": _KEY, "type": _TYPE,
                 "userId": {**_ID, "description": "Forgot-password flow: `key` must be a current or previous "
                            "contact of this user; with a user-field type, required, and the destination is that "
                            "field of the user's record. " + _ID["description"]},
                 "templateId": {**_ID, "description": "A configured template; any other is INVALID_VALUE. "
                                + _ID["description"]}},
                ["type"],
            ),
            "VerifyRequest": _request(
                {"key": _KEY, "type": _TYPE,
                 "otp": {"type": "string", "pattern": OTP_PATTERN,
                         "description": "The code, a string of digits. Never echoed back.", "example": "604113"},
                 "userId": {**_ID, "description": "As in GenerateRequest. " + _ID["description"]}},
                ["type", "otp"],
            ),
            "Envelope": {
                "type": "object",
                "required": ["id", "ver", "ts", "params", "responseCode", "result"],
                "additionalProperties": False,
                "properties": {
                    "id": {"type": "string", "pattern": r"^api\.[a-z.]+$"},
                    "ver": {"type": "string", "enum": ["v1", "v2"]},
                    "ts": {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}:\d{3}\+0000$",
                           "description": "UTC, yyyy-MM-dd HH:mm:ss:SSS+0000."},
                    "params": _ref("Params"),
                    "responseCode": {"type": "string", "enum": ["OK", "CLIENT_ERROR", "UNAUTHORIZED",
                                                                "RESOURCE_NOT_FOUND", "TOO_MANY_REQUESTS",
                                                                "SERVER_ERROR"]},
                    "result": {"type": "object"},
                },
            },
            "Params": {
                "type": "object",
                "required": ["resmsgid", "msgid", "err", "status", "errmsg"],
                "additionalProperties": False,
                "properties": {
                    "resmsgid": {"type": "string", "format": "uuid"},
                    "msgid": {"type": "string", "pattern": REQUEST_ID_PATTERN},
                    "err": {"type": "string", "enum": ["", *STATUS_OF, *sunbird_codes.all_codes()]},
                    "status": {"type": "string", "enum": ["success", *STATUS_OF, *sunbird_codes.all_codes()]},
                    "errmsg": {"type": "string"},
                },
            },
            "ErrorCode": {"type": "string", "enum": list(STATUS_OF),
                          "description": "The contract's error codes (params.err)."},
            "SuccessResult": {"type": "object", "required": ["response"], "additionalProperties": False,
                              "properties": {"response": {"type": "string", "enum": ["SUCCESS"]}}},
            "EmptyResult": {"type": "object", "additionalProperties": False, "maxProperties": 0},
            "AttemptsResult": {
                "type": "object",
                "description": "With OTP_VERIFICATION_FAILED.",
                "required": ["maxAllowedAttempt", "remainingAttempt"],
                "additionalProperties": False,
                "properties": {"maxAllowedAttempt": {"type": "integer", "minimum": 1},
                               "remainingAttempt": {"type": "integer", "minimum": 0}},
            },
            "HealthResult": {
                "type": "object",
                "required": ["name", "healthy", "checks"],
                "additionalProperties": False,
                "properties": {
                    "name": {"type": "string", "enum": ["otp-service"]},
                    "healthy": {"type": "boolean"},
                    "checks": {"type": "array", "items": {
                        "type": "object", "required": ["name", "healthy"], "additionalProperties": False,
                        "properties": {"name": {"type": "string"}, "healthy": {"type": "boolean"}}}},
                },
            },
        },
    },
}
