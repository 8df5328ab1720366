"""The platform's user directory (SPEC rule 2 of generate): is a key in use, and whose contacts are whose."""
from __future__ import annotations

import abc
from dataclasses import dataclass, field

from ..config import EnvReader
from ..domain.contacts import ContactType


class DirectoryUnavailable(Exception):
    """The user service is down or too slow: the caller answers 503, never skips the rule."""


@dataclass(frozen=True)
class UserContacts:
    """A user's current and previously used contacts, each already normalised."""

    emails: frozenset[str] = frozenset()
    phones: frozenset[str] = frozenset()

    def of_type(self, contact_type: ContactType) -> frozenset[str]:
        return self.emails if contact_type is ContactType.EMAIL else self.phones


class UserDirectory(abc.ABC):
    @abc.abstractmethod
    def key_in_use(self, contact_type: ContactType, key: str) -> bool:
        """Whether the normalised key belongs to any user."""

    @abc.abstractmethod
    def user_contacts(self, user_id: str) -> UserContacts | None:
        """The user's contacts, or None if no such user."""


@dataclass(frozen=True)
class DirectorySettings:
    base_url: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def enabled(self) -> bool:
        return self.base_url is not None

    @classmethod
    def from_env(cls, env: EnvReader) -> "DirectorySettings":
        return cls(base_url=env.str("OTP_USER_SERVICE_URL"))


def build_directory(settings: DirectorySettings) -> UserDirectory | None:
    """The configured directory, or None when OTP_USER_SERVICE_URL is unset (rule 2 is then skipped)."""
    if not settings.enabled:
        return None
    raise NotImplementedError("the HTTP user directory is not built yet")
