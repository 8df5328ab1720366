"""The store port: what the service needs from a database, and nothing more.

Every write that follows a read is a compare-and-set on `version`, so the service can turn "read, decide, write"
into an atomic step on any store: SQLite does it with `UPDATE ... WHERE version = ?`, Cassandra with a lightweight
transaction `IF version = ?`. Rows carry an absolute expiry (`expires_at`); the store turns it into its own TTL
and must never return an expired row. Keys and codes reach the store already encrypted.
"""
from __future__ import annotations

import abc
import math
from typing import NamedTuple, Sequence


class StoreUnavailable(Exception):
    """The store could not be reached or did not answer in time: the caller answers 503."""


class OtpRow(NamedTuple):
    """One row of the otp table. A NamedTuple, not a frozen dataclass: as immutable, and built about five times
    faster (a frozen dataclass's __init__ sets each of the 14 fields through object.__setattr__), on every request."""

    type: str
    key: str  # deterministic ciphertext of the normalised key
    otp: str | None  # ciphertext of the code; None once used or locked
    created_on: float | None
    updated_on: float | None
    expires_on: float | None  # when the code stops verifying
    retry_count: int
    is_locked: bool
    locked_on: float | None
    send_count: int
    window_start: float | None
    last_sent_on: float | None
    blocked_until: float | None  # MAX_LIMIT_EXHAUSTED blocked the key until then (the row lives at least as long)
    version: int
    # When the whole row goes (the store's TTL). 0.0 in a row that create_otp returns from a store that cannot tell
    # (Cassandra answers a failed IF NOT EXISTS without the TTL): the service never reads it, only writes it.
    expires_at: float


class BlockedRow(NamedTuple):
    type: str
    key: str  # deterministic ciphertext, as in OtpRow.key
    created_on: float
    blocked_on: float
    blocked_until: float  # also the row's expiry


class Counter(NamedTuple):
    """One fixed-window counter of the abuse limits: `name` is opaque (the caller hashes what it counts), the window
    `[start, start + seconds)` is part of the counter's identity, and the store forgets the counter when it ends."""

    name: str
    start: float
    seconds: int
    limit: int  # a take is refused once the count has reached it

    @property
    def ends(self) -> float:
        return self.start + self.seconds


class Taken(NamedTuple):
    """What take_counts did: `refused` is the index of the first counter that was at its limit (None: all were
    taken); `counts` are the counters' values after the take (or, when refused, as the store saw them)."""

    refused: int | None
    counts: tuple[int, ...]


class Store(abc.ABC):
    """One store holds both tables. Implementations must be safe to share between threads of one process."""

    name: str = "store"
    # Whether a generate should try to create a key's row before it has read it (create_otp): for a store whose read
    # costs about what its insert does (a round trip, a statement), a new key then costs one step instead of two.
    insert_first: bool = False

    @abc.abstractmethod
    def get_otp(self, type_: str, key: str) -> OtpRow | None:
        """The row, read linearizably (after any write that was acknowledged), or None if absent or expired."""

    @abc.abstractmethod
    def insert_otp(self, row: OtpRow) -> bool:
        """Create the row if no live row exists for (type, key). False if one does."""

    @abc.abstractmethod
    def update_otp(self, row: OtpRow, expected_version: int) -> bool:
        """Replace every field of the live row whose version is `expected_version`. False if there is none."""

    @abc.abstractmethod
    def delete_otp(self, type_: str, key: str) -> None:
        """Remove the row, whatever its version. (The service never does: a block is an update of the row, so
        that an insert cannot undo it. Kept for operators' tools and tests.)"""

    @abc.abstractmethod
    def block_key(self, row: BlockedRow) -> None:
        """Record a block until `row.blocked_until` (a later block replaces an earlier one)."""

    @abc.abstractmethod
    def get_block(self, type_: str, key: str) -> BlockedRow | None:
        """The live block of (type, key), or None."""

    def get_otp_and_block(self, type_: str, key: str) -> tuple[OtpRow | None, BlockedRow | None]:
        """get_otp, then get_block: what a generate reads first. A store that can read both at once, from one
        snapshot, overrides this. (The block that counts is the row's own, `OtpRow.blocked_until`; the table's is
        read too, for blocks recorded without one.)"""
        return self.get_otp(type_, key), self.get_block(type_, key)

    def create_otp(self, row: OtpRow) -> tuple[bool, OtpRow | None, BlockedRow | None]:
        """insert_otp, and the key's block, at once: (whether the row was created; when it was not, the live row
        that stood in its way, as get_otp would read it but for `expires_at`, or None if it is gone since; the
        block of (row.type, row.key), as get_block reads it). A store that can do this in one round trip overrides
        it."""
        created = self.insert_otp(row)
        existing = None if created else self.get_otp(row.type, row.key)
        return created, existing, self.get_block(row.type, row.key)

    # -- the abuse limits' counters (service_layer/limits.py) ------------------------------------------------------
    @abc.abstractmethod
    def take_counts(self, counters: Sequence[Counter]) -> Taken:
        """Add one to every counter, in one round trip, if every one is below its limit; otherwise add to none.

        Atomic per counter across threads, workers and instances: N concurrent takes of a counter with limit L
        succeed min(N, L) times. Across counters, a refused take leaves every counter as it was (a store that cannot
        refuse them all at once gives back what it took before it returns). Counters live until their window ends.
        A counter whose limit is 0 is only read: the take is refused, with its current count. A store may refuse a
        counter it saw at its limit a moment ago without asking again (Cassandra: for a second), and then names the
        first counter it knows is full; a release by another process in that moment is seen late.
        """

    @abc.abstractmethod
    def release_counts(self, counters: Sequence[Counter]) -> None:
        """Take back one from each counter (never below 0): for a request that took them and then sent nothing."""

    @abc.abstractmethod
    def ping(self) -> None:
        """Raise StoreUnavailable unless the store answers."""

    def open(self) -> None:  # noqa: B027 - an optional hook: a store with nothing to connect keeps this default
        """Connect. Called lazily in each process, after a fork (gunicorn workers)."""

    def close(self) -> None:  # noqa: B027 - an optional hook: a store with nothing to release keeps this default
        """Release connections."""


def ttl_seconds(expires_at: float, now: float, *, round_up: bool) -> int:
    """A TTL for a store that counts whole seconds, at least 1.

    Inserts round down and updates round up, so on Cassandra the row marker an INSERT leaves never outlives the
    cells of a later UPDATE (expiries never move earlier: see OtpState.keep_until).
    """
    remaining = expires_at - now
    return max(1, math.ceil(remaining) if round_up else math.floor(remaining))
