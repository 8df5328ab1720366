"""Configuration: one typed object, built once from the environment (SPEC section 5).

A bad value stops start-up with a ConfigError that names the variable; nothing is silently defaulted.
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Mapping

from .adapters.cassandra_settings import CassandraSettings
from .adapters.crypto import parse_key
from .adapters.notifications.settings import DeliverySettings
from .adapters.user_directory import DirectorySettings
from .domain import abuse
from .domain.contacts import region_for_country_code
from .domain.policy import Limits
from .envreader import ConfigError, EnvReader

__all__ = ["CassandraSettings", "ConfigError", "EnvReader", "Settings"]


_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


# Mail providers whose domain is shared by millions of unrelated mailboxes: a per-domain limit would only count
# everyone's sign-ups together there, so they are exempt by default (OTP_EMAIL_DOMAIN_EXEMPT replaces the list).
DEFAULT_EXEMPT_MAIL_DOMAINS = (
    "gmail.com", "outlook.com", "hotmail.com", "live.com", "msn.com", "yahoo.com", "yahoo.co.in", "ymail.com",
    "icloud.com", "me.com", "aol.com", "proton.me", "protonmail.com", "rediffmail.com", "zoho.com", "gmx.com",
    "mail.ru", "yandex.ru", "qq.com", "163.com",
)


@dataclass(frozen=True)
class AbuseSettings:
    """The abuse limits (docs/api.md, "Abuse limits"). A limit of 0 is off."""

    trusted_proxies: tuple = ()
    ip_send_limit: int = 100
    ip_send_window: int = 3600
    ip_verify_limit: int = 300
    ip_verify_window: int = 3600
    prefix_send_limit: int = 20
    prefix_send_window: int = 3600
    prefix_digits: int = 7
    email_domain_send_limit: int = 300
    email_domain_send_window: int = 3600
    email_domain_exempt: frozenset = frozenset(DEFAULT_EXEMPT_MAIL_DOMAINS)
    sms_allowed_countries: frozenset = frozenset({"IN"})
    sms_denied_prefixes: tuple = ()
    sms_denied_number_types: tuple = abuse.DEFAULT_DENIED_NUMBER_TYPES
    sms_budget_per_minute: int = 0
    sms_budget_per_day: int = 0
    email_budget_per_minute: int = 0
    email_budget_per_day: int = 0

    @property
    def sms_destinations(self) -> abuse.SmsDestinations:
        return abuse.SmsDestinations(
            self.sms_allowed_countries,
            self.sms_denied_prefixes,
            frozenset(abuse.NUMBER_TYPES[name] for name in self.sms_denied_number_types),
        )

    @classmethod
    def from_env(cls, env: EnvReader, default_region: str) -> "AbuseSettings":
        try:
            proxies = abuse.parse_networks(env.list("OTP_TRUSTED_PROXIES"))
        except ValueError as exc:
            raise ConfigError(f"OTP_TRUSTED_PROXIES must be comma-separated CIDRs or addresses ({exc})") from None
        countries = tuple(c.upper() for c in env.list("OTP_SMS_ALLOWED_COUNTRIES")) or (default_region,)
        for country in countries:
            if country != abuse.ANY_COUNTRY and country != "001" and not _known_region(country):
                raise ConfigError(
                    f"OTP_SMS_ALLOWED_COUNTRIES must be ISO 3166 region codes (IN, US, ...), 001 or *, got {country!r}"
                )
        try:
            prefixes = tuple(abuse.parse_prefix(item) for item in env.list("OTP_SMS_DENIED_PREFIXES"))
        except ValueError as exc:
            raise ConfigError(f"OTP_SMS_DENIED_PREFIXES must be E.164 prefixes like +252, got {exc}") from None
        types = tuple(t.lower() for t in env.list("OTP_SMS_DENIED_NUMBER_TYPES"))
        if types == ("none",):
            types = ()
        elif not types:
            types = abuse.DEFAULT_DENIED_NUMBER_TYPES
        for name in types:
            if name not in abuse.NUMBER_TYPES:
                raise ConfigError(
                    f"OTP_SMS_DENIED_NUMBER_TYPES must be none or some of {', '.join(abuse.NUMBER_TYPES)}, got {name!r}"
                )
        exempt = env.raw("OTP_EMAIL_DOMAIN_EXEMPT")
        exempt_domains = DEFAULT_EXEMPT_MAIL_DOMAINS if exempt is None else (
            () if exempt.lower() == "none" else env.list("OTP_EMAIL_DOMAIN_EXEMPT")
        )
        count = functools.partial(env.int, minimum=0, maximum=100_000_000)
        window = functools.partial(env.int, minimum=1, maximum=30 * 86400)
        return cls(
            trusted_proxies=proxies,
            ip_send_limit=count("OTP_IP_SEND_LIMIT", 100),
            ip_send_window=window("OTP_IP_SEND_WINDOW_SECONDS", 3600),
            ip_verify_limit=count("OTP_IP_VERIFY_LIMIT", 300),
            ip_verify_window=window("OTP_IP_VERIFY_WINDOW_SECONDS", 3600),
            prefix_send_limit=count("OTP_PREFIX_SEND_LIMIT", 20),
            prefix_send_window=window("OTP_PREFIX_SEND_WINDOW_SECONDS", 3600),
            prefix_digits=env.int("OTP_PREFIX_DIGITS", 7, 1, 15),
            email_domain_send_limit=count("OTP_EMAIL_DOMAIN_SEND_LIMIT", 300),
            email_domain_send_window=window("OTP_EMAIL_DOMAIN_SEND_WINDOW_SECONDS", 3600),
            email_domain_exempt=frozenset(abuse.canonical_email("x@" + d.lower()).partition("@")[2]
                                          for d in exempt_domains),
            sms_allowed_countries=frozenset(countries),
            sms_denied_prefixes=prefixes,
            sms_denied_number_types=types,
            sms_budget_per_minute=count("OTP_SMS_BUDGET_PER_MINUTE", 0),
            sms_budget_per_day=count("OTP_SMS_BUDGET_PER_DAY", 0),
            email_budget_per_minute=count("OTP_EMAIL_BUDGET_PER_MINUTE", 0),
            email_budget_per_day=count("OTP_EMAIL_BUDGET_PER_DAY", 0),
        )


def _known_region(code: str) -> bool:
    import phonenumbers

    return code in phonenumbers.SUPPORTED_REGIONS


@dataclass(frozen=True)
class Settings:
    env: str = "development"
    api_key_hashes: tuple[str, ...] = ()
    encryption_keys: tuple[str, ...] = field(default=(), repr=False)
    limits: Limits = field(default_factory=Limits)
    lockout_cache_size: int = 100_000
    lockout_cache_ttl: int = 300
    default_country_code: str = "+91"
    default_region: str = "IN"
    store: str = "sqlite"
    sqlite_path: str = "./otp-service.db"
    cassandra: CassandraSettings = field(default_factory=CassandraSettings)
    abuse: AbuseSettings = field(default_factory=AbuseSettings)
    installation: str = "Sunbird"
    log_level: str = "INFO"
    log_format: str = "auto"  # OTP_LOG_FORMAT: auto (text on a terminal in development, else json), json or text
    # GET /try and GET /dev/inbox (docs/development.md): development only, and only with a console channel.
    dev_pages: bool = False
    # Channel, template and user-directory settings: see their adapters. Kept as the parsed objects.
    delivery: DeliverySettings = field(default_factory=DeliverySettings)
    directory: DirectorySettings | None = None

    @property
    def production(self) -> bool:
        return self.env == "production"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        env = EnvReader(environ)
        mode = env.choice("OTP_ENV", "development", ("development", "production"))
        api_keys = tuple(h.lower() for h in env.list("OTP_API_KEYS"))
        for digest in api_keys:
            if not _SHA256_HEX.match(digest):
                raise ConfigError("OTP_API_KEYS must be comma-separated SHA-256 hex digests (64 hex characters)")
        encryption_keys = env.list("OTP_ENCRYPTION_KEYS")
        _check_encryption_keys(encryption_keys)
        if mode == "production":
            if not api_keys:
                raise ConfigError("OTP_API_KEYS is required when OTP_ENV=production")
            if not encryption_keys:
                raise ConfigError("OTP_ENCRYPTION_KEYS is required when OTP_ENV=production")
        limits = Limits(
            code_length=env.int("OTP_LENGTH", 6, 4, 10),
            code_ttl=env.int("OTP_TTL_SECONDS", 600, 1, 7 * 86400),
            max_verify_attempts=env.int("OTP_MAX_VERIFY_ATTEMPTS", 3, 1, 100),
            max_sends=env.int("OTP_MAX_SENDS", 4, 1, 1000),
            send_window=env.int("OTP_SEND_WINDOW_SECONDS", 86400, 1, 30 * 86400),
            resend_cooldown=env.int("OTP_RESEND_COOLDOWN_SECONDS", 30, 0, 86400),
            block_seconds=env.int("OTP_BLOCK_SECONDS", 86400, 1, 30 * 86400),
        )
        country_code = env.str("OTP_DEFAULT_COUNTRY_CODE", "+91")
        try:
            region = region_for_country_code(country_code)
        except ValueError:
            raise ConfigError(
                f"OTP_DEFAULT_COUNTRY_CODE must be a country calling code like +91, got {country_code!r}"
            ) from None
        cassandra = CassandraSettings.from_env(env)
        store = env.choice("OTP_STORE", "cassandra" if cassandra.contact_points else "sqlite", ("sqlite", "cassandra"))
        if store == "cassandra" and not cassandra.contact_points:
            raise ConfigError("OTP_CASSANDRA_CONTACT_POINTS is required when OTP_STORE=cassandra")
        delivery = DeliverySettings.from_env(env)
        if mode == "production":
            # The console channel prints codes on standard output: never where real people receive them.
            channels = (("OTP_SMS_CHANNEL", delivery.sms_channel), ("OTP_EMAIL_CHANNEL", delivery.email_channel))
            for name, chosen in channels:
                if chosen == "console":
                    raise ConfigError(
                        f"{name}=console is for development only; choose a real channel when OTP_ENV=production"
                    )
        dev_pages = env.bool("OTP_DEV_PAGES", mode == "development")
        if dev_pages and mode == "production":
            raise ConfigError(
                "OTP_DEV_PAGES=true is for development only (the inbox shows codes); unset it when OTP_ENV=production"
            )
        return cls(
            env=mode,
            api_key_hashes=api_keys,
            encryption_keys=encryption_keys,
            limits=limits,
            lockout_cache_size=env.int("OTP_LOCKOUT_CACHE_SIZE", 100_000, 0, 100_000_000),
            lockout_cache_ttl=env.int("OTP_LOCKOUT_CACHE_TTL_SECONDS", 300, 0, 86400),
            default_country_code="+" + country_code.lstrip("+"),
            default_region=region,
            store=store,
            sqlite_path=env.str("OTP_SQLITE_PATH", "./otp-service.db"),
            cassandra=cassandra,
            abuse=AbuseSettings.from_env(env, region),
            installation=env.str("OTP_INSTALLATION_NAME", "Sunbird"),
            log_level=env.choice("OTP_LOG_LEVEL", "info", ("debug", "info", "warning", "error")).upper(),
            log_format=env.choice("OTP_LOG_FORMAT", "auto", ("auto", "json", "text")),
            dev_pages=dev_pages,
            delivery=delivery,
            directory=DirectorySettings.from_env(env),
        )


def _check_encryption_keys(keys: tuple[str, ...]) -> None:
    for index, key in enumerate(keys, start=1):
        try:
            parse_key(key)
        except ValueError as exc:
            raise ConfigError(f"OTP_ENCRYPTION_KEYS: key {index} is invalid ({exc})") from None
