"""What only the embedded store does: its file stays small (expired rows are purged), and an old file is brought
up to the current schema."""
from __future__ import annotations

import sqlite3
import uuid

from otp_service.adapters import sqlite_store
from otp_service.adapters.sqlite_store import SqliteStore
from otp_service.adapters.store import BlockedRow

from .support import FakeClock
from .test_store_contract import row


def _count(path: str, table: str) -> int:
    with sqlite3.connect(path) as conn:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def test_expired_rows_and_blocks_are_purged_slice_by_slice_and_live_ones_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(sqlite_store, "_PURGE_SLICE", 4)  # so that the walk takes several slices
    clock = FakeClock()
    path = str(tmp_path / "purge.db")
    store = SqliteStore(path, clock=clock)
    start = clock()
    live = [f"live-{uuid.uuid4().hex}" for _ in range(3)]
    for n in range(17):
        assert store.insert_otp(row(key=f"old-{n:02d}-{uuid.uuid4().hex}", expires_at=start + 10))
    for key in live:
        assert store.insert_otp(row(key=key, expires_at=start + 3600))
    store.block_key(BlockedRow("email", "blocked-old", start, start, start + 10))
    store.block_key(BlockedRow("email", "blocked-live", start, start, start + 3600))
    assert _count(path, "otp") == 20

    clock.advance(60)  # the 17 rows and the first block have expired
    for n in range(8):  # each insert may run one slice of the purge, at most once a second
        assert store.insert_otp(row(key=f"new-{n}-{uuid.uuid4().hex}", expires_at=clock() + 3600))
        clock.advance(1)

    assert _count(path, "otp") == 3 + 8
    assert all(store.get_otp("email", key) is not None for key in live)
    assert _count(path, "blocked_key") == 1 and store.get_block("email", "blocked-live") is not None


def test_an_older_file_loses_the_expiry_index_that_slowed_every_write(tmp_path):
    path = str(tmp_path / "old.db")
    with sqlite3.connect(path) as conn:
        conn.executescript(sqlite_store._SCHEMA)
        conn.execute("CREATE INDEX otp_expires_at ON otp (expires_at)")  # what the first versions created

    SqliteStore(path).open()

    with sqlite3.connect(path) as conn:
        indexes = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert "otp_expires_at" not in indexes and "blocked_key_until" in indexes


def test_a_file_made_before_blocks_lived_in_the_row_gains_the_column_and_keeps_its_rows(tmp_path):
    path = str(tmp_path / "old.db")
    old_schema = sqlite_store._SCHEMA.replace("    blocked_until REAL,\n    version", "    version")
    assert old_schema != sqlite_store._SCHEMA
    old_row = row(key="from-before")
    with sqlite3.connect(path) as conn:
        conn.executescript(old_schema)
        values = sqlite_store._otp_values(old_row)
        conn.execute(f"INSERT INTO otp VALUES ({', '.join('?' * 14)})", values[:12] + values[13:])

    store = SqliteStore(path)
    found = store.get_otp("email", "from-before")
    assert found is not None and found.blocked_until is None and found.otp == old_row.otp
    assert store.update_otp(found._replace(blocked_until=found.expires_at, version=2), expected_version=1)
    assert store.get_otp("email", "from-before").blocked_until == found.expires_at
    SqliteStore(path).open()  # a second opening (another worker) finds the column there and changes nothing


def test_a_forked_child_opens_its_own_connection_and_never_uses_the_parents(tmp_path):
    """SQLite forbids using a connection across fork(); gunicorn forks workers from a master that may have one."""
    import multiprocessing

    store = SqliteStore(str(tmp_path / "fork.db"))
    store.open()
    parent_conn = store._conn()
    assert store.insert_otp(row(key="parent"))

    def child(results):
        inherited = store._local.conn  # the parent's connection object, copied by fork
        own = store._conn()
        wrote = store.insert_otp(row(key="child"))
        results.put((own is not inherited, wrote, store.get_otp("email", "parent") is not None))

    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    process = ctx.Process(target=child, args=(results,))
    process.start()
    fresh, wrote, read = results.get(timeout=30)
    process.join(30)
    assert (fresh, wrote, read) == (True, True, True)
    assert store._conn() is parent_conn  # the parent keeps its own
    assert store.get_otp("email", "child") is not None


def test_writes_queued_behind_one_that_found_the_database_locked_fail_with_it(tmp_path):
    """Writes of one process queue (first come, first served); when the one at the head gives up after
    busy_timeout, the ones behind it fail too instead of each waiting busy_timeout again in turn."""
    import threading
    import time

    from otp_service.adapters.store import StoreUnavailable

    path = str(tmp_path / "queue.db")
    store = SqliteStore(path, busy_timeout=2.0)
    store.open()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process holding the write lock
    outcomes: list[str] = []
    started = time.monotonic()

    def write(n):
        try:
            store.insert_otp(row(key=f"queued-{n}"))
            outcomes.append("written")
        except StoreUnavailable:
            outcomes.append("unavailable")

    writers = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    try:
        for writer in writers:
            writer.start()
        for writer in writers:
            writer.join(30)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert outcomes == ["unavailable"] * 4
    assert time.monotonic() - started < 3 * 2.0  # about one busy_timeout in all; in turn it would be four
    assert store.insert_otp(row(key="after"))  # and the next write, once the lock is gone, goes through
