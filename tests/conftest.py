"""Fixtures: every API and contract test runs once per store kind (SQLite, and Cassandra: see cassandra_target)."""
from __future__ import annotations

import pytest

from otp_service.adapters.crypto import new_key
from otp_service.domain.contacts import ContactType
from otp_service.entrypoints.app import create_app

from .support import Api, FakeClock, RecordingChannel, settings_for

STORE_KINDS = ["sqlite", "cassandra"]
ENCRYPTION_KEY = new_key()


_target = None
_target_error: str | None = None


def pytest_report_header(config):
    from . import cassandra_target

    return f"cassandra-backed tests run against: {cassandra_target.describe_choice()}"


def pytest_terminal_summary(terminalreporter):
    if _target is not None:
        terminalreporter.write_line(f"cassandra-backed tests ran against: {_target.description}")
    elif _target_error is not None:
        terminalreporter.write_line(f"cassandra-backed tests did not run: no Cassandra: {_target_error}", red=True)
    else:
        terminalreporter.write_line("cassandra-backed tests: none ran in this session")
    # A test with a Cassandra of its own (test_cluster.py) says so through its user properties.
    for report in terminalreporter.stats.get("passed", []) + terminalreporter.stats.get("failed", []):
        properties = dict(getattr(report, "user_properties", ()))
        if getattr(report, "when", None) == "call" and "ran against" in properties:
            name = report.nodeid.split("::")[0]
            terminalreporter.write_line(f"{name} ran against: {properties['ran against']}")
            if "measured" in properties:
                terminalreporter.write_line(f"{name} measured: {properties['measured']}")


@pytest.fixture(scope="session")
def cassandra_target(tmp_path_factory):
    """The session's Cassandra: a given cluster, testcontainers, or a real node the suite starts (cassandra_target.py).
    If it cannot be had, every test that needs it errors with the reason; nothing else stands in for it."""
    global _target, _target_error
    from . import cassandra_target as chooser

    try:
        _target = chooser.start(tmp_path_factory.mktemp("cassandra"))
    except Exception as exc:
        _target_error = f"{type(exc).__name__}: {exc}"
        raise
    yield _target
    chooser.finish(_target)


@pytest.fixture(params=STORE_KINDS)
def store_kind(request) -> str:
    return request.param


@pytest.fixture
def make_store(store_kind, tmp_path, request):
    """A factory of fresh stores of this test's kind; all stores made in one test share one database."""
    made = []

    def factory():
        if store_kind == "sqlite":
            from otp_service.adapters.sqlite_store import SqliteStore

            store = SqliteStore(str(tmp_path / "otp.db"))
        else:
            target = request.getfixturevalue("cassandra_target")
            store = target.new_store()
        made.append(store)
        return store

    yield factory
    for store in made:
        store.close()


@pytest.fixture
def store(make_store):
    return make_store()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def channel() -> RecordingChannel:
    return RecordingChannel()


@pytest.fixture
def make_app(tmp_path, make_store, clock, channel):
    """create_app with test settings: env overrides as keyword arguments, e.g. OTP_MAX_SENDS="2"."""

    def factory(store=None, **env):
        settings = settings_for(
            {
                "OTP_SQLITE_PATH": str(tmp_path / "otp.db"),
                "OTP_ENCRYPTION_KEYS": ENCRYPTION_KEY,
                **env,
            }
        )
        return create_app(
            settings,
            store=store or make_store(),
            channels={ContactType.EMAIL: channel, ContactType.PHONE: channel},
            clock=clock,
        )

    return factory


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def api(app) -> Api:
    return Api(app.test_client())
