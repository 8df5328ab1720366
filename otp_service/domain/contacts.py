"""Contacts an OTP is sent to: what a valid email or phone is, its one normal form, and how it is masked.

Normal forms matter: the stored lookup key is derived from them, so " A@B.com" and "a@b.com" must be one key.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field

import phonenumbers
from email_validator import EmailNotValidError, validate_email

from . import abuse, errors

# Keep libphonenumber's compiled metadata patterns (phonenumbers >= 9.0.43): otherwise each of the dozen patterns a
# parse and a validity check use goes through re.compile's cache lookup on every call, about a tenth of their cost.
phonenumbers.enable_pattern_cache()


class ContactType(str, enum.Enum):
    EMAIL = "email"
    PHONE = "phone"

    @classmethod
    def parse(cls, value: object) -> "ContactType":
        """Case-insensitive, as the contract says; anything else is INVALID_VALUE listing the valid types."""
        if isinstance(value, str):
            found = _TYPES.get(value.strip().lower())  # a dict lookup: calling the Enum class runs Python code
            if found is not None:
                return found
        raise errors.invalid_value("type", errors.shown(value), [t.value for t in cls])


_TYPES = {member.value: member for member in ContactType}


class IdentifierType(str, enum.Enum):
    """The six `type`s of userorg's OTP validator. The last four name a field of the user record (so they need a
    `userId`); each goes by the channel of its contact type, and its OTP row is that contact type's."""

    EMAIL = "email"
    PHONE = "phone"
    PREV_USED_EMAIL = "prevUsedEmail"
    PREV_USED_PHONE = "prevUsedPhone"
    RECOVERY_EMAIL = "recoveryEmail"
    RECOVERY_PHONE = "recoveryPhone"

    @property
    def contact_type(self) -> ContactType:
        return ContactType.EMAIL if self.value.lower().endswith("email") else ContactType.PHONE

    @property
    def is_user_field(self) -> bool:
        """One of Sunbird's four: the destination is this field of the user named by `userId`."""
        return self.value not in _TYPES

    @classmethod
    def parse(cls, value: object) -> "IdentifierType":
        """Case-insensitive, like ContactType.parse; anything else is INVALID_VALUE listing the six."""
        if isinstance(value, str):
            found = _IDENTIFIERS.get(value.strip().lower())
            if found is not None:
                return found
        raise errors.invalid_value("type", errors.shown(value), [t.value for t in cls])


_IDENTIFIERS = {member.value.lower(): member for member in IdentifierType}
_OF_CONTACT_TYPE = {ContactType.EMAIL: IdentifierType.EMAIL, ContactType.PHONE: IdentifierType.PHONE}


@dataclass(frozen=True)
class Contact:
    type: ContactType
    key: str  # normalised: lower-cased email, or E.164 phone
    masked: str = field(init=False, compare=False)  # what logs, metrics and messages show; made once
    # `type.value` as a plain str: stores, tokens and messages use it several times a request, and reading an
    # Enum member's value goes through a Python-level descriptor each time.
    type_name: str = field(init=False, compare=False, repr=False)
    # How the caller named it: `email` or `phone` (the default), or the user-record field it was read from
    # (`recoveryEmail`...). The key, and so the stored row, is the same either way.
    identifier: IdentifierType | None = field(default=None, compare=False, repr=False)
    # The form the store's lookup token and every limit count the key under: one mailbox, however it is spelt
    # (abuse.canonical_email); a phone's E.164 is already one. Messages still go to `key`, as given.
    canonical: str = field(init=False, compare=False, repr=False)

    def __post_init__(self):
        object.__setattr__(self, "masked", mask(self.type, self.key))
        object.__setattr__(self, "type_name", self.type.value)
        if self.identifier is None:
            object.__setattr__(self, "identifier", _OF_CONTACT_TYPE[self.type])
        canonical = abuse.canonical_email(self.key) if self.type is ContactType.EMAIL else self.key
        object.__setattr__(self, "canonical", canonical)

    def __repr__(self) -> str:  # never let a plain key reach a log through repr()
        return f"Contact({self.type.value}, {self.masked})"

    __str__ = __repr__


def normalise(
    contact_type: ContactType, raw: object, default_region: str, identifier: IdentifierType | None = None
) -> Contact:
    if contact_type is ContactType.EMAIL:
        return Contact(contact_type, normalise_email(raw), identifier)
    return Contact(contact_type, normalise_phone(raw, default_region), identifier)


def normalise_email(raw: object) -> str:
    """Trimmed and lower-cased, syntax checked by email-validator (no DNS: the gateway must answer fast)."""
    if not isinstance(raw, str) or len(raw) > 254:
        raise errors.invalid_email()
    try:
        checked = validate_email(raw.strip(), check_deliverability=False)
    except EmailNotValidError:
        raise errors.invalid_email() from None
    if abuse.mixes_scripts(checked.normalized):
        raise errors.invalid_email()
    return checked.normalized.lower()


def normalise_phone(raw: object, default_region: str) -> str:
    """E.164 through libphonenumber; numbers without a country code take the configured default country."""
    if isinstance(raw, int) and not isinstance(raw, bool):
        raw = str(raw)
    if not isinstance(raw, str) or not 3 <= len(raw.strip()) <= 32:
        raise errors.invalid_phone()
    try:
        number = phonenumbers.parse(raw.strip(), default_region)
    except phonenumbers.NumberParseException:
        raise errors.invalid_phone() from None
    if not phonenumbers.is_valid_number(number):
        raise errors.invalid_phone()
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def region_for_country_code(country_code: str) -> str:
    """'+91' -> 'IN'. Raises ValueError for a code libphonenumber does not know."""
    digits = country_code.strip().lstrip("+")
    if not digits.isdigit():
        raise ValueError(country_code)
    region = phonenumbers.region_code_for_country_code(int(digits))
    if region in (None, "ZZ"):
        raise ValueError(country_code)
    return region


def mask(contact_type: ContactType | str, key: str) -> str:
    """What logs and messages may show of a key: enough for an operator to tell two apart, not to contact one."""
    if contact_type == ContactType.EMAIL:  # a ContactType or its value: both compare equal to "email"
        local, _, domain = key.partition("@")
        name, dot, tld = domain.rpartition(".")
        shown_domain = f"{name[:1]}***{dot}{tld}" if dot else f"{domain[:1]}***"
        return f"{local[:1]}***@{shown_domain}"
    return f"{key[:3]}{'*' * max(len(key) - 5, 3)}{key[-2:]}"
