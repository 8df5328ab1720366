"""SPEC 4, phone: codes go by SMS through Twilio, with a timeout, and a refusal is an honest DELIVERY_FAILED.

The real `twilio` client talks HTTP to a stand-in of Twilio's Messages API on 127.0.0.1 (tests/standins).
"""
from __future__ import annotations

import logging
import re
import time

import pytest

from otp_service.adapters.notifications import DeliveryError, Message
from otp_service.adapters.notifications.factory import build_channels, build_templates
from otp_service.adapters.notifications.settings import DeliverySettings
from otp_service.adapters.notifications.twilio_sms import TwilioSmsChannel
from otp_service.config import ConfigError, EnvReader
from otp_service.domain.contacts import Contact, ContactType

from .standins import keep_traffic_local
from .standins.smtp_server import closed_port
from .standins.twilio_api import TwilioApiStandIn

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "test-auth-token-7f3a"
API_KEY_SID = "SK" + "fedcba9876543210" * 2
API_KEY_SECRET = "test-api-key-secret-91c2"
SERVICE_SID = "MG" + "00112233445566778899aabbccddeeff"
FROM_NUMBER = "+14155550100"
PHONE = "+919876543210"
CODE = "730519"


def twilio_env(base_url: str, **extra: str) -> dict[str, str]:
    env = {
        "OTP_SMS_CHANNEL": "twilio",
        "OTP_TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "OTP_TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "OTP_TWILIO_FROM_NUMBER": FROM_NUMBER,
        "OTP_TWILIO_BASE_URL": base_url,
        # Generous: a stand-in on 127.0.0.1 answers at once, but a loaded 2-core CI machine can take seconds; the
        # tests of a provider that hangs set a short timeout of their own.
        "OTP_DELIVERY_TIMEOUT_SECONDS": "10",
    }
    env.update(extra)
    return {k: v for k, v in env.items() if v != ""}


def sms_channel(env: dict[str, str]):
    settings = DeliverySettings.from_env(EnvReader(env))
    return build_channels(settings, build_templates(settings))[ContactType.PHONE]


def message(template_id: str | None = None, code: str = CODE) -> Message:
    return Message(Contact(ContactType.PHONE, PHONE), code, 10, template_id, "Sunbird", "msg-1")


@pytest.fixture
def twilio_api(monkeypatch):
    keep_traffic_local(monkeypatch)
    standin = TwilioApiStandIn(ACCOUNT_SID, ACCOUNT_SID, AUTH_TOKEN).start()
    yield standin
    standin.stop()


# -- accepted ----------------------------------------------------------------------------------------------------------
def test_the_sms_goes_to_twilio_with_to_from_body_and_basic_auth(twilio_api):
    channel = sms_channel(twilio_env(twilio_api.base_url))
    assert isinstance(channel, TwilioSmsChannel)

    channel.send(message())

    [request] = twilio_api.received()
    assert request.method == "POST"
    assert request.path == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
    assert request.auth == (ACCOUNT_SID, AUTH_TOKEN)
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert request.form["To"] == PHONE
    assert request.form["From"] == FROM_NUMBER
    assert "MessagingServiceSid" not in request.form
    assert request.form["Body"] == (
        "OTP to verify your phone number on Sunbird is 730519. This is valid for 10 minutes only."
    )


def test_the_template_chosen_by_templateId_shapes_the_sms(twilio_api):
    channel = sms_channel(twilio_env(twilio_api.base_url))

    channel.send(message("resetPassword", code="004211"))
    channel.send(message("otpContactUpdateTemplate", code="550012"))  # Sunbird's own name for contactUpdate

    reset, update = twilio_api.received()
    assert "reset your password" in reset.form["Body"] and "004211" in reset.form["Body"]
    assert "new phone number" in update.form["Body"] and "550012" in update.form["Body"]
    assert "10 minutes" in reset.form["Body"] and "Sunbird" in update.form["Body"]


def test_an_api_key_and_a_messaging_service_can_replace_the_token_and_the_number(twilio_api):
    twilio_api.username, twilio_api.password = API_KEY_SID, API_KEY_SECRET
    env = twilio_env(
        twilio_api.base_url,
        OTP_TWILIO_AUTH_TOKEN="",
        OTP_TWILIO_FROM_NUMBER="",
        OTP_TWILIO_API_KEY_SID=API_KEY_SID,
        OTP_TWILIO_API_KEY_SECRET=API_KEY_SECRET,
        OTP_TWILIO_MESSAGING_SERVICE_SID=SERVICE_SID,
    )

    sms_channel(env).send(message())

    [request] = twilio_api.received()
    assert request.path == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"  # the account, not the key
    assert request.auth == (API_KEY_SID, API_KEY_SECRET)
    assert request.form["MessagingServiceSid"] == SERVICE_SID
    assert "From" not in request.form
    assert CODE in request.form["Body"]


# -- refused -----------------------------------------------------------------------------------------------------------
def test_a_twilio_400_is_a_delivery_error_with_twilios_code_and_no_number_or_code_in_logs(twilio_api, caplog):
    twilio_api.mode, twilio_api.error_code = "reject", 21211
    channel = sms_channel(twilio_env(twilio_api.base_url))
    caplog.set_level(logging.DEBUG)  # every logger, twilio's own included

    with pytest.raises(DeliveryError) as caught:
        channel.send(message())

    assert caught.value.provider_code == 21211
    assert caught.value.channel == "twilio"
    assert [r.form["To"] for r in twilio_api.received()] == [PHONE]  # it did reach the provider
    failures = [r for r in caplog.records if r.name == "otp_service.delivery" and r.levelno == logging.WARNING]
    assert len(failures) == 1 and "provider_code=21211" in failures[0].getMessage()
    assert Contact(ContactType.PHONE, PHONE).masked in failures[0].getMessage()
    _assert_secret_free(caplog.text, str(caught.value), repr(caught.value.__cause__), repr(caught.value.__context__))


def test_a_twilio_500_is_a_delivery_error(twilio_api, caplog):
    twilio_api.mode = "error"
    channel = sms_channel(twilio_env(twilio_api.base_url))
    caplog.set_level(logging.DEBUG)

    with pytest.raises(DeliveryError) as caught:
        channel.send(message())

    assert caught.value.provider_code == 20500
    assert "HTTP 500" in caught.value.reason
    assert len(twilio_api.received()) == 1  # no retry: a retry could send the user two messages
    _assert_secret_free(caplog.text, str(caught.value))


def test_a_twilio_that_hangs_is_a_delivery_error_within_the_timeout(twilio_api, caplog):
    twilio_api.mode = "hang"
    channel = sms_channel(twilio_env(twilio_api.base_url, OTP_TWILIO_TIMEOUT_SECONDS="0.5"))
    caplog.set_level(logging.DEBUG)

    started = time.monotonic()
    with pytest.raises(DeliveryError) as caught:
        channel.send(message())
    elapsed = time.monotonic() - started

    assert caught.value.provider_code == "timeout"
    assert elapsed < 0.5 + 2.0  # the stand-in would hang for 5 s
    assert len(twilio_api.received()) == 1
    _assert_secret_free(caplog.text, str(caught.value))


def test_wrong_credentials_are_a_delivery_error_with_twilios_code(twilio_api):
    channel = sms_channel(twilio_env(twilio_api.base_url, OTP_TWILIO_AUTH_TOKEN="not-the-token"))

    with pytest.raises(DeliveryError) as caught:
        channel.send(message())

    assert caught.value.provider_code == 20003
    assert twilio_api.received()[0].auth == (ACCOUNT_SID, "not-the-token")


def test_a_message_twilio_takes_but_marks_failed_is_not_a_success(twilio_api):
    twilio_api.mode = "queued-failed"

    with pytest.raises(DeliveryError) as caught:
        sms_channel(twilio_env(twilio_api.base_url)).send(message())

    assert caught.value.provider_code == 30008


def test_no_twilio_listening_is_a_delivery_error(monkeypatch):
    keep_traffic_local(monkeypatch)
    channel = sms_channel(twilio_env(f"http://127.0.0.1:{closed_port()}"))

    with pytest.raises(DeliveryError) as caught:
        channel.send(message())

    assert caught.value.provider_code == "connection"


def _assert_secret_free(*texts: str) -> None:
    for text in texts:
        assert PHONE not in text and PHONE.lstrip("+") not in text
        assert CODE not in text
        assert AUTH_TOKEN not in text
        assert "OTP to verify" not in text  # the body


# -- through the API ---------------------------------------------------------------------------------------------------
@pytest.fixture
def twilio_app(twilio_api, tmp_path):
    from otp_service.adapters.crypto import new_key
    from otp_service.adapters.sqlite_store import SqliteStore
    from otp_service.entrypoints.app import create_app

    from .support import Api, settings_for

    store = SqliteStore(str(tmp_path / "otp.db"))
    settings = settings_for(
        {"OTP_SQLITE_PATH": str(tmp_path / "otp.db"), "OTP_ENCRYPTION_KEYS": new_key(),
         **twilio_env(twilio_api.base_url)}
    )
    yield Api(create_app(settings, store=store).test_client())
    store.close()


def test_generate_answers_success_once_twilio_took_the_sms_and_its_code_verifies(twilio_api, twilio_app):
    answer = twilio_app.generate("9876501234", "phone")
    assert answer.status_code == 200, answer.get_json()

    [request] = twilio_api.received()
    assert request.form["To"] == "+919876501234"
    code = re.search(r"\b(\d{6})\b", request.form["Body"]).group(1)
    assert twilio_app.verify("9876501234", code, "phone").get_json()["result"] == {"response": "SUCCESS"}


def test_generate_answers_502_delivery_failed_when_twilio_refuses(twilio_api, twilio_app):
    twilio_api.mode = "reject"

    answer = twilio_app.generate("9876501234", "phone")

    assert answer.status_code == 502
    body = answer.get_json()
    assert body["params"]["err"] == "DELIVERY_FAILED"
    assert "9876501234" not in answer.get_data(as_text=True)


def test_generate_with_an_unknown_templateId_is_invalid_value_and_sends_nothing(twilio_api, twilio_app):
    answer = twilio_app.generate("9876501234", "phone", templateId="noSuchTemplate")

    assert answer.status_code == 400
    assert answer.get_json()["params"]["err"] == "INVALID_VALUE"
    assert twilio_api.received() == []


# -- configuration -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "change, named",
    [
        ({"OTP_TWILIO_ACCOUNT_SID": ""}, "OTP_TWILIO_ACCOUNT_SID"),
        ({"OTP_TWILIO_ACCOUNT_SID": "AC123"}, "OTP_TWILIO_ACCOUNT_SID"),
        ({"OTP_TWILIO_AUTH_TOKEN": ""}, "OTP_TWILIO_AUTH_TOKEN"),
        ({"OTP_TWILIO_API_KEY_SID": API_KEY_SID}, "OTP_TWILIO_API_KEY_SID"),  # and a token: which one?
        ({"OTP_TWILIO_AUTH_TOKEN": "", "OTP_TWILIO_API_KEY_SID": API_KEY_SID}, "OTP_TWILIO_API_KEY_SECRET"),
        ({"OTP_TWILIO_FROM_NUMBER": ""}, "OTP_TWILIO_FROM_NUMBER"),
        ({"OTP_TWILIO_FROM_NUMBER": "+0 415 555"}, "OTP_TWILIO_FROM_NUMBER"),
        ({"OTP_TWILIO_MESSAGING_SERVICE_SID": "MG1"}, "OTP_TWILIO_MESSAGING_SERVICE_SID"),
        ({"OTP_TWILIO_BASE_URL": "http://twilio.example.org"}, "OTP_TWILIO_BASE_URL"),  # clear text off-machine
        ({"OTP_TWILIO_BASE_URL": "ftp://127.0.0.1"}, "OTP_TWILIO_BASE_URL"),
        ({"OTP_TWILIO_TIMEOUT_SECONDS": "0"}, "OTP_TWILIO_TIMEOUT_SECONDS"),
        ({"OTP_DELIVERY_TIMEOUT_SECONDS": "soon"}, "OTP_DELIVERY_TIMEOUT_SECONDS"),
        ({"OTP_SMS_CHANNEL": "carrier-pigeon"}, "OTP_SMS_CHANNEL"),
    ],
)
def test_an_incomplete_or_invalid_twilio_setup_stops_startup_naming_the_variable(change, named):
    with pytest.raises(ConfigError, match=named):
        DeliverySettings.from_env(EnvReader(twilio_env("http://127.0.0.1:9", **change)))


def test_secrets_never_show_in_the_settings_repr():
    env = twilio_env("http://127.0.0.1:9")
    shown = repr(DeliverySettings.from_env(EnvReader(env)))
    assert AUTH_TOKEN not in shown
    env.update(OTP_TWILIO_AUTH_TOKEN="", OTP_TWILIO_API_KEY_SID=API_KEY_SID, OTP_TWILIO_API_KEY_SECRET=API_KEY_SECRET)
    shown = repr(DeliverySettings.from_env(EnvReader({k: v for k, v in env.items() if v})))
    assert API_KEY_SECRET not in shown and API_KEY_SID in shown


def test_the_console_stays_the_default_and_twilio_settings_are_not_needed_for_it():
    settings = DeliverySettings.from_env(EnvReader({}))
    channels = build_channels(settings, build_templates(settings))
    assert channels[ContactType.PHONE].name == "console"
    assert settings.twilio is None
