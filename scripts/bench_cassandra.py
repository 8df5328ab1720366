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
    node_ms: float = 0.0  # the local nodes' CPU per request, when scripts/bench.py measures it (0: not measured)
    shape: str = "lwt"
    flask: object = None  # scripts/bench.py: the Flask ceiling app sending the same statements (its Run), if measured


def _percentile(ordered: list[float], fraction: float) -> float:
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


# What one request sends, step by step (the statements of a step at once, the next step when all have answered),
# as otp_service's CassandraStore names its statements. "lwt" is the ceiling; the others are what the service's
# scenarios ask of Cassandra (docs/storage.md), sent by the driver alone: the service's share of the machine is then
# whatever separates the two.
SHAPES = {
    "lwt": "one INSERT ... IF NOT EXISTS of a new key",
    "new": "a generate of a new key: the block's read and the INSERT ... IF NOT EXISTS at once",
    "resend": "a resend: the block's read and a refused INSERT ... IF NOT EXISTS at once, then UPDATE ... IF version",
    "verify": "a verify: the row's read, then UPDATE ... IF version",
}
POOL_PER_LANE = 50  # existing keys per lane for the shapes that need a row (each used over and over)


def measure(settings: CassandraSettings, keyspace: str, *, in_flight: int, duration: float,
            warmup: float = 1.0, shape: str = "lwt") -> CeilingRun:
    """`in_flight` lanes, each sending its next request as soon as the last one is answered, for `duration`
    seconds; a request is `shape` (SHAPES)."""
    from otp_service.adapters.cassandra_store import statements

    cluster = build_cluster(settings)
    try:
        session = cluster.connect()
        release = session.execute("SELECT release_version FROM system.local").one()[0]
        insert = session.prepare(INSERT.replace("INTO otp ", f"INTO {keyspace}.otp "))
        cql = statements(keyspace)
        store = {name: session.prepare(cql[name]) for name in ("get_otp", "get_block", "insert_otp", "update_otp")}
        lock = threading.Lock()
        done = threading.Event()
        state = {"measuring": False, "stop_at": 0.0, "lanes": in_flight, "errors": 0, "not_applied": 0}
        latencies: list[float] = []

        def values() -> tuple:
            now = int(time.time() * 1000)
            return ("email", f"bench-{secrets.token_hex(16)}", "bench", now, now, now + 600_000, 0, False, None, 1,
                    now, now, 1, 600)

        def fields(version: int) -> tuple:  # _OTP_FIELDS of a row with a live code
            now = int(time.time() * 1000)
            return ("bench", now, now, now + 600_000, 0, False, None, 1, now, now, None, version)

        # Per lane: its keys and their versions (only this lane writes them, so it knows them).
        pools: list[list[list]] = []
        if shape in ("resend", "verify"):
            for _ in range(in_flight):
                lane = [[f"bench-{secrets.token_hex(16)}", 1] for _ in range(POOL_PER_LANE)]
                for key, version in lane:
                    session.execute(store["insert_otp"], ("email", key, *fields(version), 3600))
                pools.append(lane)
        turns = [0] * in_flight

        def steps(lane: int) -> list[list[tuple]]:
            if shape == "lwt":
                return [[(insert, values(), True)]]
            if shape == "new":  # the store's insert_otp: type, key, _OTP_FIELDS, TTL
                row = ("email", f"bench-{secrets.token_hex(16)}", *fields(1), 600)
                return [[(store["get_block"], row[:2], None), (store["insert_otp"], row, True)]]
            entry = pools[lane][turns[lane] % POOL_PER_LANE]
            turns[lane] += 1
            key, version = entry
            entry[1] = version + 1
            update = (store["update_otp"], (3600, *fields(version + 1), "email", key, version), True)
            if shape == "resend":
                refused = (store["insert_otp"], ("email", key, *fields(1), 600), False)
                return [[(store["get_block"], ("email", key), None), refused], [update]]
            return [[(store["get_otp"], ("email", key), None)], [update]]

        def send(lane: int, started: float | None = None, plan: list | None = None) -> None:
            if plan is None:
                started, plan = time.perf_counter(), steps(lane)
            step, rest = plan[0], plan[1:]
            pending = [len(step)]

            def one_answered(rows, expect) -> None:
                if expect is not None and bool(rows[0][0]) != expect:  # [applied] as the shape wants it
                    with lock:
                        state["not_applied"] += 1
                with lock:
                    pending[0] -= 1
                    last = pending[0] == 0
                if last:
                    if rest:
                        send(lane, started, rest)
                    else:
                        answered(lane, started)

            for statement, bound, expect in step:
                future = session.execute_async(statement, bound)
                future.add_callbacks(one_answered, failed, callback_args=(expect,), errback_args=(lane,))

        def next_or_finish(lane: int) -> None:
            if time.perf_counter() < state["stop_at"]:
                send(lane)
                return
            with lock:
                state["lanes"] -= 1
                if state["lanes"] == 0:
                    done.set()

        def answered(lane: int, started: float) -> None:
            elapsed = time.perf_counter() - started
            if state["measuring"]:
                with lock:
                    latencies.append(elapsed)
            next_or_finish(lane)

        def failed(exc, lane: int) -> None:
            with lock:
                state["errors"] += 1
                state.setdefault("first_error", repr(exc))
            next_or_finish(lane)

        state["stop_at"] = time.perf_counter() + warmup + duration
        for lane in range(in_flight):
            send(lane)
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
            shape=shape,
        )
    finally:
        cluster.shutdown()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--in-flight", type=int, default=16, help="requests outstanding at once (default 16)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured (default 10)")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds unmeasured first (default 1)")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="lwt",
                        help="what one request sends: " + "; ".join(f"{k}: {v}" for k, v in SHAPES.items()))
    opts = parser.parse_args(argv)
    if not os.environ.get("OTP_CASSANDRA_CONTACT_POINTS", "").strip():
        raise SystemExit("bench_cassandra: set OTP_CASSANDRA_CONTACT_POINTS (scripts/cassandra start prints it)")
    settings = CassandraSettings.from_env(EnvReader())
    from otp_service.adapters.cassandra_migrate import default_cql_dir, migrate_cluster

    migrate_cluster(settings, settings.keyspace, default_cql_dir(), say=lambda line: None)
    run = measure(settings, settings.keyspace, in_flight=opts.in_flight, duration=opts.duration, warmup=opts.warmup,
                  shape=opts.shape)
    print(f"Apache Cassandra {run.release_version} at {','.join(settings.contact_points)}:{settings.port}, "
          f"keyspace {settings.keyspace}: {SHAPES[run.shape]}, {run.in_flight} in flight, "
          f"{run.requests} requests in {run.seconds:.1f} s: "
          f"{run.rps:.0f}/s, p50 {run.p50_ms:.1f} ms, p99 {run.p99_ms:.1f} ms, max {run.max_ms:.1f} ms, "
          f"errors {run.errors}, not applied {run.not_applied}"
          + (f"; first error: {run.first_error}" if run.errors else ""))
    return 1 if run.errors or run.not_applied else 0


if __name__ == "__main__":
    sys.exit(main())
