"""/v2/otp/generate and /v2/otp/verify: the v1 behaviour, answered with userorg-service's v2 error codes, so that
Sunbird's own clients work unchanged (issue 20). One test per condition; the codes are userorg's
(`UOS_` + OTPCRT/OTPVERFY + its numeric key), the mapped ones (our conditions userorg lacks) as documented.
"""
from __future__ import annotations

import json
import logging

import pytest

from otp_service.adapters.notifications import DeliveryError
from otp_service.domain import sunbird_codes
from otp_service.entrypoints.envelope import STATUS_OF

from .support import AUTH, unique_email, unique_phone, wrong_code
from .test_metrics import DownStore


@pytest.fixture
def store_kind() -> str:
    """The answers' codes do not depend on the store (the rules are the same code on both): SQLite only."""
    return "sqlite"


class V2:
    """The gateway's two calls, on either version."""

    def __init__(self, client, version: str = "v2"):
        self.client = client
        self.version = version

    def generate(self, key=None, type_="email", headers=AUTH, **extra):
        request = {"type": type_, **extra} if key is None else {"key": key, "type": type_, **extra}
        return self.client.post(f"/{self.version}/otp/generate", json={"request": request}, headers=headers)

    def verify(self, key, otp, type_="email", **extra):
        request = {"type": type_, "otp": otp, **extra} if key is None else {"key": key, "type": type_, "otp": otp,
                                                                             **extra}
        return self.client.post(f"/{self.version}/otp/verify", json={"request": request}, headers=AUTH)


@pytest.fixture
def v2(app) -> V2:
    return V2(app.test_client())


def answered(response, status: int, err: str) -> dict:
    body = response.get_json()
    assert response.status_code == status, body
    assert body["params"]["err"] == err and body["params"]["status"] == err, body["params"]
    assert body["ver"] == "v2"
    assert body["params"]["errmsg"]
    return body


# -- the table ------------------------------------------------------------------------------------------------------
def test_every_code_of_the_contract_has_a_userorg_code():
    assert set(STATUS_OF) <= set(sunbird_codes.FOR_CONTRACT_CODE)


def test_codes_are_composed_as_userorg_composes_them():
    assert sunbird_codes.v2_code("MANDATORY_PARAMETER_MISSING", "OTPCRT") == ("UOS_OTPCRT0030", None)
    assert sunbird_codes.v2_code("ERROR_INVALID_OTP", "OTPVERFY") == ("UOS_OTPVERFY0057", None)
    assert sunbird_codes.v2_code("MAX_LIMIT_EXHAUSTED", "OTPCRT") == ("UOS_OTPCRT0059", 429)
    assert sunbird_codes.v2_code("UNAUTHORIZED", "OTPCRT") == ("UOS_0070", None)  # no operation code, as userorg
    assert sunbird_codes.v2_code("SERVER_ERROR", "OTPVERFY") == ("UOS_0069", None)
    assert sunbird_codes.v2_code("INVALID_VALUE", "OTPCRT", "0023") == ("UOS_OTPCRT0023", None)


# -- generate -------------------------------------------------------------------------------------------------------
def test_v2_generate_succeeds_in_the_same_envelope_with_ver_v2(v2, channel):
    email = unique_email()
    response = v2.generate(email)
    body = response.get_json()
    assert response.status_code == 200, body
    assert (body["id"], body["ver"], body["responseCode"]) == ("api.otp.generate", "v2", "OK")
    assert body["params"]["err"] == "" and body["result"] == {"response": "SUCCESS"}
    assert channel.codes_for(email)


@pytest.mark.parametrize(
    "request_, code",
    [
        ({"type": "email"}, "UOS_OTPCRT0030"),  # key missing
        ({"key": unique_email()}, "UOS_OTPCRT0030"),  # type missing
        ({"key": unique_email(), "type": "fax"}, "UOS_OTPCRT0018"),  # invalid value
        ({"key": "not-an-email", "type": "email"}, "UOS_OTPCRT0009"),  # invalid format
        ({"key": "12", "type": "phone"}, "UOS_OTPCRT0009"),
        ({"key": unique_email(), "type": "email", "templateId": "welcome"}, "UOS_OTPCRT0023"),  # 400, not 500
        ({"type": "recoveryEmail"}, "UOS_OTPCRT0030"),  # userId missing for a user-field type
    ],
)
def test_v2_generate_turns_bad_requests_down_with_userorgs_codes(v2, request_, code):
    response = v2.client.post("/v2/otp/generate", json={"request": request_}, headers=AUTH)
    body = answered(response, 400, code)
    assert body["responseCode"] == "CLIENT_ERROR"


def test_v2_keeps_the_contracts_messages(v2):
    body = answered(v2.generate(unique_email(), "fax"), 400, "UOS_OTPCRT0018")
    assert body["params"]["errmsg"] == (
        "Invalid type: fax. Valid values are: email, phone, prevUsedEmail, prevUsedPhone, recoveryEmail, recoveryPhone."
    )
    body = answered(v2.generate(None, "recoveryPhone"), 400, "UOS_OTPCRT0030")
    assert body["params"]["errmsg"] == "Mandatory parameter userId is missing."


def test_v2_body_problems_are_invalid_requested_data(v2):
    not_json = v2.client.post("/v2/otp/generate", data="{nope", headers={**AUTH, "Content-Type": "application/json"})
    answered(not_json, 400, "UOS_OTPCRT0028")
    form = v2.client.post("/v2/otp/generate", data="key=1", headers=AUTH)
    answered(form, 415, "UOS_OTPCRT0028")


def test_v2_a_missing_api_key_is_userorgs_unauthorized(v2):
    body = answered(v2.generate(unique_email(), headers={}), 401, "UOS_0070")
    assert body["responseCode"] == "UNAUTHORIZED"


def test_v2_a_resend_inside_the_cool_down_is_userorgs_rate_limit(make_app):
    v2 = V2(make_app(OTP_RESEND_COOLDOWN_SECONDS="30").test_client())
    email = unique_email()
    assert v2.generate(email).status_code == 200
    response = v2.generate(email)
    body = answered(response, 429, "UOS_OTPCRT0059")
    assert body["responseCode"] == "TOO_MANY_REQUESTS" and response.headers["Retry-After"]


def test_v2_the_send_window_and_a_block_are_userorgs_rate_limit_with_429(make_app, clock):
    """The two conditions userorg lacks answer the code Sunbird's mobile app shows its OTP limit message for."""
    v2 = V2(make_app(OTP_MAX_SENDS="1", OTP_RESEND_COOLDOWN_SECONDS="0").test_client())
    email = unique_email()
    assert v2.generate(email).status_code == 200
    exhausted = answered(v2.generate(email), 429, "UOS_OTPCRT0059")
    assert exhausted["params"]["errmsg"].startswith("Only 1 OTP can be generated")
    blocked = answered(v2.generate(email), 429, "UOS_OTPCRT0059")
    assert blocked["params"]["errmsg"].startswith("This email is blocked.")
    assert blocked["responseCode"] == "TOO_MANY_REQUESTS"


def test_the_same_conditions_on_v1_keep_the_contracts_codes(make_app):
    client = make_app(OTP_MAX_SENDS="1", OTP_RESEND_COOLDOWN_SECONDS="0").test_client()
    v1 = V2(client, "v1")
    email = unique_email()
    assert v1.generate(email).status_code == 200
    for err in ("MAX_LIMIT_EXHAUSTED", "KEY_BLOCKED"):
        response = v1.generate(email)
        assert (response.status_code, response.get_json()["params"]["err"]) == (400, err)
        assert response.get_json()["ver"] == "v1"


def test_v2_a_delivery_failure_is_userorgs_service_unavailable_still_502(v2, channel):
    channel.failure = DeliveryError("recording", "provider down", provider_code=1)
    answered(v2.generate(unique_email()), 502, "UOS_OTPCRT0064")


def test_v2_a_store_that_is_down_is_userorgs_server_error(make_app):
    v2 = V2(make_app(store=DownStore()).test_client())
    body = answered(v2.generate(unique_email()), 503, "UOS_0069")
    assert body["responseCode"] == "SERVER_ERROR"


# -- verify ---------------------------------------------------------------------------------------------------------
def test_v2_verify_codes_and_the_attempts_result(v2, channel):
    phone = unique_phone()
    assert v2.generate(phone, "phone").status_code == 200
    key = "+91" + phone
    code = channel.last_code(key)

    wrong = answered(v2.verify(phone, wrong_code(code), "phone"), 400, "UOS_OTPVERFY0063")
    assert wrong["result"] == {"maxAllowedAttempt": 3, "remainingAttempt": 2}
    assert wrong["params"]["errmsg"] == "OTP verification failed. Remaining attempt count is 2."
    right = v2.verify(phone, code, "phone")
    assert right.status_code == 200 and right.get_json()["ver"] == "v2"
    answered(v2.verify(phone, code, "phone"), 400, "UOS_OTPVERFY0057")  # used: no live OTP
    answered(v2.verify(phone, "12ab", "phone"), 400, "UOS_OTPVERFY0018")
    answered(v2.verify(phone, None, "phone"), 400, "UOS_OTPVERFY0030")


def test_v1_and_v2_share_the_codes_they_issue(app, channel):
    """One service behind both: a code sent through v1 verifies through v2, and the other way."""
    client = app.test_client()
    v1, v2 = V2(client, "v1"), V2(client)
    first, second = unique_email(), unique_email()
    assert v1.generate(first).status_code == 200 and v2.generate(second).status_code == 200
    assert v2.verify(first, channel.last_code(first)).status_code == 200
    assert v1.verify(second, channel.last_code(second)).status_code == 200


# -- logs and metrics -----------------------------------------------------------------------------------------------
def test_logs_and_metrics_count_the_contracts_code_on_v2(v2, caplog):
    with caplog.at_level(logging.INFO, logger="otp_service.http"):
        answered(v2.generate(unique_email(), "fax"), 400, "UOS_OTPCRT0018")
    [line] = [r for r in caplog.records if r.name == "otp_service.http"]
    assert (line.route, line.err) == ("/v2/otp/generate", "INVALID_VALUE")
    exposition = v2.client.get("/metrics").get_data(as_text=True)
    assert 'route="/v2/otp/generate"' in exposition and 'err="INVALID_VALUE"' in exposition
    assert "UOS_" not in exposition


def test_unknown_v2_routes_are_the_envelopes_404(v2):
    response = v2.client.post("/v2/otp/resend", json={}, headers=AUTH)
    assert response.status_code == 404
    assert json.loads(response.get_data())["params"]["err"] == "RESOURCE_NOT_FOUND"
