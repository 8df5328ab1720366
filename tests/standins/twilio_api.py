"""A stand-in of Twilio's Messages API on 127.0.0.1, for the real `twilio` client to talk HTTP to.

It answers POST /2010-04-01/Accounts/{AccountSid}/Messages.json as Twilio does: Basic auth (401 with code 20003
when the credentials are not the ones it was given), a form-encoded To/From/MessagingServiceSid/Body, and a 201
with the message's JSON. A test can make it refuse (400 with a Twilio error code), fail (500) or hang, and reads
back every request it received. With `gather=N` it holds every accepted message until N are waiting at once, then
answers them all (`most_waiting` says how many were held together): proof of how many requests the service
keeps in flight.
"""
from __future__ import annotations

import base64
import re
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs

from .http_standin import HttpStandIn, answer

_MESSAGES = re.compile(r"^/2010-04-01/Accounts/(?P<sid>AC[0-9a-fA-F]{32})/Messages\.json$")


@dataclass
class ReceivedRequest:
    method: str
    path: str
    headers: dict[str, str]
    auth: tuple[str, str] | None  # Basic credentials, decoded
    form: dict[str, str]  # the body, form-decoded (one value a field)


@dataclass
class TwilioApiStandIn(HttpStandIn):
    """Start with `start()`; `base_url` is then http://127.0.0.1:<port>. Set `mode` to change the next answers."""

    account_sid: str
    username: str  # the expected Basic user: the account SID, or an API key SID
    password: str
    mode: str = "accept"  # accept | reject | error | hang | queued-failed
    error_code: int = 21211  # Twilio's "invalid To number"
    hang_seconds: float = 5.0  # an upper bound, so that a forgotten hang cannot stall the suite
    requests: list[ReceivedRequest] = field(default_factory=list)
    gather: int = 0  # hold accepted messages until this many wait at once (0: answer each at once)
    most_waiting: int = 0

    thread_name = "twilio-standin"

    def __post_init__(self):
        super().__post_init__()
        self._waiting = 0
        self._gathered = threading.Condition()
        self._released_all = False

    def release(self) -> None:
        """Answer every held message now, however many are waiting."""
        with self._gathered:
            self._released_all = True
            self._gathered.notify_all()

    def _wait_for_the_others(self) -> None:
        """Hold this request until `gather` are held (then release them all), or `hang_seconds` at most."""
        with self._gathered:
            self._waiting += 1
            self.most_waiting = max(self.most_waiting, self._waiting)
            if self._waiting >= self.gather:
                self._released_all = True
                self._gathered.notify_all()
            self._gathered.wait_for(lambda: self._released_all, timeout=self.hang_seconds)
            self._waiting -= 1

    @property
    def base_url(self) -> str:
        return self.root_url

    # -- one request ------------------------------------------------------------------------------------------------
    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length).decode("utf-8") if length else ""
        form = {name: values[0] for name, values in parse_qs(raw, keep_blank_values=True).items()}
        request = ReceivedRequest(
            h.command, h.path, dict(h.headers.items()), _basic(h.headers.get("Authorization")), form
        )
        self._record(request)

        match = _MESSAGES.match(h.path)
        if h.command != "POST" or match is None:
            return answer(h, 404, {"code": 20404, "message": "The requested resource was not found", "status": 404})
        if request.auth != (self.username, self.password) or match["sid"] != self.account_sid:
            return answer(h, 401, {"code": 20003, "message": "Authenticate", "status": 401,
                                    "more_info": "https://www.twilio.com/docs/errors/20003"})
        if self.mode == "hang":
            self._hang()
            return answer(h, 504, {"code": 20504, "message": "stand-in released", "status": 504})
        if self.mode == "error":
            return answer(h, 500, {"code": 20500, "message": "Internal Server Error", "status": 500})
        if self.mode == "reject":
            to = form.get("To", "")
            return answer(h, 400, {
                "code": self.error_code,
                # Twilio quotes the number in its message: the service must never log this text
                "message": f"The 'To' number {to} is not a valid phone number.",
                "more_info": f"https://www.twilio.com/docs/errors/{self.error_code}",
                "status": 400,
            })
        sender_missing = "From" not in form and "MessagingServiceSid" not in form
        if "To" not in form or "Body" not in form or sender_missing:
            return answer(h, 400, {"code": 21603 if sender_missing else 21604,
                                    "message": "A required parameter is missing", "status": 400})
        if self.gather:
            self._wait_for_the_others()
        status = "failed" if self.mode == "queued-failed" else "queued"
        sid = "SM" + uuid.uuid4().hex
        return answer(h, 201, {
            "sid": sid,
            "account_sid": self.account_sid,
            "to": form["To"],
            "from": form.get("From"),
            "messaging_service_sid": form.get("MessagingServiceSid"),
            "body": form["Body"],
            "status": status,
            "num_segments": "1",
            "direction": "outbound-api",
            "api_version": "2010-04-01",
            "date_created": "Thu, 01 Jan 2026 00:00:00 +0000",
            "date_updated": "Thu, 01 Jan 2026 00:00:00 +0000",
            "date_sent": None,
            "error_code": 30008 if status == "failed" else None,
            "error_message": None,
            "price": None,
            "uri": f"/2010-04-01/Accounts/{self.account_sid}/Messages/{sid}.json",
        })


def _basic(header: str | None) -> tuple[str, str] | None:
    if not header or not header.startswith("Basic "):
        return None
    user, _, password = base64.b64decode(header[6:]).decode("utf-8").partition(":")
    return user, password

