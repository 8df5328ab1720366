"""The try page and the development inbox in a real browser: Debian's chromium, driven by playwright-core.

pytest starts `otp-service serve` (two gunicorn workers, the console channel, a fresh SQLite file) and runs
tests/browser/try_page.mjs against it: request a code, read it from the inbox page (which was open already and
refreshed itself), ask again too soon and see
the resend countdown, enter a wrong code and see the attempts left, the right one and see success, reload and
see the used code refused. Each step's screenshot is written to tests/browser/screenshots/ (git ignores it).

A missing browser, node or playwright-core fails this test (it never skips): `bash .ci/run` installs all three.
OTP_TEST_CHROMIUM names another chromium binary.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

BROWSER_DIR = Path(__file__).resolve().parent / "browser"
SCREENSHOTS = BROWSER_DIR / "screenshots"


def _chromium() -> str:
    named = os.environ.get("OTP_TEST_CHROMIUM", "/usr/bin/chromium")
    if not (os.path.isfile(named) and os.access(named, os.X_OK)):
        pytest.fail(f"no chromium at {named}: install Debian's (apt-get install chromium; bash .ci/run does), "
                    "or name one with OTP_TEST_CHROMIUM", pytrace=False)
    return named


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed (bash .ci/run installs it): the browser test runs under node",
                    pytrace=False)
    if not (BROWSER_DIR / "node_modules" / "playwright-core" / "package.json").is_file():
        npm = shutil.which("npm")
        if npm is None:
            pytest.fail("npm is missing: cannot install playwright-core (npm ci in tests/browser)", pytrace=False)
        done = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=BROWSER_DIR, capture_output=True,
                              text=True, timeout=300)
        if done.returncode != 0:
            pytest.fail(f"npm ci in tests/browser failed:\n{done.stdout}\n{done.stderr}", pytrace=False)
    return node


@pytest.fixture
def served(tmp_path):
    """`otp-service serve` on a port the system picks, two workers; yields (base URL, its stdout and stderr)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTP_")}
    env.update(OTP_SQLITE_PATH=str(tmp_path / "dev.db"))
    out, err = tmp_path / "stdout.log", tmp_path / "stderr.log"
    with open(out, "w") as stdout, open(err, "w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "otp_service.entrypoints.cli", "serve", "--bind", "127.0.0.1:0", "--workers", "2"],
            cwd=tmp_path, env=env, stdout=stdout, stderr=stderr,
        )
    try:
        deadline = time.monotonic() + 60
        url = None
        while url is None and time.monotonic() < deadline and proc.poll() is None:
            found = re.search(r"Listening at: (http://127\.0\.0\.1:\d+)", err.read_text())
            url = found.group(1) if found else time.sleep(0.1)
        assert url, f"serve did not start:\n{err.read_text()[-3000:]}"
        yield url, out, err
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


@pytest.mark.slow
def test_a_person_requests_a_code_reads_it_in_the_inbox_and_enters_it(served):
    chromium, node = _chromium(), _node()
    url, out, err = served
    shutil.rmtree(SCREENSHOTS, ignore_errors=True)
    run = subprocess.run([node, str(BROWSER_DIR / "try_page.mjs"), url, str(SCREENSHOTS), chromium],
                         cwd=BROWSER_DIR, capture_output=True, text=True, timeout=240)
    steps = {}
    for line in run.stdout.splitlines():
        if line.startswith("{"):
            step = json.loads(line)
            steps[step["step"]] = step
    assert run.returncode == 0, (
        f"the browser walk-through failed (screenshots in {SCREENSHOTS}):\n{run.stdout}\n{run.stderr}\n"
        f"service log (tail):\n{err.read_text()[-3000:]}"
    )
    assert list(steps) == ["requested", "read from the inbox", "resend refused", "wrong code", "verified",
                           "used code refused", "done"]
    max_attempts = 3
    assert steps["wrong code"]["message"] == f"Wrong code, {max_attempts - 1} attempts left."
    assert re.search(r"in (2\d|30) seconds", steps["resend refused"]["message"])  # from Retry-After (30 s cool-down)
    for name in ("01-try-page", "02-code-sent", "03-inbox", "04-resend-too-soon", "05-wrong-code", "06-verified",
                 "07-used-code-refused"):
        shot = SCREENSHOTS / f"{name}.png"
        assert shot.is_file() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", shot
    # The code went to the console's standard output and the inbox only; the email nowhere in plain text.
    code, email = steps["read from the inbox"]["code"], steps["requested"]["email"]
    logs = err.read_text()
    assert '"route": "/try/verify"' in logs or '"route":"/try/verify"' in logs
    shows = re.compile(rf"(?<![0-9A-Za-z]){code}(?![0-9A-Za-z])")  # a number of its own, not digits of a uuid
    assert not shows.search(logs) and email not in logs
    assert shows.search(out.read_text())
