"""POST /v1/otp/generate, rule by rule (SPEC section 2)."""
from __future__ import annotations

import pytest

from otp_service.adapters.notifications import DeliveryError

from .support import unique_email, unique_phone


def envelope_error(response, status, err):
    body = response.get_json()
    assert response.status_code == status, body
    assert body["params"]["err"] == err and body["params"]["status"] == err
    return body


def test_generate_answers_success_in_the_envelope(api, channel):
    email = unique_email()
    response = api.generate(email)
    body = response.get_json()
    assert response.status_code == 200
    assert body["id"] == "api.otp.generate" and body["ver"] == "v1" and body["responseCode"] == "OK"
    assert body["result"] == {"response": "SUCCESS"}
    assert body["params"]["status"] == "success" and body["params"]["err"] == ""
    assert len(channel.last_code(email)) == 6


def test_rule1_email_is_trimmed_and_lower_cased(api, channel):
    email = unique_email()
    assert api.generate(f"  {email.upper()} ", type_="EMAIL").status_code == 200
    assert channel.codes_for(email)


def test_rule1_phone_is_normalised_to_e164_with_the_default_country(api, channel):
    local = unique_phone()
    assert api.generate(local, type_="phone").status_code == 200
    assert channel.codes_for("+91" + local)


def test_rule1_phone_with_its_own_country_code_keeps_it(api, channel):
    assert api.generate("+1 415 555 2671", type_="phone").status_code == 200
    assert channel.codes_for("+14155552671")


@pytest.mark.parametrize("missing", ["key", "type"])
def test_rule1_key_and_type_are_mandatory(api, missing):
    body = {"key": unique_email(), "type": "email"}
    del body[missing]
    response = api.client.post("/v1/otp/generate", json={"request": body}, headers=api.headers)
    body = envelope_error(response, 400, "MANDATORY_PARAMETER_MISSING")
    assert body["params"]["errmsg"] == f"Mandatory parameter {missing} is missing."
    assert body["responseCode"] == "CLIENT_ERROR" and body["result"] == {}


def test_rule1_blank_key_counts_as_missing(api):
    envelope_error(api.generate("   "), 400, "MANDATORY_PARAMETER_MISSING")


def test_rule1_unknown_type_lists_the_valid_ones(api):
    body = envelope_error(api.generate(unique_email(), type_="fax"), 400, "INVALID_VALUE")
    assert body["params"]["errmsg"] == (
        "Invalid type: fax. Valid values are: email, phone, prevUsedEmail, prevUsedPhone, recoveryEmail, recoveryPhone."
    )


@pytest.mark.parametrize("key", ["not-an-email", "a@", "@b.com", "a b@c.com", 12345, ["x"], {"a": 1}])
def test_rule1_invalid_email(api, key):
    body = envelope_error(api.generate(key), 400, "INVALID_EMAIL")
    assert body["params"]["errmsg"] == "Email is invalid."


@pytest.mark.parametrize("key", ["12", "abcdefghij", "+999 1234", "0000000000", True, {"n": 1}])
def test_rule1_invalid_phone(api, key):
    body = envelope_error(api.generate(key, type_="phone"), 400, "INVALID_PHONE")
    assert body["params"]["errmsg"] == "Please provide a valid phone number."


def test_rule1_unknown_template_is_a_400_not_a_500(api, channel):
    email = unique_email()
    body = envelope_error(api.generate(email, templateId="no-such-template"), 400, "INVALID_VALUE")
    assert "templateId" in body["params"]["errmsg"]
    assert not channel.codes_for(email)


def test_rule1_bad_input_loses_nothing(api, channel):
    """A rejected request neither sends nor counts: the key's next generate is its first."""
    email = unique_email()
    api.generate(email, templateId="nope")
    assert api.generate(email).status_code == 200 and len(channel.codes_for(email)) == 1


def test_rule5_resend_sends_the_same_code(make_app, channel):
    api = _api(make_app(OTP_RESEND_COOLDOWN_SECONDS="0"))
    email = unique_email()
    api.generate(email)
    api.generate(email)
    first, second = channel.codes_for(email)
    assert first == second


def test_rule5_resend_keeps_attempts_and_expiry(make_app, channel, clock):
    api = _api(make_app(OTP_RESEND_COOLDOWN_SECONDS="0", OTP_TTL_SECONDS="600"))
    email = unique_email()
    api.generate(email)
    code = channel.last_code(email)
    api.verify(email, _other(code))
    clock.advance(300)
    api.generate(email)
    body = api.verify(email, _other(code)).get_json()
    assert body["result"]["remainingAttempt"] == 1  # the resend did not reset the attempts
    clock.advance(301)  # 601 s after generation: the resend did not extend the expiry
    assert api.verify(email, code).get_json()["params"]["err"] == "ERROR_INVALID_OTP"


def test_rule5_resend_inside_the_cooldown_is_429(api, channel, clock):
    email = unique_email()
    api.generate(email)
    clock.advance(10)
    response = api.generate(email)
    body = envelope_error(response, 429, "ERROR_RATE_LIMIT_EXCEEDED")
    assert body["responseCode"] == "TOO_MANY_REQUESTS"
    assert response.headers["Retry-After"] == "20"
    assert len(channel.codes_for(email)) == 1
    clock.advance(20)
    assert api.generate(email).status_code == 200


def test_rule6_new_code_after_expiry(api, channel, clock):
    email = unique_email()
    api.generate(email)
    clock.advance(601)
    api.generate(email)
    old, new = channel.codes_for(email)
    if old != new:  # a fresh code repeats the old one with probability 1e-6
        assert api.verify(email, old).get_json()["params"]["err"] == "OTP_VERIFICATION_FAILED"
    assert api.verify(email, new).status_code == 200


def test_rule6_new_code_after_use(api, channel, clock):
    email = unique_email()
    api.generate(email)
    assert api.verify(email, channel.last_code(email)).status_code == 200
    clock.advance(31)
    api.generate(email)
    assert api.verify(email, channel.last_code(email)).status_code == 200


def test_rule6_new_code_after_lock_resets_attempts(api, channel, clock):
    email = unique_email()
    api.generate(email)
    code = channel.last_code(email)
    for _ in range(3):
        api.verify(email, _other(code))
    clock.advance(31)
    api.generate(email)
    fresh = channel.last_code(email)
    body = api.verify(email, _other(fresh)).get_json()
    assert body["result"] == {"maxAllowedAttempt": 3, "remainingAttempt": 2}
    assert api.verify(email, fresh).status_code == 200


def test_rule4_fifth_send_in_the_window_is_max_limit_exhausted_and_blocks(api, channel, clock):
    email = unique_email()
    for _ in range(4):
        assert api.generate(email).status_code == 200
        clock.advance(31)
    body = envelope_error(api.generate(email), 400, "MAX_LIMIT_EXHAUSTED")
    assert body["params"]["errmsg"] == "Only 4 OTP can be generated within 24 hours."
    clock.advance(31)
    body = envelope_error(api.generate(email), 400, "KEY_BLOCKED")
    assert body["params"]["errmsg"].startswith("This email is blocked. Try again after ")
    assert len(channel.codes_for(email)) == 4


def test_rule4_block_deletes_the_otp(api, channel, clock):
    email = unique_email()
    for _ in range(4):
        api.generate(email)
        clock.advance(31)
    code = channel.last_code(email)
    api.generate(email)
    assert api.verify(email, code).get_json()["params"]["err"] == "ERROR_INVALID_OTP"


def test_rule4_window_survives_use_and_expiry(api, channel, clock):
    email = unique_email()
    for _ in range(4):
        api.generate(email)
        api.verify(email, channel.last_code(email))
        clock.advance(700)
    envelope_error(api.generate(email), 400, "MAX_LIMIT_EXHAUSTED")


def test_rule4_window_is_fixed_from_the_first_send(make_app, channel, clock):
    api = _api(make_app(OTP_MAX_SENDS="2", OTP_SEND_WINDOW_SECONDS="3600", OTP_RESEND_COOLDOWN_SECONDS="0"))
    email = unique_email()
    api.generate(email)
    clock.advance(3000)
    api.generate(email)
    clock.advance(601)  # 3601 s after the first send: a new window, though the second send was 601 s ago
    assert api.generate(email).status_code == 200


def test_rule4_block_ends_after_the_block_seconds(make_app, channel, clock):
    api = _api(make_app(OTP_MAX_SENDS="1", OTP_BLOCK_SECONDS="600", OTP_SEND_WINDOW_SECONDS="300"))
    email = unique_email()
    api.generate(email)
    clock.advance(31)
    envelope_error(api.generate(email), 400, "MAX_LIMIT_EXHAUSTED")
    clock.advance(599)
    envelope_error(api.generate(email), 400, "KEY_BLOCKED")
    clock.advance(2)
    assert api.generate(email).status_code == 200


def test_rule3_a_block_holds_across_app_instances_on_one_store(make_app, make_store, channel, clock):
    """A block set by one process is found by another, whose lockout cache has never seen it."""
    first = _api(make_app(OTP_MAX_SENDS="1"))
    second = _api(make_app(OTP_MAX_SENDS="1"))
    email = unique_email()
    first.generate(email)
    clock.advance(31)
    envelope_error(first.generate(email), 400, "MAX_LIMIT_EXHAUSTED")
    envelope_error(second.generate(email), 400, "KEY_BLOCKED")


def test_rule3_the_lockout_cache_answers_without_the_table(make_app, channel, clock):
    app = make_app(OTP_MAX_SENDS="1")
    api = _api(app)
    email = unique_email()
    api.generate(email)
    clock.advance(31)
    api.generate(email)
    service = app.extensions["otp_service"]
    assert len(service.lockout) == 1
    store = service.store
    for read in ("get_block", "get_otp_and_block", "get_otp"):  # the table is not asked: the cache answers
        setattr(store, read, _fail)
    try:
        envelope_error(api.generate(email), 400, "KEY_BLOCKED")
    finally:
        for read in ("get_block", "get_otp_and_block", "get_otp"):
            delattr(store, read)


def test_rule7_delivery_failure_is_502_and_the_send_still_counts(make_app, channel, clock):
    api = _api(make_app(OTP_MAX_SENDS="2"))
    email = unique_email()
    channel.failure = DeliveryError("recording", "provider refused", provider_code=30003)
    body = envelope_error(api.generate(email), 502, "DELIVERY_FAILED")
    assert body["responseCode"] == "SERVER_ERROR"
    assert body["params"]["errmsg"] == "The OTP could not be delivered. Please try again."
    channel.failure = None
    clock.advance(31)
    assert api.generate(email).status_code == 200
    clock.advance(31)
    envelope_error(api.generate(email), 400, "MAX_LIMIT_EXHAUSTED")


def test_other_top_level_keys_are_ignored(api, channel):
    email = unique_email()
    body = {"id": "api.otp.generate", "ver": "v1", "params": {"msgid": "abc-123"},
            "request": {"key": email, "type": "email", "extra": "ignored"}}
    response = api.client.post("/v1/otp/generate", json=body, headers=api.headers)
    assert response.status_code == 200 and response.get_json()["params"]["msgid"] == "abc-123"


def _api(app):
    from .support import Api

    return Api(app.test_client())


def _other(code: str) -> str:
    from .support import wrong_code

    return wrong_code(code)


def _fail(*args, **kwargs):
    raise AssertionError("the blocked-keys table was read although the lockout cache knew the block")
