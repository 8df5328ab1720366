"""A real Apache Cassandra on loopback, run from the jars Maven resolves (scripts/cassandra-pom.xml).

    resolve()            -> the classpath (Maven's cache, ~/.m2; downloaded only when a jar is missing)
    start_node(...)      -> one node on 127.0.0.1 (free ports by default), started and answering CQL
    start_cluster(n)     -> n nodes on 127.0.0.1 .. 127.0.0.n, same ports, one seed (the first), small heaps
    Node.stop()          -> SIGTERM by PID, SIGKILL if it lingers
    Node.kill()          -> SIGKILL at once (a crash); Node.restart() starts it again on the data it left

A node in a named datacenter (start_cluster(..., datacenter="dc_test")) runs GossipingPropertyFileSnitch with a
cassandra-rackdc.properties of its own, so keyspaces can use NetworkTopologyStrategy with that name, as in production;
otherwise SimpleSnitch (datacenter1).

Each node lives in a folder of its own (cassandra.yaml, logback.xml, data, commitlog, logs/system.log, pid). The
configuration is written for a test node that starts fast: few tokens, no bootstrap, no gossip settling, periodic
commitlog, a small heap, no JMX, no GC log. The JVM flags are those of Cassandra 5.0's conf/jvm-server.options and
conf/jvm17-server.options that a node needs to run on Java 17 (the module exports and opens), without the tuning
meant for large production heaps. scripts/cassandra is the command-line face of this module.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
POM = ROOT / "scripts" / "cassandra-pom.xml"
CACHE = Path(os.environ.get("OTP_CASSANDRA_CACHE", Path.home() / ".cache" / "otp-service" / "cassandra"))
MAIN_CLASS = "org.apache.cassandra.service.CassandraDaemon"
START_TIMEOUT = 180.0  # seconds; a fresh node starts in 10-20 s on a quiet machine, far slower on a busy one


class CassandraError(Exception):
    """The node could not be resolved, started or reached; the message says why and where the log is."""


def version() -> str:
    """The Cassandra release the pom names."""
    found = re.search(r"<cassandra.version>([^<]+)</cassandra.version>", POM.read_text())
    if not found:
        raise CassandraError(f"{POM}: no <cassandra.version>")
    return found.group(1)


def resolve(say=print) -> list[str]:
    """The node's classpath: cassandra-all and its runtime dependencies, resolved by Maven into ~/.m2 once; later
    calls read the recorded classpath and touch no network."""
    release = version()
    listing = CACHE / release / "classpath.txt"
    if listing.exists():
        jars = listing.read_text().strip().split(os.pathsep)
        if jars and all(os.path.exists(jar) for jar in jars):
            return jars
    mvn = shutil.which("mvn")
    if mvn is None:
        raise CassandraError("Maven (mvn) is not installed: it resolves Cassandra's jars (apt-get install maven)")
    say(f"resolving Apache Cassandra {release} and its dependencies with Maven (once; cached in ~/.m2)")
    listing.parent.mkdir(parents=True, exist_ok=True)
    scratch = listing.with_suffix(".tmp")
    done = subprocess.run(
        [mvn, "-B", "-q", "-f", str(POM), "dependency:build-classpath", "-DincludeScope=runtime",
         f"-Dmdep.outputFile={scratch}"],
        capture_output=True, text=True,
    )
    if done.returncode != 0 or not scratch.exists():
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise CassandraError(f"Maven could not resolve org.apache.cassandra:cassandra-all:{release}:\n{tail}")
    scratch.replace(listing)
    return listing.read_text().strip().split(os.pathsep)


def java_command() -> str:
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not java or not os.path.exists(java):
        raise CassandraError("Java is not installed: Cassandra 5.0 needs Java 17 "
                             "(apt-get install openjdk-17-jre-headless)")
    return java


# The module exports and opens of Cassandra 5.0's conf/jvm17-server.options: without them the node fails on Java 17.
_JAVA17_MODULES = [
    "--add-exports", "java.base/jdk.internal.misc=ALL-UNNAMED",
    "--add-exports", "java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED",
    "--add-exports", "java.rmi/sun.rmi.registry=ALL-UNNAMED",
    "--add-exports", "java.rmi/sun.rmi.server=ALL-UNNAMED",
    "--add-exports", "java.sql/java.sql=ALL-UNNAMED",
    "--add-exports", "java.base/java.lang.ref=ALL-UNNAMED",
    "--add-exports", "jdk.unsupported/sun.misc=ALL-UNNAMED",
    "--add-exports", "jdk.compiler/com.sun.tools.javac.file=ALL-UNNAMED",
    "--add-exports", "jdk.attach/sun.tools.attach=ALL-UNNAMED",
    "--add-opens", "java.base/java.lang.module=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.loader=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.ref=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.reflect=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.math=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.module=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.util.jar=ALL-UNNAMED",
    "--add-opens", "jdk.management/com.sun.management.internal=ALL-UNNAMED",
    "--add-opens", "java.base/sun.nio.ch=ALL-UNNAMED",
    "--add-opens", "java.base/java.io=ALL-UNNAMED",
    "--add-opens", "java.base/java.lang.reflect=ALL-UNNAMED",
    "--add-opens", "jdk.compiler/com.sun.tools.javac=ALL-UNNAMED",
    "--add-opens", "java.base/java.lang=ALL-UNNAMED",
    "--add-opens", "java.base/java.util=ALL-UNNAMED",
]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


@dataclass
class Node:
    """One Cassandra process. `folder` holds everything it writes; `log` is the first place to look."""

    folder: Path
    address: str = "127.0.0.1"
    native_port: int = 9042
    storage_port: int = 7000
    seeds: str = ""  # "host:port,...": the node itself when empty
    heap: str = "1G"
    num_tokens: int = 4
    cluster_name: str = "otp-test"
    datacenter: str | None = None  # None: SimpleSnitch (datacenter1); a name: GossipingPropertyFileSnitch
    rack: str = "rack1"
    extra_config: str = ""  # more cassandra.yaml lines
    # False: schema changes are not flushed (fast, for a node that never starts again on its data). A node that will
    # (Node.start_again) needs True: without the flush it came back with an older schema than its peers and answered
    # their reads INCOMPATIBLE_SCHEMA until it pulled theirs.
    flush_schema_changes: bool = False
    process: subprocess.Popen | None = field(default=None, repr=False)
    started_in: float | None = None  # seconds from launch to CQL answering
    release_version: str | None = None

    @property
    def log(self) -> Path:
        return self.folder / "logs" / "system.log"

    @property
    def pid_file(self) -> Path:
        return self.folder / "cassandra.pid"

    @property
    def contact(self) -> str:
        return f"{self.address}:{self.native_port}"

    # -- configuration --------------------------------------------------------------------------------------------
    def write_config(self) -> None:
        for sub in ("data", "commitlog", "saved_caches", "hints", "cdc_raw", "logs"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        folder = self.folder
        seeds = self.seeds or f"{self.address}:{self.storage_port}"
        snitch = "GossipingPropertyFileSnitch" if self.datacenter else "SimpleSnitch"
        if self.datacenter:
            (folder / "cassandra-rackdc.properties").write_text(f"dc={self.datacenter}\nrack={self.rack}\n")
        (folder / "cassandra.yaml").write_text(f"""\
# A test node on loopback, written by tests/cassandra_node.py: nothing here is advice for production.
cluster_name: {self.cluster_name}
num_tokens: {self.num_tokens}
auto_bootstrap: false
partitioner: org.apache.cassandra.dht.Murmur3Partitioner
endpoint_snitch: {snitch}
seed_provider:
  - class_name: org.apache.cassandra.locator.SimpleSeedProvider
    parameters:
      - seeds: "{seeds}"
listen_address: {self.address}
rpc_address: {self.address}
storage_port: {self.storage_port}
native_transport_port: {self.native_port}
start_native_transport: true
data_file_directories: [{folder / 'data'}]
commitlog_directory: {folder / 'commitlog'}
saved_caches_directory: {folder / 'saved_caches'}
hints_directory: {folder / 'hints'}
cdc_raw_directory: {folder / 'cdc_raw'}
commitlog_sync: periodic
commitlog_sync_period: 10000ms
commitlog_segment_size: 8MiB
concurrent_compactors: 1
key_cache_size: 8MiB
counter_cache_size: 0MiB
# Test keyspaces come and go by the dozen; snapshots of dropped ones would only fill the disk.
auto_snapshot: false
{self.extra_config}""")
        (folder / "logback.xml").write_text(f"""\
<configuration>
  <appender name="FILE" class="ch.qos.logback.core.FileAppender">
    <file>{self.log}</file>
    <encoder><pattern>%-5level [%thread] %date{{ISO8601}} %F:%L - %msg%n</pattern></encoder>
  </appender>
  <root level="INFO"><appender-ref ref="FILE"/></root>
  <logger name="org.apache.cassandra" level="INFO"/>
</configuration>
""")

    def command(self, classpath: list[str]) -> list[str]:
        jamm = next((jar for jar in classpath if os.path.basename(jar).startswith("jamm-")), None)
        return [
            java_command(),
            # A small initial heap: Cassandra mlockall()s the JVM's memory at start, touching every committed page
            # (with -Xms1G that alone took 9 s on a busy 2-core machine; the whole start now takes about 4 s).
            "-Xms256M", f"-Xmx{self.heap}", "-Xss256k",
            "-XX:+UseG1GC", "-XX:+ExitOnOutOfMemoryError",
            "-XX:+PerfDisableSharedMem",  # no hsperfdata file per JVM
            "-Djava.net.preferIPv4Stack=true",
            "-Djdk.attach.allowAttachSelf=true",
            *_JAVA17_MODULES,
            "-Dio.netty.tryReflectionSetAccessible=true",
            *([f"-javaagent:{jamm}"] if jamm else []),  # jamm measures memtables, as cassandra-env.sh loads it
            f"-Dcassandra.config=file://{self.folder / 'cassandra.yaml'}",
            f"-Dlogback.configurationFile=file://{self.folder / 'logback.xml'}",
            f"-Dcassandra.logdir={self.folder / 'logs'}",
            f"-Dcassandra.storagedir={self.folder}",
            *([f"-Dcassandra-rackdc.properties=file://{self.folder / 'cassandra-rackdc.properties'}"]
              if self.datacenter else []),
            "-Dcassandra-foreground=yes",
            # A test node: do not wait for a ring that has nothing to settle.
            "-Dcassandra.skip_wait_for_gossip_to_settle=0",
            "-Dcassandra.ring_delay_ms=1000",
            "-Dcassandra.superuser_setup_delay_ms=0",
            # Schema changes (a keyspace per test session) without flushing the schema tables each time.
            f"-Dcassandra.test.flush_local_schema_changes={str(self.flush_schema_changes).lower()}",
            # No JMX at all (no port 7199): the tests stop nodes by PID, not with nodetool.
            "-cp", os.pathsep.join(classpath),
            MAIN_CLASS,
        ]

    # -- life cycle -----------------------------------------------------------------------------------------------
    def launch(self, classpath: list[str], *, die_with_parent: bool = False) -> None:
        """Start the JVM in a session of its own. die_with_parent: the kernel sends it SIGTERM when the thread
        that started it ends, however it ends (a test run killed with SIGKILL leaves no Cassandra behind)."""
        self._classpath, self._die_with_parent = classpath, die_with_parent
        self.write_config()
        out = open(self.folder / "logs" / "stdout.log", "ab")
        self.process = subprocess.Popen(
            self.command(classpath), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=self.folder, start_new_session=True, preexec_fn=_die_with_parent if die_with_parent else None,
        )
        out.close()
        self.pid_file.write_text(str(self.process.pid))
        self._launched = time.monotonic()

    def wait_until_ready(self, timeout: float = START_TIMEOUT) -> str:
        """Block until CQL answers `SELECT release_version FROM system.local`; the release it names."""
        from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile, NoHostAvailable
        from cassandra.policies import WhiteListRoundRobinPolicy

        deadline = time.monotonic() + timeout
        while True:
            if self.process is not None and self.process.poll() is not None:
                raise CassandraError(f"Cassandra at {self.contact} exited with status {self.process.returncode} "
                                     f"while starting{self._log_hint()}")
            if not is_running(pid=self.pid(), fallback=True):
                raise CassandraError(f"Cassandra at {self.contact} is not running{self._log_hint()}")
            if _port_open(self.address, self.native_port):
                only_this_node = ExecutionProfile(load_balancing_policy=WhiteListRoundRobinPolicy([self.address]))
                cluster = Cluster([self.address], port=self.native_port, connect_timeout=5, protocol_version=5,
                                  execution_profiles={EXEC_PROFILE_DEFAULT: only_this_node})
                try:
                    row = cluster.connect().execute("SELECT release_version FROM system.local").one()
                    self.release_version = row[0]
                    if self.process is not None:
                        self.started_in = time.monotonic() - self._launched
                    return self.release_version
                except NoHostAvailable:
                    pass
                finally:
                    cluster.shutdown()
            if time.monotonic() > deadline:
                raise CassandraError(f"Cassandra at {self.contact} did not answer CQL within {timeout:.0f} s"
                                     f"{self._log_hint()}")
            time.sleep(0.5)

    def pid(self) -> int | None:
        if self.process is not None:
            return self.process.pid
        try:
            return int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (Cassandra drains and exits), then SIGKILL after `timeout`; forgets the PID."""
        self.terminate()
        self.wait_stopped(timeout)

    def kill(self) -> None:
        """SIGKILL: the node dies at once, as in a crash (its commitlog is what it left in the page cache), and is
        reaped; its folder stays for restart()."""
        pid = self.pid()
        if pid is not None and is_running(pid):
            os.kill(pid, signal.SIGKILL)
        self.wait_stopped(timeout=30.0)

    def start_again(self) -> None:
        """Launch a stopped node again on the data, commitlog and configuration it left (wait_until_ready waits)."""
        if is_running(self.pid()):
            raise CassandraError(f"Cassandra at {self.contact} is still running")
        classpath = getattr(self, "_classpath", None) or resolve(say=lambda line: None)
        self.launch(classpath, die_with_parent=getattr(self, "_die_with_parent", True))

    def restart(self, timeout: float = START_TIMEOUT) -> str:
        """start_again(), then wait until CQL answers; the release it names."""
        self.start_again()
        return self.wait_until_ready(timeout)

    def terminate(self) -> None:
        pid = self.pid()
        if pid is not None and is_running(pid):
            os.kill(pid, signal.SIGTERM)

    def wait_stopped(self, timeout: float = 30.0) -> None:
        pid = self.pid()
        if pid is None:
            return
        deadline = time.monotonic() + timeout
        while self._alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if self._alive(pid):
            os.kill(pid, signal.SIGKILL)
        if self.process is not None:
            self.process.wait(timeout=10)
        self.pid_file.unlink(missing_ok=True)

    def _alive(self, pid: int) -> bool:
        if self.process is not None:
            return self.process.poll() is None
        return is_running(pid)

    def _log_hint(self) -> str:
        tail = ""
        for candidate in (self.log, self.folder / "logs" / "stdout.log"):
            if candidate.exists():
                lines = [line for line in candidate.read_text(errors="replace").splitlines()
                         if line.startswith(("ERROR", "WARN", "Exception", "Error", "Caused by"))]
                if lines:
                    tail = "\n  " + "\n  ".join(lines[-6:])
                    break
        return f"; its log: {self.log}{tail}"


def _die_with_parent() -> None:
    """In the child, before exec: PR_SET_PDEATHSIG(SIGTERM) (Linux; elsewhere nothing)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def is_running(pid: int | None, fallback: bool = False) -> bool:
    if pid is None:
        return fallback
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (our own child, exited, not yet reaped) is not running
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


@dataclass
class Cluster:
    nodes: list[Node]

    @property
    def contact_points(self) -> tuple[str, ...]:
        return tuple(node.address for node in self.nodes)

    @property
    def native_port(self) -> int:
        return self.nodes[0].native_port

    @property
    def release_version(self) -> str | None:
        return self.nodes[0].release_version

    def stop(self) -> None:
        """SIGTERM to every node at once, then wait for each (SIGKILL for one that lingers)."""
        errors = []
        for node in self.nodes:
            try:
                node.terminate()
            except OSError as exc:
                errors.append(f"{node.contact}: {exc}")
        for node in self.nodes:
            try:
                node.wait_stopped()
            except Exception as exc:  # stop every node even if one refuses
                errors.append(f"{node.contact}: {exc}")
        if errors:
            raise CassandraError("could not stop: " + "; ".join(errors))


def start_node(folder: Path, *, address: str = "127.0.0.1", native_port: int | None = None,
               storage_port: int | None = None, heap: str = "1G", say=print,
               timeout: float = START_TIMEOUT, die_with_parent: bool = True) -> Node:
    """One fresh node in `folder` (emptied first); free ports unless given. Stopped again if it fails to start."""
    return start_cluster(1, folder, native_port=native_port or free_port(address),
                         storage_port=storage_port or free_port(address), heap=heap, first_address=address,
                         say=say, timeout=timeout, die_with_parent=die_with_parent).nodes[0]


def start_cluster(n: int, folder: Path, *, native_port: int = 9042, storage_port: int = 7000,
                  heap: str | None = None, first_address: str = "127.0.0.1", say=print,
                  timeout: float = START_TIMEOUT, die_with_parent: bool = True, datacenter: str | None = None,
                  cluster_name: str = "otp-test", extra_config: str = "",
                  flush_schema_changes: bool = False) -> Cluster:
    """n fresh nodes on consecutive loopback addresses (127.0.0.1 .. 127.0.0.n), all on the same ports, each in
    folder/node<i>, the first one the seed. The seed starts first; the others then start together. Any failure
    stops every node started so far and raises CassandraError."""
    classpath = resolve(say=say)
    heap = heap or ("1G" if n == 1 else "512M")
    base = first_address.rsplit(".", 1)
    addresses = [f"{base[0]}.{int(base[1]) + i}" for i in range(n)]
    seeds = f"{addresses[0]}:{storage_port}"
    nodes = []
    for i, address in enumerate(addresses, start=1):
        node_folder = Path(folder) / f"node{i}"
        if node_folder.exists():
            shutil.rmtree(node_folder)
        nodes.append(Node(node_folder, address=address, native_port=native_port, storage_port=storage_port,
                          seeds=seeds, heap=heap, datacenter=datacenter, cluster_name=cluster_name,
                          extra_config=extra_config, flush_schema_changes=flush_schema_changes))
    for node in nodes:
        busy = _port_open(node.address, node.native_port) or _port_open(node.address, node.storage_port)
        if busy:
            raise CassandraError(f"{node.address}: port {node.native_port} or {node.storage_port} is already in use "
                                 "(another Cassandra? `scripts/cassandra status` / `stop`)")
    cluster = Cluster(nodes)
    try:
        nodes[0].launch(classpath, die_with_parent=die_with_parent)
        nodes[0].wait_until_ready(timeout)
        for node in nodes[1:]:
            node.launch(classpath, die_with_parent=die_with_parent)
        for node in nodes[1:]:
            node.wait_until_ready(timeout)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def nodes_in(folder: Path) -> list[Node]:
    """The nodes a previous start left in `folder` (read back from their cassandra.yaml), running or not."""
    found = []
    for yaml_file in sorted(Path(folder).glob("node*/cassandra.yaml")):
        text = yaml_file.read_text()

        def setting(name: str, text: str = text) -> str:
            return re.search(rf"^{name}: (.+)$", text, re.M).group(1).strip()

        found.append(Node(yaml_file.parent, address=setting("listen_address"),
                          native_port=int(setting("native_transport_port")),
                          storage_port=int(setting("storage_port"))))
    return found


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="scripts/cassandra", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["start", "stop", "status", "resolve"])
    parser.add_argument("--nodes", type=int, default=1, help="nodes on 127.0.0.1 .. 127.0.0.N (default 1)")
    parser.add_argument("--port", type=int, default=9042, help="native (CQL) port of every node (default 9042)")
    parser.add_argument("--storage-port", type=int, default=7000, help="internode port (default 7000)")
    parser.add_argument("--heap", default=None, help="JVM heap per node (default 1G, 512M per node of a cluster)")
    parser.add_argument("--dir", type=Path, default=CACHE / "run",
                        help=f"folder of the nodes' data and logs (default {CACHE / 'run'})")
    args = parser.parse_args(argv)
    say = lambda line: print(line, flush=True)  # noqa: E731
    try:
        if args.action == "resolve":
            say(f"{len(resolve(say=say))} jars for Apache Cassandra {version()}")
        elif args.action == "start":
            running = [node for node in nodes_in(args.dir) if is_running(node.pid())]
            if running:
                say(f"already running: {', '.join(node.contact for node in running)} (scripts/cassandra stop)")
                return 1
            started = time.monotonic()
            cluster = start_cluster(args.nodes, args.dir, native_port=args.port, storage_port=args.storage_port,
                                    heap=args.heap, say=say, die_with_parent=False)  # outlives this command
            for node in cluster.nodes:
                say(f"Apache Cassandra {node.release_version} at {node.contact}, pid {node.pid()}, log {node.log}")
            say(f"started in {time.monotonic() - started:.1f} s; "
                f"use it: OTP_CASSANDRA_CONTACT_POINTS={','.join(cluster.contact_points)} "
                f"OTP_CASSANDRA_PORT={args.port}")
        elif args.action == "stop":
            nodes = nodes_in(args.dir)
            running = [node for node in nodes if is_running(node.pid())]
            Cluster(running).stop()
            for node in running:
                say(f"stopped {node.contact}")
            if not nodes:
                say(f"no nodes in {args.dir}")
        else:
            nodes = nodes_in(args.dir)
            if not nodes:
                say(f"no nodes in {args.dir}")
                return 3
            up = 0
            for node in nodes:
                pid = node.pid()
                if is_running(pid):
                    up += 1
                    answering = "answering CQL" if _port_open(node.address, node.native_port) else "not answering CQL"
                    say(f"{node.contact}: running, pid {pid}, {answering}, log {node.log}")
                else:
                    say(f"{node.contact}: stopped, log {node.log}")
            return 0 if up == len(nodes) else 3
    except CassandraError as exc:
        print(f"scripts/cassandra: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
