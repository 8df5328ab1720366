"""The development pages (SPEC section 7, issue 21): GET /try and GET /dev/inbox, development and console only.

The browser walk-through is tests/test_try_page_browser.py; these check the same pages without a browser: the
404 envelopes in production, start-up refusing the pages there, the page routes' authentication, the inbox (JSON,
bounded, newest first, shared by gunicorn workers) and that codes show nowhere but the console and its inbox.
"""
from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import re
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest
import requests

from otp_service.adapters.notifications import Message
from otp_service.adapters.notifications.console import ConsoleChannel
from otp_service.adapters.notifications.inbox import KEEP, Inbox
from otp_service.adapters.notifications.templates import Templates
from otp_service.adapters.sqlite_store import SqliteStore
from otp_service.config import ConfigError, Settings
from otp_service.domain.contacts import Contact, ContactType
from otp_service.entrypoints.app import create_app

from .conftest import ENCRYPTION_KEY
from .support import AUTH, RecordingChannel, settings_for, unique_email, unique_phone, wrong_code
from .test_config import PRODUCTION

PAGE_ROUTES = [("GET", "/try"), ("POST", "/try/generate"), ("POST", "/try/verify"), ("GET", "/dev/inbox"),
               ("GET", "/dev/inbox.json"), ("GET", "/try/static/try.js"), ("GET", "/try/static/dev.css")]


def dev_settings(tmp_path: Path, **env: str) -> Settings:
    return settings_for({"OTP_SQLITE_PATH": str(tmp_path / "otp.db"), "OTP_ENCRYPTION_KEYS": ENCRYPTION_KEY, **env})


@pytest.fixture
def dev_app(tmp_path):
    """The service as `otp-service serve` builds it in development: console channel, inbox beside the SQLite file."""
    apps = []

    def factory(**env: str):
        app = create_app(dev_settings(tmp_path, **env))
        apps.append(app)
        return app

    yield factory
    for app in apps:
        app.extensions["otp_service"].store.close()


@pytest.fixture
def client(dev_app):
    return dev_app().test_client()


def page_generate(client, key: str, type_: str = "email", **headers):
    return client.post("/try/generate", json={"request": {"key": key, "type": type_}}, headers=headers)


def page_verify(client, key: str, otp: str, type_: str = "email"):
    return client.post("/try/verify", json={"request": {"key": key, "type": type_, "otp": otp}})


def inbox_messages(client) -> list[dict]:
    answer = client.get("/dev/inbox.json")
    assert answer.status_code == 200
    return answer.get_json()["result"]["messages"]


def code_in(text: str, length: int = 6) -> str:
    found = re.search(rf"\b(\d{{{length}}})\b", text)
    assert found, f"no {length}-digit code in {text!r}"
    return found.group(1)


def shows(text: str, code: str) -> bool:
    """Whether `text` shows the code as a number of its own (a uuid's hex digits may hold the same digits)."""
    return re.search(rf"(?<![0-9A-Za-z]){code}(?![0-9A-Za-z])", text) is not None


class _Elements(HTMLParser):
    """Every start tag of a page, as (tag, attributes)."""

    def __init__(self, html: str):
        super().__init__()
        self.elements: list[tuple[str, dict]] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))

    def find(self, tag: str, **wanted: str) -> dict:
        for name, attrs in self.elements:
            if name == tag and all(attrs.get(k.replace("_", "-")) == v for k, v in wanted.items()):
                return attrs
        raise AssertionError(f"no <{tag} {wanted}> in the page")


# -- production: nothing there -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("with_key", [False, True])
def test_in_production_every_page_route_is_a_404_envelope_whatever_else_is_set(tmp_path, with_key):
    settings = Settings.from_env({**PRODUCTION, "OTP_SQLITE_PATH": str(tmp_path / "otp.db")})
    # Even with the pages forced on in code and a console channel that keeps an inbox, production has no pages.
    forced = dataclasses.replace(settings, dev_pages=True)
    console = ConsoleChannel(Templates(), inbox=Inbox(tmp_path / "inbox"))
    app = create_app(forced, store=SqliteStore(str(tmp_path / "otp.db")),
                     channels={ContactType.EMAIL: console, ContactType.PHONE: console})
    client = app.test_client()
    for method, path in PAGE_ROUTES:
        payload = {"request": {"key": "ada@example.com", "type": "email"}} if method == "POST" else None
        answer = client.open(path, method=method, headers=AUTH if with_key else {}, json=payload)
        assert answer.status_code == 404, (method, path)
        body = answer.get_json()
        assert body["params"]["err"] == "RESOURCE_NOT_FOUND" and body["responseCode"] == "RESOURCE_NOT_FOUND"
        assert answer.mimetype == "application/json"
    assert not (tmp_path / "inbox").exists()  # nothing was sent, nothing was read


@pytest.mark.parametrize("setting", [{"OTP_DEV_PAGES": "true"}, {"OTP_DEV_PAGES": "yes"},
                                     {"OTP_EMAIL_CHANNEL": "console"}, {"OTP_SMS_CHANNEL": "console"}])
def test_start_up_refuses_every_setting_that_would_turn_the_pages_on_in_production(setting):
    name = next(iter(setting))
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({**PRODUCTION, **setting})


def test_production_starts_with_the_pages_off_or_unset():
    assert Settings.from_env(PRODUCTION).dev_pages is False
    assert Settings.from_env({**PRODUCTION, "OTP_DEV_PAGES": "false"}).dev_pages is False


# -- development: only with the console channel and OTP_DEV_PAGES ------------------------------------------------------
def test_development_without_a_console_channel_or_with_the_pages_off_has_none(tmp_path, dev_app):
    off = dev_app(OTP_DEV_PAGES="false").test_client()
    recording = RecordingChannel()
    no_console = create_app(dev_settings(tmp_path), store=SqliteStore(str(tmp_path / "other.db")),
                            channels={ContactType.EMAIL: recording, ContactType.PHONE: recording}).test_client()
    for client in (off, no_console):
        for method, path in PAGE_ROUTES:
            answer = client.open(path, method=method)
            assert answer.status_code == 404 and answer.get_json()["params"]["err"] == "RESOURCE_NOT_FOUND"
    assert Settings.from_env({}).dev_pages is True  # the development default


def test_the_try_page_is_accessible_and_its_code_box_takes_otp_length_digits(dev_app):
    client = dev_app(OTP_LENGTH="8").test_client()
    answer = client.get("/try")
    assert answer.status_code == 200 and answer.mimetype == "text/html"
    page = _Elements(answer.get_data(as_text=True))
    code = page.find("input", id="code")
    assert code["inputmode"] == "numeric" and code["autocomplete"] == "one-time-code"
    assert code["maxlength"] == "8" and code["pattern"] == "[0-9]{8}"
    page.find("label", **{"for": "code"})
    page.find("label", **{"for": "key"})
    page.find("html", lang="en")
    page.find("p", id="status", role="status", aria_live="polite")
    page.find("p", id="error", role="alert", aria_live="assertive")
    assert page.find("a", id="inbox-link")["href"] == "/dev/inbox"
    main = page.find("main", id="try")
    assert main["data-generate-url"] == "/try/generate" and main["data-verify-url"] == "/try/verify"
    assert main["data-code-length"] == "8" and main["data-cooldown"] == "30" and main["data-ttl"] == "600"


def test_the_pages_load_only_their_own_files(client):
    for path in ("/try", "/dev/inbox"):
        answer = client.get(path)
        assert "script-src 'self'" in answer.headers["Content-Security-Policy"]
        assert answer.headers["Cache-Control"] == "no-store"
        page = _Elements(answer.get_data(as_text=True))
        linked = [a.get("src") or a.get("href") for tag, a in page.elements if tag in ("script", "link")]
        assert linked and all(url.startswith("/try/static/") for url in linked), linked
        assert not [tag for tag, a in page.elements if tag == "script" and "src" not in a]  # no inline script
        for url in linked:
            asset = client.get(url)
            assert asset.status_code == 200, url
            assert asset.mimetype in ("text/css", "text/javascript", "application/javascript"), url
            assert b"http://" not in asset.data and b"https://" not in asset.data  # no CDN, nothing fetched


# -- the page routes: no API key, the API's own answers ---------------------------------------------------------------
def test_the_page_routes_answer_like_the_api_without_a_key_and_the_api_still_needs_one(client):
    email = unique_email()
    assert page_generate(client, email).status_code == 200
    code = code_in(inbox_messages(client)[0]["text"])
    wrong = page_verify(client, email, wrong_code(code))
    assert wrong.status_code == 400
    assert wrong.get_json()["params"]["err"] == "OTP_VERIFICATION_FAILED"
    assert wrong.get_json()["result"] == {"maxAllowedAttempt": 3, "remainingAttempt": 2}
    assert wrong.get_json()["id"] == "api.otp.verify"
    again = page_generate(client, email)
    assert again.status_code == 429 and int(again.headers["Retry-After"]) > 0  # the cool-down the page counts down
    assert page_verify(client, email, code).status_code == 200
    used = page_verify(client, email, code)
    assert used.status_code == 400 and used.get_json()["params"]["err"] == "ERROR_INVALID_OTP"
    # The API's own routes are unchanged: no key, no code.
    body = {"request": {"key": unique_email(), "type": "email"}}
    assert client.post("/v1/otp/generate", json=body).status_code == 401
    assert client.post("/v1/otp/generate", json=body, headers={"Authorization": "Bearer "}).status_code == 401
    assert client.post("/v1/otp/generate", json=body, headers=AUTH).status_code == 200


def test_the_page_routes_refuse_calls_from_another_site(client):
    email = unique_email()
    for headers in ({"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "cross-site"},
                    {"Origin": "http://localhost:9999"}):
        answer = page_generate(client, email, **headers)
        assert answer.status_code == 403, headers
        assert answer.get_json()["params"]["err"] == "INVALID_REQUEST"
    # A form post (no preflight) cannot send JSON: refused too.
    form = client.post("/try/generate", data={"request": "x"})
    assert form.status_code == 415
    assert inbox_messages(client) == []  # nothing was sent
    same = page_generate(client, email, Origin="http://localhost", **{"Sec-Fetch-Site": "same-origin"})
    assert same.status_code == 200


# -- the inbox ---------------------------------------------------------------------------------------------------------
def test_the_inbox_shows_each_message_newest_first_with_time_channel_masked_destination_msgid_and_text(
    client, capsys
):
    email, phone = unique_email(), unique_phone()
    capsys.readouterr()
    assert page_generate(client, email, **{"X-Request-ID": "first-message"}).status_code == 200
    assert page_generate(client, phone, "phone", **{"X-Request-ID": "second-message"}).status_code == 200
    printed = capsys.readouterr().out.splitlines()
    answer = client.get("/dev/inbox.json")
    body = answer.get_json()
    assert body["id"] == "api.dev.inbox" and body["responseCode"] == "OK" and body["params"]["status"] == "success"
    newest, oldest = body["result"]["messages"]
    assert (newest["msgid"], oldest["msgid"]) == ("second-message", "first-message")
    assert (newest["type"], oldest["type"]) == ("phone", "email")
    assert newest["channel"] == oldest["channel"] == "console"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d:\d{3}\+0000", newest["ts"])
    assert newest["id"] > oldest["id"]
    for message, key in ((newest, "+91" + phone), (oldest, email)):
        assert key not in json.dumps(message) and "*" in message["to"]
    # The full text, as the console printed it.
    assert oldest["subject"] and f"{oldest['subject']}: {oldest['text']}" in printed[0]
    assert newest["subject"] == "" and newest["text"] in printed[1]
    assert code_in(oldest["text"]) in printed[0] and code_in(newest["text"]) in printed[1]


def test_the_inbox_page_is_html_by_default_and_json_for_scripts_that_ask(client):
    email = unique_email()
    page_generate(client, email)
    code = code_in(inbox_messages(client)[0]["text"])
    html = client.get("/dev/inbox")
    assert html.mimetype == "text/html" and code in html.get_data(as_text=True)
    assert "Accept" in html.headers["Vary"]
    page = _Elements(html.get_data(as_text=True))
    page.find("th", scope="col")
    page.find("p", id="inbox-status", role="status", aria_live="polite")
    assert page.find("main", id="inbox")["data-json-url"] == "/dev/inbox.json"
    as_json = client.get("/dev/inbox", headers={"Accept": "application/json"})
    assert as_json.mimetype == "application/json"
    assert code_in(as_json.get_json()["result"]["messages"][0]["text"]) == code
    assert client.get("/dev/inbox", headers={"Accept": "text/html,application/json;q=0.9"}).mimetype == "text/html"


def test_the_inbox_keeps_the_50_newest_messages_newest_first(tmp_path):
    inbox = Inbox(tmp_path / "inbox")
    for n in range(1, 61):
        inbox.add(channel="console", type="email", to="a***@e***.com", msgid=f"m{n}", subject="s", text=f"text {n}")
    latest = inbox.latest()
    assert KEEP == 50 and len(latest) == 50
    assert [m.msgid for m in latest] == [f"m{n}" for n in range(60, 10, -1)]
    with sqlite3.connect(tmp_path / "inbox") as conn:  # older ones are gone from the file, not only hidden
        assert conn.execute("SELECT count(*) FROM message").fetchone() == (50,)
    assert [m.msgid for m in inbox.latest(3)] == ["m60", "m59", "m58"]


def test_the_inbox_page_shows_at_most_the_50_newest(client):
    sent = []
    for n in range(KEEP + 3):
        msgid = f"bulk-{n}"
        assert page_generate(client, unique_email(), **{"X-Request-ID": msgid}).status_code == 200
        sent.append(msgid)
    shown = [m["msgid"] for m in inbox_messages(client)]
    assert shown == sent[::-1][:KEEP]
    assert client.get("/dev/inbox").get_data(as_text=True).count("<tr data-id=") == KEEP


def test_a_console_message_the_inbox_cannot_keep_is_still_printed_and_the_send_succeeds(tmp_path, caplog):
    (tmp_path / "inbox").mkdir()  # a folder where the file should be: SQLite cannot open it
    printed = io.StringIO()
    console = ConsoleChannel(Templates(), stream=printed, inbox=Inbox(tmp_path / "inbox"))
    contact = Contact(ContactType.EMAIL, "ada@example.com")
    console.send(Message(contact, "123456", 10, None, "Sunbird", "m-1"))
    assert "123456" in printed.getvalue()
    assert "development inbox: could not record a message" in caplog.text
    assert "123456" not in caplog.text and "ada@example.com" not in caplog.text


def test_the_inbox_file_is_readable_by_its_owner_only(tmp_path, client):
    page_generate(client, unique_email())
    path = tmp_path / "otp.db.inbox"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for extra in path.parent.glob("otp.db.inbox-*"):
        assert stat.S_IMODE(extra.stat().st_mode) == 0o600, extra


def test_a_code_shows_on_standard_output_and_in_the_inbox_and_nowhere_else(client, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    capsys.readouterr()
    email = unique_email()
    answers = [client.get("/try"), page_generate(client, email)]
    inbox = client.get("/dev/inbox.json")
    code = code_in(inbox.get_json()["result"]["messages"][0]["text"])
    answers += [page_verify(client, email, wrong_code(code)), page_verify(client, email, code),
                page_verify(client, email, code), client.get("/try")]
    captured = capsys.readouterr()
    assert shows(captured.out, code) and shows(client.get("/dev/inbox").get_data(as_text=True), code)
    logs = caplog.text + captured.err
    assert "request" in logs and "/try/verify" in logs
    assert not shows(logs, code) and email not in logs
    for answer in answers:
        assert not shows(answer.get_data(as_text=True), code) and email not in answer.get_data(as_text=True)
        assert not shows(str(answer.headers), code)


# -- several gunicorn workers share one inbox --------------------------------------------------------------------------
def _request_lines(path: Path) -> list[dict]:
    lines = []
    for raw in path.read_text().splitlines():
        try:
            line = json.loads(raw)
        except ValueError:
            continue
        if isinstance(line, dict) and line.get("message") == "request":
            lines.append(line)
    return lines


def _served_by(log: Path, msgid: str) -> int | None:
    for line in _request_lines(log):
        if line.get("msgid") == msgid:
            return line["pid"]
    return None


@pytest.mark.slow
def test_a_code_sent_by_one_gunicorn_worker_shows_in_the_inbox_another_serves(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTP_")}
    env.update(OTP_SQLITE_PATH=str(tmp_path / "dev.db"), OTP_API_KEYS="b" * 64)
    err = tmp_path / "stderr.log"
    with open(err, "w") as errors, open(tmp_path / "stdout.log", "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "otp_service.entrypoints.cli", "serve", "--bind", "127.0.0.1:0", "--workers", "2"],
            cwd=tmp_path, env=env, stdout=out, stderr=errors,
        )
    try:
        url = None
        deadline = time.monotonic() + 60
        while url is None and time.monotonic() < deadline and proc.poll() is None:
            found = re.search(r"Listening at: (http://127\.0\.0\.1:\d+)", err.read_text())
            url = found.group(1) if found else time.sleep(0.1)
        assert url, f"serve did not start: {err.read_text()[-2000:]}"
        booted = 0
        while booted < 2 and time.monotonic() < deadline:
            booted = len(re.findall(r"Booting worker with pid", err.read_text()))
            time.sleep(0.1)
        sender = None
        while sender is None and time.monotonic() < deadline:
            try:
                answer = requests.post(f"{url}/try/generate", json={"request": {"key": "ada@example.com",
                                       "type": "email"}}, headers={"X-Request-ID": "the-code"}, timeout=10)
                assert answer.status_code == 200, answer.text
            except requests.ConnectionError:
                time.sleep(0.2)
                continue
            while sender is None and time.monotonic() < deadline:  # its log line comes just after the answer
                sender = _served_by(err, "the-code")
                time.sleep(0.05)
        # Read the inbox, one new connection a read, until another worker has served one: each read shows it.
        readers = set()
        for n in range(300):
            msgid = f"read-{n}"
            answer = requests.get(f"{url}/dev/inbox.json", headers={"X-Request-ID": msgid, "Connection": "close"},
                                  timeout=10)
            assert [m["msgid"] for m in answer.json()["result"]["messages"]] == ["the-code"], f"read {n}"
            reader = None
            while reader is None and time.monotonic() < deadline:
                reader = _served_by(err, msgid) or time.sleep(0.01)
            readers.add(reader)
            if readers - {sender}:
                break
        assert readers - {sender}, f"every read was served by the sending worker {sender}; no other worker was seen"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def test_the_pages_files_are_package_data():
    """An install from a wheel has the pages too: setup.cfg's package_data names every file they use."""
    import configparser

    project = Path(__file__).resolve().parents[1]
    config = configparser.ConfigParser()
    config.read(project / "setup.cfg")
    patterns = config["options.package_data"]["otp_service"].split()
    package = project / "otp_service"
    shipped = {path for pattern in patterns for path in package.glob(pattern)}
    pages = {path for path in (package / "entrypoints" / "dev_pages").rglob("*") if path.is_file()}
    assert pages and pages <= shipped, sorted(str(p) for p in pages - shipped)
