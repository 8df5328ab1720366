"""The development inbox: the last messages the console channel "delivered", for GET /dev/inbox.

`otp-service serve` runs several gunicorn workers, and the worker that sends a code is seldom the one that serves
the inbox page, so the inbox is not kept in a process: it is a small SQLite file beside the embedded store's
(`<OTP_SQLITE_PATH>.inbox`), which every worker opens, like the store, after the fork. It holds what the console
prints on standard output (the masked destination and the message text, code included) and nothing else, keeps
only the newest KEEP messages, and is readable by its owner only. It exists in development only: the console
channel, and so the inbox, is refused with OTP_ENV=production.
"""
from __future__ import annotations

import logging
import os
import sqlite3
import time
from pathlib import Path
from typing import Callable, NamedTuple

log = logging.getLogger("otp_service.delivery")

KEEP = 50  # messages kept, newest first

_SCHEMA = """
CREATE TABLE IF NOT EXISTS message (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sent REAL NOT NULL,
    channel TEXT NOT NULL,
    type TEXT NOT NULL,
    recipient TEXT NOT NULL,
    msgid TEXT NOT NULL,
    subject TEXT NOT NULL,
    body TEXT NOT NULL
)
"""


class InboxMessage(NamedTuple):
    id: int
    sent: float  # epoch seconds
    channel: str  # "console"
    type: str  # the contact type: "phone" or "email"
    to: str  # masked, as the console prints it
    msgid: str
    subject: str  # "" for SMS
    text: str


class Inbox:
    """Append a message, read the newest; safe across threads and processes (SQLite's own locking)."""

    def __init__(self, path: str | os.PathLike, keep: int = KEEP, clock: Callable[[], float] = time.time):
        self.path = Path(path)
        self.keep = keep
        self.clock = clock
        self._ready = False

    def _connect(self) -> sqlite3.Connection:
        # One short-lived connection per call: a development aid does not need a pool, and nothing is carried
        # across a fork. The file is made owner-only before SQLite opens it (its -wal and -shm files copy that).
        if not self._ready:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        conn = sqlite3.connect(self.path, timeout=10, isolation_level=None)
        if not self._ready:
            conn.execute("PRAGMA journal_mode=WAL")  # readers of the page never wait for a sending worker
            conn.execute(_SCHEMA)
            self._ready = True
        return conn

    def add(self, *, channel: str, type: str, to: str, msgid: str, subject: str, text: str) -> None:
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                "INSERT INTO message (sent, channel, type, recipient, msgid, subject, body) VALUES (?,?,?,?,?,?,?)",
                (self.clock(), channel, type, to, msgid, subject, text),
            )
            conn.execute(
                "DELETE FROM message WHERE id <= (SELECT id FROM message ORDER BY id DESC LIMIT 1 OFFSET ?)",
                (self.keep,),
            )
            conn.execute("COMMIT")
        finally:
            conn.close()

    def latest(self, limit: int | None = None) -> list[InboxMessage]:
        """The newest messages first, at most `keep` (or `limit`)."""
        conn = self._connect()
        try:
            rows = conn.execute(
                "SELECT id, sent, channel, type, recipient, msgid, subject, body FROM message"
                " ORDER BY id DESC LIMIT ?",
                (min(limit or self.keep, self.keep),),
            ).fetchall()
        finally:
            conn.close()
        return [InboxMessage(*row) for row in rows]

    def describe(self) -> str:
        return str(self.path)
