"""How to reach the Cassandra cluster: contact points, keyspace, data centre, credentials, TLS and timeouts."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..envreader import ConfigError, EnvReader


@dataclass(frozen=True)
class CassandraSettings:
    contact_points: tuple[str, ...] = ()
    port: int = 9042
    keyspace: str = "otp"
    local_dc: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    tls_ca_file: str | None = None
    connect_timeout: float = 5.0
    request_timeout: float = 2.0
    # 4, not the driver's highest: with protocol v5 the driver frames messages in checksummed segments, and under
    # load a gevent worker's connection failed that check (CrcMismatchException, cassandra-driver 3.30.1, PYTHON-1337):
    # the host was marked down and hundreds of requests answered 503. v4 has no such framing (and no per-statement
    # keyspace, which the store does not need: its statements name their keyspace).
    protocol_version: int = 4

    @classmethod
    def from_env(cls, env: EnvReader) -> "CassandraSettings":
        keyspace = env.str("OTP_CASSANDRA_KEYSPACE", "otp")
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,47}", keyspace):
            raise ConfigError(f"OTP_CASSANDRA_KEYSPACE must be a plain identifier, got {keyspace!r}")
        return cls(
            contact_points=env.list("OTP_CASSANDRA_CONTACT_POINTS"),
            port=env.int("OTP_CASSANDRA_PORT", 9042, 1, 65535),
            keyspace=keyspace,
            local_dc=env.str("OTP_CASSANDRA_LOCAL_DC"),
            username=env.str("OTP_CASSANDRA_USERNAME"),
            password=env.str("OTP_CASSANDRA_PASSWORD"),
            tls=env.bool("OTP_CASSANDRA_TLS", False),
            tls_ca_file=env.str("OTP_CASSANDRA_TLS_CA_FILE"),
            connect_timeout=env.float("OTP_CASSANDRA_CONNECT_TIMEOUT", 5.0, 0.1),
            request_timeout=env.float("OTP_CASSANDRA_REQUEST_TIMEOUT", 2.0, 0.1),
            protocol_version=env.int("OTP_CASSANDRA_PROTOCOL_VERSION", 4, 3, 5),
        )
