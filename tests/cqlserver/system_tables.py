"""The read-only system tables a driver queries on connect and after schema changes.

Column names and types follow Cassandra 4.1's definitions of system.local, system.peers,
system.peers_v2, the system_schema tables (keyspaces, tables, columns, types, functions, aggregates,
triggers, indexes, views, dropped_columns) and system_virtual_schema (keyspaces, tables, columns).
Rows are computed from the engine's schema on every read, so they always reflect the current state;
`schema_version` in system.local changes on every schema change, and peers are always empty (one node).
"""
from __future__ import annotations

import ipaddress
from typing import Callable, List

from . import cql_types as T
from .engine import Column, Engine, Keyspace, Table

LOCAL_STRATEGY = {"class": "org.apache.cassandra.locator.LocalStrategy"}
TOKEN = "-9223372036854775808"  # one token: this node owns the whole ring
CQL_VERSION = "3.4.6"

DEFAULT_TABLE_OPTIONS = {
    "additional_write_policy": "99p",
    "bloom_filter_fp_chance": 0.01,
    "caching": {"keys": "ALL", "rows_per_partition": "NONE"},
    "cdc": False,
    "comment": "",
    "compaction": {"class": "org.apache.cassandra.db.compaction.SizeTieredCompactionStrategy",
                   "max_threshold": "32", "min_threshold": "4"},
    "compression": {"chunk_length_in_kb": "16", "class": "org.apache.cassandra.io.compress.LZ4Compressor"},
    "crc_check_chance": 1.0,
    "default_time_to_live": 0,
    "extensions": {},
    "gc_grace_seconds": 864000,
    "max_index_interval": 2048,
    "memtable_flush_period_in_ms": 0,
    "min_index_interval": 128,
    "read_repair": "BLOCKING",
    "speculative_retry": "99p",
}

TABLE_OPTION_COLUMNS = [
    ("additional_write_policy", "text"), ("bloom_filter_fp_chance", "double"),
    ("caching", "frozen<map<text, text>>"), ("cdc", "boolean"), ("comment", "text"),
    ("compaction", "frozen<map<text, text>>"), ("compression", "frozen<map<text, text>>"),
    ("crc_check_chance", "double"), ("default_time_to_live", "int"), ("extensions", "frozen<map<text, blob>>"),
    ("gc_grace_seconds", "int"), ("max_index_interval", "int"), ("memtable_flush_period_in_ms", "int"),
    ("min_index_interval", "int"), ("read_repair", "text"), ("speculative_retry", "text"),
]


def _table(ks: str, name: str, pk: List[str], ck: List[str], cols: List[tuple],
           provider: Callable[[Engine], List[dict]]) -> Table:
    columns = []
    for cname, ctype in cols:
        t = T.parse_type(ctype)
        if cname in pk:
            columns.append(Column(cname, t, "partition_key", pk.index(cname)))
        elif cname in ck:
            columns.append(Column(cname, t, "clustering", ck.index(cname), "asc"))
        else:
            columns.append(Column(cname, t))
    return Table(ks, name, columns, {"comment": "system table"}, provider=provider)


def _map(d: dict):
    return tuple(sorted(((str(k), v) for k, v in d.items()), key=lambda kv: kv[0].encode()))


def _addr(engine: Engine):
    host = engine.host if engine.host not in ("0.0.0.0", "", "::") else "127.0.0.1"
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return ipaddress.ip_address("127.0.0.1")


# -- providers -----------------------------------------------------------------------------------
def _local(engine: Engine) -> List[dict]:
    addr = _addr(engine)
    return [{
        "key": "local", "bootstrapped": "COMPLETED", "broadcast_address": addr, "broadcast_port": 7000,
        "cluster_name": engine.cluster_name, "cql_version": CQL_VERSION, "data_center": "datacenter1",
        "gossip_generation": engine.started_at, "host_id": engine.host_id, "listen_address": addr,
        "listen_port": 7000, "native_protocol_version": "4",
        "partitioner": "org.apache.cassandra.dht.Murmur3Partitioner", "rack": "rack1",
        "release_version": engine.release_version, "rpc_address": addr, "rpc_port": engine.port,
        "schema_version": engine.schema_version, "tokens": (TOKEN,), "truncated_at": None,
    }]


def _none(engine: Engine) -> List[dict]:
    return []


def _schema_keyspaces(engine: Engine, virtual: bool):
    return [ks for ks in engine.keyspaces.values() if ks.virtual == virtual]


def _keyspaces(engine: Engine) -> List[dict]:
    return [{"keyspace_name": ks.name, "durable_writes": ks.durable_writes, "replication": _map(ks.replication)}
            for ks in _schema_keyspaces(engine, False)]


def _tables(engine: Engine) -> List[dict]:
    rows = []
    for ks in _schema_keyspaces(engine, False):
        for t in ks.tables.values():
            opts = dict(DEFAULT_TABLE_OPTIONS)
            opts.update(t.options)
            row = {"keyspace_name": ks.name, "table_name": t.name, "flags": ("compound",), "id": t.id}
            for name, _ in TABLE_OPTION_COLUMNS:
                v = opts.get(name)
                if isinstance(v, dict):
                    v = _map({k: (val.encode() if name == "extensions" and isinstance(val, str) else val)
                              for k, val in v.items()})
                row[name] = v
            rows.append(row)
    return rows


def _column_rows(tables) -> List[dict]:
    rows = []
    for t in tables:
        for c in t.columns.values():
            rows.append({
                "keyspace_name": t.keyspace, "table_name": t.name, "column_name": c.name,
                "clustering_order": c.order if c.kind == "clustering" else "none",
                "column_name_bytes": c.name.encode("utf-8"), "kind": c.kind, "position": c.position,
                "type": c.type.cql(),
            })
    return rows


def _columns(engine: Engine) -> List[dict]:
    return _column_rows(t for ks in _schema_keyspaces(engine, False) for t in ks.tables.values())


def _dropped_columns(engine: Engine) -> List[dict]:
    return [{"keyspace_name": ks.name, "table_name": t.name, "column_name": name, "dropped_time": when,
             "kind": "regular", "type": ctype.cql()}
            for ks in _schema_keyspaces(engine, False) for t in ks.tables.values()
            for name, (ctype, when) in t.dropped.items()]


def _virtual_keyspaces(engine: Engine) -> List[dict]:
    return [{"keyspace_name": ks.name} for ks in _schema_keyspaces(engine, True)]


def _virtual_tables(engine: Engine) -> List[dict]:
    return [{"keyspace_name": ks.name, "table_name": t.name, "comment": t.options.get("comment", "")}
            for ks in _schema_keyspaces(engine, True) for t in ks.tables.values()]


def _virtual_columns(engine: Engine) -> List[dict]:
    return _column_rows(t for ks in _schema_keyspaces(engine, True) for t in ks.tables.values())


# -- definitions ----------------------------------------------------------------------------------
def install(engine: Engine):
    system = Keyspace("system", dict(LOCAL_STRATEGY), True, system=True)
    schema = Keyspace("system_schema", dict(LOCAL_STRATEGY), True, system=True)
    virtual = Keyspace("system_virtual_schema", {}, False, system=True, virtual=True)

    system.tables["local"] = _table("system", "local", ["key"], [], [
        ("key", "text"), ("bootstrapped", "text"), ("broadcast_address", "inet"), ("broadcast_port", "int"),
        ("cluster_name", "text"), ("cql_version", "text"), ("data_center", "text"), ("gossip_generation", "int"),
        ("host_id", "uuid"), ("listen_address", "inet"), ("listen_port", "int"),
        ("native_protocol_version", "text"), ("partitioner", "text"), ("rack", "text"),
        ("release_version", "text"), ("rpc_address", "inet"), ("rpc_port", "int"), ("schema_version", "uuid"),
        ("tokens", "set<text>"), ("truncated_at", "map<uuid, blob>"),
    ], _local)
    system.tables["peers"] = _table("system", "peers", ["peer"], [], [
        ("peer", "inet"), ("data_center", "text"), ("host_id", "uuid"), ("preferred_ip", "inet"), ("rack", "text"),
        ("release_version", "text"), ("rpc_address", "inet"), ("schema_version", "uuid"), ("tokens", "set<text>"),
    ], _none)
    system.tables["peers_v2"] = _table("system", "peers_v2", ["peer"], ["peer_port"], [
        ("peer", "inet"), ("peer_port", "int"), ("data_center", "text"), ("host_id", "uuid"),
        ("native_address", "inet"), ("native_port", "int"), ("preferred_ip", "inet"), ("preferred_port", "int"),
        ("rack", "text"), ("release_version", "text"), ("schema_version", "uuid"), ("tokens", "set<text>"),
    ], _none)

    schema.tables["keyspaces"] = _table("system_schema", "keyspaces", ["keyspace_name"], [], [
        ("keyspace_name", "text"), ("durable_writes", "boolean"), ("replication", "frozen<map<text, text>>"),
    ], _keyspaces)
    schema.tables["tables"] = _table("system_schema", "tables", ["keyspace_name"], ["table_name"], [
        ("keyspace_name", "text"), ("table_name", "text"), ("flags", "frozen<set<text>>"), ("id", "uuid"),
    ] + TABLE_OPTION_COLUMNS, _tables)
    schema.tables["columns"] = _table("system_schema", "columns", ["keyspace_name"], ["table_name", "column_name"], [
        ("keyspace_name", "text"), ("table_name", "text"), ("column_name", "text"), ("clustering_order", "text"),
        ("column_name_bytes", "blob"), ("kind", "text"), ("position", "int"), ("type", "text"),
    ], _columns)
    schema.tables["dropped_columns"] = _table("system_schema", "dropped_columns", ["keyspace_name"],
                                              ["table_name", "column_name"], [
        ("keyspace_name", "text"), ("table_name", "text"), ("column_name", "text"), ("dropped_time", "timestamp"),
        ("kind", "text"), ("type", "text"),
    ], _dropped_columns)
    schema.tables["types"] = _table("system_schema", "types", ["keyspace_name"], ["type_name"], [
        ("keyspace_name", "text"), ("type_name", "text"), ("field_names", "frozen<list<text>>"),
        ("field_types", "frozen<list<text>>"),
    ], _none)
    schema.tables["functions"] = _table("system_schema", "functions", ["keyspace_name"],
                                        ["function_name", "argument_types"], [
        ("keyspace_name", "text"), ("function_name", "text"), ("argument_types", "frozen<list<text>>"),
        ("argument_names", "frozen<list<text>>"), ("body", "text"), ("called_on_null_input", "boolean"),
        ("language", "text"), ("return_type", "text"),
    ], _none)
    schema.tables["aggregates"] = _table("system_schema", "aggregates", ["keyspace_name"],
                                         ["aggregate_name", "argument_types"], [
        ("keyspace_name", "text"), ("aggregate_name", "text"), ("argument_types", "frozen<list<text>>"),
        ("final_func", "text"), ("initcond", "text"), ("return_type", "text"), ("state_func", "text"),
        ("state_type", "text"),
    ], _none)
    schema.tables["triggers"] = _table("system_schema", "triggers", ["keyspace_name"], ["table_name", "trigger_name"], [
        ("keyspace_name", "text"), ("table_name", "text"), ("trigger_name", "text"),
        ("options", "frozen<map<text, text>>"),
    ], _none)
    schema.tables["indexes"] = _table("system_schema", "indexes", ["keyspace_name"], ["table_name", "index_name"], [
        ("keyspace_name", "text"), ("table_name", "text"), ("index_name", "text"), ("kind", "text"),
        ("options", "frozen<map<text, text>>"),
    ], _none)
    schema.tables["views"] = _table("system_schema", "views", ["keyspace_name"], ["view_name"], [
        ("keyspace_name", "text"), ("view_name", "text"), ("base_table_id", "uuid"), ("base_table_name", "text"),
        ("id", "uuid"), ("include_all_columns", "boolean"), ("where_clause", "text"),
    ] + TABLE_OPTION_COLUMNS, _none)

    virtual.tables["keyspaces"] = _table("system_virtual_schema", "keyspaces", ["keyspace_name"], [], [
        ("keyspace_name", "text"),
    ], _virtual_keyspaces)
    virtual.tables["tables"] = _table("system_virtual_schema", "tables", ["keyspace_name"], ["table_name"], [
        ("keyspace_name", "text"), ("table_name", "text"), ("comment", "text"),
    ], _virtual_tables)
    virtual.tables["columns"] = _table("system_virtual_schema", "columns", ["keyspace_name"],
                                       ["table_name", "column_name"], [
        ("keyspace_name", "text"), ("table_name", "text"), ("column_name", "text"), ("clustering_order", "text"),
        ("column_name_bytes", "blob"), ("kind", "text"), ("position", "int"), ("type", "text"),
    ], _virtual_columns)

    for ks in (system, schema, virtual):
        engine.keyspaces[ks.name] = ks
