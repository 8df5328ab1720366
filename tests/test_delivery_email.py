"""SPEC 4, email: codes go through SMTP with STARTTLS or implicit TLS and a login, as plain text and HTML, with a
timeout; a refusal is an honest DELIVERY_FAILED.

A real SMTP server (aiosmtpd) runs on 127.0.0.1 with a test CA made in tmp_path (tests/standins/smtp_server.py).
"""
from __future__ import annotations

import logging
import re
import time

import pytest

from otp_service.adapters.notifications import DeliveryError, Message
from otp_service.adapters.notifications.factory import build_channels, build_templates
from otp_service.adapters.notifications.settings import DeliverySettings
from otp_service.adapters.notifications.smtp_email import SmtpEmailChannel
from otp_service.config import ConfigError, EnvReader
from otp_service.domain.contacts import Contact, ContactType

from .standins.smtp_server import SmtpStandIn, closed_port, make_pki, silent_server

EMAIL = "learner.one@school.example.org"
CODE = "862047"
USER, PASSWORD = "otp-mailer", "mailer-password-5d1e"
SENDER = "no-reply@sunbird.example.org"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def smtp_server(pki):
    started: list[SmtpStandIn] = []

    def start(**options) -> SmtpStandIn:
        options.setdefault("pki", pki)
        options.setdefault("credentials", (USER, PASSWORD))
        server = SmtpStandIn(**options).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def smtp_env(port: int, pki, **extra: str) -> dict[str, str]:
    env = {
        "OTP_EMAIL_CHANNEL": "smtp",
        "OTP_SMTP_HOST": "127.0.0.1",
        "OTP_SMTP_PORT": str(port),
        "OTP_SMTP_SECURITY": "starttls",
        "OTP_SMTP_USERNAME": USER,
        "OTP_SMTP_PASSWORD": PASSWORD,
        "OTP_SMTP_FROM": f"Sunbird <{SENDER}>",
        "OTP_SMTP_CA_FILE": str(pki.ca_file),
        # Generous: a stand-in on 127.0.0.1 answers at once, but a loaded 2-core CI machine can take seconds; the
        # tests of a provider that hangs set a short timeout of their own.
        "OTP_DELIVERY_TIMEOUT_SECONDS": "10",
    }
    env.update(extra)
    return {k: v for k, v in env.items() if v != ""}


def email_channel(env: dict[str, str]):
    settings = DeliverySettings.from_env(EnvReader(env))
    return build_channels(settings, build_templates(settings))[ContactType.EMAIL]


def message(template_id: str | None = None, installation: str = "Sunbird", code: str = CODE) -> Message:
    return Message(Contact(ContactType.EMAIL, EMAIL), code, 10, template_id, installation, "msg-1")


def parts(email) -> tuple[str, str]:
    return email.get_body(("plain",)).get_content(), email.get_body(("html",)).get_content()


# -- accepted ----------------------------------------------------------------------------------------------------------
def test_a_message_printed_any_way_shows_neither_the_code_nor_the_address():
    shown = message()
    for text in (repr(shown), str(shown), f"{shown}", "%s" % (shown,), repr([shown])):
        assert CODE not in text and EMAIL not in text
        assert "msg-1" in text


def test_the_email_arrives_over_starttls_after_login_with_a_text_and_an_html_body(smtp_server, pki):
    server = smtp_server(security="starttls")
    channel = email_channel(smtp_env(server.port, pki))
    assert isinstance(channel, SmtpEmailChannel)

    channel.send(message())

    [received] = server.messages()
    assert received.tls is True
    assert received.login == USER
    assert received.mail_from == SENDER
    assert received.rcpt_tos == [EMAIL]
    email = received.message
    assert email["To"] == EMAIL
    assert email["From"] == f"Sunbird <{SENDER}>"
    assert email["Subject"] == "Your Sunbird verification code"
    assert email["Auto-Submitted"] == "auto-generated"
    assert email["Message-ID"].endswith("@sunbird.example.org>")
    assert email.get_content_type() == "multipart/alternative"
    text, html = parts(email)
    assert text.strip() == "OTP to verify your email on Sunbird is 862047. This is valid for 10 minutes only."
    assert "<strong>862047</strong>" in html and "10 minutes" in html
    assert server.logins == [(USER, True)]


def test_messages_in_a_row_share_one_kept_connection_with_its_tls_and_its_login(smtp_server, pki):
    server = smtp_server(security="starttls")
    channel = email_channel(smtp_env(server.port, pki))
    for n in range(3):
        channel.send(message(code=f"86204{n}"))
    received = server.messages()
    assert [r.rcpt_tos for r in received] == [[EMAIL]] * 3 and all(r.tls and r.login == USER for r in received)
    assert [parts(r.message)[0].split(" is ")[1][:6] for r in received] == ["862040", "862041", "862042"]
    assert server.logins == [(USER, True)]  # one session: one handshake, one AUTH
    channel.close()


def test_a_kept_connection_that_died_is_replaced_and_the_message_still_goes(smtp_server, pki):
    import socket

    server = smtp_server(security="starttls")
    channel = email_channel(smtp_env(server.port, pki))
    channel.send(message())
    [(kept, _, _)] = channel._idle
    kept.sock.shutdown(socket.SHUT_RDWR)  # the link is gone (a server restart, a NAT that forgot it)

    channel.send(message())

    assert len(server.messages()) == 2 and server.logins == [(USER, True), (USER, True)]
    channel.close()


def test_a_connection_idle_too_long_is_not_reused(smtp_server, pki, monkeypatch):
    from otp_service.adapters.notifications import smtp_email

    monkeypatch.setattr(smtp_email, "KEEP_IDLE_SECONDS", 0.0)
    server = smtp_server(security="starttls")
    channel = email_channel(smtp_env(server.port, pki))
    channel.send(message())
    channel.send(message())
    assert len(server.messages()) == 2 and server.logins == [(USER, True), (USER, True)]
    channel.close()


def test_the_email_arrives_over_implicit_tls(smtp_server, pki):
    server = smtp_server(security="ssl")

    email_channel(smtp_env(server.port, pki, OTP_SMTP_SECURITY="ssl")).send(message("resetPassword"))

    [received] = server.messages()
    assert received.tls is True and received.login == USER
    text, html = parts(received.message)
    assert received.message["Subject"] == "Reset your Sunbird password"
    assert CODE in text and "reset your password" in text
    assert CODE in html


def test_a_local_relay_without_tls_or_login_is_allowed(smtp_server, pki):
    server = smtp_server(security="none", credentials=None)
    env = smtp_env(server.port, pki, OTP_SMTP_SECURITY="none", OTP_SMTP_USERNAME="", OTP_SMTP_PASSWORD="",
                   OTP_SMTP_CA_FILE="")

    email_channel(env).send(message())

    [received] = server.messages()
    assert received.tls is False and received.login is None
    assert CODE in parts(received.message)[0]


def test_substituted_values_are_escaped_in_the_html_but_not_in_the_text(smtp_server, pki):
    server = smtp_server()

    email_channel(smtp_env(server.port, pki)).send(message("contactUpdate", installation="Tom & Jerry <Academy>"))

    email = server.messages()[0].message
    text, html = parts(email)
    assert "Tom & Jerry <Academy>" in text
    assert "Tom &amp; Jerry &lt;Academy&gt;" in html and "<Academy>" not in html
    assert email["Subject"] == "Confirm your new Tom & Jerry <Academy> email address"


# -- refused -----------------------------------------------------------------------------------------------------------
def test_a_refused_login_is_a_delivery_error_with_the_smtp_code_and_nothing_is_sent(smtp_server, pki, caplog):
    server = smtp_server()
    caplog.set_level(logging.DEBUG)

    with pytest.raises(DeliveryError) as caught:
        email_channel(smtp_env(server.port, pki, OTP_SMTP_PASSWORD="wrong-password-0000")).send(message())

    assert caught.value.provider_code == 535
    assert caught.value.channel == "smtp"
    assert server.logins and set(server.logins) == {(USER, False)}  # smtplib tries each mechanism offered
    assert server.messages() == []
    failures = [r for r in caplog.records if r.name == "otp_service.delivery" and r.levelno == logging.WARNING]
    assert len(failures) == 1 and "provider_code=535" in failures[0].getMessage()
    assert Contact(ContactType.EMAIL, EMAIL).masked in failures[0].getMessage()
    _assert_secret_free(_ours(caplog), str(caught.value))
    assert caught.value.__context__ is None and caught.value.__cause__ is None


def test_a_refused_recipient_is_a_delivery_error_that_logs_no_address(smtp_server, pki, caplog):
    server = smtp_server(refuse_recipients=True)
    caplog.set_level(logging.DEBUG)

    with pytest.raises(DeliveryError) as caught:
        email_channel(smtp_env(server.port, pki)).send(message())

    assert caught.value.provider_code == 550
    assert server.messages() == []
    _assert_secret_free(_ours(caplog), str(caught.value))
    assert caught.value.__context__ is None  # smtplib's exception quotes the address


def test_an_untrusted_certificate_stops_before_the_login(smtp_server, pki, tmp_path):
    server = smtp_server()
    other_ca = make_pki(tmp_path).ca_file  # a CA that did not sign the server's certificate

    with pytest.raises(DeliveryError) as caught:
        email_channel(smtp_env(server.port, pki, OTP_SMTP_CA_FILE=str(other_ca))).send(message())

    assert caught.value.provider_code == "tls-verify"
    assert server.logins == [] and server.messages() == []


def test_starttls_never_falls_back_to_clear_text(smtp_server, pki):
    server = smtp_server(security="none", credentials=None)  # offers no STARTTLS

    with pytest.raises(DeliveryError) as caught:
        email_channel(smtp_env(server.port, pki)).send(message())

    assert caught.value.provider_code == "not-supported"
    assert "STARTTLS" in caught.value.reason
    assert server.messages() == []


def test_a_server_that_never_answers_is_a_delivery_error_within_the_timeout(pki, caplog):
    caplog.set_level(logging.DEBUG)
    with silent_server() as port:
        channel = email_channel(smtp_env(port, pki, OTP_SMTP_TIMEOUT_SECONDS="0.5"))
        started = time.monotonic()
        with pytest.raises(DeliveryError) as caught:
            channel.send(message())
        elapsed = time.monotonic() - started

    assert caught.value.provider_code == "timeout"
    assert elapsed < 0.5 + 2.0
    _assert_secret_free(_ours(caplog), str(caught.value))


def test_no_server_listening_is_a_delivery_error(pki):
    with pytest.raises(DeliveryError) as caught:
        email_channel(smtp_env(closed_port(), pki)).send(message())

    assert caught.value.provider_code == "ECONNREFUSED"


def _ours(caplog) -> str:
    """What the service and its libraries logged; the stand-in server's own log ("mail.log") is not ours."""
    return "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("mail.log"))


def _assert_secret_free(*texts: str) -> None:
    for text in texts:
        assert EMAIL not in text
        assert CODE not in text
        assert PASSWORD not in text and "wrong-password-0000" not in text
        assert "OTP to verify" not in text


# -- through the API ---------------------------------------------------------------------------------------------------
@pytest.fixture
def smtp_app(tmp_path):
    from otp_service.adapters.crypto import new_key
    from otp_service.adapters.sqlite_store import SqliteStore
    from otp_service.entrypoints.app import create_app

    from .support import Api, settings_for

    stores = []

    def make(env: dict[str, str]) -> Api:
        store = SqliteStore(str(tmp_path / "otp.db"))
        stores.append(store)
        settings = settings_for(
            {"OTP_SQLITE_PATH": str(tmp_path / "otp.db"), "OTP_ENCRYPTION_KEYS": new_key(), **env}
        )
        return Api(create_app(settings, store=store).test_client())

    yield make
    for store in stores:
        store.close()


def test_generate_answers_success_once_the_server_took_the_email_and_its_code_verifies(smtp_server, pki, smtp_app):
    server = smtp_server()
    api = smtp_app(smtp_env(server.port, pki, OTP_INSTALLATION_NAME="DIKSHA"))

    answer = api.generate("Learner.Two@School.example.org", "email", templateId="resetPasswordWithOtp")
    assert answer.status_code == 200, answer.get_json()

    [received] = server.messages()
    assert received.rcpt_tos == ["learner.two@school.example.org"]
    text, _ = parts(received.message)
    assert "DIKSHA" in text and "reset your password" in text
    code = re.search(r"\b(\d{6})\b", text).group(1)
    assert api.verify("learner.two@school.example.org", code, "email").get_json()["result"] == {"response": "SUCCESS"}


def test_generate_answers_502_delivery_failed_when_the_login_is_refused(smtp_server, pki, smtp_app):
    server = smtp_server()
    api = smtp_app(smtp_env(server.port, pki, OTP_SMTP_PASSWORD="wrong-password-0000"))

    answer = api.generate(EMAIL, "email")

    assert answer.status_code == 502
    assert answer.get_json()["params"]["err"] == "DELIVERY_FAILED"
    assert EMAIL not in answer.get_data(as_text=True)


# -- configuration -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "change, named",
    [
        ({"OTP_SMTP_HOST": ""}, "OTP_SMTP_HOST"),
        ({"OTP_SMTP_FROM": ""}, "OTP_SMTP_FROM"),
        ({"OTP_SMTP_FROM": "Sunbird"}, "OTP_SMTP_FROM"),
        ({"OTP_SMTP_PORT": "0"}, "OTP_SMTP_PORT"),
        ({"OTP_SMTP_SECURITY": "maybe"}, "OTP_SMTP_SECURITY"),
        ({"OTP_SMTP_PASSWORD": ""}, "OTP_SMTP_PASSWORD"),
        ({"OTP_SMTP_USERNAME": ""}, "OTP_SMTP_USERNAME"),
        ({"OTP_SMTP_SECURITY": "none", "OTP_SMTP_CA_FILE": ""}, "OTP_SMTP_SECURITY"),  # a password in clear
        ({"OTP_SMTP_CA_FILE": "/nonexistent/ca.pem"}, "OTP_SMTP_CA_FILE"),
        ({"OTP_SMTP_TIMEOUT_SECONDS": "-1"}, "OTP_SMTP_TIMEOUT_SECONDS"),
        ({"OTP_EMAIL_CHANNEL": "fax"}, "OTP_EMAIL_CHANNEL"),
    ],
)
def test_an_incomplete_or_invalid_smtp_setup_stops_startup_naming_the_variable(change, named, pki):
    with pytest.raises(ConfigError, match=named):
        DeliverySettings.from_env(EnvReader(smtp_env(25, pki, **change)))


def test_the_port_follows_the_security_and_the_password_never_shows(pki):
    def port(security: str) -> int:
        env = smtp_env(0, pki, OTP_SMTP_SECURITY=security, OTP_SMTP_PORT="")
        return DeliverySettings.from_env(EnvReader(env)).smtp.port

    assert (port("starttls"), port("ssl")) == (587, 465)
    settings = DeliverySettings.from_env(EnvReader(smtp_env(587, pki)))
    assert PASSWORD not in repr(settings) and PASSWORD not in email_channel(smtp_env(587, pki)).describe()
