"""Authorization: Bearer <api key>, configured as SHA-256 digests; /health needs no key."""
from __future__ import annotations

import hashlib

import pytest

from otp_service.config import ConfigError

from .support import Api, settings_for, unique_email


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic abc"},
                                     {"Authorization": "Bearer"}, {"Authorization": ""}])
def test_missing_or_wrong_key_is_401(api, headers):
    for call in (lambda: Api(api.client, headers).generate(unique_email()),
                 lambda: Api(api.client, headers).verify(unique_email(), "123456")):
        response = call()
        body = response.get_json()
        assert response.status_code == 401
        assert body["params"]["err"] == "UNAUTHORIZED" and body["responseCode"] == "UNAUTHORIZED"
        assert body["params"]["errmsg"] == "Invalid or missing API key."


def test_unauthorized_requests_are_not_validated_or_counted(api, channel):
    email = unique_email()
    response = Api(api.client, {}).generate(email, type_="bogus")
    assert response.status_code == 401
    assert not channel.codes_for(email)


def test_any_configured_key_is_accepted(make_app, channel):
    digests = ",".join(hashlib.sha256(k.encode()).hexdigest() for k in ("first-key", "second-key"))
    app = make_app(OTP_API_KEYS=digests)
    for key in ("first-key", "second-key"):
        assert Api(app.test_client(), {"Authorization": f"Bearer {key}"}).generate(unique_email()).status_code == 200


def test_health_needs_no_key(api):
    assert api.client.get("/health").status_code == 200


def test_keys_must_be_configured_as_sha256_digests():
    with pytest.raises(ConfigError, match="OTP_API_KEYS"):
        settings_for({"OTP_API_KEYS": "plain-text-key"})
