"""The development channel: one line per message on standard output, destination masked. Never for production.

With an Inbox (development pages on: see docs/development.md) it also keeps each message there, for GET /dev/inbox.
"""
from __future__ import annotations

import logging
import sys
import threading
from typing import TextIO

from . import Channel, Message
from .inbox import Inbox
from .templates import Templates

log = logging.getLogger("otp_service.delivery")


class ConsoleChannel(Channel):
    name = "console"

    def __init__(self, templates: Templates, stream: TextIO | None = None, inbox: Inbox | None = None):
        self.templates = templates
        self.stream = stream
        self.inbox = inbox
        self._lock = threading.Lock()

    def send(self, message: Message) -> None:
        subject, text = self.templates.render(
            message.template_id,
            message.contact.type,
            otp=message.code,
            minutes=message.minutes,
            installation=message.installation,
        )
        shown = f"{subject}: {text}" if subject else text
        line = f"[console {message.contact.type_name}] to={message.contact.masked} msgid={message.msgid} {shown}\n"
        with self._lock:
            stream = self.stream or sys.stdout
            if _is_terminal(stream):  # a developer reading codes off the terminal: make them easy to spot
                line = f"\033[1;32m{line[:-1]}\033[0m\n"
            stream.write(line)
            stream.flush()
        if self.inbox is not None:
            try:
                self.inbox.add(
                    channel=self.name,
                    type=message.contact.type_name,
                    to=message.contact.masked,
                    msgid=message.msgid,
                    subject=subject,
                    text=text,
                )
            except Exception as exc:  # the line is printed: the message is "delivered" even if the page misses it
                log.warning("development inbox: could not record a message (%s)", type(exc).__name__)

    def describe(self) -> str:
        shown = f"; the last {self.inbox.keep} are at GET /dev/inbox ({self.inbox.describe()})" if self.inbox else ""
        return f"console (development only: codes are printed on standard output, nothing is sent{shown})"


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
