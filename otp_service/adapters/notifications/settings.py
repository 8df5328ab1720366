"""Delivery settings: which channel serves each contact type, and the templates (see docs/delivery.md).

Everything is checked here, at start-up: a channel chosen without what it needs stops the service with a
ConfigError naming the variable, instead of failing on the first user's code. Secrets never show in a repr.
"""
from __future__ import annotations

import ipaddress
import re
import ssl
from dataclasses import dataclass, field
from email.utils import formataddr, parseaddr
from urllib.parse import urlsplit

from email_validator import EmailNotValidError, validate_email

from ...envreader import ConfigError, EnvReader

DEFAULT_TIMEOUT = 10.0  # seconds; well under gunicorn's 30 s worker timeout
MAX_TIMEOUT = 120.0

_ACCOUNT_SID = re.compile(r"^AC[0-9a-fA-F]{32}$")
_API_KEY_SID = re.compile(r"^SK[0-9a-fA-F]{32}$")
_MESSAGING_SERVICE_SID = re.compile(r"^MG[0-9a-fA-F]{32}$")
# A Twilio sender: an E.164 number, a short code, or an alphanumeric sender ID (1-11 characters, one letter).
_SENDER = re.compile(r"^(\+[1-9][0-9]{6,14}|[0-9]{3,8}|(?=[A-Za-z0-9 ]*[A-Za-z])[A-Za-z0-9 ]{1,11})$")
_SMTP_PORTS = {"starttls": 587, "ssl": 465, "none": 25}


@dataclass(frozen=True)
class TwilioSettings:
    account_sid: str
    # Either the account's auth token, or an API key (sid + secret): Twilio's two ways to authenticate.
    auth_token: str | None = field(default=None, repr=False)
    api_key_sid: str | None = None
    api_key_secret: str | None = field(default=None, repr=False)
    from_number: str | None = None
    messaging_service_sid: str | None = None
    base_url: str | None = None  # replaces https://api.twilio.com (tests, a proxy); None: Twilio itself
    region: str | None = None
    edge: str | None = None
    timeout: float = DEFAULT_TIMEOUT

    @property
    def credentials(self) -> tuple[str, str]:
        """(username, password) for Twilio's Basic auth."""
        if self.api_key_sid is not None:
            return self.api_key_sid, self.api_key_secret or ""
        return self.account_sid, self.auth_token or ""

    @classmethod
    def from_env(cls, env: EnvReader, timeout: float) -> "TwilioSettings":
        why = "required when OTP_SMS_CHANNEL=twilio"
        account_sid = env.str("OTP_TWILIO_ACCOUNT_SID")
        if account_sid is None:
            raise ConfigError(f"OTP_TWILIO_ACCOUNT_SID is {why}")
        if not _ACCOUNT_SID.match(account_sid):
            raise ConfigError("OTP_TWILIO_ACCOUNT_SID must be AC followed by 32 hex digits")

        auth_token = env.str("OTP_TWILIO_AUTH_TOKEN")
        key_sid = env.str("OTP_TWILIO_API_KEY_SID")
        key_secret = env.str("OTP_TWILIO_API_KEY_SECRET")
        if auth_token is not None and (key_sid is not None or key_secret is not None):
            raise ConfigError(
                "OTP_TWILIO_AUTH_TOKEN and OTP_TWILIO_API_KEY_SID/OTP_TWILIO_API_KEY_SECRET are both set; "
                "set one way to authenticate"
            )
        if auth_token is None:
            if key_sid is None and key_secret is None:
                raise ConfigError(f"OTP_TWILIO_AUTH_TOKEN (or OTP_TWILIO_API_KEY_SID and _SECRET) is {why}")
            if key_sid is None:
                raise ConfigError("OTP_TWILIO_API_KEY_SID is required with OTP_TWILIO_API_KEY_SECRET")
            if key_secret is None:
                raise ConfigError("OTP_TWILIO_API_KEY_SECRET is required with OTP_TWILIO_API_KEY_SID")
            if not _API_KEY_SID.match(key_sid):
                raise ConfigError("OTP_TWILIO_API_KEY_SID must be SK followed by 32 hex digits")

        from_number = env.str("OTP_TWILIO_FROM_NUMBER")
        service_sid = env.str("OTP_TWILIO_MESSAGING_SERVICE_SID")
        if from_number is None and service_sid is None:
            raise ConfigError(f"OTP_TWILIO_FROM_NUMBER (or OTP_TWILIO_MESSAGING_SERVICE_SID) is {why}")
        if from_number is not None and not _SENDER.match(from_number):
            raise ConfigError(
                "OTP_TWILIO_FROM_NUMBER must be an E.164 number (+14155550100), a short code, "
                "or an alphanumeric sender ID of up to 11 characters"
            )
        if service_sid is not None and not _MESSAGING_SERVICE_SID.match(service_sid):
            raise ConfigError("OTP_TWILIO_MESSAGING_SERVICE_SID must be MG followed by 32 hex digits")

        return cls(
            account_sid=account_sid,
            auth_token=auth_token,
            api_key_sid=key_sid,
            api_key_secret=key_secret,
            from_number=from_number,
            messaging_service_sid=service_sid,
            base_url=_base_url(env.str("OTP_TWILIO_BASE_URL")),
            region=_word(env, "OTP_TWILIO_REGION"),
            edge=_word(env, "OTP_TWILIO_EDGE"),
            timeout=_timeout(env, "OTP_TWILIO_TIMEOUT_SECONDS", timeout),
        )


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    security: str = "starttls"  # starttls | ssl | none
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    from_address: str = ""  # as it goes in the From header: "Name <addr>" or "addr"
    ca_file: str | None = None  # trust only this CA (a private one); None: the system's CAs
    timeout: float = DEFAULT_TIMEOUT

    @property
    def envelope_from(self) -> str:
        return parseaddr(self.from_address)[1]

    @classmethod
    def from_env(cls, env: EnvReader, timeout: float) -> "SmtpSettings":
        why = "required when OTP_EMAIL_CHANNEL=smtp"
        host = env.str("OTP_SMTP_HOST")
        if host is None:
            raise ConfigError(f"OTP_SMTP_HOST is {why}")
        security = env.choice("OTP_SMTP_SECURITY", "starttls", ("starttls", "ssl", "none"))
        port = env.int("OTP_SMTP_PORT", _SMTP_PORTS[security], 1, 65535)

        username = env.str("OTP_SMTP_USERNAME")
        password = env.str("OTP_SMTP_PASSWORD")
        if username is not None and password is None:
            raise ConfigError("OTP_SMTP_PASSWORD is required with OTP_SMTP_USERNAME")
        if password is not None and username is None:
            raise ConfigError("OTP_SMTP_USERNAME is required with OTP_SMTP_PASSWORD")
        if username is not None and security == "none":
            raise ConfigError(
                "OTP_SMTP_SECURITY=none would send OTP_SMTP_PASSWORD in clear text; use starttls or ssl"
            )

        raw_from = env.str("OTP_SMTP_FROM")
        if raw_from is None:
            raise ConfigError(f"OTP_SMTP_FROM is {why}")
        name, address = parseaddr(raw_from)
        try:
            address = validate_email(address, check_deliverability=False).normalized
        except EmailNotValidError:
            raise ConfigError(f"OTP_SMTP_FROM must be an email address or 'Name <address>', got {raw_from!r}") from None

        ca_file = env.str("OTP_SMTP_CA_FILE")
        if ca_file is not None:
            if security == "none":
                raise ConfigError("OTP_SMTP_CA_FILE is set but OTP_SMTP_SECURITY=none uses no TLS")
            try:
                ssl.create_default_context(cafile=ca_file)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(f"OTP_SMTP_CA_FILE {ca_file}: not a readable PEM certificate file ({exc})") from None

        return cls(
            host=host,
            port=port,
            security=security,
            username=username,
            password=password,
            from_address=formataddr((name, address)),
            ca_file=ca_file,
            timeout=_timeout(env, "OTP_SMTP_TIMEOUT_SECONDS", timeout),
        )


@dataclass(frozen=True)
class DeliverySettings:
    sms_channel: str = "console"
    email_channel: str = "console"
    timeout: float = DEFAULT_TIMEOUT
    twilio: TwilioSettings | None = None
    smtp: SmtpSettings | None = None
    templates_file: str | None = None

    @classmethod
    def from_env(cls, env: EnvReader) -> "DeliverySettings":
        sms_channel = env.choice("OTP_SMS_CHANNEL", "console", ("console", "twilio"))
        email_channel = env.choice("OTP_EMAIL_CHANNEL", "console", ("console", "smtp"))
        timeout = _timeout(env, "OTP_DELIVERY_TIMEOUT_SECONDS", DEFAULT_TIMEOUT)
        templates_file = env.str("OTP_TEMPLATES_FILE")
        if templates_file is not None:
            from .templates import Templates

            Templates.load(templates_file)  # a bad file stops start-up here, naming the file and the template
        return cls(
            sms_channel=sms_channel,
            email_channel=email_channel,
            timeout=timeout,
            twilio=TwilioSettings.from_env(env, timeout) if sms_channel == "twilio" else None,
            smtp=SmtpSettings.from_env(env, timeout) if email_channel == "smtp" else None,
            templates_file=templates_file,
        )


def _timeout(env: EnvReader, name: str, default: float) -> float:
    value = env.float(name, default, 0.1)
    if value > MAX_TIMEOUT:
        raise ConfigError(f"{name} must be at most {MAX_TIMEOUT:g} seconds, got {value:g}")
    return value


def _word(env: EnvReader, name: str) -> str | None:
    value = env.str(name)
    if value is not None and not re.fullmatch(r"[a-z0-9-]{1,32}", value):
        raise ConfigError(f"{name} must be a Twilio region or edge name like ie1 or dublin, got {value!r}")
    return value


def _base_url(value: str | None) -> str | None:
    """OTP_TWILIO_BASE_URL: scheme and host (and port) only; plain http only to this machine's loopback."""
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/") or parts.query:
        raise ConfigError(f"OTP_TWILIO_BASE_URL must look like https://host[:port], got {value!r}")
    if parts.scheme == "http" and not _loopback(parts.hostname):
        raise ConfigError("OTP_TWILIO_BASE_URL must use https unless it points at this machine (127.0.0.1)")
    try:
        _ = parts.port  # urlsplit checks the port only when it is read
    except ValueError:
        raise ConfigError(f"OTP_TWILIO_BASE_URL has an invalid port: {value!r}") from None
    return f"{parts.scheme}://{parts.netloc}"


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
