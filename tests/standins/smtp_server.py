"""A real SMTP server on 127.0.0.1 (aiosmtpd) that keeps what it receives, with STARTTLS or implicit TLS using a
test CA made on the spot, and AUTH that accepts one user and password and refuses every other.

Also `silent_server()`: a port that accepts connections and never says a word, for timeout tests.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import socket
import ssl
import threading
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Iterator

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


# -- certificates ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TestPki:
    ca_file: Path  # what the client trusts (OTP_SMTP_CA_FILE)
    cert_file: Path  # the server's chain: leaf, then CA
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


def make_pki(directory: Path, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> TestPki:
    """A throw-away CA and a server certificate for `hosts`, in `directory` (a test's tmp_path)."""
    now = dt.datetime.now(dt.timezone.utc)
    validity = (now - dt.timedelta(minutes=5), now + dt.timedelta(days=1))

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "otp-service test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(validity[0])
        .not_valid_after(validity[1])
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )  # keyCertSign, cRLSign
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(validity[0])
        .not_valid_after(validity[1])
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )

    pem = serialization.Encoding.PEM
    ca_file = directory / "test-ca.pem"
    cert_file = directory / "server-chain.pem"
    key_file = directory / "server-key.pem"
    ca_file.write_bytes(ca_cert.public_bytes(pem))
    cert_file.write_bytes(cert.public_bytes(pem) + ca_cert.public_bytes(pem))
    key_file.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return TestPki(ca_file, cert_file, key_file)


# -- the server --------------------------------------------------------------------------------------------------------
@dataclass
class ReceivedEmail:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    tls: bool  # the DATA came over TLS (STARTTLS or implicit)
    login: str | None  # the user that authenticated, if any


@dataclass
class SmtpStandIn:
    """`security`: "starttls" (STARTTLS required before anything else), "ssl" (implicit TLS) or "none"."""

    pki: TestPki | None = None
    security: str = "starttls"
    credentials: tuple[str, str] | None = None  # the one accepted login; None: no AUTH needed
    refuse_recipients: bool = False
    received: list[ReceivedEmail] = field(default_factory=list)
    logins: list[tuple[str, bool]] = field(default_factory=list)  # (user, accepted), each AUTH tried

    def __post_init__(self):
        self._lock = threading.Lock()
        self._controller: Controller | None = None
        self.port = 0

    def start(self) -> "SmtpStandIn":
        tls_kwargs: dict = {}
        if self.security in ("starttls", "ssl"):
            assert self.pki is not None, "TLS needs a test PKI"
            if self.security == "starttls":
                tls_kwargs = {"tls_context": self.pki.server_context(), "require_starttls": True}
            else:
                # aiosmtpd offers AUTH only after STARTTLS unless told the link is safe: here it is TLS from the start
                tls_kwargs = {"ssl_context": self.pki.server_context(), "auth_require_tls": False}
        auth_kwargs: dict = {}
        if self.credentials is not None:
            # Mail without AUTH is refused, except over implicit TLS where aiosmtpd warns about that combination;
            # there the tests check that the message came from the logged-in user instead.
            auth_kwargs = {"authenticator": self._authenticate, "auth_required": self.security != "ssl"}
        self.port = _free_port()
        self._controller = Controller(
            _Handler(self),
            hostname="127.0.0.1",
            port=self.port,
            server_hostname="smtp.standin.test",  # else aiosmtpd asks the resolver for this host's name
            ready_timeout=5.0,
            **tls_kwargs,
            **auth_kwargs,
        )
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()

    def messages(self) -> list[ReceivedEmail]:
        with self._lock:
            return list(self.received)

    def _authenticate(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        user, password = auth_data.login.decode(), auth_data.password.decode()
        accepted = self.credentials == (user, password)
        with self._lock:
            self.logins.append((user, accepted))
        if not accepted:  # handled=False: aiosmtpd answers 535 itself
            return AuthResult(success=False, handled=False)
        return AuthResult(success=True, auth_data=auth_data)


class _Handler:
    def __init__(self, standin: SmtpStandIn):
        self.standin = standin

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802 (aiosmtpd's hook)
        if self.standin.refuse_recipients:
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        message = BytesParser(policy=policy.default).parsebytes(envelope.original_content or envelope.content)
        tls = server.transport is not None and server.transport.get_extra_info("ssl_object") is not None
        auth = session.auth_data if session.authenticated else None
        login = auth.login.decode() if isinstance(auth, LoginPassword) else None
        with self.standin._lock:
            received = ReceivedEmail(envelope.mail_from, list(envelope.rcpt_tos), message, tls, login)
            self.standin.received.append(received)
        return "250 Message accepted for delivery"


# -- a server that never answers ---------------------------------------------------------------------------------------
@contextlib.contextmanager
def silent_server() -> Iterator[int]:
    """A port on 127.0.0.1 whose connections complete (the kernel's backlog) but never get a greeting."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()


def closed_port() -> int:
    """A port on 127.0.0.1 with nobody listening (connections are refused)."""
    return _free_port()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
