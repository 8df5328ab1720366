"""The two use cases of the API. Each is "read the key's state, let the policy decide, compare-and-set the new
state, then act on it"; a lost compare-and-set means another request changed the state first, so we read again.
"""
from __future__ import annotations

import contextlib
import logging
import math
import operator
import random
import time
from datetime import datetime, timezone
from typing import Callable, Iterator, NamedTuple, NoReturn

from ..adapters.crypto import DecryptionError, KeyRing
from ..adapters.lockout_cache import LockoutCache
from ..adapters.notifications import Channel, DeliveryError, Message
from ..adapters.notifications.templates import Templates
from ..adapters.store import BlockedRow, OtpRow, Store, StoreUnavailable
from ..adapters.user_directory import DirectoryUnavailable, UserContacts, UserDirectory
from ..domain import errors, sunbird_codes
from ..domain.contacts import Contact, ContactType, IdentifierType
from ..domain.policy import Block, Blocked, Limits, OtpState, Send, check_code, plan_send

log = logging.getLogger("otp_service.service")

# A compare-and-set is lost only when another request wrote the same key in between; this many losses in a row
# means the key is under a storm of requests, and the caller is better told to retry than kept waiting.
MAX_CAS_ROUNDS = 50


class ContentionError(Exception):
    """Too many concurrent writers on one key."""


class Outcome(NamedTuple):
    """What a successful generate did, for logs and metrics."""

    resend: bool
    channel: str


class OtpService:
    def __init__(
        self,
        *,
        limits: Limits,
        store: Store,
        keys: KeyRing,
        lockout: LockoutCache,
        channels: dict[ContactType, Channel],
        templates: Templates,
        directory: UserDirectory | None = None,
        installation: str = "Sunbird",
        clock: Callable[[], float] = time.time,
    ):
        self.limits = limits
        self.store = store
        self.keys = keys
        self.lockout = lockout
        self.channels = channels
        self.templates = templates
        self.directory = directory
        self.installation = installation
        self.clock = clock

    # -- generate -------------------------------------------------------------------------------------------------
    def generate(
        self, contact: Contact, *, user_id: str | None = None, template_id: str | None = None, msgid: str = ""
    ) -> Outcome:
        self.templates.check(template_id)
        self._check_owner(contact, user_id)
        tokens = self.keys.lookup_tokens(contact.type_name, contact.canonical)
        self._refuse_if_cached_block(contact, tokens)
        for round_ in range(MAX_CAS_ROUNDS):
            # A block is a state of the key's row (policy.OtpState.blocked_until), seen by every compare-and-set on
            # it; the blocked-keys table is read too, for blocks it holds without a row (written before that).
            if round_ == 0 and len(tokens) == 1 and self.store.insert_first:
                plan, row = self._create_first(contact, tokens[0])
                if plan is not None:
                    break
                if row is None:
                    continue  # the row that stood in the way is gone: read afresh
            elif round_ == 0 and len(tokens) == 1:
                row, block = self.store.get_otp_and_block(contact.type_name, tokens[0])  # one read, both tables
                if block is not None:
                    self._refuse_block(contact, block)
            else:
                row = self._load(contact.type_name, tokens)
                if round_ == 0 or row is None:
                    self._refuse_if_blocked(contact, tokens)
            plan = self._plan_and_write(contact, tokens, row)
            if plan is not None:
                break
            _back_off(round_)
        else:
            raise ContentionError(contact.masked)
        now = self._now()
        channel = self.channels[contact.type]
        code, expires_on = plan.state.code, plan.state.expires_on
        assert code is not None and expires_on is not None  # a send always carries a live code
        message = Message(
            contact=contact,
            code=code,
            minutes=max(1, round((expires_on - now) / 60)) if plan.resend else self._minutes(),
            template_id=template_id,
            installation=self.installation,
            msgid=msgid,
        )
        try:
            channel.send(message)
        except DeliveryError as exc:
            log.warning(
                "delivery failed channel=%s key=%s provider_code=%s reason=%s",
                exc.channel, contact.masked, exc.provider_code, exc.reason,
            )
            raise errors.delivery_failed() from None
        return Outcome(resend=plan.resend, channel=channel.name)

    def _create_first(self, contact: Contact, token: str) -> tuple[Send | None, OtpRow | None]:
        """A new key's send, written without reading first: (the send, None) when the row was created; (None, the
        row that stood in the way) when one exists (None if it is gone since), for the usual read-decide-write."""
        plan = plan_send(None, self._now(), self.limits)
        if not isinstance(plan, Send):  # a policy that refuses even a first send: the usual path says why
            return None, None
        row = self._new_row(contact.type_name, token, None, None, plan.state)
        created, existing, block = self.store.create_otp(row)
        now = self._now()  # one reading for the block's check and its refusal: the block cannot end in between
        if block is not None and block.blocked_until > now:
            if created:
                # A block the table holds without a row (written before blocks were a state of the row): the row
                # just created holds it too, so no code from it ever verifies. Best effort: if this loses to another
                # request or the store fails, the row keeps a code nobody was sent, and the table still refuses.
                blocked = plan.state._replace(code=None, blocked_until=block.blocked_until)
                with contextlib.suppress(StoreUnavailable):
                    self.store.update_otp(self._new_row(contact.type_name, token, row, plan.state, blocked),
                                          row.version)
            self._refuse_block(contact, block, now)
        return (plan if created else None), existing

    def _plan_and_write(self, contact: Contact, tokens: list[str], row: OtpRow | None) -> Send | None:
        """Rules 3 to 6 over the row read (or None), written as a compare-and-set: the send to make, or None when
        another request changed the row first."""
        now = self._now()
        current = self._decode(row)
        plan = plan_send(current, now, self.limits)
        if isinstance(plan, Blocked):
            assert row is not None  # only a stored state is blocked
            self._refuse_until(contact, row.key, plan.until, now)
        # A new row goes under the newest key; a row found under an older one is updated where it is.
        if not self._write(contact, tokens[0] if row is None else row.key, row, current, plan.state):
            return None
        if isinstance(plan, Block):
            self._record_block(contact, tokens, now, plan.until)
            raise errors.max_limit_exhausted(self.limits.max_sends, self.limits.window_hours)
        return plan

    def _minutes(self) -> int:
        return max(1, round(self.limits.code_ttl / 60))

    def _refuse_if_cached_block(self, contact: Contact, tokens: list[str]) -> None:
        now = self._now()
        for token in tokens:
            until = self.lockout.get(_cache_id(contact.type_name, token), now)
            if until is not None:
                raise errors.key_blocked(contact.type_name, _when(until))

    def _refuse_if_blocked(self, contact: Contact, tokens: list[str]) -> None:
        for token in tokens:
            block = self.store.get_block(contact.type_name, token)
            if block is not None:
                self._refuse_block(contact, block)

    def _refuse_block(self, contact: Contact, block: BlockedRow, now: float | None = None) -> None:
        """Refuse a key the store has a block for (if it has not ended by `now`, the clock's reading unless given)."""
        now = self._now() if now is None else now
        if block.blocked_until > now:
            self._refuse_until(contact, block.key, block.blocked_until, now)

    def _refuse_until(self, contact: Contact, token: str, until: float, now: float) -> NoReturn:
        """KEY_BLOCKED, the block remembered in this process's lockout cache until it ends."""
        self.lockout.put(_cache_id(contact.type_name, token), until, now)
        raise errors.key_blocked(contact.type_name, _when(until))

    def _record_block(self, contact: Contact, tokens: list[str], now: float, until: float) -> None:
        """The row now holds the block; record it in the blocked-keys table and this process's lockout cache too
        (SPEC: both are written; the row is what makes the block hold against a concurrent generate)."""
        type_ = contact.type_name
        self.store.block_key(BlockedRow(type_, tokens[0], created_on=now, blocked_on=now, blocked_until=until))
        self.lockout.put(_cache_id(type_, tokens[0]), until, now)
        log.info("key blocked type=%s key=%s until=%s", type_, contact.masked, _when(until))

    # -- verify ---------------------------------------------------------------------------------------------------
    def verify(self, contact: Contact, offered: str, *, user_id: str | None = None) -> None:
        """Returns when the code was right (and is now consumed); raises the contract's error otherwise."""
        self._check_owner(contact, user_id)
        tokens = self.keys.lookup_tokens(contact.type_name, contact.canonical)
        for round_ in range(MAX_CAS_ROUNDS):
            row = self._load(contact.type_name, tokens)
            current = self._decode(row)
            verdict = check_code(current, offered, self._now(), self.limits)
            assert row is not None  # check_code refuses a key without a row
            if self._write(contact, row.key, row, current, verdict.state):
                break
            _back_off(round_)
        else:
            raise ContentionError(contact.masked)
        if not verdict.accepted:
            raise errors.verification_failed(self.limits.max_verify_attempts, verdict.remaining)

    # -- rule 2: who owns the key ---------------------------------------------------------------------------------
    def _check_owner(self, contact: Contact, user_id: str | None) -> None:
        if self.directory is None:
            return
        if user_id is None:
            with _directory_answers():
                in_use = self.directory.key_in_use(contact.type, contact.key)
            if in_use:
                raise errors.key_already_in_use()
            return
        identifier = contact.identifier
        assert identifier is not None  # Contact fills it in from the contact type when not given
        allowed = self._user_contacts(user_id).for_identifier(identifier)
        if contact.key in allowed:
            return
        if not identifier.is_user_field:
            raise errors.invalid_value("key", contact.masked, "a current or previously used contact of the user")
        if not allowed:
            raise _no_value_for(identifier)
        raise errors.invalid_value("key", contact.masked, f"the user's {identifier.value}")

    # -- Sunbird's user-field types: the destination is a field of the user record --------------------------------
    def destination(self, identifier: IdentifierType, contact: Contact | None, user_id: str | None) -> Contact:
        """The contact a request names: its `key` when it has one (rule 2 then checks that it is the user's field),
        else the value of the user-field type's field in the record of `userId`."""
        if contact is not None:
            return contact
        if self.directory is None or user_id is None:
            raise errors.mandatory_missing("key")  # no user record to read the field from
        values = self._user_contacts(user_id).for_identifier(identifier)
        if not values:
            raise _no_value_for(identifier)
        if len(values) > 1:
            raise errors.mandatory_missing("key")  # several previously used ones: the key says which
        (value,) = values
        return Contact(identifier.contact_type, value, identifier)

    def _user_contacts(self, user_id: str) -> UserContacts:
        assert self.directory is not None  # the callers return early without one
        with _directory_answers():
            contacts = self.directory.user_contacts(user_id)
        if contacts is None:
            raise errors.resource_not_found("user")
        return contacts

    # -- rows <-> state -------------------------------------------------------------------------------------------
    def _load(self, type_: str, tokens: list[str]) -> OtpRow | None:
        """The key's row, under the newest key that has one (rows written before a key rotation stay put)."""
        for token in tokens:
            row = self.store.get_otp(type_, token)
            if row is not None:
                return row
        return None

    def _decode(self, row: OtpRow | None) -> OtpState | None:
        if row is None:
            return None
        code = None
        if row.otp is not None:
            try:
                code = self.keys.decrypt_code(row.otp, row.type, row.key)
            except DecryptionError:
                # Keys were changed without keeping the old one: the code is lost, a new generate replaces it.
                log.error("stored code does not decrypt under any configured key; treating it as absent")
        return OtpState(code, *_shared_values(row))

    def _write(
        self, contact: Contact, token: str, row: OtpRow | None, current: OtpState | None, state: OtpState
    ) -> bool:
        """Compare-and-set `state` over `row` (read as `current`); a new row when there was none."""
        new_row = self._new_row(contact.type_name, token, row, current, state)
        if row is None:
            return self.store.insert_otp(new_row)
        return self.store.update_otp(new_row, row.version)

    def _new_row(
        self, type_: str, token: str, row: OtpRow | None, current: OtpState | None, state: OtpState
    ) -> OtpRow:
        """`state` as the row that replaces `row` (read as `current`), or as a new row when there was none."""
        if state.code is None:
            otp = None
        elif row is not None and current is not None and state.code == current.code and token == row.key:
            otp = row.otp  # the same code in the same row (a resend, a wrong guess): its ciphertext still fits
        else:
            otp = self.keys.encrypt_code(state.code, type_, token)
        return OtpRow(
            type_, token, otp, *_shared_values(state),  # type: ignore[misc]  # attrgetter's tuple has no length
            version=1 if row is None else row.version + 1,
            expires_at=state.keep_until(self.limits),
        )

    def _now(self) -> float:
        """The clock in whole milliseconds: what both stores keep, so a time read back equals the time written."""
        return math.floor(self.clock() * 1000) / 1000

    def check_health(self) -> bool:
        try:
            self.store.ping()
        except StoreUnavailable:
            return False
        return True


# What a stored row and the policy's state have in common, field for field (the code is encrypted in between): every
# field of OtpState after its code, in the order OtpRow declares them after type, key and otp.
_SHARED_FIELDS = OtpState._fields[1:]
if OtpRow._fields[3:3 + len(_SHARED_FIELDS)] != _SHARED_FIELDS:  # _decode and _write pass them in order
    raise ImportError("OtpRow's fields after type, key and otp must be OtpState's after code, in the same order")
_shared_values = operator.attrgetter(*_SHARED_FIELDS)  # a tuple of them, read in C


@contextlib.contextmanager
def _directory_answers() -> Iterator[None]:
    """A user directory that cannot be asked is the service's failure, not the caller's: 503, and a log line."""
    try:
        yield
    except DirectoryUnavailable as exc:
        log.warning("user directory unavailable: %s", exc)
        raise errors.server_error(503) from None


def _no_value_for(identifier: IdentifierType) -> errors.OtpError:
    """The user record has no (usable) value in the field a user-field type names: userorg's "invalid requested
    data"."""
    error = errors.invalid_value("type", identifier.value, "a type whose field the user record has a value in")
    error.userorg_key = sunbird_codes.INVALID_REQUESTED_DATA
    return error


def _cache_id(type_: str, token: str) -> str:
    return f"{type_}:{token}"


def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _back_off(round_: int) -> None:
    """After a few lost compare-and-sets, wait a little, at random, so contending requests spread out."""
    if round_ >= 2:
        time.sleep(random.uniform(0, 0.002 * min(round_, 10)))
