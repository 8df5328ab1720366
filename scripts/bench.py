"""Benchmark the OTP service against the framework's own ceiling, under the same gunicorn settings and load.

    python3 scripts/bench.py                       # 2 workers, 16 connections, 10 s per scenario, embedded store
    python3 scripts/bench.py --duration 5 --scenarios new,right --json out.json
    python3 scripts/bench.py --provider-latency 300  # the Twilio channel against a slow provider (see below)
    python3 scripts/bench.py --clients 1 --ranges 1  # every request from 127.0.0.1, one number range per wrk thread

In one run it starts, on 127.0.0.1:
- the service: `otp-service serve --bind ... --workers N` (gunicorn.conf.py, the console channel, its own fresh
  SQLite file; or Cassandra when OTP_CASSANDRA_CONTACT_POINTS is set: `otp-service migrate` is run first), with
  the cool-down off and the send and attempt limits raised, so that every request takes the path it measures;
- the ceiling: scripts/ceiling_app.py, a Flask app run by the service's own gunicorn application class (so the
  same worker class, threads, keep-alive, logger and hooks), whose routes answer the success envelope and do
  nothing else.

Both get the same load from wrk (`apt-get install wrk`; written in C, it uses a few percent of one core here), the
same wrk script (scripts/bench.lua), the same connections and duration, one after the other, scenario by scenario:

- new:    generate, a new key on every request (a new code, a new row)
- resend: generate for keys that have a live code (the same code again, the send counted)
- wrong:  verify with a wrong code (an attempt counted)
- right:  verify with the right code (the code consumed); each prepared key is used once

The traffic is spread as production's is, so that the abuse limits (counting, never refusing) take as many counters
as there: every request carries an X-Forwarded-For address, one of --clients (default 100 000) in 10.0.0.0/8, the
next one each request, and both servers get OTP_TRUSTED_PROXIES=127.0.0.1 (the bench stands for the gateway); new
keys (and so the prepared ones) are Indian mobiles whose 7-digit E.164 ranges (the per-range counter's subject)
change from one request of a wrk thread to the next, over --ranges (default 10 000) ranges, every key still new to
every run. `--clients 1 --ranges 1` is the traffic before: every request from 127.0.0.1 (one per-address counter)
and one range per wrk thread. No scenario uses email keys (so no per-domain counter). The report's first line names
the spread.

The codes of prepared keys come from the console channel's lines on the service's standard output (each request
carries X-Request-ID k<key>, which the console prints beside the code), never from a test-only path. Every answer
is checked (status, and err for the wrong-code verify); a run with unexpected answers or socket errors is flagged.

With Cassandra (OTP_CASSANDRA_CONTACT_POINTS set; `scripts/cassandra start` runs a node), the Cassandra ceiling is
measured just before every service run, scripts/bench_cassandra.py: one lightweight transaction per request from the
cassandra-driver alone, as many in flight as wrk has connections, from this machine; a second table gives each
scenario's rate as a share of it (goal 0.35).

Provider-latency mode (--provider-latency N): the default serving setup (gunicorn.conf.py, the default worker count
unless --workers is given) with the real Twilio channel against scripts/twilio_standin.py (asyncio, answers 201
after N ms, never the bottleneck), in the same run as the same stand-in at 0 ms and as the console channel, each
its own service with its own store; generate with a new key per request, at each of --provider-connections (32
and 256 keep-alive connections). Printed per connection count: req/s, p50, p99, socket errors, timeouts and
non-2xx answers of each, and the ratios N ms / 0 ms and 0 ms / console against the goals (docs/BENCHMARKS.md).

Printed: requests per second, p50 and p99 latency (wrk's, per request, in ms) for each, and the service's share of
the ceiling's requests per second; then, per scenario, each server's CPU per request split into user and system
(kernel) time, and the whole machine's busy time per request during each run (so CPU spent outside the server, by
wrk or the kernel's own threads, shows). Exit status 1 if any run was invalid; missed goals are reported, not failed.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"
LUA = SCRIPTS / "bench.lua"

SCENARIOS = {
    # name: (label, wrk mode, expected status, body marker)
    "new": ("generate (new key)", "new", 200, "-"),
    "resend": ("generate (resend)", "resend", 200, "-"),
    "wrong": ("verify (wrong code)", "wrong", 400, "OTP_VERIFICATION_FAILED"),
    "right": ("verify (right code)", "right", 200, "-"),
}
GOAL_RATIO = 0.5
GOAL_P99_MS = 25.0
GOAL_CASSANDRA_RATIO = 0.35  # of the driver-only ceiling (scripts/bench_cassandra.py), with Cassandra as the store
POOL_SIZE = 1000  # keys each for resend and wrong: enough for ~90 000 wrong-code verifies at 100 attempts a key
CONSOLE_LINE = re.compile(r"msgid=k(\d+) .* is (\d+)\.")
DEFAULT_CLIENTS = 100_000
MAX_CLIENTS = 2**24 - 2  # 10.0.0.1 .. 10.255.255.254
RANGE_CHOICES = (1, 10, 100, 1000, 10_000)
DEFAULT_RANGES = 10_000


@dataclass(frozen=True)
class Spread:
    """Where the requests seem to come from and go to, so that the abuse limits' counters are as many as in
    production (scripts/bench.lua has the details): `clients` client addresses (1: every request is the socket
    peer's, 127.0.0.1; more: X-Forwarded-For from 10.0.0.0/8, with 127.0.0.1 a trusted proxy), and each wrk
    thread's new keys cycling over `ranges` number ranges (7-digit E.164 prefixes +91 9xxxx)."""

    clients: int = DEFAULT_CLIENTS
    ranges: int = DEFAULT_RANGES

    @classmethod
    def of(cls, opts) -> "Spread":
        return cls(opts.clients, opts.ranges)

    @property
    def range_digits(self) -> int:
        return len(str(self.ranges)) - 1

    def lua_args(self) -> list[str]:
        return [str(self.clients), str(self.range_digits)]

    def env(self) -> dict[str, str]:
        """The services' part: believe X-Forwarded-For from the bench's own address, as from the gateway."""
        return {"OTP_TRUSTED_PROXIES": "127.0.0.1"} if self.clients > 1 else {}

    def run_of(self, key: str) -> str:
        """The run number in a key made by a `new` run (9, the range digits, run, thread, index)."""
        return key[1 + self.range_digits:3 + self.range_digits]

    def describe(self) -> str:
        clients = (f"clients={self.clients} (X-Forwarded-For from 10.0.0.0/8, OTP_TRUSTED_PROXIES=127.0.0.1)"
                   if self.clients > 1 else "clients=1 (every request from 127.0.0.1)")
        ranges = (f"number ranges={self.ranges} per wrk thread" if self.ranges > 1
                  else "number ranges=1 per wrk thread and 100 000 keys")
        return f"{clients}, {ranges}"


@dataclass
class Run:
    target: str  # service | ceiling
    scenario: str
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    unexpected: int
    exhausted: int
    socket_errors: int
    cpu_ms: float = 0.0  # the server's CPU time (all workers) per request
    cpu_sys_ms: float = 0.0  # of which in the kernel (system calls): the rest is user time
    machine_ms: float = 0.0  # busy time of all the machine's CPUs per request: the server, wrk and anything else
    node_ms: float = 0.0  # CPU time of the Cassandra nodes running on this machine per request (0: none here)
    first_bad: str = ""

    @property
    def valid(self) -> bool:
        return self.requests > 0 and self.unexpected == 0 and self.exhausted == 0 and self.socket_errors == 0


@dataclass
class Result:
    scenario: str
    label: str
    service: Run
    ceiling: Run
    ratio: float = field(init=False)

    def __post_init__(self):
        self.ratio = self.service.rps / self.ceiling.rps if self.ceiling.rps else 0.0

    @property
    def goal_met(self) -> bool:
        return self.ratio >= GOAL_RATIO and self.service.p99_ms < GOAL_P99_MS


# -- processes ---------------------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A gunicorn server in its own process group; stdout and stderr to files."""

    def __init__(self, name: str, argv: list[str], env: dict, folder: Path, port: int):
        self.name, self.port = name, port
        self.stdout_path = folder / f"{name}.stdout"
        self.stderr_path = folder / f"{name}.stderr"
        with open(self.stdout_path, "ab") as out, open(self.stderr_path, "ab") as err:
            self.proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=out, stderr=err, start_new_session=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"bench: {self.name} exited at start; see {self.stderr_path}:\n{self._tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"GET /health HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
                    if s.recv(64).startswith(b"HTTP/1.1 200"):
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise SystemExit(f"bench: {self.name} not healthy after {timeout:.0f} s; see {self.stderr_path}")

    def worker_pids(self) -> list[int]:
        try:
            out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(self.proc.pid)], capture_output=True, text=True)
        except OSError:
            return []
        return [int(p) for p in out.stdout.split()]

    def worker_rss_kib(self) -> list[int]:
        sizes = []
        for pid in self.worker_pids():
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        sizes.append(int(line.split()[1]))
            except OSError:
                pass
        return sizes

    def cpu_seconds(self) -> tuple[float, float]:
        """(user + system, system) CPU time of the arbiter and its workers so far."""
        total = system = 0
        for pid in [self.proc.pid, *self.worker_pids()]:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
                system += int(fields[12])
            except (OSError, IndexError, ValueError):
                pass
        tick = os.sysconf("SC_CLK_TCK")
        return total / tick, system / tick

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)  # our own process group: the arbiter and its workers
                self.proc.wait(timeout=25)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait()

    def _tail(self) -> str:
        try:
            return "\n".join(self.stderr_path.read_text(errors="replace").splitlines()[-15:])
        except OSError:
            return ""


def machine_busy_seconds() -> float:
    """CPU time the whole machine spent busy so far (all CPUs: everything but idle and I/O wait), from /proc/stat."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0.0
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # user..steal, minus idle, iowait


def node_cpu_seconds() -> float:
    """CPU time (user + system) the Cassandra nodes running on this machine have used so far: every process whose
    command line names CassandraDaemon (0.0 when the cluster runs elsewhere)."""
    total, tick = 0.0, os.sysconf("SC_CLK_TCK")
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if b"CassandraDaemon" not in (proc / "cmdline").read_bytes():
                continue
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime (fields 14 and 15 of stat)
    return total


# -- load --------------------------------------------------------------------------------------------------------------
def wrk(url: str, api_key: str, mode: str, expect: int, marker: str, arg: str, *, duration: int,
        connections: int, threads: int, spread: Spread) -> dict:
    argv = [
        "wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--timeout", "10s",
        "-H", f"Authorization: Bearer {api_key}", "-s", str(LUA), url,
        "--", mode, str(threads), str(expect), marker, arg, *spread.lua_args(),
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60)
    for line in done.stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            return json.loads(line[len("BENCH_JSON "):])
    raise SystemExit(f"bench: wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")


def measure(target: str, scenario: str, server: Server, api_key: str, arg: str, opts) -> Run:
    _, mode, expect, marker = SCENARIOS[scenario]
    if target in ("ceiling", "bound"):
        expect, marker = 200, "-"  # the ceiling answers 200 to every POST, X-Forwarded-For or not; no body check
    spies = []
    if opts.profile:
        # py-spy samples each worker while it holds the GIL (its CPU, not its waits), for most of the run.
        folder = Path(opts.profile)
        folder.mkdir(parents=True, exist_ok=True)
        for pid in server.worker_pids():
            out = folder / f"{target}-{scenario}-{pid}.raw"
            spies.append(subprocess.Popen(
                ["py-spy", "record", "-p", str(pid), "-d", str(max(1, opts.duration - 1)), "-r", "250", "--gil",
                 "--nonblocking", "-f", "raw", "-o", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    cpu_before, machine_before, node_before = server.cpu_seconds(), machine_busy_seconds(), node_cpu_seconds()
    raw = wrk(server.url, api_key, mode, expect, marker, arg,
              duration=opts.duration, connections=opts.connections, threads=opts.threads, spread=Spread.of(opts))
    cpu_after, machine_after, node_after = server.cpu_seconds(), machine_busy_seconds(), node_cpu_seconds()
    cpu, cpu_sys = cpu_after[0] - cpu_before[0], cpu_after[1] - cpu_before[1]
    per_request = 1000 / raw["requests"] if raw["requests"] else 0.0
    for spy in spies:
        spy.wait(timeout=30)
    seconds = raw["duration_us"] / 1e6
    return Run(
        target=target, scenario=scenario, requests=raw["requests"], seconds=round(seconds, 2),
        rps=raw["requests"] / seconds if seconds else 0.0,
        p50_ms=raw["p50_us"] / 1000, p90_ms=raw["p90_us"] / 1000, p99_ms=raw["p99_us"] / 1000,
        max_ms=raw["max_us"] / 1000, unexpected=raw["unexpected"],
        exhausted=raw["exhausted"] if target == "service" else 0,
        socket_errors=raw["socket_errors"], first_bad=raw["first_bad"],
        cpu_ms=cpu * per_request, cpu_sys_ms=cpu_sys * per_request,
        machine_ms=(machine_after - machine_before) * per_request, node_ms=(node_after - node_before) * per_request,
    )


class Runs:
    """Two-digit run numbers for generate-new runs, so no two runs make the same key."""

    def __init__(self):
        self.next = 10

    def take(self) -> str:
        if self.next > 99:
            raise SystemExit("bench: out of run numbers for new keys")
        self.next += 1
        return f"{self.next - 1:02d}"


def codes_by_run(stdout_path: Path, spread: Spread) -> dict[str, dict[str, str]]:
    """{run: {key: code}} from the console channel's lines (the last code printed for a key wins)."""
    found: dict[str, dict[str, str]] = {}
    with open(stdout_path, errors="replace") as handle:
        for line in handle:
            m = CONSOLE_LINE.search(line)
            if m:
                key, code = m.groups()
                found.setdefault(spread.run_of(key), {})[key] = code
    return found


def write_pool(path: Path, pairs: list[tuple[str, str]]) -> str:
    path.write_text("".join(f"{k} {c}\n" for k, c in pairs))
    return str(path)


# -- report ------------------------------------------------------------------------------------------------------------
def machine() -> dict:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for name in ("flask", "werkzeug", "gunicorn", "cryptography", "marshmallow", "phonenumbers"):
        try:
            from importlib.metadata import version

            versions[name] = version(name)
        except Exception:
            versions[name] = "?"
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split("[")[0].strip()
    return {
        "cpu": cpu, "cpus": os.cpu_count(), "kernel": platform.release(),
        "python": platform.python_version(), "wrk": wrk_version, **versions,
    }


def traffic(opts) -> str:
    """What every report's head says of the services' traffic: the spread of clients and ranges, and each --set."""
    return Spread.of(opts).describe() + (f", {' '.join(opts.set)}" if opts.set else "")


def table(results: list[Result], opts, store: str) -> str:
    head = (
        f"store={store}, channel=console, workers={opts.workers}, connections={opts.connections}, "
        f"wrk threads={opts.threads}, {opts.duration} s per run"
        + (f", median of {opts.rounds} rounds" if opts.rounds > 1 else "")
        + f", {traffic(opts)}\n\n"
        "| scenario | service req/s | p50 ms | p99 ms | CPU ms/req | ceiling req/s | p50 ms | p99 ms | CPU ms/req "
        "| ratio | goal |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n"
    )
    rows = []
    for r in results:
        s, c = r.service, r.ceiling
        goal = "met" if r.goal_met else "missed (" + ", ".join(
            ([f"ratio < {GOAL_RATIO}"] if r.ratio < GOAL_RATIO else [])
            + ([f"p99 >= {GOAL_P99_MS:.0f} ms"] if s.p99_ms >= GOAL_P99_MS else [])) + ")"
        flag = "" if s.valid and c.valid else " INVALID"
        rows.append(
            f"| {r.label}{flag} | {s.rps:.0f} | {s.p50_ms:.1f} | {s.p99_ms:.1f} | {s.cpu_ms:.2f} | {c.rps:.0f} | "
            f"{c.p50_ms:.1f} | {c.p99_ms:.1f} | {c.cpu_ms:.2f} | {r.ratio:.2f} | {goal} |"
        )
    return head + "\n".join(rows) + "\n"


# The driver-only run of what each scenario asks of Cassandra (bench_cassandra.SHAPES), beside the LWT ceiling.
SCENARIO_SHAPES = {"new": "new", "resend": "resend", "wrong": "verify", "right": "verify"}


def cassandra_ceiling(env: dict, opts, shape: str = "lwt"):
    """The driver-only LWT ceiling of the cluster the service uses (scripts/bench_cassandra.py), or with `shape` the
    scenario's own statements sent by the driver alone."""
    sys.path.insert(0, str(SCRIPTS))
    import bench_cassandra

    from otp_service.config import CassandraSettings, EnvReader

    settings = CassandraSettings.from_env(EnvReader(env))
    node_before = node_cpu_seconds()  # includes the warm-up: a little high, never low
    run = bench_cassandra.measure(settings, settings.keyspace, in_flight=opts.connections, duration=opts.duration,
                                  warmup=opts.warmup, shape=shape)
    if run.errors or run.not_applied:
        raise SystemExit(f"bench: the Cassandra ceiling run failed: {run}")
    run.node_ms = (node_cpu_seconds() - node_before) * 1000 / run.requests if run.requests else 0.0
    return run


def cassandra_table(scenarios: list[str], lwt_rounds: dict[str, list], opts) -> str:
    """Each scenario's service rate beside the driver-only LWT ceiling measured just before it (median round)."""
    first = lwt_rounds[scenarios[0]][0][1]
    head = (
        f"against the Cassandra ceiling: Apache Cassandra {first.release_version}, the cassandra-driver alone, one "
        f"lightweight transaction per request, {first.in_flight} in flight, measured just before each service run"
        + (f"; median of {opts.rounds} rounds" if opts.rounds > 1 else "")
        + f"; service traffic: {traffic(opts)}\n\n"
        "| scenario | service req/s | p50 ms | p99 ms | node CPU ms/req | Cassandra LWT/s | p50 ms | p99 ms | "
        "node CPU ms/LWT | ratio | goal |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n"
    )
    rows, every, own_rows = [], [], []
    for scenario in scenarios:
        trios = sorted(lwt_rounds[scenario], key=lambda trio: trio[0].rps / trio[1].rps if trio[1].rps else 0.0)
        s, c, own = trios[(len(trios) - 1) // 2]
        ratio = s.rps / c.rps if c.rps else 0.0
        goal = "met" if ratio >= GOAL_CASSANDRA_RATIO else f"missed (ratio < {GOAL_CASSANDRA_RATIO})"
        rows.append(f"| {SCENARIOS[scenario][0]} | {s.rps:.0f} | {s.p50_ms:.1f} | {s.p99_ms:.1f} | {s.node_ms:.2f} | "
                    f"{c.rps:.0f} | {c.p50_ms:.1f} | {c.p99_ms:.1f} | {c.node_ms:.2f} | {ratio:.2f} | {goal} |")
        f = own.flask
        own_rows.append(f"| {SCENARIOS[scenario][0]} | {own.shape} | {own.rps:.0f} | {own.p50_ms:.1f} | "
                        f"{own.p99_ms:.1f} | {own.node_ms:.2f} | {s.rps / own.rps if own.rps else 0.0:.2f} | "
                        + (f"{f.rps:.0f} | {f.p99_ms:.1f} | {f.cpu_ms:.2f} | {f.node_ms:.2f} | "
                           f"{f.rps / c.rps if c.rps else 0.0:.2f} | {s.rps / f.rps if f.rps else 0.0:.2f} |"
                           if f is not None else "| | | | | |"))
        if len(trios) > 1:
            ratios = ", ".join(f"{a.rps / b.rps:.2f}" for a, b, _ in lwt_rounds[scenario] if b.rps)
            every.append(f"{SCENARIOS[scenario][0]}: ratio to the Cassandra ceiling in each round {ratios}")
    own_head = (
        "\neach scenario's own statements (bench_cassandra.py --shape), sent by the driver alone with as many in "
        "flight, measured in the same round: what separates the service from them is the service's own work\n\n"
        "(and the same statements sent by the bare Flask ceiling app under the same gunicorn, ceiling_app.py "
        "--cassandra: the most a Flask service asking them could do on this machine)\n\n"
        "| scenario | shape | driver alone req/s | p50 ms | p99 ms | node CPU ms/req | service / driver alone | "
        "Flask + statements req/s | p99 ms | its CPU ms/req | node CPU ms/req | its ratio to the LWT ceiling | "
        "service / it |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    return (head + "\n".join(rows) + "\n" + ("\n" + "\n".join(every) + "\n" if every else "")
            + own_head + "\n".join(own_rows) + "\n")


# -- provider-latency mode ---------------------------------------------------------------------------------------------
PROVIDER_GOAL_RATIO = 0.9  # 256 connections: N ms provider's req/s over the 0 ms provider's
PROVIDER_GOAL_P99_MS = 450.0  # 32 connections: p99 with the N ms provider
TWILIO_GOAL_RATIO = 0.6  # the 0 ms provider's req/s over the console channel's
ACCOUNT_SID = "AC" + "0123456789abcdef" * 2


class StandIn:
    """scripts/twilio_standin.py in its own process group."""

    def __init__(self, delay_ms: float, folder: Path):
        self.delay_ms = delay_ms
        self.out_path = folder / f"standin-{delay_ms:g}ms.out"
        with open(self.out_path, "wb") as out:
            self.proc = subprocess.Popen([sys.executable, str(SCRIPTS / "twilio_standin.py"), "--delay-ms",
                                          str(delay_ms)], stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            found = re.search(r"listening on 127\.0\.0\.1:(\d+)", self.out_path.read_text())
            if found:
                self.port = int(found.group(1))
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise SystemExit(f"bench: the Twilio stand-in did not start; see {self.out_path}")

    def stop(self) -> str:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        found = re.search(r"served (\d+) most-waiting (\d+)", self.out_path.read_text())
        return f"served {found.group(1)}, most held at once {found.group(2)}" if found else "no summary"


@dataclass
class ProviderRun:
    target: str  # console | provider-0ms | provider-Nms
    connections: int
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    socket_errors: int
    timeouts: int
    non_2xx: int
    cpu_ms: float
    first_bad: str = ""


# What both modes set so that the service runs the path production runs: the abuse limits count (their store round
# trip is part of what is measured) but never refuse, on counters spread as production's are (--clients, --ranges:
# Spread); the development inbox (a SQLite write per message) is no part of production.
PRODUCTION_PATH = dict(
    OTP_IP_SEND_LIMIT="100000000",
    OTP_IP_VERIFY_LIMIT="100000000",
    OTP_PREFIX_SEND_LIMIT="100000000",
    OTP_DEV_PAGES="false",
)


def service_env(prefix: str, opts, parser, **extra: str) -> tuple[Path, str, bool, dict]:
    """(a new working folder, the API key, whether Cassandra is the store, the services' environment): this
    process's environment without its OTP_ variables (but the cluster's), the production path, the spread's trusted
    proxy, `extra`, then every --set."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    api_key = secrets.token_urlsafe(24)
    cassandra = bool(os.environ.get("OTP_CASSANDRA_CONTACT_POINTS", "").strip())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTP_", "PROMETHEUS_MULTIPROC_DIR"))
           or k.startswith("OTP_CASSANDRA_")}
    env.update(PYTHONUNBUFFERED="1", OTP_ENV="development", OTP_API_KEYS=hashlib.sha256(api_key.encode()).hexdigest(),
               OTP_EMAIL_CHANNEL="console", **PRODUCTION_PATH, **Spread.of(opts).env(), **extra)
    for assignment in opts.set:
        name, sep, value = assignment.partition("=")
        if not sep or not name:
            parser.error(f"--set wants NAME=VALUE, got {assignment!r}")
        env[name] = value
    return folder, api_key, cassandra, env


def provider_main(opts, parser) -> int:
    """Provider-latency mode (see the module docstring)."""
    if shutil.which("wrk") is None:
        raise SystemExit("bench: wrk is not installed (apt-get install -y wrk)")
    try:
        counts = [int(c) for c in opts.provider_connections.split(",") if c.strip()]
    except ValueError:
        parser.error("--provider-connections wants numbers, e.g. 32,256")
    if not counts or min(counts) < opts.threads or opts.provider_latency < 0:
        parser.error("--provider-connections must each be at least --threads; --provider-latency at least 0")
    folder, api_key, cassandra, base = service_env("otp-bench-provider-", opts, parser,
                                                   NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
    store = "cassandra" if cassandra else "sqlite"
    if cassandra:
        from otp_service.adapters.crypto import new_key

        base.update(OTP_STORE="cassandra", OTP_ENCRYPTION_KEYS=new_key())
        migrate = subprocess.run([sys.executable, "-m", "otp_service.entrypoints.cli", "migrate"], env=base, cwd=ROOT,
                                 capture_output=True, text=True)
        if migrate.returncode != 0:
            raise SystemExit(f"bench: otp-service migrate failed:\n{migrate.stdout}{migrate.stderr}")
    slow_name = f"provider-{opts.provider_latency:g}ms"
    targets = ["console", "provider-0ms", slow_name]
    standins: list[StandIn] = []
    servers: dict[str, Server] = {}
    summaries: dict[str, str] = {}
    load_before = os.getloadavg()
    info = machine()
    runs: list[ProviderRun] = []
    try:
        fast, slow = StandIn(0, folder), StandIn(opts.provider_latency, folder)
        standins += [fast, slow]
        for target, standin in (("console", None), ("provider-0ms", fast), (slow_name, slow)):
            env = dict(base, OTP_SQLITE_PATH=str(folder / f"{target}.db"))
            if standin is None:
                env["OTP_SMS_CHANNEL"] = "console"
            else:
                env.update(OTP_SMS_CHANNEL="twilio", OTP_TWILIO_ACCOUNT_SID=ACCOUNT_SID,
                           OTP_TWILIO_AUTH_TOKEN="bench-auth-token", OTP_TWILIO_FROM_NUMBER="+14155550100",
                           OTP_TWILIO_BASE_URL=f"http://127.0.0.1:{standin.port}")
            argv = [sys.executable, "-m", "otp_service.entrypoints.cli", "serve", "--bind",
                    f"127.0.0.1:{(port := free_port())}"]
            if opts.workers is not None:
                argv += ["--workers", str(opts.workers)]
            servers[target] = Server(target, argv, env, folder, port)
        for server in servers.values():
            server.wait_ready()
        say = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
        say(f"bench: provider-latency mode, {store} store, working folder {folder}, "
            f"load average {load_before[0]:.2f}")
        numbers = Runs()
        if opts.warmup:
            for server in servers.values():
                wrk(server.url, api_key, "new", 0, "-", numbers.take(), duration=max(1, opts.warmup),
                    connections=max(counts), threads=opts.threads, spread=Spread.of(opts))
        every: dict[tuple[int, str], list[ProviderRun]] = {}
        for _round, connections, target in [(n, c, t) for n in range(opts.rounds) for c in counts for t in targets]:
            time.sleep(opts.pause)
            server = servers[target]
            cpu_before = server.cpu_seconds()[0]
            raw = wrk(server.url, api_key, "new", 200, "-", numbers.take(), duration=opts.duration,
                      connections=connections, threads=opts.threads, spread=Spread.of(opts))
            cpu = server.cpu_seconds()[0] - cpu_before
            seconds = raw["duration_us"] / 1e6
            run = ProviderRun(
                target=target, connections=connections, requests=raw["requests"],
                rps=raw["requests"] / seconds if seconds else 0.0, p50_ms=raw["p50_us"] / 1000,
                p99_ms=raw["p99_us"] / 1000, socket_errors=raw["socket_errors"],
                timeouts=raw.get("timeouts", 0), non_2xx=raw["unexpected"],
                cpu_ms=1000 * cpu / raw["requests"] if raw["requests"] else 0.0, first_bad=raw["first_bad"],
            )
            every.setdefault((connections, target), []).append(run)
            say(f"bench: {connections} connections, {target}: {run.rps:.0f} req/s, p50 {run.p50_ms:.1f} ms, "
                f"p99 {run.p99_ms:.1f} ms, socket errors {run.socket_errors}, timeouts {run.timeouts}, "
                f"non-2xx {run.non_2xx}")
        # Each row is the run with the median req/s of its rounds (the lower middle one for an even count).
        runs = [sorted(every[(c, t)], key=lambda r: r.rps)[(opts.rounds - 1) // 2] for c in counts for t in targets]
        load_after = os.getloadavg()
    finally:
        for server in servers.values():
            server.stop()
        for standin in standins:
            summaries[f"stand-in {standin.delay_ms:g} ms"] = standin.stop()

    workers = opts.workers if opts.workers is not None else "default"
    print(f"provider-latency mode: store={store}, workers={workers}, new key per request, wrk threads={opts.threads}, "
          f"{opts.duration} s per run" + (f", median of {opts.rounds} interleaved rounds" if opts.rounds > 1 else "")
          + f", {traffic(opts)}\n")
    print("| connections | target | req/s | p50 ms | p99 ms | CPU ms/req | socket errors | timeouts | non-2xx |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for run in runs:
        print(f"| {run.connections} | {run.target} | {run.rps:.0f} | {run.p50_ms:.1f} | {run.p99_ms:.1f} | "
              f"{run.cpu_ms:.2f} | {run.socket_errors} | {run.timeouts} | {run.non_2xx} |")
    print()
    print(f"| connections | {opts.provider_latency:g} ms / 0 ms req/s | 0 ms / console req/s | "
          f"p99 at {opts.provider_latency:g} ms |")
    print("|---:|---:|---:|---:|")
    by = {(r.connections, r.target): r for r in runs}
    verdicts: list[str] = []
    for connections in counts:
        console, fast_run, slow_run = (by[(connections, t)] for t in targets)
        slow_ratio = slow_run.rps / fast_run.rps if fast_run.rps else 0.0
        twilio_ratio = fast_run.rps / console.rps if console.rps else 0.0
        print(f"| {connections} | {slow_ratio:.2f} | {twilio_ratio:.2f} | {slow_run.p99_ms:.0f} ms |")
        clean = all(r.socket_errors == r.timeouts == r.non_2xx == 0 for r in (console, fast_run, slow_run))
        if connections >= 256:
            verdicts.append(f"{connections} connections: {opts.provider_latency:g} ms / 0 ms = {slow_ratio:.2f} "
                            f"(goal >= {PROVIDER_GOAL_RATIO}) and no errors: "
                            + ("met" if slow_ratio >= PROVIDER_GOAL_RATIO and clean else "MISSED"))
        if connections <= 32:
            verdicts.append(f"{connections} connections: p99 at {opts.provider_latency:g} ms = "
                            f"{slow_run.p99_ms:.0f} ms (goal <= {PROVIDER_GOAL_P99_MS:.0f} ms): "
                            + ("met" if slow_run.p99_ms <= PROVIDER_GOAL_P99_MS else "MISSED"))
        verdicts.append(f"{connections} connections: 0 ms / console = {twilio_ratio:.2f} (goal >= "
                        f"{TWILIO_GOAL_RATIO}): " + ("met" if twilio_ratio >= TWILIO_GOAL_RATIO else "MISSED"))
    print()
    for verdict in verdicts:
        print("goal: " + verdict)
    for name, summary in summaries.items():
        print(f"{name}: {summary}")
    print(f"machine: {info['cpu']}, {info['cpus']} CPUs, Linux {info['kernel']}, Python {info['python']}, "
          f"gunicorn {info['gunicorn']}, {info['wrk']}")
    print(f"load average (1 min) before {load_before[0]:.2f}, after {load_after[0]:.2f}")
    bad = [r for group in every.values() for r in group if r.requests == 0 or r.socket_errors or r.timeouts
           or r.non_2xx]
    for run in bad:
        print(f"errors in the {run.target} run at {run.connections} connections: socket errors {run.socket_errors}, "
              f"timeouts {run.timeouts}, non-2xx {run.non_2xx}; first unexpected answer: {run.first_bad[:200]}")
    for target, server in servers.items():  # what the servers said was wrong, whichever run it was in
        warnings: dict[str, int] = {}
        try:
            for line in server.stderr_path.read_text(errors="replace").splitlines():
                if '"level":"warning"' in line or '"level":"error"' in line:
                    message = json.loads(line).get("message", "") if line.startswith("{") else line
                    if not message.startswith("development:"):
                        warnings[message[:120]] = warnings.get(message[:120], 0) + 1
        except (OSError, ValueError):
            pass
        for message, count in sorted(warnings.items(), key=lambda item: -item[1])[:3]:
            print(f"{target} logged {count} x: {message}")
    if opts.json:
        Path(opts.json).write_text(json.dumps({
            "mode": "provider-latency", "store": store, "options": vars(opts), "machine": info,
            "load_before": load_before, "load_after": load_after, "standins": summaries,
            "runs": [asdict(r) for r in runs], "goals": verdicts,
            "rounds": [asdict(r) for group in every.values() for r in group],
        }, indent=2))
    if opts.keep:
        print(f"working folder kept: {folder}")
    else:
        shutil.rmtree(folder, ignore_errors=True)
    return 1 if any(r.requests == 0 for group in every.values() for r in group) else 0


# -- main --------------------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds of load per run (default 10)")
    parser.add_argument("--connections", type=int, default=16, help="concurrent connections (default 16)")
    parser.add_argument("--workers", type=int, default=None,
                        help="gunicorn workers of every server (default 2; with --provider-latency, the service's "
                             "default: 2 x CPUs + 1, at most 8)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2, at most 9)")
    parser.add_argument("--scenarios", default="new,resend,wrong,right",
                        help=f"comma-separated, from {','.join(SCENARIOS)} (default all)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="measure every scenario this many times, interleaved, and show the median round "
                             "(use 3 or more on a shared machine)")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of unmeasured load on each server first")
    parser.add_argument("--pause", type=float, default=1.0, help="seconds of rest between runs")
    parser.add_argument("--pool-size", type=int, default=POOL_SIZE,
                        help=f"prepared keys each for resend and wrong (default {POOL_SIZE}); "
                             "at most 99 wrong codes and 999 resends a key, so keep it above rate x duration / 90")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="an extra environment variable for both servers (repeatable), e.g. OTP_LOG_LEVEL=warning")
    parser.add_argument("--profile", default=None, metavar="DIR",
                        help="record each worker with py-spy (--gil) during every run, raw files into DIR "
                             "(summarise with scripts/profile_report.py); costs some throughput")
    parser.add_argument("--keep", action="store_true", help="keep the working folder (logs, console output, db)")
    parser.add_argument("--provider-latency", type=float, default=None, metavar="MS",
                        help="provider-latency mode: the Twilio channel against a stand-in answering after MS ms, "
                             "beside the stand-in at 0 ms and the console channel")
    parser.add_argument("--provider-connections", default="32,256",
                        help="provider-latency mode: comma-separated connection counts (default 32,256)")
    parser.add_argument("--clients", type=int, default=DEFAULT_CLIENTS, metavar="N",
                        help=f"client addresses the requests come from (default {DEFAULT_CLIENTS}): with N > 1 both "
                             "servers get OTP_TRUSTED_PROXIES=127.0.0.1 (the bench stands for the gateway) and each "
                             "request an X-Forwarded-For address of N in 10.0.0.0/8, the next one each request, so "
                             "the per-address counters are many; 1: every request from 127.0.0.1, one counter")
    parser.add_argument("--ranges", type=int, default=DEFAULT_RANGES, choices=RANGE_CHOICES, metavar="N",
                        help=f"number ranges ({', '.join(map(str, RANGE_CHOICES))}; default {DEFAULT_RANGES}): "
                             "each wrk thread's consecutive new keys (and so the prepared keys) are in N different "
                             "7-digit E.164 ranges +91 9xxxx, the per-range counter's subject at the default "
                             "OTP_PREFIX_DIGITS=7; 1: one range per thread for 100 000 keys. No scenario uses "
                             "email keys, so no per-domain counter is taken")
    opts = parser.parse_args(argv)
    if not 1 <= opts.clients <= MAX_CLIENTS:
        parser.error(f"--clients must be 1..{MAX_CLIENTS} (10.0.0.1 .. 10.255.255.254)")
    if opts.provider_latency is not None:
        return provider_main(opts, parser)
    if opts.workers is None:
        opts.workers = 2
    scenarios = [s.strip() for s in opts.scenarios.split(",") if s.strip()]
    unknown = [s for s in scenarios if s not in SCENARIOS]
    if unknown or not scenarios:
        parser.error(f"unknown scenario(s) {unknown}; choose from {', '.join(SCENARIOS)}")
    if opts.rounds < 1 or opts.duration < 1:
        parser.error("--rounds and --duration must be at least 1")
    if not 1 <= opts.threads <= 9 or opts.threads > opts.connections:
        parser.error("--threads must be 1..9 and at most --connections")
    if shutil.which("wrk") is None:
        raise SystemExit("bench: wrk is not installed (apt-get install -y wrk)")

    folder, api_key, cassandra, env = service_env(
        "otp-bench-", opts, parser,
        OTP_SMS_CHANNEL="console",
        OTP_RESEND_COOLDOWN_SECONDS="0",  # resend and verify runs repeat keys at once
        OTP_MAX_SENDS="1000",
        OTP_MAX_VERIFY_ATTEMPTS="100",
        OTP_TTL_SECONDS="3600",  # prepared codes outlive the whole run
    )
    env.setdefault("OTP_SQLITE_PATH", str(folder / "otp.db"))  # unless --set named one
    store = "cassandra" if cassandra else "sqlite"
    if cassandra:
        env["OTP_STORE"] = "cassandra"
        from otp_service.adapters.crypto import new_key

        env["OTP_ENCRYPTION_KEYS"] = new_key()
        migrate = subprocess.run([sys.executable, "-m", "otp_service.entrypoints.cli", "migrate"], env=env, cwd=ROOT,
                                 capture_output=True, text=True)
        if migrate.returncode != 0:
            raise SystemExit(f"bench: otp-service migrate failed:\n{migrate.stdout}{migrate.stderr}")

    load_before = os.getloadavg()
    info = machine()
    servers: list[Server] = []
    try:
        ceiling = Server("ceiling", [sys.executable, str(SCRIPTS / "ceiling_app.py"), "--bind",
                                    f"127.0.0.1:{(cp := free_port())}", "--workers", str(opts.workers)],
                                   env, folder, cp)
        servers.append(ceiling)
        service = Server("service", [sys.executable, "-m", "otp_service.entrypoints.cli", "serve", "--bind",
                                     f"127.0.0.1:{(sp := free_port())}", "--workers", str(opts.workers)],
                         env, folder, sp)
        servers.append(service)
        bound = None
        if cassandra:  # the Flask ceiling app that also sends each route's statements (ceiling_app.py --cassandra)
            bound = Server("bound", [sys.executable, str(SCRIPTS / "ceiling_app.py"), "--cassandra", "--bind",
                                     f"127.0.0.1:{(bp := free_port())}", "--workers", str(opts.workers)],
                           env, folder, bp)
            servers.append(bound)
            bound.wait_ready()
        ceiling.wait_ready()
        service.wait_ready()
        say = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
        say(f"bench: {store} store, working folder {folder}, load average {load_before[0]:.2f}")
        runs = Runs()
        if opts.warmup:
            for server in (ceiling, service):
                wrk(server.url, api_key, "new", 0, "-", runs.take(), duration=max(1, opts.warmup),
                    connections=opts.connections, threads=opts.threads, spread=Spread.of(opts))

        fresh_runs: list[str] = []  # runs of new keys on the service whose codes are still unused
        used: set[str] = set()

        def prepared(count: int) -> list[tuple[str, str]]:
            """`count` keys with a live, untouched code, generating more (unmeasured) if need be."""
            for _ in range(6):
                codes = codes_by_run(service.stdout_path, Spread.of(opts))
                pairs = [(k, c) for run in fresh_runs for k, c in codes.get(run, {}).items() if k not in used]
                if len(pairs) >= count:
                    chosen = pairs[:count]
                    used.update(k for k, _ in chosen)
                    return chosen
                rate = max(service_rps.get("new", 300.0), 100.0)
                seconds = max(1, math.ceil((count - len(pairs)) * 1.2 / rate))
                run = runs.take()
                wrk(service.url, api_key, "new", 200, "-", run, duration=seconds,
                    connections=opts.connections, threads=opts.threads, spread=Spread.of(opts))
                fresh_runs.append(run)
                time.sleep(0.5)  # the last console lines are flushed
            raise SystemExit(f"bench: could not prepare {count} keys (see {service.stdout_path})")

        service_rps: dict[str, float] = {}
        rounds: dict[str, list[Result]] = {scenario: [] for scenario in scenarios}
        # With Cassandra: per scenario and round, (service run, the driver-only ceiling measured just before it).
        lwt_rounds: dict[str, list] = {scenario: [] for scenario in scenarios}
        for round_, scenario in [(n, s) for n in range(opts.rounds) for s in scenarios]:
            label = SCENARIOS[scenario][0]
            if scenario == "new":
                arg_c, arg_s = runs.take(), runs.take()
            else:
                if scenario == "right":
                    # Each key verifies once: enough keys for half again the fastest rate seen so far.
                    fastest = max(list(service_rps.values()) + [service_rps.get("new", 0) * 1.5, 200.0])
                    count = math.ceil(fastest * 1.5 * opts.duration) + 100
                else:
                    count = opts.pool_size
                pool = write_pool(folder / f"pool-{scenario}-{round_}.txt", prepared(count))
                arg_c = arg_s = pool
            time.sleep(opts.pause)
            c = measure("ceiling", scenario, ceiling, api_key, arg_c, opts)
            if cassandra:  # next to the service's run, so that both see the machine in the same mood
                time.sleep(opts.pause)
                lwt = cassandra_ceiling(env, opts)
                say(f"bench: cassandra ceiling: {lwt.rps:.0f} LWT/s p99 {lwt.p99_ms:.1f} ms")
                time.sleep(opts.pause)
                own = cassandra_ceiling(env, opts, SCENARIO_SHAPES[scenario])
                say(f"bench: its statements by the driver alone: {own.rps:.0f} req/s p99 {own.p99_ms:.1f} ms")
                assert bound is not None
                time.sleep(opts.pause)
                flask_bound = measure("bound", scenario, bound, api_key, arg_c, opts)
                say(f"bench: Flask and its statements alone: {flask_bound.rps:.0f} req/s p99 "
                    f"{flask_bound.p99_ms:.1f} ms")
                own.flask = flask_bound
            time.sleep(opts.pause)
            s = measure("service", scenario, service, api_key, arg_s, opts)
            if scenario == "right" and s.exhausted:
                # The service outran the prepared keys: once more, with enough for the rate it reached.
                count = math.ceil(s.rps * 1.5 * opts.duration) + 100
                arg_s = write_pool(folder / f"pool-right-{round_}-again.txt", prepared(count))
                time.sleep(opts.pause)
                s = measure("service", scenario, service, api_key, arg_s, opts)
            if scenario == "new":
                fresh_runs.append(arg_s)
                time.sleep(0.3)
            service_rps[scenario] = s.rps
            if cassandra:
                lwt_rounds[scenario].append((s, lwt, own))
            rounds[scenario].append(Result(scenario, label, s, c))
            say(f"bench: {label}: service {s.rps:.0f} req/s p99 {s.p99_ms:.1f} ms, ceiling {c.rps:.0f} req/s")
        rss = service.worker_rss_kib()
        load_after = os.getloadavg()
        # Each scenario's row is its round with the median ratio (the lower middle one for an even count).
        results = [sorted(rounds[scenario], key=lambda r: r.ratio)[(opts.rounds - 1) // 2] for scenario in scenarios]
    finally:
        for server in servers:
            server.stop()

    print(table(results, opts, store))
    if cassandra:
        print(cassandra_table(scenarios, lwt_rounds, opts))
    # Where the CPU went: the server's split into user and kernel time, and the whole machine's busy time (which
    # also counts wrk and any kernel work done outside the server's processes).
    for r in results:
        print(f"{r.label}: CPU ms/req user + system: service {r.service.cpu_ms - r.service.cpu_sys_ms:.2f} + "
              f"{r.service.cpu_sys_ms:.2f}, ceiling {r.ceiling.cpu_ms - r.ceiling.cpu_sys_ms:.2f} + "
              f"{r.ceiling.cpu_sys_ms:.2f}; machine busy ms/req: service run {r.service.machine_ms:.2f}, "
              f"ceiling run {r.ceiling.machine_ms:.2f}")
    if opts.rounds > 1:
        for scenario in scenarios:
            every = ", ".join(f"{r.ratio:.2f}" for r in rounds[scenario])
            print(f"{SCENARIOS[scenario][0]}: ratio in each round {every} (the row shows the median round)")
    print(f"machine: {info['cpu']}, {info['cpus']} CPUs, Linux {info['kernel']}, Python {info['python']}, "
          f"Flask {info['flask']}, Werkzeug {info['werkzeug']}, gunicorn {info['gunicorn']}, {info['wrk']}")
    print(f"load average (1 min) before {load_before[0]:.2f}, after {load_after[0]:.2f}; "
          f"service worker RSS after the run: {', '.join(f'{k / 1024:.0f} MiB' for k in rss)}")
    invalid = [(r.label, run) for scenario in scenarios for r in rounds[scenario] for run in (r.service, r.ceiling)
               if not run.valid]
    for label, run in invalid:
        print(f"INVALID {run.target} run of {label}: unexpected={run.unexpected} exhausted={run.exhausted} "
              f"socket_errors={run.socket_errors} first unexpected answer: {run.first_bad[:200]}")
    missed = [r.label for r in results if not r.goal_met]
    print("goals (ratio >= 0.5, p99 < 25 ms): " + ("all met" if not missed else "missed by " + ", ".join(missed)))
    if opts.json:
        Path(opts.json).write_text(json.dumps({
            "store": store, "options": vars(opts), "machine": info,
            "load_before": load_before, "load_after": load_after, "service_worker_rss_kib": rss,
            "results": [{**asdict(r), "goal_met": r.goal_met} for r in results],
            "cassandra_ceiling": {scenario: [{"service": asdict(s), "ceiling": asdict(c),
                                              "driver_alone": {**asdict(own), "flask": asdict(own.flask)
                                                               if own.flask is not None else None},
                                              "ratio": s.rps / c.rps if c.rps else 0.0}
                                             for s, c, own in lwt_rounds[scenario]] for scenario in scenarios},
            "rounds": {scenario: [{**asdict(r), "goal_met": r.goal_met} for r in rounds[scenario]]
                       for scenario in scenarios},
        }, indent=2))
    if opts.keep:
        print(f"working folder kept: {folder}")
    else:
        shutil.rmtree(folder, ignore_errors=True)
    return 1 if invalid else 0


if __name__ == "__main__":
    sys.exit(main())
