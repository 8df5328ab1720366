"""Builds the templates and the channel for each contact type from the delivery settings."""
from __future__ import annotations

from ...domain.contacts import ContactType
from . import Channel
from .console import ConsoleChannel
from .inbox import Inbox
from .settings import DeliverySettings
from .templates import Templates


def build_templates(settings: DeliverySettings) -> Templates:
    """The default templates, with OTP_TEMPLATES_FILE laid over them (a bad file is a ConfigError)."""
    return Templates.load(settings.templates_file)


def build_channels(
    settings: DeliverySettings, templates: Templates, inbox: Inbox | None = None
) -> dict[ContactType, Channel]:
    """`inbox`, in development with the development pages on, also keeps what the console prints."""
    console: Channel | None = None

    def dev_console() -> Channel:
        nonlocal console  # one console for both types, so its lines never interleave
        if console is None:
            console = ConsoleChannel(templates, inbox=inbox)
        return console

    if settings.sms_channel == "twilio":
        from .twilio_sms import TwilioSmsChannel  # imported only when chosen: the console needs no twilio

        assert settings.twilio is not None  # DeliverySettings.from_env reads them when the channel is twilio
        sms: Channel = TwilioSmsChannel(settings.twilio, templates)
    else:
        sms = dev_console()
    if settings.email_channel == "smtp":
        from .smtp_email import SmtpEmailChannel

        assert settings.smtp is not None  # DeliverySettings.from_env reads them when the channel is smtp
        email: Channel = SmtpEmailChannel(settings.smtp, templates)
    else:
        email = dev_console()
    return {ContactType.PHONE: sms, ContactType.EMAIL: email}
