"""Test doubles and helpers shared by the suites: a recording channel, a movable clock, an API client."""
from __future__ import annotations

import hashlib
import threading
import time
import uuid
from dataclasses import dataclass, field

from otp_service.adapters.notifications import Channel, DeliveryError, Message
from otp_service.config import Settings

API_KEY = "test-api-key-0123456789"
API_KEY_HASH = hashlib.sha256(API_KEY.encode()).hexdigest()
AUTH = {"Authorization": f"Bearer {API_KEY}"}


class RecordingChannel(Channel):
    """Accepts every message and keeps it, so a test can read the code a person would have received."""

    name = "recording"

    def __init__(self):
        self.sent: list[Message] = []
        self.failure: DeliveryError | None = None
        self._lock = threading.Lock()

    def send(self, message: Message) -> None:
        if self.failure is not None:
            raise self.failure
        with self._lock:
            self.sent.append(message)

    def codes_for(self, key: str) -> list[str]:
        with self._lock:
            return [m.code for m in self.sent if m.contact.key == key]

    def last_code(self, key: str) -> str:
        codes = self.codes_for(key)
        assert codes, f"no message was sent to {key}"
        return codes[-1]


class FakeClock:
    """Wall-clock seconds that only move when a test says so (starting at the real time)."""

    def __init__(self, start: float | None = None):
        self.now = time.time() if start is None else start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


def unique_email() -> str:
    return f"user.{uuid.uuid4().hex[:12]}@example.com"


def unique_phone() -> str:
    """A valid Indian mobile number, different each call."""
    return "98" + f"{uuid.uuid4().int % 10**8:08d}"


# Every test client is one address (127.0.0.1) sending to numbers in many countries: the abuse limits, whose own
# tests (test_abuse_limits.py) turn them on, are off for the rest of the suite.
ABUSE_LIMITS_OFF = {
    "OTP_IP_SEND_LIMIT": "0",
    "OTP_IP_VERIFY_LIMIT": "0",
    "OTP_PREFIX_SEND_LIMIT": "0",
    "OTP_EMAIL_DOMAIN_SEND_LIMIT": "0",
    "OTP_SMS_ALLOWED_COUNTRIES": "*",
    "OTP_SMS_DENIED_NUMBER_TYPES": "none",
}


def settings_for(env: dict[str, str]) -> Settings:
    base = {"OTP_API_KEYS": API_KEY_HASH, "OTP_LOG_LEVEL": "debug", **ABUSE_LIMITS_OFF}
    base.update(env)
    return Settings.from_env(base)


@dataclass
class Api:
    """The two calls of the gateway, as a test would write them."""

    client: object
    headers: dict = field(default_factory=lambda: dict(AUTH))

    def generate(self, key: str, type_: str = "email", **extra):
        body = {"request": {"key": key, "type": type_, **extra}}
        return self.client.post("/v1/otp/generate", json=body, headers=self.headers)

    def verify(self, key: str, otp: str, type_: str = "email", **extra):
        body = {"request": {"key": key, "type": type_, "otp": otp, **extra}}
        return self.client.post("/v1/otp/verify", json=body, headers=self.headers)


def wrong_code(code: str) -> str:
    """A code of the same length that is certainly not `code`."""
    return "".join(str((int(d) + 1) % 10) for d in code)
