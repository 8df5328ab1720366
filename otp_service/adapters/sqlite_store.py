"""The embedded store: one SQLite file, the same semantics as the Cassandra store.

- Expiry by time: every row has `expires_at`; reads ignore expired rows and writes replace them, so the result
  is the same as Cassandra's TTL. Expired rows are also purged now and then so the file does not grow.
- Under gevent (the default gunicorn worker), a busy wait is `time.sleep`, which then yields to the worker's other
  requests; SQLite's own busy handler, which would block the whole worker, is off (busy_timeout=0) once a
  connection is set up.
- Atomicity across threads and gunicorn workers: every conditional write is one statement
  (`UPDATE ... WHERE version = ?`, `INSERT ... ON CONFLICT DO UPDATE ... WHERE expired`), which SQLite runs
  under its database lock; WAL lets readers proceed meanwhile. One connection per thread and per process.
"""
from __future__ import annotations

import os
import random
import sqlite3
import threading
import time
from typing import Callable, Sequence

from .store import BlockedRow, Counter, OtpRow, Store, StoreUnavailable, Taken

_SCHEMA = """
CREATE TABLE IF NOT EXISTS otp (
    type TEXT NOT NULL,
    key TEXT NOT NULL,
    otp TEXT,
    created_on REAL,
    updated_on REAL,
    expires_on REAL,
    retry_count INTEGER NOT NULL,
    is_locked INTEGER NOT NULL,
    locked_on REAL,
    send_count INTEGER NOT NULL,
    window_start REAL,
    last_sent_on REAL,
    blocked_until REAL,
    version INTEGER NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (type, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS blocked_key (
    type TEXT NOT NULL,
    key TEXT NOT NULL,
    created_on REAL NOT NULL,
    blocked_on REAL NOT NULL,
    blocked_until REAL NOT NULL,
    PRIMARY KEY (type, key)
) WITHOUT ROWID;
-- No index on otp (expires_at): every write would update its last page, one page all writers share (measured:
-- about a tenth of a generate's CPU under load). Expired rows are purged by walking the primary key instead.
DROP INDEX IF EXISTS otp_expires_at;
CREATE INDEX IF NOT EXISTS blocked_key_until ON blocked_key (blocked_until);
"""

# The abuse limits' fixed-window counters: one row per counter and window, gone (purged) when its window ends.
_COUNTER_SCHEMA = """
CREATE TABLE IF NOT EXISTS abuse_counter (
    name TEXT NOT NULL,
    start REAL NOT NULL,
    count INTEGER NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (name, start)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS abuse_counter_expires_at ON abuse_counter (expires_at);
"""
# A row past its window (not purged yet) counts as absent, as on Cassandra once its TTL has run out.
_SELECT_COUNT = "SELECT count FROM abuse_counter WHERE name = ? AND start = ? AND expires_at > ?"
_ADD_COUNT = (
    "INSERT INTO abuse_counter (name, start, count, expires_at) VALUES (?, ?, 1, ?) ON CONFLICT (name, start) "
    "DO UPDATE SET count = CASE WHEN expires_at <= ? THEN 1 ELSE count + 1 END, expires_at = excluded.expires_at"
)
_RELEASE_COUNT = (
    "UPDATE abuse_counter SET count = count - 1 WHERE name = ? AND start = ? AND count > 0 AND expires_at > ?"
)

_OTP_COLUMNS = (
    "type, key, otp, created_on, updated_on, expires_on, retry_count, is_locked, locked_on, "
    "send_count, window_start, last_sent_on, blocked_until, version, expires_at"
)
# Files made before the block became a state of the row get its column (NULL: not blocked) when first opened.
_ADDED_COLUMNS = {"blocked_until": "ALTER TABLE otp ADD COLUMN blocked_until REAL"}
_OTP_SET = ", ".join(f"{c} = excluded.{c}" for c in _OTP_COLUMNS.split(", ")[2:])
# The statements of the hot path, built once (SQLite's statement cache then finds them by their text).
_SELECT_OTP = f"SELECT {_OTP_COLUMNS} FROM otp WHERE type = ? AND key = ? AND expires_at > ?"
_INSERT_OTP = (
    f"INSERT INTO otp ({_OTP_COLUMNS}) VALUES ({', '.join('?' * 15)}) "
    f"ON CONFLICT (type, key) DO UPDATE SET {_OTP_SET} WHERE otp.expires_at <= ?"
)
_UPDATE_OTP = (
    f"UPDATE otp SET {', '.join(f'{c} = ?' for c in _OTP_COLUMNS.split(', ')[2:])} "
    "WHERE type = ? AND key = ? AND version = ? AND expires_at > ?"
)
_SELECT_BLOCK = (
    "SELECT type, key, created_on, blocked_on, blocked_until FROM blocked_key "
    "WHERE type = ? AND key = ? AND blocked_until > ?"
)
# Both reads of a generate in one statement, so in one snapshot: the row (tag 0) and the block (tag 1), if live.
_SELECT_OTP_AND_BLOCK = (
    f"SELECT 0, {_OTP_COLUMNS} FROM otp WHERE type = ? AND key = ? AND expires_at > ? UNION ALL "
    f"SELECT 1, type, key, created_on, blocked_on, blocked_until{', NULL' * 10} FROM blocked_key "
    "WHERE type = ? AND key = ? AND blocked_until > ?"
)
# Purging expired rows: every second, one slice of at most _PURGE_SLICE rows, in primary-key order, from where the
# last slice ended; after the last slice, expired blocks too, and the walk starts again.
_PURGE_EVERY_SECONDS = 1.0
_PURGE_SLICE = 2000
_PURGE_SLICE_END = "SELECT type, key FROM otp WHERE (type, key) > (?, ?) ORDER BY type, key LIMIT 1 OFFSET ?"
_PURGE_SLICE_OTP = "DELETE FROM otp WHERE (type, key) > (?, ?) AND (type, key) <= (?, ?) AND expires_at <= ?"
_PURGE_LAST_SLICE_OTP = "DELETE FROM otp WHERE (type, key) > (?, ?) AND expires_at <= ?"
# Waits for a locked database: 50 us at first, doubling to 5 ms (random within each, so waiters spread out).
_FIRST_WAIT = 0.00005
_LONGEST_WAIT = 0.005

# Bumped in the child of every fork: a connection opened before a fork is never used after it (SQLite forbids
# carrying one across). Compared on every statement instead of os.getpid(), which is a system call each time.
_forks = 0


def _forked() -> None:
    global _forks
    _forks += 1


os.register_at_fork(after_in_child=_forked)


class _LockedTooLong(StoreUnavailable):
    """Another connection held the write lock for all of `busy_timeout`."""


def _per_thread():
    """A `threading.local` of real threads. In a gevent worker the monkey-patched `threading.local` is one per
    greenlet, so one per request: each request would open (and leave behind) its own connection. The greenlets of
    one thread share its connection instead, which is safe: each statement is its own transaction, runs to its end
    without yielding (the C call never switches greenlets), and a busy wait sleeps between statements, not in one."""
    try:
        from gevent import monkey
    except ImportError:
        return threading.local()
    if monkey.is_object_patched("threading", "local"):
        return monkey.get_original("threading", "local")()
    return threading.local()


class SqliteStore(Store):
    name = "sqlite"

    def __init__(self, path: str, *, busy_timeout: float = 5.0, clock: Callable[[], float] = time.time):
        self.path = path
        self.busy_timeout = busy_timeout
        self.clock = clock
        self._local = _per_thread()
        self._next_purge = 0.0
        self._next_counter_purge = 0.0
        self._purged_to = ("", "")  # (type, key) where the purge's walk over the otp table stands
        self._schema_ready = False
        self._schema_lock = threading.Lock()
        self._writer, self._writer_forks = threading.Lock(), _forks
        self._gave_up_at = float("-inf")  # when a write last failed (locked past busy_timeout): see _write

    # -- connections ----------------------------------------------------------------------------------------------
    def open(self) -> None:
        self._conn()

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is not None and self._local.forks == _forks:
            return conn
        try:
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            with self._schema_lock:
                if not self._schema_ready:
                    conn.executescript(_SCHEMA + _COUNTER_SCHEMA)
                    _add_missing_columns(conn)
                    self._schema_ready = True
            # From here on, waits for another writer are ours (_wait_and_retry), not SQLite's busy handler, which
            # sleeps 1, 2, 5, 10 ms ... between tries for a lock that is held for tens of microseconds.
            conn.execute("PRAGMA busy_timeout=0")
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"sqlite: {exc}") from None
        self._local.conn, self._local.forks = conn, _forks
        return conn

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None and self._local.forks == _forks:
            conn.close()
        self._local = _per_thread()

    def _run(self, sql: str, params: tuple | dict = ()) -> sqlite3.Cursor:
        conn = self._conn()
        try:
            return conn.execute(sql, params)
        except sqlite3.OperationalError as exc:
            if not _busy(exc):
                raise StoreUnavailable(f"sqlite: {exc}") from None
        return self._wait_and_retry(conn, sql, params)

    def _write(self, sql: str, params: tuple | dict = ()) -> sqlite3.Cursor:
        """A write, one at a time in this process: SQLite takes one writer at a time anyway, and a queue here is fair
        (first come, first served), where hundreds of greenlets polling SQLite's lock from several processes let an
        unlucky one wait past `busy_timeout` (measured: 503s at 256 connections on 5 gevent workers). The wait in
        this queue is for this process's own earlier writes, not for a lock another process holds, so it does not
        count against `busy_timeout`; but once a write has found the database locked for `busy_timeout`, every
        write that was queued behind it fails at once too, instead of each waiting as long again. Reads never
        queue (WAL lets them run beside a writer)."""
        if self._writer_forks != _forks:  # a lock held by another thread at a fork stays held in the child
            self._writer, self._writer_forks = threading.Lock(), _forks
        queued_at = time.monotonic()
        with self._writer:
            if self._gave_up_at >= queued_at:
                raise StoreUnavailable("sqlite: database is locked")
            try:
                return self._run(sql, params)
            except _LockedTooLong:
                self._gave_up_at = time.monotonic()
                raise

    def _wait_and_retry(self, conn: sqlite3.Connection, sql: str, params: tuple | dict) -> sqlite3.Cursor:
        """Another connection holds the lock. Each statement is its own transaction, so one that met SQLITE_BUSY
        did nothing and can run again; try again after short random sleeps, for at most `busy_timeout`."""
        deadline = time.monotonic() + self.busy_timeout
        ceiling = _FIRST_WAIT
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise _LockedTooLong("sqlite: database is locked")
            time.sleep(min(random.uniform(ceiling / 2, ceiling), left))
            ceiling = min(ceiling * 2, _LONGEST_WAIT)
            try:
                return conn.execute(sql, params)
            except sqlite3.OperationalError as exc:
                if not _busy(exc):
                    raise StoreUnavailable(f"sqlite: {exc}") from None

    # -- otp ------------------------------------------------------------------------------------------------------
    def get_otp(self, type_: str, key: str) -> OtpRow | None:
        found = self._run(_SELECT_OTP, (type_, key, self.clock())).fetchone()
        return None if found is None else _otp_row(found)

    def get_otp_and_block(self, type_: str, key: str) -> tuple[OtpRow | None, BlockedRow | None]:
        now = self.clock()
        row = block = None
        for found in self._run(_SELECT_OTP_AND_BLOCK, (type_, key, now, type_, key, now)).fetchall():
            if found[0] == 0:
                row = _otp_row(found[1:])
            else:
                block = BlockedRow(*found[1:6])
        return row, block

    def insert_otp(self, row: OtpRow) -> bool:
        self._maybe_purge()
        cursor = self._write(_INSERT_OTP, (*_otp_values(row), self.clock()))
        return cursor.rowcount == 1

    def update_otp(self, row: OtpRow, expected_version: int) -> bool:
        cursor = self._write(_UPDATE_OTP, (*_otp_values(row)[2:], row.type, row.key, expected_version, self.clock()))
        return cursor.rowcount == 1

    def delete_otp(self, type_: str, key: str) -> None:
        self._write("DELETE FROM otp WHERE type = ? AND key = ?", (type_, key))

    # -- blocked keys ---------------------------------------------------------------------------------------------
    def block_key(self, row: BlockedRow) -> None:
        self._write(
            "INSERT INTO blocked_key (type, key, created_on, blocked_on, blocked_until) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (type, key) DO UPDATE SET created_on = excluded.created_on, "
            "blocked_on = excluded.blocked_on, blocked_until = excluded.blocked_until",
            (row.type, row.key, row.created_on, row.blocked_on, row.blocked_until),
        )

    def get_block(self, type_: str, key: str) -> BlockedRow | None:
        found = self._run(_SELECT_BLOCK, (type_, key, self.clock())).fetchone()
        return None if found is None else BlockedRow(*found)

    # -- abuse counters -------------------------------------------------------------------------------------------
    def take_counts(self, counters: Sequence[Counter]) -> Taken:
        """One write transaction (BEGIN IMMEDIATE holds the database's write lock from its start, so the reads and
        the increments are one atomic step across threads and processes): read every counter, and add one to each
        only when none is at its limit."""
        if not counters:
            return Taken(None, ())
        self._maybe_purge_counters()
        now = self.clock()
        conn = self._begin()
        try:
            counts = []
            for counter in counters:
                found = conn.execute(_SELECT_COUNT, (counter.name, counter.start, now)).fetchone()
                counts.append(0 if found is None else found[0])
            refused = next((i for i, c in enumerate(counters) if counts[i] >= c.limit), None)
            if refused is None:
                conn.executemany(_ADD_COUNT, [(c.name, c.start, c.ends, now) for c in counters])
                counts = [n + 1 for n in counts]
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            _rollback(conn)
            raise StoreUnavailable(f"sqlite: {exc}") from None
        return Taken(refused, tuple(counts))

    def release_counts(self, counters: Sequence[Counter]) -> None:
        if not counters:
            return
        conn = self._begin()
        try:
            conn.executemany(_RELEASE_COUNT, [(c.name, c.start, self.clock()) for c in counters])
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            _rollback(conn)
            raise StoreUnavailable(f"sqlite: {exc}") from None

    def _begin(self) -> sqlite3.Connection:
        """BEGIN IMMEDIATE, waiting (as every statement does) while another connection writes. A transaction an
        interrupted take left open on this thread's connection is rolled back first."""
        _rollback(self._conn())
        self._run("BEGIN IMMEDIATE")
        return self._conn()

    def _maybe_purge_counters(self) -> None:
        now = self.clock()
        if now >= self._next_counter_purge:
            self._next_counter_purge = now + _PURGE_EVERY_SECONDS
            self._run("DELETE FROM abuse_counter WHERE expires_at <= ?", (now,))

    def ping(self) -> None:
        self._run("SELECT 1").fetchone()

    def _maybe_purge(self) -> None:
        """Expired rows are invisible to reads and replaced by writes; this only keeps the file from growing."""
        now = self.clock()
        if now < self._next_purge:
            return
        self._next_purge = now + _PURGE_EVERY_SECONDS
        after = self._purged_to
        end = self._run(_PURGE_SLICE_END, (*after, _PURGE_SLICE - 1)).fetchone()
        if end is not None:
            self._write(_PURGE_SLICE_OTP, (*after, *end, now))
            self._purged_to = (end[0], end[1])
            return
        self._write(_PURGE_LAST_SLICE_OTP, (*after, now))
        self._write("DELETE FROM blocked_key WHERE blocked_until <= ?", (now,))
        self._purged_to = ("", "")


def _otp_row(found: tuple) -> OtpRow:
    values = list(found)
    values[7] = bool(values[7])
    return OtpRow(*values)


def _add_missing_columns(conn: sqlite3.Connection) -> None:
    """The schema migration of an existing file: add the columns later versions added (another process may be
    adding the same one at the same moment; its ALTER then wins and ours is a duplicate, which is fine)."""
    present = {row[1] for row in conn.execute("PRAGMA table_info(otp)")}
    for column, alter in _ADDED_COLUMNS.items():
        if column in present:
            continue
        try:
            conn.execute(alter)
        except sqlite3.OperationalError as exc:
            if "duplicate column" not in str(exc):
                raise


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass


def _busy(exc: sqlite3.OperationalError) -> bool:
    """SQLITE_BUSY, or one of its extended codes: another connection holds the lock; nothing was done."""
    return (getattr(exc, "sqlite_errorcode", 0) & 0xFF) == sqlite3.SQLITE_BUSY


def _otp_values(row: OtpRow) -> tuple:
    return (
        row.type, row.key, row.otp, row.created_on, row.updated_on, row.expires_on, row.retry_count,
        int(row.is_locked), row.locked_on, row.send_count, row.window_start, row.last_sent_on, row.blocked_until,
        row.version, row.expires_at,
    )
