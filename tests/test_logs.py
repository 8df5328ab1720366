"""Logs: JSON lines, one object per line; one line per request with msgid, route, outcome and latency; keys
masked; codes never written."""
from __future__ import annotations

import json
import logging
from datetime import datetime, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from otp_service.entrypoints.logs import JsonFormatter, _iso_utc

from .support import AUTH, unique_email, unique_phone, wrong_code


def json_lines(stderr: str) -> list[dict]:
    """Every line the service wrote to standard error, each of which must be one JSON object."""
    lines = []
    for text in stderr.splitlines():
        if text.strip():
            line = json.loads(text)
            assert isinstance(line, dict), text
            lines.append(line)
    return lines


def test_a_full_run_logs_no_code_email_or_phone(api, channel, caplog, capsys, clock):
    caplog.set_level(logging.DEBUG)
    email, phone = unique_email(), "+91" + unique_phone()
    api.generate(email)
    api.generate(phone, type_="phone")
    api.verify(email, wrong_code(channel.last_code(email)))
    api.verify(email, channel.last_code(email))
    api.verify(phone, channel.last_code(phone), type_="phone")
    api.generate(email, templateId="nope")
    api.generate("not-an-email")
    api.verify(email, "12ab")
    captured = capsys.readouterr()
    text = caplog.text + captured.err + captured.out
    lines = json_lines(captured.err)
    requests = [line for line in lines if line["message"] == "request"]
    assert any(line["route"] == "/v1/otp/generate" for line in requests)
    for secret in (email, phone, phone[3:], email.split("@")[0], *channel.codes_for(email),
                   *channel.codes_for(phone)):
        assert secret not in text, f"{secret!r} appeared in the logs"
    keys = {line["key"] for line in requests}
    assert "u***@e***.com" in keys and f"+91{'*' * 8}{phone[-2:]}" in keys


def test_each_request_logs_one_line_with_msgid_route_outcome_and_latency(api, caplog, capsys):
    caplog.set_level(logging.INFO, logger="otp_service")
    capsys.readouterr()
    api.client.post("/v1/otp/generate", json={"request": {"key": unique_email(), "type": "email"}},
                    headers={**AUTH, "X-Request-ID": "trace-me-1"})
    lines = [line for line in json_lines(capsys.readouterr().err) if line["message"] == "request"]
    assert len(lines) == 1
    line = lines[0]
    assert line["msgid"] == "trace-me-1"
    assert line["route"] == "/v1/otp/generate" and line["method"] == "POST"
    assert line["status"] == 200 and line["err"] == "" and line["outcome"] == "sent"
    assert line["key"] == "u***@e***.com"
    assert isinstance(line["latency_ms"], float) and line["latency_ms"] >= 0
    assert {"ts", "level", "logger"} <= line.keys()
    # caplog sees the same record, its fields as attributes
    [record] = [r for r in caplog.records if r.getMessage() == "request"]
    assert record.msgid == "trace-me-1" and record.status == 200


def test_every_line_of_a_request_carries_its_msgid(api, caplog, capsys):
    from otp_service.adapters.notifications import DeliveryError

    caplog.set_level(logging.INFO, logger="otp_service")
    capsys.readouterr()
    channel = api.client.application.extensions["otp_service"].channels
    for ch in channel.values():
        ch.failure = DeliveryError("recording", "down", provider_code=20003)
    api.client.post("/v1/otp/generate", json={"request": {"key": unique_email(), "type": "email"}},
                    headers={**AUTH, "X-Request-ID": "trace-me-2"})
    mine = [line for line in json_lines(capsys.readouterr().err) if line["msgid"] == "trace-me-2"]
    assert any("delivery failed" in line["message"] and "provider_code=20003" in line["message"] for line in mine)
    assert any(line["message"] == "request" and line["err"] == "DELIVERY_FAILED" and line["status"] == 502
               for line in mine)


def test_a_traceback_stays_inside_its_one_line():
    try:
        raise RuntimeError("boom\nsecond line")
    except RuntimeError:
        record = logging.getLogger("otp_service.test").makeRecord(
            "otp_service.test", logging.ERROR, __file__, 1, "failed", (), exc_info=__import__("sys").exc_info()
        )
    text = JsonFormatter().format(record)
    assert "\n" not in text
    line = json.loads(text)
    assert line["message"] == "failed" and "RuntimeError: boom" in line["exc"] and line["msgid"] == "-"


@given(st.floats(min_value=0, max_value=4e9, allow_nan=False) | st.integers(0, 4 * 10**9).map(lambda n: n / 1000))
def test_the_line_time_is_the_records_time_in_utc_to_the_millisecond(created):
    """The formatter caches the date part for a second; it must still say what datetime would, rounding included."""
    expected = datetime.fromtimestamp(created, timezone.utc).isoformat(timespec="milliseconds")
    assert _iso_utc(created) == expected


@given(st.dictionaries(
    st.text(min_size=1, max_size=8).filter(lambda s: s.isidentifier() and not s.startswith("_")),
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
    | st.lists(st.integers(), max_size=3),
    max_size=4,
))
def test_any_extra_field_makes_one_json_line_with_its_value(fields):
    """orjson writes the line; what it refuses (integers beyond 64 bits, lone surrogates) the standard module
    writes, so any `extra=` value still makes one parsable line with the same value."""
    fields = {f"x_{name}": value for name, value in fields.items()}
    record = logging.getLogger("otp_service.test").makeRecord(
        "otp_service.test", logging.INFO, __file__, 1, "event", (), None, extra=fields
    )
    text = JsonFormatter().format(record)
    assert "\n" not in text
    text.encode("utf-8")  # writable to a UTF-8 stream, lone surrogates included (escaped)
    line = json.loads(text)
    for name, value in fields.items():
        assert line[name] == value


def test_a_value_json_has_no_type_for_is_written_as_its_str():
    class Thing:
        def __str__(self):
            return "thing-1"

    record = logging.getLogger("otp_service.test").makeRecord(
        "otp_service.test", logging.INFO, __file__, 1, "event", (), None, extra={"thing": Thing(), "big": 2**70}
    )
    line = json.loads(JsonFormatter().format(record))
    assert line["thing"] == "thing-1" and line["big"] == 2**70


def test_an_infinite_float_is_null_so_the_line_stays_strict_json():
    record = logging.getLogger("otp_service.test").makeRecord(
        "otp_service.test", logging.INFO, __file__, 1, "event", (), None, extra={"ratio": float("inf")}
    )
    text = JsonFormatter().format(record)
    assert json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} is not JSON"))["ratio"] is None


# -- readable lines on a developer's terminal (OTP_LOG_FORMAT) ---------------------------------------------------------
class _Terminal:
    """A stream that says it is a terminal, as a developer's standard error is."""

    def __init__(self, tty: bool = True):
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_auto_log_format_is_text_only_on_a_terminal_in_development():
    from otp_service.entrypoints.logs import choose_format

    assert choose_format("auto", production=False, stream=_Terminal()) == "text"
    assert choose_format("auto", production=True, stream=_Terminal()) == "json"
    assert choose_format("auto", production=False, stream=_Terminal(tty=False)) == "json"  # a pipe, a file
    assert choose_format("json", production=False, stream=_Terminal()) == "json"
    assert choose_format("text", production=True, stream=_Terminal(tty=False)) == "text"


def test_log_format_is_read_from_the_environment_and_checked():
    from otp_service.config import ConfigError, Settings

    assert Settings.from_env({}).log_format == "auto"
    assert Settings.from_env({"OTP_LOG_FORMAT": "TEXT"}).log_format == "text"
    with pytest.raises(ConfigError, match="OTP_LOG_FORMAT"):
        Settings.from_env({"OTP_LOG_FORMAT": "xml"})


def _record(message: str, *args, level=logging.INFO, **extra) -> logging.LogRecord:
    record = logging.LogRecord("otp_service.http", level, "", 0, message, args, None)
    record.__dict__.update(extra)
    return record


def test_a_text_line_has_time_level_message_and_the_requests_fields():
    from otp_service.entrypoints.logs import TextFormatter

    record = _record("request", msgid="trace-me-1", route="/v1/otp/generate", status=200, err="",
                     key="u***@e***.com", latency_ms=3.1)
    line = TextFormatter().format(record)
    assert "\n" not in line
    time_part, level, rest = line.split(None, 2)
    assert len(time_part) == 12 and time_part[2] == ":" and level == "INFO"
    assert rest.startswith("request  route=/v1/otp/generate status=200 key=u***@e***.com latency_ms=3.1")
    assert "err=" not in rest  # empty fields are left out
    assert rest.endswith("[trace-me-1]")


def test_the_development_api_key_stands_out_in_text_lines():
    from otp_service.entrypoints.logs import TextFormatter

    plain = TextFormatter().format(_record("accepting the API key %s", "k3y", level=logging.WARNING, _highlight=True))
    assert plain.startswith(">>> ") and "k3y" in plain
    coloured = TextFormatter(colour=True).format(_record("key %s", "k3y", level=logging.WARNING, _highlight=True))
    assert coloured.startswith("\033[1;36m") and coloured.endswith("\033[0m")
    warning = TextFormatter(colour=True).format(_record("slow", level=logging.WARNING))
    assert warning.startswith("\033[33m")
    # JSON lines never carry the marker
    assert "_highlight" not in JsonFormatter().format(_record("key %s", "k3y", _highlight=True))


def test_text_logs_mask_keys_as_json_logs_do(api, channel, capsys):
    from otp_service.entrypoints.logs import configure_logging

    email = unique_email()
    configure_logging("INFO", "text")
    try:
        capsys.readouterr()
        api.generate(email)
        err = capsys.readouterr().err
    finally:
        configure_logging("INFO", "json")
    assert "request  route=/v1/otp/generate" in err and "key=u***@e***.com" in err
    for secret in (email, email.split("@")[0], *channel.codes_for(email)):
        assert secret not in err
