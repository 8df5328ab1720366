"""The six identifier types of userorg-service's OTP validator, on v1 and v2, with the user service stood in.

`email` and `phone` keep SPEC rule 2; `prevUsedEmail`, `prevUsedPhone`, `recoveryEmail` and `recoveryPhone` need a
`userId`, and the destination is that field of the user record: the key may be left out, and if given must be that
field's value once normalised. The OTP row is the email's or the phone's, so verify accepts either spelling.
"""
from __future__ import annotations

import pytest

from .test_api_user_directory import AUTH, make_client, outbox, users  # noqa: F401  (fixtures)

CODES = {  # (v1 err, v2 err) of each refusal below
    "no userId": ("MANDATORY_PARAMETER_MISSING", "UOS_OTPCRT0030"),
    "unknown user": ("RESOURCE_NOT_FOUND", "UOS_OTPCRT0013"),
    "no such field": ("INVALID_VALUE", "UOS_OTPCRT0028"),
    "not the field": ("INVALID_VALUE", "UOS_OTPCRT0018"),
    "key needed": ("MANDATORY_PARAMETER_MISSING", "UOS_OTPCRT0030"),
}


@pytest.fixture(params=["v1", "v2"])
def version(request) -> str:
    return request.param


@pytest.fixture
def client(make_client, users):  # noqa: F811
    return make_client(users.base_url)


def generate(client, version, type_, key=None, **extra):
    request = {"type": type_, **extra} if key is None else {"key": key, "type": type_, **extra}
    return client.post(f"/{version}/otp/generate", json={"request": request}, headers=AUTH)


def verify(client, version, type_, otp, key=None, **extra):
    request = {"type": type_, "otp": otp, **extra}
    if key is not None:
        request["key"] = key
    return client.post(f"/{version}/otp/verify", json={"request": request}, headers=AUTH)


def refused(response, version: str, why: str, status: int = 400) -> dict:
    v1_err, v2_err = CODES[why]
    body = response.get_json()
    assert response.status_code == status, body
    assert body["params"]["err"] == (v1_err if version == "v1" else v2_err), body["params"]
    return body


def a_user(users, **record) -> str:  # noqa: F811
    return users.add_user(
        email="now@example.com", phone="9876543210", countryCode="+91",
        prevUsedEmail="Before@Example.com", prevUsedPhone="9812345678",
        recoveryEmail="rescue@example.org", recoveryPhone="+44 7911 123456", **record,
    )


USER_FIELDS = [
    ("prevUsedEmail", "before@example.com"),
    ("prevUsedPhone", "+919812345678"),
    ("recoveryEmail", "rescue@example.org"),
    ("recoveryPhone", "+447911123456"),
]


@pytest.mark.parametrize("type_, destination", USER_FIELDS)
def test_a_user_field_type_sends_to_that_field_when_the_key_is_left_out(client, users, outbox, version,
                                                                         type_, destination):
    user_id = a_user(users)
    response = generate(client, version, type_, userId=user_id)
    assert response.status_code == 200, response.get_json()
    assert outbox.keys() == [destination]
    assert outbox.sent[0].contact.type.value == ("email" if type_.endswith("Email") else "phone")


@pytest.mark.parametrize("type_, destination", USER_FIELDS)
def test_a_given_key_must_be_that_field_once_normalised(client, users, outbox, version, type_, destination):
    user_id = a_user(users)
    spelled = {"before@example.com": " BEFORE@example.com ", "+919812345678": "98123 45678",
               "rescue@example.org": "Rescue@Example.org", "+447911123456": "+44 (0)7911 123456"}[destination]
    assert generate(client, version, type_, spelled, userId=user_id).status_code == 200
    # The user's other contacts are not this field: each is refused, and nothing is sent.
    other = "now@example.com" if type_.endswith("Email") else "9876543210"
    body = refused(generate(client, version, type_, other, userId=user_id), version, "not the field")
    assert other not in str(body)  # shown masked only
    assert outbox.keys() == [destination]


@pytest.mark.parametrize("type_", [t for t, _ in USER_FIELDS])
def test_a_user_field_type_needs_a_user_id(client, users, outbox, version, type_):
    body = refused(generate(client, version, type_, "someone@example.com"), version, "no userId")
    assert body["params"]["errmsg"] == "Mandatory parameter userId is missing."
    refused(generate(client, version, type_), version, "no userId")
    assert outbox.sent == [] and users.received() == []


def test_an_unknown_user_is_not_found(client, users, outbox, version):
    refused(generate(client, version, "recoveryEmail", userId="no-such-user"), version, "unknown user", 404)
    assert outbox.sent == []


def test_a_field_the_user_record_leaves_empty_is_invalid_requested_data(client, users, outbox, version):
    user_id = users.add_user(email="now@example.com")  # recoveryEmail null, prevUsedEmail "": userorg's shape
    for type_, key in (("recoveryEmail", "now@example.com"), ("prevUsedEmail", "now@example.com"),
                       ("recoveryPhone", "9876543210")):
        refused(generate(client, version, type_, userId=user_id), version, "no such field")
        refused(generate(client, version, type_, key, userId=user_id), version, "no such field")
    assert outbox.sent == []


def test_several_previously_used_values_need_the_key_to_say_which(client, users, outbox, version):
    user_id = users.add_user(email="now@example.com", prevUsedEmail=["one@example.com", "two@example.com"])
    refused(generate(client, version, "prevUsedEmail", userId=user_id), version, "key needed")
    assert generate(client, version, "prevUsedEmail", "two@example.com", userId=user_id).status_code == 200
    assert outbox.keys() == ["two@example.com"]


def test_email_and_phone_keep_rule_2_and_do_not_reach_recovery_contacts(client, users, outbox, version):
    user_id = a_user(users)
    assert generate(client, version, "email", "before@example.com", userId=user_id).status_code == 200
    refused(generate(client, version, "email", "rescue@example.org", userId=user_id), version, "not the field")
    missing = generate(client, version, "email", userId=user_id)  # email/phone always need the key
    refused(missing, version, "key needed")


def test_the_type_is_case_insensitive_like_email_and_phone(client, users, outbox, version):
    user_id = a_user(users)
    assert generate(client, version, " RecoveryEmail ", userId=user_id).status_code == 200
    assert outbox.keys() == ["rescue@example.org"]


# -- verify -----------------------------------------------------------------------------------------------------------
def test_verify_reads_the_same_field_and_accepts_either_spelling_of_the_type(client, users, outbox, version):
    user_id = a_user(users)
    assert generate(client, version, "recoveryEmail", userId=user_id).status_code == 200
    assert generate(client, version, "prevUsedPhone", userId=user_id).status_code == 200
    recovery_code = outbox.last_code("rescue@example.org")
    phone_code = outbox.last_code("+919812345678")

    # Sunbird's spelling, key left out: the field is read again.
    assert verify(client, version, "recoveryEmail", recovery_code, userId=user_id).status_code == 200
    # The row is the phone's: `phone` with the number (one of the user's, so rule 2 holds) verifies it.
    assert verify(client, version, "phone", phone_code, "+91 98123 45678", userId=user_id).status_code == 200


def test_verify_with_the_plain_type_and_no_user_id_finds_a_recovery_code(client, users, outbox, version):
    user_id = a_user(users)
    assert generate(client, version, "recoveryPhone", userId=user_id).status_code == 200
    code = outbox.last_code("+447911123456")
    # Not a user's current contact, so not "in use": the plain spelling of the same row verifies.
    assert verify(client, version, "phone", code, "+447911123456").status_code == 200


def test_verify_refuses_a_key_that_is_not_the_field(client, users, outbox, version):
    user_id = a_user(users)
    assert generate(client, version, "recoveryEmail", userId=user_id).status_code == 200
    code = outbox.last_code("rescue@example.org")
    response = verify(client, version, "recoveryEmail", code, "now@example.com", userId=user_id)
    assert response.status_code == 400
    assert response.get_json()["params"]["err"] == ("INVALID_VALUE" if version == "v1" else "UOS_OTPVERFY0018")
    assert verify(client, version, "recoveryEmail", code, userId=user_id).status_code == 200  # cost nothing


# -- no user directory ------------------------------------------------------------------------------------------------
def test_without_a_user_directory_a_user_field_type_needs_its_key(make_client, outbox, version):  # noqa: F811
    client = make_client(None)
    refused(generate(client, version, "recoveryEmail", userId="u-1"), version, "key needed")
    assert generate(client, version, "recoveryEmail", "Rescue@Example.org", userId="u-1").status_code == 200
    assert outbox.keys() == ["rescue@example.org"]


# -- the user directory's other answers on v2 -------------------------------------------------------------------------
def test_v2_a_key_in_use_is_userorgs_duplicate_entry_on_generate_and_verify(client, users, outbox):
    assert generate(client, "v2", "email", "late@example.com").status_code == 200
    code = outbox.last_code("late@example.com")
    users.add_user(email="late@example.com")  # someone signed up with the key in between

    taken = generate(client, "v2", "email", "late@example.com")
    assert (taken.status_code, taken.get_json()["params"]["err"]) == (400, "UOS_OTPCRT0004")
    refused_verify = verify(client, "v2", "email", code, "late@example.com")
    assert (refused_verify.status_code, refused_verify.get_json()["params"]["err"]) == (400, "UOS_OTPVERFY0004")


def test_v2_the_user_service_down_is_userorgs_server_error(client, users, outbox):
    user_id = a_user(users)
    users.mode = "down"
    response = generate(client, "v2", "recoveryEmail", userId=user_id)
    assert (response.status_code, response.get_json()["params"]["err"]) == (503, "UOS_0069")
    assert outbox.sent == []
