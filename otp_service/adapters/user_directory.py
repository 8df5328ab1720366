"""The platform's user directory (SPEC rule 2 of generate): is a key in use, and whose contacts are whose.

The HTTP implementation asks a Sunbird-style user service (docs/user_directory.md):
`GET {base}/v1/user/exists/{type}/{value}` answers `result.exists`, `GET {base}/v1/user/read/{userId}` answers the
user in `result.response`. Every failure to get a clear answer (timeout, refused connection, 5xx, a body that is
not the envelope) is DirectoryUnavailable: the caller answers 503 and never skips the rule.
"""
from __future__ import annotations

import abc
import json
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Mapping
from urllib.parse import quote, urlsplit

from ..domain.contacts import (
    ContactType,
    IdentifierType,
    mask,
    normalise_email,
    normalise_phone,
    region_for_country_code,
)
from ..domain.errors import OtpError
from ..envreader import ConfigError, EnvReader

log = logging.getLogger("otp_service.user_directory")

DEFAULT_EXISTS_PATH = "/v1/user/exists/{type}/{value}"
DEFAULT_READ_PATH = "/v1/user/read/{userId}"
DEFAULT_TIMEOUT = 2.0  # seconds, each for connect and for the answer: the gateway is waiting on us
MAX_TIMEOUT = 60.0
DEFAULT_CACHE_TTL = 30
DEFAULT_CACHE_SIZE = 10_000
MAX_BODY_BYTES = 1024 * 1024  # a user record is a few KiB; anything near this is not one

# Sunbird answers an unknown user with err USER_NOT_FOUND (responseCode RESOURCE_NOT_FOUND).
_NOT_FOUND_CODES = frozenset({"USER_NOT_FOUND", "RESOURCE_NOT_FOUND"})


class DirectoryUnavailable(Exception):
    """The user service is down or too slow: the caller answers 503, never skips the rule.

    The message says what failed and never carries the email, phone or URL asked about.
    """


@dataclass(frozen=True)
class UserContacts:
    """A user's current and previously used contacts, each already normalised; and, by field of the user record
    (`email`, `prevUsedEmail`, `recoveryEmail`... ), the values of each, for Sunbird's user-field types."""

    emails: frozenset[str] = frozenset()
    phones: frozenset[str] = frozenset()
    by_field: Mapping[str, frozenset[str]] = field(default_factory=dict, compare=False)

    def of_type(self, contact_type: ContactType) -> frozenset[str]:
        return self.emails if contact_type is ContactType.EMAIL else self.phones

    def for_identifier(self, identifier: IdentifierType) -> frozenset[str]:
        """What a key of this type may be: for `email`/`phone` any current or previously used one (SPEC rule 2),
        for a user-field type the value(s) of that field only."""
        if not identifier.is_user_field:
            return self.of_type(identifier.contact_type)
        return self.by_field.get(identifier.value, frozenset())

    def __repr__(self) -> str:  # never let a plain contact reach a log through repr()
        return f"UserContacts(emails={len(self.emails)}, phones={len(self.phones)})"


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
    token: str | None = field(default=None, repr=False)
    timeout: float = DEFAULT_TIMEOUT
    exists_path: str = DEFAULT_EXISTS_PATH
    read_path: str = DEFAULT_READ_PATH
    cache_ttl: float = DEFAULT_CACHE_TTL
    cache_size: int = DEFAULT_CACHE_SIZE
    default_region: str = "IN"  # for a user's phone stored without a country code and without `countryCode`

    @property
    def enabled(self) -> bool:
        return self.base_url is not None

    @classmethod
    def from_env(cls, env: EnvReader) -> "DirectorySettings":
        base_url = env.str("OTP_USER_SERVICE_URL")
        if base_url is not None:
            base_url = _check_base_url(base_url)
        try:
            # Settings.from_env has already checked this variable and names it on failure.
            default_region = region_for_country_code(env.str("OTP_DEFAULT_COUNTRY_CODE", "+91"))
        except ValueError:
            raise ConfigError("OTP_DEFAULT_COUNTRY_CODE must be a country calling code like +91") from None
        return cls(
            base_url=base_url,
            token=env.str("OTP_USER_SERVICE_TOKEN"),
            timeout=_timeout(env),
            exists_path=_check_path(env, "OTP_USER_SERVICE_EXISTS_PATH", DEFAULT_EXISTS_PATH, ("{type}", "{value}")),
            read_path=_check_path(env, "OTP_USER_SERVICE_READ_PATH", DEFAULT_READ_PATH, ("{userId}",)),
            cache_ttl=env.float("OTP_USER_SERVICE_CACHE_TTL_SECONDS", DEFAULT_CACHE_TTL, 0.0),
            cache_size=env.int("OTP_USER_SERVICE_CACHE_SIZE", DEFAULT_CACHE_SIZE, 0, 10_000_000),
            default_region=default_region,
        )


def _check_base_url(value: str) -> str:
    name = "OTP_USER_SERVICE_URL"
    try:
        parts = urlsplit(value)
        _ = parts.port  # raises ValueError on a bad port
    except ValueError:
        raise ConfigError(f"{name} must be an http:// or https:// URL, got {value!r}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{name} must be an http:// or https:// URL with a host, got {value!r}")
    if parts.username is not None or parts.password is not None:
        # A URL ends up in logs and error pages; the secret belongs in OTP_USER_SERVICE_TOKEN.
        raise ConfigError(f"{name} must not carry credentials; set OTP_USER_SERVICE_TOKEN instead")
    if parts.query or parts.fragment:
        raise ConfigError(f"{name} must not have a query or fragment, got {value!r}")
    return value.rstrip("/")


def _check_path(env: EnvReader, name: str, default: str, placeholders: tuple[str, ...]) -> str:
    path = env.str(name, default)
    if not path.startswith("/"):
        raise ConfigError(f"{name} must start with /, got {path!r}")
    rest = path
    for placeholder in placeholders:
        if rest.count(placeholder) != 1:
            raise ConfigError(f"{name} must contain {placeholder} exactly once, got {path!r}")
        rest = rest.replace(placeholder, "")
    if "{" in rest or "}" in rest or "?" in rest or "#" in rest:
        shown = ", ".join(placeholders)
        raise ConfigError(f"{name} may hold only the placeholders {shown} and no query, got {path!r}")
    return path


def _timeout(env: EnvReader) -> float:
    name = "OTP_USER_SERVICE_TIMEOUT_SECONDS"
    value = env.float(name, DEFAULT_TIMEOUT, 0.01)
    if value > MAX_TIMEOUT:
        raise ConfigError(f"{name} must be at most {MAX_TIMEOUT:g} seconds, got {value:g}")
    return value


# -- the cache -----------------------------------------------------------------------------------------------------
_MISS = object()


class TtlCache:
    """Bounded, thread-safe answers with a time to live; the least recently used entry goes when full.

    Both answers are kept ("in use" and "not in use", a user and "no such user"): the user service is asked at
    most once per TTL per key, and a changed answer shows after at most one TTL. Failures are never kept.
    """

    def __init__(self, max_entries: int, ttl_seconds: float, clock: Callable[[], float] = time.monotonic):
        self.max_entries = max_entries
        self.ttl = ttl_seconds
        self._clock = clock
        self._entries: OrderedDict[Hashable, tuple[float, Any]] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.max_entries > 0 and self.ttl > 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, entry_id: Hashable) -> Any:
        """The kept answer, or _MISS."""
        if not self.enabled:
            return _MISS
        with self._lock:
            found = self._entries.get(entry_id)
            if found is None:
                return _MISS
            expires, value = found
            if self._clock() >= expires:
                del self._entries[entry_id]
                return _MISS
            self._entries.move_to_end(entry_id)
            return value

    def put(self, entry_id: Hashable, value: Any) -> None:
        if not self.enabled:
            return
        expires = self._clock() + self.ttl
        with self._lock:
            self._entries[entry_id] = (expires, value)
            self._entries.move_to_end(entry_id)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


# -- the HTTP directory --------------------------------------------------------------------------------------------
class HttpUserDirectory(UserDirectory):
    """A Sunbird-style user service over HTTP, with a timeout on every call and a small TTL cache of answers."""

    def __init__(self, settings: DirectorySettings, *, clock: Callable[[], float] = time.monotonic):
        if settings.base_url is None:
            raise ValueError("HttpUserDirectory needs a base URL")
        self.settings = settings
        self.cache = TtlCache(settings.cache_size, settings.cache_ttl, clock)
        # Idle sessions, each used by one call at a time (Session is not documented thread-safe), so there are as
        # many as calls were ever in flight at once and each keeps its connection. (A thread-local would, under the
        # gevent worker, be one per greenlet, so one new session and connection per request.)
        self._idle: list = []

    def describe(self) -> str:
        s = self.settings
        cache = f"cache {s.cache_ttl:g}s x {s.cache_size}" if self.cache.enabled else "no cache"
        token = "with token" if s.token else "no token"
        return f"user service {s.base_url} (timeout {s.timeout:g}s, {cache}, {token})"

    # -- the port ------------------------------------------------------------------------------------------------
    def key_in_use(self, contact_type: ContactType, key: str) -> bool:
        entry_id = ("exists", contact_type.value, key)
        cached = self.cache.get(entry_id)
        if cached is not _MISS:
            return cached
        path = self.settings.exists_path.replace("{type}", _segment(contact_type.value))
        status, body = self._get(path.replace("{value}", _segment(key)), "exists")
        if 200 <= status < 300:
            exists = _result(body).get("exists")
            if not isinstance(exists, bool):
                raise DirectoryUnavailable(f"exists: HTTP {status} without a true/false result.exists")
        elif _says_not_found(status, body, codes=frozenset({"USER_NOT_FOUND"})):
            exists = False  # some user-service versions answer "no such user" instead of exists=false
        else:
            raise DirectoryUnavailable(f"exists: HTTP {status}{_err_of(body)}")
        self.cache.put(entry_id, exists)
        log.debug("user directory: %s %s in use=%s", contact_type.value, mask(contact_type, key), exists)
        return exists

    def user_contacts(self, user_id: str) -> UserContacts | None:
        entry_id = ("user", user_id)
        cached = self.cache.get(entry_id)
        if cached is not _MISS:
            return cached
        if user_id in (".", ".."):
            return None  # a dot segment would be resolved away in the URL and name another resource
        status, body = self._get(self.settings.read_path.replace("{userId}", _segment(user_id)), "read")
        if 200 <= status < 300:
            user = _result(body).get("response")
            if not isinstance(user, dict):
                raise DirectoryUnavailable(f"read: HTTP {status} without a user in result.response")
            contacts = None if user.get("isDeleted") is True else self._contacts(user)
        elif _says_not_found(status, body, codes=_NOT_FOUND_CODES):
            contacts = None
        else:
            raise DirectoryUnavailable(f"read: HTTP {status}{_err_of(body)}")
        self.cache.put(entry_id, contacts)
        log.debug("user directory: user read, found=%s %r", contacts is not None, contacts)
        return contacts

    # -- HTTP ----------------------------------------------------------------------------------------------------
    def _new_session(self):
        import requests  # here, not at the top: the gunicorn master must not import urllib3 before gevent patches ssl

        session = requests.Session()
        # No proxy variables, no ~/.netrc: the user service is an internal peer, and netrc would replace the
        # bearer token.
        session.trust_env = False
        session.headers.update({"Accept": "application/json", "User-Agent": "otp-service"})
        if self.settings.token:
            session.headers["Authorization"] = f"Bearer {self.settings.token}"
        return session

    def _get(self, path: str, what: str) -> tuple[int, Any]:
        """(status, parsed JSON or None). Raises DirectoryUnavailable when no answer comes in time.

        `requests` bounds the connect and each read by the timeout; the body is read against one deadline too,
        so a server that trickles bytes cannot hold the request for longer than about twice the timeout.
        """
        import requests

        timeout = self.settings.timeout
        deadline = time.monotonic() + 2 * timeout
        assert self.settings.base_url is not None  # an HttpUserDirectory is built only with a base URL
        url = self.settings.base_url + path
        try:
            session = self._idle.pop()
        except IndexError:
            session = self._new_session()
        try:
            with session.get(url, timeout=(timeout, timeout), stream=True, allow_redirects=False) as resp:
                chunks, size = [], 0
                for chunk in resp.iter_content(16 * 1024):
                    chunks.append(chunk)
                    size += len(chunk)
                    if size > MAX_BODY_BYTES:
                        raise DirectoryUnavailable(f"{what}: answer larger than {MAX_BODY_BYTES} bytes")
                    if time.monotonic() > deadline:
                        raise DirectoryUnavailable(f"{what}: answer not complete within {2 * timeout:g}s")
                status, raw = resp.status_code, b"".join(chunks)
        except requests.Timeout:
            # Messages of requests' exceptions carry the URL, and so the key: none of it is passed on.
            raise DirectoryUnavailable(f"{what}: no answer within {timeout:g}s") from None
        except requests.RequestException as exc:
            raise DirectoryUnavailable(f"{what}: {type(exc).__name__}") from None
        finally:
            self._idle.append(session)  # a session whose call failed is still sound: requests drops a bad connection
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        return status, body

    # -- the user record -----------------------------------------------------------------------------------------
    def _contacts(self, user: dict) -> UserContacts:
        """Current and previously used contacts, normalised; values that do not parse (or are masked) are dropped."""
        region = self.settings.default_region
        country_code = user.get("countryCode")
        if isinstance(country_code, str) and country_code.strip():
            try:
                region = region_for_country_code(country_code)
            except ValueError:
                pass
        by_field: dict[str, frozenset[str]] = {}
        for identifier in IdentifierType:  # the field of each type has the type's name (userorg's getType)
            if identifier.contact_type is ContactType.EMAIL:
                parsed = (_parsed(normalise_email, v) for v in _values(user, identifier.value))
            else:
                parsed = (_parsed(normalise_phone, v, region) for v in _values(user, identifier.value))
            by_field[identifier.value] = frozenset(value for value in parsed if value)
        return UserContacts(
            by_field["email"] | by_field["prevUsedEmail"], by_field["phone"] | by_field["prevUsedPhone"], by_field
        )


def _segment(value: str) -> str:
    """One URL path segment: '+', '@', '/' and everything else outside unreserved characters percent-encoded."""
    return quote(value, safe="")


def _result(body: Any) -> dict:
    result = body.get("result") if isinstance(body, dict) else None
    return result if isinstance(result, dict) else {}


def _codes_of(body: Any) -> set[str]:
    if not isinstance(body, dict):
        return set()
    codes = set()
    params = body.get("params")
    if isinstance(params, dict):
        codes |= {params.get("err"), params.get("status")}
    codes.add(body.get("responseCode"))
    return {c for c in codes if isinstance(c, str)}


def _says_not_found(status: int, body: Any, *, codes: frozenset[str]) -> bool:
    """A 404 (or Sunbird's 400 USER_NOT_FOUND) in the envelope. A bare 404, e.g. from a proxy, is no answer."""
    found = _codes_of(body)
    if status == 404:
        return bool(found & codes)
    return status == 400 and "USER_NOT_FOUND" in found


def _err_of(body: Any) -> str:
    params = body.get("params") if isinstance(body, dict) else None
    err = params.get("err") if isinstance(params, dict) else None
    if isinstance(err, str) and err.isidentifier() and len(err) <= 64:
        return f" {err}"
    return ""


def _values(user: dict, *names: str) -> list[str]:
    """The fields' values, each a string or a list of strings; empty and masked ('us****@x.com') ones dropped."""
    found: list[str] = []
    for name in names:
        value = user.get(name)
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str) and item.strip() and "*" not in item:
                found.append(item)
    return found


def _parsed(normalise: Callable[..., str], *args: Any) -> str | None:
    try:
        return normalise(*args)
    except OtpError:
        return None


def build_directory(settings: DirectorySettings | None) -> UserDirectory | None:
    """The configured directory, or None when OTP_USER_SERVICE_URL is unset (rule 2 is then skipped)."""
    if settings is None or not settings.enabled:
        log.info("user directory: off (OTP_USER_SERVICE_URL unset); SPEC rule 2 of generate is skipped")
        return None
    directory = HttpUserDirectory(settings)
    if not settings.token:
        log.warning("user directory: OTP_USER_SERVICE_TOKEN is unset; calling the user service without a token")
    log.info("user directory: %s", directory.describe())
    return directory
