"""SMS through Twilio's Messages API, with the `twilio` package.

Twilio's own HTTP client carries the timeout (connect and each read). It is built once per process and changed,
through the client's `http_client` extension point, in what it would otherwise do per message or get wrong when
hundreds of messages are in flight at once (the gevent worker):
- an optional base URL (OTP_TWILIO_BASE_URL), so that tests can put a stand-in of the API on 127.0.0.1 and
  exercise the real library end to end;
- a connection pool as large as a worker's requests in flight (Twilio's client keeps 10 connections to a host, or
  6 over https, and opens, uses once and drops one more for every message beyond, with a warning each time);
- the proxy and CA variables of the environment read once, at start-up, instead of on every message (requests'
  `trust_env`: a walk over the whole environment and the proxy rules per call);
- its request and response log lines (ten INFO lines a message, formatted even when INFO is off) only when its
  logger is on at INFO.

A refusal is logged with Twilio's error code only: Twilio's error text may quote the phone number, so neither
it nor the body (which holds the code) is ever logged or carried in the DeliveryError.
"""
from __future__ import annotations

import logging
import os
from urllib.parse import urlsplit, urlunsplit

import requests
import requests.adapters
import requests.utils
from twilio.base.exceptions import TwilioException, TwilioRestException, TwilioServiceException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from . import Channel, DeliveryError, Message
from .settings import TwilioSettings
from .templates import Templates

log = logging.getLogger("otp_service.delivery")

# Statuses of a message Twilio accepted but will not deliver; any other status means it is on its way.
_FAILED = frozenset({"failed", "undelivered", "canceled"})


# Connections kept per host: at least a worker's requests in flight (workers.DEFAULT_MAX_IN_FLIGHT), so that none
# is ever opened for one message and dropped. Idle ones cost a socket each; Twilio closes those it finds idle.
POOL_SIZE = 500


class BaseUrlHttpClient(TwilioHttpClient):
    """Twilio's HTTP client, sending every request to `base_url` (scheme, host, port) instead of twilio.com, with a
    pool for many messages at once and the environment's proxy and CA settings read once (see the docstring)."""

    def __init__(self, timeout: float, base_url: str | None = None):
        super().__init__(timeout=timeout)
        self.base_url = urlsplit(base_url) if base_url else None
        session = self.session
        adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=POOL_SIZE)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        target = base_url or "https://api.twilio.com"
        self.proxy = requests.utils.get_environ_proxies(target)  # HTTPS_PROXY, NO_PROXY: as requests would find
        session.verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
        session.trust_env = False

    def log_request(self, kwargs):  # type: ignore[override]
        if self.logger.isEnabledFor(logging.INFO):
            super().log_request(kwargs)

    def log_response(self, status_code, response):  # type: ignore[override]
        if self.logger.isEnabledFor(logging.INFO):
            super().log_response(status_code, response)

    def request(self, method, url, *args, **kwargs):  # type: ignore[override]
        if self.base_url is not None:
            parts = urlsplit(url)
            url = urlunsplit((self.base_url.scheme, self.base_url.netloc, parts.path, parts.query, parts.fragment))
        return super().request(method, url, *args, **kwargs)


class TwilioSmsChannel(Channel):
    name = "twilio"

    def __init__(self, settings: TwilioSettings, templates: Templates):
        self.settings = settings
        self.templates = templates
        username, password = settings.credentials
        self.client = Client(
            username=username,
            password=password,
            account_sid=settings.account_sid,
            region=settings.region,
            edge=settings.edge,
            http_client=BaseUrlHttpClient(settings.timeout, settings.base_url),
        )
        # The Messages resource, reached once here: the client imports its API modules (about a second of CPU) on
        # first use, which would otherwise stall the worker's first message and every request it holds.
        self.messages = self.client.messages

    def send(self, message: Message) -> None:
        created, failure = self._create(message)
        if failure is not None:  # raised out here, so the DeliveryError has no __context__ quoting the number
            self._fail(message, *failure)
        status = getattr(created, "status", None)
        status = getattr(status, "value", status)  # tolerate an enum, should a release make it one
        if status in _FAILED:
            self._fail(message, f"Twilio accepted the message as {status}", getattr(created, "error_code", None))
        log.info("sms accepted channel=twilio to=%s sid=%s status=%s", message.contact.masked, created.sid, status)

    def _create(self, message: Message) -> tuple[object, tuple[str, object] | None]:
        """(the created message, None), or (None, (reason, provider code)): only safe text leaves here."""
        try:
            body = self.templates.render_sms(
                message.template_id, otp=message.code, minutes=message.minutes, installation=message.installation
            )
            return self.messages.create(to=message.contact.key, body=body, **self._sender()), None
        except (TwilioRestException, TwilioServiceException) as exc:
            status, code = getattr(exc, "status", None), getattr(exc, "code", None)
            return None, (f"Twilio refused the message (HTTP {status})", code if code is not None else status)
        except requests.Timeout:
            return None, (f"Twilio did not answer within {self.settings.timeout:g} s", "timeout")
        except requests.ConnectionError:
            return None, ("could not connect to Twilio", "connection")
        except (requests.RequestException, TwilioException) as exc:
            return None, (f"request to Twilio failed ({type(exc).__name__})", type(exc).__name__)
        except Exception as exc:  # the port promises DeliveryError only; the type name is safe, the text may not be
            return None, (f"unexpected error ({type(exc).__name__})", type(exc).__name__)

    def _sender(self) -> dict[str, str]:
        sender: dict[str, str] = {}
        if self.settings.messaging_service_sid:
            sender["messaging_service_sid"] = self.settings.messaging_service_sid
        if self.settings.from_number:
            sender["from_"] = self.settings.from_number
        return sender

    def _fail(self, message: Message, reason: str, code: object) -> None:
        log.warning(
            "sms not delivered channel=twilio to=%s provider_code=%s reason=%s",
            message.contact.masked,
            code,
            reason,
        )
        raise DeliveryError(self.name, reason, code)

    def describe(self) -> str:
        sender = self.settings.messaging_service_sid or self.settings.from_number
        where = f" via {self.settings.base_url}" if self.settings.base_url else ""
        return f"twilio (account {self.settings.account_sid}, sender {sender}{where})"
