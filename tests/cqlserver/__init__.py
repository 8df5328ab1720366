"""An in-process Cassandra stand-in for tests: native protocol v4 over TCP on 127.0.0.1.

    from tests.cqlserver import CqlTestServer
    with CqlTestServer(host="127.0.0.1", port=0) as server:
        cluster = Cluster(["127.0.0.1"], port=server.port)

Modules: protocol.py (framing and message bodies, native_protocol_v4.spec), cql_types.py (type
encodings, spec section 6), cql_parser.py (CQL tokenizer and parser), engine.py (schema, storage,
Cassandra's write/read/TTL/LWT semantics), system_tables.py (system.local/peers, system_schema.*,
system_virtual_schema.*), server.py (sockets, handshake, dispatch).
"""
from .server import CqlTestServer

__all__ = ["CqlTestServer"]
