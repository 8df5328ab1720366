"""The development channel: one line per message on standard output, destination masked. Never for production."""
from __future__ import annotations

import sys
import threading
from typing import TextIO

from . import Channel, Message
from .templates import Templates


class ConsoleChannel(Channel):
    name = "console"

    def __init__(self, templates: Templates, stream: TextIO | None = None):
        self.templates = templates
        self.stream = stream
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

    def describe(self) -> str:
        return "console (development only: codes are printed on standard output, nothing is sent)"


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
