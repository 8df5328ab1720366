"""SPEC 6, serving: throughput does not depend on the providers' latency, slow clients do not starve the rest, and
requests in flight are bounded (over the bound: 503 with Retry-After, at once).

Each test runs `otp-service serve` (gunicorn.conf.py, the default gevent worker) in a subprocess. Nothing here is
timed: the tests wait on events (a stand-in that holds messages until enough are in flight, sockets the server
closes) with generous bounds; speed is measured by scripts/bench.py (docs/BENCHMARKS.md).
"""
from __future__ import annotations

import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from .conftest import ENCRYPTION_KEY
from .standins import keep_traffic_local
from .standins.twilio_api import TwilioApiStandIn
from .support import AUTH, unique_email, unique_phone
from .test_delivery_sms import ACCOUNT_SID, AUTH_TOKEN, twilio_env
from .test_metrics import ServeProcess

LOCAL = {"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}


def generate(url: str, key: str, type_: str = "phone", timeout: float = 60) -> requests.Response:
    return requests.post(f"{url}/v1/otp/generate", json={"request": {"key": key, "type": type_}}, headers=AUTH,
                         timeout=timeout)


@pytest.fixture
def gathering_twilio(monkeypatch):
    """A Twilio stand-in that answers no message until 100 are waiting at once (or 60 s have passed)."""
    keep_traffic_local(monkeypatch)
    standin = TwilioApiStandIn(ACCOUNT_SID, ACCOUNT_SID, AUTH_TOKEN, gather=100, hang_seconds=60).start()
    yield standin
    standin.stop()


@pytest.mark.slow
def test_with_the_default_configuration_100_messages_wait_on_the_provider_at_once(tmp_path, gathering_twilio):
    """The default serving setup (workers, worker class, bounds: nothing set) keeps 100 requests in flight while
    the provider holds them; under the old default (gthread, 4 threads a worker) at most 4 x workers would be."""
    env = twilio_env(gathering_twilio.base_url, OTP_DELIVERY_TIMEOUT_SECONDS="90",
                     OTP_ENCRYPTION_KEYS=ENCRYPTION_KEY, **LOCAL)
    server = ServeProcess(tmp_path, workers=None, env=env)
    try:
        server.wait_healthy()
        phones = {unique_phone() for _ in range(100)}
        with ThreadPoolExecutor(max_workers=100) as pool:
            answers = list(pool.map(lambda phone: generate(server.url, phone, timeout=120), phones))
        failures = [line for line in server.log() if "not delivered" in line]
        assert [a.status_code for a in answers] == [200] * 100, failures[:3]
        assert gathering_twilio.most_waiting == 100  # all 100 were held by the provider together
        assert {r.form["To"] for r in gathering_twilio.received()} == {f"+91{p}" for p in phones}
    finally:
        log = server.stop()
    assert not any(p in log for p in phones)


# -- slow clients ----------------------------------------------------------------------------------------------------
def _slow_connections(port: int, count: int) -> dict[str, list[socket.socket]]:
    """`count` connections, a third each: a partial request line and headers, nothing at all, a partial body."""
    kinds: dict[str, list[socket.socket]] = {"headers": [], "idle": [], "body": []}
    for n in range(count):
        conn = socket.create_connection(("127.0.0.1", port), timeout=30)
        kind = ("headers", "idle", "body")[n % 3]
        if kind == "headers":
            conn.sendall(b"POST /v1/otp/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Ty")
        elif kind == "body":
            conn.sendall(b"POST /v1/otp/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                         b"Authorization: Bearer x\r\nContent-Length: 200\r\n\r\n{\"request\": ")
        kinds[kind].append(conn)
    return kinds


def _trickle(conns: list[socket.socket], stop: threading.Event) -> None:
    """One more byte on each connection every second (a client on a bad line), until the server closes it."""
    while not stop.wait(1.0):
        for conn in conns:
            try:
                conn.send(b"p")
            except OSError:
                pass


def _closed_by_server(conn: socket.socket) -> bytes:
    """What the server sent before closing the connection (b"" for none); fails if it kept it open for 30 s."""
    received = b""
    while True:
        try:
            chunk = conn.recv(65536)
        except ConnectionResetError:
            return received
        except socket.timeout:
            raise AssertionError("the server kept a slow connection open for 30 s") from None
        if not chunk:
            return received
        received += chunk


@pytest.mark.slow
def test_a_normal_client_is_served_while_200_slow_connections_are_held_and_the_slow_ones_are_cut(tmp_path):
    server = ServeProcess(tmp_path, workers=None, env={"OTP_ENCRYPTION_KEYS": ENCRYPTION_KEY, **LOCAL})
    stop = threading.Event()
    kinds: dict[str, list[socket.socket]] = {}
    try:
        server.wait_healthy()
        kinds = _slow_connections(server.port, 200)
        trickler = threading.Thread(target=_trickle, args=(kinds["headers"] + kinds["body"], stop), daemon=True)
        trickler.start()

        # While all 200 are open (and trickling), a normal client's calls are answered.
        for _ in range(3):
            assert requests.get(f"{server.url}/health", timeout=10).status_code == 200
            assert generate(server.url, unique_email(), "email", timeout=10).status_code == 200

        # The slow ones are cut after the read timeouts (OTP_KEEPALIVE_SECONDS for the request line and headers,
        # OTP_BODY_READ_TIMEOUT_SECONDS for the body: 5 s each by default), trickling or not.
        for conn in kinds["headers"] + kinds["idle"]:
            assert _closed_by_server(conn) == b""
        for conn in kinds["body"]:
            answer = _closed_by_server(conn)
            assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
            assert b'"err":"INVALID_REQUEST"' in answer and b"Request body was not received in time." in answer
        assert requests.get(f"{server.url}/health", timeout=10).status_code == 200
    finally:
        stop.set()
        for conn in [c for group in kinds.values() for c in group]:
            conn.close()
        server.stop()


# -- the in-flight bound -----------------------------------------------------------------------------------------------
@pytest.fixture
def holding_twilio(monkeypatch):
    keep_traffic_local(monkeypatch)
    standin = TwilioApiStandIn(ACCOUNT_SID, ACCOUNT_SID, AUTH_TOKEN, mode="hang", hang_seconds=60).start()
    yield standin
    standin.stop()


@pytest.mark.slow
def test_over_the_in_flight_bound_a_request_is_answered_503_with_retry_after_at_once(tmp_path, holding_twilio):
    env = twilio_env(holding_twilio.base_url, OTP_DELIVERY_TIMEOUT_SECONDS="90", OTP_MAX_IN_FLIGHT="5",
                     OTP_ENCRYPTION_KEYS=ENCRYPTION_KEY, **LOCAL)
    server = ServeProcess(tmp_path, workers=1, env=env)
    pool = ThreadPoolExecutor(max_workers=5)
    try:
        server.wait_healthy()
        held = [pool.submit(generate, server.url, unique_phone(), "phone", 120) for _ in range(5)]
        deadline = time.monotonic() + 60
        while len(holding_twilio.received()) < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(holding_twilio.received()) == 5  # five requests in flight, all waiting on the provider

        for call in (lambda: generate(server.url, unique_email(), "email", timeout=10),
                     lambda: requests.get(f"{server.url}/health", headers={"X-Request-ID": "over-1"}, timeout=10)):
            refused = call()
            assert refused.status_code == 503 and refused.headers["Retry-After"] == "1"
            body = refused.json()
            assert body["params"]["err"] == "SERVER_ERROR" and body["responseCode"] == "SERVER_ERROR"
            assert body["params"]["errmsg"] == "Process failed, please try again." and body["result"] == {}
            assert refused.headers["X-Request-ID"] == body["params"]["msgid"]
        assert body["id"] == "api.health" and body["params"]["msgid"] == "over-1"

        holding_twilio.stop()  # the provider lets go (504): the held requests end, the worker takes new ones
        assert [f.result(timeout=120).status_code for f in held] == [502] * 5
        assert generate(server.url, unique_email(), "email", timeout=10).status_code == 200
        refusals = {line.split(" ")[0]: line.split(" ")[1] for line in
                    requests.get(f"{server.url}/metrics", timeout=10).text.splitlines()
                    if line.startswith("otp_http_requests_total{") and 'status="503"' in line}
        assert sorted(refusals.values()) == ["1.0", "1.0"], refusals  # the refused generate and the refused /health
        assert all('err="SERVER_ERROR"' in labels for labels in refusals)
        assert any('route="/v1/otp/generate"' in labels for labels in refusals)
        assert any('route="/health"' in labels for labels in refusals)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        log = server.stop()
    assert "over the in-flight bound (5)" in log


def test_the_master_imports_nothing_that_keeps_a_blocking_ssl_before_the_workers_patch(tmp_path):
    """gevent patches `ssl` in each worker; a module that did `from ssl import ...` before (urllib3, so requests)
    would keep the blocking originals. `otp-service serve` up to gunicorn's start, and the config and worker class
    gunicorn loads in the master, must not import them."""
    import subprocess
    import sys

    probe = (
        "import runpy, sys\n"
        "from unittest import mock\n"
        "from otp_service.entrypoints import cli, server\n"
        "with mock.patch.object(server, 'run', return_value=0):\n"
        "    assert cli.main(['serve', '--bind', '127.0.0.1:0']) == 0\n"
        "runpy.run_path(str(server.PROJECT_CONFIG))\n"
        "from gunicorn.util import load_class\n"
        "load_class(server.BASE_OPTIONS['worker_class'])\n"
        "print(sorted(m for m in ('urllib3', 'requests', 'twilio', 'cassandra.cluster') if m in sys.modules))\n"
    )
    env = {"PATH": "/usr/bin:/bin", "OTP_SQLITE_PATH": str(tmp_path / "m.db"), "OTP_ENCRYPTION_KEYS": ENCRYPTION_KEY}
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.slow
def test_on_sigterm_a_request_waiting_on_the_provider_is_finished_before_the_server_exits(tmp_path, monkeypatch):
    import signal

    keep_traffic_local(monkeypatch)
    standin = TwilioApiStandIn(ACCOUNT_SID, ACCOUNT_SID, AUTH_TOKEN, gather=2, hang_seconds=60).start()
    env = twilio_env(standin.base_url, OTP_DELIVERY_TIMEOUT_SECONDS="90", OTP_ENCRYPTION_KEYS=ENCRYPTION_KEY, **LOCAL)
    server = ServeProcess(tmp_path, workers=1, env=env)
    pool = ThreadPoolExecutor(max_workers=1)
    try:
        server.wait_healthy()
        held = pool.submit(generate, server.url, unique_phone(), "phone", 120)
        deadline = time.monotonic() + 60
        while not standin.received() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(standin.received()) == 1  # in flight, waiting on the provider

        server.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        while not any("Handling signal: term" in line for line in server.log()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.proc.poll() is None  # still running: the worker waits for its request
        standin.release()
        assert held.result(timeout=60).status_code == 200  # finished within OTP_GRACEFUL_TIMEOUT_SECONDS
        assert server.proc.wait(timeout=30) == 0
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        server.stop()
        standin.stop()
