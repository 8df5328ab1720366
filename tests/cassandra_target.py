"""Which Cassandra the Cassandra-backed tests run against, chosen once per session:

1. OTP_CASSANDRA_CONTACT_POINTS is set: that real cluster (and its OTP_CASSANDRA_* settings); no fake is involved.
2. Else a Docker engine answers: the official cassandra image through testcontainers.
3. Else the project's own CQL test server (tests/cqlserver), speaking the native protocol on 127.0.0.1.

Every session migrates a keyspace of its own (otp_test_<random>) with the project's `cql/` files through
`otp-service migrate`'s code, and drops it at the end. The choice is printed in the pytest header and summary.
"""
from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, replace

from otp_service.adapters.cassandra_migrate import default_cql_dir, migrate_cluster
from otp_service.adapters.cassandra_store import CassandraStore, build_cluster
from otp_service.config import CassandraSettings, EnvReader

TESTCONTAINERS_IMAGE = "cassandra:4.1"


def choose() -> str:
    if os.environ.get("OTP_CASSANDRA_CONTACT_POINTS", "").strip():
        return "real cluster"
    if _docker_available():
        return "testcontainers"
    return "CQL test server"


def _docker_available() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=3)
        client.ping()
        client.close()
        return True
    except Exception:
        return False


@dataclass
class CassandraTarget:
    kind: str
    settings: CassandraSettings
    keyspace: str
    stop: object = None
    server: object = None  # the CQL test server, when that is the target

    @property
    def description(self) -> str:
        points = ",".join(self.settings.contact_points)
        return f"{self.kind} at {points}:{self.settings.port}, keyspace {self.keyspace}"

    def new_store(self) -> CassandraStore:
        return CassandraStore(self.settings, keyspace=self.keyspace)

    def env(self) -> dict[str, str]:
        """OTP_* variables that point a service at this target."""
        s = self.settings
        env = {
            "OTP_STORE": "cassandra",
            "OTP_CASSANDRA_CONTACT_POINTS": ",".join(s.contact_points),
            "OTP_CASSANDRA_PORT": str(s.port),
            "OTP_CASSANDRA_KEYSPACE": self.keyspace,
        }
        if s.local_dc:
            env["OTP_CASSANDRA_LOCAL_DC"] = s.local_dc
        if s.username:
            env.update(OTP_CASSANDRA_USERNAME=s.username, OTP_CASSANDRA_PASSWORD=s.password or "")
        return env


def start() -> CassandraTarget:
    kind = choose()
    keyspace = f"otp_test_{uuid.uuid4().hex[:10]}"
    if kind == "real cluster":
        settings = CassandraSettings.from_env(EnvReader())
        settings = replace(settings, request_timeout=max(settings.request_timeout, 10.0))
        target = CassandraTarget(kind, settings, keyspace)
    elif kind == "testcontainers":
        try:
            from testcontainers.community.cassandra import CassandraContainer
        except ImportError:  # testcontainers before 4.10
            from testcontainers.cassandra import CassandraContainer

        container = CassandraContainer(TESTCONTAINERS_IMAGE)
        container.start()
        host, port = container.get_contact_points()[0]
        settings = CassandraSettings(contact_points=(host,), port=port, local_dc=container.get_local_datacenter(),
                                     request_timeout=10.0)
        target = CassandraTarget(kind, settings, keyspace, stop=container.stop)
    else:
        from .cqlserver import CqlTestServer

        server = CqlTestServer(host="127.0.0.1", port=0)
        server.start()
        settings = CassandraSettings(contact_points=("127.0.0.1",), port=server.port, request_timeout=5.0)
        target = CassandraTarget(kind, settings, keyspace, stop=server.stop, server=server)
    migrate_cluster(target.settings, keyspace, default_cql_dir(), say=lambda line: None)
    return target


def finish(target: CassandraTarget) -> None:
    try:
        cluster = build_cluster(target.settings)
        try:
            cluster.connect().execute(f"DROP KEYSPACE IF EXISTS {target.keyspace}")
        finally:
            cluster.shutdown()
    finally:
        if target.stop is not None:
            target.stop()
