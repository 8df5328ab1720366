"""The TCP side of the CQL test server: connections, the startup handshake and request dispatch.

Follows native_protocol_v4.spec: OPTIONS may come first and is answered with SUPPORTED; STARTUP
(which must carry CQL_VERSION) is answered READY, or AUTHENTICATE with
org.apache.cassandra.auth.PasswordAuthenticator when credentials are configured (then SASL PLAIN in
AUTH_RESPONSE, answered AUTH_SUCCESS or an Authentication error 0x0100); REGISTER is answered READY
and SCHEMA_CHANGE events are pushed on stream -1. A frame of another protocol version is answered,
as Cassandra does, with a Protocol error "Invalid or unsupported protocol version (N); supported
versions are (4/v4)" in a v4 frame on the request's stream -- which is what makes drivers that try
v5/DSE first downgrade to v4. Requests on one connection are executed concurrently by a thread pool
and answered on their own stream id, in any order.
"""
from __future__ import annotations

import logging
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import List, Optional, Set

from . import protocol as W
from .engine import Engine, SchemaChangeResult, SetKeyspaceResult
from .errors import AuthenticationError, CqlError, ProtocolError, ServerError
from .system_tables import CQL_VERSION

log = logging.getLogger("tests.cqlserver")

PASSWORD_AUTHENTICATOR = "org.apache.cassandra.auth.PasswordAuthenticator"
EVENT_TYPES = ("TOPOLOGY_CHANGE", "STATUS_CHANGE", "SCHEMA_CHANGE")


class Connection:
    def __init__(self, server: "CqlTestServer", sock: socket.socket, address):
        self.server = server
        self.sock = sock
        self.address = address
        self.write_lock = threading.Lock()
        self.state = "new"  # new -> authenticating -> ready
        self.keyspace: Optional[str] = None
        self.events: Set[str] = set()
        self.closed = False
        self.thread = threading.Thread(target=self.run, name="cqlserver-conn-%s:%s" % address[:2], daemon=True)

    # -- io ------------------------------------------------------------------------------------------
    def _recv_exactly(self, n: int) -> Optional[bytes]:
        buf = bytearray()
        while len(buf) < n:
            try:
                chunk = self.sock.recv(n - len(buf))
            except OSError:
                return None
            if not chunk:
                return None
            buf.extend(chunk)
        return bytes(buf)

    def send(self, stream: int, opcode: int, body: bytes):
        data = W.frame(stream, opcode, body)
        with self.write_lock:
            if self.closed:
                return
            try:
                self.sock.sendall(data)
            except OSError:
                self.close()

    def send_error(self, stream: int, err: CqlError):
        self.send(stream, W.ERROR, W.error_body(err))

    def close(self):
        if self.closed:
            return
        self.closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self.sock.close()
        except OSError:
            pass

    # -- main loop -----------------------------------------------------------------------------------
    def run(self):
        try:
            while not self.closed:
                header = self._recv_exactly(W.HEADER_SIZE)
                if header is None:
                    break
                version_byte, flags, stream, opcode, length = W.HEADER.unpack(header)
                version = version_byte & 0x7F
                if version != W.PROTOCOL_VERSION:
                    # Cassandra answers an unsupported version in the highest version it supports
                    self.send_error(stream, ProtocolError(
                        "Invalid or unsupported protocol version (%d); supported versions are (4/v4)" % version))
                    self._drain_and_close()
                    break
                if version_byte & W.RESPONSE_FLAG:
                    self.send_error(stream, ProtocolError("Invalid message direction: a response frame was sent to the server"))
                    self._drain_and_close()
                    break
                if length < 0 or length > W.MAX_FRAME_BODY:
                    self.send_error(stream, ProtocolError("Request is too big: length %d exceeds maximum allowed length %d"
                                                          % (length, W.MAX_FRAME_BODY)))
                    self._drain_and_close()
                    break
                body = self._recv_exactly(length) if length else b""
                if body is None:
                    break
                self.handle_frame(flags, stream, opcode, body)
        except Exception:  # pragma: no cover - defensive: never kill the server thread silently
            log.exception("connection %s failed", self.address)
        finally:
            self.close()
            self.server._forget(self)

    def _drain_and_close(self):
        """Half-close after an error so the peer reads it before the connection goes away."""
        with self.write_lock:
            try:
                self.sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        self.sock.settimeout(2.0)
        try:
            while self.sock.recv(65536):
                pass
        except OSError:
            pass

    def handle_frame(self, flags: int, stream: int, opcode: int, body: bytes):
        try:
            if flags & W.FLAG_COMPRESSION:
                raise ProtocolError("Compressed frame received but no compression was negotiated in STARTUP")
            reader = W.Reader(body)
            if flags & W.FLAG_CUSTOM_PAYLOAD and opcode in (W.QUERY, W.PREPARE, W.EXECUTE, W.BATCH):
                reader.bytes_map()
            if opcode == W.OPTIONS:
                self.send(stream, W.SUPPORTED, W.supported_body(CQL_VERSION))
            elif opcode == W.STARTUP:
                self.startup(stream, reader)
            elif opcode == W.AUTH_RESPONSE:
                self.auth_response(stream, reader)
            elif opcode in (W.QUERY, W.PREPARE, W.EXECUTE, W.BATCH, W.REGISTER):
                if self.state != "ready":
                    if self.state == "authenticating":
                        raise ProtocolError("Unexpected message %s, expecting SASL response" % W.OPCODE_NAMES[opcode])
                    raise ProtocolError("Unexpected message %s, expecting STARTUP or OPTIONS" % W.OPCODE_NAMES[opcode])
                if opcode == W.REGISTER:
                    self.register(stream, reader)
                else:
                    self.server.executor.submit(self.execute, stream, opcode, reader)
            else:
                raise ProtocolError("Unknown opcode %d" % opcode)
        except CqlError as err:
            self.send_error(stream, err)

    def startup(self, stream: int, reader: W.Reader):
        if self.state != "new":
            raise ProtocolError("Unexpected message STARTUP, the connection is already initialized")
        options = reader.string_map()
        cql_version = options.get("CQL_VERSION")
        if cql_version is None:
            raise ProtocolError("Missing value CQL_VERSION in STARTUP message")
        if not cql_version.startswith("3."):
            raise ProtocolError("Invalid or unsupported CQL version %s (supported: %s)" % (cql_version, CQL_VERSION))
        compression = options.get("COMPRESSION")
        if compression:
            raise ProtocolError("Unknown compression algorithm: %s" % compression)
        if self.server.username is not None:
            self.state = "authenticating"
            self.send(stream, W.AUTHENTICATE, W.w_string(PASSWORD_AUTHENTICATOR))
        else:
            self.state = "ready"
            self.send(stream, W.READY, b"")

    def auth_response(self, stream: int, reader: W.Reader):
        if self.state != "authenticating":
            raise ProtocolError("Unexpected message AUTH_RESPONSE")
        token = reader.bytes() or b""
        parts = token.split(b"\x00")
        if len(parts) != 3:
            raise AuthenticationError("Authentication failed: malformed SASL PLAIN token")
        _, user, password = (p.decode("utf-8", "replace") for p in parts)
        if user != self.server.username or password != self.server.password:
            raise AuthenticationError("Provided username %s and/or password are incorrect" % user)
        self.state = "ready"
        self.send(stream, W.AUTH_SUCCESS, W.w_bytes(None))

    def register(self, stream: int, reader: W.Reader):
        events = reader.string_list()
        for e in events:
            if e not in EVENT_TYPES:
                raise ProtocolError("Invalid value '%s' for Type" % e)
        self.events.update(events)
        self.send(stream, W.READY, b"")

    def execute(self, stream: int, opcode: int, reader: W.Reader):
        engine = self.server.engine
        try:
            skip_metadata = False
            if opcode == W.QUERY:
                query = reader.long_string()
                params = W.read_query_params(reader)
                result = engine.execute_query(query, self.keyspace, params)
            elif opcode == W.PREPARE:
                query = reader.long_string()
                result = engine.prepare(query, self.keyspace)
            elif opcode == W.EXECUTE:
                sid = reader.short_bytes()
                params = W.read_query_params(reader)
                skip_metadata = params.skip_metadata
                result = engine.execute_prepared(sid, params)
            else:
                batch_type, entries, params = W.read_batch(reader)
                result = engine.execute_batch(batch_type, entries, self.keyspace, params)
            if isinstance(result, SetKeyspaceResult):
                self.keyspace = result.keyspace
            self.send(stream, W.RESULT, W.result_body(result, skip_metadata))
            if isinstance(result, SchemaChangeResult):
                self.server.push_schema_change(result)
        except CqlError as err:
            self.send_error(stream, err)
        except Exception as exc:
            log.exception("unexpected error executing a request")
            self.send_error(stream, ServerError("java.lang.RuntimeException: %s: %s" % (type(exc).__name__, exc)))


class CqlTestServer:
    """An in-process Cassandra stand-in speaking native protocol v4 on a local TCP port.

        server = CqlTestServer(host="127.0.0.1", port=0)
        server.start()            # returns once listening; server.port is the real port
        ...
        server.stop()

    or ``with CqlTestServer() as server: ...``. Test hooks: ``advance_clock(seconds)`` (TTL expiry),
    ``seen_consistencies`` (list of (statement text, consistency, serial consistency)),
    ``clear_prepared()`` (as if the node restarted), ``reset()`` (drop all user keyspaces).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, username: Optional[str] = None,
                 password: Optional[str] = None, release_version: str = "4.1.3", workers: int = 8,
                 push_events: bool = True):
        if (username is None) != (password is None):
            raise ValueError("give both username and password, or neither")
        self.host = host
        self.requested_port = port
        self.port: Optional[int] = None
        self.username = username
        self.password = password
        self.push_events = push_events
        self.engine = Engine(host=host, port=port, release_version=release_version)
        self.executor: Optional[ThreadPoolExecutor] = None
        self._workers = workers
        self._listener: Optional[socket.socket] = None
        self._accept_thread: Optional[threading.Thread] = None
        self._connections: List[Connection] = []
        self._conn_lock = threading.Lock()
        self._stopping = threading.Event()

    # -- lifecycle -----------------------------------------------------------------------------------
    def start(self) -> "CqlTestServer":
        if self._listener is not None:
            raise RuntimeError("server already started")
        self._stopping.clear()
        listener = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self.requested_port))
        listener.listen(64)
        listener.settimeout(0.1)
        self._listener = listener
        self.port = listener.getsockname()[1]
        self.engine.port = self.port
        self.executor = ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="cqlserver-worker")
        self._accept_thread = threading.Thread(target=self._accept_loop, name="cqlserver-accept", daemon=True)
        self._accept_thread.start()
        return self

    def stop(self):
        self._stopping.set()
        if self._accept_thread is not None:
            self._accept_thread.join(timeout=5)
            self._accept_thread = None
        if self._listener is not None:
            try:
                self._listener.close()
            except OSError:
                pass
            self._listener = None
        with self._conn_lock:
            conns = list(self._connections)
        for c in conns:
            c.close()
        for c in conns:
            c.thread.join(timeout=5)
        if self.executor is not None:
            self.executor.shutdown(wait=True)
            self.executor = None

    def __enter__(self) -> "CqlTestServer":
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _accept_loop(self):
        while not self._stopping.is_set():
            try:
                sock, addr = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                break
            sock.settimeout(None)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = Connection(self, sock, addr)
            with self._conn_lock:
                self._connections.append(conn)
            conn.thread.start()

    def _forget(self, conn: Connection):
        with self._conn_lock:
            if conn in self._connections:
                self._connections.remove(conn)

    def push_schema_change(self, change: SchemaChangeResult):
        if not self.push_events:
            return
        body = W.schema_change_event_body(change)
        with self._conn_lock:
            conns = [c for c in self._connections if "SCHEMA_CHANGE" in c.events]
        for c in conns:
            c.send(-1, W.EVENT, body)

    # -- test hooks ----------------------------------------------------------------------------------
    def advance_clock(self, seconds: float):
        """Move the server clock used for TTL expiry forward (write timestamps are not affected)."""
        self.engine.advance_clock(seconds)

    @property
    def seen_consistencies(self):
        """(statement text, consistency name, serial consistency name or None) for every QUERY/EXECUTE/BATCH."""
        return self.engine.seen_consistencies

    def clear_prepared(self):
        """Forget every prepared statement, as a restarted node would (EXECUTE then gets Unprepared)."""
        with self.engine.lock:
            self.engine.prepared.clear()

    def reset(self):
        """Drop all user keyspaces, prepared statements and recorded consistencies; reset the clock."""
        self.engine.reset()

    @property
    def connection_count(self) -> int:
        with self._conn_lock:
            return len(self._connections)
