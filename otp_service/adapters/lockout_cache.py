"""The in-memory lockout cache: a bounded, per-process accelerator in front of the blocked-keys table.

It only remembers blocks it has seen (never "not blocked"), so a block written by another worker or instance is
found in the table on this process's next request; the table stays the record. Entries expire at the earlier of
the cache TTL and the block's end, and the least recently used entry goes when the cache is full.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Callable


class LockoutCache:
    def __init__(self, max_entries: int, ttl_seconds: float, clock: Callable[[], float] = time.monotonic):
        self.max_entries = max_entries
        self.ttl = ttl_seconds
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, float]] = OrderedDict()  # id -> (cache expiry, blocked until)
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
        with self._lock:
            found = self._entries.get(entry_id)
            if found is None:
                return None
            cache_expiry, blocked_until = found
            if self._clock() >= cache_expiry or now >= blocked_until:
                del self._entries[entry_id]
                return None
            self._entries.move_to_end(entry_id)
            return blocked_until

    def put(self, entry_id: str, blocked_until: float, now: float) -> None:
        if not self.enabled or blocked_until <= now:
            return
        cache_expiry = self._clock() + min(self.ttl, blocked_until - now)
        with self._lock:
            self._entries[entry_id] = (cache_expiry, blocked_until)
            self._entries.move_to_end(entry_id)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
