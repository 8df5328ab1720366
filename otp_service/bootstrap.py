"""Wiring: turn Settings into a ready OtpService (store, keys, cache, channels, directory)."""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Callable

from .adapters.crypto import KeyRing, new_key, parse_key
from .adapters.lockout_cache import LockoutCache
from .adapters.notifications import Channel
from .adapters.notifications.factory import build_channels, build_templates
from .adapters.notifications.inbox import Inbox
from .adapters.store import Store
from .adapters.user_directory import UserDirectory, build_directory
from .config import ConfigError, Settings
from .domain.contacts import ContactType
from .service_layer.services import OtpService

log = logging.getLogger("otp_service")


def build_store(settings: Settings) -> Store:
    if settings.store == "cassandra":
        from .adapters.cassandra_store import CassandraStore

        return CassandraStore(settings.cassandra)
    from .adapters.sqlite_store import SqliteStore

    return SqliteStore(settings.sqlite_path)


def development_key_file(settings: Settings) -> Path:
    return Path(settings.sqlite_path + ".key")


def development_inbox(settings: Settings) -> Inbox | None:
    """The console channel's inbox (GET /dev/inbox), beside the SQLite file; None unless the pages are on."""
    if settings.production or not settings.dev_pages:
        return None
    return Inbox(settings.sqlite_path + ".inbox")


def load_keys(settings: Settings) -> KeyRing:
    """The configured keys; in development with none configured, one kept beside the SQLite file."""
    if settings.encryption_keys:
        return KeyRing(settings.encryption_keys)
    if settings.production:
        raise ConfigError("OTP_ENCRYPTION_KEYS is required when OTP_ENV=production")
    path = development_key_file(settings)
    if path.exists():
        secret = path.read_text().strip()
        try:
            parse_key(secret)
        except ValueError as exc:
            raise ConfigError(f"OTP_ENCRYPTION_KEYS is unset and {path} is not a valid key ({exc})") from None
    else:
        secret = _create_key_file(path)
    return KeyRing([secret])


def _create_key_file(path: Path) -> str:
    secret = new_key()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another worker made it first: use theirs
        time.sleep(0.05)
        return path.read_text().strip()
    with os.fdopen(fd, "w") as handle:
        handle.write(secret + "\n")
    log.warning("development: created an encryption key in %s (set OTP_ENCRYPTION_KEYS in production)", path)
    return secret


def build_service(
    settings: Settings,
    *,
    store: Store | None = None,
    channels: dict[ContactType, Channel] | None = None,
    directory: UserDirectory | None = None,
    clock: Callable[[], float] = time.time,
) -> OtpService:
    templates = build_templates(settings.delivery)
    if channels is None:
        channels = build_channels(settings.delivery, templates, inbox=development_inbox(settings))
    return OtpService(
        limits=settings.limits,
        store=store if store is not None else build_store(settings),
        keys=load_keys(settings),
        lockout=LockoutCache(settings.lockout_cache_size, settings.lockout_cache_ttl),
        channels=channels,
        templates=templates,
        directory=directory if directory is not None else build_directory(settings.directory),
        installation=settings.installation,
        clock=clock,
    )
