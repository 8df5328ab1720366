"""The OpenAPI document at GET /v1/otp/openapi.json: a valid OpenAPI 3 document that says what the app does.

Kept true three ways: its routes and error codes are compared with the app's own tables; answers of every kind,
produced on purpose, are validated against it; and schemathesis sends a few thousand generated requests (valid
and invalid, within and outside the schema) through the app in-process, checking each answer against the
document: never a 5xx, always the envelope, always a documented status, headers and body.
"""
from __future__ import annotations

import json

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from openapi_spec_validator import validate
from schemathesis.openapi.checks import JsonSchemaError

from otp_service.adapters.notifications import DeliveryError
from otp_service.domain import sunbird_codes
from otp_service.domain.contacts import ContactType
from otp_service.entrypoints.app import create_app
from otp_service.entrypoints.envelope import STATUS_OF
from otp_service.entrypoints.openapi import (
    GENERATE_ERRORS,
    HEALTH_ERRORS,
    V2_GENERATE_ERRORS,
    V2_VERIFY_ERRORS,
    VERIFY_ERRORS,
    document,
)

from .conftest import ENCRYPTION_KEY
from .support import AUTH, Api, RecordingChannel, settings_for, unique_email, unique_phone, wrong_code
from .test_metrics import DownStore

OPERATIONS = {("/v1/otp/generate", "POST"): GENERATE_ERRORS, ("/v1/otp/verify", "POST"): VERIFY_ERRORS,
              ("/health", "GET"): HEALTH_ERRORS}
V2_OPERATIONS = {("/v2/otp/generate", "POST"): (V2_GENERATE_ERRORS, GENERATE_ERRORS, sunbird_codes.GENERATE),
                 ("/v2/otp/verify", "POST"): (V2_VERIFY_ERRORS, VERIFY_ERRORS, sunbird_codes.VERIFY)}
V2_CODES = sunbird_codes.all_codes()
OPERATOR_ROUTES = {"/metrics", "/v1/otp/openapi.json"}
ENVELOPE_KEYS = ["id", "ver", "ts", "params", "responseCode", "result"]
EXAMPLES_PER_OPERATION = 600  # about 3,000 requests over the five operations, about a minute


@pytest.fixture
def store_kind() -> str:
    """The document does not depend on the store: these tests run on SQLite only."""
    return "sqlite"


# -- the document and the app's tables ---------------------------------------------------------------------------------
def test_the_document_is_served_without_a_key_and_is_valid_openapi_3(api):
    response = api.client.get("/v1/otp/openapi.json")  # no Authorization header
    assert response.status_code == 200 and response.mimetype == "application/json"
    served = response.get_json()
    assert served == document()
    assert served["openapi"].startswith("3.")
    validate(served)


def test_its_routes_are_the_apps_routes(app):
    documented = {(path, method.upper()) for path, item in document()["paths"].items() for method in item}
    served = {
        (rule.rule, method)
        for rule in app.url_map.iter_rules()
        if rule.rule not in OPERATOR_ROUTES
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    assert documented == served == set(OPERATIONS) | set(V2_OPERATIONS)


def test_its_error_codes_are_the_contracts(app):
    spec = document()
    assert spec["components"]["schemas"]["ErrorCode"]["enum"] == list(STATUS_OF)
    for (path, method), errors in OPERATIONS.items():
        responses = spec["paths"][path][method.lower()]["responses"]
        assert set(responses) == {"200"} | {str(status) for status in errors}
        for status, codes in errors.items():
            for code in codes:
                # A code's documented status is the contract's (INVALID_REQUEST and SERVER_ERROR have several).
                assert STATUS_OF[code] == status or code in ("INVALID_REQUEST", "SERVER_ERROR"), (code, status)
    used = {code for errors in OPERATIONS.values() for codes in errors.values() for code in codes}
    assert used == set(STATUS_OF)  # every code of the contract is answered by some route


def test_the_v2_routes_document_userorgs_codes_for_each_of_the_v1_codes():
    spec = document()
    for (path, method), (v2_errors, v1_errors, operation) in V2_OPERATIONS.items():
        responses = spec["paths"][path][method.lower()]["responses"]
        assert set(responses) == {"200"} | {str(status) for status in v2_errors}
        documented = {(status, code) for status, codes in v2_errors.items() for code in codes}
        for status, codes in v1_errors.items():
            for code in codes:
                shown, v2_status = sunbird_codes.v2_code(code, operation)
                if status == 405:  # answered by routing, before the version is known
                    shown, v2_status = code, None
                assert (v2_status or status, shown) in documented, (code, status)
        assert (400, sunbird_codes.compose(sunbird_codes.INVALID_REQUESTED_DATA, operation)) in documented
    assert (400, "UOS_OTPCRT0023") in {(s, c) for s, cs in V2_GENERATE_ERRORS.items() for c in cs}
    assert {c for errors, _, _ in V2_OPERATIONS.values() for cs in errors.values() for c in cs} - {
        "INVALID_REQUEST"} <= set(V2_CODES)


# -- answers of every kind, made on purpose, match the document --------------------------------------------------------
@pytest.fixture
def schema(app):
    return schemathesis.openapi.from_wsgi("/v1/otp/openapi.json", app)


def conforms(schema, path: str, method: str, response) -> None:
    assert str(response.status_code) in document()["paths"][path][method.lower()]["responses"], response.status_code
    schema[path][method].validate_response(response)  # raises on any mismatch
    assert list(response.get_json()) == ENVELOPE_KEYS


def test_the_validation_is_not_vacuous(schema, api):
    response = api.client.get("/health")
    body = response.get_json()
    body["result"]["healthy"] = "yes"
    response.set_data(json.dumps(body))
    with pytest.raises(JsonSchemaError, match='"yes" is not of type "boolean"'):
        schema["/health"]["GET"].validate_response(response)


def test_answers_of_every_kind_match_the_document(schema, make_app, channel, clock):
    app = make_app(OTP_MAX_SENDS="2", OTP_RESEND_COOLDOWN_SECONDS="30")
    api = Api(app.test_client())
    schema = schemathesis.openapi.from_wsgi("/v1/otp/openapi.json", app)
    gen, ver = ("/v1/otp/generate", "POST"), ("/v1/otp/verify", "POST")
    email, phone = unique_email(), unique_phone()

    answers = [
        (gen, api.generate(email)),  # 200
        (gen, api.generate(phone, type_="phone", templateId="otp")),  # 200
        (gen, api.generate(email)),  # 429, Retry-After
        (gen, api.generate("nope")),  # INVALID_EMAIL
        (gen, api.generate(email, templateId="unknown")),  # INVALID_VALUE
        (gen, api.client.post("/v1/otp/generate", json={"request": {"type": "email"}}, headers=AUTH)),  # MANDATORY
        (gen, api.client.post("/v1/otp/generate", data="{not json", headers={**AUTH, "Content-Type":
                                                                              "application/json"})),  # 400
        (gen, api.client.post("/v1/otp/generate", data="key=1", headers=AUTH)),  # 415
        (gen, api.client.post("/v1/otp/generate", json={"request": {"key": "x" * 20000}}, headers=AUTH)),  # 413
        (gen, api.client.post("/v1/otp/generate", json={"request": {}})),  # 401
        (gen, api.client.put("/v1/otp/generate", headers=AUTH)),  # 405, Allow
        (ver, api.verify(email, wrong_code(channel.last_code(email)))),  # OTP_VERIFICATION_FAILED with result
        (ver, api.verify(email, channel.last_code(email))),  # 200
        (ver, api.verify(email, channel.last_code(email))),  # ERROR_INVALID_OTP
        (ver, api.verify(email, "12ab")),  # INVALID_VALUE
        (("/health", "GET"), api.client.get("/health")),
        (("/health", "GET"), api.client.post("/health")),  # 405
    ]
    v2gen, v2ver = ("/v2/otp/generate", "POST"), ("/v2/otp/verify", "POST")
    phone2 = unique_phone()

    def v2(route, request):
        return route, api.client.post(route[0], json={"request": request}, headers=AUTH)

    answers += [
        v2(v2gen, {"key": phone2, "type": "phone", "templateId": "wardLoginOTP"}),  # 200
        v2(v2gen, {"key": phone2, "type": "phone"}),  # UOS_OTPCRT0059, 429 (cool-down)
        v2(v2gen, {"key": "nope", "type": "email"}),  # UOS_OTPCRT0009
        v2(v2gen, {"key": unique_email(), "type": "email", "templateId": "unknown"}),  # UOS_OTPCRT0023
        v2(v2gen, {"type": "recoveryEmail"}),  # UOS_OTPCRT0030 (userId)
        (v2gen, api.client.post("/v2/otp/generate", json={"request": {}})),  # UOS_0070, 401
        (v2gen, api.client.put("/v2/otp/generate", headers=AUTH)),  # 405, routing's INVALID_REQUEST
        v2(v2ver, {"key": phone2, "type": "phone", "otp": wrong_code(channel.last_code("+91" + phone2))}),  # 0063
        v2(v2ver, {"key": phone2, "type": "phone", "otp": channel.last_code("+91" + phone2)}),  # 200
        v2(v2ver, {"key": phone2, "type": "phone", "otp": channel.last_code("+91" + phone2)}),  # 0057
    ]
    clock.advance(31)
    answers.append((gen, api.generate(email)))  # the 2nd send
    clock.advance(31)
    answers.append((gen, api.generate(email)))  # MAX_LIMIT_EXHAUSTED
    answers.append((gen, api.generate(email)))  # KEY_BLOCKED
    channel.failure = DeliveryError("recording", "down", provider_code=1)
    answers.append((gen, api.generate(unique_email())))  # 502

    down = make_app(store=DownStore())
    down_api = Api(down.test_client())
    down_schema = schemathesis.openapi.from_wsgi("/v1/otp/openapi.json", down)
    down_answers = [(gen, down_api.generate(unique_email())), (("/health", "GET"), down_api.client.get("/health"))]
    for route, response in down_answers:
        assert response.status_code == 503
        conforms(down_schema, *route, response)

    for route, response in [(v2gen, down_api.client.post("/v2/otp/generate", json={"request": {
            "key": unique_email(), "type": "email"}}, headers=AUTH))]:
        assert response.status_code == 503 and response.get_json()["params"]["err"] == "UOS_0069"
        conforms(down_schema, *route, response)

    seen = set()
    for (path, method), response in answers:
        conforms(schema, path, method, response)
        seen.add((path, response.status_code, response.get_json()["params"]["err"]))
    assert {err for path, _, err in seen if path.startswith("/v2/")} >= {
        "", "UOS_OTPCRT0059", "UOS_OTPCRT0009", "UOS_OTPCRT0023", "UOS_OTPCRT0030", "UOS_0070", "INVALID_REQUEST",
        "UOS_OTPVERFY0063", "UOS_OTPVERFY0057"}
    assert {status for _, status, _ in seen} == {200, 400, 401, 405, 413, 415, 429, 502}
    assert {err for _, _, err in seen} >= {"", "ERROR_RATE_LIMIT_EXCEEDED", "INVALID_EMAIL", "INVALID_VALUE",
                                           "MANDATORY_PARAMETER_MISSING", "INVALID_REQUEST", "UNAUTHORIZED",
                                           "OTP_VERIFICATION_FAILED", "ERROR_INVALID_OTP", "MAX_LIMIT_EXHAUSTED",
                                           "KEY_BLOCKED", "DELIVERY_FAILED"}


# -- thousands of generated requests -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fuzzed_app(tmp_path_factory):
    channel = RecordingChannel()
    app = create_app(
        settings_for({
            "OTP_SQLITE_PATH": str(tmp_path_factory.mktemp("fuzz") / "otp.db"),
            "OTP_ENCRYPTION_KEYS": ENCRYPTION_KEY,
            "OTP_LOG_LEVEL": "warning",  # thousands of request lines would only fill the capture
        }),
        channels={ContactType.EMAIL: channel, ContactType.PHONE: channel},
    )
    return app


@pytest.fixture(scope="module")
def fuzzed_schema(fuzzed_app):
    return schemathesis.openapi.from_wsgi("/v1/otp/openapi.json", fuzzed_app)


@pytest.mark.slow
@pytest.mark.parametrize("path,method", sorted({*OPERATIONS, *V2_OPERATIONS}))
def test_generated_requests_never_get_a_5xx_and_always_get_the_envelope(fuzzed_schema, path, method):
    """Hypothesis drives schemathesis' strategy for each operation directly (not through schemathesis' pytest
    plugin, which follows pytest's internals), so the run and its count are one test that cannot be skipped."""
    sent = 0

    @settings(max_examples=EXAMPLES_PER_OPERATION, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=fuzzed_schema[path][method].as_strategy())
    def check(case):
        nonlocal sent
        # A schema-valid request can still be turned down (an email's syntax, a send window, a cool-down cannot be
        # said in JSON Schema), so "valid data must be accepted" is the one check left out.
        response = case.call_and_validate(
            headers=AUTH, excluded_checks=[schemathesis.checks.positive_data_acceptance]
        )
        sent += 1
        assert response.status_code < 500
        assert response.headers["content-type"] == ["application/json"], (response.status_code, response.content[:300])
        body = response.json()
        assert list(body) == ENVELOPE_KEYS
        assert body["params"]["err"] in (("", *V2_CODES, "INVALID_REQUEST") if path.startswith("/v2/")
                                         else ("", *STATUS_OF))

    check()
    print(f"generated requests for {method} {path}: {sent}")
    assert sent >= 200  # hypothesis stops early only when it has exhausted the inputs, which it cannot here
