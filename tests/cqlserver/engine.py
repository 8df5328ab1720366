"""Schema, storage and statement semantics of the CQL test server.

Follows Cassandra's documented CQL semantics (CQL reference: "Data Definition", "Data Manipulation",
"Lightweight transactions"), not any one client's expectations:

* every cell carries a write timestamp (microseconds) and an optional expiry; reconciliation is
  last-write-wins by timestamp (on a tie a deletion wins, then the greater value);
* INSERT writes a row marker (primary-key liveness, with the statement's TTL) plus the cells,
  UPDATE writes only cells; a row is visible while its marker or any of its cells is live;
* writing null writes a tombstone; DELETE writes row / partition / range tombstones;
* USING TTL n (0 = no TTL), else the table's default_time_to_live; TTL(c) is the remaining
  seconds, WRITETIME(c) the cell timestamp; expiry uses whole seconds of the server clock
  (time.time() plus the offset set by `advance_clock`);
* lightweight transactions (IF NOT EXISTS / IF EXISTS / IF conditions) return the `[applied]`
  column first, and when not applied the current values (the whole row for IF NOT EXISTS, the
  condition columns for IF c = v, nothing for a missing row); they are made atomic by a global
  lock and take a server-side (paxos-like) timestamp;
* anything not implemented is refused with an Invalid (0x2200) or Syntax (0x2000) error.
"""
from __future__ import annotations

import datetime
import decimal
import hashlib
import ipaddress
import itertools
import re
import struct
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

from . import cql_parser as P
from . import cql_types as T
from .cql_types import UNSET, CqlType
from .errors import (AlreadyExists, ConfigurationException, InvalidRequest, ProtocolError,
                     SyntaxException, Unauthorized, Unprepared)

MAX_TTL = 20 * 365 * 24 * 60 * 60  # Cassandra's maximum TTL (20 years)
NO_DELETION = -(1 << 64)
ALLOW_FILTERING_MSG = ("Cannot execute this query as it might involve data filtering and thus may have "
                       "unpredictable performance. If you want to execute this query despite the performance "
                       "unpredictability, use ALLOW FILTERING")

CONSISTENCY_NAMES = {
    0x0000: "ANY", 0x0001: "ONE", 0x0002: "TWO", 0x0003: "THREE", 0x0004: "QUORUM", 0x0005: "ALL",
    0x0006: "LOCAL_QUORUM", 0x0007: "EACH_QUORUM", 0x0008: "SERIAL", 0x0009: "LOCAL_SERIAL",
    0x000A: "LOCAL_ONE",
}
SERIAL_LEVELS = ("SERIAL", "LOCAL_SERIAL")

STRATEGIES = {
    "simplestrategy": "org.apache.cassandra.locator.SimpleStrategy",
    "networktopologystrategy": "org.apache.cassandra.locator.NetworkTopologyStrategy",
}
_NAME_RE = re.compile(r"^\w{1,48}$")


# =============================================================================================
# Schema
# =============================================================================================
class Column:
    def __init__(self, name: str, ctype: CqlType, kind: str = "regular", position: int = -1,
                 order: str = "none"):
        self.name = name
        self.type = ctype
        self.kind = kind  # partition_key, clustering, regular
        self.position = position
        self.order = order  # asc / desc for clustering columns, none otherwise

    @property
    def is_primary_key(self) -> bool:
        return self.kind in ("partition_key", "clustering")

    def __repr__(self):
        return "Column(%s %s %s)" % (self.name, self.type, self.kind)


class Table:
    def __init__(self, keyspace: str, name: str, columns: List[Column], options: Optional[dict] = None,
                 provider: Optional[Callable[["Engine"], List[dict]]] = None, table_id: Optional[uuid.UUID] = None):
        self.keyspace = keyspace
        self.name = name
        self.set_columns(columns)
        self.dropped: Dict[str, Tuple[CqlType, int]] = {}  # dropped column -> (type, drop time in ms)
        self.options = dict(options or {})
        self.provider = provider
        self.id = table_id or uuid.uuid4()
        self.partitions: Dict[tuple, "Partition"] = {}

    def set_columns(self, columns: List[Column]):
        self.columns: Dict[str, Column] = {c.name: c for c in columns}
        self.partition_key = sorted((c for c in columns if c.kind == "partition_key"), key=lambda c: c.position)
        self.clustering = sorted((c for c in columns if c.kind == "clustering"), key=lambda c: c.position)
        # Cassandra orders regular columns simple-before-complex, then by name
        self.regular = sorted((c for c in columns if c.kind == "regular"),
                              key=lambda c: (c.type.is_multicell, c.name.encode("utf-8")))
        self.select_order = self.partition_key + self.clustering + self.regular

    @property
    def virtual(self) -> bool:
        return self.provider is not None

    @property
    def default_ttl(self) -> int:
        return int(self.options.get("default_time_to_live", 0) or 0)

    def column(self, name: str) -> Column:
        col = self.columns.get(name)
        if col is None:
            raise InvalidRequest("Undefined column name %s in table %s.%s" % (name, self.keyspace, self.name))
        return col

    def clustering_key(self, ck: tuple):
        return tuple(_ordered_key(c, v) for c, v in zip(self.clustering, ck))


class Keyspace:
    def __init__(self, name: str, replication: Dict[str, str], durable_writes: bool = True,
                 system: bool = False, virtual: bool = False):
        self.name = name
        self.replication = replication
        self.durable_writes = durable_writes
        self.tables: Dict[str, Table] = {}
        self.system = system
        self.virtual = virtual


class _Desc:
    """Sort-key wrapper that reverses ordering (clustering columns declared DESC)."""

    __slots__ = ("key",)

    def __init__(self, key):
        self.key = key

    def __lt__(self, other):
        return other.key < self.key

    def __gt__(self, other):
        return other.key > self.key

    def __eq__(self, other):
        return self.key == other.key

    def __le__(self, other):
        return other.key <= self.key

    def __ge__(self, other):
        return other.key >= self.key


def _ordered_key(col: Column, value):
    k = col.type.sort_key(value)
    return _Desc(k) if col.order == "desc" else k


# =============================================================================================
# Storage
# =============================================================================================
class Cell:
    """A cell (or a row marker when value is True). value None is a tombstone.
    `expires` is the local expiration time in whole seconds of the server clock (None: no TTL)."""

    __slots__ = ("value", "ts", "expires", "ttl")

    def __init__(self, value, ts: int, expires: Optional[int] = None, ttl: int = 0):
        self.value = value
        self.ts = ts
        self.expires = expires
        self.ttl = ttl

    def is_live(self, now: int, deletion: int) -> bool:
        return (self.value is not None and self.ts > deletion
                and (self.expires is None or now < self.expires))


def _supersedes(new: Cell, old: Optional[Cell], now: int, ctype: Optional[CqlType]) -> bool:
    """Cassandra's cell reconciliation: higher timestamp wins; on a tie a dead (deleted or expired)
    cell wins over a live one, then the greater value, then the later expiry."""
    if old is None:
        return True
    if new.ts != old.ts:
        return new.ts > old.ts
    new_dead = new.value is None or (new.expires is not None and new.expires <= now)
    old_dead = old.value is None or (old.expires is not None and old.expires <= now)
    if new_dead != old_dead:
        return new_dead
    if not new_dead and ctype is not None and new.value != old.value:
        return ctype.serialize(new.value) > ctype.serialize(old.value)
    return (new.expires or 0) >= (old.expires or 0)


class RowData:
    __slots__ = ("marker", "cells", "deleted")

    def __init__(self):
        self.marker: Optional[Cell] = None
        self.cells: Dict[str, Cell] = {}
        self.deleted: int = NO_DELETION


class Partition:
    __slots__ = ("rows", "deleted", "range_tombstones")

    def __init__(self):
        self.rows: Dict[tuple, RowData] = {}
        self.deleted: int = NO_DELETION
        self.range_tombstones: List[Tuple[tuple, int]] = []

    def deletion_for(self, ck: tuple, row: Optional[RowData]) -> int:
        d = self.deleted
        if row is not None and row.deleted > d:
            d = row.deleted
        for prefix, ts in self.range_tombstones:
            if ts > d and ck[:len(prefix)] == prefix:
                d = ts
        return d


class RowView:
    """A live row as seen by a read: values of its live columns (keys included) and the live cells."""

    __slots__ = ("values", "cells", "pk", "ck")

    def __init__(self, values: dict, cells: dict, pk: tuple = (), ck: tuple = ()):
        self.values = values
        self.cells = cells
        self.pk = pk
        self.ck = ck


# =============================================================================================
# Results
# =============================================================================================
@dataclass
class ColumnSpec:
    keyspace: str
    table: str
    name: str
    type: CqlType


@dataclass
class VoidResult:
    pass


@dataclass
class RowsResult:
    columns: List[ColumnSpec]
    rows: List[tuple]
    paging_state: Optional[bytes] = None


@dataclass
class SetKeyspaceResult:
    keyspace: str


@dataclass
class SchemaChangeResult:
    change: str  # CREATED, UPDATED, DROPPED
    target: str  # KEYSPACE, TABLE
    keyspace: str
    name: Optional[str] = None


@dataclass
class PreparedResult:
    statement_id: bytes
    bind_columns: List[ColumnSpec]
    pk_indexes: List[int]
    result_columns: Optional[List[ColumnSpec]]  # None: no result metadata


@dataclass
class QueryParams:
    """The <query_parameters> of QUERY / EXECUTE (spec 4.1.4), decoded."""

    consistency: int = 0x0001
    values: Optional[list] = None  # raw [value]s: bytes, None (null) or UNSET
    names: Optional[List[str]] = None
    skip_metadata: bool = False
    page_size: Optional[int] = None
    paging_state: Optional[bytes] = None
    serial_consistency: Optional[int] = None
    timestamp: Optional[int] = None


@dataclass
class BatchEntry:
    query: Optional[str]
    statement_id: Optional[bytes]
    values: list
    names: Optional[List[str]] = None


# =============================================================================================
# Execution context and terms
# =============================================================================================
class Ctx:
    """Per-execution state: bound values, consistency, timestamps, the server clock."""

    def __init__(self, engine: "Engine", params: QueryParams, values: list, now: int):
        self.engine = engine
        self.params = params
        self.values = values
        self.now = now  # seconds, server clock
        self.consistency = CONSISTENCY_NAMES.get(params.consistency)
        self.serial = (CONSISTENCY_NAMES.get(params.serial_consistency)
                       if params.serial_consistency is not None else None)
        self.batch_timestamp: Optional[int] = None


Bound = Callable[[Ctx], Any]


@dataclass
class Spec:
    name: str
    type: CqlType


class Compiler:
    """Resolves names and types of one statement and types its bind markers."""

    def __init__(self, engine: "Engine", keyspace: Optional[str], markers: List[P.Marker]):
        self.engine = engine
        self.keyspace = keyspace
        self.markers = markers
        self.specs: List[Optional[Spec]] = [None] * len(markers)
        self.table: Optional[Table] = None

    def resolve_table(self, ks: Optional[str], name: str) -> Table:
        ksname = ks or self.keyspace
        if ksname is None:
            raise InvalidRequest("No keyspace has been specified. USE a keyspace, or explicitly specify keyspace.tablename")
        keyspace = self.engine.keyspaces.get(ksname)
        if keyspace is None:
            raise InvalidRequest("Keyspace %s does not exist" % ksname)
        table = keyspace.tables.get(name)
        if table is None:
            raise InvalidRequest("unconfigured table %s" % name)
        return table

    def marker(self, m: P.Marker, name: str, ctype: CqlType) -> Bound:
        self.specs[m.index] = Spec(m.name or name, ctype)
        idx = m.index

        def get(ctx: Ctx):
            raw = ctx.values[idx]
            if raw is None or raw is UNSET:
                return raw
            return ctype.deserialize(raw)
        return get

    def term(self, term, ctype: CqlType, name: str) -> Bound:
        if isinstance(term, P.Marker):
            return self.marker(term, name, ctype)
        if isinstance(term, P.FunctionCall):
            return self.function(term, ctype, name)
        if isinstance(term, P.CollectionLiteral):
            return self.collection(term, ctype, name)
        value = coerce_literal(term, ctype, name)
        return lambda ctx: value

    def collection(self, lit: P.CollectionLiteral, ctype: CqlType, name: str) -> Bound:
        kind = lit.kind
        ok = (kind == ctype.name) or (kind == "empty" and ctype.name in ("set", "map"))
        if not ok:
            raise InvalidRequest("Invalid %s literal for %s of type %s" % (
                "map" if kind == "empty" else kind, name, ctype.cql()))
        if ctype.name == "map":
            parts = [(self.term(k, ctype.params[0], name), self.term(v, ctype.params[1], name)) for k, v in lit.items]

            def get_map(ctx):
                items = []
                for kf, vf in parts:
                    k, v = kf(ctx), vf(ctx)
                    if k is None or v is None or k is UNSET or v is UNSET:
                        raise InvalidRequest("null is not supported inside collections")
                    items.append((k, v))
                return T.normalize_collection(ctype, items)
            return get_map
        elems = [self.term(e, ctype.params[0], name) for e in lit.items]

        def get_coll(ctx):
            items = []
            for ef in elems:
                e = ef(ctx)
                if e is None or e is UNSET:
                    raise InvalidRequest("null is not supported inside collections")
                items.append(e)
            return T.normalize_collection(ctype, items)
        return get_coll

    def function(self, fc: P.FunctionCall, ctype: CqlType, name: str) -> Bound:
        fname = fc.name
        if fname in ("now", "currenttimeuuid") and not fc.args:
            rtype, fn = "timeuuid", lambda ctx: uuid.uuid1()
        elif fname == "uuid" and not fc.args:
            rtype, fn = "uuid", lambda ctx: uuid.uuid4()
        elif fname == "currenttimestamp" and not fc.args:
            rtype, fn = "timestamp", lambda ctx: int(time.time() * 1000)
        elif (fname in ("totimestamp", "tounixtimestamp") and len(fc.args) == 1
              and isinstance(fc.args[0], P.FunctionCall) and fc.args[0].name == "now" and not fc.args[0].args):
            rtype = "timestamp" if fname == "totimestamp" else "bigint"
            fn = lambda ctx: int(time.time() * 1000)
        else:
            raise InvalidRequest("Unknown function %s or unsupported arguments (the CQL test server knows now(), "
                                 "uuid(), currentTimestamp(), toTimestamp(now()))" % fname)
        if not (ctype.name == rtype or (rtype == "timeuuid" and ctype.name == "uuid")):
            raise InvalidRequest("Type error: cannot assign result of function %s (type %s) to %s (type %s)"
                                 % (fname, rtype, name, ctype.cql()))
        return fn


def _literal_kind_name(lit: P.Literal) -> str:
    return {"string": "STRING", "integer": "INTEGER", "float": "FLOAT", "boolean": "BOOLEAN", "uuid": "UUID",
            "hex": "HEX"}.get(lit.kind, lit.kind.upper())


def _parse_timestamp_text(s: str) -> int:
    text = s.strip()
    try:
        if re.fullmatch(r"-?\d+", text):
            return int(text)
        text = re.sub(r"([+-]\d\d)(\d\d)$", r"\1:\2", text)
        dt = datetime.datetime.fromisoformat(text.replace(" ", "T", 1) if "T" not in text else text)
    except ValueError:
        raise InvalidRequest("Unable to coerce '%s' to a formatted date (long)" % s)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=datetime.timezone.utc)
    delta = dt - datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
    return (delta.days * 86400 + delta.seconds) * 1000 + delta.microseconds // 1000


def coerce_literal(lit: P.Literal, ctype: CqlType, name: str):
    """Type a literal for a receiver of type `ctype` the way Cassandra's Constants do."""
    if lit.kind == "null":
        return None
    n = ctype.name

    def bad():
        return InvalidRequest('Invalid %s constant (%s) for "%s" of type %s'
                              % (_literal_kind_name(lit), lit.text, name, ctype.cql()))
    if ctype.is_collection:
        raise bad()
    if lit.kind == "string":
        v = lit.value
        if n in ("text", "ascii"):
            if n == "ascii" and not v.isascii():
                raise InvalidRequest("Invalid ASCII character in string literal %s" % v)
            return v
        if n == "timestamp":
            return _parse_timestamp_text(v)
        if n == "date":
            try:
                d = datetime.date.fromisoformat(v)
            except ValueError:
                raise InvalidRequest("Unable to coerce '%s' to a formatted date" % v)
            return (d - datetime.date(1970, 1, 1)).days + (1 << 31)
        if n == "time":
            m = re.fullmatch(r"(\d{1,2}):(\d\d):(\d\d)(?:\.(\d{1,9}))?", v)
            if not m:
                raise InvalidRequest("Unable to coerce '%s' to a formatted time" % v)
            frac = (m.group(4) or "").ljust(9, "0")
            return ((int(m.group(1)) * 60 + int(m.group(2))) * 60 + int(m.group(3))) * 10 ** 9 + int(frac or 0)
        if n == "inet":
            try:
                return ipaddress.ip_address(v)
            except ValueError:
                raise InvalidRequest("Unable to make inet address from '%s'" % v)
        raise bad()
    if lit.kind == "integer":
        v = lit.value
        if n in T.INT_RANGES and n != "time":
            size, lo, hi = T.INT_RANGES[n]
            if not lo <= v <= hi:
                raise InvalidRequest("Unable to make %s from '%s'" % (n, lit.text))
            return v
        if n == "varint":
            return v
        if n in ("double", "float"):
            return float(v)
        if n == "decimal":
            return decimal.Decimal(lit.text)
        if n == "time":
            return v
        if n == "date":
            return v
        raise bad()
    if lit.kind == "float":
        if n in ("double", "float"):
            return float(lit.value)
        if n == "decimal":
            return decimal.Decimal(lit.text)
        raise bad()
    if lit.kind == "boolean":
        if n == "boolean":
            return lit.value
        raise bad()
    if lit.kind == "uuid":
        if n in ("uuid", "timeuuid"):
            u = uuid.UUID(lit.value)
            if n == "timeuuid" and u.version != 1:
                raise InvalidRequest("Unsupported UUID version (%d)" % (u.version or 0))
            return u
        raise bad()
    if lit.kind == "hex":
        if n == "blob":
            return lit.value
        raise bad()
    raise bad()


def _check_value(v, col_name: str, what: str = "column"):
    if v is UNSET:
        raise InvalidRequest("Invalid unset value for %s %s" % (what, col_name))
    if v is None:
        raise InvalidRequest("Invalid null value in condition for %s %s" % (what, col_name))
    return v


def _key_values(ctx: Ctx, restriction, col: Column, part: str) -> list:
    """Values an EQ/IN restriction gives a primary-key column (null/unset refused)."""
    op, getter = restriction
    if op == "=":
        vals = [getter(ctx)]
    elif isinstance(getter, list):
        vals = [g(ctx) for g in getter]
    else:
        v = getter(ctx)
        if v is UNSET:
            raise InvalidRequest("Invalid unset value for column %s" % col.name)
        if v is None:
            raise InvalidRequest("Invalid null value for column %s" % col.name)
        vals = list(v)
    out = []
    for v in vals:
        if v is UNSET:
            raise InvalidRequest("Invalid unset value for column %s" % col.name)
        if v is None:
            raise InvalidRequest("Invalid null value for %s part %s" % (part, col.name))
        if v not in out:
            out.append(v)
    return out


def _compare_op(ctype: CqlType, op: str, left, right) -> bool:
    a, b = ctype.sort_key(left), ctype.sort_key(right)
    if op == "=":
        return a == b
    if op == "!=":
        return a != b
    if op == "<":
        return a < b
    if op == ">":
        return a > b
    if op == "<=":
        return a <= b
    if op == ">=":
        return a >= b
    raise InvalidRequest("Unsupported operator %s" % op)


# =============================================================================================
# Compiled statements
# =============================================================================================
class Compiled:
    table: Optional[Table] = None
    specs: List[Spec] = []
    is_select = False
    keyspace_name: Optional[str] = None

    def bind_columns(self) -> List[ColumnSpec]:
        ks = self.table.keyspace if self.table else (self.keyspace_name or "")
        tn = self.table.name if self.table else ""
        return [ColumnSpec(ks, tn, s.name, s.type) for s in self.specs]

    def pk_indexes(self) -> List[int]:
        return []

    def result_columns(self) -> Optional[List[ColumnSpec]]:
        return None

    def execute(self, ctx: Ctx):
        raise NotImplementedError


def _where_restrictions(comp: Compiler, table: Table, where: List[P.Relation]) -> Dict[str, List[tuple]]:
    """Type each WHERE relation; returns {column: [(op, getter)]} (getter is a list of getters for IN (...))."""
    out: Dict[str, List[tuple]] = {}
    for rel in where:
        col = table.column(rel.column)
        if rel.op == "IN":
            if isinstance(rel.term, P.Marker):
                getter = comp.marker(rel.term, "in(%s)" % col.name, T.list_of(col.type))
            else:
                getter = [comp.term(t, col.type, col.name) for t in rel.term]
        else:
            getter = comp.term(rel.term, col.type, col.name)
        prev = out.setdefault(col.name, [])
        if prev and (rel.op in ("=", "IN") or any(op in ("=", "IN") for op, _ in prev)):
            raise InvalidRequest("%s cannot be restricted by more than one relation if it includes an Equal" % col.name)
        prev.append((rel.op, getter))
    return out


def _pk_marker_indexes(table: Table, where: List[P.Relation]) -> List[int]:
    idx = {}
    for rel in where:
        if rel.op == "=" and isinstance(rel.term, P.Marker):
            idx[rel.column] = rel.term.index
    if all(c.name in idx for c in table.partition_key):
        return [idx[c.name] for c in table.partition_key]
    return []


class CompiledSelect(Compiled):
    is_select = True

    def __init__(self, comp: Compiler, stmt: P.Select):
        table = comp.resolve_table(stmt.keyspace, stmt.table)
        self.table = table
        self.stmt = stmt
        self.outputs: List[Tuple[str, CqlType, str, Optional[str]]] = []  # (name, type, kind, column)
        if stmt.selectors is None:
            if stmt.distinct:
                raise InvalidRequest("SELECT DISTINCT queries must only request partition key columns and/or static columns (not *)")
            for col in table.select_order:
                self.outputs.append((col.name, col.type, "column", col.name))
        else:
            for sel in stmt.selectors:
                if sel.kind == "column":
                    col = table.column(sel.column)
                    self.outputs.append((sel.alias or col.name, col.type, "column", col.name))
                elif sel.kind in ("ttl", "writetime"):
                    col = table.column(sel.column)
                    if col.is_primary_key:
                        raise InvalidRequest("Cannot use selection function %s on PRIMARY KEY part %s"
                                             % ("ttl" if sel.kind == "ttl" else "writeTime", col.name))
                    if col.type.is_multicell:
                        raise InvalidRequest("Cannot use selection function %s on non-frozen collection %s"
                                             % ("ttl" if sel.kind == "ttl" else "writeTime", col.name))
                    ctype = T.INT if sel.kind == "ttl" else T.BIGINT
                    self.outputs.append((sel.alias or "%s(%s)" % (sel.kind, col.name), ctype, sel.kind, col.name))
                elif sel.kind == "count":
                    if sel.column is not None:
                        table.column(sel.column)
                        name = "system.count(%s)" % sel.column
                    else:
                        name = "count"
                    self.outputs.append((sel.alias or name, T.BIGINT, "count", sel.column))
        self.aggregate = any(o[2] == "count" for o in self.outputs)
        if stmt.distinct:
            for name, _, kind, colname in self.outputs:
                col = table.columns.get(colname) if colname else None
                if kind != "column" or col is None or col.kind != "partition_key":
                    raise InvalidRequest("SELECT DISTINCT queries must only request partition key columns and/or "
                                         "static columns (not %s)" % (colname or name))
            selected = {o[3] for o in self.outputs}
            missing = [c.name for c in table.partition_key if c.name not in selected]
            if missing:
                raise InvalidRequest("SELECT DISTINCT queries must request all the partition key columns (missing %s)"
                                     % ", ".join(missing))
        self.restrictions = _where_restrictions(comp, table, stmt.where)
        self._check_restrictions()
        self.order_reversed = self._check_order_by()
        self.limit = comp.term(stmt.limit, T.INT, "[limit]") if stmt.limit is not None else None
        self.specs = comp.specs
        self._pk_idx = _pk_marker_indexes(table, stmt.where)

    def _check_restrictions(self):
        t, r = self.table, self.restrictions
        needs_filtering = False
        pk_restricted = [c for c in t.partition_key if c.name in r]
        self.pk_lookup = len(pk_restricted) == len(t.partition_key) and all(
            op in ("=", "IN") for c in t.partition_key for op, _ in r[c.name])
        if pk_restricted and not self.pk_lookup:
            needs_filtering = True
        ck_restricted = [c for c in t.clustering if c.name in r]
        if ck_restricted:
            if not self.pk_lookup:
                needs_filtering = True
            state = "eq"
            for c in t.clustering:
                if c.name not in r:
                    state = "gap"
                    continue
                if state != "eq":
                    needs_filtering = True
                    break
                if any(op not in ("=", "IN") for op, _ in r[c.name]):
                    state = "slice"
        for name in r:
            col = t.columns[name]
            if not col.is_primary_key:
                needs_filtering = True
        if needs_filtering and not self.stmt.allow_filtering:
            raise InvalidRequest(ALLOW_FILTERING_MSG)

    def _check_order_by(self) -> bool:
        order = self.stmt.order_by
        if not order:
            return False
        t = self.table
        if not self.pk_lookup:
            raise InvalidRequest("ORDER BY is only supported when the partition key is restricted by an EQ or an IN.")
        reversed_flags = []
        for i, (name, direction) in enumerate(order):
            col = t.column(name)
            if col.kind != "clustering":
                raise InvalidRequest("Order by is currently only supported on the clustered columns of the PRIMARY KEY, got %s" % name)
            if col.position != i:
                raise InvalidRequest("Order by currently only supports the ordering of columns following their declared order in the PRIMARY KEY")
            reversed_flags.append((direction == "desc") != (col.order == "desc"))
        if len(set(reversed_flags)) > 1:
            raise InvalidRequest("Unsupported order by relation")
        return reversed_flags[0]

    def pk_indexes(self):
        return self._pk_idx

    def result_columns(self):
        return [ColumnSpec(self.table.keyspace, self.table.name, n, ty) for n, ty, _, _ in self.outputs]

    # -- execution -------------------------------------------------------------------------------
    def _predicates(self, ctx: Ctx) -> Dict[str, List[Callable[[Any], bool]]]:
        preds: Dict[str, List[Callable[[Any], bool]]] = {}
        for name, rels in self.restrictions.items():
            col = self.table.columns[name]
            for op, getter in rels:
                if op == "IN":
                    if isinstance(getter, list):
                        vals = [getter_i(ctx) for getter_i in getter]
                    else:
                        v = getter(ctx)
                        if v is UNSET:
                            raise InvalidRequest("Invalid unset value for column %s" % name)
                        if v is None:
                            raise InvalidRequest("Invalid null value for column %s" % name)
                        vals = list(v)
                    for v in vals:
                        _check_value(v, name)
                    keys = {col.type.sort_key(v) for v in vals}
                    preds.setdefault(name, []).append(lambda x, keys=keys, ct=col.type: ct.sort_key(x) in keys)
                else:
                    v = _check_value(getter(ctx), name)
                    preds.setdefault(name, []).append(
                        lambda x, v=v, op=op, ct=col.type: _compare_op(ct, op, x, v))
        return preds

    def _candidate_partitions(self, ctx: Ctx, partitions: Dict[tuple, Any]):
        if not self.pk_lookup:
            return list(partitions.items())
        per_col = [_key_values(ctx, self.restrictions[c.name][0], c, "partition key") for c in self.table.partition_key]
        out = []
        for key in itertools.product(*per_col):
            if key in partitions:
                out.append((key, partitions[key]))
        return out

    def rows(self, ctx: Ctx) -> List[RowView]:
        t = self.table
        engine = ctx.engine
        if t.virtual:
            partitions = engine.virtual_partitions(t)
        else:
            partitions = t.partitions
        preds = self._predicates(ctx)
        result: List[RowView] = []
        for pk, part in self._candidate_partitions(ctx, partitions):
            if t.virtual:
                views = part
            else:
                views = engine.live_rows(t, pk, part, ctx.now)
            for view in views:
                ok = True
                for name, plist in preds.items():
                    v = view.values.get(name)
                    if v is None or not all(p(v) for p in plist):
                        ok = False
                        break
                if ok:
                    result.append(view)
                    if self.stmt.distinct:
                        break
        if self.order_reversed or (self.stmt.order_by and len({r.pk for r in result}) > 1):
            result.sort(key=lambda r: t.clustering_key(r.ck), reverse=self.order_reversed)
        return result

    def execute(self, ctx: Ctx) -> RowsResult:
        if ctx.consistency == "ANY":
            raise InvalidRequest("ANY ConsistencyLevel is only supported for writes")
        rows = self.rows(ctx)
        limit = None
        if self.limit is not None:
            lv = self.limit(ctx)
            if lv is None:
                raise InvalidRequest("Invalid null value of limit")
            if lv is not UNSET:
                if lv <= 0:
                    raise InvalidRequest("LIMIT must be strictly positive")
                limit = lv
        if self.aggregate:
            first = rows[0] if rows else None
            out = []
            for name, ctype, kind, colname in self.outputs:
                if kind == "count":
                    if colname is None:
                        out.append(len(rows))
                    else:
                        out.append(sum(1 for r in rows if r.values.get(colname) is not None))
                else:
                    out.append(self._value(first, kind, colname, ctx) if first else None)
            return RowsResult(self.result_columns(), [tuple(out)])
        if limit is not None:
            rows = rows[:limit]
        values = [tuple(self._value(r, kind, colname, ctx) for _, _, kind, colname in self.outputs) for r in rows]
        paging_state = None
        page_size = ctx.params.page_size
        if page_size is not None and page_size > 0:
            offset = 0
            if ctx.params.paging_state:
                offset = _decode_paging_state(ctx.params.paging_state)
            end = offset + page_size
            if end < len(values):
                paging_state = _encode_paging_state(end)
            values = values[offset:end]
        return RowsResult(self.result_columns(), values, paging_state)

    @staticmethod
    def _value(row: RowView, kind: str, colname: str, ctx: Ctx):
        if kind == "column":
            return row.values.get(colname)
        cell = row.cells.get(colname)
        if cell is None:
            return None
        if kind == "writetime":
            return cell.ts
        if cell.expires is None:
            return None
        return cell.expires - ctx.now


def _encode_paging_state(offset: int) -> bytes:
    return b"cqlts" + struct.pack(">q", offset)


def _decode_paging_state(state: bytes) -> int:
    if len(state) != 13 or not state.startswith(b"cqlts"):
        raise ProtocolError("Invalid value for the paging state")
    return struct.unpack(">q", state[5:])[0]


class CompiledModification(Compiled):
    """Shared parts of INSERT / UPDATE / DELETE: keys, timestamps, TTLs, conditions."""

    kind = ""

    def _common(self, comp: Compiler, stmt, using: P.UsingClause):
        table = comp.resolve_table(stmt.keyspace, stmt.table)
        if table.virtual or self._is_system(comp, table):
            raise Unauthorized("%s keyspace is not user-modifiable." % table.keyspace)
        self.table = table
        self.ttl = comp.term(using.ttl, T.INT, "[ttl]") if using.ttl is not None else None
        self.timestamp = comp.term(using.timestamp, T.BIGINT, "[timestamp]") if using.timestamp is not None else None
        self.if_exists = False
        self.if_not_exists = False
        self.conditions: List[Tuple[Column, str, Any]] = []

    @staticmethod
    def _is_system(comp: Compiler, table: Table) -> bool:
        ks = comp.engine.keyspaces.get(table.keyspace)
        return ks is not None and ks.system

    @property
    def conditional(self) -> bool:
        return self.if_exists or self.if_not_exists or bool(self.conditions)

    def _compile_conditions(self, comp: Compiler, conds: List[P.Relation]):
        for rel in conds:
            col = self.table.column(rel.column)
            if col.is_primary_key:
                raise InvalidRequest("PRIMARY KEY column '%s' cannot have IF conditions" % col.name)
            if rel.op == "IN":
                if isinstance(rel.term, P.Marker):
                    getter = comp.marker(rel.term, "in(%s)" % col.name, T.list_of(col.type))
                else:
                    getter = [comp.term(t, col.type, col.name) for t in rel.term]
            else:
                getter = comp.term(rel.term, col.type, col.name)
            self.conditions.append((col, rel.op, getter))

    def _compile_where(self, comp: Compiler, where: List[P.Relation], require_all_clustering: bool):
        t = self.table
        r = _where_restrictions(comp, t, where)
        for name, rels in r.items():
            col = t.columns[name]
            if not col.is_primary_key:
                raise InvalidRequest("Non PRIMARY KEY columns found in where clause: %s " % name)
            for op, _ in rels:
                if op not in ("=", "IN"):
                    if col.kind == "partition_key":
                        raise InvalidRequest("Only EQ and IN relation are supported on the partition key (unless you use the token() function)")
                    raise InvalidRequest("Slice restrictions on clustering columns are not supported by the CQL test "
                                         "server in %s statements" % self.kind)
        missing = [c.name for c in t.partition_key if c.name not in r]
        if missing:
            raise InvalidRequest("Some partition key parts are missing: %s" % ", ".join(missing))
        ck_given = [c for c in t.clustering if c.name in r]
        prefix_len = 0
        for c in t.clustering:
            if c.name in r:
                prefix_len += 1
            else:
                break
        if len(ck_given) != prefix_len:
            first_missing = t.clustering[prefix_len].name
            raise InvalidRequest('PRIMARY KEY column "%s" cannot be restricted as preceding column "%s" is not restricted'
                                 % (ck_given[-1].name, first_missing))
        if require_all_clustering and prefix_len != len(t.clustering):
            raise InvalidRequest("Some clustering keys are missing: %s"
                                 % ", ".join(c.name for c in t.clustering[prefix_len:]))
        self.where = r
        self.ck_prefix_len = prefix_len
        self._pk_idx = _pk_marker_indexes(t, where)

    def pk_indexes(self):
        return self._pk_idx

    def keys(self, ctx: Ctx) -> List[Tuple[tuple, tuple]]:
        t = self.table
        pk_vals = [_key_values(ctx, self.where[c.name][0], c, "partition key") for c in t.partition_key]
        ck_vals = [_key_values(ctx, self.where[c.name][0], c, "clustering key")
                   for c in t.clustering[:self.ck_prefix_len]]
        out = []
        for pk in itertools.product(*pk_vals):
            _check_partition_key(t, pk)
            for ck in itertools.product(*ck_vals):
                out.append((tuple(pk), tuple(ck)))
        return out

    # -- timestamps / ttl ------------------------------------------------------------------------
    def write_timestamp(self, ctx: Ctx) -> int:
        if self.timestamp is not None:
            v = self.timestamp(ctx)
            if v is None:
                raise InvalidRequest("Invalid null value of timestamp")
            if v is not UNSET:
                return v
        if ctx.batch_timestamp is not None:
            return ctx.batch_timestamp
        if ctx.params.timestamp is not None:
            return ctx.params.timestamp
        return ctx.engine.new_timestamp()

    def ttl_seconds(self, ctx: Ctx) -> int:
        default = self.table.default_ttl
        if self.ttl is None:
            return default
        v = self.ttl(ctx)
        if v is None:
            return 0
        if v is UNSET:
            return default
        if v < 0:
            raise InvalidRequest("A TTL must be greater or equal to 0, but was %d" % v)
        if v > MAX_TTL:
            raise InvalidRequest("ttl is too large. requested (%d) maximum (%d)" % (v, MAX_TTL))
        return v

    # -- conditions -----------------------------------------------------------------------------------
    def evaluate_conditions(self, ctx: Ctx, row: Optional[RowView]) -> bool:
        if self.if_not_exists:
            return row is None
        if self.if_exists:
            return row is not None
        ok = True
        for col, op, getter in self.conditions:
            current = row.values.get(col.name) if row is not None else None
            if op == "IN":
                if isinstance(getter, list):
                    vals = [g(ctx) for g in getter]
                else:
                    v = getter(ctx)
                    if v is UNSET:
                        raise InvalidRequest("Invalid 'unset' value in condition")
                    vals = [] if v is None else list(v)
                if any(v is UNSET for v in vals):
                    raise InvalidRequest("Invalid 'unset' value in condition")
                matched = any((v is None and current is None) or
                              (v is not None and current is not None and _compare_op(col.type, "=", current, v))
                              for v in vals)
            else:
                v = getter(ctx)
                if v is UNSET:
                    raise InvalidRequest("Invalid 'unset' value in condition")
                if v is None:
                    if op == "=":
                        matched = current is None
                    elif op == "!=":
                        matched = current is not None
                    else:
                        raise InvalidRequest('Invalid comparison with null for operator "%s"' % op)
                elif current is None:
                    matched = op == "!="
                else:
                    matched = _compare_op(col.type, op, current, v)
            if not matched:
                ok = False  # keep evaluating so every condition's values are validated
        return ok

    def condition_columns(self) -> Optional[List[Column]]:
        """Columns returned when not applied: None means the whole row (IF [NOT] EXISTS)."""
        if self.if_exists or self.if_not_exists:
            return None
        seen: List[Column] = []
        for col, _, _ in self.conditions:
            if col not in seen:
                seen.append(col)
        return seen

    def apply(self, ctx: Ctx, key: Tuple[tuple, tuple], ts: int):
        raise NotImplementedError

    def execute(self, ctx: Ctx):
        engine = ctx.engine
        if self.conditional:
            _check_cas_consistency(ctx)
            keys = self.keys(ctx)
            if len(keys) != 1:
                raise InvalidRequest("IN on the partition key is not supported with conditional %s"
                                     % ("updates" if self.kind != "DELETE" else "deletions"))
            key = keys[0]
            current = engine.read_row(self.table, key[0], key[1], ctx.now)
            applied = self.evaluate_conditions(ctx, current)
            if applied:
                self.apply(ctx, key, engine.new_timestamp())
            return cas_result(self.table, applied, [current] if (current is not None and not applied) else [],
                              self.condition_columns(), is_batch=False)
        if ctx.consistency in SERIAL_LEVELS:
            raise InvalidRequest("You must use conditional updates for serializable writes")
        ts = self.write_timestamp(ctx)
        for key in self.keys(ctx):
            self.apply(ctx, key, ts)
        return VoidResult()


def _check_partition_key(t: Table, pk: tuple):
    if len(t.partition_key) == 1:
        col = t.partition_key[0]
        if col.type.serialize(pk[0]) == b"":
            raise InvalidRequest("Key may not be empty")


def _check_cas_consistency(ctx: Ctx):
    if ctx.consistency in SERIAL_LEVELS:
        raise InvalidRequest('SERIAL is not supported as conditional update commit consistency. Use ANY if you mean '
                             '"make sure it is accepted but I don\'t care how many replicas commit it for non-SERIAL reads"')
    if ctx.serial is not None and ctx.serial not in SERIAL_LEVELS:
        raise InvalidRequest("Invalid consistency for conditional update. Must be one of SERIAL or LOCAL_SERIAL")


def cas_result(table: Table, applied: bool, rows: List[RowView], columns: Optional[List[Column]],
               is_batch: bool) -> RowsResult:
    """The result of a lightweight transaction: [applied] first, then (when not applied and rows
    exist) the current values of the whole row (IF [NOT] EXISTS) or of the condition columns."""
    applied_col = ColumnSpec(table.keyspace, table.name, "[applied]", T.BOOLEAN)
    if applied or not rows:
        return RowsResult([applied_col], [(applied,)])
    if columns is None:
        cols = list(table.select_order)
    else:
        cols = []
        if is_batch:
            cols.extend(table.partition_key + table.clustering)
        for c in columns:
            if c not in cols:
                cols.append(c)
    specs = [applied_col] + [ColumnSpec(table.keyspace, table.name, c.name, c.type) for c in cols]
    out = [(False,) + tuple(r.values.get(c.name) for c in cols) for r in rows]
    return RowsResult(specs, out)


def _stored(col: Column, v):
    """A non-frozen collection set to an empty value is a deletion in Cassandra (it reads back as null)."""
    if v is not None and v is not UNSET and col.type.is_multicell and len(v) == 0:
        return None
    return v


class CompiledInsert(CompiledModification):
    kind = "INSERT"

    def __init__(self, comp: Compiler, stmt: P.Insert):
        self._common(comp, stmt, stmt.using)
        t = self.table
        if len(stmt.columns) != len(stmt.values):
            raise InvalidRequest("Unmatched column names/values")
        self.values: List[Tuple[Column, Bound]] = []
        seen = set()
        pk_idx = {}
        for name, term in zip(stmt.columns, stmt.values):
            col = t.column(name)
            if name in seen:
                raise InvalidRequest("Multiple definitions found for column %s" % name)
            seen.add(name)
            self.values.append((col, comp.term(term, col.type, col.name)))
            if isinstance(term, P.Marker):
                pk_idx[name] = term.index
        missing = [c.name for c in t.partition_key if c.name not in seen]
        if missing:
            raise InvalidRequest("Some partition key parts are missing: %s" % ", ".join(missing))
        missing = [c.name for c in t.clustering if c.name not in seen]
        if missing:
            raise InvalidRequest("Some clustering keys are missing: %s" % ", ".join(missing))
        self.if_not_exists = stmt.if_not_exists
        if self.if_not_exists and self.timestamp is not None:
            raise InvalidRequest("Cannot provide custom timestamp for conditional updates")
        self._pk_idx = [pk_idx[c.name] for c in t.partition_key] if all(c.name in pk_idx for c in t.partition_key) else []
        self.specs = comp.specs

    def keys(self, ctx: Ctx):
        t = self.table
        vals = {}
        for col, getter in self.values:
            if col.is_primary_key:
                v = getter(ctx)
                if v is UNSET:
                    raise InvalidRequest("Invalid unset value for column %s" % col.name)
                if v is None:
                    raise InvalidRequest("Invalid null value for %s part %s" % (
                        "partition key" if col.kind == "partition_key" else "clustering key", col.name))
                vals[col.name] = v
        pk = tuple(vals[c.name] for c in t.partition_key)
        _check_partition_key(t, pk)
        return [(pk, tuple(vals[c.name] for c in t.clustering))]

    def apply(self, ctx: Ctx, key, ts: int):
        ttl = self.ttl_seconds(ctx)
        expires = ctx.now + ttl if ttl else None
        cells = {}
        for col, getter in self.values:
            if col.is_primary_key:
                continue
            v = _stored(col, getter(ctx))
            if v is UNSET:
                continue
            cells[col.name] = Cell(v, ts, expires if v is not None else None, ttl if v is not None else 0)
        ctx.engine.write(self.table, key[0], key[1], Cell(True, ts, expires, ttl), cells, ctx.now)


class CompiledUpdate(CompiledModification):
    kind = "UPDATE"

    def __init__(self, comp: Compiler, stmt: P.Update):
        self._common(comp, stmt, stmt.using)
        t = self.table
        self.assignments: List[Tuple[Column, Bound]] = []
        seen = set()
        for name, term in stmt.assignments:
            col = t.column(name)
            if col.is_primary_key:
                raise InvalidRequest("PRIMARY KEY part %s found in SET part" % name)
            if name in seen:
                raise InvalidRequest("Multiple incompatible setting of column %s" % name)
            seen.add(name)
            self.assignments.append((col, comp.term(term, col.type, col.name)))
        self._compile_where(comp, stmt.where, require_all_clustering=True)
        self.if_exists = stmt.if_exists
        self._compile_conditions(comp, stmt.conditions)
        if self.conditional and self.timestamp is not None:
            raise InvalidRequest("Cannot provide custom timestamp for conditional updates")
        self.specs = comp.specs

    def apply(self, ctx: Ctx, key, ts: int):
        ttl = self.ttl_seconds(ctx)
        expires = ctx.now + ttl if ttl else None
        cells = {}
        for col, getter in self.assignments:
            v = _stored(col, getter(ctx))
            if v is UNSET:
                continue
            cells[col.name] = Cell(v, ts, expires if v is not None else None, ttl if v is not None else 0)
        ctx.engine.write(self.table, key[0], key[1], None, cells, ctx.now)


class CompiledDelete(CompiledModification):
    kind = "DELETE"

    def __init__(self, comp: Compiler, stmt: P.Delete):
        self._common(comp, stmt, stmt.using)
        t = self.table
        self.columns: List[Column] = []
        for name in stmt.columns:
            col = t.column(name)
            if col.is_primary_key:
                raise InvalidRequest("Invalid identifier %s for deletion (should not be a PRIMARY KEY part)" % name)
            if col not in self.columns:
                self.columns.append(col)
        self._compile_where(comp, stmt.where, require_all_clustering=bool(self.columns))
        self.if_exists = stmt.if_exists
        self._compile_conditions(comp, stmt.conditions)
        if self.conditional:
            if self.ck_prefix_len != len(t.clustering):
                raise InvalidRequest("DELETE statements must restrict all PRIMARY KEY columns with equality relations "
                                     "in order to use IF conditions")
            if self.timestamp is not None:
                raise InvalidRequest("Cannot provide custom timestamp for conditional updates")
        self.specs = comp.specs

    def apply(self, ctx: Ctx, key, ts: int):
        pk, ck = key
        if self.columns:
            cells = {c.name: Cell(None, ts) for c in self.columns}
            ctx.engine.write(self.table, pk, ck, None, cells, ctx.now)
        else:
            ctx.engine.delete(self.table, pk, ck, ts)


class CompiledBatch(Compiled):
    def __init__(self, kind: str, statements: List[Tuple[CompiledModification, list]],
                 using_ts: Optional[Bound] = None):
        if kind == "counter":
            raise InvalidRequest("Counter batches are not supported by the CQL test server")
        self.kind = kind
        self.statements = statements  # (compiled, values)
        self.using_ts = using_ts
        self.conditional = any(s.conditional for s, _ in statements)

    def execute(self, ctx: Ctx):
        engine = ctx.engine
        if not self.statements:
            return VoidResult()
        if self.conditional:
            return self._execute_cas(ctx)
        if ctx.consistency in SERIAL_LEVELS:
            raise InvalidRequest("You must use conditional updates for serializable writes")
        ts = None
        if self.using_ts is not None:
            v = self.using_ts(ctx)
            if v is None:
                raise InvalidRequest("Invalid null value of timestamp")
            ts = v
        if ts is None:
            ts = ctx.params.timestamp if ctx.params.timestamp is not None else engine.new_timestamp()
        # compute every key first so that a bad statement leaves nothing applied
        plan = []
        for stmt, values in self.statements:
            sctx = self._sub_ctx(ctx, values, ts)
            plan.append((stmt, sctx, stmt.keys(sctx)))
            stmt.ttl_seconds(sctx)
            stmt.write_timestamp(sctx)
        for stmt, sctx, keys in plan:
            for key in keys:
                stmt.apply(sctx, key, stmt.write_timestamp(sctx))
        return VoidResult()

    @staticmethod
    def _sub_ctx(ctx: Ctx, values: list, ts: Optional[int]) -> Ctx:
        sub = Ctx(ctx.engine, ctx.params, values, ctx.now)
        sub.batch_timestamp = ts
        return sub

    def _execute_cas(self, ctx: Ctx):
        engine = ctx.engine
        _check_cas_consistency(ctx)
        if self.using_ts is not None or any(s.timestamp is not None for s, _ in self.statements):
            raise InvalidRequest("Cannot provide custom timestamp for conditional BATCH")
        plan = []
        table = None
        pk = None
        row_kinds: Dict[tuple, str] = {}
        for stmt, values in self.statements:
            sctx = self._sub_ctx(ctx, values, None)
            keys = stmt.keys(sctx)
            if table is None:
                table = stmt.table
            elif stmt.table is not table:
                raise InvalidRequest("Batch with conditions cannot span multiple tables")
            for key in keys:
                if pk is None:
                    pk = key[0]
                elif key[0] != pk:
                    raise InvalidRequest("Batch with conditions cannot span multiple partitions")
            if stmt.conditional and len(keys) != 1:
                raise InvalidRequest("IN on the clustering key columns is not supported with conditional updates")
            if stmt.conditional:
                kind = "not_exists" if stmt.if_not_exists else "exists" if stmt.if_exists else "columns"
                previous = row_kinds.setdefault(keys[0][1], kind)
                if previous != kind:
                    if "columns" in (previous, kind):
                        raise InvalidRequest("Cannot mix IF conditions and IF %sEXISTS for the same row"
                                             % ("NOT " if "not_exists" in (previous, kind) else ""))
                    raise InvalidRequest("Cannot mix IF EXISTS and IF NOT EXISTS conditions for the same row")
            plan.append((stmt, sctx, keys))
        applied = True
        checked_rows: List[Tuple[tuple, Optional[RowView]]] = []
        whole_row = False
        cond_cols: List[Column] = []
        for stmt, sctx, keys in plan:
            if not stmt.conditional:
                continue
            ck = keys[0][1]
            current = engine.read_row(table, pk, ck, ctx.now)
            if not stmt.evaluate_conditions(sctx, current):
                applied = False
            if all(ck != c for c, _ in checked_rows):
                checked_rows.append((ck, current))
            cols = stmt.condition_columns()
            if cols is None:
                whole_row = True
            else:
                cond_cols.extend(c for c in cols if c not in cond_cols)
        if applied:
            ts = engine.new_timestamp()
            for stmt, sctx, keys in plan:
                for key in keys:
                    stmt.apply(sctx, key, ts)
            return cas_result(table, True, [], None, is_batch=True)
        rows = [r for _, r in sorted(checked_rows, key=lambda cr: table.clustering_key(cr[0])) if r is not None]
        return cas_result(table, False, rows, None if whole_row else cond_cols, is_batch=True)


# -- DDL ----------------------------------------------------------------------------------------------
class CompiledDDL(Compiled):
    def __init__(self, comp: Compiler, stmt):
        self.stmt = stmt
        self.keyspace_name = comp.keyspace
        self.specs = []
        if comp.markers:
            raise InvalidRequest("Bind variables cannot be used in schema statements")

    def execute(self, ctx: Ctx):
        return ctx.engine.execute_ddl(self.stmt, self.keyspace_name)


class CompiledUse(Compiled):
    def __init__(self, comp: Compiler, stmt: P.Use):
        self.keyspace = stmt.keyspace
        self.specs = []

    def execute(self, ctx: Ctx):
        if self.keyspace not in ctx.engine.keyspaces:
            raise InvalidRequest("Keyspace '%s' does not exist" % self.keyspace)
        return SetKeyspaceResult(self.keyspace)


class CompiledTextBatch(Compiled):
    """BEGIN BATCH ... APPLY BATCH given as CQL text (bind markers numbered across the statements)."""

    def __init__(self, comp: Compiler, stmt: P.Batch):
        if stmt.kind == "counter":
            raise InvalidRequest("Counter batches are not supported by the CQL test server")
        self.kind = stmt.kind
        self.parts = [compile_statement(comp, s) for s in stmt.statements]
        self.using_ts = comp.term(stmt.using.timestamp, T.BIGINT, "[timestamp]") if stmt.using.timestamp is not None else None
        self.specs = comp.specs
        tables = {id(p.table): p.table for p in self.parts}
        self.table = next(iter(tables.values())) if len(tables) == 1 else None

    def bind_columns(self):
        if self.table is not None:
            return super().bind_columns()
        return [ColumnSpec("", "", s.name, s.type) for s in self.specs]

    def execute(self, ctx: Ctx):
        batch = CompiledBatch(self.kind, [(p, ctx.values) for p in self.parts], self.using_ts)
        return batch.execute(ctx)


def compile_statement(comp: Compiler, stmt) -> Compiled:
    if isinstance(stmt, P.Select):
        return CompiledSelect(comp, stmt)
    if isinstance(stmt, P.Insert):
        return CompiledInsert(comp, stmt)
    if isinstance(stmt, P.Update):
        return CompiledUpdate(comp, stmt)
    if isinstance(stmt, P.Delete):
        return CompiledDelete(comp, stmt)
    if isinstance(stmt, P.Use):
        return CompiledUse(comp, stmt)
    if isinstance(stmt, P.Batch):
        return CompiledTextBatch(comp, stmt)
    if isinstance(stmt, (P.CreateKeyspace, P.DropKeyspace, P.AlterKeyspace, P.CreateTable, P.AlterTable, P.DropTable,
                         P.Truncate)):
        return CompiledDDL(comp, stmt)
    raise InvalidRequest("Unsupported statement %s" % type(stmt).__name__)


# =============================================================================================
# Engine
# =============================================================================================
@dataclass
class PreparedStatement:
    statement_id: bytes
    query: str
    keyspace: Optional[str]
    compiled: Compiled


class Engine:
    """All keyspaces, tables and data of one server, plus the prepared-statement cache.
    Every statement runs under one global lock, which makes lightweight transactions atomic."""

    def __init__(self, host: str = "127.0.0.1", port: int = 9042, release_version: str = "4.1.3",
                 cluster_name: str = "Test Cluster"):
        self.lock = threading.RLock()
        self.keyspaces: Dict[str, Keyspace] = {}
        self.prepared: Dict[bytes, PreparedStatement] = {}
        self.host = host
        self.port = port
        self.release_version = release_version
        self.cluster_name = cluster_name
        self.host_id = uuid.uuid4()
        self.schema_version = uuid.uuid4()
        self.started_at = int(time.time())
        self.clock_offset = 0.0
        self._last_ts = 0
        self.seen_consistencies: List[Tuple[str, Optional[str], Optional[str]]] = []
        self.schema_listeners: List[Callable[[SchemaChangeResult], None]] = []
        from . import system_tables
        system_tables.install(self)

    # -- clock -------------------------------------------------------------------------------------
    def now_seconds(self) -> int:
        return int(time.time() + self.clock_offset)

    def advance_clock(self, seconds: float):
        with self.lock:
            self.clock_offset += seconds

    def new_timestamp(self) -> int:
        """A server-side write timestamp in microseconds (strictly increasing, like paxos ballots)."""
        with self.lock:
            ts = max(int(time.time() * 1_000_000), self._last_ts + 1)
            self._last_ts = ts
            return ts

    # -- storage -------------------------------------------------------------------------------------
    def write(self, table: Table, pk: tuple, ck: tuple, marker: Optional[Cell], cells: Dict[str, Cell], now: int):
        part = table.partitions.get(pk)
        if part is None:
            part = table.partitions[pk] = Partition()
        row = part.rows.get(ck)
        if row is None:
            row = part.rows[ck] = RowData()
        if marker is not None and _supersedes(marker, row.marker, now, None):
            row.marker = marker
        for name, cell in cells.items():
            if _supersedes(cell, row.cells.get(name), now, table.columns[name].type):
                row.cells[name] = cell

    def delete(self, table: Table, pk: tuple, ck_prefix: tuple, ts: int):
        part = table.partitions.get(pk)
        if part is None:
            part = table.partitions[pk] = Partition()
        if len(ck_prefix) == len(table.clustering):
            row = part.rows.get(ck_prefix)
            if row is None:
                row = part.rows[ck_prefix] = RowData()
            row.deleted = max(row.deleted, ts)
        elif not ck_prefix:
            part.deleted = max(part.deleted, ts)
        else:
            part.range_tombstones.append((ck_prefix, ts))

    def row_view(self, table: Table, pk: tuple, ck: tuple, part: Partition, row: RowData, now: int) -> Optional[RowView]:
        deletion = part.deletion_for(ck, row)
        cells = {n: c for n, c in row.cells.items() if c.is_live(now, deletion)}
        marker_live = row.marker is not None and row.marker.is_live(now, deletion)
        if not marker_live and not cells:
            return None
        values = {c.name: v for c, v in zip(table.partition_key, pk)}
        values.update({c.name: v for c, v in zip(table.clustering, ck)})
        for n, c in cells.items():
            values[n] = c.value
        return RowView(values, cells, pk, ck)

    def read_row(self, table: Table, pk: tuple, ck: tuple, now: int) -> Optional[RowView]:
        part = table.partitions.get(pk)
        if part is None:
            return None
        row = part.rows.get(ck)
        if row is None:
            return None
        return self.row_view(table, pk, ck, part, row, now)

    def live_rows(self, table: Table, pk: tuple, part: Partition, now: int) -> List[RowView]:
        out = []
        for ck in sorted(part.rows, key=table.clustering_key):
            view = self.row_view(table, pk, ck, part, part.rows[ck], now)
            if view is not None:
                out.append(view)
        return out

    def virtual_partitions(self, table: Table) -> Dict[tuple, List[RowView]]:
        parts: Dict[tuple, List[RowView]] = {}
        for row in table.provider(self):
            pk = tuple(row.get(c.name) for c in table.partition_key)
            ck = tuple(row.get(c.name) for c in table.clustering)
            values = {k: v for k, v in row.items() if v is not None}
            parts.setdefault(pk, []).append(RowView(values, {}, pk, ck))
        for rows in parts.values():
            rows.sort(key=lambda r: table.clustering_key(r.ck))
        return parts

    # -- request entry points ---------------------------------------------------------------------------
    def _record(self, query: str, params: QueryParams):
        cl = CONSISTENCY_NAMES.get(params.consistency, str(params.consistency))
        serial = CONSISTENCY_NAMES.get(params.serial_consistency) if params.serial_consistency is not None else None
        self.seen_consistencies.append((" ".join(query.split())[:200], cl, serial))

    def _bind_values(self, compiled: Compiled, params: QueryParams) -> list:
        specs = compiled.specs
        raw = params.values or []
        if params.names is not None:
            by_name: Dict[str, Any] = {}
            for n, v in zip(params.names, raw):
                by_name[n] = v
            values = []
            for s in specs:
                key = s.name
                if key not in by_name and key.lower() in by_name:
                    key = key.lower()
                if key not in by_name:
                    raise InvalidRequest("No value for bind variable %s" % s.name)
                values.append(by_name[key])
            return values
        if len(raw) != len(specs):
            raise InvalidRequest("There were %d markers(?) in CQL but %d bound variables" % (len(specs), len(raw)))
        return list(raw)

    def compile(self, query: str, keyspace: Optional[str]) -> Compiled:
        parsed = P.parse(query)
        comp = Compiler(self, keyspace, parsed.markers)
        compiled = compile_statement(comp, parsed.statement)
        missing = [i for i, s in enumerate(comp.specs) if s is None]
        if missing:
            raise InvalidRequest("Bind marker %d is used in a place the CQL test server cannot type" % missing[0])
        compiled.specs = comp.specs
        return compiled

    def execute_query(self, query: str, keyspace: Optional[str], params: QueryParams):
        with self.lock:
            self._record(query, params)
            compiled = self.compile(query, keyspace)
            return self._run(compiled, params)

    def _run(self, compiled: Compiled, params: QueryParams):
        values = self._bind_values(compiled, params)
        ctx = Ctx(self, params, values, self.now_seconds())
        return compiled.execute(ctx)

    def prepare(self, query: str, keyspace: Optional[str]) -> PreparedResult:
        with self.lock:
            compiled = self.compile(query, keyspace)
            sid = hashlib.md5(((keyspace or "") + query).encode("utf-8")).digest()
            self.prepared[sid] = PreparedStatement(sid, query, keyspace, compiled)
            return PreparedResult(sid, compiled.bind_columns(), compiled.pk_indexes(),
                                  compiled.result_columns() if compiled.is_select else None)

    def _get_prepared(self, sid: bytes) -> PreparedStatement:
        ps = self.prepared.get(sid)
        if ps is None:
            raise Unprepared("Prepared query with ID %s not found (either the query was not prepared on this host "
                             "(maybe the host has been restarted?) or you have prepared too many queries and it has "
                             "been evicted from the internal cache)" % sid.hex(), sid)
        return ps

    def execute_prepared(self, sid: bytes, params: QueryParams):
        with self.lock:
            ps = self._get_prepared(sid)
            self._record(ps.query, params)
            return self._run(ps.compiled, params)

    def execute_batch(self, batch_type: int, entries: List[BatchEntry], keyspace: Optional[str], params: QueryParams):
        with self.lock:
            kind = {0: "logged", 1: "unlogged", 2: "counter"}.get(batch_type)
            if kind is None:
                raise ProtocolError("Invalid BATCH message type %d" % batch_type)
            parts = []
            first = None
            for e in entries:
                if e.statement_id is not None:
                    ps = self._get_prepared(e.statement_id)
                    compiled, text = ps.compiled, ps.query
                else:
                    compiled, text = self.compile(e.query, keyspace), e.query
                if first is None:
                    first = text
                if not isinstance(compiled, CompiledModification):
                    raise InvalidRequest("Invalid statement in batch: only UPDATE, INSERT and DELETE statements are allowed.")
                sub = QueryParams(params.consistency, e.values, e.names)
                parts.append((compiled, self._bind_values(compiled, sub)))
            self._record("BATCH " + (first or ""), params)
            batch = CompiledBatch(kind, parts)
            ctx = Ctx(self, params, [], self.now_seconds())
            return batch.execute(ctx)

    # -- DDL -----------------------------------------------------------------------------------------------
    def _schema_changed(self, change: SchemaChangeResult) -> SchemaChangeResult:
        self.schema_version = uuid.uuid4()
        for listener in list(self.schema_listeners):
            try:
                listener(change)
            except Exception:  # pragma: no cover - a listener must not break the statement
                pass
        return change

    def _drop_prepared(self, keyspace: str, table: Optional[str] = None):
        for sid, ps in list(self.prepared.items()):
            t = ps.compiled.table
            tables = [t] if t is not None else [p.table for p in getattr(ps.compiled, "parts", [])]
            for tb in tables:
                if tb is not None and tb.keyspace == keyspace and (table is None or tb.name == table):
                    self.prepared.pop(sid, None)
                    break

    def execute_ddl(self, stmt, current_ks: Optional[str]):
        if isinstance(stmt, P.CreateKeyspace):
            return self._create_keyspace(stmt)
        if isinstance(stmt, P.AlterKeyspace):
            return self._alter_keyspace(stmt)
        if isinstance(stmt, P.DropKeyspace):
            ks = self.keyspaces.get(stmt.name)
            if ks is None:
                if stmt.if_exists:
                    return VoidResult()
                raise InvalidRequest("Keyspace '%s' doesn't exist" % stmt.name)
            if ks.system:
                raise Unauthorized("Cannot DROP <keyspace %s>" % stmt.name)
            del self.keyspaces[stmt.name]
            self._drop_prepared(stmt.name)
            return self._schema_changed(SchemaChangeResult("DROPPED", "KEYSPACE", stmt.name))
        ksname = stmt.keyspace or current_ks
        if ksname is None:
            raise InvalidRequest("No keyspace has been specified. USE a keyspace, or explicitly specify keyspace.tablename")
        ks = self.keyspaces.get(ksname)
        if isinstance(stmt, P.CreateTable):
            if ks is None:
                raise InvalidRequest("Keyspace '%s' doesn't exist" % ksname)
            return self._create_table(ks, stmt)
        if isinstance(stmt, (P.AlterTable, P.DropTable)):
            if not self._user_table_exists(ks, ksname, stmt):
                return VoidResult()  # IF EXISTS on a missing table
            if isinstance(stmt, P.AlterTable):
                return self._alter_table(ks.tables[stmt.name], stmt)
            del ks.tables[stmt.name]
            self._drop_prepared(ksname, stmt.name)
            return self._schema_changed(SchemaChangeResult("DROPPED", "TABLE", ksname, stmt.name))
        if isinstance(stmt, P.Truncate):
            if ks is None:
                raise InvalidRequest("Keyspace '%s' doesn't exist" % ksname)
            table = ks.tables.get(stmt.name)
            if table is None:
                raise InvalidRequest("unconfigured table %s" % stmt.name)
            if ks.system:
                raise Unauthorized("%s keyspace is not user-modifiable." % ksname)
            table.partitions.clear()
            return VoidResult()
        raise InvalidRequest("Unsupported schema statement")

    def _replication(self, options: dict, ksname: str) -> Tuple[Dict[str, str], bool]:
        unknown = [k for k in options if k not in ("replication", "durable_writes")]
        if unknown:
            raise SyntaxException("Unknown property '%s'" % unknown[0])
        repl = options.get("replication")
        if repl is None or not isinstance(repl, dict):
            raise ConfigurationException("Missing mandatory option 'replication'")
        repl = {str(k): str(v) for k, v in repl.items()}
        cls = repl.pop("class", None)
        if cls is None:
            raise ConfigurationException("Missing replication strategy class")
        short = cls.rsplit(".", 1)[-1].lower()
        if short == "localstrategy":
            raise ConfigurationException("Unable to use given strategy class: LocalStrategy is reserved for internal use.")
        if short not in STRATEGIES:
            raise ConfigurationException("Unable to find replication strategy class '%s'" % cls)
        full = STRATEGIES[short]
        for k, v in repl.items():
            if not re.fullmatch(r"\d+(/\d+)?", v):
                raise ConfigurationException("Replication factor must be non-negative integer; found %s" % v)
        if short == "simplestrategy":
            if "replication_factor" not in repl:
                raise ConfigurationException("SimpleStrategy requires a replication_factor strategy option.")
            extra = [k for k in repl if k != "replication_factor"]
            if extra:
                raise ConfigurationException("Unrecognized strategy option {%s} passed to SimpleStrategy for keyspace %s"
                                             % (extra[0], ksname))
        else:
            if "replication_factor" in repl:
                rf = repl.pop("replication_factor")
                repl.setdefault("datacenter1", rf)
        result = {"class": full}
        result.update(repl)
        durable = options.get("durable_writes", "true")
        if str(durable).lower() not in ("true", "false"):
            raise SyntaxException("Invalid boolean value %s for 'durable_writes'" % durable)
        return result, str(durable).lower() == "true"

    def _create_keyspace(self, stmt: P.CreateKeyspace):
        if not _NAME_RE.match(stmt.name):
            raise InvalidRequest('Keyspace name must not be empty, more than 48 characters long, or contain '
                                 'non-alphanumeric-underscore characters (got "%s")' % stmt.name)
        replication, durable = self._replication(stmt.options, stmt.name)
        if stmt.name in self.keyspaces:
            if stmt.if_not_exists:
                return VoidResult()
            raise AlreadyExists("Keyspace '%s' already exists" % stmt.name, stmt.name, "")
        self.keyspaces[stmt.name] = Keyspace(stmt.name, replication, durable)
        return self._schema_changed(SchemaChangeResult("CREATED", "KEYSPACE", stmt.name))

    def _alter_keyspace(self, stmt: P.AlterKeyspace):
        ks = self.keyspaces.get(stmt.name)
        if ks is None:
            raise InvalidRequest("Keyspace '%s' doesn't exist" % stmt.name)
        if ks.system:
            raise Unauthorized("Cannot ALTER <keyspace %s>" % stmt.name)
        opts = dict(stmt.options)
        if "replication" not in opts:
            opts["replication"] = dict(ks.replication)
        if "durable_writes" not in opts:
            opts["durable_writes"] = "true" if ks.durable_writes else "false"
        ks.replication, ks.durable_writes = self._replication(opts, stmt.name)
        return self._schema_changed(SchemaChangeResult("UPDATED", "KEYSPACE", stmt.name))

    @staticmethod
    def _user_table_exists(ks, ksname: str, stmt) -> bool:
        """For ALTER/DROP TABLE: False only with IF EXISTS on a missing table; errors as Cassandra words them."""
        if ks is None or stmt.name not in ks.tables:
            if stmt.if_exists:
                return False
            if ks is None:
                raise InvalidRequest("Keyspace '%s' doesn't exist" % ksname)
            raise InvalidRequest("Table '%s.%s' doesn't exist" % (ksname, stmt.name))
        if ks.system:
            raise Unauthorized("%s keyspace is not user-modifiable." % ksname)
        return True

    def _create_table(self, ks: Keyspace, stmt: P.CreateTable):
        if ks.system:
            raise Unauthorized("%s keyspace is not user-modifiable." % ks.name)
        if not _NAME_RE.match(stmt.name):
            raise InvalidRequest('Table name must not be empty, more than 48 characters long, or contain '
                                 'non-alphanumeric-underscore characters (got "%s")' % stmt.name)
        if stmt.compact_storage:
            raise InvalidRequest("Compact tables are not allowed in Cassandra starting with 4.0 version.")
        defs: Dict[str, CqlType] = {}
        for cd in stmt.columns:
            if cd.name in defs:
                raise InvalidRequest("Duplicate column '%s' declaration for table %s.%s" % (cd.name, ks.name, stmt.name))
            if cd.static:
                raise InvalidRequest("Static columns are not supported by the CQL test server")
            defs[cd.name] = T.parse_type(cd.type_text)
        key_names = stmt.partition_key + stmt.clustering
        for name in key_names:
            if name not in defs:
                raise InvalidRequest("Unknown definition %s referenced in PRIMARY KEY" % name)
            if key_names.count(name) > 1:
                raise InvalidRequest("Duplicate column %s in PRIMARY KEY" % name)
            if defs[name].is_multicell:
                raise InvalidRequest("Invalid non-frozen collection type %s for PRIMARY KEY component %s"
                                     % (defs[name].cql(), name))
        order = {}
        if stmt.clustering_order:
            names = [n for n, _ in stmt.clustering_order]
            for n in names:
                if n not in stmt.clustering:
                    raise InvalidRequest("Only clustering key columns can be defined in CLUSTERING ORDER directive")
            if names != stmt.clustering[:len(names)]:
                raise InvalidRequest("The order of columns in the CLUSTERING ORDER directive must be the one of the clustering key")
            order = dict(stmt.clustering_order)
        options = _table_options(stmt.options)
        if stmt.name in ks.tables:
            if stmt.if_not_exists:
                return VoidResult()
            raise AlreadyExists("Table '%s.%s' already exists" % (ks.name, stmt.name), ks.name, stmt.name)
        columns = []
        for name, ctype in defs.items():
            if name in stmt.partition_key:
                columns.append(Column(name, ctype, "partition_key", stmt.partition_key.index(name)))
            elif name in stmt.clustering:
                columns.append(Column(name, ctype, "clustering", stmt.clustering.index(name), order.get(name, "asc")))
            else:
                columns.append(Column(name, ctype))
        ks.tables[stmt.name] = Table(ks.name, stmt.name, columns, options)
        return self._schema_changed(SchemaChangeResult("CREATED", "TABLE", ks.name, stmt.name))

    def _alter_table(self, table: Table, stmt: P.AlterTable):
        if stmt.action == "with":
            options = dict(table.options)
            options.update(_table_options(stmt.options))
            table.options = options
            return self._schema_changed(SchemaChangeResult("UPDATED", "TABLE", table.keyspace, table.name))
        columns = list(table.columns.values())
        changed = False
        if stmt.action == "add":
            for cd in stmt.columns:
                if cd.static:
                    raise InvalidRequest("Static columns are not supported by the CQL test server")
                if cd.name in table.columns or any(c.name == cd.name for c in columns):
                    if stmt.if_column_exists:
                        continue
                    raise InvalidRequest("Column with name '%s' already exists" % cd.name)
                columns.append(Column(cd.name, T.parse_type(cd.type_text)))
                changed = True
        else:
            for cd in stmt.columns:
                col = next((c for c in columns if c.name == cd.name), None)
                if col is None:
                    if stmt.if_column_exists:
                        continue
                    raise InvalidRequest("Column %s was not found in table '%s.%s'" % (cd.name, table.keyspace, table.name))
                if col.is_primary_key:
                    raise InvalidRequest("Cannot drop PRIMARY KEY column %s" % cd.name)
                columns.remove(col)
                table.dropped[cd.name] = (col.type, int(time.time() * 1000))
                for part in table.partitions.values():
                    for row in part.rows.values():
                        row.cells.pop(cd.name, None)
                changed = True
        if not changed:
            return VoidResult()
        table.set_columns(columns)
        self._drop_prepared(table.keyspace, table.name)
        return self._schema_changed(SchemaChangeResult("UPDATED", "TABLE", table.keyspace, table.name))

    # -- test hooks ------------------------------------------------------------------------------------------
    def reset(self):
        with self.lock:
            for name in [n for n, ks in self.keyspaces.items() if not ks.system]:
                del self.keyspaces[name]
            self.prepared.clear()
            self.seen_consistencies.clear()
            self.clock_offset = 0.0
            self.schema_version = uuid.uuid4()


def _table_options(opts: dict) -> dict:
    out = {}
    for name, value in opts.items():
        if name not in P.TABLE_OPTIONS:
            raise SyntaxException("Unknown property '%s'" % name)
        if name in ("default_time_to_live", "gc_grace_seconds", "memtable_flush_period_in_ms",
                    "max_index_interval", "min_index_interval"):
            if isinstance(value, dict) or not re.fullmatch(r"-?\d+", str(value)):
                raise SyntaxException("Invalid integer value %s for '%s'" % (value, name))
            v = int(value)
            if name == "default_time_to_live" and not 0 <= v <= MAX_TTL:
                raise ConfigurationException("default_time_to_live must be greater than or equal to 0 "
                                             "and less than or equal to %d (got %d)" % (MAX_TTL, v))
            if v < 0:
                raise ConfigurationException("%s must be greater than or equal to 0 (got %d)" % (name, v))
            out[name] = v
        elif name in ("bloom_filter_fp_chance", "crc_check_chance", "dclocal_read_repair_chance", "read_repair_chance"):
            try:
                out[name] = float(value)
            except (TypeError, ValueError):
                raise SyntaxException("Invalid double value %s for '%s'" % (value, name))
        elif name in ("caching", "compaction", "compression", "extensions"):
            if not isinstance(value, dict):
                raise SyntaxException("Invalid value for property '%s'" % name)
            out[name] = {str(k): str(v) for k, v in value.items()}
        elif name == "cdc":
            if str(value).lower() not in ("true", "false"):
                raise SyntaxException("Invalid boolean value %s for 'cdc'" % value)
            out[name] = str(value).lower() == "true"
        else:
            if isinstance(value, dict):
                raise SyntaxException("Invalid value for property '%s'" % name)
            out[name] = str(value)
    return out
