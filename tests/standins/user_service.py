"""A stand-in of Sunbird's user service on 127.0.0.1, for the HTTP user directory to talk to.

It answers, in the Sunbird envelope:
- `GET /v1/user/exists/{email|phone}/{value}`: 200 with `result.exists`, true when a user's current email or phone
  (Sunbird keeps `phone` without its country code, beside `countryCode`) is the value;
- `GET /v1/user/read/{userId}`: 200 with the user's record in `result.response` (email, phone, countryCode,
  prevUsedEmail, prevUsedPhone, recoveryEmail, recoveryPhone, each null or "" when unset), or 404 `USER_NOT_FOUND`.
Every request needs `Authorization: Bearer <token>` when a token is set (401 otherwise). A test can switch it to
`down` (503), `hang` (no answer until released), `garbage` (200 with a body that is not JSON) or `bare-404`, and
reads back every request it received. The paths are the defaults; `prefix` puts them under another root.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from urllib.parse import unquote

from .http_standin import HttpStandIn, answer


@dataclass
class ReceivedRequest:
    method: str
    path: str  # as sent, still percent-encoded
    headers: dict[str, str]


@dataclass
class UserServiceStandIn(HttpStandIn):
    """Start with `start()`; `base_url` is then http://127.0.0.1:<port>. Set `mode` to change the next answers."""

    users: dict[str, dict] = field(default_factory=dict)  # userId -> Sunbird user record
    token: str | None = None
    mode: str = "ok"  # ok | down | hang | garbage | bare-404
    prefix: str = ""
    hang_seconds: float = 10.0  # an upper bound, so that a forgotten hang cannot stall the suite
    requests: list[ReceivedRequest] = field(default_factory=list)

    thread_name = "user-service-standin"
    keep_alive = True

    @property
    def base_url(self) -> str:
        """What OTP_USER_SERVICE_URL is set to for the default paths."""
        return self.root_url + self.prefix

    def add_user(self, user_id: str | None = None, **record) -> str:
        """A user record as userorg-service's user read answers it: every contact field is present, `""` or null
        when the user has none (userorg stores recoveryEmail/recoveryPhone as null, prevUsed* as absent or "")."""
        user_id = user_id or str(uuid.uuid4())
        with self._lock:
            self.users[user_id] = {"id": user_id, "userId": user_id, **_UNSET_CONTACTS, **record}
        return user_id

    # -- one request ------------------------------------------------------------------------------------------------
    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        self._record(ReceivedRequest(h.command, h.path, dict(h.headers.items())))
        if self.mode == "hang":
            self._hang()
            return answer(h, 504, _envelope("api.user", "SERVER_ERROR", "GATEWAY_TIMEOUT", {}))
        if self.mode == "down":
            return answer(h, 503, _envelope("api.user", "SERVER_ERROR", "SERVER_ERROR", {}))
        if self.mode == "garbage":
            return answer(h, 200, None, raw=b"<html>upstream says hello</html>", content_type="text/html")
        if self.token is not None and h.headers.get("Authorization") != f"Bearer {self.token}":
            return answer(h, 401, _envelope("api.user", "UNAUTHORIZED", "UNAUTHORIZED_USER", {}))

        path = h.path.split("?", 1)[0]
        if not path.startswith(self.prefix + "/"):
            return self._route_not_found(h)
        parts = path[len(self.prefix):].split("/")  # ['', 'v1', 'user', 'exists', type, value]
        if h.command == "GET" and len(parts) == 6 and parts[1:4] == ["v1", "user", "exists"]:
            contact_type, value = unquote(parts[4]), unquote(parts[5])
            if contact_type not in ("email", "phone"):
                return answer(h, 400, _envelope("api.user.exists", "CLIENT_ERROR", "INVALID_VALUE", {}))
            with self._lock:
                exists = any(value in _current(user, contact_type) for user in self.users.values())
            return answer(h, 200, _envelope("api.user.exists", "OK", "", {"exists": exists}))
        if h.command == "GET" and len(parts) == 5 and parts[1:4] == ["v1", "user", "read"]:
            with self._lock:
                user = self.users.get(unquote(parts[4]))
            if user is None:
                return answer(h, 404, _envelope("api.user.read", "RESOURCE_NOT_FOUND", "USER_NOT_FOUND", {}))
            return answer(h, 200, _envelope("api.user.read", "OK", "", {"response": dict(user)}))
        return self._route_not_found(h)

    def _route_not_found(self, h: BaseHTTPRequestHandler) -> None:
        if self.mode == "bare-404":
            return answer(h, 404, None, raw=b"Not Found", content_type="text/plain")
        return answer(h, 404, _envelope("api.user", "RESOURCE_NOT_FOUND", "RESOURCE_NOT_FOUND", {}))


_UNSET_CONTACTS = {
    "email": None, "phone": None, "countryCode": None, "maskedEmail": None, "maskedPhone": None,
    "prevUsedEmail": "", "prevUsedPhone": "", "recoveryEmail": None, "recoveryPhone": None,
}


def _current(user: dict, contact_type: str) -> set[str]:
    """The user's current email or phone, as the OTP service sends it (lower-cased email, E.164 phone)."""
    if contact_type == "email":
        email = user.get("email")
        return {email.lower()} if isinstance(email, str) and email else set()
    phone = user.get("phone")
    if not isinstance(phone, str) or not phone:
        return set()
    return {phone if phone.startswith("+") else (user.get("countryCode") or "+91") + phone}


def _envelope(api_id: str, response_code: str, err: str, result: dict) -> dict:
    return {
        "id": api_id,
        "ver": "v1",
        "ts": "2026-01-01 00:00:00:000+0000",
        "params": {
            "resmsgid": str(uuid.uuid4()),
            "msgid": str(uuid.uuid4()),
            "err": err or None,
            "status": "success" if not err else err,
            "errmsg": None,
        },
        "responseCode": response_code,
        "result": result,
    }

