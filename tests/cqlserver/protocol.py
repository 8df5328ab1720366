"""Framing and message bodies of the Cassandra native protocol v4 (native_protocol_v4.spec).

Section 2: the 9-byte frame header (version, flags, stream, opcode, length); section 3: the
notations ([int], [short], [string], [long string], [bytes], [value], [short bytes], maps, lists,
[consistency]); section 4.1: request bodies (STARTUP, AUTH_RESPONSE, OPTIONS, QUERY, PREPARE,
EXECUTE, BATCH, REGISTER); section 4.2: response bodies (ERROR, READY, AUTHENTICATE, SUPPORTED,
RESULT of kinds Void / Rows / Set_keyspace / Prepared / Schema_change, EVENT, AUTH_SUCCESS).
No compression is offered (SUPPORTED lists none).
"""
from __future__ import annotations

import struct
from typing import Dict, List, Optional, Tuple

from .cql_types import UNSET
from .engine import (CONSISTENCY_NAMES, BatchEntry, ColumnSpec, PreparedResult, QueryParams, RowsResult, SchemaChangeResult,
                     SetKeyspaceResult, VoidResult)
from .errors import CqlError, ProtocolError

PROTOCOL_VERSION = 4
RESPONSE_FLAG = 0x80
HEADER = struct.Struct(">BBhBi")
HEADER_SIZE = HEADER.size  # 9
MAX_FRAME_BODY = 256 * 1024 * 1024

# opcodes (2.4)
ERROR, STARTUP, READY, AUTHENTICATE, OPTIONS, SUPPORTED = 0x00, 0x01, 0x02, 0x03, 0x05, 0x06
QUERY, RESULT, PREPARE, EXECUTE, REGISTER, EVENT, BATCH = 0x07, 0x08, 0x09, 0x0A, 0x0B, 0x0C, 0x0D
AUTH_CHALLENGE, AUTH_RESPONSE, AUTH_SUCCESS = 0x0E, 0x0F, 0x10
OPCODE_NAMES = {
    0x00: "ERROR", 0x01: "STARTUP", 0x02: "READY", 0x03: "AUTHENTICATE", 0x05: "OPTIONS", 0x06: "SUPPORTED",
    0x07: "QUERY", 0x08: "RESULT", 0x09: "PREPARE", 0x0A: "EXECUTE", 0x0B: "REGISTER", 0x0C: "EVENT",
    0x0D: "BATCH", 0x0E: "AUTH_CHALLENGE", 0x0F: "AUTH_RESPONSE", 0x10: "AUTH_SUCCESS",
}

# frame flags (2.2)
FLAG_COMPRESSION, FLAG_TRACING, FLAG_CUSTOM_PAYLOAD, FLAG_WARNING = 0x01, 0x02, 0x04, 0x08

# query flags (4.1.4)
Q_VALUES, Q_SKIP_METADATA, Q_PAGE_SIZE, Q_PAGING_STATE = 0x01, 0x02, 0x04, 0x08
Q_SERIAL_CONSISTENCY, Q_DEFAULT_TIMESTAMP, Q_NAMES = 0x10, 0x20, 0x40

# result kinds (4.2.5)
R_VOID, R_ROWS, R_SET_KEYSPACE, R_PREPARED, R_SCHEMA_CHANGE = 1, 2, 3, 4, 5
# rows metadata flags (4.2.5.2)
M_GLOBAL_TABLES_SPEC, M_HAS_MORE_PAGES, M_NO_METADATA = 0x0001, 0x0002, 0x0004


# =============================================================================================
# Reading
# =============================================================================================
class Reader:
    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def _take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise ProtocolError("Not enough bytes to read the %s message body" % "request")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def byte(self) -> int:
        return self._take(1)[0]

    def short(self) -> int:
        return struct.unpack(">H", self._take(2))[0]

    def int(self) -> int:
        return struct.unpack(">i", self._take(4))[0]

    def long(self) -> int:
        return struct.unpack(">q", self._take(8))[0]

    def string(self) -> str:
        return self._take(self.short()).decode("utf-8")

    def long_string(self) -> str:
        n = self.int()
        if n < 0:
            raise ProtocolError("Invalid negative length for a [long string]")
        return self._take(n).decode("utf-8")

    def bytes(self) -> Optional[bytes]:
        n = self.int()
        if n < 0:
            return None
        return self._take(n)

    def short_bytes(self) -> bytes:
        return self._take(self.short())

    def value(self):
        n = self.int()
        if n == -1:
            return None
        if n == -2:
            return UNSET
        if n < -2:
            raise ProtocolError("Invalid value length %d" % n)
        return self._take(n)

    def string_list(self) -> List[str]:
        return [self.string() for _ in range(self.short())]

    def string_map(self) -> Dict[str, str]:
        out = {}
        for _ in range(self.short()):
            k = self.string()
            out[k] = self.string()
        return out

    def bytes_map(self) -> Dict[str, Optional[bytes]]:
        out = {}
        for _ in range(self.short()):
            k = self.string()
            out[k] = self.bytes()
        return out


def read_consistency(r: Reader) -> int:
    code = r.short()
    if code not in CONSISTENCY_NAMES:
        raise ProtocolError("Unknown code %d for a consistency level" % code)
    return code


def read_query_params(r: Reader) -> QueryParams:
    """<consistency><flags>[<n>[name_1]<value_1>...][<result_page_size>][<paging_state>][<serial_consistency>][<timestamp>]"""
    p = QueryParams()
    p.consistency = read_consistency(r)
    flags = r.byte()
    if flags & Q_VALUES:
        n = r.short()
        values, names = [], ([] if flags & Q_NAMES else None)
        for _ in range(n):
            if names is not None:
                names.append(r.string())
            values.append(r.value())
        p.values, p.names = values, names
    p.skip_metadata = bool(flags & Q_SKIP_METADATA)
    if flags & Q_PAGE_SIZE:
        p.page_size = r.int()
    if flags & Q_PAGING_STATE:
        p.paging_state = r.bytes()
    if flags & Q_SERIAL_CONSISTENCY:
        p.serial_consistency = read_consistency(r)
    if flags & Q_DEFAULT_TIMESTAMP:
        p.timestamp = r.long()
        if p.timestamp < 0:
            raise ProtocolError("Out of bound timestamp, must be positive : %d" % p.timestamp)
    return p


def read_batch(r: Reader) -> Tuple[int, List[BatchEntry], QueryParams]:
    """<type><n><query_1>...<query_n><consistency><flags>[<serial_consistency>][<timestamp>]"""
    batch_type = r.byte()
    n = r.short()
    raw = []
    for _ in range(n):
        kind = r.byte()
        if kind == 0:
            query, sid = r.long_string(), None
        elif kind == 1:
            query, sid = None, r.short_bytes()
        else:
            raise ProtocolError("Invalid query kind in BATCH messages. Must be 0 or 1 but got %d" % kind)
        count = r.short()
        raw.append((query, sid, count, r.pos))
        # values may be preceded by names (flag 0x40), which we only know after the flags; read lazily
        for _ in range(count):
            r.value()
    params = QueryParams()
    params.consistency = read_consistency(r)
    flags = r.byte()
    if flags & Q_SERIAL_CONSISTENCY:
        params.serial_consistency = read_consistency(r)
    if flags & Q_DEFAULT_TIMESTAMP:
        params.timestamp = r.long()
    if flags & Q_NAMES:
        raise ProtocolError("Named values in BATCH are not supported (see CASSANDRA-10246)")
    entries = []
    for query, sid, count, pos in raw:
        sub = Reader(r.data)
        sub.pos = pos
        entries.append(BatchEntry(query, sid, [sub.value() for _ in range(count)]))
    return batch_type, entries, params


# =============================================================================================
# Writing
# =============================================================================================
def w_short(v: int) -> bytes:
    return struct.pack(">H", v)


def w_int(v: int) -> bytes:
    return struct.pack(">i", v)


def w_string(s: str) -> bytes:
    b = s.encode("utf-8")
    return w_short(len(b)) + b


def w_bytes(b: Optional[bytes]) -> bytes:
    if b is None:
        return w_int(-1)
    return w_int(len(b)) + b


def w_short_bytes(b: bytes) -> bytes:
    return w_short(len(b)) + b


def w_string_list(items: List[str]) -> bytes:
    return w_short(len(items)) + b"".join(w_string(s) for s in items)


def w_string_multimap(m: Dict[str, List[str]]) -> bytes:
    return w_short(len(m)) + b"".join(w_string(k) + w_string_list(v) for k, v in m.items())


def frame(stream: int, opcode: int, body: bytes, flags: int = 0) -> bytes:
    return HEADER.pack(RESPONSE_FLAG | PROTOCOL_VERSION, flags, stream, opcode, len(body)) + body


def error_body(err: CqlError) -> bytes:
    return w_int(err.code) + w_string(err.message) + err.extra()


def supported_body(cql_version: str) -> bytes:
    return w_string_multimap({"CQL_VERSION": [cql_version], "COMPRESSION": [], "PROTOCOL_VERSIONS": ["4/v4"]})


def _column_specs(columns: List[ColumnSpec]) -> bytes:
    """[<global_table_spec>?<col_spec_1>...<col_spec_n>] with the global spec when all columns share a table."""
    if not columns:
        return b""
    tables = {(c.keyspace, c.table) for c in columns}
    out = []
    if len(tables) == 1:
        ks, tb = tables.pop()
        out.append(w_string(ks) + w_string(tb))
        for c in columns:
            out.append(w_string(c.name) + c.type.option_bytes())
    else:
        for c in columns:
            out.append(w_string(c.keyspace) + w_string(c.table) + w_string(c.name) + c.type.option_bytes())
    return b"".join(out)


def _global_flag(columns: List[ColumnSpec]) -> int:
    return M_GLOBAL_TABLES_SPEC if columns and len({(c.keyspace, c.table) for c in columns}) == 1 else 0


def rows_metadata(columns: Optional[List[ColumnSpec]], paging_state: Optional[bytes] = None,
                  no_metadata: bool = False) -> bytes:
    flags = 0
    if paging_state is not None:
        flags |= M_HAS_MORE_PAGES
    if columns is None or no_metadata:
        flags |= M_NO_METADATA
        out = w_int(flags) + w_int(len(columns or []))
        if paging_state is not None:
            out += w_bytes(paging_state)
        return out
    flags |= _global_flag(columns)
    out = w_int(flags) + w_int(len(columns))
    if paging_state is not None:
        out += w_bytes(paging_state)
    return out + _column_specs(columns)


def result_body(result, skip_metadata: bool = False) -> bytes:
    if isinstance(result, VoidResult):
        return w_int(R_VOID)
    if isinstance(result, RowsResult):
        parts = [w_int(R_ROWS), rows_metadata(result.columns, result.paging_state, skip_metadata),
                 w_int(len(result.rows))]
        for row in result.rows:
            for col, value in zip(result.columns, row):
                parts.append(w_bytes(None if value is None else col.type.serialize(value)))
        return b"".join(parts)
    if isinstance(result, SetKeyspaceResult):
        return w_int(R_SET_KEYSPACE) + w_string(result.keyspace)
    if isinstance(result, SchemaChangeResult):
        return w_int(R_SCHEMA_CHANGE) + schema_change_body(result)
    if isinstance(result, PreparedResult):
        binds = result.bind_columns
        meta = (w_int(_global_flag(binds)) + w_int(len(binds)) + w_int(len(result.pk_indexes))
                + b"".join(w_short(i) for i in result.pk_indexes) + _column_specs(binds))
        return w_int(R_PREPARED) + w_short_bytes(result.statement_id) + meta + rows_metadata(result.result_columns)
    raise TypeError("unknown result %r" % (result,))


def schema_change_body(change: SchemaChangeResult) -> bytes:
    out = w_string(change.change) + w_string(change.target) + w_string(change.keyspace)
    if change.target != "KEYSPACE":
        out += w_string(change.name or "")
    return out


def schema_change_event_body(change: SchemaChangeResult) -> bytes:
    return w_string("SCHEMA_CHANGE") + schema_change_body(change)
