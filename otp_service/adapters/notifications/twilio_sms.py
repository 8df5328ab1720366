"""SMS through Twilio's Messages API, with the `twilio` package.

The `twilio` client builds, signs and parses every call; its transport is our `PooledHttpClient`, plugged in
through the client's documented `http_client` extension point (twilio.http.HttpClient). It is built once per
process and does what Twilio's default transport (a requests Session) would otherwise do per message or get wrong
when hundreds of messages are in flight at once (the gevent worker):
- one urllib3 pool as large as a worker's requests in flight: Twilio's default keeps 10 connections to a host (6
  over https), and opens, uses once and drops one more for every message beyond, with a warning each time;
- no requests Session on the way: its per-call work (merging settings through typing-Protocol isinstance checks,
  walking the environment for proxies, hooks, cookies) was about 40% of the Twilio path's CPU, measured with py-spy
  (docs/BENCHMARKS.md); urllib3 is what requests sends with;
- the proxy and CA variables requests honours (HTTPS_PROXY, NO_PROXY, REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE) read
  once, at start-up; certificates are verified against certifi's bundle, as requests does;
- Twilio's request and response log lines only when its logger (`twilio.http_client`) is on at INFO;
- an optional base URL (OTP_TWILIO_BASE_URL), so that tests can put a stand-in of the API on 127.0.0.1 and
  exercise the real library end to end.
The timeout bounds connecting and each read, as before.

A refusal is logged with Twilio's error code only: Twilio's error text may quote the phone number, so neither
it nor the body (which holds the code) is ever logged or carried in the DeliveryError.
"""
from __future__ import annotations

import base64
import json
import logging
import os
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import certifi
import requests.utils
import urllib3
from twilio.base.exceptions import TwilioException, TwilioRestException, TwilioServiceException
from twilio.http import HttpClient
from twilio.http.response import Response
from twilio.rest import Client
from urllib3.exceptions import HTTPError, NewConnectionError, ProtocolError, ProxyError, SSLError
from urllib3.exceptions import TimeoutError as Urllib3Timeout

from . import Channel, DeliveryError, Message
from .settings import TwilioSettings
from .templates import Templates

log = logging.getLogger("otp_service.delivery")

# Statuses of a message Twilio accepted but will not deliver; any other status means it is on its way.
_FAILED = frozenset({"failed", "undelivered", "canceled"})

# Connections kept per host: at least a worker's requests in flight (workers.DEFAULT_MAX_IN_FLIGHT), so that none
# is ever opened for one message and dropped. Idle ones cost a socket each; Twilio closes those it finds idle.
POOL_SIZE = 500
_JSON_TYPES = ("application/json", "application/scim+json")


class PooledHttpClient(HttpClient):
    """Twilio's HttpClient port on one urllib3 pool (see the module's docstring). Errors are urllib3's."""

    def __init__(self, timeout: float, base_url: str | None = None):
        super().__init__(logging.getLogger("twilio.http_client"), False, timeout)
        self.base_url = urlsplit(base_url) if base_url else None
        target = base_url or "https://api.twilio.com"
        proxies = requests.utils.get_environ_proxies(target)  # as requests would find them, NO_PROXY included
        proxy = proxies.get(urlsplit(target).scheme) or proxies.get("all")
        options: dict[str, Any] = dict(
            num_pools=4, maxsize=POOL_SIZE, block=False, retries=False, cert_reqs="CERT_REQUIRED",
            ca_certs=os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or certifi.where(),
        )
        self.pool = urllib3.ProxyManager(proxy, **options) if proxy else urllib3.PoolManager(**options)
        self._basic: dict[tuple[str, str], str] = {}

    def request(self, method, url, params=None, data=None, headers=None, auth=None, timeout=None,
                allow_redirects=False) -> Response:
        if self.base_url is not None:
            parts = urlsplit(url)
            url = urlunsplit((self.base_url.scheme, self.base_url.netloc, parts.path, parts.query, parts.fragment))
        if params:
            url += ("&" if "?" in url else "?") + urlencode(params, doseq=True)
        headers = dict(headers or {})
        if auth is not None:
            if auth not in self._basic:
                self._basic[auth] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode("ascii")
            headers["Authorization"] = self._basic[auth]
        body = None
        if data:
            body = json.dumps(data) if headers.get("Content-Type") in _JSON_TYPES else urlencode(data, doseq=True)
        if self.logger.isEnabledFor(logging.INFO):
            self.log_request({"method": method.upper(), "url": url, "params": None, "headers": headers})
        seconds = timeout if timeout is not None else self.timeout
        answer = self.pool.request(
            method.upper(), url, body=body, headers=headers, redirect=allow_redirects,
            timeout=urllib3.Timeout(connect=seconds, read=seconds) if seconds else None,
        )
        if self.logger.isEnabledFor(logging.INFO):
            self.log_response(answer.status, answer)
        return Response(answer.status, answer.data.decode("utf-8", "replace"), answer.headers)


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
            http_client=PooledHttpClient(settings.timeout, settings.base_url),
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

    def _create(self, message: Message) -> tuple[Any, tuple[str, str | int | None] | None]:
        """(the created message, None), or (None, (reason, provider code)): only safe text leaves here."""
        try:
            body = self.templates.render_sms(
                message.template_id, otp=message.code, minutes=message.minutes, installation=message.installation
            )
            return self.messages.create(to=message.contact.key, body=body, **self._sender()), None
        except (TwilioRestException, TwilioServiceException) as exc:
            status, code = getattr(exc, "status", None), getattr(exc, "code", None)
            return None, (f"Twilio refused the message (HTTP {status})", code if code is not None else status)
        except (NewConnectionError, ProtocolError, ProxyError, SSLError):  # NewConnectionError is a timeout's kind
            return None, ("could not connect to Twilio", "connection")
        except Urllib3Timeout:
            return None, (f"Twilio did not answer within {self.settings.timeout:g} s", "timeout")
        except (HTTPError, TwilioException) as exc:
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

    def _fail(self, message: Message, reason: str, code: str | int | None) -> None:
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
