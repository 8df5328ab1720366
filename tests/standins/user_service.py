"""A stand-in of Sunbird's user service on 127.0.0.1, for the HTTP user directory to talk to.

It answers, in the Sunbird envelope:
- `GET /v1/user/exists/{email|phone}/{value}`: 200 with `result.exists`, true when a user's current email or phone
  (Sunbird keeps `phone` without its country code, beside `countryCode`) is the value;
- `GET /v1/user/read/{userId}`: 200 with the user's record in `result.response`, or 404 `USER_NOT_FOUND`.
Every request needs `Authorization: Bearer <token>` when a token is set (401 otherwise). A test can switch it to
`down` (503), `hang` (no answer until released), `garbage` (200 with a body that is not JSON) or `bare-404`, and
reads back every request it received. The paths are the defaults; `prefix` puts them under another root.
"""
from __future__ import annotations

import json
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote


@dataclass
class ReceivedRequest:
    method: str
    path: str  # as sent, still percent-encoded
    headers: dict[str, str]


@dataclass
class UserServiceStandIn:
    """Start with `start()`; `base_url` is then http://127.0.0.1:<port>. Set `mode` to change the next answers."""

    users: dict[str, dict] = field(default_factory=dict)  # userId -> Sunbird user record
    token: str | None = None
    mode: str = "ok"  # ok | down | hang | garbage | bare-404
    prefix: str = ""
    hang_seconds: float = 10.0  # an upper bound, so that a forgotten hang cannot stall the suite
    requests: list[ReceivedRequest] = field(default_factory=list)

    def __post_init__(self):
        self._lock = threading.Lock()
        self._release = threading.Event()
        self._server: ThreadingHTTPServer | None = None

    # -- life -------------------------------------------------------------------------------------------------------
    def start(self) -> "UserServiceStandIn":
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as a real service behind a gateway

            def do_GET(self):  # noqa: N802 (http.server's naming)
                standin._handle(self)

            def do_POST(self):  # noqa: N802
                standin._handle(self)

            def log_message(self, *args):  # keep pytest's output clean
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="user-service-standin", daemon=True
        ).start()
        return self

    def stop(self) -> None:
        self._release.set()  # let hanging handlers go
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "UserServiceStandIn":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def root_url(self) -> str:
        """http://127.0.0.1:<port>, without the prefix."""
        assert self._server is not None, "start() first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def base_url(self) -> str:
        """What OTP_USER_SERVICE_URL is set to for the default paths."""
        return self.root_url + self.prefix

    def received(self) -> list[ReceivedRequest]:
        with self._lock:
            return list(self.requests)

    def add_user(self, user_id: str | None = None, **record) -> str:
        user_id = user_id or str(uuid.uuid4())
        with self._lock:
            self.users[user_id] = {"id": user_id, "userId": user_id, **record}
        return user_id

    # -- one request ------------------------------------------------------------------------------------------------
    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        with self._lock:
            self.requests.append(ReceivedRequest(h.command, h.path, dict(h.headers.items())))
        if self.mode == "hang":
            self._release.wait(self.hang_seconds)
            return _answer(h, 504, _envelope("api.user", "SERVER_ERROR", "GATEWAY_TIMEOUT", {}))
        if self.mode == "down":
            return _answer(h, 503, _envelope("api.user", "SERVER_ERROR", "SERVER_ERROR", {}))
        if self.mode == "garbage":
            return _answer(h, 200, None, raw=b"<html>upstream says hello</html>", content_type="text/html")
        if self.token is not None and h.headers.get("Authorization") != f"Bearer {self.token}":
            return _answer(h, 401, _envelope("api.user", "UNAUTHORIZED", "UNAUTHORIZED_USER", {}))

        path = h.path.split("?", 1)[0]
        if not path.startswith(self.prefix + "/"):
            return self._route_not_found(h)
        parts = path[len(self.prefix):].split("/")  # ['', 'v1', 'user', 'exists', type, value]
        if h.command == "GET" and len(parts) == 6 and parts[1:4] == ["v1", "user", "exists"]:
            contact_type, value = unquote(parts[4]), unquote(parts[5])
            if contact_type not in ("email", "phone"):
                return _answer(h, 400, _envelope("api.user.exists", "CLIENT_ERROR", "INVALID_VALUE", {}))
            with self._lock:
                exists = any(value in _current(user, contact_type) for user in self.users.values())
            return _answer(h, 200, _envelope("api.user.exists", "OK", "", {"exists": exists}))
        if h.command == "GET" and len(parts) == 5 and parts[1:4] == ["v1", "user", "read"]:
            with self._lock:
                user = self.users.get(unquote(parts[4]))
            if user is None:
                return _answer(h, 404, _envelope("api.user.read", "RESOURCE_NOT_FOUND", "USER_NOT_FOUND", {}))
            return _answer(h, 200, _envelope("api.user.read", "OK", "", {"response": dict(user)}))
        return self._route_not_found(h)

    def _route_not_found(self, h: BaseHTTPRequestHandler) -> None:
        if self.mode == "bare-404":
            return _answer(h, 404, None, raw=b"Not Found", content_type="text/plain")
        return _answer(h, 404, _envelope("api.user", "RESOURCE_NOT_FOUND", "RESOURCE_NOT_FOUND", {}))


def _current(user: dict, contact_type: str) -> set[str]:
    """The user's current email or phone, as the OTP service sends it (lower-cased email, E.164 phone)."""
    if contact_type == "email":
        email = user.get("email")
        return {email.lower()} if isinstance(email, str) and email else set()
    phone = user.get("phone")
    if not isinstance(phone, str) or not phone:
        return set()
    return {phone if phone.startswith("+") else user.get("countryCode", "+91") + phone}


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


def _answer(
    h: BaseHTTPRequestHandler, status: int, payload: dict | None, *, raw: bytes | None = None,
    content_type: str = "application/json",
) -> None:
    body = raw if raw is not None else json.dumps(payload).encode()
    try:
        h.send_response(status)
        h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)
    except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout test): nothing to answer
        pass
