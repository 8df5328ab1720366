"""Which Cassandra the Cassandra-backed tests run against, chosen once per session:

1. OTP_CASSANDRA_CONTACT_POINTS is set: that cluster (and its OTP_CASSANDRA_* settings), as it is.
2. Else a Docker engine answers: the official cassandra image of the same release, through testcontainers.
3. Else a real Apache Cassandra node that the suite starts on 127.0.0.1 from Maven's jars (tests/cassandra_node.py),
   on free ports, in the session's temporary folder, and stops at the end.

There is no fallback: if the chosen Cassandra cannot be started or reached, every Cassandra-backed test errors with
the reason (and the node's log). Every session migrates a keyspace of its own (otp_test_<random>) with the project's
`cql/` files through `otp-service migrate`'s code, and drops it at the end. The pytest header names the choice; the
final summary names what answered, with its release_version from system.local.
"""
from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

from otp_service.adapters.cassandra_migrate import default_cql_dir, migrate_cluster
from otp_service.adapters.cassandra_store import CassandraStore, build_cluster
from otp_service.config import CassandraSettings, EnvReader

from . import cassandra_node

# The release the suite runs against, named once (scripts/cassandra-pom.xml); docker-compose.yml names the same.
CASSANDRA_VERSION = cassandra_node.version()
TESTCONTAINERS_IMAGE = f"cassandra:{CASSANDRA_VERSION}"


def choose() -> str:
    if os.environ.get("OTP_CASSANDRA_CONTACT_POINTS", "").strip():
        return "cluster"
    if _docker_available():
        return "testcontainers"
    return "node"


def describe_choice() -> str:
    kind = choose()
    if kind == "cluster":
        points = os.environ["OTP_CASSANDRA_CONTACT_POINTS"].strip()
        return f"the cluster at OTP_CASSANDRA_CONTACT_POINTS={points}"
    if kind == "testcontainers":
        return f"{TESTCONTAINERS_IMAGE} through testcontainers"
    return f"a real Apache Cassandra {CASSANDRA_VERSION} node the suite starts on 127.0.0.1 (tests/cassandra_node.py)"


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
    release_version: str = "?"
    log: Path | None = None  # the node's log, when the suite started the node

    @property
    def description(self) -> str:
        points = ",".join(self.settings.contact_points)
        where = {"cluster": "given by OTP_CASSANDRA_CONTACT_POINTS", "testcontainers": "testcontainers",
                 "node": "started by the suite"}[self.kind]
        text = (f"real Apache Cassandra {self.release_version} at {points}:{self.settings.port} ({where}), "
                f"keyspace {self.keyspace}")
        return text + (f", log {self.log}" if self.log else "")

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


def start(folder: Path) -> CassandraTarget:
    """Start (or reach) the session's Cassandra; `folder` holds a node the suite starts. Raises with the reason."""
    kind = choose()
    keyspace = f"otp_test_{uuid.uuid4().hex[:10]}"
    if kind == "cluster":
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
        node = cassandra_node.start_node(folder, say=lambda line: None)
        settings = CassandraSettings(contact_points=(node.address,), port=node.native_port, request_timeout=10.0)
        target = CassandraTarget(kind, settings, keyspace, stop=node.stop, log=node.log)
    try:
        target.release_version = _release_version(target.settings)
        migrate_cluster(target.settings, keyspace, default_cql_dir(), say=lambda line: None)
    except BaseException:
        if target.stop is not None:
            target.stop()
        raise
    return target


def _release_version(settings: CassandraSettings) -> str:
    cluster = build_cluster(settings)
    try:
        return cluster.connect().execute("SELECT release_version FROM system.local").one()[0]
    finally:
        cluster.shutdown()


def finish(target: CassandraTarget) -> None:
    try:
        if target.kind == "node":  # the node and its data go as a whole
            return
        cluster = build_cluster(target.settings)
        try:
            cluster.connect().execute(f"DROP KEYSPACE IF EXISTS {target.keyspace}")
        finally:
            cluster.shutdown()
    finally:
        if target.stop is not None:
            target.stop()
