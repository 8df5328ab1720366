"""Faults: the store unreachable, a delivery provider that hangs, a worker killed in the middle of a request.

What each test proves is written down in docs/operations.md ("Faults").
"""
from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import sys
import textwrap
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
import requests

from otp_service.adapters.crypto import KeyRing
from otp_service.adapters.sqlite_store import SqliteStore
from otp_service.entrypoints.app import create_app

from .conftest import ENCRYPTION_KEY
from .standins import keep_traffic_local
from .standins.smtp_server import silent_server
from .standins.twilio_api import TwilioApiStandIn
from .support import AUTH, Api, settings_for, unique_email, unique_phone
from .test_delivery_sms import ACCOUNT_SID, AUTH_TOKEN, twilio_env
from .test_metrics import ServeProcess, free_port

FAST = 3.0  # seconds: a generous bound for "answers at once" (the store's own timeouts are longer)


def timed(call):
    started = time.monotonic()
    response = call()
    return response, time.monotonic() - started


def err(response) -> str:
    return response.get_json()["params"]["err"]


# -- the store unreachable: SQLite ----------------------------------------------------------------------------------
@pytest.fixture
def store_kind() -> str:
    return "sqlite"


def test_a_locked_sqlite_answers_503_at_once_and_recovers_without_a_restart(make_app, tmp_path, channel):
    path = str(tmp_path / "locked.db")
    api = Api(make_app(store=SqliteStore(path, busy_timeout=0.3)).test_client())
    email = unique_email()
    assert api.generate(email).status_code == 200

    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process holding the write lock (a backup, a stuck writer)
    try:
        response, elapsed = timed(lambda: api.verify(email, channel.last_code(email)))
        assert response.status_code == 503 and err(response) == "SERVER_ERROR"
        assert response.get_json()["responseCode"] == "SERVER_ERROR"
        assert elapsed < 0.3 + FAST
        other, elapsed = timed(lambda: api.generate(unique_email()))
        assert other.status_code == 503 and elapsed < 0.3 + FAST
    finally:
        holder.execute("ROLLBACK")
        holder.close()

    # The same app, the same store object: the refused verify changed nothing, and the code still works.
    assert api.verify(email, channel.last_code(email)).status_code == 200
    assert api.generate(unique_email()).status_code == 200


def test_a_write_lock_held_briefly_by_another_connection_is_waited_for(make_app, tmp_path, channel):
    """Another writer (a worker, a backup) holding the lock for a moment delays a request; it does not fail it."""
    path = str(tmp_path / "busy.db")
    api = Api(make_app(store=SqliteStore(path, busy_timeout=5.0)).test_client())
    email = unique_email()
    assert api.generate(email).status_code == 200

    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")  # the write lock, as another connection's write holds it
    releaser = threading.Timer(0.2, lambda: holder.execute("COMMIT"))
    releaser.start()
    try:
        response, elapsed = timed(lambda: api.verify(email, channel.last_code(email)))
    finally:
        releaser.join()
        holder.close()
    assert response.status_code == 200, response.get_json()
    assert 0.15 <= elapsed < 0.2 + FAST


# -- the store unreachable: Cassandra, behind a proxy the test cuts ---------------------------------------------------
class TcpProxy:
    """127.0.0.1:<port> -> upstream. `cut()` resets every connection and refuses new ones (a node down); `stall()`
    keeps connections open but passes nothing on (a network partition); `restore()` ends either."""

    def __init__(self, upstream: tuple[str, int]):
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.is_cut = False
        self._flowing = threading.Event()
        self._flowing.set()
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.is_cut:
                _reset(client)
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                _reset(client)
                continue
            server.settimeout(None)
            with self._lock:
                self._sockets.update((client, server))
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                self._flowing.wait()
                target.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, target):
                self._drop(s)

    def _drop(self, s: socket.socket) -> None:
        with self._lock:
            self._sockets.discard(s)
        _reset(s)

    def cut(self) -> None:
        self.is_cut = True
        with self._lock:
            live = list(self._sockets)
        for s in live:
            self._drop(s)

    def stall(self) -> None:
        self._flowing.clear()

    def restore(self) -> None:
        self.is_cut = False
        self._flowing.set()

    def close(self) -> None:
        self._closed = True
        self._flowing.set()
        self.cut()
        self.listener.close()


def _reset(s: socket.socket) -> None:
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST, not FIN
    except OSError:
        pass
    try:
        s.close()
    except OSError:
        pass


@pytest.fixture
def proxied_cassandra(cassandra_target):
    """A CassandraStore that reaches the session's Cassandra only through a TcpProxy."""
    from otp_service.adapters.cassandra_store import CassandraStore

    settings = cassandra_target.settings
    proxy = TcpProxy((settings.contact_points[0], settings.port))
    store = CassandraStore(replace(settings, port=proxy.port, request_timeout=2.0, connect_timeout=2.0),
                           keyspace=cassandra_target.keyspace)
    yield proxy, store
    store.close()
    proxy.close()


def wait_until_ok(call, timeout: float = 45.0):
    deadline = time.monotonic() + timeout
    while True:
        response = call()
        if response.status_code == 200 or time.monotonic() > deadline:
            return response
        assert response.status_code == 503, response.get_json()
        time.sleep(0.25)


@pytest.mark.cassandra
@pytest.mark.slow
def test_cassandra_cut_off_answers_503_at_once_and_comes_back_without_a_restart(make_app, proxied_cassandra, channel):
    proxy, store = proxied_cassandra
    api = Api(make_app(store=store).test_client())
    email = unique_email()
    assert api.generate(email).status_code == 200
    code = channel.last_code(email)

    proxy.cut()
    for call in (lambda: api.verify(email, code), lambda: api.generate(unique_email()),
                 lambda: api.client.get("/health")):
        response, elapsed = timed(call)
        assert response.status_code == 503 and err(response) == "SERVER_ERROR", response.get_json()
        assert elapsed < store.settings.request_timeout + FAST

    proxy.restore()
    # The driver reconnects by itself; the app, its store and its session are the same objects as before.
    assert wait_until_ok(lambda: api.client.get("/health")).status_code == 200
    assert wait_until_ok(lambda: api.verify(email, code)).status_code == 200  # the refused verify cost nothing
    assert api.generate(unique_email()).status_code == 200


@pytest.mark.cassandra
@pytest.mark.slow
def test_cassandra_that_stops_answering_is_a_503_within_the_request_timeout(make_app, proxied_cassandra):
    proxy, store = proxied_cassandra
    api = Api(make_app(store=store).test_client())
    assert api.generate(unique_email()).status_code == 200

    proxy.stall()
    for call in (lambda: api.generate(unique_email()), lambda: api.client.get("/health")):
        response, elapsed = timed(call)
        assert response.status_code == 503 and err(response) == "SERVER_ERROR", response.get_json()
        assert elapsed < store.settings.request_timeout + FAST

    proxy.restore()
    assert wait_until_ok(lambda: api.client.get("/health")).status_code == 200
    assert wait_until_ok(lambda: api.generate(unique_email())).status_code == 200


@pytest.mark.cassandra
@pytest.mark.slow
def test_an_app_started_while_cassandra_is_unreachable_comes_up_when_it_is_back(make_app, proxied_cassandra):
    proxy, store = proxied_cassandra
    proxy.cut()
    api = Api(make_app(store=store).test_client())
    for _ in range(3):  # the first connect fails; the next ones are refused at once for 2 s
        response, elapsed = timed(lambda: api.generate(unique_email()))
        assert response.status_code == 503 and elapsed < store.settings.connect_timeout + FAST
    proxy.restore()
    assert wait_until_ok(lambda: api.generate(unique_email())).status_code == 200


# -- a delivery provider that hangs ---------------------------------------------------------------------------------
@pytest.fixture
def hanging_twilio(monkeypatch):
    keep_traffic_local(monkeypatch)
    standin = TwilioApiStandIn(ACCOUNT_SID, ACCOUNT_SID, AUTH_TOKEN, mode="hang", hang_seconds=20).start()
    yield standin
    standin.stop()


@pytest.mark.slow
def test_a_hanging_sms_provider_is_a_502_within_the_timeout_through_gunicorn(tmp_path, hanging_twilio):
    env = twilio_env(hanging_twilio.base_url, OTP_DELIVERY_TIMEOUT_SECONDS="1", OTP_ENCRYPTION_KEYS=ENCRYPTION_KEY,
                     NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
    server = ServeProcess(tmp_path, workers=1, env=env)
    try:
        server.wait_healthy()
        phone = unique_phone()
        url = f"{server.url}/v1/otp/generate"
        body = {"request": {"key": phone, "type": "phone"}}

        response, elapsed = timed(lambda: requests.post(url, json=body, headers=AUTH, timeout=30))

        assert response.status_code == 502 and response.json()["params"]["err"] == "DELIVERY_FAILED"
        assert elapsed < 1 + FAST  # the stand-in would hold the request for 20 s
        assert len(hanging_twilio.received()) == 1
        # The worker was not stuck: it answers at once, and the send was counted (a retry is a resend).
        assert requests.get(f"{server.url}/health", timeout=5).status_code == 200
        hanging_twilio.mode = "accept"
        assert requests.post(url, json=body, headers=AUTH, timeout=30).status_code == 200
        sent = [r.form["Body"] for r in hanging_twilio.received()]
        assert len(sent) == 2 and sent[0] == sent[1]  # the same code, sent again
    finally:
        log = server.stop()
    assert phone not in log and phone[-8:] not in log


def test_a_silent_smtp_server_is_a_502_within_the_timeout(make_app, tmp_path):
    with silent_server() as port:
        settings = settings_for({
            "OTP_SQLITE_PATH": str(tmp_path / "otp.db"),
            "OTP_ENCRYPTION_KEYS": ENCRYPTION_KEY,
            "OTP_EMAIL_CHANNEL": "smtp",
            "OTP_SMTP_HOST": "127.0.0.1",
            "OTP_SMTP_PORT": str(port),
            "OTP_SMTP_SECURITY": "none",
            "OTP_SMTP_FROM": "Sunbird <no-reply@example.com>",
            "OTP_DELIVERY_TIMEOUT_SECONDS": "1",
        })
        api = Api(create_app(settings, store=SqliteStore(str(tmp_path / "otp.db"))).test_client())

        response, elapsed = timed(lambda: api.generate(unique_email()))

    assert response.status_code == 502 and err(response) == "DELIVERY_FAILED"
    assert elapsed < 1 + FAST


# -- a worker killed in the middle of a request ----------------------------------------------------------------------
# The app under gunicorn, with a store and a channel that stop at a point the test arms and wait there to be killed.
FAULT_SERVER = textwrap.dedent('''
    import json, os, sys, time
    from pathlib import Path

    from otp_service.adapters.notifications import Channel
    from otp_service.adapters.sqlite_store import SqliteStore
    from otp_service.domain.contacts import ContactType
    from otp_service.entrypoints.app import create_app
    from otp_service.entrypoints.server import OtpServer

    CONTROL, DB, BIND = Path(sys.argv[1]), sys.argv[2], sys.argv[3]


    def pause_at(point):
        """If the test armed `point`, take it (one request only), say so, and wait to be killed."""
        try:
            os.rename(CONTROL / f"arm-{point}", CONTROL / f"taken-{point}")
        except FileNotFoundError:
            return
        (CONTROL / f"paused-{point}").write_text(str(os.getpid()))
        while True:
            time.sleep(1)


    class Outbox(Channel):
        """Delivery: a line in a file, written only once the "provider" accepted it."""
        name = "outbox"

        def send(self, message):
            pause_at("send")
            with open(CONTROL / "outbox", "a") as f:
                f.write(json.dumps({"key": message.contact.key, "code": message.code}) + "\\n")


    class PausingStore(SqliteStore):
        def insert_otp(self, row):
            pause_at("before-insert")
            return super().insert_otp(row)

        def update_otp(self, row, expected_version):
            pause_at("before-update")
            applied = super().update_otp(row, expected_version)
            pause_at("after-update")
            return applied


    class FaultServer(OtpServer):
        def load(self):
            outbox = Outbox()
            return create_app(store=PausingStore(DB), channels={ContactType.EMAIL: outbox, ContactType.PHONE: outbox})


    FaultServer({"bind": BIND, "workers": 1}, None).run()
''')


class FaultServer:
    def __init__(self, tmp_path: Path):
        self.control = tmp_path / "control"
        self.control.mkdir()
        self.db = str(tmp_path / "fault.db")
        script = tmp_path / "fault_server.py"
        script.write_text(FAULT_SERVER)
        port = free_port()
        self.process = ServeProcess(
            tmp_path,
            env={"OTP_SQLITE_PATH": self.db, "OTP_ENCRYPTION_KEYS": ENCRYPTION_KEY},
            argv=[sys.executable, str(script), str(self.control), self.db, f"127.0.0.1:{port}"],
        )
        self.process.port, self.process.url = port, f"http://127.0.0.1:{port}"
        self.url = self.process.url
        self.keys = KeyRing([ENCRYPTION_KEY])
        self.store = SqliteStore(self.db)

    def call(self, route: str, **request) -> requests.Response:
        return requests.post(f"{self.url}/v1/otp/{route}", json={"request": request}, headers=AUTH, timeout=30)

    def killed_at(self, point: str, route: str, **request) -> None:
        """Arm `point`, send the request, and SIGKILL the worker once it waits there: the caller gets no answer."""
        (self.control / f"arm-{point}").touch()
        outcome: dict = {}

        def send():
            try:
                outcome["response"] = self.call(route, **request)
            except requests.RequestException as exc:
                outcome["error"] = exc

        caller = threading.Thread(target=send)
        caller.start()
        paused = self.control / f"paused-{point}"
        deadline = time.monotonic() + 20
        while not paused.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert paused.exists(), f"the request never reached {point}"
        time.sleep(0.05)  # let the worker finish writing the pid
        os.kill(int(paused.read_text()), signal.SIGKILL)
        paused.unlink()
        caller.join(30)
        assert "response" not in outcome, "the caller got an answer from a killed worker"
        self.process.wait_healthy()  # gunicorn booted a new worker; the server never went away

    def row(self, email: str):
        token = self.keys.lookup_tokens("email", email)[0]
        return token, self.store.get_otp("email", token)

    def code_in_row(self, email: str) -> str | None:
        token, row = self.row(email)
        return None if row is None or row.otp is None else self.keys.decrypt_code(row.otp, "email", token)

    def delivered(self, email: str) -> list[str]:
        outbox = self.control / "outbox"
        lines = outbox.read_text().splitlines() if outbox.exists() else []
        return [json.loads(line)["code"] for line in lines if json.loads(line)["key"] == email]

    def stop(self) -> None:
        self.store.close()
        self.process.stop()


@pytest.fixture(scope="module")
def fault_server(tmp_path_factory):
    server = FaultServer(tmp_path_factory.mktemp("faults"))
    server.process.wait_healthy()
    yield server
    server.stop()


@pytest.mark.slow
def test_killed_before_the_code_is_stored_nothing_was_stored_or_counted(fault_server):
    email = unique_email()
    fault_server.killed_at("before-insert", "generate", key=email, type="email")

    assert fault_server.row(email)[1] is None
    assert fault_server.delivered(email) == []
    assert fault_server.call("generate", key=email, type="email").status_code == 200
    token, row = fault_server.row(email)
    assert row.send_count == 1  # the killed request did not use up a send


@pytest.mark.slow
def test_killed_after_storing_but_before_delivery_the_send_counts_and_a_retry_sends_the_same_code(fault_server):
    email = unique_email()
    fault_server.killed_at("send", "generate", key=email, type="email")

    stored = fault_server.code_in_row(email)
    assert stored is not None and fault_server.row(email)[1].send_count == 1
    assert fault_server.delivered(email) == []  # stored, counted, not delivered: the caller got no SUCCESS

    assert fault_server.call("generate", key=email, type="email").status_code == 200  # a resend
    assert fault_server.delivered(email) == [stored]
    assert fault_server.row(email)[1].send_count == 2
    assert fault_server.call("verify", key=email, type="email", otp=stored).status_code == 200


@pytest.mark.slow
def test_killed_before_the_compare_and_set_of_a_verify_the_attempt_is_not_counted(fault_server):
    email = unique_email()
    assert fault_server.call("generate", key=email, type="email").status_code == 200
    [code] = fault_server.delivered(email)
    wrong = "".join(str((int(d) + 1) % 10) for d in code)

    fault_server.killed_at("before-update", "verify", key=email, type="email", otp=wrong)
    assert fault_server.row(email)[1].retry_count == 0
    fault_server.killed_at("before-update", "verify", key=email, type="email", otp=code)
    assert fault_server.code_in_row(email) == code  # not consumed

    answer = fault_server.call("verify", key=email, type="email", otp=wrong).json()
    assert answer["result"] == {"maxAllowedAttempt": 3, "remainingAttempt": 2}  # the killed guess cost nothing
    assert fault_server.call("verify", key=email, type="email", otp=code).status_code == 200


@pytest.mark.slow
def test_killed_after_the_compare_and_set_of_a_right_code_it_is_consumed_and_never_verifies_again(fault_server):
    email = unique_email()
    assert fault_server.call("generate", key=email, type="email").status_code == 200
    [code] = fault_server.delivered(email)

    fault_server.killed_at("after-update", "verify", key=email, type="email", otp=code)

    # The caller never saw SUCCESS, and the code is used: it can only be replaced, never verified twice.
    token, row = fault_server.row(email)
    assert row.otp is None
    retry = fault_server.call("verify", key=email, type="email", otp=code)
    assert retry.status_code == 400 and retry.json()["params"]["err"] == "ERROR_INVALID_OTP"
