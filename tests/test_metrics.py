"""GET /metrics: Prometheus text, no API key, right under several gunicorn workers, and never a key or a code."""
from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from otp_service.adapters.notifications import DeliveryError
from otp_service.adapters.store import Store, StoreUnavailable

from .support import API_KEY, API_KEY_HASH, unique_email, unique_phone

PROJECT = Path(__file__).resolve().parents[1]


@pytest.fixture
def store_kind() -> str:
    """Metrics do not depend on the store: these tests run on SQLite only."""
    return "sqlite"


def samples(text: str) -> dict[tuple, float]:
    """{(sample name, sorted label items): value} of a Prometheus text exposition."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def total(found: dict[tuple, float], name: str, **labels: str) -> float:
    return sum(
        value for (sample, items), value in found.items()
        if sample == name and all(dict(items).get(k) == v for k, v in labels.items())
    )


def scrape(client) -> dict[tuple, float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    return samples(response.get_data(as_text=True))


# -- in one process -------------------------------------------------------------------------------------------------
def test_metrics_need_no_api_key_and_count_requests_by_route_status_and_err(api):
    email = unique_email()
    api.generate(email)
    api.generate("not-an-email")
    api.client.post("/v1/otp/verify", json={"request": {}})  # no key: 401
    api.client.get("/health")
    api.client.get("/no/such/route/9876543210")

    found = scrape(api.client)  # no Authorization header

    assert total(found, "otp_http_requests_total", route="/v1/otp/generate", status="200", err="") == 1
    assert total(found, "otp_http_requests_total", route="/v1/otp/generate", status="400", err="INVALID_EMAIL") == 1
    assert total(found, "otp_http_requests_total", route="/v1/otp/verify", status="401", err="UNAUTHORIZED") == 1
    assert total(found, "otp_http_requests_total", route="/health", status="200") == 1
    # A made-up path never becomes a label value: the series would be unbounded, and a path may carry anything.
    assert total(found, "otp_http_requests_total", route="<unmatched>", status="404", err="RESOURCE_NOT_FOUND") == 1
    assert total(found, "otp_http_request_duration_seconds_count", route="/v1/otp/generate") == 2
    assert total(found, "otp_http_request_duration_seconds_bucket", route="/v1/otp/generate", le="+Inf") == 2


def test_a_method_no_route_knows_is_one_bounded_label(api):
    """A caller may send any method token; each would otherwise become a new series."""
    for method in ("BREW", "PROPFIND", "X-ANYTHING"):
        api.client.open("/v1/otp/generate", method=method)

    found = scrape(api.client)

    assert total(found, "otp_http_requests_total", route="<unmatched>", method="other") == 3
    methods = {dict(items).get("method") for (name, items) in found if name == "otp_http_requests_total"}
    assert methods <= {"GET", "POST", "other"}


def test_deliveries_are_counted_by_channel_and_result(api, channel):
    api.generate(unique_email())
    api.generate(unique_phone(), type_="phone")
    channel.failure = DeliveryError("recording", "down", provider_code=500)
    assert api.generate(unique_email()).status_code == 502

    found = scrape(api.client)

    assert total(found, "otp_deliveries_total", channel="recording", result="accepted") == 2
    assert total(found, "otp_deliveries_total", channel="recording", result="failed") == 1


def test_a_block_is_counted_once_per_key_blocked(make_app):
    api_app = make_app(OTP_MAX_SENDS="1", OTP_RESEND_COOLDOWN_SECONDS="0")
    from .support import Api

    api = Api(api_app.test_client())
    email = unique_email()
    assert api.generate(email).status_code == 200
    assert api.generate(email).get_json()["params"]["err"] == "MAX_LIMIT_EXHAUSTED"
    assert api.generate(email).get_json()["params"]["err"] == "KEY_BLOCKED"

    found = scrape(api.client)

    assert total(found, "otp_keys_blocked_total", type="email") == 1
    assert total(found, "otp_keys_blocked_total", type="phone") == 0  # present from the start, at 0
    assert total(found, "otp_http_requests_total", err="KEY_BLOCKED") == 1


class DownStore(Store):
    """A store that cannot be reached."""

    name = "down"

    def _down(self, *args, **kwargs):
        raise StoreUnavailable("down: connection refused")

    get_otp = insert_otp = update_otp = delete_otp = block_key = get_block = ping = _down
    take_counts = release_counts = _down


def test_store_errors_are_counted(make_app):
    from .support import Api

    api = Api(make_app(store=DownStore()).test_client())
    assert api.generate(unique_email()).status_code == 503
    assert api.client.get("/health").status_code == 503

    found = scrape(api.client)

    assert total(found, "otp_store_errors_total", store="down", kind="unavailable") == 2
    assert total(found, "otp_store_errors_total", store="down", kind="contention") == 0
    assert total(found, "otp_http_requests_total", route="/v1/otp/generate", status="503", err="SERVER_ERROR") == 1


def test_metrics_never_show_a_key_a_code_or_an_api_key(api, channel):
    email, phone = unique_email(), unique_phone()
    api.generate(email)
    api.generate(phone, type_="phone")
    api.verify(email, channel.last_code(email))
    text = api.client.get("/metrics").get_data(as_text=True)
    for secret in (email, email.split("@")[0], phone, phone[-8:], *channel.codes_for(email),
                   *channel.codes_for(phone), API_KEY, API_KEY_HASH):
        assert secret not in text


# -- under gunicorn, several workers --------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServeProcess:
    """`otp-service serve` in a subprocess on 127.0.0.1, its JSON log lines collected as they come."""

    def __init__(self, tmp_path: Path, *, workers: int | None = 2, env: dict[str, str] | None = None,
                 argv: list[str] | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        full_env = {k: v for k, v in os.environ.items() if not k.startswith(("OTP_", "PROMETHEUS_"))}
        full_env.update(
            OTP_SQLITE_PATH=str(tmp_path / "serve.db"),
            OTP_API_KEYS=API_KEY_HASH,
            OTP_RESEND_COOLDOWN_SECONDS="0",
            PYTHONPATH=str(PROJECT) + os.pathsep + full_env.get("PYTHONPATH", ""),
        )
        full_env.update(env or {})
        command = argv or [sys.executable, "-m", "otp_service.entrypoints.cli", "serve",
                           "--bind", f"127.0.0.1:{self.port}", *(["--workers", str(workers)] if workers else [])]
        self.proc = subprocess.Popen(command, cwd=tmp_path, env=full_env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._lock = threading.Lock()
        for stream in (self.proc.stdout, self.proc.stderr):
            threading.Thread(target=self._collect, args=(stream,), daemon=True).start()

    def _collect(self, stream) -> None:
        for line in stream:
            with self._lock:
                self.lines.append(line)

    def log(self) -> list[str]:
        with self._lock:
            return list(self.lines)

    def wait_healthy(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "serve exited:\n" + "".join(self.log())
            try:
                if requests.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise AssertionError("serve did not become healthy:\n" + "".join(self.log()))

    def records(self) -> list[dict]:
        """The JSON log lines so far, parsed."""
        return [json.loads(line) for line in self.log() if line.startswith("{")]

    def ready_workers(self) -> set[int]:
        """Workers whose app is built (each logs its channels once create_app has run)."""
        return {r["pid"] for r in self.records() if r["message"].startswith("channel for email: ")}

    def wait_workers(self, count: int, timeout: float = 30.0) -> set[int]:
        deadline = time.monotonic() + timeout
        while len(self.ready_workers()) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        ready = self.ready_workers()
        assert len(ready) >= count, f"{len(ready)} of {count} workers ready:\n" + "".join(self.log())
        return ready

    def answered_by(self) -> set[int]:
        """The pids of the workers that wrote a request line for a /health request."""
        return {r["pid"] for r in self.records() if r["message"] == "request" and r.get("route") == "/health"}

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return "".join(self.log())


@pytest.fixture
def serve(tmp_path):
    started: list[ServeProcess] = []

    def start(**kwargs) -> ServeProcess:
        process = ServeProcess(tmp_path, **kwargs)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


def _health_total(url: str) -> float:
    text = requests.get(f"{url}/metrics", timeout=5).text
    return total(samples(text), "otp_http_requests_total", route="/health", status="200")


@contextlib.contextmanager
def only(answering: int, workers: set[int]):
    """Pause every other worker (SIGSTOP), so that `answering` takes every new connection."""
    paused = workers - {answering}
    for pid in paused:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in paused:
            os.kill(pid, signal.SIGCONT)


def _hammer(url: str, n: int) -> None:
    def one(_):
        with requests.Session() as fresh:  # a new connection each time, so either worker may take it
            assert fresh.get(f"{url}/health", timeout=10).status_code == 200

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(n)))


@pytest.mark.slow
def test_under_two_workers_metrics_count_every_request_whichever_worker_answered(serve):
    server = serve(workers=2)
    server.wait_healthy()
    workers = server.wait_workers(2)
    before = _health_total(server.url)  # the health checks of wait_healthy
    for answering in sorted(workers):
        with only(answering, workers):  # so both surely answer some
            _hammer(server.url, 60)
    assert server.answered_by() == workers

    # A scrape sums both workers' files, whichever worker answers it.
    for answering in sorted(workers):
        with only(answering, workers):
            assert _health_total(server.url) - before == 120

    # A worker killed outright: its counts stay (its files stay), and its replacement adds to them.
    victim = min(server.answered_by())
    os.kill(victim, signal.SIGKILL)
    assert len(server.wait_workers(3)) == 3, "gunicorn should have booted a replacement worker"
    server.wait_healthy()
    after_kill = _health_total(server.url)
    assert after_kill >= before + 120
    _hammer(server.url, 40)
    assert _health_total(server.url) == after_kill + 40

    log = server.stop()
    assert server.proc.returncode == 0
    folders = re.findall(r"metrics: workers write to (\S+) ", log)
    assert len(folders) == 1 and not Path(folders[0]).exists(), "the metrics folder serve made is removed at exit"


@pytest.mark.slow
def test_a_given_metrics_folder_is_emptied_at_start_and_kept(serve, tmp_path):
    folder = tmp_path / "metrics"
    folder.mkdir()
    (folder / "counter_12345.db").write_bytes(b"stale values of a previous run")
    server = serve(workers=1, env={"PROMETHEUS_MULTIPROC_DIR": str(folder)})
    server.wait_healthy()
    assert not (folder / "counter_12345.db").exists()
    assert _health_total(server.url) >= 1
    server.stop()
    assert folder.is_dir()
