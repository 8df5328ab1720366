"""scripts/bench.py runs end to end (both servers, every scenario, one second each) and reports sane numbers.

This checks that the benchmark works, not how fast the service is: speed is measured by running the script
(docs/BENCHMARKS.md), never by a timed test. Needs wrk (`apt-get install -y wrk`; .ci/run installs it).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LABELS = ("generate (new key)", "generate (resend)", "verify (wrong code)", "verify (right code)")



def test_bench_runs_every_scenario_against_the_service_and_the_ceiling(tmp_path):
    assert shutil.which("wrk"), "wrk is not installed: apt-get install -y wrk (bash .ci/run does it)"
    out = tmp_path / "bench.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTP_CASSANDRA_")}  # the embedded store
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench.py"), "--duration", "1", "--warmup", "0", "--pause", "0",
         "--pool-size", "100", "--json", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr  # 1 would mean unexpected answers or socket errors

    rows = [line for line in done.stdout.splitlines() if line.startswith("| ") and not line.startswith("| scenario")]
    assert [row.split(" | ")[0][2:] for row in rows] == list(LABELS)
    assert "store=sqlite, channel=console, workers=2, connections=16" in done.stdout
    assert sum(line.startswith(LABELS) and "CPU ms/req user + system" in line for line in done.stdout.splitlines()) == 4

    report = json.loads(out.read_text())
    assert report["store"] == "sqlite"
    assert [r["label"] for r in report["results"]] == list(LABELS)
    for result in report["results"]:
        for run in (result["service"], result["ceiling"]):
            assert run["requests"] > 0 and run["rps"] > 0
            assert 0 < run["p50_ms"] <= run["p99_ms"] <= run["max_ms"]
            assert run["unexpected"] == run["exhausted"] == run["socket_errors"] == 0
            assert run["cpu_ms"] > 0 and 0 <= run["cpu_sys_ms"] <= run["cpu_ms"]
            assert run["machine_ms"] > 0
        assert result["ratio"] == pytest.approx(result["service"]["rps"] / result["ceiling"]["rps"])


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
