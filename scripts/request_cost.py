"""CPU cost of one request, in process: the app called as WSGI, no server, no network, one thread.

    python3 scripts/request_cost.py [--requests 2000] [--repeat 5] [--evict MB]

The same four scenarios as scripts/bench.py, and the ceiling app, each timed over `--requests` requests and
repeated `--repeat` times; the best repeat is printed (the least disturbed by other work on the machine), as
the process's CPU time (not wall time: time other programs take from it does not count), in
microseconds per request. This is what a change to a hot path is judged by on a shared machine: it moves much less
than requests per second under load. Logs go to /dev/null (formatted, not shown); console lines likewise.

`--evict MB` writes over a buffer of that size before each request and times each request alone: the request then
starts with the processor's caches holding someone else's data, as a worker's request does under load (between two
of its requests, wrk, the other worker and the kernel run on the same cores). What a request costs there follows the
amount of code and data it touches more than the instructions it runs (docs/BENCHMARKS.md).
"""
from __future__ import annotations

import argparse
import hashlib
import io
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

API_KEY = "bench-request-cost-key"
CONSOLE_LINE = re.compile(r"msgid=k(\d+) .* is (\d+)\.")


def environ(path: str, body: bytes, request_id: str) -> dict:
    return {
        "REQUEST_METHOD": "POST",
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8080",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(body)),
        "HTTP_HOST": "127.0.0.1:8080",
        "HTTP_AUTHORIZATION": f"Bearer {API_KEY}",
        "HTTP_X_REQUEST_ID": request_id,
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }


def call(app, path: str, body: bytes, request_id: str) -> str:
    status = []
    result = app(environ(path, body, request_id), lambda s, h, exc_info=None: status.append(s))
    b"".join(result)
    if hasattr(result, "close"):
        result.close()
    return status[0]


def generate_body(key: str) -> bytes:
    return b'{"request": {"key": "%s", "type": "phone"}}' % key.encode()


def verify_body(key: str, code: str) -> bytes:
    return b'{"request": {"key": "%s", "type": "phone", "otp": "%s"}}' % (key.encode(), code.encode())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--evict", type=int, default=0, metavar="MB",
                        help="overwrite this many MiB before each request, so that it starts with cold caches")
    args = parser.parse_args(argv)
    n, repeat = args.requests, args.repeat
    scratch, blank = bytearray(args.evict << 20), bytes(args.evict << 20)

    folder = tempfile.mkdtemp(prefix="otp-cost-")
    os.environ.update(
        OTP_ENV="development", OTP_API_KEYS=hashlib.sha256(API_KEY.encode()).hexdigest(),
        OTP_SQLITE_PATH=f"{folder}/otp.db", OTP_SMS_CHANNEL="console", OTP_EMAIL_CHANNEL="console",
        OTP_RESEND_COOLDOWN_SECONDS="0", OTP_MAX_SENDS="1000", OTP_MAX_VERIFY_ATTEMPTS="100", OTP_TTL_SECONDS="3600",
        # the abuse limits count, and never refuse
        OTP_IP_SEND_LIMIT="100000000", OTP_IP_VERIFY_LIMIT="100000000", OTP_PREFIX_SEND_LIMIT="100000000",
        OTP_DEV_PAGES="false",  # the development inbox is no part of what production runs
    )
    for name in [k for k in os.environ if k.startswith(("OTP_USER_SERVICE", "OTP_CASSANDRA", "PROMETHEUS"))]:
        del os.environ[name]
    from otp_service.adapters.crypto import new_key

    os.environ["OTP_ENCRYPTION_KEYS"] = new_key()
    real_out, real_err = sys.stdout, sys.stderr
    console = open(f"{folder}/console.out", "w")
    sys.stdout, sys.stderr = console, open(os.devnull, "w")
    try:
        from ceiling_app import create_ceiling_app

        from otp_service.entrypoints.app import create_app

        app = create_app().wsgi_app.__self__  # the Flask app itself
        ceiling = create_ceiling_app()
        counter = iter(range(10**9))
        codes: dict[str, str] = {}

        def new_key_pairs(count: int) -> list[str]:
            keys = [f"98{next(counter):08d}" for _ in range(count)]
            for key in keys:
                assert call(app, "/v1/otp/generate", generate_body(key), "k" + key).startswith("200"), key
            console.flush()
            for line in open(f"{folder}/console.out"):
                found = CONSOLE_LINE.search(line)
                if found:
                    codes[found.group(1)] = found.group(2)
            return keys

        def timed(fn, count: int) -> float:
            best = float("inf")
            for _ in range(repeat):
                work = fn(count)
                if not scratch:
                    started = time.process_time()
                    for item in work:
                        item()
                    best = min(best, (time.process_time() - started) / count)
                    continue
                spent = 0.0
                for item in work:
                    scratch[:] = blank  # out of the caches goes whatever the last request left there
                    started = time.process_time()
                    item()
                    spent += time.process_time() - started
                best = min(best, spent / count)
            return best * 1e6

        def s_new(count):
            keys = [f"97{next(counter):08d}" for _ in range(count)]
            return [lambda k=k: call(app, "/v1/otp/generate", generate_body(k), "k" + k) for k in keys]

        resend_pool = new_key_pairs(200)
        wrong_pool = new_key_pairs(200)

        def s_resend(count):
            return [lambda k=resend_pool[i % 200]: call(app, "/v1/otp/generate", generate_body(k), "k" + k)
                    for i in range(count)]

        def s_wrong(count):
            def one(k):
                code = codes[k]
                bad = f"{(int(code) + 1) % 10 ** len(code):0{len(code)}d}"
                return lambda: call(app, "/v1/otp/verify", verify_body(k, bad), "k" + k)
            return [one(wrong_pool[i % 200]) for i in range(count)]

        def s_right(count):
            keys = new_key_pairs(count)
            return [lambda k=k: call(app, "/v1/otp/verify", verify_body(k, codes[k]), "k" + k) for k in keys]

        def s_ceiling(count):
            return [lambda: call(ceiling, "/v1/otp/generate", generate_body("9876543210"), "k1") for _ in range(count)]

        # Every wrong-code verify must count (100 attempts a key): at most 99 per key over all repeats.
        wrong_n = min(n, 99 * 200 // repeat)
        rows = [
            ("ceiling (bare Flask, same envelope)", timed(s_ceiling, n)),
            ("generate (new key)", timed(s_new, n)),
            ("generate (resend)", timed(s_resend, min(n, 990 * 200 // repeat))),
            ("verify (wrong code)", timed(s_wrong, wrong_n)),
            ("verify (right code)", timed(s_right, n)),
        ]
    finally:
        sys.stdout, sys.stderr = real_out, real_err
        console.close()
        shutil.rmtree(folder, ignore_errors=True)
    caches = f", caches evicted ({args.evict} MiB written) before each request" if scratch else ""
    print(f"in-process WSGI cost, best of {repeat} x {n} requests, one thread{caches} (microseconds per request):")
    for name, micros in rows:
        print(f"  {name:38s} {micros:8.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
