"""The send limit under parallel generates (SPEC generate rule 4; issue 15, part 1): "no generate, however concurrent,
issues a new code until the block ends".

The race: a generate reads "no row, no block" for a fresh key and stalls; meanwhile the others send the limit and
the next one blocks the key. The stalled request's INSERT ... IF NOT EXISTS then lands. When a block deleted the
row, that insert succeeded: a fifth send, a second code, and a code that verified after MAX_LIMIT_EXHAUSTED. Now the
block is a state of the row, so the insert finds the row and the request re-reads it and is refused.

One test replays that interleaving exactly (a store that holds one request after its first read); the others run
16 parallel generates on a fresh key for many rounds, from threads of two apps and from two processes, on both
stores. On a real Cassandra node (OTP_CASSANDRA_CONTACT_POINTS) the requests truly run at once.
"""
from __future__ import annotations

import multiprocessing
import threading
from collections import Counter

import pytest

from otp_service.domain.contacts import ContactType
from otp_service.entrypoints.app import create_app

from .conftest import ENCRYPTION_KEY
from .support import Api, RecordingChannel, settings_for, unique_email

MAX_SENDS = 4
PARALLEL = 16
ROUNDS = 40
RACE_ENV = {"OTP_RESEND_COOLDOWN_SECONDS": "0", "OTP_MAX_SENDS": str(MAX_SENDS)}
REFUSALS = {"MAX_LIMIT_EXHAUSTED", "KEY_BLOCKED"}


def _err(response) -> str:
    return response.get_json()["params"]["err"]


def _assert_round_kept_the_limit(errs: list[str], codes: list[str], api: Api, email: str) -> None:
    """What one round of parallel generates on a fresh key must end with, whatever the interleaving."""
    counted = Counter(errs)
    assert counted[""] == MAX_SENDS, f"{counted[''] } sends answered SUCCESS (the limit is {MAX_SENDS}): {counted}"
    assert set(counted) <= {""} | REFUSALS, counted
    assert len(codes) == MAX_SENDS, f"{len(codes)} messages delivered"
    assert len(set(codes)) == 1, "parallel sends of one window delivered more than one code"
    for code in set(codes):  # the block ended the code: none issued before it verifies
        assert _err(api.verify(email, code)) == "ERROR_INVALID_OTP"
    assert _err(api.generate(email)) == "KEY_BLOCKED"


# -- the interleaving, replayed --------------------------------------------------------------------------------------

class _HoldAfterFirstRead:
    """The real store, except that the first read made by the thread named `held` waits for `resume`; on a store that
    creates a new key's row before reading it, its create waits before it writes (it has decided to send a first
    code, as a read of "no row, no block" would have)."""

    def __init__(self, inner):
        self.inner = inner
        self.name = inner.name
        self.held: threading.Thread | None = None
        self.has_read = threading.Event()
        self.resume = threading.Event()

    def _maybe_hold(self):
        if threading.current_thread() is self.held and not self.has_read.is_set():
            self.has_read.set()
            assert self.resume.wait(30), "the test never resumed the held request"

    def get_otp(self, type_, key):
        found = self.inner.get_otp(type_, key)
        self._maybe_hold()
        return found

    def get_otp_and_block(self, type_, key):
        found = self.inner.get_otp_and_block(type_, key)
        self._maybe_hold()
        return found

    def create_otp(self, row):
        self._maybe_hold()
        return self.inner.create_otp(row)

    def __getattr__(self, name):  # everything else, as the real store does it
        return getattr(self.inner, name)


def test_a_generate_that_read_before_the_block_cannot_issue_a_code_after_it(make_app, make_store, channel):
    held_store = _HoldAfterFirstRead(make_store())
    stalled = Api(make_app(store=held_store, **RACE_ENV).test_client())
    others = Api(make_app(**RACE_ENV).test_client())
    email = unique_email()
    answer = {}
    request = threading.Thread(target=lambda: answer.update(err=_err(stalled.generate(email))))
    held_store.held = request
    request.start()
    try:
        assert held_store.has_read.wait(30), "the held request never read the store"
        # It has read "no row, no block". Now the window fills and the key is blocked.
        assert [_err(others.generate(email)) for _ in range(MAX_SENDS + 1)] == [""] * MAX_SENDS + [
            "MAX_LIMIT_EXHAUSTED"]
    finally:
        held_store.resume.set()
        request.join(30)
    assert answer["err"] == "KEY_BLOCKED", "a request that read before the block sent a code after it"
    assert len(channel.codes_for(email)) == MAX_SENDS
    _assert_round_kept_the_limit([""] * MAX_SENDS, channel.codes_for(email), others, email)


class _NoBlockedKeysTable:
    """The real store with its blocked-keys table hidden: only the otp row can refuse a blocked key."""

    def __init__(self, inner):
        self.inner = inner
        self.name = inner.name

    def get_block(self, type_, key):
        return None

    def get_otp_and_block(self, type_, key):
        return self.inner.get_otp(type_, key), None

    def create_otp(self, row):
        return (*self.inner.create_otp(row)[:2], None)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_a_row_found_under_an_older_key_is_blocked_in_place_and_alone_holds_the_block(make_app, make_store, channel):
    """Key rotation: sends made under the old encryption key leave the row under the old lookup token; the block
    is written into that row, no new row appears under the new token, and the row alone refuses the key (an app
    with an empty lockout cache that cannot see the blocked-keys table)."""
    from otp_service.adapters.crypto import KeyRing, new_key

    old, new = ENCRYPTION_KEY, new_key()
    email = unique_email()
    before = Api(make_app(**RACE_ENV).test_client())
    assert [_err(before.generate(email)) for _ in range(MAX_SENDS)] == [""] * MAX_SENDS
    code = channel.last_code(email)
    rotated = Api(make_app(OTP_ENCRYPTION_KEYS=f"{new},{old}", **RACE_ENV).test_client())
    assert _err(rotated.generate(email)) == "MAX_LIMIT_EXHAUSTED"

    store = make_store()
    new_token, old_token = KeyRing([new, old]).lookup_tokens("email", email)
    blocked = store.get_otp("email", old_token)
    assert blocked is not None and blocked.blocked_until is not None and blocked.otp is None
    assert store.get_otp("email", new_token) is None
    only_rows = Api(make_app(store=_NoBlockedKeysTable(make_store()), OTP_ENCRYPTION_KEYS=f"{new},{old}",
                             **RACE_ENV).test_client())
    assert _err(only_rows.generate(email)) == "KEY_BLOCKED"
    assert _err(only_rows.verify(email, code)) == "ERROR_INVALID_OTP"
    assert len(channel.codes_for(email)) == MAX_SENDS


# -- many rounds, threads of two apps --------------------------------------------------------------------------------

def _parallel_generates(apis: list[Api], email: str, count: int) -> list[str]:
    """`count` generates of `email`, from threads released at once, spread over `apis`; their err codes."""
    barrier = threading.Barrier(count)
    errs: list[str] = [""] * count

    def run(i: int) -> None:
        api = apis[i % len(apis)]
        barrier.wait()
        errs[i] = _err(api.generate(email))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return errs


@pytest.mark.slow
class _WritesFirst:
    """The real store, saying it would rather create a key's row before reading it (Store.insert_first): the
    service's create_otp path, off by default on both stores (see CassandraStore.insert_first)."""

    insert_first = True

    def __init__(self, inner):
        self.inner = inner
        self.name = inner.name

    def __getattr__(self, name):
        return getattr(self.inner, name)


@pytest.mark.parametrize("writes_first", [False, True], ids=["reads-first", "writes-first"])
def test_16_parallel_generates_from_two_apps_never_exceed_the_send_limit(make_app, make_store, channel, writes_first):
    apis = [Api(make_app(store=_WritesFirst(make_store()) if writes_first else None, **RACE_ENV).test_client())
            for _ in range(2)]
    for _ in range(ROUNDS):
        email = unique_email()
        errs = _parallel_generates(apis, email, PARALLEL)
        _assert_round_kept_the_limit(errs, channel.codes_for(email), apis[0], email)


# -- many rounds, two processes --------------------------------------------------------------------------------------

def _process_worker(store_config: dict, encryption_key: str, emails: list[str], threads: int, start, results) -> None:
    """A second 'worker': its own app and store connection, `threads` generates per round, rounds in step with the
    other process through `start` (a barrier shared by both processes). The encryption key is passed: this
    interpreter's conftest would make a new one, and so other lookup tokens."""
    if store_config["kind"] == "sqlite":
        from otp_service.adapters.sqlite_store import SqliteStore

        store = SqliteStore(store_config["path"])
    else:
        from otp_service.adapters.cassandra_store import CassandraStore

        store = CassandraStore(store_config["settings"], keyspace=store_config["keyspace"])
    channel = RecordingChannel()
    app = create_app(
        settings_for({"OTP_SQLITE_PATH": store_config.get("path", ":memory:"), "OTP_ENCRYPTION_KEYS": encryption_key,
                      **RACE_ENV}),
        store=store,
        channels={ContactType.EMAIL: channel, ContactType.PHONE: channel},
    )
    apis = [Api(app.test_client())]
    apis[0].client.get("/health")  # connect before the first round
    try:
        for email in emails:
            start.wait(60)
            errs = _parallel_generates(apis, email, threads)
            results.put((email, errs, channel.codes_for(email)))
    finally:
        store.close()


@pytest.mark.slow
def test_16_parallel_generates_from_two_processes_never_exceed_the_send_limit(make_app, store_kind, tmp_path,
                                                                              request, channel):
    if store_kind == "sqlite":
        config = {"kind": "sqlite", "path": str(tmp_path / "otp.db")}
    else:
        target = request.getfixturevalue("cassandra_target")
        config = {"kind": "cassandra", "settings": target.settings, "keyspace": target.keyspace}
    api = Api(make_app(**RACE_ENV).test_client())  # the same database, for the checks after the rounds
    emails = [unique_email() for _ in range(ROUNDS)]
    ctx = multiprocessing.get_context("spawn")  # a fresh interpreter: no thread or connection of this one's
    start, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_process_worker, args=(config, ENCRYPTION_KEY, emails, PARALLEL // 2, start, results))
             for _ in range(2)]
    for p in procs:
        p.start()
    try:
        by_email: dict[str, tuple[list[str], list[str]]] = {email: ([], []) for email in emails}
        for _ in range(2 * ROUNDS):
            email, errs, codes = results.get(timeout=120)
            by_email[email][0].extend(errs)
            by_email[email][1].extend(codes)
    finally:
        for p in procs:
            p.join(60)
            if p.is_alive():
                p.kill()
    for email in emails:
        errs, codes = by_email[email]
        _assert_round_kept_the_limit(errs, codes, api, email)
