"""Templates (SPEC 4): chosen by templateId, filled with the OTP, its validity and the installation; operators
replace or add texts with a file; an unknown templateId is INVALID_VALUE; a bad file stops start-up."""
from __future__ import annotations

import io
import json
from string import Template

import pytest
from hypothesis import given
from hypothesis import strategies as st

from otp_service.adapters.notifications import Message
from otp_service.adapters.notifications.console import ConsoleChannel
from otp_service.adapters.notifications.factory import build_templates
from otp_service.adapters.notifications.settings import DeliverySettings
from otp_service.adapters.notifications.templates import Templates, _substitute
from otp_service.config import ConfigError, EnvReader
from otp_service.domain.contacts import Contact, ContactType
from otp_service.domain.errors import OtpError

VALUES = {"otp": "042917", "minutes": 10, "installation": "Sunbird"}


def write(tmp_path, content) -> str:
    path = tmp_path / "templates.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
    return str(path)


# -- the defaults ------------------------------------------------------------------------------------------------------
def test_the_default_sms_is_the_contracts_example_text():
    subject, text = Templates().render(None, ContactType.PHONE, **VALUES)
    assert subject == ""
    assert text == "OTP to verify your phone number on Sunbird is 042917. This is valid for 10 minutes only."


def test_the_default_email_has_a_subject_a_text_and_an_html_body_with_the_code():
    subject, text, html = Templates().render_email(None, **VALUES)
    assert subject == "Your Sunbird verification code"
    assert text == "OTP to verify your email on Sunbird is 042917. This is valid for 10 minutes only."
    assert "<strong>042917</strong>" in html and "10 minutes" in html and html.lstrip().startswith("<!DOCTYPE html>")


@pytest.mark.parametrize(
    "template_id, words",
    [
        ("otp", "verify your"),
        ("resetPassword", "reset your password"),
        ("contactUpdate", "confirm your new"),
        ("resetPasswordWithOtp", "reset your password"),  # the four ids Sunbird's clients send
        ("otpContactUpdateTemplate", "confirm your new"),
        ("wardLoginOTP", "your ward has requested for registration"),
        ("otpDeleteUserTemplate", "delete your account"),
    ],
)
def test_each_shipped_template_carries_the_code_validity_and_installation(template_id, words):
    templates = Templates()
    values = {"otp": "318204", "minutes": 7, "installation": "DIKSHA"}
    sms = templates.render_sms(template_id, **values)
    subject, text, html = templates.render_email(template_id, **values)
    for body in (sms, text, html):
        assert "318204" in body and "7 minutes" in body and "DIKSHA" in body
        assert words in body.lower()
    assert "DIKSHA" in subject and "318204" not in subject  # a subject shows on a lock screen


def test_sunbirds_four_templates_have_texts_of_their_own():
    templates = Templates()
    sunbird = ("resetPasswordWithOtp", "wardLoginOTP", "otpContactUpdateTemplate", "otpDeleteUserTemplate")
    texts = {tid: (templates.render_sms(tid, **VALUES), *templates.render_email(tid, **VALUES)) for tid in sunbird}
    for field in range(4):  # sms, subject, text, html: no two of the four share one
        assert len({t[field] for t in texts.values()}) == len(sunbird), field
    # Each is a template of its own (none an alias of another), so a file can change one and leave the rest.
    assert len({id(templates.templates[tid]) for tid in (*sunbird, "resetPassword", "contactUpdate")}) == 6
    # Sunbird's own SMS texts, word for word (userorg-service's reset-password and verifyPhoneOtpTemplateWard).
    assert texts["resetPasswordWithOtp"][0] == (
        "OTP to reset your password on Sunbird is 042917. This is valid for 10 minutes only.")
    assert texts["wardLoginOTP"][0] == (
        "Your ward has requested for registration on Sunbird using this phone number. Use OTP 042917 to agree and "
        "create the account. This is valid for 10 minutes only.")
    assert "this email address" in texts["wardLoginOTP"][2]
    assert "<strong>042917</strong>" in texts["otpDeleteUserTemplate"][3]


def test_values_are_escaped_in_html_and_the_subject_stays_on_one_line():
    subject, text, html = Templates().render_email("otp", otp="1", minutes=5, installation="A&B <i>\nX-Evil: 1")
    assert "A&B <i>" in text
    assert "A&amp;B &lt;i&gt;" in html and "<i>" not in html
    assert "\n" not in subject and subject == "Your A&B <i> X-Evil: 1 verification code"


# -- templateId --------------------------------------------------------------------------------------------------------
def test_an_unknown_templateId_is_invalid_value_listing_the_known_ones():
    with pytest.raises(OtpError) as caught:
        Templates().check("welcomeBack")
    assert caught.value.err == "INVALID_VALUE"
    assert caught.value.message.startswith("Invalid templateId: welcomeBack. Valid values are: ")
    for known in ("otp", "resetPassword", "contactUpdate", "resetPasswordWithOtp", "otpContactUpdateTemplate",
                  "wardLoginOTP", "otpDeleteUserTemplate"):
        assert known in caught.value.message
    assert caught.value.userorg_key == "0023"  # v2 answers userorg's code for an unknown templateId


@pytest.mark.parametrize("bad", ["", ["otp"], 7, "x" * 500])
def test_a_templateId_of_the_wrong_shape_is_invalid_value_too(bad):
    with pytest.raises(OtpError) as caught:
        Templates().check(bad)
    assert caught.value.err == "INVALID_VALUE"
    assert "x" * 100 not in caught.value.message  # a long value is not echoed back


def test_no_templateId_means_the_default_template():
    Templates().check(None)
    assert Templates().render_sms(None, **VALUES) == Templates().render_sms("otp", **VALUES)


def test_rendering_an_unknown_templateId_is_the_same_invalid_value():
    with pytest.raises(OtpError) as caught:
        Templates().render("nope", ContactType.EMAIL, **VALUES)
    assert caught.value.err == "INVALID_VALUE"


# -- the operator's file -----------------------------------------------------------------------------------------------
def test_a_file_replaces_a_default_text_and_adds_a_template(tmp_path):
    path = write(tmp_path, {
        "otp": {"sms": "${otp} is your $installation code, valid $minutes min. Costs $$0."},
        "welcome": {
            "sms": "Welcome to $installation: $otp",
            "emailSubject": "Welcome to $installation",
            "emailText": "Your code is $otp.\n\nIt expires in $minutes minutes.",
        },
    })
    templates = Templates.load(path)

    assert templates.render_sms(None, **VALUES) == "042917 is your Sunbird code, valid 10 min. Costs $0."
    assert templates.render_email("otp", **VALUES)[0] == "Your Sunbird verification code"  # untouched text kept
    templates.check("welcome")
    subject, text, html = templates.render_email("welcome", **VALUES)
    assert subject == "Welcome to Sunbird"
    assert text == "Your code is 042917.\n\nIt expires in 10 minutes."
    assert "<p>Your code is 042917.</p>" in html and "<p>It expires in 10 minutes.</p>" in html
    assert templates.render_sms("resetPassword", **VALUES).startswith("OTP to reset")  # other defaults stay


def test_a_new_plain_text_replaces_the_default_html_too(tmp_path):
    templates = Templates.load(write(tmp_path, {"resetPassword": {"emailText": "Reset code: $otp & more"}}))
    _, text, html = templates.render_email("resetPassword", **VALUES)
    assert text == "Reset code: 042917 & more"
    assert "Reset code: 042917 &amp; more" in html and "reset your password" not in html


def test_a_file_may_define_a_sunbird_templateId_itself(tmp_path):
    path = write(tmp_path, {"resetPasswordWithOtp": {
        "sms": "Sunbird reset $otp", "emailSubject": "Reset", "emailText": "Reset $otp"}})
    templates = Templates.load(path)
    assert templates.render_sms("resetPasswordWithOtp", **VALUES) == "Sunbird reset 042917"
    assert templates.render_sms("resetPassword", **VALUES).startswith("OTP to reset")


def test_the_factory_loads_the_file_named_by_OTP_TEMPLATES_FILE(tmp_path):
    path = write(tmp_path, {"otp": {"sms": "Code $otp"}})
    settings = DeliverySettings.from_env(EnvReader({"OTP_TEMPLATES_FILE": path}))
    assert build_templates(settings).render_sms(None, **VALUES) == "Code 042917"


def test_the_console_channel_prints_the_masked_contact_and_the_rendered_text():
    stream = io.StringIO()
    contact = Contact(ContactType.EMAIL, "someone@example.org")
    ConsoleChannel(Templates(), stream).send(Message(contact, "042917", 10, "resetPassword", "Sunbird", "m-9"))
    line = stream.getvalue()
    assert contact.masked in line and "someone@" not in line
    assert "Reset your Sunbird password" in line and "042917" in line


@pytest.mark.parametrize(
    "content, words",
    [
        ({"otp": {"sms": "Code $code"}}, ["template 'otp'", "sms", "$code"]),
        ({"welcome": {"sms": "$otp", "emailSubject": "Hi $user", "emailText": "$otp"}},
         ["template 'welcome'", "emailSubject", "$user"]),
        ({"otp": {"emailHtml": "<p>${otp}</p><p>${minute}</p>"}}, ["template 'otp'", "emailHtml", "$minute"]),
        ({"otp": {"sms": "Costs 5$ - $otp"}}, ["template 'otp'", "sms", "$$"]),
        ({"otp": {"sms": "Your code is on its way"}}, ["template 'otp'", "sms", "$otp"]),
        ({"welcome": {"sms": "$otp", "emailSubject": "Hi"}}, ["template 'welcome'", "emailText"]),
        ({"otp": {"smsText": "$otp"}}, ["template 'otp'", "smsText"]),
        ({"otp": {"sms": ""}}, ["template 'otp'", "sms"]),
        ({"otp": "Code $otp"}, ["template 'otp'"]),
        ({"bad id!": {"sms": "$otp", "emailSubject": "x", "emailText": "$otp"}}, ["'bad id!'"]),
        (["otp"], ["JSON object"]),
        ("{not json", ["JSON"]),
    ],
)
def test_a_bad_template_file_stops_startup_naming_the_file_and_the_problem(tmp_path, content, words):
    path = write(tmp_path, content)
    with pytest.raises(ConfigError) as caught:
        DeliverySettings.from_env(EnvReader({"OTP_TEMPLATES_FILE": path}))
    message = str(caught.value)
    assert "OTP_TEMPLATES_FILE" in message and path in message
    for word in words:
        assert word in message


def test_a_missing_template_file_stops_startup(tmp_path):
    with pytest.raises(ConfigError, match="OTP_TEMPLATES_FILE"):
        DeliverySettings.from_env(EnvReader({"OTP_TEMPLATES_FILE": str(tmp_path / "absent.json")}))


@given(st.lists(st.sampled_from(["$otp", "${minutes}", "$$", "{", "}", "{{x}}", "$installation", " text ", "é", "\n"]))
           .map("".join))
def test_messages_say_exactly_what_string_template_would(text):
    """Templates are turned into format strings once; the message must not change by it."""
    values = {"otp": "123456", "minutes": "5", "installation": "Sun{bird} $1"}
    assert _substitute(text, values) == Template(text).substitute(values)
