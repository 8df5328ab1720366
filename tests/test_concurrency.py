"""The contract's concurrency promises: with M allowed attempts no number of parallel wrong guesses gets more than
M checks, and parallel right answers succeed at most once. Threads on every store; processes on SQLite."""
from __future__ import annotations

import multiprocessing
import threading
from collections import Counter

import pytest

from otp_service.domain.contacts import ContactType
from otp_service.entrypoints.app import create_app

from .conftest import ENCRYPTION_KEY
from .support import Api, RecordingChannel, settings_for, unique_email, wrong_code


def _race(app_factory, calls):
    """Run each call in its own thread, all released at once; returns (status, err, result) per call."""
    barrier = threading.Barrier(len(calls))
    outcomes = [None] * len(calls)

    def run(i, call):
        api = Api(app_factory().test_client())
        barrier.wait()
        body = call(api).get_json()
        outcomes[i] = (body["params"]["err"], body["result"].get("remainingAttempt"))

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outcomes


@pytest.fixture
def two_apps(make_app):
    """Two app instances on one database: two 'workers'."""
    apps = [make_app(), make_app()]
    turn = iter(range(10**6))
    return lambda: apps[next(turn) % 2]


def test_20_parallel_wrong_guesses_get_exactly_3_checks(api, channel, two_apps):
    email = unique_email()
    api.generate(email)
    bad = wrong_code(channel.last_code(email))
    outcomes = _race(two_apps, [lambda a: a.verify(email, bad)] * 20)
    checked = [o for o in outcomes if o[0] == "OTP_VERIFICATION_FAILED"]
    assert sorted(r for _, r in checked) == [0, 1, 2]
    assert Counter(err for err, _ in outcomes)["ERROR_INVALID_OTP"] == 17


def test_10_parallel_right_answers_succeed_exactly_once(api, channel, two_apps):
    email = unique_email()
    api.generate(email)
    code = channel.last_code(email)
    outcomes = _race(two_apps, [lambda a: a.verify(email, code)] * 10)
    assert Counter(err for err, _ in outcomes) == {"": 1, "ERROR_INVALID_OTP": 9}


def test_parallel_generates_count_every_send(make_app, channel, clock):
    apps = [make_app(OTP_RESEND_COOLDOWN_SECONDS="0", OTP_MAX_SENDS="5") for _ in range(2)]
    email = unique_email()
    turn = iter(range(100))
    outcomes = _race(lambda: apps[next(turn) % 2], [lambda a: a.generate(email)] * 8)
    errs = Counter(err for err, _ in outcomes)
    assert errs[""] == 5 and errs["MAX_LIMIT_EXHAUSTED"] + errs["KEY_BLOCKED"] == 3
    assert len(set(channel.codes_for(email))) == 1  # parallel first sends share one code


# -- across processes, on SQLite ----------------------------------------------------------------------------------

def _worker(db_path, email, offered, copies, queue):
    app = create_app(
        settings_for({"OTP_SQLITE_PATH": db_path, "OTP_ENCRYPTION_KEYS": ENCRYPTION_KEY}),
        channels={ContactType.EMAIL: RecordingChannel(), ContactType.PHONE: RecordingChannel()},
    )
    barrier = threading.Barrier(copies)
    errs = []

    def run():
        api = Api(app.test_client())
        barrier.wait()
        errs.append(api.verify(email, offered).get_json()["params"]["err"])

    threads = [threading.Thread(target=run) for _ in range(copies)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    queue.put(errs)


def _in_two_processes(db_path, email, offered, per_process):
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(db_path, email, offered, per_process, queue)) for _ in range(2)]
    for p in procs:
        p.start()
    errs = queue.get(timeout=60) + queue.get(timeout=60)
    for p in procs:
        p.join(timeout=30)
    return Counter(errs)


@pytest.mark.parametrize("store_kind", ["sqlite"], indirect=True)
def test_wrong_guesses_from_two_processes_get_exactly_3_checks(api, channel, tmp_path):
    email = unique_email()
    api.generate(email)
    errs = _in_two_processes(str(tmp_path / "otp.db"), email, wrong_code(channel.last_code(email)), 10)
    assert errs == {"OTP_VERIFICATION_FAILED": 3, "ERROR_INVALID_OTP": 17}


@pytest.mark.parametrize("store_kind", ["sqlite"], indirect=True)
def test_right_answers_from_two_processes_succeed_exactly_once(api, channel, tmp_path):
    email = unique_email()
    api.generate(email)
    errs = _in_two_processes(str(tmp_path / "otp.db"), email, channel.last_code(email), 5)
    assert errs == {"": 1, "ERROR_INVALID_OTP": 9}
