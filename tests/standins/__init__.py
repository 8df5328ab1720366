"""Stand-ins of the providers the service talks to, started by the tests on 127.0.0.1 only."""
from __future__ import annotations

PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


def keep_traffic_local(monkeypatch) -> None:
    """No proxy from the environment may carry a test's request off this machine."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    for name in ("TWILIO_EDGE", "TWILIO_REGION"):  # the twilio client reads these to pick another host
        monkeypatch.delenv(name, raising=False)
