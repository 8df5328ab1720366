"""What only the Cassandra store has: the migrate command, driver settings, fork safety, outages.

Runs against the session's Cassandra (a given cluster, testcontainers, or the node the suite starts).
"""
from __future__ import annotations

import os
import shutil
import socket
import time
import uuid
from dataclasses import replace

import pytest
from cassandra import ConsistencyLevel

from otp_service.adapters.cassandra_migrate import (
    MigrationError,
    default_cql_dir,
    load_files,
    migrate_cluster,
    split_statements,
)
from otp_service.adapters.cassandra_store import CassandraStore, build_cluster
from otp_service.adapters.store import StoreUnavailable
from otp_service.config import CassandraSettings

from .test_store_contract import row

pytestmark = pytest.mark.cassandra


@pytest.fixture
def session(cassandra_target):
    cluster = build_cluster(replace(cassandra_target.settings, request_timeout=30.0))
    yield cluster.connect()
    cluster.shutdown()


@pytest.fixture
def open_store(cassandra_target):
    """A CassandraStore of the session's keyspace, connected, closed after the test."""
    store = cassandra_target.new_store()
    store.open()
    yield store
    store.close()


@pytest.fixture
def scratch_keyspace(session):
    name = f"otp_mig_{uuid.uuid4().hex[:8]}"
    yield name
    session.execute(f"DROP KEYSPACE IF EXISTS {name}")


def test_split_statements_ignores_comments_and_quoted_semicolons():
    text = "-- a; comment\nCREATE TABLE t (a text) WITH comment = 'x; y';\n/* b; */ USE k; // c;\n"
    assert split_statements(text) == ["CREATE TABLE t (a text) WITH comment = 'x; y'", "USE k"]


def test_cql_files_are_numbered_idempotent_and_partitioned_by_type_and_key():
    files = load_files(default_cql_dir(), "otp")
    assert [f.name for f in files] == [
        "001_keyspace.cql", "002_otp.cql", "003_blocked_key.cql", "004_otp_blocked_until.cql", "005_abuse_counter.cql",
    ]
    for f in files:
        for statement in f.statements:
            if statement.upper().startswith("CREATE"):
                assert "IF NOT EXISTS" in statement.upper()
    assert "PRIMARY KEY ((type, key))" in files[1].statements[-1]
    assert "PRIMARY KEY ((type, key))" in files[2].statements[-1]
    assert "PRIMARY KEY ((name, start))" in files[4].statements[-1]  # one counter and window a partition
    keyspace_file = (default_cql_dir() / "001_keyspace.cql").read_text()
    assert "SimpleStrategy" in keyspace_file and "NetworkTopologyStrategy" in keyspace_file


def test_migrate_applies_each_file_once_and_records_it(session, cassandra_target, scratch_keyspace):
    said = []
    applied = migrate_cluster(cassandra_target.settings, scratch_keyspace, default_cql_dir(), say=said.append)
    assert applied == ["001_keyspace.cql", "002_otp.cql", "003_blocked_key.cql", "004_otp_blocked_until.cql",
        "005_abuse_counter.cql"]
    recorded = dict(session.execute(f"SELECT filename, checksum FROM {scratch_keyspace}.schema_migrations"))
    assert recorded == {f.name: f.checksum for f in load_files(default_cql_dir(), scratch_keyspace)}
    tables = {r[0] for r in session.execute(
        "SELECT table_name FROM system_schema.tables WHERE keyspace_name = %s", (scratch_keyspace,))}
    assert {"otp", "blocked_key", "abuse_counter", "schema_migrations"} <= tables
    again = []
    assert migrate_cluster(cassandra_target.settings, scratch_keyspace, default_cql_dir(), say=again.append) == []
    assert all(line.startswith("skip") for line in again)


def test_migrate_refuses_a_changed_file(session, cassandra_target, scratch_keyspace, tmp_path):
    folder = tmp_path / "cql"
    shutil.copytree(default_cql_dir(), folder)
    migrate_cluster(cassandra_target.settings, scratch_keyspace, folder, say=lambda _: None)
    with (folder / "002_otp.cql").open("a") as handle:
        handle.write("\n-- an edit after the fact\n")
    with pytest.raises(MigrationError, match="002_otp.cql"):
        migrate_cluster(cassandra_target.settings, scratch_keyspace, folder, say=lambda _: None)


def test_migrate_applies_a_new_file_and_dry_run_applies_nothing(session, cassandra_target, scratch_keyspace,
                                                                tmp_path):
    folder = tmp_path / "cql"
    shutil.copytree(default_cql_dir(), folder)
    migrate_cluster(cassandra_target.settings, scratch_keyspace, folder, say=lambda _: None)
    (folder / "006_extra.cql").write_text("USE otp;\nCREATE TABLE IF NOT EXISTS extra (id text PRIMARY KEY);\n")
    said = []
    assert migrate_cluster(cassandra_target.settings, scratch_keyspace, folder, dry_run=True, say=said.append) == []
    assert any("would apply 006_extra.cql" in line for line in said)
    assert migrate_cluster(cassandra_target.settings, scratch_keyspace, folder, say=lambda _: None) == [
        "006_extra.cql"]


def test_the_store_uses_local_quorum_and_local_serial(open_store):
    store = open_store
    sent = []  # (statement text, consistency, serial consistency) of every request, as the driver sends it
    store._session.add_request_init_listener(
        lambda future: sent.append((future.query.prepared_statement.query_string, future.message.consistency_level,
                                    future.message.serial_consistency_level)))
    written = row()
    assert store.insert_otp(written)
    assert store.get_otp("email", written.key) is not None
    assert store.update_otp(written._replace(version=written.version + 1), written.version)
    otp_requests = [s for s in sent if " otp " in s[0] or " otp(" in s[0] or ".otp " in s[0]]
    assert len(otp_requests) == 3
    assert all(consistency == ConsistencyLevel.LOCAL_QUORUM for _, consistency, _ in otp_requests)
    lwts = [s for s in otp_requests if " IF " in s[0]]
    assert len(lwts) == 2 and all(serial == ConsistencyLevel.LOCAL_SERIAL for _, _, serial in lwts)


def test_the_health_check_reads_a_partition_of_the_otp_table_at_local_quorum(open_store, cassandra_target):
    """system.local is answered by the coordinator alone; /health must fail when a quorum of replicas does."""
    store = open_store
    sent = []
    store._session.add_request_init_listener(
        lambda future: sent.append(
            (future.query.prepared_statement.query_string, future.message.consistency_level)))
    store.ping()
    assert len(sent) == 1 and f" FROM {cassandra_target.keyspace}.otp " in sent[0][0]
    assert sent[0][1] == ConsistencyLevel.LOCAL_QUORUM


def test_a_server_error_the_driver_has_no_class_for_is_store_unavailable(open_store, monkeypatch):
    """Cassandra 5.0's CAS_WRITE_UNKNOWN (0x1700) reaches the service as a bare ErrorMessage: a 503, not a 500."""
    from cassandra.protocol import ErrorMessage

    store = open_store

    def unknown(*args, **kwargs):
        raise ErrorMessage(0x1700, "CAS operation result is unknown - proposal accepted by 1 but not a quorum.",
                           None)

    monkeypatch.setattr(store._session, "execute", unknown)
    written = row()
    with pytest.raises(StoreUnavailable, match="update_otp: ErrorMessage"):
        store.update_otp(written, written.version)


def test_statements_are_routed_by_token_and_only_reads_and_the_block_are_retried(open_store, cassandra_target):
    from cassandra.policies import TokenAwarePolicy

    store = open_store
    assert isinstance(store._cluster.profile_manager.default.load_balancing_policy, TokenAwarePolicy)
    # Protocol v4, pinned (no v5 checksummed framing: CrcMismatchException under load), and no USE: every
    # statement names its keyspace.
    assert store._cluster.protocol_version == 4 and store._session.keyspace is None
    for name in ("get_otp", "insert_otp", "update_otp", "delete_otp", "block_key", "get_block"):
        prepared = store._prepared[name]
        # The driver knows where (type, key) sits among the values, and in which keyspace (from the statement's
        # qualified table): each request goes to a replica of its key.
        indexes = prepared.routing_key_indexes or []
        assert [prepared.column_metadata[i].name for i in indexes] == ["type", "key"], name
        values = [None] * len(prepared.column_metadata)
        for i in indexes:
            values[i] = "x"
        bound = prepared.bind(values)
        assert bound.keyspace == cassandra_target.keyspace and bound.routing_key is not None, name
        assert store._cluster.metadata.get_replicas(bound.keyspace, bound.routing_key), name
    idempotent = {name for name, prepared in store._prepared.items() if prepared.is_idempotent}
    assert idempotent == {"get_otp", "get_block", "block_key", "ping"}  # never a lightweight transaction


def test_a_generate_reads_its_row_and_block_in_one_round_trip_when_the_row_exists(open_store):
    from otp_service.adapters.store import BlockedRow

    store = open_store
    written = row()
    assert store.insert_otp(written)
    calls = []
    for name in ("_send", "get_otp", "_answer", "get_block"):
        method = getattr(store, name)
        setattr(store, name, lambda *args, _name=name, _method=method: calls.append(_name) or _method(*args))
    found, block = store.get_otp_and_block("email", written.key)
    assert found is not None and block is None
    # The block's read is sent, the row is read, and only then is the block's answer awaited: both were out at
    # once, whichever answered first.
    assert calls == ["_send", "get_otp", "_answer"]
    # Neither seen: the block may have been read before a block-then-delete landed, so it is read again.
    calls.clear()
    assert store.get_otp_and_block("email", f"tok-{uuid.uuid4().hex}") == (None, None)
    assert calls == ["_send", "get_otp", "_answer", "get_block"]
    blocked = f"tok-{uuid.uuid4().hex}"
    store.block_key(BlockedRow("email", blocked, time.time(), time.time(), time.time() + 60))
    calls.clear()
    assert store.get_otp_and_block("email", blocked)[1] is not None
    assert calls == ["_send", "get_otp", "_answer"]


def test_a_create_is_one_round_trip_and_a_refused_one_reads_nothing_more(open_store):
    """create_otp sends the block's read, then the INSERT ... IF NOT EXISTS while it is on its way; when the insert
    is refused, the row in its way comes from the transaction's own answer, not from another read."""
    store = open_store
    written = row(send_count=3)
    calls = []
    for name in ("_send", "_run", "_answer", "get_otp", "get_block"):
        method = getattr(store, name)
        setattr(store, name, lambda *args, _name=name, _method=method: calls.append(
            (_name, args[0]) if _name in ("_send", "_run") else _name) or _method(*args))
    assert store.create_otp(written) == (True, None, None)
    assert calls == [("_send", "get_block"), ("_run", "insert_otp"), "_answer"]
    calls.clear()
    created, existing, block = store.create_otp(row(key=written.key))
    assert calls == [("_send", "get_block"), ("_run", "insert_otp"), "_answer"]
    assert not created and block is None and existing.send_count == 3 and existing.version == written.version
    assert existing.expires_at == 0.0  # a refused IF NOT EXISTS answers no TTL


def test_a_create_whose_block_read_failed_reads_the_block_again_rather_than_answer_503(open_store):
    """The INSERT is written whatever the block's read in flight beside it did: a failed read is read once more, so
    a send already counted is not answered 503."""
    from otp_service.adapters.store import BlockedRow

    store = open_store
    written = row()
    store.block_key(BlockedRow("email", written.key, time.time(), time.time(), time.time() + 60))
    answer = store._answer
    failures = []

    def failing_once(sent):
        if not failures:
            failures.append(sent[0])
            raise StoreUnavailable("cassandra: get_block: OperationTimedOut")
        return answer(sent)

    store._answer = failing_once
    created, existing, block = store.create_otp(written)
    assert failures == ["get_block"] and created and existing is None
    assert block is not None and block == store.get_block("email", written.key)


def test_a_forked_child_opens_its_own_session(cassandra_target):
    store = cassandra_target.new_store()
    written = row()
    store.insert_otp(written)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: must not use the parent's connections
        try:
            ok = store.get_otp("email", written.key) is not None and store._pid == os.getpid()
            os.write(write, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.close(write)
    answer = os.read(read, 1)
    os.waitpid(pid, 0)
    try:
        assert answer == b"1"
        assert store.get_otp("email", written.key) is not None  # the parent's session still works
    finally:
        store.close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_cluster_is_store_unavailable_quickly_then_not_retried_at_once():
    store = CassandraStore(CassandraSettings(contact_points=("127.0.0.1",), port=_closed_port(),
                                             connect_timeout=1.0, request_timeout=1.0))
    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        store.get_otp("email", "x")
    assert time.monotonic() - started < 15
    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        store.ping()
    assert time.monotonic() - started < 0.5  # within the reconnect pause: answered at once


def test_the_migrate_command_applies_then_skips(cassandra_target, scratch_keyspace, monkeypatch, capsys):
    from otp_service.entrypoints.cli import main

    for name, value in cassandra_target.env().items():
        monkeypatch.setenv(name, value)
    assert main(["migrate", "--keyspace", scratch_keyspace]) == 0
    first = capsys.readouterr().out
    assert first.count("apply ") == 5  # 001 .. 005
    assert main(["migrate", "--keyspace", scratch_keyspace]) == 0
    assert capsys.readouterr().out.count("skip ") == 5


def test_the_migrate_command_without_a_cluster_names_the_variable(monkeypatch, capsys):
    from otp_service.entrypoints.cli import main

    monkeypatch.delenv("OTP_CASSANDRA_CONTACT_POINTS", raising=False)
    assert main(["migrate"]) == 2
    assert "OTP_CASSANDRA_CONTACT_POINTS" in capsys.readouterr().err


def test_a_counter_seen_full_is_refused_without_a_transaction_until_the_sighting_is_stale(open_store):
    """Past its limit, a client costs no lightweight transaction per request: the process refuses from the count it
    saw for full_trust_seconds, then asks Cassandra again; a release in this process is taken into account at once."""
    from otp_service.adapters.store import Counter, Taken

    store = open_store
    full = Counter(f"ip_send:{uuid.uuid4().hex}", float(int(time.time())), 3600, 2)
    other = Counter(f"prefix_send:{uuid.uuid4().hex}", float(int(time.time())), 3600, 10)
    assert store.take_counts([other, full]) == Taken(None, (1, 1))
    assert store.take_counts([other, full]) == Taken(None, (2, 2))
    refused = store.take_counts([other, full])  # found full, by a round trip
    assert refused.refused == 1 and refused.counts[1] == 2
    sent = []
    execute_async = store._session.execute_async
    store._session.execute_async = lambda *args: sent.append(args) or execute_async(*args)
    refused = store.take_counts([other, full])
    assert refused.refused == 1 and refused.counts[1] == 2
    assert sent == []  # refused from the sighting
    store.full_trust_seconds = 0.0  # the sighting is stale: Cassandra is asked again
    refused = store.take_counts([other, full])
    assert refused.refused == 1 and refused.counts[1] == 2 and sent
    store.full_trust_seconds = 60.0
    sent.clear()
    store.release_counts([full])  # one given back here: the next take asks, and is taken
    assert store.take_counts([full]) == Taken(None, (2,)) and sent
    sent.clear()
    # That take filled it: this process knows it is full, and refuses without asking.
    assert store.take_counts([full]) == Taken(0, (2,)) and sent == []
    assert store.take_counts([other]) == Taken(None, (3,))  # the other counter is not refused with it


def test_a_migration_statement_refused_by_a_node_behind_on_the_schema_is_tried_again():
    """A node that has not yet applied the previous DDL answers "doesn't exist" (or INCOMPATIBLE_SCHEMA): such a
    refusal changed nothing, so migrate waits for agreement and tries again; any other refusal is raised at once."""
    from cassandra import InvalidRequest

    from otp_service.adapters.cassandra_migrate import _execute

    class Session:
        def __init__(self, failures):
            self.failures, self.calls, self.waits = list(failures), 0, 0
            self.cluster = self
            self.control_connection = self

        def wait_for_schema_agreement(self, wait_time):
            self.waits += 1
            return True

        def execute(self, statement, params=None):
            self.calls += 1
            if self.failures:
                raise self.failures.pop(0)
            return "done"

    behind = Session([InvalidRequest("Keyspace 'otp_x' doesn't exist")] * 2)
    assert _execute(behind, "CREATE TABLE IF NOT EXISTS otp_x.t (k int PRIMARY KEY)") == "done"
    assert behind.calls == 3 and behind.waits == 2
    wrong = Session([InvalidRequest("line 1:7 no viable alternative at input")])
    with pytest.raises(InvalidRequest):
        _execute(wrong, "CREATE TABL otp_x.t")
    assert wrong.calls == 1 and wrong.waits == 0
