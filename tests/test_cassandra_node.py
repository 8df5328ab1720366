"""tests/cassandra_node.py, the launcher of the suite's real Cassandra: its failures say why and where to look.

Starting a node that answers CQL is what every Cassandra-backed test of a session without a given cluster does
already (the cassandra_target fixture); these are the ways a start can go wrong.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from . import cassandra_node


def test_the_pom_names_one_cassandra_5_0_release():
    assert cassandra_node.version().startswith("5.0.")


def test_a_start_on_a_taken_port_starts_nothing_and_says_so(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(cassandra_node.CassandraError, match=f"port {port} .*already in use"):
            cassandra_node.start_node(tmp_path, native_port=port)
    assert not (tmp_path / "node1" / "cassandra.pid").exists()


def test_a_node_that_dies_while_starting_is_reported_with_its_log(tmp_path):
    # A heap too small for the JVM to even start: the process exits at once.
    with pytest.raises(cassandra_node.CassandraError) as failure:
        cassandra_node.start_node(tmp_path, heap="1k", say=lambda line: None)
    message = str(failure.value)
    assert "exited with status" in message and str(tmp_path / "node1" / "logs" / "system.log") in message
    assert not (tmp_path / "node1" / "cassandra.pid").exists()


def test_a_stopped_folder_reads_back_its_nodes_addresses_and_ports(tmp_path):
    node = cassandra_node.Node(tmp_path / "node1", address="127.0.0.2", native_port=19042, storage_port=17000)
    node.write_config()
    (found,) = cassandra_node.nodes_in(tmp_path)
    assert (found.address, found.native_port, found.storage_port) == ("127.0.0.2", 19042, 17000)
    assert not cassandra_node.is_running(found.pid())


def test_a_node_the_suite_starts_ends_with_the_process_that_started_it(tmp_path):
    # A child process launches a node (not waiting for it to start) and is then killed outright, as a CI job
    # can be: the node must not outlive it.
    child = subprocess.Popen(
        [sys.executable, "-c", (
            "import sys, time; from pathlib import Path; from tests import cassandra_node as c;"
            f"node = c.Node(Path({str(tmp_path)!r}) / 'node1', native_port=c.free_port(), storage_port=c.free_port());"
            "node.launch(c.resolve(say=lambda _: None), die_with_parent=True); print(node.pid(), flush=True);"
            "time.sleep(600)"
        )],
        cwd=cassandra_node.ROOT, stdout=subprocess.PIPE, text=True,
    )
    try:
        pid = int(child.stdout.readline())
        assert cassandra_node.is_running(pid)
    finally:
        child.kill()
        child.wait()
    deadline = time.monotonic() + 60
    while cassandra_node.is_running(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if cassandra_node.is_running(pid):
        os.kill(pid, signal.SIGKILL)
        pytest.fail(f"the node (pid {pid}) outlived the process that started it")
