"""Development pages: GET /try (request a code and enter it) and GET /dev/inbox (what the console "delivered").

They exist only with OTP_ENV=development, OTP_DEV_PAGES on (its default there) and a console channel; otherwise
none of these routes is registered and each answers the 404 envelope, like any unknown route. In production the
console channel and OTP_DEV_PAGES=true both stop start-up (config.py), and `register` checks again here.

How the page authenticates (docs/development.md): it calls two page-only routes, POST /try/generate and
POST /try/verify, that take no API key. Each hands the request to the API's own route (/v1/otp/generate or
/v1/otp/verify: the same schemas, rules, limits, envelope and log line) with a key that only this process knows:
made at start-up, never sent, printed or logged, its digest added to the accepted keys. No key the operator
configured is exposed to a browser, and /v1 accepts nothing new from outside. Anyone who can reach the page
routes can request and verify codes without a key, which is no more than they get already: the inbox beside them
shows every code. The routes refuse cross-origin calls, so another site open in the same browser cannot use them.
"""
from __future__ import annotations

import hashlib
import logging
import secrets
from datetime import datetime, timezone
from typing import NamedTuple

from flask import Blueprint, Flask, current_app, g, render_template, request

from ..adapters.notifications import Channel
from ..adapters.notifications.console import ConsoleChannel
from ..adapters.notifications.inbox import Inbox, InboxMessage
from ..config import Settings
from ..domain import errors
from ..domain.contacts import ContactType
from .envelope import current_msgid, respond, timestamp

log = logging.getLogger("otp_service.devtools")

bp = Blueprint(
    "devtools",
    __name__,
    template_folder="dev_pages",
    static_folder="dev_pages/static",
    static_url_path="/try/static",
)

# Every page: its own files only (no inline script or style, nothing from elsewhere), never framed or cached.
_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
        "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class DevTools(NamedTuple):
    inbox: Inbox
    page_key: str  # the key the page routes present to the API; never leaves this process
    endpoints: dict[str, str]  # page route -> the API route's endpoint
    console_types: tuple[str, ...]  # the contact types whose codes reach the inbox
    settings: Settings


def console_inbox(channels: dict[ContactType, Channel]) -> Inbox | None:
    for channel in channels.values():
        if isinstance(channel, ConsoleChannel) and channel.inbox is not None:
            return channel.inbox
    return None


def register(app: Flask, settings: Settings, channels: dict[ContactType, Channel]) -> bool:
    """Add the pages when (and only when) development, OTP_DEV_PAGES and a console channel with an inbox say so.
    Call it after the API's routes are registered: the page routes hand their requests to those."""
    inbox = console_inbox(channels)
    if settings.production or not settings.dev_pages or inbox is None:
        return False
    adapter = app.url_map.bind("localhost")
    endpoints = {
        page: adapter.match(api_path, method="POST")[0]
        for page, api_path in (("generate", "/v1/otp/generate"), ("verify", "/v1/otp/verify"))
    }
    page_key = secrets.token_urlsafe(32)
    app.config["OTP_API_KEY_HASHES"] = (
        *app.config["OTP_API_KEY_HASHES"],
        hashlib.sha256(page_key.encode()).hexdigest(),
    )
    console_types = tuple(t.value for t, c in channels.items() if isinstance(c, ConsoleChannel))
    app.extensions["otp_devtools"] = DevTools(inbox, page_key, endpoints, console_types, settings)
    app.register_blueprint(bp)
    log.warning(
        "development: GET /try (a page to request and enter codes) and GET /dev/inbox (the console's last %d "
        "messages, codes included) are on; OTP_DEV_PAGES=false turns them off",
        inbox.keep,
    )
    return True


def _tools() -> DevTools:
    return current_app.extensions["otp_devtools"]


def _page(template: str, **values) -> object:
    g.msgid = current_msgid()
    response = current_app.make_response(render_template(template, **values))
    response.headers.update(_PAGE_HEADERS)
    response.headers["X-Request-ID"] = g.msgid
    return response


@bp.get("/try")
def try_page():
    tools = _tools()
    limits = tools.settings.limits
    return _page(
        "try.html",
        code_length=limits.code_length,
        ttl=limits.code_ttl,
        cooldown=limits.resend_cooldown,
        attempts=limits.max_verify_attempts,
        console_types=tools.console_types,
    )


@bp.post("/try/generate")
def try_generate():
    return _through_api("generate", "api.otp.generate")


@bp.post("/try/verify")
def try_verify():
    return _through_api("verify", "api.otp.verify")


def _through_api(page: str, api_id: str):
    """The API's route answers, as if called with a valid key: same body, rules and envelope."""
    g.api_id, g.api_ver = api_id, "v1"
    _refuse_cross_origin()
    tools = _tools()
    request.environ["HTTP_AUTHORIZATION"] = f"Bearer {tools.page_key}"
    return current_app.view_functions[tools.endpoints[page]]()


def _refuse_cross_origin() -> None:
    """A browser names the page that makes a call (Origin; Sec-Fetch-Site in current browsers). The page's own
    calls come from this origin; a form or script of another site is refused before anything is sent."""
    origin = request.headers.get("Origin")
    site = request.headers.get("Sec-Fetch-Site")
    if (origin is not None and origin != request.host_url.rstrip("/")) or site in ("cross-site", "same-site"):
        raise errors.invalid_request("The try page's routes answer the try page only (cross-origin call refused).", 403)


@bp.get("/dev/inbox")
def inbox_page():
    if request.accept_mimetypes.best_match(["text/html", "application/json"]) == "application/json":
        response = inbox_json()
    else:
        tools = _tools()
        response = _page("inbox.html", messages=[_shown(m) for m in tools.inbox.latest()], keep=tools.inbox.keep)
    response.vary.add("Accept")
    return response


@bp.get("/dev/inbox.json")
def inbox_json():
    g.api_id, g.api_ver = "api.dev.inbox", "v1"
    tools = _tools()
    response = respond(result={"messages": [_shown(m) for m in tools.inbox.latest()], "keep": tools.inbox.keep})
    response.headers["Cache-Control"] = "no-store"
    return response


def _shown(message: InboxMessage) -> dict:
    return {
        "id": message.id,
        "ts": timestamp(datetime.fromtimestamp(message.sent, timezone.utc)),
        "channel": message.channel,
        "type": message.type,
        "to": message.to,
        "msgid": message.msgid,
        "subject": message.subject,
        "text": message.text,
    }
