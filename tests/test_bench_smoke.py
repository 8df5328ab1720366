"""scripts/bench.py runs end to end (both servers, every scenario, one second each) and reports sane numbers.

This checks that the benchmark works, not how fast the service is: speed is measured by running the script
(docs/BENCHMARKS.md), never by a timed test. Needs wrk (`apt-get install -y wrk`; .ci/run installs it).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LABELS = ("generate (new key)", "generate (resend)", "verify (wrong code)", "verify (right code)")
DEFAULT_SPREAD = ("clients=100000 (X-Forwarded-For from 10.0.0.0/8, OTP_TRUSTED_PROXIES=127.0.0.1), "
                  "number ranges=10000 per wrk thread")
OLD_SPREAD = "clients=1 (every request from 127.0.0.1), number ranges=1 per wrk thread and 100 000 keys"


def run_bench(tmp_path, *args: str) -> tuple[subprocess.CompletedProcess, Path]:
    """bench.py on the embedded store, its working folder kept under tmp_path: (the run, that folder)."""
    assert shutil.which("wrk"), "wrk is not installed: apt-get install -y wrk (bash .ci/run does it)"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTP_CASSANDRA_")}  # the embedded store
    env["TMPDIR"] = str(tmp_path)
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench.py"), "--duration", "1", "--warmup", "0", "--pause", "0",
         "--keep", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr  # 1 would mean unexpected answers or socket errors
    kept = re.search(r"^working folder kept: (.+)$", done.stdout, re.M)
    assert kept, done.stdout
    return done, Path(kept.group(1))


def counters(folder: Path) -> dict[str, tuple[int, int, int]]:
    """The service's abuse counters after the run, per limit: (counters, takes in all, most takes of one)."""
    with sqlite3.connect(folder / "otp.db") as db:
        rows = db.execute("SELECT name, SUM(count) FROM abuse_counter GROUP BY name").fetchall()
    found: dict[str, list[int]] = {}
    for name, count in rows:
        found.setdefault(name.partition(":")[0], []).append(count)
    return {limit: (len(counts), sum(counts), max(counts)) for limit, counts in found.items()}


def test_bench_runs_every_scenario_against_the_service_and_the_ceiling(tmp_path):
    out = tmp_path / "bench.json"
    done, folder = run_bench(tmp_path, "--pool-size", "100", "--json", str(out))

    rows = [line for line in done.stdout.splitlines() if line.startswith("| ") and not line.startswith("| scenario")]
    assert [row.split(" | ")[0][2:] for row in rows] == list(LABELS)
    assert "store=sqlite, channel=console, workers=2, connections=16" in done.stdout
    assert DEFAULT_SPREAD in done.stdout.splitlines()[0]
    assert sum(line.startswith(LABELS) and "CPU ms/req user + system" in line for line in done.stdout.splitlines()) == 4

    report = json.loads(out.read_text())
    assert report["store"] == "sqlite"
    assert (report["options"]["clients"], report["options"]["ranges"]) == (100000, 10000)
    assert [r["label"] for r in report["results"]] == list(LABELS)
    for result in report["results"]:
        for run in (result["service"], result["ceiling"]):
            assert run["requests"] > 0 and run["rps"] > 0
            assert 0 < run["p50_ms"] <= run["p99_ms"] <= run["max_ms"]
            assert run["unexpected"] == run["exhausted"] == run["socket_errors"] == 0
            assert run["cpu_ms"] > 0 and 0 <= run["cpu_sys_ms"] <= run["cpu_ms"]
            assert run["machine_ms"] > 0
        assert result["ratio"] == pytest.approx(result["service"]["rps"] / result["ceiling"]["rps"])

    # The service believed the X-Forwarded-For addresses and the keys spread over ranges: every limit's takes are
    # spread over many counters, none holding more than a tenth of them (a run starts its addresses again, and a
    # resend repeats its key's range, so a counter may hold a few).
    found = counters(folder)
    assert set(found) == {"ip_send", "ip_verify", "prefix_send"}  # no email key, so no per-domain counter
    for limit, (names, takes, most) in found.items():
        assert names > 1 and most * 10 <= takes, (limit, names, takes, most)


def test_bench_clients_1_ranges_1_is_the_traffic_of_one_address_and_one_range_per_thread(tmp_path):
    """--clients 1 --ranges 1: no X-Forwarded-For (every request is 127.0.0.1's, one counter per limit and address)
    and the old key layout 9 run thread index, one range per wrk thread and run."""
    done, folder = run_bench(tmp_path, "--scenarios", "new,wrong", "--pool-size", "100", "--clients", "1",
                             "--ranges", "1")
    assert OLD_SPREAD in done.stdout.splitlines()[0]
    found = counters(folder)
    assert found["ip_send"][0] == 1 and found["ip_verify"][0] == 1, found
    keys = set(re.findall(r"msgid=k(\d+) ", (folder / "service.stdout").read_text()))
    assert keys and all(re.fullmatch(r"9\d\d[01]\d{6}", key) for key in keys)  # 9, run, thread (of 2), index
    runs_and_threads = {key[1:4] for key in keys}
    assert found["prefix_send"][0] == len(runs_and_threads)  # fewer than 100 000 keys a thread: one range each


def test_bench_refuses_a_spread_it_cannot_make():
    for args in (["--clients", "0"], ["--clients", str(2**24 - 1)], ["--ranges", "50"]):
        done = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench.py"), *args], cwd=ROOT,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 2 and ("--clients" in done.stderr or "--ranges" in done.stderr), done.stderr


def test_bench_provider_latency_mode_runs_console_and_both_stand_ins(tmp_path):
    """--provider-latency: console, the Twilio stand-in at 0 ms and at N ms, at each connection count; the report
    has req/s, p50, p99, socket errors, timeouts and non-2xx for each, the ratios, and a verdict for each goal."""
    assert shutil.which("wrk"), "wrk is not installed: apt-get install -y wrk (bash .ci/run does it)"
    out = tmp_path / "provider.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTP_CASSANDRA_")}
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench.py"), "--provider-latency", "50", "--provider-connections",
         "4,8", "--duration", "1", "--warmup", "0", "--pause", "0", "--workers", "1", "--json", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(out.read_text())
    assert report["mode"] == "provider-latency" and report["store"] == "sqlite"
    runs = [(r["connections"], r["target"]) for r in report["runs"]]
    assert runs == [(c, t) for c in (4, 8) for t in ("console", "provider-0ms", "provider-50ms")]
    for run in report["runs"]:
        assert run["requests"] > 0 and run["rps"] > 0 and 0 < run["p50_ms"] <= run["p99_ms"]
        assert run["socket_errors"] == run["timeouts"] == run["non_2xx"] == 0, run["first_bad"]
        if run["target"] == "provider-50ms":
            assert run["p50_ms"] >= 50  # the stand-in's delay is in every answer
    assert "| connections | 50 ms / 0 ms req/s | 0 ms / console req/s | p99 at 50 ms |" in done.stdout
    # at 4 and at 8 connections: the p99 goal and the 0 ms / console goal
    assert sum(line.startswith("goal: ") for line in done.stdout.splitlines()) == 4
    served = report["standins"]
    assert served["stand-in 0 ms"].startswith("served ") and served["stand-in 50 ms"].startswith("served ")
