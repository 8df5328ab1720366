"""Builds the channel for each contact type from the delivery settings."""
from __future__ import annotations

from ...domain.contacts import ContactType
from . import Channel
from .console import ConsoleChannel
from .settings import DeliverySettings
from .templates import Templates


def build_templates(settings: DeliverySettings) -> Templates:
    return Templates()


def build_channels(settings: DeliverySettings, templates: Templates) -> dict[ContactType, Channel]:
    console = ConsoleChannel(templates)
    return {ContactType.PHONE: console, ContactType.EMAIL: console}
