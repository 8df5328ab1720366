"""Logs: one line per request with msgid, route, outcome and latency; keys masked; codes never written."""
from __future__ import annotations

import logging
import re

from .support import AUTH, unique_email, unique_phone, wrong_code


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
    assert "request route=/v1/otp/generate" in caplog.text
    for secret in (email, phone, phone[3:], email.split("@")[0], *channel.codes_for(email),
                   *channel.codes_for(phone)):
        assert secret not in text, f"{secret!r} appeared in the logs"
    assert "u***@e***.com" in caplog.text and f"+91{'*' * 8}{phone[-2:]}" in caplog.text


def test_each_request_logs_one_line_with_msgid_route_outcome_and_latency(api, caplog):
    caplog.set_level(logging.INFO, logger="otp_service")
    api.client.post("/v1/otp/generate", json={"request": {"key": unique_email(), "type": "email"}},
                    headers={**AUTH, "X-Request-ID": "trace-me-1"})
    lines = [r for r in caplog.records if r.getMessage().startswith("request ")]
    assert len(lines) == 1
    line = lines[0]
    assert line.msgid == "trace-me-1"
    assert re.search(r"route=/v1/otp/generate .*status=200 .*outcome=sent .*latency_ms=\d+\.\d", line.getMessage())


def test_every_line_of_a_request_carries_its_msgid(api, caplog):
    from otp_service.adapters.notifications import DeliveryError

    caplog.set_level(logging.INFO, logger="otp_service")
    channel = api.client.application.extensions["otp_service"].channels
    for ch in channel.values():
        ch.failure = DeliveryError("recording", "down", provider_code=20003)
    api.client.post("/v1/otp/generate", json={"request": {"key": unique_email(), "type": "email"}},
                    headers={**AUTH, "X-Request-ID": "trace-me-2"})
    mine = [r for r in caplog.records if getattr(r, "msgid", None) == "trace-me-2"]
    assert any("delivery failed" in r.getMessage() and "provider_code=20003" in r.getMessage() for r in mine)
    assert any(r.getMessage().startswith("request ") for r in mine)
