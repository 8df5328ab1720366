"""CQL data types: parsing type names, value serialization and ordering.

Follows section 6 ("Data Type Serialization Formats") of native_protocol_v4.spec for the
byte encodings, and the [option] type ids of section 4.2.5.2 for result/bind metadata.

Python representations of stored values:
  text/varchar/ascii -> str; int/bigint/smallint/tinyint/varint -> int; boolean -> bool;
  timestamp -> int (milliseconds since the epoch); date -> int (days, unsigned, 2**31 = epoch);
  time -> int (nanoseconds since midnight); uuid/timeuuid -> uuid.UUID; blob -> bytes;
  double/float -> float; decimal -> decimal.Decimal; inet -> ipaddress.IPv4Address/IPv6Address;
  list -> tuple; set -> tuple (sorted, unique); map -> tuple of (key, value) pairs sorted by key.
Collections are kept as tuples so that every value is hashable (frozen collections may be keys).
"""
from __future__ import annotations

import decimal
import ipaddress
import math
import struct
import uuid
from dataclasses import dataclass, field
from typing import Any, Tuple

from .errors import InvalidRequest, SyntaxException

# [option] ids (spec section 4.2.5.2)
NATIVE_TYPE_IDS = {
    "ascii": 0x0001, "bigint": 0x0002, "blob": 0x0003, "boolean": 0x0004, "counter": 0x0005,
    "decimal": 0x0006, "double": 0x0007, "float": 0x0008, "int": 0x0009, "timestamp": 0x000B,
    "uuid": 0x000C, "text": 0x000D, "varint": 0x000E, "timeuuid": 0x000F, "inet": 0x0010,
    "date": 0x0011, "time": 0x0012, "smallint": 0x0013, "tinyint": 0x0014,
}
ALIASES = {"varchar": "text"}
COLLECTION_IDS = {"list": 0x0020, "map": 0x0021, "set": 0x0022}
UNSUPPORTED = {"counter": "counter columns", "duration": "the duration type"}

INT_RANGES = {
    "tinyint": (1, -(1 << 7), (1 << 7) - 1),
    "smallint": (2, -(1 << 15), (1 << 15) - 1),
    "int": (4, -(1 << 31), (1 << 31) - 1),
    "bigint": (8, -(1 << 63), (1 << 63) - 1),
    "counter": (8, -(1 << 63), (1 << 63) - 1),
    "timestamp": (8, -(1 << 63), (1 << 63) - 1),
    "time": (8, 0, 86399999999999),
}


@dataclass(frozen=True)
class CqlType:
    """A CQL type: a native name, or list/set/map with element types; `frozen` marks frozen collections."""

    name: str
    params: Tuple["CqlType", ...] = field(default=())
    frozen: bool = False

    @property
    def is_collection(self) -> bool:
        return self.name in COLLECTION_IDS

    @property
    def is_multicell(self) -> bool:
        """A non-frozen collection (Cassandra's "complex" column)."""
        return self.is_collection and not self.frozen

    def cql(self) -> str:
        """The type as Cassandra writes it in system_schema (e.g. ``frozen<map<text, text>>``)."""
        if not self.params:
            return self.name
        inner = "%s<%s>" % (self.name, ", ".join(p.cql() for p in self.params))
        return "frozen<%s>" % inner if self.frozen else inner

    def __str__(self) -> str:
        return self.cql()

    # -- wire -----------------------------------------------------------------
    def option_bytes(self) -> bytes:
        """The [option] encoding of this type (spec 4.2.5.2)."""
        if self.name in NATIVE_TYPE_IDS:
            return struct.pack(">H", NATIVE_TYPE_IDS[self.name])
        out = struct.pack(">H", COLLECTION_IDS[self.name])
        for p in self.params:
            out += p.option_bytes()
        return out

    def serialize(self, value: Any) -> bytes:
        return _serialize(self, value)

    def deserialize(self, data: bytes) -> Any:
        return _deserialize(self, data)

    def sort_key(self, value: Any):
        return _sort_key(self, value)


def native(name: str) -> CqlType:
    return CqlType(ALIASES.get(name, name))


TEXT = native("text")
INT = native("int")
BIGINT = native("bigint")
BOOLEAN = native("boolean")
UUID = native("uuid")
INET = native("inet")
DOUBLE = native("double")
TIMESTAMP = native("timestamp")
BLOB = native("blob")


def list_of(t: CqlType, frozen=False) -> CqlType:
    return CqlType("list", (t,), frozen)


def set_of(t: CqlType, frozen=False) -> CqlType:
    return CqlType("set", (t,), frozen)


def map_of(k: CqlType, v: CqlType, frozen=False) -> CqlType:
    return CqlType("map", (k, v), frozen)


# -- parsing type names ----------------------------------------------------------
def parse_type(text: str) -> CqlType:
    """Parse a type name such as ``map<text, frozen<list<int>>>``."""
    tokens = []
    word = ""
    for ch in text:
        if ch in "<>,":
            if word.strip():
                tokens.append(word.strip())
            tokens.append(ch)
            word = ""
        elif ch.isspace():
            if word.strip():
                tokens.append(word.strip())
            word = ""
        else:
            word += ch
    if word.strip():
        tokens.append(word.strip())
    pos = 0

    def take():
        nonlocal pos
        if pos >= len(tokens):
            raise SyntaxException("incomplete type %r" % text)
        pos += 1
        return tokens[pos - 1]

    def parse(frozen=False) -> CqlType:
        name = take().lower()
        if name == "frozen":
            if take() != "<":
                raise SyntaxException("expected '<' after frozen in %r" % text)
            t = parse(frozen=True)
            if take() != ">":
                raise SyntaxException("expected '>' in %r" % text)
            return t
        if name in COLLECTION_IDS:
            if take() != "<":
                raise SyntaxException("expected '<' after %s in %r" % (name, text))
            params = [parse()]
            if name == "map":
                if take() != ",":
                    raise SyntaxException("map needs two types in %r" % text)
                params.append(parse())
            if take() != ">":
                raise SyntaxException("expected '>' in %r" % text)
            # elements of a collection are always frozen
            params = [_freeze(p) for p in params]
            return CqlType(name, tuple(params), frozen)
        name = ALIASES.get(name, name)
        if name in UNSUPPORTED:
            raise InvalidRequest("%s are not supported by the CQL test server" % UNSUPPORTED[name])
        if name not in NATIVE_TYPE_IDS:
            raise InvalidRequest("Unknown type %s" % name)
        return CqlType(name)

    t = parse()
    if pos != len(tokens):
        raise SyntaxException("unexpected %r in type %r" % (tokens[pos], text))
    return t


def _freeze(t: CqlType) -> CqlType:
    if t.is_collection and not t.frozen:
        return CqlType(t.name, t.params, True)
    return t


# -- serialization ----------------------------------------------------------------
def _int_bytes(t: CqlType, value: Any) -> bytes:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest("Invalid value %r for type %s" % (value, t.cql()))
    size, lo, hi = INT_RANGES[t.name]
    if not lo <= value <= hi:
        raise InvalidRequest("Value %d out of range for type %s" % (value, t.cql()))
    return value.to_bytes(size, "big", signed=True)


def _varint_bytes(value: int) -> bytes:
    length = max(1, (value.bit_length() + 8) // 8)
    return value.to_bytes(length, "big", signed=True)


def _serialize(t: CqlType, value: Any) -> bytes:
    n = t.name
    if n in ("text", "ascii"):
        data = value.encode("utf-8")
        if n == "ascii" and any(b > 127 for b in data):
            raise InvalidRequest("Invalid byte for ascii")
        return data
    if n in INT_RANGES:
        return _int_bytes(t, value)
    if n == "varint":
        return _varint_bytes(value)
    if n == "boolean":
        return b"\x01" if value else b"\x00"
    if n in ("uuid", "timeuuid"):
        return value.bytes
    if n == "blob":
        return bytes(value)
    if n == "double":
        return struct.pack(">d", value)
    if n == "float":
        return struct.pack(">f", value)
    if n == "decimal":
        sign, digits, exp = value.as_tuple()
        unscaled = int("".join(map(str, digits)) or "0") * (-1 if sign else 1)
        return struct.pack(">i", -exp) + _varint_bytes(unscaled)
    if n == "inet":
        return value.packed
    if n == "date":
        return struct.pack(">I", value)
    if n in ("list", "set"):
        out = [struct.pack(">i", len(value))]
        for item in value:
            b = _serialize(t.params[0], item)
            out.append(struct.pack(">i", len(b)) + b)
        return b"".join(out)
    if n == "map":
        out = [struct.pack(">i", len(value))]
        for k, v in value:
            kb = _serialize(t.params[0], k)
            vb = _serialize(t.params[1], v)
            out.append(struct.pack(">i", len(kb)) + kb + struct.pack(">i", len(vb)) + vb)
        return b"".join(out)
    raise InvalidRequest("Cannot serialize type %s" % t.cql())


def _deserialize(t: CqlType, data: bytes) -> Any:
    n = t.name
    try:
        if n in ("text", "ascii"):
            s = data.decode("utf-8")
            if n == "ascii" and not s.isascii():
                raise InvalidRequest("Invalid byte for ascii")
            return s
        if n == "blob":
            return bytes(data)
        if n in INT_RANGES:
            size = INT_RANGES[n][0]
            if len(data) != size:
                raise InvalidRequest("Expected %d byte %s (%d)" % (size, t.cql(), len(data)))
            v = int.from_bytes(data, "big", signed=True)
            if n == "time" and not 0 <= v <= INT_RANGES["time"][2]:
                raise InvalidRequest("Invalid time value %d" % v)
            return v
        if n == "varint":
            if not data:
                raise InvalidRequest("Empty varint value")
            return int.from_bytes(data, "big", signed=True)
        if n == "boolean":
            if len(data) != 1:
                raise InvalidRequest("Expected 1 byte for a boolean (%d)" % len(data))
            return data != b"\x00"
        if n in ("uuid", "timeuuid"):
            if len(data) != 16:
                raise InvalidRequest("UUID should be 16 or 0 bytes (%d)" % len(data))
            u = uuid.UUID(bytes=bytes(data))
            if n == "timeuuid" and u.version != 1:
                raise InvalidRequest("Unsupported UUID version (%d)" % (u.version or 0))
            return u
        if n == "double":
            if len(data) != 8:
                raise InvalidRequest("Expected 8 bytes for a double (%d)" % len(data))
            return struct.unpack(">d", data)[0]
        if n == "float":
            if len(data) != 4:
                raise InvalidRequest("Expected 4 bytes for a float (%d)" % len(data))
            return struct.unpack(">f", data)[0]
        if n == "decimal":
            if len(data) < 5:
                raise InvalidRequest("Invalid decimal value")
            scale = struct.unpack(">i", data[:4])[0]
            unscaled = int.from_bytes(data[4:], "big", signed=True)
            return decimal.Decimal(unscaled).scaleb(-scale)
        if n == "inet":
            if len(data) not in (4, 16):
                raise InvalidRequest("Invalid inet value: %d bytes" % len(data))
            return ipaddress.ip_address(bytes(data))
        if n == "date":
            if len(data) != 4:
                raise InvalidRequest("Expected 4 byte long for date (%d)" % len(data))
            return struct.unpack(">I", data)[0]
        if n in ("list", "set", "map"):
            return _deserialize_collection(t, data)
    except (struct.error, ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest("Invalid value for type %s: %s" % (t.cql(), exc))
    raise InvalidRequest("Cannot deserialize type %s" % t.cql())


def _deserialize_collection(t: CqlType, data: bytes):
    if len(data) < 4:
        raise InvalidRequest("Not enough bytes to read a %s" % t.name)
    count = struct.unpack(">i", data[:4])[0]
    pos = 4

    def read_elem(et: CqlType):
        nonlocal pos
        size = struct.unpack(">i", data[pos:pos + 4])[0]
        pos += 4
        if size < 0:
            raise InvalidRequest("null is not supported inside collections")
        chunk = data[pos:pos + size]
        if len(chunk) != size:
            raise InvalidRequest("Not enough bytes to read a %s" % t.name)
        pos += size
        return _deserialize(et, chunk)

    if count < 0:
        raise InvalidRequest("Invalid collection size")
    if t.name == "map":
        items = [(read_elem(t.params[0]), read_elem(t.params[1])) for _ in range(count)]
    else:
        items = [read_elem(t.params[0]) for _ in range(count)]
    if pos != len(data):
        raise InvalidRequest("Unexpected extraneous bytes after %s value" % t.name)
    return normalize_collection(t, items)


def normalize_collection(t: CqlType, items):
    """Canonical (hashable, ordered) form of a list/set/map value given as an iterable."""
    if t.name == "list":
        return tuple(items)
    if t.name == "set":
        et = t.params[0]
        uniq = {}
        for it in items:
            uniq[it] = it
        return tuple(sorted(uniq.values(), key=et.sort_key))
    kt = t.params[0]
    d = {}
    for k, v in items:
        d[k] = v
    return tuple(sorted(d.items(), key=lambda kv: kt.sort_key(kv[0])))


# -- ordering -----------------------------------------------------------------------
def _sort_key(t: CqlType, value: Any):
    """A Python sort key that orders values as Cassandra's comparator for the type does
    (text by UTF-8 bytes, numbers numerically, timeuuid by time; uuid by bytes -- an approximation)."""
    n = t.name
    if value is None:
        return (0,)
    if n in ("text", "ascii"):
        return (1, value.encode("utf-8"))
    if n == "timeuuid":
        return (1, value.time, value.bytes)
    if n == "uuid":
        if value.version == 1:
            return (1, 1, value.time, value.bytes)
        return (1, 0 if value.version is None else value.version, 0, value.bytes)
    if n == "inet":
        return (1, value.packed)
    if n in ("double", "float"):
        return (1, (0, 0) if math.isnan(value) else (1, value))  # nan sorts first
    if n in ("list", "set"):
        return (1, tuple(_sort_key(t.params[0], v) for v in value))
    if n == "map":
        return (1, tuple((_sort_key(t.params[0], k), _sort_key(t.params[1], v)) for k, v in value))
    return (1, value)


def compare(t: CqlType, a: Any, b: Any) -> int:
    ka, kb = _sort_key(t, a), _sort_key(t, b)
    return (ka > kb) - (ka < kb)


class _Unset:
    """The protocol's `not set` value ([value] of length -2, spec section 3)."""

    _instance = None

    def __new__(cls):
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self):
        return "UNSET"

    def __bool__(self):
        return False


UNSET = _Unset()
