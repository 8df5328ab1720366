"""The store contract: what every store (SQLite, Cassandra) must do for the OTP rules to hold.

Runs once per store kind. Expiry is real time here (Cassandra's TTL cannot be faked), so those tests sleep briefly.
"""
from __future__ import annotations

import math
import threading
import time
import uuid

from otp_service.adapters.store import BlockedRow, Counter, OtpRow, Taken


def row(expires_in: float = 60.0, **fields) -> OtpRow:
    now = time.time()
    base = dict(
        type="email", key=f"tok-{uuid.uuid4().hex}", otp="g1.cipher", created_on=now, updated_on=now,
        expires_on=now + 600, retry_count=0, is_locked=False, locked_on=None, send_count=1, window_start=now,
        last_sent_on=now, blocked_until=None, version=1, expires_at=now + expires_in,
    )
    base.update(fields)
    return OtpRow(**base)


def same_fields(a: OtpRow, b: OtpRow) -> bool:
    """Equal but for float rounding to the millisecond (Cassandra timestamps)."""
    for name in OtpRow._fields:
        x, y = getattr(a, name), getattr(b, name)
        if name == "expires_at":
            continue
        if isinstance(x, float) and isinstance(y, float):
            if abs(x - y) > 0.002:
                return False
        elif x != y:
            return False
    return True


def test_absent_row_reads_as_none(store):
    assert store.get_otp("email", "no-such-token") is None


def test_insert_then_read_returns_every_field(store):
    written = row(retry_count=2, is_locked=True, locked_on=time.time(), otp=None, send_count=3)
    assert store.insert_otp(written)
    assert same_fields(store.get_otp("email", written.key), written)


def test_a_blocked_row_reads_back_its_block_and_refuses_an_insert(store):
    """The block is a state of the row (services.py): while it lives, no INSERT ... IF NOT EXISTS can replace it."""
    written = row(otp=None, send_count=4, blocked_until=time.time() + 3600, expires_in=3600)
    assert store.insert_otp(written)
    assert not store.insert_otp(row(key=written.key))
    found = store.get_otp("email", written.key)
    assert abs(found.blocked_until - written.blocked_until) < 0.002 and found.otp is None


def test_rows_of_one_key_and_another_type_are_separate(store):
    written = row()
    assert store.insert_otp(written)
    assert store.get_otp("phone", written.key) is None
    assert store.insert_otp(written._replace(type="phone", otp="other"))
    assert store.get_otp("email", written.key).otp == "g1.cipher"


def test_insert_is_refused_while_a_live_row_exists(store):
    written = row()
    assert store.insert_otp(written)
    assert not store.insert_otp(written._replace(otp="another"))
    assert store.get_otp("email", written.key).otp == "g1.cipher"


def test_update_is_a_compare_and_set_on_version(store):
    written = row()
    store.insert_otp(written)
    assert store.update_otp(written._replace(retry_count=1, version=2), expected_version=1)
    assert not store.update_otp(written._replace(retry_count=9, version=2), expected_version=1)
    current = store.get_otp("email", written.key)
    assert (current.retry_count, current.version) == (1, 2)


def test_update_of_an_absent_row_does_nothing(store):
    ghost = row()
    assert not store.update_otp(ghost._replace(version=2), expected_version=1)
    assert store.get_otp("email", ghost.key) is None


def test_update_can_clear_a_field(store):
    written = row()
    store.insert_otp(written)
    assert store.update_otp(written._replace(otp=None, version=2), expected_version=1)
    assert store.get_otp("email", written.key).otp is None


def test_delete_removes_the_row(store):
    written = row()
    store.insert_otp(written)
    store.delete_otp("email", written.key)
    assert store.get_otp("email", written.key) is None
    assert store.insert_otp(written)


def test_rows_expire_by_time_and_updates_carry_the_ttl(store):
    """Nothing of a row is left after its expiry; an update sets the expiry anew (shorter or longer)."""
    plain, shortened, extended = row(expires_in=1.2), row(expires_in=30), row(expires_in=1.2)
    for written in (plain, shortened, extended):
        assert store.insert_otp(written)
    assert store.update_otp(shortened._replace(version=2, expires_at=time.time() + 1.2), 1)
    assert store.update_otp(extended._replace(version=2, expires_at=time.time() + 30), 1)
    time.sleep(2.6)
    assert store.get_otp("email", plain.key) is None
    assert store.get_otp("email", shortened.key) is None
    assert store.get_otp("email", extended.key).version == 2
    assert not store.update_otp(plain._replace(version=2), 1)
    assert store.insert_otp(plain._replace(expires_at=time.time() + 60))  # an expired row is no obstacle
    assert store.get_otp("email", plain.key).version == 1


def test_blocks_are_recorded_and_expire(store):
    now = time.time()
    key, brief = f"tok-{uuid.uuid4().hex}", f"tok-{uuid.uuid4().hex}"
    assert store.get_block("phone", key) is None
    store.block_key(BlockedRow("phone", key, created_on=now, blocked_on=now, blocked_until=now + 3600))
    store.block_key(BlockedRow("phone", brief, created_on=now, blocked_on=now, blocked_until=now + 1.2))
    found = store.get_block("phone", key)
    assert found.key == key and abs(found.blocked_until - (now + 3600)) < 0.01
    assert store.get_block("email", key) is None
    time.sleep(2.6)
    assert store.get_block("phone", brief) is None
    assert store.get_block("phone", key) is not None


def test_a_later_block_replaces_an_earlier_one(store):
    now = time.time()
    key = f"tok-{uuid.uuid4().hex}"
    store.block_key(BlockedRow("email", key, now, now, now + 60))
    store.block_key(BlockedRow("email", key, now + 1, now + 1, now + 7200))
    assert abs(store.get_block("email", key).blocked_until - (now + 7200)) < 0.01


def test_the_row_and_the_block_read_together_are_each_what_their_own_read_says(store):
    """get_otp_and_block (a generate's first read) answers exactly get_otp and get_block: any of the four."""
    now = time.time()
    neither, only_row, only_block, both = (f"tok-{uuid.uuid4().hex}" for _ in range(4))
    for key in (only_row, both):
        assert store.insert_otp(row(key=key, type="phone", send_count=4))
    for key in (only_block, both):
        store.block_key(BlockedRow("phone", key, created_on=now, blocked_on=now, blocked_until=now + 600))
    store.block_key(BlockedRow("email", only_row, created_on=now, blocked_on=now, blocked_until=now + 600))

    for key in (neither, only_row, only_block, both):
        found_row, found_block = store.get_otp_and_block("phone", key)
        alone_row, alone_block = store.get_otp("phone", key), store.get_block("phone", key)
        assert (found_row is None) == (alone_row is None) and (found_block is None) == (alone_block is None), key
        if alone_row is not None:
            assert same_fields(found_row, alone_row) and found_row.send_count == 4
        if alone_block is not None:
            assert found_block == alone_block
    assert store.get_otp_and_block("phone", only_row)[1] is None  # the email block is another key's
    assert store.get_otp_and_block("phone", neither) == (None, None)


def test_create_makes_a_new_row_and_answers_the_live_one_in_its_way_with_the_block(store):
    """create_otp (a generate's first step on a store that writes before it reads): the insert, then either nothing
    or the row that refused it, field for field as get_otp reads it, and in both cases the key's block."""
    now = time.time()
    first = row(type="phone", send_count=2, retry_count=1)
    assert store.create_otp(first) == (True, None, None)
    assert same_fields(store.get_otp("phone", first.key), first)

    created, existing, block = store.create_otp(row(key=first.key, type="phone", otp="g1.other"))
    assert not created and block is None
    assert same_fields(existing, store.get_otp("phone", first.key)) and existing.otp == "g1.cipher"
    assert existing.send_count == 2 and existing.retry_count == 1

    blocked = row(type="phone", otp=None, blocked_until=now + 3600, expires_in=3600)
    assert store.insert_otp(blocked)
    store.block_key(BlockedRow("phone", blocked.key, created_on=now, blocked_on=now, blocked_until=now + 3600))
    created, existing, block = store.create_otp(row(key=blocked.key, type="phone"))
    assert not created and existing.otp is None and abs(existing.blocked_until - blocked.blocked_until) < 0.002
    assert block == store.get_block("phone", blocked.key) and block is not None

    only_block = f"tok-{uuid.uuid4().hex}"
    store.block_key(BlockedRow("phone", only_block, created_on=now, blocked_on=now, blocked_until=now + 600))
    created, existing, block = store.create_otp(row(key=only_block, type="phone"))
    assert created and existing is None and block == store.get_block("phone", only_block)


def test_parallel_creates_make_exactly_one_row_and_the_rest_see_it(make_store):
    stores = [make_store() for _ in range(2)]
    key = f"tok-{uuid.uuid4().hex}"
    answers = []

    def create(i):
        answers.append(stores[i % 2].create_otp(row(key=key, otp=f"g1.c{i}")))

    threads = [threading.Thread(target=create, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(created for created, _, _ in answers) == [False] * 7 + [True]
    winner = store_row = stores[0].get_otp("email", key)
    assert all(same_fields(existing, store_row) for created, existing, _ in answers if not created), winner


def test_parallel_inserts_create_exactly_one_row(make_store):
    stores = [make_store() for _ in range(2)]
    template = row()
    results = []
    barrier = threading.Barrier(10)

    def insert(i):
        barrier.wait()
        results.append(stores[i % 2].insert_otp(template._replace(otp=f"writer-{i}")))

    threads = [threading.Thread(target=insert, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(True) == 1
    winner = stores[0].get_otp("email", template.key).otp
    assert winner.startswith("writer-")


def test_compare_and_set_counts_every_increment_exactly_once(make_store):
    stores = [make_store() for _ in range(2)]
    template = row()
    stores[0].insert_otp(template)
    applied = []
    barrier = threading.Barrier(20)

    def increment(i):
        store = stores[i % 2]
        barrier.wait()
        while True:
            current = store.get_otp("email", template.key)
            if store.update_otp(current._replace(retry_count=current.retry_count + 1,
                                        version=current.version + 1), current.version):
                applied.append(i)
                return

    threads = [threading.Thread(target=increment, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    final = stores[0].get_otp("email", template.key)
    assert sorted(applied) == list(range(20))
    assert final.retry_count == 20 and final.version == 21


def test_ping_answers(store):
    store.ping()


# -- the abuse limits' counters (take_counts, release_counts) ---------------------------------------------------------
def counter(limit: int = 5, seconds: int = 3600, name: str | None = None) -> Counter:
    start = math.floor(time.time() / seconds) * seconds
    return Counter(name or f"test:{uuid.uuid4().hex}", start, seconds, limit)


def peek(store, found: Counter) -> int:
    """A counter's count, read without counting (a limit of 0 only reads)."""
    taken = store.take_counts([found._replace(limit=0)])
    assert taken.refused == 0
    return taken.counts[0]


def test_a_counter_starts_at_zero_and_each_take_adds_one(store):
    fresh = counter()
    assert peek(store, fresh) == 0
    assert store.take_counts([fresh]) == Taken(None, (1,))
    assert store.take_counts([fresh]) == Taken(None, (2,))
    assert peek(store, fresh) == 2
    assert store.take_counts([]) == Taken(None, ())


def test_a_take_stops_at_the_limit_and_counts_nothing_past_it(store):
    capped = counter(limit=2)
    assert store.take_counts([capped]).refused is None
    assert store.take_counts([capped]).counts == (2,)
    for _ in range(3):
        assert store.take_counts([capped]) == Taken(0, (2,))
    assert peek(store, capped) == 2


def test_several_counters_are_taken_together_or_not_at_all(store):
    a, b, full = counter(limit=5), counter(limit=5), counter(limit=1)
    assert store.take_counts([a, b]) == Taken(None, (1, 1))
    assert store.take_counts([full]).refused is None
    refused = store.take_counts([a, full, b])
    assert refused.refused == 1 and refused.counts[1] == 1
    assert (peek(store, a), peek(store, b), peek(store, full)) == (1, 1, 1)  # a and b were left (or given back)
    assert store.take_counts([a, b]) == Taken(None, (2, 2))


def test_counters_of_one_name_in_another_window_are_separate(store):
    this = counter(seconds=60)
    later = this._replace(start=this.start + 60)
    store.take_counts([this])
    store.take_counts([this])
    assert store.take_counts([later]) == Taken(None, (1,))
    assert peek(store, this) == 2


def test_a_counter_is_gone_when_its_window_ends(store):
    start = time.time()
    brief = Counter(f"test:{uuid.uuid4().hex}", start, 1, 5)  # ends within a second (Cassandra: TTL 1 s)
    assert store.take_counts([brief]).counts == (1,)
    time.sleep(2.2)
    assert peek(store, brief) == 0
    assert store.take_counts([brief]).counts == (1,)  # an expired counter starts again


def test_release_gives_back_one_and_never_goes_below_zero(store):
    given, never = counter(), counter()
    for _ in range(3):
        store.take_counts([given])
    store.release_counts([given])
    assert peek(store, given) == 2
    store.release_counts([never])
    store.release_counts([never])
    assert peek(store, never) == 0
    assert store.take_counts([never]).counts == (1,)
    store.release_counts([])


def test_parallel_takes_from_two_stores_never_pass_the_limit(make_store):
    stores = [make_store() for _ in range(2)]
    shared, limit = counter(limit=7), 7
    results = []
    barrier = threading.Barrier(20)

    def take(i):
        barrier.wait()
        results.append(stores[i % 2].take_counts([shared]))

    threads = [threading.Thread(target=take, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    admitted = [r for r in results if r.refused is None]
    assert len(admitted) == limit
    assert sorted(r.counts[0] for r in admitted) == list(range(1, limit + 1))  # every count handed out once
    assert peek(stores[0], shared) == peek(stores[1], shared) == limit


def test_parallel_takes_and_releases_keep_the_count_exact(make_store):
    stores = [make_store() for _ in range(2)]
    shared = counter(limit=1000)
    barrier = threading.Barrier(12)

    def work(i):
        store = stores[i % 2]
        barrier.wait()
        for _ in range(3):
            store.take_counts([shared])
        if i % 3 == 0:
            store.release_counts([shared])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peek(stores[0], shared) == 12 * 3 - 4
