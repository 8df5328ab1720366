"""The envelope on every answer, and bad input of every kind: a clear 4xx, never a 500 or a stack trace."""
from __future__ import annotations

import re
import uuid

import pytest

from .support import AUTH, unique_email

TS = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}:\d{3}\+0000$")


def assert_envelope(response, status, err="", response_code=None):
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert list(body) == ["id", "ver", "ts", "params", "responseCode", "result"]
    assert TS.match(body["ts"])
    params = body["params"]
    assert set(params) == {"resmsgid", "msgid", "err", "status", "errmsg"}
    uuid.UUID(params["resmsgid"])
    assert params["err"] == err
    assert params["status"] == (err or "success")
    assert bool(params["errmsg"]) == bool(err)
    if response_code:
        assert body["responseCode"] == response_code
    assert "Traceback" not in response.get_data(as_text=True)
    return body


def test_msgid_comes_from_the_x_request_id_header_and_is_echoed(api):
    response = api.client.post("/v1/otp/generate", json={"request": {"key": unique_email(), "type": "email"}},
                               headers={**AUTH, "X-Request-ID": "gw-42"})
    body = assert_envelope(response, 200)
    assert body["params"]["msgid"] == "gw-42" and response.headers["X-Request-ID"] == "gw-42"


def test_msgid_falls_back_to_params_msgid_then_a_new_uuid(api):
    body = {"params": {"msgid": "from-body"}, "request": {"key": unique_email(), "type": "email"}}
    response = api.client.post("/v1/otp/generate", json=body, headers=AUTH)
    assert assert_envelope(response, 200)["params"]["msgid"] == "from-body"
    response = api.client.post("/v1/otp/generate", json={"request": {"key": unique_email(), "type": "email"}},
                               headers=AUTH)
    uuid.UUID(assert_envelope(response, 200)["params"]["msgid"])


def test_an_unsafe_request_id_is_replaced_not_echoed(api):
    response = api.client.get("/health", headers={"X-Request-ID": "bad id <script>"})
    msgid = assert_envelope(response, 200)["params"]["msgid"]
    uuid.UUID(msgid)


@pytest.mark.parametrize("with_key", [True, False])
def test_unknown_route_is_404_in_the_envelope_with_or_without_a_key(api, with_key):
    response = api.client.get("/v1/otp/nothing-here", headers=AUTH if with_key else {})
    body = assert_envelope(response, 404, "RESOURCE_NOT_FOUND", "RESOURCE_NOT_FOUND")
    assert body["params"]["errmsg"] == "Requested v1/otp/nothing-here resource not found."


@pytest.mark.parametrize("with_key", [True, False])
@pytest.mark.parametrize("method,path", [("GET", "/v1/otp/generate"), ("PUT", "/v1/otp/verify"),
                                         ("DELETE", "/health")])
def test_wrong_method_is_405_in_the_envelope(api, with_key, method, path):
    response = api.client.open(path, method=method, headers=AUTH if with_key else {})
    assert_envelope(response, 405, "INVALID_REQUEST", "CLIENT_ERROR")


def test_malformed_json_is_invalid_request(api):
    response = api.client.post("/v1/otp/generate", data="{not json", headers={**AUTH, "Content-Type":
                                                                              "application/json"})
    assert_envelope(response, 400, "INVALID_REQUEST", "CLIENT_ERROR")


def test_not_json_is_415(api):
    response = api.client.post("/v1/otp/generate", data="key=a@b.com", headers={
        **AUTH, "Content-Type": "application/x-www-form-urlencoded"})
    assert_envelope(response, 415, "INVALID_REQUEST")


def test_body_over_16_kib_is_413(api):
    padding = "x" * (16 * 1024)
    response = api.client.post("/v1/otp/generate", json={"request": {"key": unique_email(), "type": "email",
                                                                      "pad": padding}}, headers=AUTH)
    assert_envelope(response, 413, "INVALID_REQUEST")


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8",
                                          "Application/JSON", "application/vnd.sunbird+json"])
def test_every_spelling_of_a_json_body_is_read(api, content_type):
    """The exact `application/json` is read straight from the WSGI input; every other JSON type through werkzeug.
    Both must take the same body."""
    body = b'{"request": {"key": "%s", "type": "email"}, "params": {"msgid": "m-1"}}' % unique_email().encode()
    response = api.client.post("/v1/otp/generate", data=body, headers={**AUTH, "Content-Type": content_type})
    assert assert_envelope(response, 200)["params"]["msgid"] == "m-1"


@pytest.mark.parametrize("data", [b"{not json", b'{"request": {"key": "a@b.co"', b"\xff\xfe{}", b""])
@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8"])
def test_a_body_that_does_not_parse_is_invalid_request_either_way(api, data, content_type):
    response = api.client.post("/v1/otp/generate", data=data, headers={**AUTH, "Content-Type": content_type})
    body = assert_envelope(response, 400, "INVALID_REQUEST", "CLIENT_ERROR")
    assert body["params"]["errmsg"] == "Request body is not valid JSON."


@pytest.mark.parametrize("data", [
    pytest.param(b"[" * 5000 + b"]" * 5000, id="5000-arrays"),
    pytest.param(b'{"request":' * 1200 + b"{}" + b"}" * 1200, id="1200-objects"),
    pytest.param(b'{"request": {"key": ' + b"[" * 2000 + b"]" * 2000 + b', "type": "phone"}}', id="deep-key"),
])
@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8"])
def test_a_body_nested_too_deep_is_invalid_request_not_a_500(api, data, content_type):
    """The standard json module raises RecursionError on these (a 500); the body parser refuses them as JSON."""
    response = api.client.post("/v1/otp/generate", data=data, headers={**AUTH, "Content-Type": content_type})
    body = assert_envelope(response, 400, "INVALID_REQUEST", "CLIENT_ERROR")
    assert body["params"]["errmsg"] == "Request body is not valid JSON."


def test_a_deeply_nested_value_that_parses_is_the_fields_error(api):
    """Nesting within the parser's limit parses; the field then is not a phone number, and says so."""
    data = b'{"request": {"key": ' + b"[" * 900 + b"]" * 900 + b', "type": "phone"}}'
    response = api.client.post("/v1/otp/generate", data=data, headers={**AUTH, "Content-Type": "application/json"})
    assert_envelope(response, 400, "INVALID_PHONE")


def test_a_body_with_no_length_is_not_read_blindly(api):
    """No Content-Length and no server that ends the stream (wsgi.input_terminated): werkzeug reads nothing, and
    the answer is a 400, not a worker stuck reading a socket."""
    body = b'{"request": {"key": "a@b.co", "type": "email"}}'
    response = api.client.post("/v1/otp/generate", data=body, headers={**AUTH, "Content-Type": "application/json"},
                               environ_overrides={"CONTENT_LENGTH": ""})
    assert assert_envelope(response, 400, "INVALID_REQUEST")["params"]["errmsg"] == "Request body is not valid JSON."


@pytest.mark.parametrize("length", ["\u00b2", "+47", "4 7", "-1", "0x2f", pytest.param("9" * 5000, id="5000-digits")])
def test_a_content_length_that_is_not_plain_digits_is_a_4xx_not_a_500(api, length):
    response = api.client.post("/v1/otp/generate", data=b'{"request": {"key": "a@b.co", "type": "email"}}',
                               headers={**AUTH, "Content-Type": "application/json"},
                               environ_overrides={"CONTENT_LENGTH": length})
    assert 400 <= response.status_code < 500
    assert_envelope(response, response.status_code, "INVALID_REQUEST")


def test_a_declared_length_over_16_kib_is_413_without_reading_the_body(api):
    response = api.client.post("/v1/otp/generate", data=b"{}", headers={**AUTH, "Content-Type": "application/json"},
                               environ_overrides={"CONTENT_LENGTH": str(16 * 1024 + 1)})
    assert_envelope(response, 413, "INVALID_REQUEST")


@pytest.mark.parametrize("body", [[], "text", 5, None, {"request": "x"}, {"request": []}, {"other": {}},
                                  {"request": None}])
def test_wrong_body_shapes_are_4xx(api, body):
    response = api.client.post("/v1/otp/generate", json=body, headers=AUTH)
    assert 400 <= response.status_code < 500
    assert_envelope(response, response.status_code, response.get_json()["params"]["err"])


@pytest.mark.parametrize("field,value", [("userId", 5), ("userId", "x" * 500), ("templateId", ["a"]),
                                         ("type", None), ("type", 7), ("key", None)])
def test_wrong_field_types_are_4xx(api, field, value):
    body = {"key": unique_email(), "type": "email", field: value}
    response = api.client.post("/v1/otp/generate", json={"request": body}, headers=AUTH)
    assert 400 <= response.status_code < 500
    assert response.get_json()["params"]["err"] in (
        "INVALID_VALUE", "MANDATORY_PARAMETER_MISSING", "INVALID_EMAIL")


def test_an_unexpected_failure_is_a_500_envelope_without_a_trace(app, api):
    service = app.extensions["otp_service"]
    service.templates.check = lambda template_id: 1 / 0
    response = api.generate(unique_email())
    body = assert_envelope(response, 500, "SERVER_ERROR", "SERVER_ERROR")
    assert body["params"]["errmsg"] == "Process failed, please try again."
    assert "ZeroDivision" not in response.get_data(as_text=True)


def test_store_down_is_503(app, api):
    from otp_service.adapters.store import StoreUnavailable

    def down(*args):
        raise StoreUnavailable("unreachable")

    store = app.extensions["otp_service"].store
    for method in ("get_otp", "get_otp_and_block", "get_block", "insert_otp", "create_otp", "update_otp", "delete_otp",
                   "block_key"):
        setattr(store, method, down)
    assert_envelope(api.generate(unique_email()), 503, "SERVER_ERROR", "SERVER_ERROR")
    assert_envelope(api.verify(unique_email(), "123456"), 503, "SERVER_ERROR", "SERVER_ERROR")


def test_health_is_200_when_the_store_answers(api):
    body = assert_envelope(api.client.get("/health"), 200)
    assert body["id"] == "api.health"
    assert body["result"] == {"name": "otp-service", "healthy": True,
                              "checks": [{"name": "store", "healthy": True}]}


def test_health_is_503_when_the_store_does_not(app, api):
    from otp_service.adapters.store import StoreUnavailable

    def down():
        raise StoreUnavailable("unreachable")

    app.extensions["otp_service"].store.ping = down
    body = assert_envelope(api.client.get("/health"), 503, "SERVER_ERROR", "SERVER_ERROR")
    assert body["result"]["healthy"] is False and body["result"]["checks"][0]["healthy"] is False


def test_requests_get_a_read_only_session_and_no_cookie(api):
    """No sessions: every request sees the same empty NullSession, which refuses writes; no answer sets a cookie."""
    from flask import session
    from flask.sessions import NullSession

    app = api.client.application
    seen = []
    with app.test_request_context("/health"):
        app.preprocess_request()
        seen.append(session._get_current_object())
        assert isinstance(seen[0], NullSession) and dict(seen[0]) == {}
        with pytest.raises(RuntimeError):
            session["user"] = "someone"
    with app.test_request_context("/health"):
        seen.append(session._get_current_object())
    assert seen[0] is seen[1] and dict(seen[1]) == {}
    for response in (api.generate(unique_email()), api.client.get("/health"), api.client.get("/nowhere")):
        assert "Set-Cookie" not in response.headers


def test_the_apps_json_provider_keeps_flasks_types_and_options(api):
    """orjson does the work, but dates stay Flask's HTTP dates, dataclasses dicts, and `indent` (Flask's debug
    responses) goes to the standard module."""
    import dataclasses
    from datetime import datetime, timezone

    @dataclasses.dataclass
    class Point:
        x: int

    provider = api.client.application.json
    value = {"when": datetime(2026, 11, 22, 5, 0, tzinfo=timezone.utc), "point": Point(1), "name": "Zoë", "big": 2**70}
    assert provider.loads(provider.dumps(value)) == {
        "when": "Sun, 22 Nov 2026 05:00:00 GMT", "point": {"x": 1}, "name": "Zoë", "big": 2**70}
    assert provider.dumps({"a": 1}, indent=2) == '{\n  "a": 1\n}'


# -- issue 15: header-hostile msgids, no-store, errmsg echoes ---------------------------------------------------------

@pytest.mark.parametrize("msgid", ["abc\n", "abc\r\nX-Injected: 1", "m" * 129, "m" * 500, "abc def", "abcé", "", 42],
                         ids=["trailing-newline", "crlf", "129-chars", "500-chars", "space", "non-ascii", "empty",
                              "a-number"])
def test_a_header_hostile_params_msgid_is_matched_whole_and_replaced(api, msgid):
    body = {"params": {"msgid": msgid}, "request": {"key": unique_email(), "type": "email"}}
    response = api.client.post("/v1/otp/generate", json=body, headers=AUTH)
    answered = assert_envelope(response, 200)["params"]["msgid"]
    uuid.UUID(answered)
    assert response.headers["X-Request-ID"] == answered


def test_a_msgid_of_128_token_characters_is_still_echoed(api):
    msgid = "a.b:c-d_" * 16
    body = {"params": {"msgid": msgid}, "request": {"key": unique_email(), "type": "email"}}
    response = api.client.post("/v1/otp/generate", json=body, headers=AUTH)
    assert assert_envelope(response, 200)["params"]["msgid"] == msgid == response.headers["X-Request-ID"]


@pytest.mark.parametrize("call", [
    lambda c: c.post("/v1/otp/generate", json={"request": {"key": unique_email(), "type": "email"}}, headers=AUTH),
    lambda c: c.post("/v1/otp/verify", json={"request": {"key": unique_email(), "type": "email", "otp": "1"}},
                     headers=AUTH),
    lambda c: c.post("/v1/otp/generate", json={"request": {}}, headers=AUTH),
    lambda c: c.post("/v1/otp/generate", json={}),
    lambda c: c.get("/v1/otp/generate", headers=AUTH),
    lambda c: c.get("/nowhere"),
    lambda c: c.get("/health"),
], ids=["generate", "verify-invalid-otp", "missing-field", "unauthorized", "wrong-method", "unknown-route", "health"])
def test_every_api_answer_carries_cache_control_no_store(api, call):
    response = call(api.client)
    assert response.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize("field, value", [
    ("type", "<script>alert(1)</script>"), ("type", "fax'\"--"), ("type", "x" * 33), ("type", "tel\u00e9"),
    ("templateId", "<img src=x onerror=alert(1)>"), ("templateId", "welcome back"), ("templateId", "t" * 33),
    ("templateId", "a\nb"),
])
def test_errmsg_never_echoes_a_bad_type_or_template_id_beyond_a_short_plain_token(api, field, value):
    request = {"key": unique_email(), "type": "email", field: value}
    response = api.client.post("/v1/otp/generate", json={"request": request}, headers=AUTH)
    errmsg = assert_envelope(response, 400, "INVALID_VALUE")["params"]["errmsg"]
    assert errmsg.startswith(f"Invalid {field}: <invalid>. Valid values are: ")
    assert value not in errmsg


def test_errmsg_still_names_a_plain_bad_value(api):
    response = api.client.post("/v1/otp/generate", json={"request": {"key": unique_email(), "type": "fax"}},
                               headers=AUTH)
    assert assert_envelope(response, 400, "INVALID_VALUE")["params"]["errmsg"] == (
        "Invalid type: fax. Valid values are: email, phone, prevUsedEmail, prevUsedPhone, recoveryEmail, "
        "recoveryPhone.")


def test_a_404_echoes_the_path_only_when_it_is_short_plain_ascii(api):
    for path in ("/v1/otp/caf\u00e9", "/v1/otp/a@b.com", "/v1/" + "p" * 70):
        errmsg = assert_envelope(api.client.get(path), 404, "RESOURCE_NOT_FOUND")["params"]["errmsg"]
        assert errmsg == "Requested requested resource not found."
