"""The Cassandra ceiling: how many lightweight transactions per second the cluster answers this machine, driver only.

    OTP_CASSANDRA_CONTACT_POINTS=127.0.0.1 python3 scripts/bench_cassandra.py --in-flight 16 --duration 10

One request is one `INSERT INTO otp ... IF NOT EXISTS USING TTL` of a new key (the statement a generate of a new key
ends with), prepared and sent by the same cassandra-driver settings as the service's (otp_service's build_cluster:
token-aware routing, LOCAL_QUORUM, LOCAL_SERIAL), with `--in-flight` requests outstanding at all times from one
process and nothing else done per request. scripts/bench.py runs it in the same run as the service, with as many in
flight as wrk has connections, and prints the service's rate as a share of it.
"""
from __future__ import annotations

import argparse
import os
import secrets
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from otp_service.adapters.cassandra_store import build_cluster  # noqa: E402
from otp_service.config import CassandraSettings, EnvReader  # noqa: E402

# The columns of cql/002_otp.cql that a new row sets, as the store's insert_otp sets them.
INSERT = (
    "INSERT INTO otp (type, key, otp, created_on, updated_on, expires_on, retry_count, is_locked, locked_on, "
    "send_count, window_start, last_sent_on, version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "IF NOT EXISTS USING TTL ?"
)


@dataclass
class CeilingRun:
    in_flight: int
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    errors: int
    not_applied: int
    release_version: str
    first_error: str = ""
    node_ms: float = 0.0  # the local nodes' CPU per LWT, when scripts/bench.py measures it (0: not measured)


def _percentile(ordered: list[float], fraction: float) -> float:
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def measure(settings: CassandraSettings, keyspace: str, *, in_flight: int, duration: float,
            warmup: float = 1.0) -> CeilingRun:
    """`in_flight` lanes, each sending its next LWT as soon as the last one is answered, for `duration` seconds."""
    cluster = build_cluster(settings)
    try:
        session = cluster.connect()
        release = session.execute("SELECT release_version FROM system.local").one()[0]
        insert = session.prepare(INSERT, keyspace=keyspace)
        lock = threading.Lock()
        done = threading.Event()
        state = {"measuring": False, "stop_at": 0.0, "lanes": in_flight, "errors": 0, "not_applied": 0}
        latencies: list[float] = []

        def values() -> tuple:
            now = int(time.time() * 1000)
            return ("email", f"bench-{secrets.token_hex(16)}", "bench", now, now, now + 600_000, 0, False, None, 1,
                    now, now, 1, 600)

        def send() -> None:
            started = time.perf_counter()
            future = session.execute_async(insert, values())
            future.add_callbacks(answered, failed, callback_args=(started,), errback_args=(started,))

        def next_or_finish() -> None:
            if time.perf_counter() < state["stop_at"]:
                send()
                return
            with lock:
                state["lanes"] -= 1
                if state["lanes"] == 0:
                    done.set()

        def answered(rows, started: float) -> None:
            elapsed = time.perf_counter() - started
            if state["measuring"]:
                with lock:
                    latencies.append(elapsed)
                    if not rows[0][0]:  # [applied]: a new key always is
                        state["not_applied"] += 1
            next_or_finish()

        def failed(exc, started: float) -> None:
            with lock:
                state["errors"] += 1
                state.setdefault("first_error", repr(exc))
            next_or_finish()

        state["stop_at"] = time.perf_counter() + warmup + duration
        for _ in range(in_flight):
            send()
        time.sleep(warmup)
        state["measuring"] = True
        began = time.perf_counter()
        done.wait(duration + 60)
        seconds = time.perf_counter() - began
        with lock:
            ordered = sorted(latencies)
        return CeilingRun(
            in_flight=in_flight, requests=len(ordered), seconds=seconds, rps=len(ordered) / seconds if seconds else 0,
            p50_ms=_percentile(ordered, 0.50) * 1000, p99_ms=_percentile(ordered, 0.99) * 1000,
            max_ms=(ordered[-1] * 1000 if ordered else 0.0), errors=state["errors"],
            not_applied=state["not_applied"], release_version=release, first_error=state.get("first_error", ""),
        )
    finally:
        cluster.shutdown()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--in-flight", type=int, default=16, help="requests outstanding at once (default 16)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured (default 10)")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds unmeasured first (default 1)")
    opts = parser.parse_args(argv)
    if not os.environ.get("OTP_CASSANDRA_CONTACT_POINTS", "").strip():
        raise SystemExit("bench_cassandra: set OTP_CASSANDRA_CONTACT_POINTS (scripts/cassandra start prints it)")
    settings = CassandraSettings.from_env(EnvReader())
    from otp_service.adapters.cassandra_migrate import default_cql_dir, migrate_cluster

    migrate_cluster(settings, settings.keyspace, default_cql_dir(), say=lambda line: None)
    run = measure(settings, settings.keyspace, in_flight=opts.in_flight, duration=opts.duration, warmup=opts.warmup)
    print(f"Apache Cassandra {run.release_version} at {','.join(settings.contact_points)}:{settings.port}, "
          f"keyspace {settings.keyspace}: {run.in_flight} in flight, {run.requests} LWTs in {run.seconds:.1f} s: "
          f"{run.rps:.0f}/s, p50 {run.p50_ms:.1f} ms, p99 {run.p99_ms:.1f} ms, max {run.max_ms:.1f} ms, "
          f"errors {run.errors}, not applied {run.not_applied}"
          + (f"; first error: {run.first_error}" if run.errors else ""))
    return 1 if run.errors or run.not_applied else 0


if __name__ == "__main__":
    sys.exit(main())
