"""The in-memory lockout cache: a bounded, per-process accelerator in front of the blocked-keys table.

It only remembers blocks it has seen (never "not blocked"), so a block written by another worker or instance is
found in the table on this process's next request; the table stays the record. Entries expire at the earlier of
the cache TTL and the block's end, and the least recently used entry goes when the cache is full.

Entries are kept small, since the cache is sized in entries and may be flooded with distinct keys: an entry id is
kept as its 16-byte BLAKE2b digest (two ids that differ have the same digest with probability 2**-128), and its two
times as one complex number (two doubles in one 32-byte object). Whatever the length of the ids, a full cache holds
at most 280 bytes an entry, 320 while its table grows, however many distinct keys pass through it (it was 273 to
332 bytes full, and more for long emails): docs/BENCHMARKS.md, scripts/lockout_memory.py.
"""
from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from typing import Callable


def _compact(entry_id: str) -> bytes:
    return hashlib.blake2b(entry_id.encode(), digest_size=16).digest()


class LockoutCache:
    def __init__(self, max_entries: int, ttl_seconds: float, clock: Callable[[], float] = time.monotonic):
        self.max_entries = max_entries
        self.ttl = ttl_seconds
        self._clock = clock
        # digest of the id -> complex(cache expiry on the monotonic clock, blocked until in wall time)
        self._entries: OrderedDict[bytes, complex] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.max_entries > 0 and self.ttl > 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, entry_id: str, now: float) -> float | None:
        """When the block of `entry_id` ends, if this process knows of one still running at wall time `now`."""
        if not self.enabled:
            return None
        key = _compact(entry_id)
        with self._lock:
            found = self._entries.get(key)
            if found is None:
                return None
            cache_expiry, blocked_until = found.real, found.imag
            if self._clock() >= cache_expiry or now >= blocked_until:
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return blocked_until

    def put(self, entry_id: str, blocked_until: float, now: float) -> None:
        if not self.enabled or blocked_until <= now:
            return
        cache_expiry = self._clock() + min(self.ttl, blocked_until - now)
        key = _compact(entry_id)
        with self._lock:
            self._entries[key] = complex(cache_expiry, blocked_until)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
