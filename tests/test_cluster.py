"""The distributed claim on three real Cassandra nodes (issue 18; docs/storage.md, "Running on a cluster").

Three Apache Cassandra nodes on 127.0.0.1, 127.0.0.2 and 127.0.0.3 (tests/cassandra_node.py: one datacenter named
DC through GossipingPropertyFileSnitch, node1 the seed, 512M heaps, a folder each), a keyspace of replication
factor 3 made by `otp-service migrate --keyspace ... --cql-dir ...` from a copy of cql/ whose 001 carries the
production statement of cql/001's comment (NetworkTopologyStrategy, DC: 3), and one app with all three nodes as
contact points, OTP_CASSANDRA_LOCAL_DC=DC. One test walks through the story in order, since each step starts from
the state the one before left:

1. all three up: parallel wrong guesses are counted at most the allowed attempts, parallel right answers succeed
   once, parallel sends are all counted;
2. node1 (the seed) SIGKILLed under load: generate and verify keep answering;
   a 5xx only for a request already in flight when the driver saw the node go; the promises of 1 hold again;
3. node2 SIGKILLed too (one replica of three left): 503 SERVER_ERROR within the request timeout, /health 503;
4. both started again on the data they left: the same app answers again (no restart), and everything acknowledged
   before is still there, read through the API and at SERIAL.

Which reads make 4 safe without hinted handoff or repair (neither is the service's job): the service reads at
LOCAL_QUORUM and its compare-and-sets read at LOCAL_SERIAL; every write it acknowledged reached a quorum (2 of 3).
Two quorums of three always share a replica, so a read after a node returns with nothing it missed still meets a
replica that has the write, and the newest cell wins (and is read-repaired onto the stale one). SERIAL reads also
finish any Paxos round left half-done. A read at ONE could hit the returned node alone and miss the write: the service
never reads at ONE (nor does this test).

The cluster is this test's own, on fixed ports (19042/17000 on the three addresses), whatever Cassandra the rest of the
suite uses: the suite's own node listens on free (ephemeral) ports of 127.0.0.1 and is named otp-test, this cluster
otp-cluster-test, so the two never meet. With OTP_CASSANDRA_CONTACT_POINTS set the suite's other tests use that
cluster, which this test must not kill nodes of: it starts its own three here too. Without Java or Maven it errors
with the reason: it is never skipped.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from cassandra import ConsistencyLevel
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
from cassandra.policies import WhiteListRoundRobinPolicy
from cassandra.query import SimpleStatement

from otp_service.adapters.cassandra_store import CassandraStore
from otp_service.domain.contacts import ContactType
from otp_service.entrypoints.app import create_app

from . import cassandra_node
from .conftest import ENCRYPTION_KEY
from .support import Api, RecordingChannel, settings_for, unique_email, wrong_code

pytestmark = [pytest.mark.slow, pytest.mark.cassandra]

DC = "dc_test"
ADDRESSES = ("127.0.0.1", "127.0.0.2", "127.0.0.3")
# Fixed, the same on the three addresses, and neither Cassandra's defaults (9042/7000: a `scripts/cassandra start`
# node the suite may be pointed at with OTP_CASSANDRA_CONTACT_POINTS) nor in the ephemeral range the suite's own
# node takes its free ports from (32768 and up).
NATIVE_PORT, STORAGE_PORT = 19042, 17000
KEYSPACE = "otp_cluster"
# Above the nodes' own timeouts (Cassandra's defaults: 1 s of CAS contention, 2 s a write, 5 s a read), so that a
# coordinator's answer comes before the driver gives up; the service's default is 2 s, and a busy 2-core machine
# running three nodes and the rest of the suite makes a healthy Paxos round slower than that now and then.
REQUEST_TIMEOUT = 8.0
# Paxos v2 (Cassandra 4.1+), as docs/storage.md recommends for a cluster. Measured on this machine: with v1 (5.0's
# default; nodes' timeouts raised to 5 s) 61 of 129 parallel requests on one key answered 503, most of them
# CAS_WRITE_UNKNOWN ("proposal accepted by 1 but not a quorum"), the rules holding all the same; with v2, none.
CLUSTER_CONFIG = "paxos_variant: v2\n"
MAX_ATTEMPTS, MAX_SENDS = 3, 8
PARALLEL = 12
EVENT_TIMEOUT = 120.0  # seconds to wait for an event (a node up or down) before failing
SLACK = 1.5  # seconds beyond the request timeout for the app's own work on a busy machine


def _err(response) -> str:
    return response.get_json()["params"]["err"]


def _wait_for(what: str, condition, timeout: float = EVENT_TIMEOUT, pause: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout:.0f} s for {what}")
        time.sleep(pause)


# -- the cluster, the keyspace, the app ------------------------------------------------------------------------------

def production_cql(folder: Path) -> Path:
    """A copy of cql/ whose 001 creates the keyspace with cql/001's commented production statement (uncommented,
    its datacenters replaced by DC: 3) instead of the development one. Fails if that comment changes shape."""
    source = Path(__file__).resolve().parent.parent / "cql"
    shutil.copytree(source, folder)
    text = (source / "001_keyspace.cql").read_text()
    commented = re.search(r"^-- (CREATE KEYSPACE IF NOT EXISTS otp\n(?:-- .*\n)*?-- .*;)$", text, re.M)
    assert commented, "cql/001_keyspace.cql no longer holds the commented production statement"
    production = re.sub(r"^-- ", "", commented.group(1), flags=re.M)
    production, replaced = re.subn(r"'NetworkTopologyStrategy', [^}]*", f"'NetworkTopologyStrategy', '{DC}': 3",
                                   production)
    assert replaced == 1, production
    development = re.compile(r"^CREATE KEYSPACE IF NOT EXISTS otp\n.*?;$", re.M | re.S)
    assert development.search(text)
    (folder / "001_keyspace.cql").write_text(development.sub(production, text, count=1))
    return folder


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cluster")
    started = time.monotonic()
    nodes = cassandra_node.start_cluster(3, folder, native_port=NATIVE_PORT, storage_port=STORAGE_PORT,
                                         datacenter=DC, cluster_name="otp-cluster-test", extra_config=CLUSTER_CONFIG,
                                         flush_schema_changes=True, say=lambda line: None)
    nodes.started_in = time.monotonic() - started
    env = {
        **{name: value for name, value in os.environ.items() if not name.startswith("OTP_")},
        "OTP_CASSANDRA_CONTACT_POINTS": ",".join(ADDRESSES),
        "OTP_CASSANDRA_PORT": str(NATIVE_PORT),
        "OTP_CASSANDRA_LOCAL_DC": DC,
    }
    migrate = subprocess.run(
        [sys.executable, "-m", "otp_service.entrypoints.cli", "migrate", "--keyspace", KEYSPACE,
         "--cql-dir", str(production_cql(folder / "cql"))],
        env=env, capture_output=True, text=True, timeout=300,
    )
    try:
        assert migrate.returncode == 0, migrate.stdout + migrate.stderr
        yield nodes
    finally:
        nodes.stop()


def _session_on(address: str):
    """A driver session that sends every statement to `address` as coordinator (none of the app's balancing)."""
    only = ExecutionProfile(load_balancing_policy=WhiteListRoundRobinPolicy([address]), request_timeout=30)
    driver = Cluster([address], port=NATIVE_PORT, protocol_version=5, connect_timeout=10,
                     execution_profiles={EXEC_PROFILE_DEFAULT: only})
    return driver, driver.connect()


@pytest.fixture(scope="module")
def service(cluster):
    settings = settings_for({
        "OTP_STORE": "cassandra",
        "OTP_CASSANDRA_CONTACT_POINTS": ",".join(ADDRESSES),
        "OTP_CASSANDRA_PORT": str(NATIVE_PORT),
        "OTP_CASSANDRA_KEYSPACE": KEYSPACE,
        "OTP_CASSANDRA_LOCAL_DC": DC,
        "OTP_CASSANDRA_REQUEST_TIMEOUT": str(REQUEST_TIMEOUT),
        "OTP_ENCRYPTION_KEYS": ENCRYPTION_KEY,
        "OTP_MAX_VERIFY_ATTEMPTS": str(MAX_ATTEMPTS),
        "OTP_MAX_SENDS": str(MAX_SENDS),
        "OTP_RESEND_COOLDOWN_SECONDS": "0",
        # Off, so that a block read back after the failure comes from Cassandra, not from this process's memory.
        "OTP_LOCKOUT_CACHE_SIZE": "0",
    })
    store = CassandraStore(settings.cassandra)
    channel = RecordingChannel()
    app = create_app(settings, store=store, channels={ContactType.EMAIL: channel, ContactType.PHONE: channel})
    yield app, store, channel
    store.close()


class Witness:
    """Reads a key's row at SERIAL through a coordinator of the test's choosing."""

    def __init__(self, app, address: str):
        self.keys = app.extensions["otp_service"].keys
        self.driver, self.session = _session_on(address)

    def row(self, email: str) -> dict:
        statement = SimpleStatement(
            f"SELECT retry_count, is_locked, send_count, blocked_until, otp FROM {KEYSPACE}.otp "
            "WHERE type = %s AND key = %s", consistency_level=ConsistencyLevel.SERIAL)
        found = self.session.execute(statement, ("email", self.keys.lookup_token("email", email))).one()
        assert found is not None, "no row"
        return found._asdict()

    def close(self):
        self.driver.shutdown()


# -- the concurrency promises ---------------------------------------------------------------------------------------

def _race(app, calls) -> list:
    """Each call in its own thread, released together; the (HTTP status, err, remainingAttempt) of each."""
    barrier = threading.Barrier(len(calls))
    outcomes = [None] * len(calls)

    def run(i, call):
        api = Api(app.test_client())
        barrier.wait()
        response = call(api)
        body = response.get_json()
        outcomes[i] = (response.status_code, body["params"]["err"], body["result"].get("remainingAttempt"))

    threads = [threading.Thread(target=run, args=(i, call)) for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


UNKNOWN = 503  # a timeout or CAS_WRITE_UNKNOWN: the write may or may not have landed, and the answer says so


def assert_concurrency_promises(app, channel, witness: Witness, tally: Counter) -> None:
    """The contract's promises under 12 parallel requests on one key. A 503 is the one answer allowed besides the
    rule's own (under contention a Paxos round can time out): its write may have landed, so each promise is checked
    as "acknowledged <= allowed <= acknowledged + unknown", then settled by requests one at a time."""
    api = Api(app.test_client())
    # Parallel wrong guesses: at most MAX_ATTEMPTS checked (each remaining count once); the code then dead.
    email = unique_email()
    assert _err(api.generate(email)) == ""
    bad = wrong_code(channel.last_code(email))
    outcomes = _race(app, [lambda a: a.verify(email, bad)] * PARALLEL)
    unknown = sum(status == UNKNOWN for status, _, _ in outcomes)
    tally["503 of parallel requests"] += unknown
    assert {(s, e) for s, e, _ in outcomes} <= {(400, "OTP_VERIFICATION_FAILED"), (400, "ERROR_INVALID_OTP"),
                                                (UNKNOWN, "SERVER_ERROR")}, outcomes
    checked = [remaining for _, err, remaining in outcomes if err == "OTP_VERIFICATION_FAILED"]
    assert len(set(checked)) == len(checked) and set(checked) <= set(range(MAX_ATTEMPTS)), outcomes
    assert len(checked) + unknown >= min(MAX_ATTEMPTS, PARALLEL), outcomes  # a refusal only once locked
    for _ in range(MAX_ATTEMPTS):  # settle: one at a time until refused
        response = api.verify(email, bad)
        if _err(response) != "OTP_VERIFICATION_FAILED":
            break
        checked.append(response.get_json()["result"]["remainingAttempt"])
    assert _err(response) == "ERROR_INVALID_OTP" and len(checked) <= MAX_ATTEMPTS and 0 in checked
    row = witness.row(email)
    assert (row["retry_count"], row["is_locked"], row["otp"]) == (MAX_ATTEMPTS, True, None), row

    # Parallel right answers: at most one succeeds; none refused before one landed.
    email = unique_email()
    assert _err(api.generate(email)) == ""
    code = channel.last_code(email)
    outcomes = _race(app, [lambda a: a.verify(email, code)] * PARALLEL)
    unknown = sum(status == UNKNOWN for status, _, _ in outcomes)
    tally["503 of parallel requests"] += unknown
    counted = Counter(err for _, err, _ in outcomes)
    assert set(counted) <= {"", "ERROR_INVALID_OTP", "SERVER_ERROR"} and counted[""] <= 1, outcomes
    assert counted[""] == 1 or unknown > 0, outcomes
    again = _err(api.verify(email, code))
    assert again == "ERROR_INVALID_OTP" if counted[""] else again in ("", "ERROR_INVALID_OTP")
    assert witness.row(email)["otp"] is None  # used

    # Parallel sends below the limit: every acknowledged send counted, one code for all.
    email = unique_email()
    outcomes = _race(app, [lambda a: a.generate(email)] * (MAX_SENDS - 1))
    unknown = sum(status == UNKNOWN for status, _, _ in outcomes)
    tally["503 of parallel requests"] += unknown
    sent = sum(err == "" for _, err, _ in outcomes)
    assert sent + unknown == MAX_SENDS - 1, outcomes
    assert sent <= witness.row(email)["send_count"] <= sent + unknown
    assert len(channel.codes_for(email)) == sent and len(set(channel.codes_for(email))) <= 1

    # Parallel sends beyond it: at most MAX_SENDS go out; the key ends blocked.
    email = unique_email()
    outcomes = _race(app, [lambda a: a.generate(email)] * PARALLEL)
    unknown = sum(status == UNKNOWN for status, _, _ in outcomes)
    tally["503 of parallel requests"] += unknown
    counted = Counter(err for _, err, _ in outcomes)
    assert set(counted) <= {"", "MAX_LIMIT_EXHAUSTED", "KEY_BLOCKED", "SERVER_ERROR"}, outcomes
    assert counted[""] <= MAX_SENDS and counted[""] + unknown >= MAX_SENDS, outcomes
    for _ in range(MAX_SENDS):  # settle
        err = _err(api.generate(email))
        if err != "":
            break
        counted[""] += 1
    assert counted[""] <= MAX_SENDS and err in ("MAX_LIMIT_EXHAUSTED", "KEY_BLOCKED")
    assert _err(api.generate(email)) == "KEY_BLOCKED"
    assert len(set(channel.codes_for(email))) == 1
    tally["parallel requests"] += 3 * PARALLEL + MAX_SENDS - 1


# -- load while a node dies -----------------------------------------------------------------------------------------

class Load:
    """Threads that each walk fresh keys through generate, a wrong guess, the right code, the right code again, and
    record every request as (started, ended, step, HTTP status, err); bounded by `rounds` per thread."""

    STEPS = ("generate", "wrong", "right", "again")
    EXPECTED = {"generate": "", "wrong": "OTP_VERIFICATION_FAILED", "right": "", "again": "ERROR_INVALID_OTP"}

    def __init__(self, app, channel, threads: int = 4, rounds: int = 400):
        self.app, self.channel = app, channel
        self.stop = threading.Event()
        self.records: list[tuple] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(rounds,)) for _ in range(threads)]

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for thread in self.threads:
            thread.join()

    def count(self) -> int:
        with self.lock:
            return len(self.records)

    def _run(self, rounds: int) -> None:
        api = Api(self.app.test_client())
        for _ in range(rounds):
            if self.stop.is_set():
                return
            email = unique_email()
            for step in self.STEPS:
                started = time.monotonic()
                if step == "generate":
                    response = api.generate(email)
                else:
                    code = self.channel.codes_for(email)[-1]
                    response = api.verify(email, wrong_code(code) if step == "wrong" else code)
                record = (started, time.monotonic(), step, response.status_code, _err(response), email)
                with self.lock:
                    self.records.append(record)
                if response.status_code >= 500 or not self.channel.codes_for(email):
                    break  # the outcome of this key's last step is unknown: on to a fresh key


def _host(store: CassandraStore, address: str):
    return next(host for host in store._cluster.metadata.all_hosts() if host.address == address)


def _kill(store: CassandraStore, node) -> float:
    """SIGKILL the node; returns the moment the app's driver saw its host go down."""
    node.kill()
    _wait_for(f"the driver to see {node.address} down", lambda: not _host(store, node.address).is_up, pause=0.02)
    return time.monotonic()


# -- the story ------------------------------------------------------------------------------------------------------

def test_three_nodes_survive_one_lost_refuse_with_two_and_lose_nothing_acknowledged(cluster, service, record_property):
    app, store, channel = service
    api = Api(app.test_client())
    node1, node2, node3 = cluster.nodes
    timings = {"cluster start (s)": round(cluster.started_in, 1)}
    record_property("ran against", f"three real Apache Cassandra {cluster.release_version} nodes at "
                                   f"{', '.join(ADDRESSES)} port {NATIVE_PORT}, datacenter {DC} (its own)")
    tally = Counter()

    # The keyspace is what cql/001's production comment asks for.
    driver, session = _session_on(node3.address)
    try:
        replication = session.execute("SELECT replication FROM system_schema.keyspaces WHERE keyspace_name = %s",
                                      (KEYSPACE,)).one()[0]
        assert replication == {"class": "org.apache.cassandra.locator.NetworkTopologyStrategy", DC: "3"}
        assert {row[0] for row in session.execute("SELECT data_center FROM system.peers")} == {DC}
    finally:
        driver.shutdown()
    assert api.client.get("/health").status_code == 200
    assert {host.address for host in store._cluster.metadata.all_hosts() if host.is_up} == set(ADDRESSES)
    assert {host.datacenter for host in store._cluster.metadata.all_hosts()} == {DC}

    # 1. All three up.
    witness = Witness(app, node3.address)  # node3 stays up throughout: the witness's coordinator
    try:
        assert_concurrency_promises(app, channel, witness, tally)

        # 2. node1 SIGKILLed under load.
        with Load(app, channel) as load:
            _wait_for("the load to get going", lambda: load.count() >= 40)
            killed_at = time.monotonic()
            seen_down_at = _kill(store, node1)
            before = load.count()
            _wait_for("60 more requests after the node died", lambda: load.count() >= before + 60)
        timings["driver saw node1 down after (s)"] = round(seen_down_at - killed_at, 3)
        in_flight = [r for r in load.records if r[0] <= seen_down_at and r[1] >= killed_at]
        failed = [r for r in load.records if r[3] >= 500]
        after = [r for r in load.records if r[0] > seen_down_at]
        timings["requests under load"] = len(load.records)
        timings["in flight when node1 died"] = len(in_flight)
        timings["5xx under load"] = len(failed)
        assert set(failed) <= set(in_flight), f"5xx for requests sent after the driver saw node1 down: {failed}"
        assert all(r[3] == 503 and r[4] == "SERVER_ERROR" for r in failed), failed
        assert len(after) >= 60 and all(r[3] < 500 for r in after)
        for _started, _ended, step, status, err, _email in load.records:  # every rule held, request by request
            if status < 500:
                assert err == Load.EXPECTED[step], (step, status, err)
        by_key = Counter(r[5] for r in load.records if r[2] == "right" and r[4] == "")
        assert max(by_key.values()) == 1  # no code verified twice
        assert_concurrency_promises(app, channel, witness, tally)

        # State acknowledged while node1 is down (node1 never saw it): it must survive node1's return.
        verified = unique_email()
        assert _err(api.generate(verified)) == ""
        verified_code = channel.last_code(verified)
        assert _err(api.verify(verified, verified_code)) == ""
        attempted = unique_email()
        assert _err(api.generate(attempted)) == ""
        attempted_code = channel.last_code(attempted)
        for remaining in (2, 1):
            response = api.verify(attempted, wrong_code(attempted_code))
            assert (_err(response), response.get_json()["result"]["remainingAttempt"]) == \
                ("OTP_VERIFICATION_FAILED", remaining)
        blocked = unique_email()
        for _ in range(MAX_SENDS):
            assert _err(api.generate(blocked)) == ""
        assert _err(api.generate(blocked)) == "MAX_LIMIT_EXHAUSTED"
        sent = unique_email()
        for _ in range(5):
            assert _err(api.generate(sent)) == ""

        # 3. node2 SIGKILLed too: one replica of three is no quorum.
        _kill(store, node2)
        for name, call in [("generate", lambda: api.generate(unique_email())),
                           ("verify", lambda: api.verify(attempted, attempted_code)),
                           ("/health", lambda: api.client.get("/health"))]:
            started = time.monotonic()
            response = call()
            elapsed = time.monotonic() - started
            timings[f"{name} with two nodes down (s)"] = round(elapsed, 2)
            assert response.status_code == 503 and _err(response) == "SERVER_ERROR", response.get_json()
            assert elapsed < REQUEST_TIMEOUT + SLACK, f"{name}: {elapsed:.1f} s"
        # Nothing was counted by the refused verify: see 4.

        # 4. Both back, on the data they left; the same app, never restarted.
        back_at = time.monotonic()
        node1.restart()  # the seed first: a node that starts with no seed answering gives up ("Unable to gossip")
        node2.restart()
        _wait_for("the driver to see all three nodes up",
                  lambda: all(_host(store, address).is_up for address in ADDRESSES), pause=0.2)
        _wait_for("/health 200", lambda: api.client.get("/health").status_code == 200, pause=0.2)
        timings["service back after restart began (s)"] = round(time.monotonic() - back_at, 1)
        assert _err(api.generate(unique_email())) == ""

        # Read back at SERIAL, through node1 (which missed all of it) as coordinator, then through the API.
        late = Witness(app, node1.address)
        try:
            assert late.row(verified)["otp"] is None
            assert late.row(attempted)["retry_count"] == 2 and late.row(attempted)["is_locked"] is False
            assert late.row(blocked)["send_count"] == MAX_SENDS and late.row(blocked)["blocked_until"] is not None
            assert late.row(sent)["send_count"] == 5
        finally:
            late.close()
        assert _err(api.verify(verified, verified_code)) == "ERROR_INVALID_OTP"  # used stays used
        response = api.verify(attempted, wrong_code(attempted_code))  # two counted: this third is the last
        assert (_err(response), response.get_json()["result"]["remainingAttempt"]) == ("OTP_VERIFICATION_FAILED", 0)
        assert _err(api.verify(attempted, attempted_code)) == "ERROR_INVALID_OTP"
        assert _err(api.generate(blocked)) == "KEY_BLOCKED"  # the block stays
        for _ in range(MAX_SENDS - 5):  # five counted: three more, then the limit
            assert _err(api.generate(sent)) == ""
        assert _err(api.generate(sent)) == "MAX_LIMIT_EXHAUSTED"

        # And with all three back, the promises of 1 once more.
        assert_concurrency_promises(app, channel, witness, tally)
    finally:
        witness.close()
        timings.update(tally)
        measured = "; ".join(f"{name} {value}" for name, value in timings.items())
        record_property("measured", measured)
        print("\ncluster test: " + measured)
