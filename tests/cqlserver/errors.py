"""Errors the server answers with, carrying the error codes of section 9 of native_protocol_v4.spec."""
from __future__ import annotations

import struct


class CqlError(Exception):
    """An error sent back to the client as an ERROR frame: [int] code, [string] message, extra body."""

    code = 0x0000

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def extra(self) -> bytes:
        return b""


class ServerError(CqlError):
    code = 0x0000


class ProtocolError(CqlError):
    code = 0x000A


class AuthenticationError(CqlError):
    code = 0x0100


class SyntaxException(CqlError):
    code = 0x2000


class Unauthorized(CqlError):
    code = 0x2100


class InvalidRequest(CqlError):
    code = 0x2200


class ConfigurationException(CqlError):
    code = 0x2300


class AlreadyExists(CqlError):
    """0x2400: extra body is <ks><table> ([string] each; table empty for a keyspace)."""

    code = 0x2400

    def __init__(self, message: str, keyspace: str, table: str = ""):
        super().__init__(message)
        self.keyspace = keyspace
        self.table = table

    def extra(self) -> bytes:
        out = b""
        for s in (self.keyspace, self.table):
            b = s.encode("utf-8")
            out += struct.pack(">H", len(b)) + b
        return out


class Unprepared(CqlError):
    """0x2500: extra body is the unknown id as [short bytes]."""

    code = 0x2500

    def __init__(self, message: str, statement_id: bytes):
        super().__init__(message)
        self.statement_id = statement_id

    def extra(self) -> bytes:
        return struct.pack(">H", len(self.statement_id)) + self.statement_id
