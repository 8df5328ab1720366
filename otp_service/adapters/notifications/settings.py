"""Delivery settings: which channel serves each contact type, and the templates (see README, "Delivery")."""
from __future__ import annotations

from dataclasses import dataclass

from ...config import EnvReader


@dataclass(frozen=True)
class DeliverySettings:
    sms_channel: str = "console"
    email_channel: str = "console"

    @classmethod
    def from_env(cls, env: EnvReader) -> "DeliverySettings":
        return cls(
            sms_channel=env.choice("OTP_SMS_CHANNEL", "console", ("console",)),
            email_channel=env.choice("OTP_EMAIL_CHANNEL", "console", ("console",)),
        )
