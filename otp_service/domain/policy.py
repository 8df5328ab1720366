"""The rules of generate and verify (SPEC section 2), as pure functions of one key's state and the time.

Nothing here reads a clock or a table: the service layer reads the state, asks these functions what the next
state is, and writes it back with compare-and-set. That split is what makes the rules hold under concurrency:
an outcome is only reported after the state that records it was written.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

from . import errors
from .codes import codes_match, new_code


@dataclass(frozen=True)
class Limits:
    code_length: int = 6
    code_ttl: int = 600  # seconds one code verifies
    max_verify_attempts: int = 3  # wrong guesses before the code locks
    max_sends: int = 4  # sends per key per window
    send_window: int = 86400  # seconds, fixed from the key's first send
    resend_cooldown: int = 30  # least gap between two sends to one key; 0 turns it off
    block_seconds: int = 86400  # how long MAX_LIMIT_EXHAUSTED blocks a key

    @property
    def window_hours(self) -> str:
        hours = self.send_window / 3600
        return str(int(hours)) if hours.is_integer() else f"{hours:.2f}".rstrip("0").rstrip(".")


class OtpState(NamedTuple):
    """One key's record, decrypted. Times are epoch seconds.

    A NamedTuple, like the store's rows, rather than a frozen dataclass: as immutable, with `_replace` for the next
    state, and about four times cheaper to build (every request builds one or two).
    """

    # The order of the store's OtpRow after its type and key, so a row's fields pass as they are (services.py).
    code: str | None = None  # None: never generated, used, or locked
    created_on: float | None = None  # generation time of the current code
    updated_on: float | None = None
    expires_on: float | None = None
    retry_count: int = 0
    is_locked: bool = False
    locked_on: float | None = None
    send_count: int = 0
    window_start: float | None = None
    last_sent_on: float | None = None
    # Set by MAX_LIMIT_EXHAUSTED: the key is blocked until then. The block is a state of the row rather than a
    # deletion of it, so every compare-and-set on the key sees it: an insert cannot bring a blocked key back.
    blocked_until: float | None = None

    def live_code(self, now: float) -> str | None:
        """The code if it can still verify: generated, not used, not locked, not expired (a block drops it)."""
        if self.code is None or self.is_locked or self.expires_on is None or now >= self.expires_on:
            return None
        return self.code

    def blocked(self, now: float) -> bool:
        return self.blocked_until is not None and now < self.blocked_until

    def sends_in_window(self, now: float, limits: Limits) -> int:
        return self.send_count if self._window_open(now, limits) else 0

    def keep_until(self, limits: Limits) -> float:
        """When nothing of this record matters any more: the latest of the code's expiry, the window's end and the
        block's end. Never earlier than the previous state's (a block keeps the window and the code's expiry it
        ends), so an UPDATE never shortens a row's TTL."""
        window_end = (self.window_start or 0) + limits.send_window
        return max(self.expires_on or 0, window_end, self.blocked_until or 0)

    def _window_open(self, now: float, limits: Limits) -> bool:
        # A block closes the window it ended: once the block is over, the next send starts a new one.
        return (
            self.blocked_until is None
            and self.window_start is not None
            and now < self.window_start + limits.send_window
        )


class Send(NamedTuple):
    """Generate may go ahead: write `state`, then deliver `state.code`."""

    state: OtpState
    resend: bool


class Block(NamedTuple):
    """Generate is over the send limit: write `state` (the key blocked until `until`, its code gone), then answer
    MAX_LIMIT_EXHAUSTED."""

    state: OtpState
    until: float


class Blocked(NamedTuple):
    """The key is blocked until `until`: refuse (KEY_BLOCKED), write nothing."""

    until: float


def plan_send(current: OtpState | None, now: float, limits: Limits) -> Send | Block | Blocked:
    """Rules 3 to 6 of generate: a block, the send window, resend with cool-down, or a new code."""
    state = current or OtpState()
    if state.blocked(now):
        assert state.blocked_until is not None  # blocked() says so
        return Blocked(until=state.blocked_until)
    sends = state.sends_in_window(now, limits)
    if sends >= limits.max_sends:
        until = now + limits.block_seconds
        return Block(state._replace(code=None, updated_on=now, blocked_until=until), until=until)
    if limits.resend_cooldown and state.last_sent_on is not None and sends:
        wait = state.last_sent_on + limits.resend_cooldown - now
        if wait > 0:
            raise cooldown_error(limits.resend_cooldown, wait)
    window_start = state.window_start if sends else now
    if state.live_code(now) is not None:
        # Resend: the same code, its expiry and its attempts untouched.
        resent = state._replace(send_count=sends + 1, window_start=window_start, last_sent_on=now, updated_on=now)
        return Send(resent, resend=True)
    fresh = OtpState(
        code=new_code(limits.code_length),
        created_on=now,
        expires_on=now + limits.code_ttl,
        send_count=sends + 1, window_start=window_start, last_sent_on=now, updated_on=now,
    )
    return Send(fresh, resend=False)


def cooldown_error(cooldown: int, wait: float) -> errors.OtpError:
    unit = "second" if cooldown == 1 else f"{cooldown} seconds"
    error = errors.rate_limit_exceeded(unit)
    error.retry_after = max(1, math.ceil(round(wait, 3)))  # stores keep milliseconds
    return error


class Verdict(NamedTuple):
    """The outcome of one check: write `state`, then answer. `accepted` means the code was right."""

    state: OtpState
    accepted: bool
    remaining: int


def check_code(current: OtpState | None, offered: str, now: float, limits: Limits) -> Verdict:
    """Verify: a right code is consumed; a wrong one costs an attempt and the last attempt locks the code.

    No live code (never sent, expired, used, locked or blocked) is one answer, ERROR_INVALID_OTP, whichever it was.
    """
    expected = current.live_code(now) if current else None
    if current is None or expected is None:
        raise errors.invalid_otp()
    if codes_match(expected, offered):
        return Verdict(current._replace(code=None, updated_on=now), accepted=True, remaining=0)
    retries = current.retry_count + 1
    remaining = max(limits.max_verify_attempts - retries, 0)
    if remaining == 0:
        locked = current._replace(code=None, retry_count=retries, is_locked=True, locked_on=now, updated_on=now)
        return Verdict(locked, accepted=False, remaining=0)
    return Verdict(current._replace(retry_count=retries, updated_on=now), accepted=False, remaining=remaining)
