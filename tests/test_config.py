"""Configuration from the environment (SPEC section 5): defaults, and bad values named at start-up."""
from __future__ import annotations

import pytest

from otp_service.adapters.crypto import new_key
from otp_service.config import ConfigError, Settings

# A complete production configuration: keys, and a real channel for each type.
PRODUCTION = {
    "OTP_ENV": "production", "OTP_API_KEYS": "a" * 64, "OTP_ENCRYPTION_KEYS": new_key(),
    "OTP_SMS_CHANNEL": "twilio", "OTP_TWILIO_ACCOUNT_SID": "AC" + "0" * 32, "OTP_TWILIO_AUTH_TOKEN": "token",
    "OTP_TWILIO_FROM_NUMBER": "+14155550100", "OTP_EMAIL_CHANNEL": "smtp", "OTP_SMTP_HOST": "mail.example.org",
    "OTP_SMTP_FROM": "no-reply@example.org",
}


def test_defaults_are_the_contracts():
    settings = Settings.from_env({})
    limits = settings.limits
    assert (limits.code_length, limits.code_ttl, limits.max_verify_attempts, limits.max_sends,
            limits.send_window, limits.resend_cooldown, limits.block_seconds) == (6, 600, 3, 4, 86400, 30, 86400)
    assert (settings.lockout_cache_size, settings.lockout_cache_ttl) == (100_000, 300)
    assert settings.default_country_code == "+91" and settings.default_region == "IN"
    assert settings.store == "sqlite" and settings.sqlite_path == "./otp-service.db"
    assert settings.env == "development"


@pytest.mark.parametrize("name,value", [
    ("OTP_LENGTH", "3"), ("OTP_LENGTH", "11"), ("OTP_LENGTH", "six"), ("OTP_TTL_SECONDS", "0"),
    ("OTP_MAX_VERIFY_ATTEMPTS", "-1"), ("OTP_MAX_SENDS", "x"), ("OTP_SEND_WINDOW_SECONDS", "0"),
    ("OTP_RESEND_COOLDOWN_SECONDS", "-5"), ("OTP_BLOCK_SECONDS", "1.5"), ("OTP_LOCKOUT_CACHE_SIZE", "-1"),
    ("OTP_LOCKOUT_CACHE_TTL_SECONDS", "abc"), ("OTP_DEFAULT_COUNTRY_CODE", "+999"),
    ("OTP_DEFAULT_COUNTRY_CODE", "india"), ("OTP_STORE", "mongodb"), ("OTP_ENV", "staging"),
    ("OTP_API_KEYS", "abc"), ("OTP_ENCRYPTION_KEYS", "short"), ("OTP_CASSANDRA_PORT", "70000"),
    ("OTP_CASSANDRA_KEYSPACE", "bad-name"),
])
def test_a_bad_value_stops_start_up_naming_the_variable(name, value):
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: value})


def test_cassandra_store_needs_contact_points():
    with pytest.raises(ConfigError, match="OTP_CASSANDRA_CONTACT_POINTS"):
        Settings.from_env({"OTP_STORE": "cassandra"})


def test_store_is_cassandra_when_contact_points_are_set():
    settings = Settings.from_env({"OTP_CASSANDRA_CONTACT_POINTS": "10.0.0.1, 10.0.0.2"})
    assert settings.store == "cassandra" and settings.cassandra.contact_points == ("10.0.0.1", "10.0.0.2")


def test_production_refuses_to_start_without_api_keys_or_encryption_keys():
    with pytest.raises(ConfigError, match="OTP_API_KEYS"):
        Settings.from_env({"OTP_ENV": "production", "OTP_ENCRYPTION_KEYS": new_key()})
    with pytest.raises(ConfigError, match="OTP_ENCRYPTION_KEYS"):
        Settings.from_env({"OTP_ENV": "production", "OTP_API_KEYS": "a" * 64})
    assert Settings.from_env(PRODUCTION).production


@pytest.mark.parametrize("name", ["OTP_SMS_CHANNEL", "OTP_EMAIL_CHANNEL"])
def test_production_refuses_the_development_console_channel(name):
    env = {**PRODUCTION, name: "console"}
    with pytest.raises(ConfigError, match=name):
        Settings.from_env(env)


def test_country_code_is_accepted_with_or_without_plus():
    assert Settings.from_env({"OTP_DEFAULT_COUNTRY_CODE": "44"}).default_region == "GB"


def test_secrets_are_not_in_repr():
    key = new_key()
    assert key not in repr(Settings.from_env({"OTP_ENCRYPTION_KEYS": key}))
