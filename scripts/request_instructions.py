"""Instructions one request costs, in process, counted by valgrind's callgrind: nearly the same on every run.

    python3 scripts/request_instructions.py [--scenarios ceiling,new,resend,wrong,right] [--requests 200] [--cold]

Timings on a shared two-core machine swing by a tenth from one run to the next (see docs/BENCHMARKS.md); an
instruction count moves by a few percent at most (hash seeds and temporary names differ between runs), so a change
of several percent in the app's own work shows. For each scenario the app (or the ceiling app) is called as WSGI, as
in scripts/request_cost.py, once with 100 requests and once with 100 + `--requests`, each under callgrind; the
difference divided by `--requests` is the cost of one request, start-up excluded. Instructions are user-space only:
the time SQLite, the log and the console spend in system calls is not in them (request_cost.py and bench.py see it).
About a minute per scenario. Needs valgrind (apt-get install valgrind).

`--cold` also simulates the caches (32 KiB L1s, a 1 MiB last level) and writes over 2 MiB before each request, so
that every request starts with cold caches, as a worker's does under load (docs/BENCHMARKS.md). It prints the
instructions, the L1 and last-level misses of one request (the eviction's own, counted separately, taken off) and
an estimate of its cycles, instructions + 10 x L1 misses + 100 x last-level misses (the estimate cachegrind's
manual gives), with each scenario's ratio to the ceiling (measured with --cold whether named or not). Under load,
that ratio is what the bench sees; the instructions alone are not. About four minutes per scenario.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent
sys.path.insert(0, str(SCRIPTS.parent))
sys.path.insert(0, str(SCRIPTS))

SCENARIOS = ("ceiling", "new", "resend", "wrong", "right")
BASE = 100  # requests in the shorter run: what both runs share (imports, app start-up, warm-up) cancels out
_COLLECTED = re.compile(r"Collected\s*:\s*([\d ]+)")
# --cold: the simulated caches, and how much is written before each request to push their contents out.
_CACHES = ("--cache-sim=yes", "--I1=32768,8,64", "--D1=32768,8,64", "--LL=1048576,16,64")
EVICT_BYTES = 2 << 20
_EVICT_ONLY = "evict-only"  # a child that only evicts, as often as a scenario's child: its cost is taken off


def _child(scenario: str, count: int, pool: int, evict: int) -> None:
    """Make the app, warm it up, then make `count` requests of `scenario` (run under callgrind by main). For the
    right code, `pool` keys get a code first, the same number in both runs, so that only the verifies differ.
    With `evict` bytes, that many are written over before each request."""
    real_stderr = sys.stderr
    scratch, blank = bytearray(evict), bytes(evict)
    if scenario == _EVICT_ONLY:
        for _ in range(count + 30):
            scratch[:] = blank
        return
    try:
        _requests(scenario, count, pool, real_stderr, scratch, blank)
    except Exception:
        import traceback

        traceback.print_exc(file=real_stderr)
        raise SystemExit(1) from None


def _requests(scenario: str, count: int, pool: int, real_stderr, scratch: bytearray, blank: bytes) -> None:
    import request_cost as rc

    folder = tempfile.mkdtemp(prefix="otp-instr-")
    os.environ.update(
        OTP_ENV="development", OTP_API_KEYS=hashlib.sha256(rc.API_KEY.encode()).hexdigest(),
        OTP_SQLITE_PATH=f"{folder}/otp.db", OTP_SMS_CHANNEL="console", OTP_EMAIL_CHANNEL="console",
        OTP_RESEND_COOLDOWN_SECONDS="0", OTP_MAX_SENDS="1000", OTP_MAX_VERIFY_ATTEMPTS="100", OTP_TTL_SECONDS="3600",
        # the abuse limits count, and never refuse
        OTP_IP_SEND_LIMIT="100000000", OTP_IP_VERIFY_LIMIT="100000000", OTP_PREFIX_SEND_LIMIT="100000000",
        OTP_DEV_PAGES="false",  # the development inbox is no part of what production runs
        # A fixed key: every run does the same work (the key's value changes no instruction count that matters).
        OTP_ENCRYPTION_KEYS="b3RwLXNlcnZpY2UtaW5zdHJ1Y3Rpb24tY291bnQtayE=",
    )
    for name in [k for k in os.environ if k.startswith(("OTP_USER_SERVICE", "OTP_CASSANDRA", "PROMETHEUS"))]:
        del os.environ[name]
    console = open(f"{folder}/console.out", "w+")
    sys.stdout, sys.stderr = console, open(os.devnull, "w")
    from ceiling_app import create_ceiling_app

    from otp_service.entrypoints.app import create_app

    app = create_app().wsgi_app.__self__
    generate, verify = "/v1/otp/generate", "/v1/otp/verify"

    def codes_of(keys: list[str]) -> dict[str, str]:
        for key in keys:
            rc.call(app, generate, rc.generate_body(key), "k" + key)
        console.flush()
        console.seek(0)
        found = {m.group(1): m.group(2) for m in map(rc.CONSOLE_LINE.search, console) if m}
        return {key: found[key] for key in keys}

    if scenario == "ceiling":
        ceiling = create_ceiling_app()
        work = [(ceiling, generate, rc.generate_body("9876543210"), "k1")] * (count + 30)
    elif scenario == "new":
        work = [(app, generate, rc.generate_body(f"97{i:08d}"), "k1") for i in range(count + 30)]
    elif scenario == "resend":
        keys = list(codes_of([f"96{i:08d}" for i in range(50)]))
        work = [(app, generate, rc.generate_body(keys[i % 50]), "k1") for i in range(count + 30)]
    elif scenario == "wrong":
        codes = codes_of([f"95{i:08d}" for i in range(50)])
        wrong = {k: f"{(int(c) + 1) % 10 ** len(c):0{len(c)}d}" for k, c in codes.items()}
        keys = list(codes)
        work = [(app, verify, rc.verify_body(keys[i % 50], wrong[keys[i % 50]]), "k1") for i in range(count + 30)]
    else:
        codes = codes_of([f"94{i:08d}" for i in range(pool)])
        work = [(app, verify, rc.verify_body(k, c), "k1") for k, c in list(codes.items())[:count + 30]]
    for target, path, body, request_id in work:  # the first 30 warm up; the rest are counted
        if scratch:
            scratch[:] = blank  # out of the caches goes whatever the last request left there
        status = rc.call(target, path, body, request_id)
        if not status.startswith("200") and not (scenario == "wrong" and status.startswith("400")):
            print(f"unexpected answer {status} in scenario {scenario}", file=real_stderr)
            raise SystemExit(1)
    shutil.rmtree(folder, ignore_errors=True)


def _counts(scenario: str, count: int, pool: int, cold: bool) -> list[int]:
    """callgrind's totals for one child: [Ir], or with --cold [Ir, Dr, Dw, I1mr, D1mr, D1mw, ILmr, DLmr, DLmw]."""
    done = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *(_CACHES if cold else ()),
         sys.executable, __file__, "--child", scenario, str(count), str(pool), str(EVICT_BYTES if cold else 0)],
        capture_output=True, text=True,
    )
    found = _COLLECTED.search(done.stderr)
    if done.returncode != 0 or not found:
        raise SystemExit(f"callgrind run failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return [int(n) for n in found.group(1).split()]


def _per_request(scenario: str, requests: int, cold: bool) -> list[float]:
    pool = BASE + requests + 30
    longer, shorter = _counts(scenario, BASE + requests, pool, cold), _counts(scenario, BASE, pool, cold)
    return [(a - b) / requests for a, b in zip(longer, shorter, strict=True)]


def _cold_row(counts: list[float]) -> tuple[float, float, float, float]:
    """(instructions, L1 misses, last-level misses, estimated cycles) from callgrind's nine cache-sim totals."""
    ir, l1, ll = counts[0], sum(counts[3:6]), sum(counts[6:9])
    return ir, l1, ll, ir + 10 * l1 + 100 * ll


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--cold", action="store_true", help="simulate the caches, evicted before each request")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child[0], int(args.child[1]), int(args.child[2]), int(args.child[3]))
        return 0
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = [s for s in scenarios if s not in SCENARIOS]
    if unknown or not scenarios or args.requests < 1:
        parser.error(f"scenarios from {', '.join(SCENARIOS)}; --requests at least 1")
    if shutil.which("valgrind") is None:
        raise SystemExit("request_instructions: valgrind is not installed (apt-get install -y valgrind)")
    if not args.cold:
        print(f"instructions per request, in process, callgrind ({BASE + args.requests} - {BASE} requests):")
        for scenario in scenarios:
            print(f"  {scenario:10s} {_per_request(scenario, args.requests, False)[0] / 1e6:8.3f} M", flush=True)
        return 0
    print(f"one request with cold caches ({EVICT_BYTES >> 20} MiB written before each; L1 32 KiB, last level 1 MiB), "
          f"callgrind ({BASE + args.requests} - {BASE} requests), the eviction's own cost taken off:")
    print(f"  {'scenario':10s} {'instr':>9s} {'L1 miss':>9s} {'LL miss':>9s} {'est. cycles':>12s} {'ceiling/it':>11s}")
    evict = _per_request(_EVICT_ONLY, args.requests, True)
    ceiling = None
    for scenario in (["ceiling"] if "ceiling" not in scenarios else []) + scenarios:
        counts = _per_request(scenario, args.requests, True)
        ir, l1, ll, cycles = _cold_row([a - b for a, b in zip(counts, evict, strict=True)])
        ceiling = cycles if scenario == "ceiling" else ceiling
        print(f"  {scenario:10s} {ir / 1e6:8.3f}M {l1 / 1e3:8.1f}K {ll / 1e3:8.1f}K {cycles / 1e6:11.3f}M "
              f"{ceiling / cycles:11.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
