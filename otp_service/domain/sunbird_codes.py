"""userorg-service's error codes, which /v2/otp/* answers instead of the contract's, so Sunbird's clients work
unchanged (for example its mobile app shows its "OTP attempt limit" message on `UOS_OTPCRT0059`).

userorg builds a code as `UOS_` + the operation's code + the numeric key of its error (ResponseMessage.Key in
userorg-service's platform-common; ProjectCommonException puts them together): `UOS_OTPCRT0030` is "mandatory
parameter missing" on generate. Two of its errors are answered before any operation is known and carry the
`UOS_` prefix alone: unauthorized (`UOS_0070`, from its request filter) and the catch-all server error
(`UOS_0069`). docs/api.md ("Replacing Sunbird's OTP API") has the same table, with the reasons for each choice.
"""
from __future__ import annotations

from typing import NamedTuple

PREFIX = "UOS_"
GENERATE = "OTPCRT"  # userorg's ActorOperations.GENERATE_OTP
VERIFY = "OTPVERFY"  # userorg's ActorOperations.VERIFY_OTP
OPERATION_OF_API = {"api.otp.generate": GENERATE, "api.otp.verify": VERIFY}

# userorg's numeric keys (ResponseMessage.Key) that the OTP API can answer.
DUPLICATE_ENTRY = "0004"  # ERROR_DUPLICATE_ENTRY: "Value {0} for {1} is already in use."
DATA_FORMAT_ERROR = "0009"  # DATA_FORMAT_ERROR: "Invalid format for given {0}." (a bad email or phone)
RESOURCE_NOT_FOUND = "0013"  # RESOURCE_NOT_FOUND: "Requested {0} resource not found" (an unknown userId)
INVALID_VALUE = "0018"  # INVALID_VALUE: "Invalid {0}: {1}. Valid values are: {2}."
INVALID_IDENTIFIER = "0023"  # VALID_IDENTIFIER_ABSENSE: what userorg answers for a templateId it does not know
INVALID_REQUESTED_DATA = "0028"  # INVALID_REQUESTED_DATA: the user record has no value for the asked type
MANDATORY_PARAMETER_MISSING = "0030"  # MANDATORY_PARAMETER_MISSING: "Mandatory parameter {0} is missing."
INVALID_OTP = "0057"  # ERROR_INVALID_OTP: "Invalid OTP."
RATE_LIMIT_EXCEEDED = "0059"  # ERROR_RATE_LIMIT_EXCEEDED, HTTP 429
OTP_VERIFICATION_FAILED = "0063"  # OTP_VERIFICATION_FAILED, with maxAllowedAttempt and remainingAttempt
SERVICE_UNAVAILABLE = "0064"  # SERVICE_UNAVAILABLE
SERVER_ERROR = PREFIX + "0069"  # SERVER_ERROR: carries the prefix itself, never an operation code
UNAUTHORIZED = PREFIX + "0070"  # UNAUTHORIZED_USER: likewise


class UserorgCode(NamedTuple):
    key: str  # a numeric key (composed with the operation) or a whole code (SERVER_ERROR, UNAUTHORIZED)
    status: int | None  # the HTTP status on v2 when it differs from the contract's, else None
    why: str  # the condition in userorg's terms, for the documentation table


# The contract's codes (domain/errors.py) and what v2 answers for each. Where userorg has the condition, its code;
# where it has not (the send window, blocks, delivery failures), the code its clients already handle for the
# nearest condition: a blocked key or a full send window is, to a client, "too many OTPs, try later" (0059, 429).
FOR_CONTRACT_CODE: dict[str, UserorgCode] = {
    "MANDATORY_PARAMETER_MISSING": UserorgCode(MANDATORY_PARAMETER_MISSING, None, "mandatory parameter missing"),
    "INVALID_VALUE": UserorgCode(INVALID_VALUE, None, "invalid value (type, userId, otp, a key not the user's)"),
    "INVALID_EMAIL": UserorgCode(DATA_FORMAT_ERROR, None, "invalid format (email)"),
    "INVALID_PHONE": UserorgCode(DATA_FORMAT_ERROR, None, "invalid format (phone)"),
    "DESTINATION_NOT_ALLOWED": UserorgCode(DATA_FORMAT_ERROR, None, "nearest: invalid format (phone)"),
    "KEY_ALREADY_IN_USE": UserorgCode(DUPLICATE_ENTRY, None, "duplicate entry: value already in use"),
    "KEY_BLOCKED": UserorgCode(RATE_LIMIT_EXCEEDED, 429, "nearest: rate limit exceeded"),
    "MAX_LIMIT_EXHAUSTED": UserorgCode(RATE_LIMIT_EXCEEDED, 429, "nearest: rate limit exceeded"),
    "ERROR_RATE_LIMIT_EXCEEDED": UserorgCode(RATE_LIMIT_EXCEEDED, None, "rate limit exceeded"),
    "ERROR_INVALID_OTP": UserorgCode(INVALID_OTP, None, "invalid OTP (none live)"),
    "OTP_VERIFICATION_FAILED": UserorgCode(OTP_VERIFICATION_FAILED, None, "OTP verification failed (wrong code)"),
    "RESOURCE_NOT_FOUND": UserorgCode(RESOURCE_NOT_FOUND, None, "resource not found (unknown user)"),
    "INVALID_REQUEST": UserorgCode(INVALID_REQUESTED_DATA, None, "invalid requested data (body not usable)"),
    "UNAUTHORIZED": UserorgCode(UNAUTHORIZED, None, "unauthorized (userorg's request filter)"),
    "DELIVERY_FAILED": UserorgCode(SERVICE_UNAVAILABLE, None, "nearest: service unavailable"),
    "SERVER_ERROR": UserorgCode(SERVER_ERROR, None, "server error"),
}

# Keys an error may name itself (OtpError.userorg_key) where one contract code covers two of userorg's conditions.
OVERRIDES: dict[str, tuple[str, str]] = {
    INVALID_IDENTIFIER: ("INVALID_VALUE", "templateId not configured (userorg: invalid identifier, HTTP 500)"),
    INVALID_REQUESTED_DATA: ("INVALID_VALUE", "the user record has no value for the type (recoveryEmail...)"),
}


def compose(key: str, operation: str) -> str:
    """`UOS_` + operation + key; a key that is already a whole code (it has the prefix) is answered as it is."""
    return key if key.startswith(PREFIX) else f"{PREFIX}{operation}{key}"


def v2_code(contract_err: str, operation: str, userorg_key: str | None = None) -> tuple[str, int | None]:
    """(the v2 code, the v2 status or None to keep the contract's) of one of the contract's errors."""
    if userorg_key is not None:
        return compose(userorg_key, operation), None
    found = FOR_CONTRACT_CODE.get(contract_err)
    if found is None:  # a code added to the contract without a row here; tests/test_sunbird_v2.py catches that
        return compose(INVALID_REQUESTED_DATA, operation), None
    return compose(found.key, operation), found.status


def v2_codes_by_status(operation: str, by_status: dict[int, list[str]], extra: dict[int, list[str]] | None = None
                       ) -> dict[int, list[str]]:
    """An operation's documented contract codes by status, as v2 answers them (for the OpenAPI document)."""
    answered: dict[int, list[str]] = {}
    for status, codes in by_status.items():
        for code in codes:
            shown, v2_status = v2_code(code, operation)
            bucket = answered.setdefault(v2_status or status, [])
            if shown not in bucket:
                bucket.append(shown)
    for status, keys in (extra or {}).items():
        bucket = answered.setdefault(status, [])
        bucket.extend(compose(k, operation) for k in keys if compose(k, operation) not in bucket)
    return answered


def all_codes() -> list[str]:
    """Every code v2 can answer, for the envelope's schema."""
    found: list[str] = []
    for operation in (GENERATE, VERIFY):
        for key in [*(c.key for c in FOR_CONTRACT_CODE.values()), *OVERRIDES]:
            code = compose(key, operation)
            if code not in found:
                found.append(code)
    return found
