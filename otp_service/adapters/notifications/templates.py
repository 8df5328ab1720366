"""Message templates, selected by `templateId`; the texts carry the code, its validity and the installation.

Texts are `string.Template`s with three placeholders: `$otp`, `$minutes`, `$installation` (`${otp}` works too,
`$$` is a literal dollar). Operators replace or add templates with a JSON file (OTP_TEMPLATES_FILE, see
docs/delivery.md); a file that names an unknown placeholder stops start-up, so a typo never reaches a user.
"""
from __future__ import annotations

import functools
import html
import json
import re
from dataclasses import dataclass, fields, replace
from string import Template as _Text
from typing import Any, Mapping

from ...domain import errors, sunbird_codes
from ...domain.contacts import ContactType
from ...envreader import ConfigError

DEFAULT_TEMPLATE_ID = "otp"
PLACEHOLDERS = frozenset({"otp", "minutes", "installation"})
SMS_MAX_CHARS = 1600  # Twilio's limit for one message body

# The file's key for each Template field.
_FILE_KEYS = {"sms": "sms", "emailSubject": "email_subject", "emailText": "email_text", "emailHtml": "email_html"}
_TEMPLATE_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


@dataclass(frozen=True)
class Template:
    sms: str
    email_subject: str
    email_text: str
    email_html: str | None = None  # None: the HTML part is the plain text, escaped, in paragraphs

    def render_sms(self, **values: object) -> str:
        return _substitute(self.sms, _plain(values))


def _substitute(text: str, values: Mapping[str, str]) -> str:
    """`string.Template(text).substitute(values)`, with the template's placeholders found once, not per message."""
    return _compiled(text).format_map(values)


@functools.lru_cache(maxsize=1024)
def _compiled(text: str) -> str:
    """The template as a str.format string: `$name` and `${name}` become `{name}`, `$$` a dollar, braces doubled.
    A template with a stray `$` (which load_file refuses) raises as string.Template would."""
    out, at = [], 0
    for found in _Text.pattern.finditer(text):
        out.append(text[at:found.start()].replace("{", "{{").replace("}", "}}"))
        name = found.group("named") or found.group("braced")
        if name is not None:
            out.append("{" + name + "}")
        elif found.group("escaped") is not None:
            out.append("$")
        else:
            _Text(text).substitute()  # raises ValueError("Invalid placeholder ..."), as substitute() would
        at = found.end()
    out.append(text[at:].replace("{", "{{").replace("}", "}}"))
    return "".join(out)


def _html_from_text(text: str) -> str:
    """An HTML body for a template that has only a plain one: escape the text, keep its paragraphs."""
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    return "\n".join("<p>" + html.escape(p, quote=False).replace("\n", "<br>\n") + "</p>" for p in paragraphs)


_HTML_FRAME = (
    '<!DOCTYPE html>\n<html><body style="font-family: sans-serif; font-size: 15px; color: #222">\n{}\n</body></html>'
)

DEFAULTS: dict[str, Template] = {
    DEFAULT_TEMPLATE_ID: Template(
        sms="OTP to verify your phone number on $installation is $otp. This is valid for $minutes minutes only.",
        email_subject="Your $installation verification code",
        email_text="OTP to verify your email on $installation is $otp. This is valid for $minutes minutes only.",
        email_html=_HTML_FRAME.format(
            "<p>OTP to verify your email on $installation is <strong>$otp</strong>.</p>\n"
            "<p>This is valid for $minutes minutes only.</p>"
        ),
    ),
    "resetPassword": Template(
        sms="OTP to reset your password on $installation is $otp. This is valid for $minutes minutes only.",
        email_subject="Reset your $installation password",
        email_text=(
            "OTP to reset your password on $installation is $otp. This is valid for $minutes minutes only.\n\n"
            "If you did not ask to reset your password, you can ignore this email."
        ),
        email_html=_HTML_FRAME.format(
            "<p>OTP to reset your password on $installation is <strong>$otp</strong>.</p>\n"
            "<p>This is valid for $minutes minutes only.</p>\n"
            "<p>If you did not ask to reset your password, you can ignore this email.</p>"
        ),
    ),
    "contactUpdate": Template(
        sms="OTP to confirm your new phone number on $installation is $otp. This is valid for $minutes minutes only.",
        email_subject="Confirm your new $installation email address",
        email_text=(
            "OTP to confirm your new email address on $installation is $otp. "
            "This is valid for $minutes minutes only.\n\n"
            "If you did not ask to change your contact details, you can ignore this email."
        ),
        email_html=_HTML_FRAME.format(
            "<p>OTP to confirm your new email address on $installation is <strong>$otp</strong>.</p>\n"
            "<p>This is valid for $minutes minutes only.</p>\n"
            "<p>If you did not ask to change your contact details, you can ignore this email.</p>"
        ),
    ),
}


def _sunbird(sms: str, subject: str, email: str, *, unasked: str) -> Template:
    """One of Sunbird's templates: its SMS text, and an email saying the same with the code in bold."""
    return Template(
        sms=sms,
        email_subject=subject,
        email_text=f"{email}\n\n{unasked}",
        email_html=_HTML_FRAME.format(
            "<p>" + email.replace("$otp", "<strong>$otp</strong>") + "</p>\n<p>" + unasked + "</p>"
        ),
    )


# The four templateIds userorg-service's OTP validator accepts, which Sunbird's portal and mobile app send. The SMS
# texts of resetPasswordWithOtp and wardLoginOTP are Sunbird's own (its reset-password SMS and its
# verifyPhoneOtpTemplateWard); Sunbird keeps the other two in its database, not its source, so theirs are written
# here to say the same thing. docs/delivery.md lists them.
SUNBIRD: dict[str, Template] = {
    "resetPasswordWithOtp": _sunbird(
        "OTP to reset your password on $installation is $otp. This is valid for $minutes minutes only.",
        "Reset your $installation password",
        "OTP to reset your password on $installation is $otp. This is valid for $minutes minutes only.",
        unasked="If you did not ask to reset your password, you can ignore this email.",
    ),
    "wardLoginOTP": _sunbird(
        "Your ward has requested for registration on $installation using this phone number. Use OTP $otp to "
        "agree and create the account. This is valid for $minutes minutes only.",
        "Your ward wants to register on $installation",
        "Your ward has requested for registration on $installation using this email address. Use OTP $otp to "
        "agree and create the account. This is valid for $minutes minutes only.",
        unasked="If you do not know of this registration, you can ignore this email.",
    ),
    "otpContactUpdateTemplate": _sunbird(
        "Use OTP $otp to confirm your new phone number on $installation and update your contact details. "
        "This is valid for $minutes minutes only.",
        "Update your $installation contact details",
        "Use OTP $otp to confirm your new email address on $installation and update your contact details. "
        "This is valid for $minutes minutes only.",
        unasked="If you did not ask to change your contact details, you can ignore this email.",
    ),
    "otpDeleteUserTemplate": _sunbird(
        "OTP to delete your account on $installation is $otp. This is valid for $minutes minutes only. "
        "Do not share it if you did not ask for this.",
        "Confirm deleting your $installation account",
        "OTP to delete your account on $installation is $otp. This is valid for $minutes minutes only.",
        unasked="If you did not ask to delete your account, do not share this code; your account stays as it is.",
    ),
}
DEFAULTS.update(SUNBIRD)


class Templates:
    def __init__(self, templates: Mapping[str, Template] | None = None):
        self.templates = dict(DEFAULTS if templates is None else templates)
        if DEFAULT_TEMPLATE_ID not in self.templates:
            raise ValueError(f"the default template {DEFAULT_TEMPLATE_ID!r} is required")

    @classmethod
    def load(cls, path: str | None) -> "Templates":
        """The defaults, with the operator's file (if any) laid over them."""
        if path is None:
            return cls()
        merged = dict(DEFAULTS)
        merged.update(load_file(path, DEFAULTS))
        return cls(merged)

    @property
    def ids(self) -> list[str]:
        return sorted(self.templates)

    def check(self, template_id: str | None) -> None:
        """Rule 1 of generate: an unconfigured templateId is a 400, never a 500 (userorg answers 500)."""
        if template_id is None:
            return
        if not isinstance(template_id, str) or template_id not in self.templates:
            error = errors.invalid_value("templateId", errors.shown(template_id), self.ids)
            error.userorg_key = sunbird_codes.INVALID_IDENTIFIER
            raise error

    def get(self, template_id: str | None) -> Template:
        self.check(template_id)
        return self.templates[template_id or DEFAULT_TEMPLATE_ID]

    def render(self, template_id: str | None, contact_type: ContactType, **values: object) -> tuple[str, str]:
        """(subject, text) for email; ("", text) for SMS."""
        if contact_type is ContactType.PHONE:
            return "", self.get(template_id).render_sms(**values)
        subject, text, _ = self.render_email(template_id, **values)
        return subject, text

    def render_sms(self, template_id: str | None, **values: object) -> str:
        return self.get(template_id).render_sms(**values)

    def render_email(self, template_id: str | None, **values: object) -> tuple[str, str, str]:
        """(subject, plain text, HTML). Values are escaped in the HTML; the subject is kept on one line."""
        template = self.get(template_id)
        plain = _plain(values)
        subject = " ".join(_substitute(template.email_subject, plain).split())
        text = _substitute(template.email_text, plain)
        if template.email_html is None:
            body = _HTML_FRAME.format(_html_from_text(text))
        else:
            escaped = {name: html.escape(value) for name, value in plain.items()}
            body = _substitute(template.email_html, escaped)
        return subject, text, body


def _plain(values: Mapping[str, object]) -> dict[str, str]:
    if not values.keys() <= PLACEHOLDERS:
        raise TypeError(f"unknown template values: {sorted(values.keys() - PLACEHOLDERS)}")
    return {name: str(value) for name, value in values.items()}


def load_file(path: str, defaults: Mapping[str, Template] = DEFAULTS) -> dict[str, Template]:
    """Read an operator's template file. Every problem is a ConfigError naming the file and the template.

    The file is a JSON object: templateId -> {"sms", "emailSubject", "emailText", "emailHtml"}. A template that
    replaces a default may give only the texts it changes; a new one needs sms, emailSubject and emailText.
    """
    where = f"OTP_TEMPLATES_FILE {path}"
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except OSError as exc:
        raise ConfigError(f"{where}: cannot be read ({exc.strerror or exc})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{where}: not valid UTF-8 JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: must be a JSON object of templateId -> template")
    loaded: dict[str, Template] = {}
    for template_id, entry in data.items():
        loaded[template_id] = _parse_entry(where, template_id, entry, defaults.get(template_id))
    return loaded


def _parse_entry(where: str, template_id: str, entry: Any, base: Template | None) -> Template:
    named = f"{where}: template {template_id!r}"
    if not _TEMPLATE_ID.match(template_id):
        raise ConfigError(f"{named}: a templateId is 1 to 64 letters, digits or _.:-")
    if not isinstance(entry, dict):
        raise ConfigError(f"{named}: must be an object with sms, emailSubject, emailText and optionally emailHtml")
    unknown = set(entry) - set(_FILE_KEYS)
    if unknown:
        raise ConfigError(f"{named}: unknown field(s) {', '.join(sorted(unknown))}; known: {', '.join(_FILE_KEYS)}")
    given: dict[str, Any] = {}  # texts by field; email_html may be None (below)
    for key, value in entry.items():
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"{named}: {key} must be a non-empty string")
        given[_FILE_KEYS[key]] = value
    if base is None:
        missing = [key for key, attr in _FILE_KEYS.items() if attr != "email_html" and attr not in given]
        if missing:
            raise ConfigError(f"{named}: missing {', '.join(missing)} (a new template needs all texts but emailHtml)")
        template = Template(**given)
    else:
        if "email_text" in given and "email_html" not in given:
            given["email_html"] = None  # a new plain text must not leave the old HTML saying something else
        template = replace(base, **given)
    _check_template(named, template)
    return template


def _check_template(named: str, template: Template) -> None:
    for field in fields(Template):
        text = getattr(template, field.name)
        if text is None:
            continue
        key = next(k for k, a in _FILE_KEYS.items() if a == field.name)
        parsed = _Text(text)
        if not parsed.is_valid():
            raise ConfigError(f"{named}: {key} has a '$' that starts no placeholder (write $$ for a dollar sign)")
        unknown = [name for name in parsed.get_identifiers() if name not in PLACEHOLDERS]
        if unknown:
            raise ConfigError(
                f"{named}: {key} uses unknown placeholder ${unknown[0]}; "
                f"known: {', '.join('$' + p for p in sorted(PLACEHOLDERS))}"
            )
        if field.name != "email_subject" and "otp" not in parsed.get_identifiers():
            raise ConfigError(f"{named}: {key} must contain $otp")
    if len(template.sms) > SMS_MAX_CHARS:
        raise ConfigError(f"{named}: sms is longer than {SMS_MAX_CHARS} characters")
