"""tests/cassandra_node.py, the launcher of the suite's real Cassandra: its failures say why and where to look.

Starting a node that answers CQL is what every Cassandra-backed test of a session without a given cluster does
already (the cassandra_target fixture); these are the ways a start can go wrong.
"""
from __future__ import annotations

import socket

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
