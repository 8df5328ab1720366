"""Email through SMTP (`smtplib`), with STARTTLS or implicit TLS, a login, and a plain-text and HTML body.

TLS is never optional once chosen: with `starttls` a server that does not offer STARTTLS is a failure, not a
reason to send in clear, and certificates are always verified (against OTP_SMTP_CA_FILE when set). Every socket
operation has the configured timeout. A refusal is logged with the SMTP reply code only: servers echo the
address in their reply text, and the message holds the code.

Connections are kept: after a message is accepted its connection (TLS set up, logged in) goes back to a small pool
instead of QUIT, and the next message starts its own transaction on it (MAIL FROM, RCPT TO, DATA: RFC 5321 3.3),
so it pays neither the TCP and TLS handshakes nor EHLO and AUTH again. A kept connection is checked with NOOP
before use and replaced if the server dropped it; one idle for more than KEEP_IDLE_SECONDS (servers may close
sooner than RFC 5321's 5 minutes) or used for MAX_MESSAGES_PER_CONNECTION messages (providers cap them per session)
is closed instead; a connection on which anything failed is never kept.
"""
from __future__ import annotations

import errno
import logging
import smtplib
import ssl
import threading
import time
import uuid
from datetime import datetime, timezone
from email.message import EmailMessage
from email.utils import format_datetime

from . import Channel, DeliveryError, Message
from .settings import SmtpSettings
from .templates import Templates

log = logging.getLogger("otp_service.delivery")

KEEP_IDLE_SECONDS = 30.0
MAX_MESSAGES_PER_CONNECTION = 100
NOOP_TIMEOUT_SECONDS = 2.0
MAX_IDLE_CONNECTIONS = 16  # kept after a burst; more are closed (each is a session on the server)


class SmtpEmailChannel(Channel):
    name = "smtp"

    def __init__(self, settings: SmtpSettings, templates: Templates):
        self.settings = settings
        self.templates = templates
        # Built once: loading the CA file on every message would be slow, and it was checked at start-up.
        self.tls_context = None if settings.security == "none" else ssl.create_default_context(cafile=settings.ca_file)
        self._idle: list[tuple[smtplib.SMTP, float, int]] = []  # (connection, idle since, messages sent), oldest first
        self._idle_lock = threading.Lock()

    def build(self, message: Message) -> EmailMessage:
        subject, text, html = self.templates.render_email(
            message.template_id, otp=message.code, minutes=message.minutes, installation=message.installation
        )
        email = EmailMessage()
        email["Subject"] = subject
        email["From"] = self.settings.from_address
        email["To"] = message.contact.key
        email["Date"] = format_datetime(datetime.now(timezone.utc))
        # A Message-ID from our own domain; email.utils.make_msgid would look up this host's name on every message.
        email["Message-ID"] = f"<{uuid.uuid4().hex}@{self.settings.envelope_from.rpartition('@')[2]}>"
        email["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies to a code
        email.set_content(text)
        email.add_alternative(html, subtype="html")
        return email

    def send(self, message: Message) -> None:
        failure = self._deliver(message)
        if failure is not None:  # raised out here, so the DeliveryError has no __context__ quoting the address
            self._fail(message, *failure)
        log.info(
            "email accepted channel=smtp to=%s server=%s:%s",
            message.contact.masked,
            self.settings.host,
            self.settings.port,
        )

    def _deliver(self, message: Message) -> tuple[str, str | int | None] | None:
        """None once the server took the message, else (reason, provider code): only safe text leaves here."""
        settings = self.settings
        smtp: smtplib.SMTP | None = None
        stage = "connect"  # named in the failure, so an operator knows which step the server refused
        sent = 0  # messages this connection carried before this one
        delivered = False
        try:
            email = self.build(message)
            smtp, sent = self._kept()
            if smtp is None:
                smtp = self._connect()
                if settings.security == "starttls":
                    stage = "STARTTLS"
                    smtp.starttls(context=self.tls_context)  # SMTPNotSupportedError if not offered: never clear text
                if settings.username is not None:
                    stage = "login"
                    smtp.login(settings.username, settings.password or "")
            stage = "send"
            refused = smtp.send_message(email, from_addr=settings.envelope_from, to_addrs=[message.contact.key])
            if refused:  # one recipient: a partial refusal cannot happen, but never report one as a success
                return "the server refused the recipient", _first_code(refused)
            delivered = True
            return None
        except smtplib.SMTPAuthenticationError as exc:
            return "the server refused the login", exc.smtp_code
        except smtplib.SMTPRecipientsRefused as exc:
            return "the server refused the recipient", _first_code(exc.recipients)
        except smtplib.SMTPResponseException as exc:  # greeting, STARTTLS, sender or data refused
            return f"the server refused the message at {stage}", exc.smtp_code
        except smtplib.SMTPNotSupportedError:
            needed = {"STARTTLS": "STARTTLS", "login": "AUTH"}.get(stage, "a needed extension")
            return f"the server does not offer {needed}", "not-supported"
        except smtplib.SMTPServerDisconnected as exc:
            if isinstance(exc.__context__, TimeoutError):  # smtplib reports a read timeout as a disconnect
                return f"the server did not answer within {settings.timeout:g} s at {stage}", "timeout"
            return f"the server closed the connection at {stage}", "disconnected"
        except smtplib.SMTPException as exc:  # e.g. no AUTH mechanism in common
            return f"SMTP failed at {stage} ({type(exc).__name__})", type(exc).__name__
        except ssl.SSLCertVerificationError as exc:
            return f"the server's certificate is not trusted ({exc.verify_message})", "tls-verify"
        except ssl.SSLError as exc:
            return f"TLS failed at {stage} ({exc.reason or type(exc).__name__})", "tls"
        except TimeoutError:  # socket.timeout is TimeoutError
            return f"the server did not answer within {settings.timeout:g} s at {stage}", "timeout"
        except OSError as exc:
            code = errno.errorcode.get(exc.errno, "connection") if exc.errno else "connection"
            return f"could not connect to {settings.host}:{settings.port}", code
        except Exception as exc:  # the port promises DeliveryError only; the type name is safe, the text may not be
            return f"unexpected error at {stage} ({type(exc).__name__})", type(exc).__name__
        finally:
            if smtp is not None and delivered:
                self._put_back(smtp, sent + 1)
            elif smtp is not None:
                _close(smtp, polite=False)  # after a failure, just drop it (the server may be the thing that hangs)

    def _connect(self) -> smtplib.SMTP:
        settings = self.settings
        if settings.security == "ssl":
            return smtplib.SMTP_SSL(settings.host, settings.port, timeout=settings.timeout, context=self.tls_context)
        return smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout)

    def _kept(self) -> tuple[smtplib.SMTP | None, int]:
        """A kept connection that still answers NOOP, with its count of messages; (None, 0) if there is none."""
        while True:
            with self._idle_lock:
                if not self._idle:
                    return None, 0
                smtp, since, sent = self._idle.pop()  # the most recently used
                if time.monotonic() - since > KEEP_IDLE_SECONDS:  # it and every older one: close them all
                    stale, self._idle = [(smtp, since, sent), *self._idle], []
                else:
                    stale = []
            if stale:
                for old, _, _ in stale:
                    _close(old, polite=False)  # likely closed by the server already: no goodbye to wait for
                return None, 0
            try:
                sock = smtp.sock
                if sock is None:  # closed under us: not reusable
                    raise OSError("not connected")
                sock.settimeout(min(self.settings.timeout, NOOP_TIMEOUT_SECONDS))  # a dead link: give up soon
                if smtp.noop()[0] == 250:
                    sock.settimeout(self.settings.timeout)
                    return smtp, sent
            except (smtplib.SMTPException, OSError, AttributeError):
                pass
            _close(smtp, polite=False)  # the server dropped it (or it is not well): try the next, or connect

    def _put_back(self, smtp: smtplib.SMTP, sent: int) -> None:
        if sent < MAX_MESSAGES_PER_CONNECTION:
            with self._idle_lock:
                if len(self._idle) < MAX_IDLE_CONNECTIONS:
                    self._idle.append((smtp, time.monotonic(), sent))
                    return
        _close(smtp, polite=True)

    def close(self) -> None:
        """QUIT every kept connection (tests; a worker that exits just drops them)."""
        with self._idle_lock:
            kept, self._idle = self._idle, []
        for smtp, _, _ in kept:
            _close(smtp, polite=True)

    def _fail(self, message: Message, reason: str, code: str | int | None) -> None:
        log.warning(
            "email not delivered channel=smtp to=%s provider_code=%s reason=%s",
            message.contact.masked,
            code,
            reason,
        )
        raise DeliveryError(self.name, reason, code)

    def describe(self) -> str:
        s = self.settings
        login = f", login {s.username}" if s.username else ""
        ca = f", CA {s.ca_file}" if s.ca_file else ""
        return f"smtp ({s.host}:{s.port}, {s.security}{login}{ca}, from {s.from_address})"


def _first_code(refused: dict) -> int | None:
    """The SMTP reply code of the first refused recipient (smtplib gives each as (code, text))."""
    for value in refused.values():
        if isinstance(value, tuple) and value and isinstance(value[0], int):
            return value[0]
    return None


def _close(smtp: smtplib.SMTP, polite: bool) -> None:
    """QUIT politely if asked (a connection that is not kept), but never wait long for the goodbye; otherwise just
    drop the connection."""
    try:
        if polite and smtp.sock is not None:
            smtp.sock.settimeout(min(smtp.timeout, 1.0))
            smtp.quit()
    except Exception:
        pass
    finally:
        try:
            smtp.close()
        except Exception:
            pass
