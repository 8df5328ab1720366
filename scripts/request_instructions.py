"""Instructions one request costs, in process, counted by valgrind's callgrind: the same number on every run.

    python3 scripts/request_instructions.py [--scenarios ceiling,new,resend,wrong,right] [--requests 200]

Timings on a shared two-core machine swing by a tenth from one run to the next (see docs/BENCHMARKS.md); an
instruction count does not, so a change of a few percent in the app's own work shows. For each scenario the app (or
the ceiling app) is called as WSGI, as in scripts/request_cost.py, once with 100 requests and once with 100 +
`--requests`, each under callgrind; the difference divided by `--requests` is the cost of one request, start-up
excluded. Instructions are user-space only: the time SQLite, the log and the console spend in system calls is not in
them (request_cost.py and bench.py see it). About a minute per scenario. Needs valgrind (apt-get install valgrind).
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
_COLLECTED = re.compile(r"Collected\s*:\s*(\d+)")


def _child(scenario: str, count: int, pool: int) -> None:
    """Make the app, warm it up, then make `count` requests of `scenario` (run under callgrind by main). For the
    right code, `pool` keys get a code first, the same number in both runs, so that only the verifies differ."""
    real_stderr = sys.stderr
    try:
        _requests(scenario, count, pool, real_stderr)
    except Exception:
        import traceback

        traceback.print_exc(file=real_stderr)
        raise SystemExit(1) from None


def _requests(scenario: str, count: int, pool: int, real_stderr) -> None:
    import request_cost as rc

    folder = tempfile.mkdtemp(prefix="otp-instr-")
    os.environ.update(
        OTP_ENV="development", OTP_API_KEYS=hashlib.sha256(rc.API_KEY.encode()).hexdigest(),
        OTP_SQLITE_PATH=f"{folder}/otp.db", OTP_SMS_CHANNEL="console", OTP_EMAIL_CHANNEL="console",
        OTP_RESEND_COOLDOWN_SECONDS="0", OTP_MAX_SENDS="1000", OTP_MAX_VERIFY_ATTEMPTS="100", OTP_TTL_SECONDS="3600",
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
        status = rc.call(target, path, body, request_id)
        if not status.startswith("200") and not (scenario == "wrong" and status.startswith("400")):
            print(f"unexpected answer {status} in scenario {scenario}", file=real_stderr)
            raise SystemExit(1)
    shutil.rmtree(folder, ignore_errors=True)


def _instructions(scenario: str, count: int, pool: int) -> int:
    done = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, __file__,
         "--child", scenario, str(count), str(pool)],
        capture_output=True, text=True,
    )
    found = _COLLECTED.search(done.stderr)
    if done.returncode != 0 or not found:
        raise SystemExit(f"callgrind run failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return int(found.group(1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child[0], int(args.child[1]), int(args.child[2]))
        return 0
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = [s for s in scenarios if s not in SCENARIOS]
    if unknown or not scenarios or args.requests < 1:
        parser.error(f"scenarios from {', '.join(SCENARIOS)}; --requests at least 1")
    if shutil.which("valgrind") is None:
        raise SystemExit("request_instructions: valgrind is not installed (apt-get install -y valgrind)")
    print(f"instructions per request, in process, callgrind ({BASE + args.requests} - {BASE} requests):")
    for scenario in scenarios:
        pool = BASE + args.requests + 30
        longer, shorter = _instructions(scenario, BASE + args.requests, pool), _instructions(scenario, BASE, pool)
        per = (longer - shorter) / args.requests
        print(f"  {scenario:10s} {per / 1e6:8.3f} M", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
