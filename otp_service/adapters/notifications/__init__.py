"""Delivery channels: one per contact type, behind one small port."""
from __future__ import annotations

import abc
from typing import NamedTuple

from ...domain.contacts import Contact


class Message(NamedTuple):
    """One code on its way to one contact. `repr` never shows the code or the key. (A NamedTuple, like every
    record a request builds: immutable, and cheaper to make than a frozen dataclass.)"""

    contact: Contact
    code: str
    minutes: int  # validity shown to the reader
    template_id: str | None
    installation: str
    msgid: str

    def __repr__(self) -> str:
        return f"Message(to={self.contact.masked}, template={self.template_id}, msgid={self.msgid})"


class DeliveryError(Exception):
    """The provider refused the message or did not answer in time. `provider_code` is safe to log."""

    def __init__(self, channel: str, reason: str, provider_code: str | int | None = None):
        super().__init__(f"{channel}: {reason}")
        self.channel = channel
        self.reason = reason
        self.provider_code = provider_code


class Channel(abc.ABC):
    name: str = "channel"

    @abc.abstractmethod
    def send(self, message: Message) -> None:
        """Return once the provider accepted the message; raise DeliveryError otherwise."""

    def describe(self) -> str:
        return self.name
