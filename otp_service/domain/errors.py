"""The contract's error catalogue (SPEC section 2, "Error codes"): one exception type, one constructor a code.

The HTTP status of each code lives with the entrypoint; here an error is only what the caller is told.
"""
from __future__ import annotations

import re
from typing import Any, Iterable

# What of a caller's bad value an errmsg may echo: a short plain token. Anything else (markup, quotes, control or
# non-ASCII characters, a long string, a non-string) is shown as "<invalid>".
_SHOWABLE = re.compile(r"[A-Za-z0-9_.\-]{1,32}")


class OtpError(Exception):
    """A failure the caller is told about: `err` is the contract's code, `message` its filled-in text."""

    # userorg's numeric key for this error (domain/sunbird_codes.py), where the contract's code alone does not say
    # which of userorg's conditions it is (an unknown templateId and an unknown type are both INVALID_VALUE here).
    userorg_key: str | None = None

    def __init__(self, err: str, message: str, result: dict[str, Any] | None = None, *, status: int | None = None):
        super().__init__(message)
        self.err = err
        self.message = message
        self.result = result or {}
        self.status = status  # only where one code has several statuses (INVALID_REQUEST, SERVER_ERROR)
        self.retry_after: int | None = None  # seconds, for a Retry-After header

    @property
    def contract_err(self) -> str:
        """The contract's code, whatever code the answer shows (a /v2 answer shows userorg's): logs and metrics
        count this one."""
        return self.err

    def __repr__(self) -> str:
        return f"OtpError({self.err!r}, {self.message!r})"


def shown(value: Any) -> str:
    """A caller's bad value as an errmsg may echo it (see _SHOWABLE)."""
    if isinstance(value, str) and _SHOWABLE.fullmatch(value):
        return value
    return "<invalid>"


def mandatory_missing(name: str) -> OtpError:
    return OtpError("MANDATORY_PARAMETER_MISSING", f"Mandatory parameter {name} is missing.")


def invalid_value(field: str, value: Any, valid: Iterable[str] | str) -> OtpError:
    listed = valid if isinstance(valid, str) else ", ".join(valid)
    return OtpError("INVALID_VALUE", f"Invalid {field}: {value}. Valid values are: {listed}.")


def invalid_email() -> OtpError:
    return OtpError("INVALID_EMAIL", "Email is invalid.")


def invalid_phone() -> OtpError:
    return OtpError("INVALID_PHONE", "Please provide a valid phone number.")


def key_already_in_use() -> OtpError:
    return OtpError("KEY_ALREADY_IN_USE", "Phone or email is already in use.")


def key_blocked(contact_type: str, until: str) -> OtpError:
    return OtpError("KEY_BLOCKED", f"This {contact_type} is blocked. Try again after {until}.")


def max_limit_exhausted(max_sends: int, hours: str) -> OtpError:
    return OtpError("MAX_LIMIT_EXHAUSTED", f"Only {max_sends} OTP can be generated within {hours} hours.")


def rate_limit_exceeded(unit: str) -> OtpError:
    return OtpError(
        "ERROR_RATE_LIMIT_EXCEEDED",
        f"Your per {unit} rate limit has exceeded. You can retry after some time.",
    )


def invalid_otp() -> OtpError:
    return OtpError("ERROR_INVALID_OTP", "Invalid OTP.")


def verification_failed(max_attempts: int, remaining: int) -> OtpError:
    return OtpError(
        "OTP_VERIFICATION_FAILED",
        f"OTP verification failed. Remaining attempt count is {remaining}.",
        {"maxAllowedAttempt": max_attempts, "remainingAttempt": remaining},
    )


def resource_not_found(resource: str) -> OtpError:
    return OtpError("RESOURCE_NOT_FOUND", f"Requested {resource} resource not found.")


def unauthorized() -> OtpError:
    return OtpError("UNAUTHORIZED", "Invalid or missing API key.")


def invalid_request(message: str, status: int = 400) -> OtpError:
    return OtpError("INVALID_REQUEST", message, status=status)


def destination_not_allowed() -> OtpError:
    return OtpError("DESTINATION_NOT_ALLOWED", "SMS to this destination is not supported.")


def delivery_failed() -> OtpError:
    return OtpError("DELIVERY_FAILED", "The OTP could not be delivered. Please try again.")


def server_error(status: int = 500) -> OtpError:
    return OtpError("SERVER_ERROR", "Process failed, please try again.", status=status)
