"""Memory of the in-memory lockout cache: bytes per entry at its maximum, and a flood of distinct keys.

    python3 scripts/lockout_memory.py [--entries 100000] [--flood 10] [--email-share 0.5]

Fills a LockoutCache (as the service builds it: OTP_LOCKOUT_CACHE_SIZE entries, OTP_LOCKOUT_CACHE_TTL_SECONDS)
to its maximum with the entry ids the service uses, f"{type}:{token}" where the token is the base64url AES-SIV
ciphertext of a normalised key (services._cache_id, crypto.KeyRing.lookup_token): phones like +9198xxxxxxxx and
emails like user.1234567@example.org, `--email-share` of them emails. It then puts `--flood` times as many more
distinct keys, as an attacker making keys blocked one after another would, and shows that memory stays where it
was at the maximum. Reported: tracemalloc's count of bytes the cache holds (ids included), per entry, and the
process's resident set size (RSS), at each step.
"""
from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from otp_service.adapters.crypto import KeyRing, new_key  # noqa: E402
from otp_service.adapters.lockout_cache import LockoutCache  # noqa: E402
from otp_service.service_layer.services import _cache_id  # noqa: E402


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def entry_ids(keys: KeyRing, start: int, count: int, email_share: float):
    """Distinct ids as the service makes them; every `1/email_share`-th one an email."""
    every = round(1 / email_share) if email_share > 0 else 0
    for i in range(start, start + count):
        if every and i % every == 0:
            yield _cache_id("email", keys.lookup_token("email", f"user.{i:07d}@example.org"))
        else:
            yield _cache_id("phone", keys.lookup_token("phone", f"+9198{i:08d}"))


def held(snapshot_before: tracemalloc.Snapshot) -> int:
    """Bytes allocated since `snapshot_before` and still alive."""
    gc.collect()
    after = tracemalloc.take_snapshot()
    return sum(stat.size_diff for stat in after.compare_to(snapshot_before, "filename"))


def fill_and_flood(args, on_step) -> None:
    """Fill the cache to its maximum, then flood it round by round; on_step(name) after each."""
    keys = KeyRing([new_key()])
    now = time.time()
    blocked_until = now + 86400
    cache = LockoutCache(args.entries, 300)
    on_step("empty", cache)
    for entry_id in entry_ids(keys, 0, args.entries, args.email_share):
        cache.put(entry_id, blocked_until, now)
    assert len(cache) == args.entries
    on_step("full", cache)
    for round_ in range(1, args.flood + 1):
        for entry_id in entry_ids(keys, round_ * args.entries, args.entries, args.email_share):
            cache.put(entry_id, blocked_until, now)
        assert len(cache) == args.entries
        on_step(f"+{round_}x flood", cache)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=100_000, help="the cache's maximum (OTP_LOCKOUT_CACHE_SIZE)")
    parser.add_argument("--flood", type=int, default=10, help="then this many times as many more distinct keys")
    parser.add_argument("--email-share", type=float, default=0.5, help="share of email keys (default 0.5)")
    parser.add_argument("--only", choices=("rss", "bytes"), default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.only is None:
        # Two runs, each in a fresh process: RSS without tracemalloc (whose own bookkeeping would swell it), then
        # the bytes the cache holds, counted by tracemalloc.
        base = [sys.executable, __file__, "--entries", str(args.entries), "--flood", str(args.flood),
                "--email-share", str(args.email_share)]
        rss = json.loads(subprocess.run(base + ["--only", "rss"], check=True, capture_output=True, text=True).stdout)
        held_ = json.loads(subprocess.run(base + ["--only", "bytes"], check=True, capture_output=True,
                                          text=True).stdout)
        report(args, rss, held_)
        return 0

    steps: dict[str, int] = {}
    if args.only == "rss":
        fill_and_flood(args, lambda name, cache: steps.__setitem__(name, (gc.collect(), rss_kib())[1] * 1024))
    else:
        tracemalloc.start()
        gc.collect()
        base_snapshot = tracemalloc.take_snapshot()
        fill_and_flood(args, lambda name, cache: steps.__setitem__(name, held(base_snapshot)))
        tracemalloc.stop()
    print(json.dumps(steps))
    return 0


def report(args, rss: dict[str, int], held_: dict[str, int]) -> None:
    n = args.entries
    print(f"LockoutCache({n}, ttl 300): ids f'{{type}}:{{token}}' (AES-SIV tokens), {args.email_share:.0%} emails")
    print(f"{'step':14s} {'cache bytes':>12s} {'bytes/entry':>12s} {'process RSS MiB':>16s}")
    for name in held_:
        if name == "empty":
            continue
        print(f"{name:14s} {held_[name]:12d} {held_[name] / n:12.1f} {rss[name] / 2**20:16.1f}")
    full = held_["full"]
    worst = max(v for k, v in held_.items() if k != "empty")
    print(f"at the maximum: {full / n:.0f} bytes per entry ({full / 2**20:.1f} MiB); after the flood, at most "
          f"{worst / n:.0f} bytes per entry ({worst / 2**20:.1f} MiB) with {n} entries")
    last = list(rss)[-1]
    print(f"process RSS: {rss['empty'] / 2**20:.1f} MiB empty, {rss['full'] / 2**20:.1f} MiB full, "
          f"{rss[last] / 2**20:.1f} MiB after {args.flood * n} more distinct keys "
          f"(the most at any step: {max(rss.values()) / 2**20:.1f} MiB)")


if __name__ == "__main__":
    sys.exit(main())
