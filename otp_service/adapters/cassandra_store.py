"""The production store: Cassandra through the DataStax `cassandra-driver`.

- One session per process, opened lazily and re-opened after a fork (gunicorn workers never share one).
- Statements are prepared once per session; reads and writes at LOCAL_QUORUM, lightweight transactions at
  LOCAL_SERIAL. Every write to the otp table is a lightweight transaction (IF NOT EXISTS / IF version = ? /
  IF EXISTS), so all of them are ordered by Paxos rather than by clocks.
- Rows are written USING TTL and every UPDATE carries the row's remaining TTL. INSERTs round their TTL down and
  UPDATEs round up, so the row marker an INSERT leaves never outlives the cells (store.ttl_seconds).
- Any driver failure (no host, timeout, unavailable) is StoreUnavailable: the API answers 503 within the request
  timeout, and the driver's own reconnection brings the store back without a restart.
"""
from __future__ import annotations

import logging
import os
import ssl
import threading
import time
from datetime import datetime, timezone

from cassandra import ConsistencyLevel, DriverException, RequestExecutionException
from cassandra.auth import PlainTextAuthProvider
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile, NoHostAvailable
from cassandra.connection import ConnectionException
from cassandra.policies import DCAwareRoundRobinPolicy, TokenAwarePolicy
from cassandra.query import tuple_factory

from ..config import CassandraSettings
from .store import BlockedRow, OtpRow, Store, StoreUnavailable, ttl_seconds

log = logging.getLogger("otp_service.store.cassandra")

_DRIVER_ERRORS = (NoHostAvailable, RequestExecutionException, DriverException, ConnectionException, OSError)
_RECONNECT_PAUSE = 2.0  # seconds between connection attempts while the cluster is unreachable

_OTP_FIELDS = (
    "otp, created_on, updated_on, expires_on, retry_count, is_locked, locked_on, send_count, window_start, "
    "last_sent_on, version"
)
_STATEMENTS = {
    "get_otp": f"SELECT type, key, {_OTP_FIELDS}, TTL(version) FROM otp WHERE type = ? AND key = ?",
    "insert_otp": f"INSERT INTO otp (type, key, {_OTP_FIELDS}) VALUES ({', '.join(['?'] * 13)}) "
    "IF NOT EXISTS USING TTL ?",
    "update_otp": "UPDATE otp USING TTL ? SET "
    + ", ".join(f"{name} = ?" for name in _OTP_FIELDS.split(", "))
    + " WHERE type = ? AND key = ? IF version = ?",
    "delete_otp": "DELETE FROM otp WHERE type = ? AND key = ? IF EXISTS",
    "block_key": "INSERT INTO blocked_key (type, key, created_on, blocked_on, blocked_until) "
    "VALUES (?, ?, ?, ?, ?) USING TTL ?",
    "get_block": "SELECT type, key, created_on, blocked_on, blocked_until FROM blocked_key "
    "WHERE type = ? AND key = ?",
    "ping": "SELECT release_version FROM system.local",
}


def build_cluster(settings: CassandraSettings) -> Cluster:
    """A Cluster configured from settings: LOCAL_QUORUM / LOCAL_SERIAL, token- and DC-aware routing."""
    balancing = TokenAwarePolicy(DCAwareRoundRobinPolicy(local_dc=settings.local_dc))
    profile = ExecutionProfile(
        load_balancing_policy=balancing,
        consistency_level=ConsistencyLevel.LOCAL_QUORUM,
        serial_consistency_level=ConsistencyLevel.LOCAL_SERIAL,
        request_timeout=settings.request_timeout,
        row_factory=tuple_factory,
    )
    auth = None
    if settings.username:
        auth = PlainTextAuthProvider(username=settings.username, password=settings.password or "")
    tls = None
    if settings.tls:
        tls = ssl.create_default_context(cafile=settings.tls_ca_file)
    return Cluster(
        contact_points=list(settings.contact_points),
        connection_class=connection_class(),
        port=settings.port,
        auth_provider=auth,
        ssl_context=tls,
        execution_profiles={EXEC_PROFILE_DEFAULT: profile},
        connect_timeout=settings.connect_timeout,
        control_connection_timeout=settings.connect_timeout,
    )


def connection_class():
    """The driver's gevent connection in a gevent-patched process (the default gunicorn worker), so a query waits
    in its greenlet while the worker serves others; otherwise the driver's own default (None)."""
    try:
        from gevent import monkey
    except ImportError:
        return None
    if not monkey.is_module_patched("socket"):
        return None
    from cassandra.io.geventreactor import GeventConnection

    return GeventConnection


def _ms(seconds: float | None) -> int | None:
    return None if seconds is None else int(round(seconds * 1000))


def _seconds(moment: datetime | None) -> float | None:
    if moment is None:
        return None
    return moment.replace(tzinfo=timezone.utc).timestamp()


class CassandraStore(Store):
    name = "cassandra"

    def __init__(self, settings: CassandraSettings, *, keyspace: str | None = None):
        self.settings = settings
        self.keyspace = keyspace or settings.keyspace
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._cluster: Cluster | None = None
        self._session = None
        self._prepared: dict = {}
        self._next_attempt = 0.0

    # -- connection, per process ----------------------------------------------------------------------------------
    def open(self) -> None:
        self._ready()

    def _ready(self):
        if self._session is not None and self._pid == os.getpid():
            return self._session
        with self._lock:
            if self._pid != os.getpid():  # a forked child: the parent's connections are not ours to use or close
                self._cluster, self._session, self._prepared, self._next_attempt = None, None, {}, 0.0
                self._pid = os.getpid()
            if self._session is not None:
                return self._session
            if time.monotonic() < self._next_attempt:
                raise StoreUnavailable("cassandra: unreachable; retrying shortly")
            cluster = build_cluster(self.settings)
            try:
                session = cluster.connect(self.keyspace)
                self._prepared = {name: session.prepare(cql) for name, cql in _STATEMENTS.items()}
            except _DRIVER_ERRORS as exc:
                cluster.shutdown()
                self._next_attempt = time.monotonic() + _RECONNECT_PAUSE
                raise StoreUnavailable(f"cassandra: cannot connect: {type(exc).__name__}") from None
            self._cluster, self._session = cluster, session
            log.info("connected to cassandra keyspace=%s", self.keyspace)
            return session

    def close(self) -> None:
        with self._lock:
            if self._cluster is not None and self._pid == os.getpid():
                self._cluster.shutdown()
            self._cluster, self._session, self._prepared = None, None, {}

    def _run(self, name: str, values: tuple):
        session = self._ready()
        try:
            return session.execute(self._prepared[name], values)
        except _DRIVER_ERRORS as exc:
            raise StoreUnavailable(f"cassandra: {name}: {type(exc).__name__}") from None

    # -- otp ------------------------------------------------------------------------------------------------------
    def get_otp(self, type_: str, key: str) -> OtpRow | None:
        found = self._run("get_otp", (type_, key)).one()
        if found is None or found[12] is None:  # no row, or only an expiring row marker
            return None
        ttl = found[13]
        return OtpRow(
            type=found[0],
            key=found[1],
            otp=found[2],
            created_on=_seconds(found[3]),
            updated_on=_seconds(found[4]),
            expires_on=_seconds(found[5]),
            retry_count=found[6] or 0,
            is_locked=bool(found[7]),
            locked_on=_seconds(found[8]),
            send_count=found[9] or 0,
            window_start=_seconds(found[10]),
            last_sent_on=_seconds(found[11]),
            version=found[12],
            expires_at=time.time() + (ttl if ttl is not None else 0),
        )

    def insert_otp(self, row: OtpRow) -> bool:
        ttl = ttl_seconds(row.expires_at, time.time(), round_up=False)
        return self._run("insert_otp", (row.type, row.key, *_fields(row), ttl)).was_applied

    def update_otp(self, row: OtpRow, expected_version: int) -> bool:
        ttl = ttl_seconds(row.expires_at, time.time(), round_up=True)
        return self._run("update_otp", (ttl, *_fields(row), row.type, row.key, expected_version)).was_applied

    def delete_otp(self, type_: str, key: str) -> None:
        self._run("delete_otp", (type_, key))

    # -- blocked keys ---------------------------------------------------------------------------------------------
    def block_key(self, row: BlockedRow) -> None:
        ttl = ttl_seconds(row.blocked_until, time.time(), round_up=True)
        self._run(
            "block_key",
            (row.type, row.key, _ms(row.created_on), _ms(row.blocked_on), _ms(row.blocked_until), ttl),
        )

    def get_block(self, type_: str, key: str) -> BlockedRow | None:
        found = self._run("get_block", (type_, key)).one()
        if found is None or found[4] is None:
            return None
        return BlockedRow(found[0], found[1], _seconds(found[2]), _seconds(found[3]), _seconds(found[4]))

    def ping(self) -> None:
        self._run("ping", ())


def _fields(row: OtpRow) -> tuple:
    return (
        row.otp, _ms(row.created_on), _ms(row.updated_on), _ms(row.expires_on), row.retry_count, row.is_locked,
        _ms(row.locked_on), row.send_count, _ms(row.window_start), _ms(row.last_sent_on), row.version,
    )
