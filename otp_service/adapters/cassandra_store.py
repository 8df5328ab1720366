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
import re
import ssl
import threading
import time
from datetime import datetime, timezone
from typing import Sequence, cast

from cassandra import ConsistencyLevel, DriverException, RequestExecutionException
from cassandra.auth import PlainTextAuthProvider
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile, NoHostAvailable
from cassandra.connection import ConnectionException
from cassandra.policies import DCAwareRoundRobinPolicy, TokenAwarePolicy
from cassandra.protocol import ErrorMessage
from cassandra.query import tuple_factory

from .cassandra_settings import CassandraSettings
from .store import BlockedRow, Counter, OtpRow, Store, StoreUnavailable, Taken, ttl_seconds

log = logging.getLogger("otp_service.store.cassandra")

# ErrorMessage: a server error the driver has no class for, raised as is. Over protocol v5, Cassandra 5.0 answers a
# lightweight transaction whose proposal reached fewer than a quorum of replicas with CAS_WRITE_UNKNOWN (code 0x1700),
# which cassandra-driver (3.30) has no class for (over v4, the store's default, it is a WriteTimeout of type CAS): its
# outcome is unknown, like a timeout's, so it is a 503 like one.
_DRIVER_ERRORS = (NoHostAvailable, RequestExecutionException, DriverException, ConnectionException, ErrorMessage,
                  OSError)
_RECONNECT_PAUSE = 2.0  # seconds between connection attempts while the cluster is unreachable

_OTP_FIELDS = (
    "otp, created_on, updated_on, expires_on, retry_count, is_locked, locked_on, send_count, window_start, "
    "last_sent_on, blocked_until, version"
)
# Written unqualified here; statements() names each table's keyspace before they are prepared: no `USE`, which
# Cassandra 5.0 warns about with prepared statements, and no per-statement keyspace, which only protocol v5 has.
_STATEMENTS = {
    "get_otp": f"SELECT type, key, {_OTP_FIELDS}, TTL(version) FROM otp WHERE type = ? AND key = ?",
    "insert_otp": f"INSERT INTO otp (type, key, {_OTP_FIELDS}) VALUES ({', '.join(['?'] * 14)}) "
    "IF NOT EXISTS USING TTL ?",
    "update_otp": "UPDATE otp USING TTL ? SET "
    + ", ".join(f"{name} = ?" for name in _OTP_FIELDS.split(", "))
    + " WHERE type = ? AND key = ? IF version = ?",
    "delete_otp": "DELETE FROM otp WHERE type = ? AND key = ? IF EXISTS",
    "block_key": "INSERT INTO blocked_key (type, key, created_on, blocked_on, blocked_until) "
    "VALUES (?, ?, ?, ?, ?) USING TTL ?",
    "get_block": "SELECT type, key, created_on, blocked_on, blocked_until FROM blocked_key "
    "WHERE type = ? AND key = ?",
    # The health check reads one partition of the otp table at LOCAL_QUORUM (no row is ever written under the type
    # 'health'): it answers only while a quorum of that partition's replicas does, the condition every generate and
    # verify needs. system.local, read before, is answered by the coordinator alone, even with the rest of the ring
    # down.
    "ping": "SELECT version FROM otp WHERE type = 'health' AND key = 'ping'",
}
# Statements that may be sent again (to the next host, after a timeout or a lost connection) without changing what
# they do: the reads, and the block, which writes the same values whenever it lands. The lightweight transactions
# are not: a retried IF NOT EXISTS / IF version = ? that had in fact applied would answer "not applied".
_IDEMPOTENT = frozenset({"get_otp", "get_block", "block_key", "ping"})

# The abuse limits' counters (cql/005_abuse_counter.cql): compare-and-set rows, not counter columns (which take no
# TTL and no condition).
_COUNTER_STATEMENTS = {
    "insert_count": "INSERT INTO abuse_counter (name, start, count) VALUES (?, ?, 1) IF NOT EXISTS USING TTL ?",
    "set_count": "UPDATE abuse_counter USING TTL ? SET count = ? WHERE name = ? AND start = ? IF count = ?",
}
_STATEMENTS.update(_COUNTER_STATEMENTS)
# A counter's value as this process last saw it: the next compare-and-set's guess. Right, a take costs one round
# trip; wrong (another process counted since), the answer carries the current value and one more round trip fixes it.
_COUNTER_HINTS_MAX = 50_000
_COUNTER_ROUNDS = 50  # lost compare-and-sets in a row on one counter before the request is answered 503
# A counter this process saw at its limit is refused from that sighting for this long, without a transaction: a
# client hammering past its limit (or a gateway not named in OTP_TRUSTED_PROXIES) then costs Cassandra one
# compare-and-set a second per process instead of one per request, and cannot pile Paxos contention on the counter's
# partition. A count only grows within its window, except by release_counts, which another process may do
# meanwhile: that release is seen at most this late (the take is refused where it could have been taken).
_FULL_TRUST_SECONDS = 1.0


_TABLE = re.compile(r"\b(FROM|INTO|UPDATE) (otp|blocked_key|abuse_counter)\b")


def statements(keyspace: str) -> dict[str, str]:
    """The store's statements, by name, their tables qualified with `keyspace` (a plain identifier: settings)."""
    return {name: _TABLE.sub(rf"\1 {keyspace}.\2", cql) for name, cql in _STATEMENTS.items()}


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
        protocol_version=settings.protocol_version,
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
    # Off: with it on (a new key's generate one lightweight transaction, create_otp, instead of reads and one), the
    # three-node cluster test (paxos_variant v2, one node SIGKILLed under load) saw a right code answered
    # ERROR_INVALID_OTP and a key's five sends read back at SERIAL as one, which no single-node test shows (the first
    # has since been seen with it off too). Until that is understood, a generate reads first, as before; create_otp
    # stays, and its tests run.
    insert_first = False

    def __init__(self, settings: CassandraSettings, *, keyspace: str | None = None):
        self.settings = settings
        self.keyspace = keyspace or settings.keyspace
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._cluster: Cluster | None = None
        self._session = None
        self._prepared: dict = {}
        self._next_attempt = 0.0
        self._counter_hints: dict[tuple[str, float], int] = {}
        self._seen_full: dict[tuple[str, float], float] = {}  # counter -> when (monotonic) a take found it full
        self.full_trust_seconds = _FULL_TRUST_SECONDS

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
                session = cluster.connect()
                self._prepared = {}
                for name, cql in statements(self.keyspace).items():
                    prepared = session.prepare(cql)
                    prepared.is_idempotent = name in _IDEMPOTENT
                    self._prepared[name] = prepared
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

    def _send(self, name: str, values: tuple):
        """Start a statement without waiting for it; _answer(future) waits."""
        session = self._ready()
        try:
            return name, session.execute_async(self._prepared[name], values)
        except _DRIVER_ERRORS as exc:
            raise StoreUnavailable(f"cassandra: {name}: {type(exc).__name__}") from None

    @staticmethod
    def _answer(sent):
        name, future = sent
        try:
            return future.result()
        except _DRIVER_ERRORS as exc:
            raise StoreUnavailable(f"cassandra: {name}: {type(exc).__name__}") from None

    # -- otp ------------------------------------------------------------------------------------------------------
    def get_otp(self, type_: str, key: str) -> OtpRow | None:
        found = self._run("get_otp", (type_, key)).one()
        if found is None:
            return None
        ttl = found[14]
        return _otp_row(found, time.time() + (ttl if ttl is not None else 0))

    def insert_otp(self, row: OtpRow) -> bool:
        ttl = ttl_seconds(row.expires_at, time.time(), round_up=False)
        return self._run("insert_otp", (row.type, row.key, *_fields(row), ttl)).was_applied

    def create_otp(self, row: OtpRow) -> tuple[bool, OtpRow | None, BlockedRow | None]:
        """One round trip: the block's read is sent, then the INSERT ... IF NOT EXISTS while it is on its way. A
        failed IF NOT EXISTS answers with the row that stood in its way, read at LOCAL_SERIAL by the transaction
        itself, so no read follows it (that row carries no TTL: expires_at is 0.0)."""
        sent = self._send("get_block", (row.type, row.key))
        ttl = ttl_seconds(row.expires_at, time.time(), round_up=False)
        result = self._run("insert_otp", (row.type, row.key, *_fields(row), ttl))
        try:
            block = _blocked_row(self._answer(sent).one())
        except StoreUnavailable:
            # The insert is written (or refused) whatever the read did: read the block once more rather than answer
            # 503 for a send that is already counted.
            block = self.get_block(row.type, row.key)
        if result.was_applied:
            return True, None, block
        found = result.one()
        names = result.column_names or ()
        existing = _otp_row(tuple(found[names.index(name)] for name in _ROW_COLUMNS), 0.0) if found else None
        return False, existing, block

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
        return _blocked_row(self._run("get_block", (type_, key)).one())

    def get_otp_and_block(self, type_: str, key: str) -> tuple[OtpRow | None, BlockedRow | None]:
        """Both reads in one round trip: the block's read is sent, then the row is read while it is on its way.
        The contract wants the block read no earlier than the row, and two reads in flight at once may land in
        either order. That only matters when the row is gone and no block was seen (a block written, then the row
        deleted, between the two reads): then the block is read again, after the row."""
        sent = self._send("get_block", (type_, key))
        row = self.get_otp(type_, key)
        block = _blocked_row(self._answer(sent).one())
        if row is None and block is None:
            block = self.get_block(type_, key)
        return row, block

    # -- abuse counters -------------------------------------------------------------------------------------------
    def take_counts(self, counters: Sequence[Counter]) -> Taken:
        """Every counter's compare-and-set is sent at once (execute_async), so a take costs one round trip when this
        process's guesses are right. Cassandra cannot make writes to several partitions one transaction: each counter
        is taken only below its limit, and when one refuses, those taken are given back before the answer."""
        if not counters:
            return Taken(None, ())
        known = [self._counter_hints.get((c.name, c.start)) for c in counters]
        full = self._known_full(counters, known)
        if full is not None:
            return Taken(full, tuple(k or 0 for k in known))
        session = self._ready()
        counts, taken, refused = [0] * len(counters), [False] * len(counters), None
        pending = list(range(len(counters)))
        for _ in range(_COUNTER_ROUNDS):
            sent = [(i, *self._send_take(session, counters[i], known[i])) for i in pending]
            pending = []
            for i, future, guess in sent:
                applied, current = self._cas_outcome(future, "take_counts")
                counter = counters[i]
                if applied and guess is not None and guess >= counter.limit:  # a full count written again: refused
                    counts[i] = known[i] = guess
                    refused = i if refused is None else min(refused, i)
                elif applied:
                    counts[i] = known[i] = (guess or 0) + 1
                    taken[i] = True
                elif (current if current is not None else 0) >= counter.limit:
                    # At its limit; with no row, only a counter whose limit is 0 (only read) gets here.
                    counts[i], known[i] = current or 0, current
                    refused = i if refused is None else min(refused, i)
                else:
                    known[i] = current  # lost the compare-and-set (or the row is gone): try again from what is there
                    pending.append(i)
            if refused is not None or not pending:
                break
        self._remember(counters, known)
        seen = time.monotonic()
        for counter, count in zip(counters, known, strict=True):  # at its limit now, by this take or another's
            if count is not None and counter.limit > 0 and count >= counter.limit:
                self._seen_full[(counter.name, counter.start)] = seen
        if refused is None and pending:
            self.release_counts([c for c, t in zip(counters, taken, strict=True) if t])
            raise StoreUnavailable("cassandra: take_counts: too many concurrent writers")
        if refused is not None:
            self.release_counts([c for c, t in zip(counters, taken, strict=True) if t])
        return Taken(refused, tuple(counts))

    def release_counts(self, counters: Sequence[Counter]) -> None:
        if not counters:
            return
        session = self._ready()
        for counter in counters:
            self._seen_full.pop((counter.name, counter.start), None)
        known = [self._counter_hints.get((c.name, c.start)) for c in counters]
        pending = list(range(len(counters)))
        for _ in range(_COUNTER_ROUNDS):
            sent = []
            for i in pending:
                guess = known[i]
                if guess is None:  # nothing seen yet: learn the value from a compare-and-set that cannot apply
                    guess = known[i] = -1
                if guess == 0:
                    continue
                counter = counters[i]
                values = (self._counter_ttl(counter), guess - 1, counter.name, _ms(counter.start), guess)
                sent.append((i, session.execute_async(self._prepared["set_count"], values)))
            pending = []
            for i, future in sent:
                applied, current = self._cas_outcome(future, "release_counts")
                if applied:
                    count = known[i]
                    assert count is not None  # the compare-and-set was on the count this process knew
                    known[i] = count - 1
                elif current is not None and current > 0:
                    known[i] = current
                    pending.append(i)
                else:
                    known[i] = None if current is None else 0
            if not pending:
                break
        self._remember(counters, known)

    def _send_take(self, session, counter: Counter, guess: int | None) -> tuple[object, int | None]:
        """The compare-and-set that takes one from `counter` if its count is `guess` (None: if it has no row), and
        the guess it was sent with."""
        ttl = self._counter_ttl(counter)
        if guess is None and counter.limit <= 0:
            guess = -1  # only read: a compare-and-set that cannot apply answers the current count
        if guess is None:
            insert = self._prepared["insert_count"]
            return session.execute_async(insert, (counter.name, _ms(counter.start), ttl)), None
        new = guess if guess >= counter.limit else guess + 1
        values = (ttl, new, counter.name, _ms(counter.start), guess)
        return session.execute_async(self._prepared["set_count"], values), guess

    @staticmethod
    def _counter_ttl(counter: Counter) -> int:
        return ttl_seconds(counter.ends, time.time(), round_up=True)

    @staticmethod
    def _cas_outcome(future, name: str) -> tuple[bool, int | None]:
        """([applied], the current count when not applied: None when there is no row)."""
        try:
            result = future.result()
        except _DRIVER_ERRORS as exc:
            raise StoreUnavailable(f"cassandra: {name}: {type(exc).__name__}") from None
        found = result.one()
        if found is None:
            return False, None
        applied = bool(found[0])
        if applied:
            return True, None
        names = list(result.column_names or ())
        current = found[names.index("count")] if "count" in names else None
        return False, current

    def _known_full(self, counters: Sequence[Counter], known: list[int | None]) -> int | None:
        """The first counter this process saw at its limit within full_trust_seconds, and knows no lower since."""
        now = time.monotonic()
        for i, (counter, count) in enumerate(zip(counters, known, strict=True)):
            seen = self._seen_full.get((counter.name, counter.start))
            if seen is None or counter.limit <= 0 or count is None or count < counter.limit:
                continue
            if now - seen < self.full_trust_seconds:
                return i
            self._seen_full.pop((counter.name, counter.start), None)  # pop: another thread may have dropped it
        return None

    def _remember(self, counters: Sequence[Counter], known: list[int | None]) -> None:
        hints = self._counter_hints
        if len(hints) > _COUNTER_HINTS_MAX:
            hints.clear()
            self._seen_full.clear()
        for counter, value in zip(counters, known, strict=True):
            if value is None or value < 0:
                hints.pop((counter.name, counter.start), None)
            else:
                hints[(counter.name, counter.start)] = value

    def ping(self) -> None:
        self._run("ping", ())


# The columns get_otp reads, by name: how a failed IF NOT EXISTS's answer (every column of the row, in the table's
# order, after [applied]) is read the same way.
_ROW_COLUMNS = ("type", "key", *_OTP_FIELDS.split(", "))


def _otp_row(found, expires_at: float) -> OtpRow | None:
    """The row from get_otp's columns (type, key, then _OTP_FIELDS); None for only an expiring row marker."""
    if found[13] is None:  # no version: only a row marker, outliving cells that have expired
        return None
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
        blocked_until=_seconds(found[12]),
        version=found[13],
        expires_at=expires_at,
    )


def _blocked_row(found) -> BlockedRow | None:
    if found is None or found[4] is None:
        return None
    # created_on and blocked_on are written with every block (block_key), so they are set wherever blocked_until is
    return BlockedRow(found[0], found[1], cast(float, _seconds(found[2])), cast(float, _seconds(found[3])),
                      cast(float, _seconds(found[4])))


def _fields(row: OtpRow) -> tuple:
    return (
        row.otp, _ms(row.created_on), _ms(row.updated_on), _ms(row.expires_on), row.retry_count, row.is_locked,
        _ms(row.locked_on), row.send_count, _ms(row.window_start), _ms(row.last_sent_on), _ms(row.blocked_until),
        row.version,
    )
