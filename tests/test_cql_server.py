"""The CQL test server (tests/cqlserver) driven by the real, unmodified cassandra-driver.

Every test talks to the server through `cassandra.cluster.Cluster(["127.0.0.1"], port=server.port)` with
default settings (protocol negotiation, schema metadata, token-aware routing, client timestamps), except the
few raw-socket tests that check frames byte for byte against native_protocol_v4.spec.
"""
from __future__ import annotations

import datetime
import itertools
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from cassandra import (AlreadyExists, ConsistencyLevel, InvalidRequest, ProtocolVersion, Unauthorized)
from cassandra.auth import PlainTextAuthProvider
from cassandra.cluster import Cluster, NoHostAvailable
from cassandra.protocol import SyntaxException
from cassandra.query import BatchStatement, BatchType, SimpleStatement

from tests.cqlserver import CqlTestServer

pytestmark = pytest.mark.cassandra

ROOT = Path(__file__).resolve().parent.parent
CQL_DIR = ROOT / "cql"
_counter = itertools.count()


def split_cql(text: str):
    """Split a .cql file into statements: `;` ends a statement unless inside a string or a comment."""
    out, cur, i, n = [], [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("--", i) or text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
            continue
        if text.startswith("/*", i):
            j = text.find("*/", i + 2)
            i = n if j < 0 else j + 2
            continue
        if c in "'\"":
            j = i + 1
            while j < n:
                if text[j] == c:
                    if j + 1 < n and text[j + 1] == c:
                        j += 2
                        continue
                    break
                j += 1
            cur.append(text[i:j + 1])
            i = j + 1
            continue
        if c == ";":
            stmt = "".join(cur).strip()
            if stmt:
                out.append(stmt)
            cur = []
        else:
            cur.append(c)
        i += 1
    stmt = "".join(cur).strip()
    if stmt:
        out.append(stmt)
    return out


# ---------------------------------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server():
    srv = CqlTestServer(host="127.0.0.1", port=0)
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def cluster(server):
    c = Cluster(contact_points=["127.0.0.1"], port=server.port)
    yield c
    c.shutdown()


@pytest.fixture(scope="module")
def session(cluster):
    return cluster.connect()


@pytest.fixture
def ks(session):
    """A fresh keyspace per test, set as the session keyspace."""
    name = "ks_%d" % next(_counter)
    session.execute("CREATE KEYSPACE %s WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}" % name)
    session.set_keyspace(name)
    yield name
    session.execute("DROP KEYSPACE IF EXISTS %s" % name)


@pytest.fixture
def otp_schema(session):
    """The project's own schema files, applied statement by statement (keyspace `otp`)."""
    session.execute("DROP KEYSPACE IF EXISTS otp")
    for path in sorted(CQL_DIR.glob("*.cql")):
        for stmt in split_cql(path.read_text()):
            session.execute(stmt)
    session.set_keyspace("otp")
    yield "otp"
    session.execute("DROP KEYSPACE IF EXISTS otp")


def _now():
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)


def _naive(dt):
    return dt.astimezone(datetime.timezone.utc).replace(tzinfo=None)


# ---------------------------------------------------------------------------------------------------
# connection, metadata, DDL
# ---------------------------------------------------------------------------------------------------
def test_connects_with_default_settings_and_negotiates_v4(server, cluster, session):
    assert cluster.protocol_version == ProtocolVersion.V4
    row = session.execute("SELECT release_version FROM system.local").one()
    assert row.release_version.startswith("4.1")
    local = session.execute("SELECT * FROM system.local WHERE key = 'local'").one()
    assert local.data_center == "datacenter1"
    assert local.partitioner == "org.apache.cassandra.dht.Murmur3Partitioner"
    assert isinstance(local.host_id, uuid.UUID) and isinstance(local.schema_version, uuid.UUID)
    assert isinstance(local.tokens, (set, frozenset, list, tuple)) or local.tokens is not None
    assert list(session.execute("SELECT * FROM system.peers")) == []
    assert list(session.execute("SELECT * FROM system.peers_v2")) == []
    hosts = cluster.metadata.all_hosts()
    assert len(hosts) == 1 and hosts[0].datacenter == "datacenter1" and hosts[0].is_up


def test_project_schema_files_apply_and_show_in_metadata(server, cluster, session, otp_schema):
    ks_meta = cluster.metadata.keyspaces["otp"]
    assert ks_meta.replication_strategy.replication_factor == 1
    assert ks_meta.durable_writes is True
    otp = ks_meta.tables["otp"]
    assert [c.name for c in otp.partition_key] == ["type", "key"]
    assert otp.clustering_key == []
    assert otp.columns["version"].cql_type == "int"
    assert otp.columns["expires_on"].cql_type == "timestamp"
    assert otp.columns["is_locked"].cql_type == "boolean"
    assert "rows expire by TTL" in otp.options["comment"]
    blocked = ks_meta.tables["blocked_key"]
    assert set(blocked.columns) == {"type", "key", "created_on", "blocked_on", "blocked_until"}
    # every file is idempotent: applying them again changes nothing and raises nothing
    version = session.execute("SELECT schema_version FROM system.local").one().schema_version
    for path in sorted(CQL_DIR.glob("*.cql")):
        for stmt in split_cql(path.read_text()):
            session.execute(stmt)
    assert session.execute("SELECT schema_version FROM system.local").one().schema_version == version
    # the table's CQL as the driver regenerates it from system_schema
    assert "PRIMARY KEY ((type, key))" in otp.export_as_string()


def test_schema_version_changes_and_drops_reach_metadata(server, cluster, session, ks):
    before = session.execute("SELECT schema_version FROM system.local").one().schema_version
    session.execute("CREATE TABLE t (a int, b text, c int, PRIMARY KEY (a, b)) WITH CLUSTERING ORDER BY (b DESC)"
                    " AND default_time_to_live = 5")
    after = session.execute("SELECT schema_version FROM system.local").one().schema_version
    assert before != after
    t = cluster.metadata.keyspaces[ks].tables["t"]
    assert [c.name for c in t.clustering_key] == ["b"] and t.clustering_key[0].is_reversed
    assert t.options["default_time_to_live"] == 5
    with pytest.raises(AlreadyExists):
        session.execute("CREATE TABLE t (a int PRIMARY KEY)")
    session.execute("CREATE TABLE IF NOT EXISTS t (a int PRIMARY KEY)")
    with pytest.raises(AlreadyExists):
        session.execute("CREATE KEYSPACE %s WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}" % ks)
    session.execute("DROP TABLE t")
    assert "t" not in cluster.metadata.keyspaces[ks].tables
    with pytest.raises(InvalidRequest):
        session.execute("DROP TABLE t")
    session.execute("DROP TABLE IF EXISTS t")


def test_alter_table(server, cluster, session, ks):
    session.execute("CREATE TABLE t (k int PRIMARY KEY, v text)")
    session.execute("INSERT INTO t (k, v) VALUES (1, 'a')")
    select_all = session.prepare("SELECT * FROM t WHERE k = ?")
    session.execute("ALTER TABLE t ADD (extra int, tags set<text>)")
    session.execute("ALTER TABLE t ADD IF NOT EXISTS extra int")
    assert {"extra", "tags"} <= set(cluster.metadata.keyspaces[ks].tables["t"].columns)
    session.execute("UPDATE t SET extra = 5 WHERE k = 1")
    assert session.execute(select_all, [1]).one() == (1, 5, "a", None)  # re-prepared: the table changed
    session.execute("ALTER TABLE t DROP v")
    assert "v" not in cluster.metadata.keyspaces[ks].tables["t"].columns
    assert session.execute("SELECT * FROM t WHERE k = 1").one() == (1, 5, None)
    dropped = session.execute("SELECT column_name, type FROM system_schema.dropped_columns "
                              "WHERE keyspace_name = %s AND table_name = 't'", [ks]).one()
    assert tuple(dropped) == ("v", "text")
    session.execute("ALTER TABLE t WITH comment = 'altered' AND default_time_to_live = 60")
    assert cluster.metadata.keyspaces[ks].tables["t"].options["comment"] == "altered"
    session.execute("INSERT INTO t (k, extra) VALUES (2, 1)")
    assert session.execute("SELECT TTL(extra) FROM t WHERE k = 2").one()[0] == 60


def test_migrate_command_statements(server, cluster, session):
    session.execute("DROP KEYSPACE IF EXISTS otp_test")
    session.execute("CREATE KEYSPACE IF NOT EXISTS otp_test WITH replication = "
                    "{'class': 'NetworkTopologyStrategy', 'datacenter1': 1} AND durable_writes = true")
    session.execute("CREATE TABLE IF NOT EXISTS otp_test.schema_migrations "
                    "(filename text PRIMARY KEY, checksum text, applied_on timestamp)")
    exists = session.prepare("SELECT keyspace_name FROM system_schema.keyspaces WHERE keyspace_name = ?")
    assert session.execute(exists, ["otp_test"]).one().keyspace_name == "otp_test"
    assert session.execute(exists, ["nope"]).one() is None
    session.execute("USE otp_test")
    assert list(session.execute("SELECT filename, checksum FROM schema_migrations")) == []
    ins = session.prepare("INSERT INTO schema_migrations (filename, checksum, applied_on) VALUES (?, ?, ?)")
    session.execute(ins, ("001_keyspace.cql", "abc", _now()))
    session.execute(ins, ("002_otp.cql", "def", _now()))
    rows = sorted((r.filename, r.checksum) for r in session.execute("SELECT filename, checksum FROM schema_migrations"))
    assert rows == [("001_keyspace.cql", "abc"), ("002_otp.cql", "def")]
    assert cluster.metadata.keyspaces["otp_test"].replication_strategy.dc_replication_factors == {"datacenter1": 1}
    session.execute("DROP KEYSPACE otp_test")
    assert "otp_test" not in cluster.metadata.keyspaces


# ---------------------------------------------------------------------------------------------------
# the store's statements
# ---------------------------------------------------------------------------------------------------
OTP_COLS = ("type, key, otp, created_on, updated_on, expires_on, retry_count, is_locked, locked_on, send_count, "
            "window_start, last_sent_on, version")


def _lwt(stmt):
    stmt.consistency_level = ConsistencyLevel.LOCAL_QUORUM
    stmt.serial_consistency_level = ConsistencyLevel.LOCAL_SERIAL
    return stmt


def test_store_statements_round_trip(server, session, otp_schema):
    select = _lwt(session.prepare("SELECT %s, TTL(version) FROM otp WHERE type = ? AND key = ?" % OTP_COLS))
    insert = _lwt(session.prepare("INSERT INTO otp (%s) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                                  "IF NOT EXISTS USING TTL ?" % OTP_COLS))
    update = _lwt(session.prepare(
        "UPDATE otp USING TTL ? SET otp = ?, created_on = ?, updated_on = ?, expires_on = ?, retry_count = ?, "
        "is_locked = ?, locked_on = ?, send_count = ?, window_start = ?, last_sent_on = ?, version = ? "
        "WHERE type = ? AND key = ? IF version = ?"))
    delete = _lwt(session.prepare("DELETE FROM otp WHERE type = ? AND key = ? IF EXISTS"))
    # bind metadata: partition key indexes let the driver route by token
    assert insert.routing_key_indexes == [0, 1]
    assert update.routing_key_indexes == [12, 13]
    assert [c.name for c in insert.column_metadata][-1] == "[ttl]"

    now = _now()
    values = ["email", "k1", "enc", now, now, now + datetime.timedelta(minutes=5), 0, False, None, 1, now, now, 1]
    rs = session.execute(insert, values + [600])
    assert rs.was_applied
    assert rs.column_names == ["[applied]"]

    row = session.execute(select, ["email", "k1"]).one()
    assert row.otp == "enc" and row.version == 1 and row.is_locked is False and row.locked_on is None
    assert row.expires_on == _naive(now + datetime.timedelta(minutes=5))
    assert 595 <= row.ttl_version <= 600

    # a second insert is not applied and returns the existing row
    rs = session.execute(insert, values[:2] + ["other"] + values[3:] + [600])
    assert not rs.was_applied
    existing = rs.one()
    assert rs.column_names[0] == "[applied]"
    assert existing.otp == "enc" and existing.version == 1 and existing.type == "email"

    # compare-and-set on version
    upd = [300, None, now, now, now, 1, False, None, 2, now, now, 2, "email", "k1"]
    rs = session.execute(update, upd + [1])
    assert rs.was_applied
    rs = session.execute(update, upd + [1])
    assert not rs.was_applied
    assert rs.column_names == ["[applied]", "version"] and rs.one().version == 2
    row = session.execute(select, ["email", "k1"]).one()
    assert row.otp is None and row.retry_count == 1 and row.version == 2 and row.send_count == 2
    # the UPDATE carried TTL 300: the cells it wrote have it
    assert 295 <= row.ttl_version <= 300

    # update of a missing row: not applied, only [applied]
    rs = session.execute(update, upd[:12] + ["email", "missing", 1])
    assert not rs.was_applied and rs.column_names == ["[applied]"]

    rs = session.execute(delete, ["email", "k1"])
    assert rs.was_applied
    assert session.execute(select, ["email", "k1"]).one() is None
    rs = session.execute(delete, ["email", "k1"])
    assert not rs.was_applied and rs.column_names == ["[applied]"]

    blocked_insert = session.prepare("INSERT INTO blocked_key (type, key, created_on, blocked_on, blocked_until) "
                                     "VALUES (?, ?, ?, ?, ?) USING TTL ?")
    blocked_select = session.prepare("SELECT type, key, created_on, blocked_on, blocked_until, TTL(blocked_until) "
                                     "FROM blocked_key WHERE type = ? AND key = ?")
    blocked_insert.consistency_level = blocked_select.consistency_level = ConsistencyLevel.LOCAL_QUORUM
    session.execute(blocked_insert, ["phone", "+15550001", now, now, now + datetime.timedelta(hours=1), 3600])
    row = session.execute(blocked_select, ["phone", "+15550001"]).one()
    assert row.blocked_until == _naive(now + datetime.timedelta(hours=1))
    assert 3595 <= row.ttl_blocked_until <= 3600
    assert session.execute("SELECT release_version FROM system.local").one().release_version


def test_consistency_levels_are_recorded(server, session, otp_schema):
    del server.seen_consistencies[:]
    select = session.prepare("SELECT type, key, version FROM otp WHERE type = ? AND key = ?")
    select.consistency_level = ConsistencyLevel.LOCAL_SERIAL
    session.execute(select, ["email", "x"])
    insert = _lwt(session.prepare("INSERT INTO otp (type, key, version) VALUES (?, ?, ?) IF NOT EXISTS"))
    session.execute(insert, ["email", "x", 1])
    plain = SimpleStatement("SELECT version FROM otp WHERE type = 'email' AND key = 'x'",
                            consistency_level=ConsistencyLevel.LOCAL_QUORUM)
    session.execute(plain)
    seen = server.seen_consistencies
    assert ("SELECT type, key, version FROM otp WHERE type = ? AND key = ?", "LOCAL_SERIAL", None) in seen
    assert ("INSERT INTO otp (type, key, version) VALUES (?, ?, ?) IF NOT EXISTS", "LOCAL_QUORUM",
            "LOCAL_SERIAL") in seen
    assert any(q.startswith("SELECT version FROM otp") and cl == "LOCAL_QUORUM" for q, cl, _ in seen)
    # SERIAL is a read or paxos-phase level only
    bad = SimpleStatement("INSERT INTO otp (type, key, version) VALUES ('a', 'b', 1)",
                          consistency_level=ConsistencyLevel.SERIAL)
    with pytest.raises(InvalidRequest):
        session.execute(bad)


# ---------------------------------------------------------------------------------------------------
# writes, reads, TTL, WRITETIME, LWT details
# ---------------------------------------------------------------------------------------------------
def test_prepared_crud_and_selects(server, session, ks):
    session.execute("CREATE TABLE events (p text, c int, v text, n bigint, flag boolean, id uuid, data blob, "
                    "tags set<text>, attrs map<text, int>, PRIMARY KEY (p, c))")
    ins = session.prepare("INSERT INTO events (p, c, v, n, flag, id, data, tags, attrs) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")
    ident = uuid.uuid4()
    for c in range(5):
        session.execute(ins, ("a", c, "v%d" % c, c * 10, c % 2 == 0, ident, b"\x00\x01", {"x", "y"}, {"k": c}))
    session.execute(ins, ("b", 1, "b1", None, None, None, None, None, None))
    rows = list(session.execute("SELECT * FROM events WHERE p = 'a'"))
    assert [r.c for r in rows] == [0, 1, 2, 3, 4]
    assert rows[2].v == "v2" and rows[2].n == 20 and rows[2].flag is True and rows[2].id == ident
    assert rows[2].data == b"\x00\x01" and set(rows[2].tags) == {"x", "y"} and dict(rows[2].attrs) == {"k": 2}
    # SELECT * column order: partition key, clustering, then simple columns by name, then collections
    assert list(rows[0]._fields) == ["p", "c", "data", "flag", "id", "n", "v", "attrs", "tags"]
    sel = session.prepare("SELECT c, v FROM events WHERE p = ? AND c >= ? AND c < ?")
    assert [r.c for r in session.execute(sel, ("a", 1, 3))] == [1, 2]
    assert [r.c for r in session.execute("SELECT c FROM events WHERE p = 'a' ORDER BY c DESC LIMIT 2")] == [4, 3]
    assert [r.c for r in session.execute("SELECT c FROM events WHERE p IN ('b', 'a') AND c = 1")] == [1, 1]
    assert session.execute("SELECT COUNT(*) FROM events").one().count == 6
    assert session.execute("SELECT count(*) AS total FROM events WHERE p = 'a'").one().total == 5
    assert {r.p for r in session.execute("SELECT p, c FROM events")} == {"a", "b"}
    named = session.prepare("SELECT v FROM events WHERE p = :p AND c = :c")
    assert session.execute(named, {"p": "a", "c": 3}).one().v == "v3"
    assert [r.v for r in session.execute("SELECT v FROM events WHERE v = 'v4' ALLOW FILTERING")] == ["v4"]

    upd = session.prepare("UPDATE events SET v = ?, n = ? WHERE p = ? AND c = ?")
    session.execute(upd, ("changed", 99, "a", 0))
    row = session.execute("SELECT v, n FROM events WHERE p = 'a' AND c = 0").one()
    assert (row.v, row.n) == ("changed", 99)
    session.execute(session.prepare("DELETE v FROM events WHERE p = ? AND c = ?"), ("a", 0))
    assert session.execute("SELECT v, n FROM events WHERE p = 'a' AND c = 0").one() == (None, 99)
    session.execute(session.prepare("DELETE FROM events WHERE p = ? AND c = ?"), ("a", 1))
    assert [r.c for r in session.execute("SELECT c FROM events WHERE p = 'a'")] == [0, 2, 3, 4]
    session.execute("DELETE FROM events WHERE p = 'a'")
    assert list(session.execute("SELECT c FROM events WHERE p = 'a'")) == []
    session.execute("TRUNCATE events")
    assert session.execute("SELECT count(*) FROM events").one().count == 0


def test_paging_with_small_fetch_size(server, session, ks):
    session.execute("CREATE TABLE t (p int, c int, PRIMARY KEY (p, c))")
    ins = session.prepare("INSERT INTO t (p, c) VALUES (?, ?)")
    for i in range(25):
        session.execute(ins, (i % 3, i))
    stmt = SimpleStatement("SELECT * FROM t", fetch_size=4)
    rs = session.execute(stmt)
    assert rs.has_more_pages
    assert sorted(r.c for r in rs) == list(range(25))
    prepared = session.prepare("SELECT c FROM t WHERE p = ?")
    prepared.fetch_size = 2
    assert [r.c for r in session.execute(prepared, (1,))] == list(range(1, 25, 3))


def test_ttl_writetime_and_expiry(server, session, ks):
    session.execute("CREATE TABLE t (k text PRIMARY KEY, a int, b int)")
    session.execute("INSERT INTO t (k, a, b) VALUES ('x', 1, 2) USING TTL 100")
    row = session.execute("SELECT TTL(a), WRITETIME(a), TTL(b) FROM t WHERE k = 'x'").one()
    assert 99 <= row.ttl_a <= 100 and 99 <= row.ttl_b <= 100  # whole seconds remaining, as Cassandra counts
    assert abs(row.writetime_a - time.time() * 1_000_000) < 5_000_000
    session.execute("INSERT INTO t (k, a) VALUES ('ts', 1) USING TIMESTAMP 12345 AND TTL 0")
    row = session.execute("SELECT TTL(a), WRITETIME(a) FROM t WHERE k = 'ts'").one()
    assert row.ttl_a is None and row.writetime_a == 12345
    # last write wins by timestamp: an older write is ignored
    session.execute("UPDATE t USING TIMESTAMP 100 SET a = 7 WHERE k = 'ts'")
    assert session.execute("SELECT a FROM t WHERE k = 'ts'").one().a == 1

    # UPDATE with a longer TTL keeps the row visible (through its cells) after the INSERT's row marker expired
    session.execute("UPDATE t USING TTL 300 SET b = 5 WHERE k = 'x'")
    server.advance_clock(101)
    row = session.execute("SELECT k, a, b, TTL(b) FROM t WHERE k = 'x'").one()
    assert row is not None and row.a is None and row.b == 5 and 190 <= row.ttl_b <= 200
    server.advance_clock(200)
    assert session.execute("SELECT * FROM t WHERE k = 'x'").one() is None

    # INSERT writes a row marker: a row with only null columns exists; UPDATE writes cells only
    session.execute("INSERT INTO t (k) VALUES ('marker')")
    assert session.execute("SELECT * FROM t WHERE k = 'marker'").one() == ("marker", None, None)
    session.execute("UPDATE t SET a = null WHERE k = 'cells'")
    assert session.execute("SELECT * FROM t WHERE k = 'cells'").one() is None
    session.execute("UPDATE t USING TTL 10 SET a = 1 WHERE k = 'cells'")
    assert session.execute("SELECT a FROM t WHERE k = 'cells'").one().a == 1
    server.advance_clock(11)
    assert session.execute("SELECT * FROM t WHERE k = 'cells'").one() is None
    # setting a column to null deletes it
    session.execute("UPDATE t SET a = 3 WHERE k = 'marker'")
    session.execute("UPDATE t SET a = null WHERE k = 'marker'")
    assert session.execute("SELECT a, WRITETIME(a), TTL(a) FROM t WHERE k = 'marker'").one() == (None, None, None)


def test_client_timestamps_are_used_for_writetime(server):
    c = Cluster(["127.0.0.1"], port=server.port, timestamp_generator=lambda: 4242)
    try:
        s = c.connect()
        s.execute("CREATE KEYSPACE IF NOT EXISTS ts_ks WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}")
        s.execute("CREATE TABLE IF NOT EXISTS ts_ks.t (k int PRIMARY KEY, v text)")
        s.execute("INSERT INTO ts_ks.t (k, v) VALUES (1, 'a')")
        assert s.execute("SELECT WRITETIME(v) FROM ts_ks.t WHERE k = 1").one()[0] == 4242
        # lightweight transactions take a server-side (paxos) timestamp, as in Cassandra
        s.execute("UPDATE ts_ks.t SET v = 'b' WHERE k = 1 IF v = 'a'")
        assert s.execute("SELECT WRITETIME(v) FROM ts_ks.t WHERE k = 1").one()[0] > 4242
        s.execute("DROP KEYSPACE ts_ks")
    finally:
        c.shutdown()


def test_identifiers_comments_collections_and_markers(server, cluster, session, ks):
    session.execute('CREATE TABLE "Tab" ("Key" int, c int, "Val" text, tags set<text>, l list<int>, '
                    "m map<text, text>, PRIMARY KEY (\"Key\", c)) -- a comment\n /* and a block comment */;")
    assert [c.name for c in cluster.metadata.keyspaces[ks].tables["Tab"].partition_key] == ["Key"]
    session.execute("INSERT INTO \"Tab\" (\"Key\", c, \"Val\", tags, l, m) VALUES (1, 1, 'it''s', {}, [3, 1, 3], "
                    "{'b': '1', 'a': '2'}) // trailing comment")
    row = session.execute('SELECT "Val", tags, l, m FROM "Tab" WHERE "Key" = 1 AND c = 1').one()
    assert row.Val == "it's" and row.tags is None  # an empty non-frozen collection is null
    assert row.l == [3, 1, 3] and list(row.m.items()) == [("a", "2"), ("b", "1")]
    session.execute('INSERT INTO "Tab" ("Key", c) VALUES (2, 1)')
    session.execute('INSERT INTO "Tab" ("Key", c) VALUES (2, 2)')
    prepared = session.prepare('SELECT "Key", c FROM "Tab" WHERE "Key" IN ? LIMIT ?')
    assert [m.name for m in prepared.column_metadata] == ["in(Key)", "[limit]"]
    assert [tuple(r) for r in session.execute(prepared, ([2, 1], 2))] == [(2, 1), (2, 2)]
    assert sorted(r.Key for r in session.execute('SELECT DISTINCT "Key" FROM "Tab"')) == [1, 2]
    with pytest.raises(InvalidRequest):
        session.execute("INSERT INTO \"Tab\" (\"Key\", c, tags) VALUES (1, 3, {'a', null})")
    # a condition on a missing row compares against null (Cassandra's ColumnCondition semantics)
    rs = session.execute('UPDATE "Tab" SET "Val" = \'new\' WHERE "Key" = 9 AND c = 9 IF "Val" = null')
    assert rs.was_applied
    batch = BatchStatement()
    batch.add(SimpleStatement("INSERT INTO \"Tab\" (\"Key\", c) VALUES (3, 1) IF NOT EXISTS"))
    batch.add(SimpleStatement("UPDATE \"Tab\" SET \"Val\" = 'x' WHERE \"Key\" = 3 AND c = 1 IF \"Val\" = 'y'"))
    with pytest.raises(InvalidRequest):
        session.execute(batch)


def test_default_time_to_live(server, session, ks):
    session.execute("CREATE TABLE t (k int PRIMARY KEY, v text) WITH default_time_to_live = 50")
    session.execute("INSERT INTO t (k, v) VALUES (1, 'a')")
    session.execute("INSERT INTO t (k, v) VALUES (2, 'b') USING TTL 0")
    session.execute("INSERT INTO t (k, v) VALUES (3, 'c') USING TTL 500")
    assert session.execute("SELECT TTL(v) FROM t WHERE k = 1").one()[0] == 50
    assert session.execute("SELECT TTL(v) FROM t WHERE k = 2").one()[0] is None
    server.advance_clock(51)
    assert sorted(r.k for r in session.execute("SELECT k FROM t")) == [2, 3]


def test_lwt_results(server, session, ks):
    session.execute("CREATE TABLE acct (id text PRIMARY KEY, balance int, owner text, note text)")
    rs = session.execute("INSERT INTO acct (id, balance, owner) VALUES ('a', 10, 'ann') IF NOT EXISTS")
    assert rs.was_applied and rs.column_names == ["[applied]"]
    rs = session.execute("INSERT INTO acct (id, balance, owner) VALUES ('a', 99, 'bob') IF NOT EXISTS")
    assert not rs.was_applied
    assert rs.column_names == ["[applied]", "id", "balance", "note", "owner"]
    assert tuple(rs.one()) == (False, "a", 10, None, "ann")

    rs = session.execute("UPDATE acct SET balance = 20 WHERE id = 'a' IF balance = 10 AND owner = 'ann'")
    assert rs.was_applied
    rs = session.execute("UPDATE acct SET balance = 30 WHERE id = 'a' IF owner = 'bob' AND balance = 10")
    assert not rs.was_applied
    assert rs.column_names == ["[applied]", "owner", "balance"] and tuple(rs.one()) == (False, "ann", 20)
    for cond, applied in [("balance > 15", True), ("balance >= 21", False), ("balance < 21", True),
                          ("balance <= 19", False), ("balance != 20", False), ("balance IN (1, 20)", True),
                          ("note = null", True), ("note != null", False), ("owner IN ('x', 'ann')", True)]:
        rs = session.execute("UPDATE acct SET note = null WHERE id = 'a' IF %s" % cond)
        assert rs.was_applied is applied, cond
    # conditions on a missing row: not applied, nothing but [applied]
    rs = session.execute("UPDATE acct SET balance = 1 WHERE id = 'zz' IF balance = 1")
    assert not rs.was_applied and rs.column_names == ["[applied]"]
    rs = session.execute("UPDATE acct SET balance = 1 WHERE id = 'zz' IF EXISTS")
    assert not rs.was_applied and rs.column_names == ["[applied]"]
    assert session.execute("SELECT * FROM acct WHERE id = 'zz'").one() is None
    rs = session.execute("UPDATE acct SET balance = 1 WHERE id = 'a' IF EXISTS")
    assert rs.was_applied
    rs = session.execute("DELETE FROM acct WHERE id = 'a' IF balance = 5")
    assert not rs.was_applied and tuple(rs.one()) == (False, 1)
    rs = session.execute("DELETE FROM acct WHERE id = 'a' IF balance = 1")
    assert rs.was_applied
    with pytest.raises(InvalidRequest):
        session.execute("UPDATE acct SET balance = 1 WHERE id = 'a' IF balance > null")
    with pytest.raises(InvalidRequest):
        session.execute("INSERT INTO acct (id) VALUES ('q') IF NOT EXISTS USING TIMESTAMP 5")


def test_batches(server, session, ks):
    session.execute("CREATE TABLE t (p text, c int, v text, PRIMARY KEY (p, c))")
    ins = session.prepare("INSERT INTO t (p, c, v) VALUES (?, ?, ?)")
    batch = BatchStatement(batch_type=BatchType.LOGGED, consistency_level=ConsistencyLevel.LOCAL_QUORUM)
    batch.add(ins, ("a", 1, "one"))
    batch.add(ins, ("b", 2, "two"))
    batch.add(SimpleStatement("UPDATE t SET v = 'three' WHERE p = 'a' AND c = 3"))
    session.execute(batch)
    assert sorted((r.p, r.c, r.v) for r in session.execute("SELECT * FROM t")) == [
        ("a", 1, "one"), ("a", 3, "three"), ("b", 2, "two")]
    assert ("BATCH INSERT INTO t (p, c, v) VALUES (?, ?, ?)", "LOCAL_QUORUM", None) in server.seen_consistencies

    unlogged = BatchStatement(batch_type=BatchType.UNLOGGED)
    unlogged.add(SimpleStatement("DELETE FROM t WHERE p = 'a' AND c = 1"))
    unlogged.add(ins, ("c", 5, "five"))
    session.execute(unlogged)
    assert sorted(r.p for r in session.execute("SELECT p FROM t")) == ["a", "b", "c"]

    cas = BatchStatement(serial_consistency_level=ConsistencyLevel.LOCAL_SERIAL)
    cas.add(SimpleStatement("UPDATE t SET v = 'x' WHERE p = 'a' AND c = 3 IF v = 'three'"))
    cas.add(SimpleStatement("INSERT INTO t (p, c, v) VALUES ('a', 4, 'four')"))
    assert session.execute(cas).was_applied
    rs = session.execute(cas)
    assert not rs.was_applied
    assert rs.column_names == ["[applied]", "p", "c", "v"] and tuple(rs.one()) == (False, "a", 3, "x")
    session.execute("BEGIN UNLOGGED BATCH INSERT INTO t (p, c, v) VALUES ('d', 1, 'x'); "
                    "INSERT INTO t (p, c, v) VALUES ('d', 2, 'y') APPLY BATCH")
    assert session.execute("SELECT count(*) FROM t WHERE p = 'd'").one().count == 2
    bad = BatchStatement()
    bad.add(SimpleStatement("UPDATE t SET v = 'x' WHERE p = 'a' AND c = 3 IF v = 'x'"))
    bad.add(SimpleStatement("UPDATE t SET v = 'x' WHERE p = 'b' AND c = 2"))
    with pytest.raises(InvalidRequest):
        session.execute(bad)


def test_concurrent_compare_and_set(server, cluster, session, ks):
    session.execute("CREATE TABLE counter (id text PRIMARY KEY, version int)")
    session.execute("INSERT INTO counter (id, version) VALUES ('c', 0)")
    read = session.prepare("SELECT version FROM counter WHERE id = ?")
    read.consistency_level = ConsistencyLevel.LOCAL_SERIAL
    cas = _lwt(session.prepare("UPDATE counter SET version = ? WHERE id = ? IF version = ?"))
    applied = []
    errors = []
    per_thread = 5
    barrier = threading.Barrier(20)

    def worker():
        try:
            barrier.wait()
            done = 0
            while done < per_thread:
                current = session.execute(read, ["c"]).one().version
                if session.execute(cas, [current + 1, "c", current]).was_applied:
                    applied.append(current + 1)
                    done += 1
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    assert sorted(applied) == list(range(1, 20 * per_thread + 1))
    assert session.execute(read, ["c"]).one().version == 20 * per_thread


# ---------------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("statement, error", [
    ("CREATE INDEX ON t (v)", InvalidRequest),
    ("ALTER TABLE t RENAME k TO j", InvalidRequest),
    ("ALTER TABLE t DROP k", InvalidRequest),
    ("ALTER TABLE t ADD v int", InvalidRequest),
    ("CREATE TYPE address (street text)", InvalidRequest),
    ("SELECT JSON * FROM t", InvalidRequest),
    ("UPDATE t SET v = v + 'x' WHERE k = 1", InvalidRequest),
    ("SELECT * FROM nosuch", InvalidRequest),
    ("SELECT nosuch FROM t", InvalidRequest),
    ("SELECT * FROM t WHERE v = 'x'", InvalidRequest),
    ("UPDATE t SET v = 'x'", SyntaxException),
    ("UPDATE t SET v = 'x' WHERE v = 'y'", InvalidRequest),
    ("DELETE FROM t WHERE v = 'y'", InvalidRequest),
    ("INSERT INTO t (v) VALUES ('x')", InvalidRequest),
    ("INSERT INTO t (k, v) VALUES ('notanint', 'x')", InvalidRequest),
    ("INSERT INTO t (k, v) VALUES (1, 2)", InvalidRequest),
    ("INSERT INTO t (k, v) VALUES (1)", InvalidRequest),
    ("INSERT INTO t (k, v) VALUES (1, 'x') USING TTL -1", InvalidRequest),
    ("SELEKT * FROM t", SyntaxException),
    ("SELECT * FROM t WHERE k = 1 AND", SyntaxException),
    ("INSERT INTO t (k, v) VALUES (1, 'unterminated)", SyntaxException),
    ("GRANT SELECT ON t TO bob", InvalidRequest),
    ("SELECT limit FROM t", SyntaxException),  # reserved keywords are identifiers only when double-quoted
    ("CREATE TABLE t2 (order int PRIMARY KEY)", SyntaxException),
    ("INSERT INTO system.local (key) VALUES ('x')", Unauthorized),
])
def test_unsupported_or_invalid_statements_are_errors(server, session, ks, statement, error):
    session.execute("CREATE TABLE IF NOT EXISTS t (k int PRIMARY KEY, v text)")
    with pytest.raises(error):
        session.execute(statement)
    # a constant TTL, and schema statements, are checked when they execute (as in Cassandra), not when prepared
    if "TTL -1" not in statement and not statement.startswith(("ALTER TABLE t DROP", "ALTER TABLE t ADD")):
        with pytest.raises(error):
            session.prepare(statement)


def test_no_keyspace_and_wrong_bind_types(server, cluster):
    s = cluster.connect()
    with pytest.raises(InvalidRequest):
        s.execute("SELECT * FROM t")
    with pytest.raises(InvalidRequest):
        s.execute("USE no_such_keyspace")


# ---------------------------------------------------------------------------------------------------
# protocol details
# ---------------------------------------------------------------------------------------------------
def _frame(opcode, body=b"", stream=1, version=4):
    return struct.pack(">BBhBi", version, 0, stream, opcode, len(body)) + body


def _read_frame(sock):
    def exactly(n):
        buf = b""
        while len(buf) < n:
            chunk = sock.recv(n - len(buf))
            assert chunk, "connection closed"
            buf += chunk
        return buf
    version, flags, stream, opcode, length = struct.unpack(">BBhBi", exactly(9))
    return version, stream, opcode, exactly(length)


def _string(s):
    b = s.encode()
    return struct.pack(">H", len(b)) + b


def _startup(sock):
    sock.sendall(_frame(0x01, struct.pack(">H", 1) + _string("CQL_VERSION") + _string("3.0.0")))
    assert _read_frame(sock)[2] == 0x02  # READY


def test_raw_protocol_version_negotiation_and_error_codes(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(_frame(0x05, stream=7, version=5))  # OPTIONS in v5
        version, stream, opcode, body = _read_frame(sock)
        assert (version, stream, opcode) == (0x84, 7, 0x00)
        code, = struct.unpack(">i", body[:4])
        assert code == 0x000A and b"Invalid or unsupported protocol version (5)" in body
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(_frame(0x07, struct.pack(">i", 3) + b"x"))  # QUERY before STARTUP
        assert struct.unpack(">i", _read_frame(sock)[3][:4])[0] == 0x000A
        sock.sendall(_frame(0x05, stream=3))
        version, stream, opcode, body = _read_frame(sock)
        assert (version, stream, opcode) == (0x84, 3, 0x06)
        assert b"CQL_VERSION" in body and b"COMPRESSION" in body
        _startup(sock)
        unknown_id = b"\x01\x02\x03\x04"
        sock.sendall(_frame(0x0A, struct.pack(">H", 4) + unknown_id + struct.pack(">HB", 1, 0), stream=9))
        version, stream, opcode, body = _read_frame(sock)
        assert (stream, opcode) == (9, 0x00)
        assert struct.unpack(">i", body[:4])[0] == 0x2500
        msg_len = struct.unpack(">H", body[4:6])[0]
        assert body[6 + msg_len:] == struct.pack(">H", 4) + unknown_id
        query = b"SELECT * FROM nowhere.t"
        sock.sendall(_frame(0x07, struct.pack(">i", len(query)) + query + struct.pack(">HB", 1, 0), stream=10))
        assert struct.unpack(">i", _read_frame(sock)[3][:4])[0] == 0x2200
        query = b"CREATE KEYSPACE system WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}"
        sock.sendall(_frame(0x07, struct.pack(">i", len(query)) + query + struct.pack(">HB", 1, 0), stream=11))
        body = _read_frame(sock)[3]
        assert struct.unpack(">i", body[:4])[0] == 0x2400
        query = b"DROP nonsense"
        sock.sendall(_frame(0x07, struct.pack(">i", len(query)) + query + struct.pack(">HB", 1, 0), stream=12))
        assert struct.unpack(">i", _read_frame(sock)[3][:4])[0] == 0x2000


def _query(sock, text, values=None, names=None, stream=1, consistency=0x0006):
    """QUERY with optional values ([value]s: bytes, None for null, -2 for `not set`) and names (flag 0x40)."""
    q = text.encode()
    body = struct.pack(">i", len(q)) + q + struct.pack(">H", consistency)
    if values is None:
        body += b"\x00"
    else:
        body += bytes([0x01 | (0x40 if names else 0)]) + struct.pack(">H", len(values))
        for i, v in enumerate(values):
            if names:
                body += _string(names[i])
            if v is None:
                body += struct.pack(">i", -1)
            elif v == -2:
                body += struct.pack(">i", -2)
            else:
                body += struct.pack(">i", len(v)) + v
    sock.sendall(_frame(0x07, body, stream=stream))
    version, got_stream, opcode, resp = _read_frame(sock)
    assert got_stream == stream
    return opcode, resp


def test_raw_named_and_unset_values(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        _startup(sock)
        assert _query(sock, "CREATE KEYSPACE raw_ks WITH replication = {'class': 'SimpleStrategy', "
                            "'replication_factor': 1}")[0] == 0x08
        assert _query(sock, "CREATE TABLE raw_ks.t (k int PRIMARY KEY, a text, b text)")[0] == 0x08
        opcode, resp = _query(sock, "INSERT INTO raw_ks.t (k, a, b) VALUES (:k, :a, :b)",
                              [b"x", struct.pack(">i", 1), b"y"], names=["a", "k", "b"])
        assert opcode == 0x08 and struct.unpack(">i", resp[:4])[0] == 1  # Void
        # `not set` leaves b alone; null deletes a
        _query(sock, "UPDATE raw_ks.t SET a = ?, b = ? WHERE k = ?", [None, -2, struct.pack(">i", 1)])
        opcode, resp = _query(sock, "SELECT a, b FROM raw_ks.t WHERE k = 1")
        assert opcode == 0x08 and struct.unpack(">i", resp[:4])[0] == 2 and resp.endswith(
            struct.pack(">i", 1) + struct.pack(">i", -1) + struct.pack(">i", 1) + b"y")
        opcode, resp = _query(sock, "SELECT a FROM raw_ks.t WHERE k = ?", [b"\x00\x01"])  # 2 bytes for an int
        assert opcode == 0x00 and struct.unpack(">i", resp[:4])[0] == 0x2200
        opcode, resp = _query(sock, "SELECT a FROM raw_ks.t WHERE k = ?", [])
        assert opcode == 0x00 and struct.unpack(">i", resp[:4])[0] == 0x2200
        opcode, resp = _query(sock, "SELECT a FROM raw_ks.t", consistency=0x0042)
        assert opcode == 0x00 and struct.unpack(">i", resp[:4])[0] == 0x000A
        assert _query(sock, "DROP KEYSPACE raw_ks")[0] == 0x08


def test_pipelined_requests_on_one_connection(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        _startup(sock)
        query = b"SELECT release_version FROM system.local"
        body = struct.pack(">i", len(query)) + query + struct.pack(">HB", 1, 0)
        sock.sendall(b"".join(_frame(0x07, body, stream=s) for s in range(100, 150)))
        streams = set()
        for _ in range(50):
            version, stream, opcode, resp = _read_frame(sock)
            assert opcode == 0x08 and struct.unpack(">i", resp[:4])[0] == 2
            streams.add(stream)
        assert streams == set(range(100, 150))


def test_reprepares_after_server_forgets_statements(server, session, ks):
    session.execute("CREATE TABLE t (k int PRIMARY KEY, v text)")
    ins = session.prepare("INSERT INTO t (k, v) VALUES (?, ?)")
    session.execute(ins, (1, "a"))
    server.clear_prepared()
    session.execute(ins, (2, "b"))  # the driver gets Unprepared, re-prepares and retries
    assert session.execute("SELECT count(*) FROM t").one().count == 2


def test_password_authentication():
    with CqlTestServer(port=0, username="cassandra", password="secret") as srv:
        good = Cluster(["127.0.0.1"], port=srv.port, auth_provider=PlainTextAuthProvider("cassandra", "secret"))
        try:
            assert good.connect().execute("SELECT release_version FROM system.local").one()
        finally:
            good.shutdown()
        bad = Cluster(["127.0.0.1"], port=srv.port, auth_provider=PlainTextAuthProvider("cassandra", "wrong"))
        try:
            with pytest.raises(NoHostAvailable):
                bad.connect()
        finally:
            bad.shutdown()


def test_module_entry_point_serves():
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "tests.cqlserver", "--port", "0"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = proc.stdout.readline()
        assert "listening on 127.0.0.1:" in line, line
        port = int(line.split("127.0.0.1:")[1].split()[0])
        c = Cluster(["127.0.0.1"], port=port)
        try:
            assert c.connect().execute("SELECT release_version FROM system.local").one()
        finally:
            c.shutdown()
    finally:
        proc.terminate()
        proc.wait(10)
