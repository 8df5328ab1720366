"""Request bodies, `{"request": {...}}`, checked with marshmallow and turned into the contract's errors.

Presence is checked in the contract's order (key, then type, then otp), then type, then the key's syntax, so the
caller always learns about the first problem. Unknown fields are ignored, as Sunbird's APIs do.

Sunbird's four user-field types (`prevUsedEmail`, `prevUsedPhone`, `recoveryEmail`, `recoveryPhone`) need a
`userId` and may leave `key` out: the service then reads the destination from the user record.
"""
from __future__ import annotations

from typing import Any, NamedTuple

from marshmallow import EXCLUDE, Schema, ValidationError, fields

from ..domain import errors
from ..domain.contacts import Contact, IdentifierType, normalise

_MAX_ID = 128


class _Request(Schema):
    class Meta:
        unknown = EXCLUDE

    key = fields.Raw(load_default=None)  # required unless the type is a user field (checked in _load)
    type = fields.Raw(required=True, allow_none=False)
    userId = fields.Raw(load_default=None)


class GenerateSchema(_Request):
    templateId = fields.Raw(load_default=None)


class VerifySchema(_Request):
    otp = fields.Raw(required=True, allow_none=False)


# One instance of each, shared by every request and thread: building a Schema deep-copies its fields (about half the
# cost of a load), and `load` keeps no state on the instance, so reusing it is safe.
_GENERATE = GenerateSchema()
_VERIFY = VerifySchema()


class GenerateRequest(NamedTuple):
    contact: Contact | None  # None: a user-field type without a key, read from the user record
    user_id: str | None
    template_id: str | None
    identifier: IdentifierType = IdentifierType.EMAIL


class VerifyRequest(NamedTuple):
    contact: Contact | None  # as in GenerateRequest
    otp: str
    user_id: str | None
    identifier: IdentifierType = IdentifierType.EMAIL


def request_part(body: Any) -> dict:
    if not isinstance(body, dict):
        raise errors.invalid_request("Request body must be a JSON object.")
    part = body.get("request")
    if part is None:
        raise errors.mandatory_missing("request")
    if not isinstance(part, dict):
        raise errors.invalid_request("The request field must be a JSON object.")
    return part


def load_generate(body: Any, default_region: str) -> GenerateRequest:
    data = _load(_GENERATE, request_part(body), ("key", "type"))
    identifier = _identifier(data)
    contact = _contact(data, identifier, default_region)
    return GenerateRequest(contact, _optional_id(data, "userId"), _optional_id(data, "templateId"), identifier)


def load_verify(body: Any, default_region: str) -> VerifyRequest:
    data = _load(_VERIFY, request_part(body), ("key", "type", "otp"))
    identifier = _identifier(data)
    contact = _contact(data, identifier, default_region)
    return VerifyRequest(contact, _code(data["otp"]), _optional_id(data, "userId"), identifier)


def _load(schema: Schema, part: dict, order: tuple[str, ...]) -> dict:
    # Empty strings count as missing: a blank key is no key.
    cleaned = {k: v for k, v in part.items() if not (isinstance(v, str) and not v.strip())}
    try:
        data = schema.load(cleaned)
    except ValidationError as exc:
        failed = exc.messages if isinstance(exc.messages, dict) else {}
        if cleaned.get("key") is None and not _names_user_field(cleaned.get("type")):
            failed = {**failed, "key": True}
        for name in order:
            if name in failed:
                raise errors.mandatory_missing(name) from None
        raise errors.invalid_request("Request is invalid.") from None
    if data["key"] is None and not _names_user_field(data["type"]):
        raise errors.mandatory_missing("key")  # only a user-field type may leave the key out
    return data


def _names_user_field(value: Any) -> bool:
    try:
        return IdentifierType.parse(value).is_user_field
    except errors.OtpError:
        return False


def _identifier(data: dict) -> IdentifierType:
    identifier = IdentifierType.parse(data["type"])
    if identifier.is_user_field and data.get("userId") is None:
        raise errors.mandatory_missing("userId")  # the destination is a field of this user's record
    return identifier


def _contact(data: dict, identifier: IdentifierType, default_region: str) -> Contact | None:
    if data["key"] is None:
        return None
    return normalise(identifier.contact_type, data["key"], default_region, identifier)


def _optional_id(data: dict, name: str) -> str | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or len(value.strip()) > _MAX_ID or not value.strip().isprintable():
        raise errors.invalid_value(name, "<invalid>", f"a string of at most {_MAX_ID} printable characters")
    return value.strip()


def _code(value: Any) -> str:
    """The offered code: a string of digits. It is never echoed back, not even in an error."""
    if isinstance(value, str) and value.strip().isdigit() and value.strip().isascii() and len(value.strip()) <= 16:
        return value.strip()
    raise errors.invalid_value("otp", "<hidden>", "a string of digits")
