"""The HTTP user directory against a stand-in of Sunbird's user service on 127.0.0.1 (docs/user_directory.md)."""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace

import pytest

from otp_service.adapters.user_directory import (
    DirectorySettings,
    DirectoryUnavailable,
    HttpUserDirectory,
    UserContacts,
    build_directory,
)
from otp_service.config import ConfigError, EnvReader, Settings
from otp_service.domain.contacts import ContactType

from .standins.user_service import UserServiceStandIn

TOKEN = "user-service-token-42"
# A generous bound for "did not hang": far above the timeouts used below, far below the stand-in's own hang.
NO_HANG_BOUND = 5.0


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def standin():
    with UserServiceStandIn(token=TOKEN) as running:
        yield running


def settings_for(standin: UserServiceStandIn, **overrides) -> DirectorySettings:
    # 10 s: a stand-in on 127.0.0.1 can take over 0.5 s to answer on a loaded CI machine; the tests of a hanging
    # user service pass a short timeout of their own.
    base = DirectorySettings(base_url=standin.base_url, token=TOKEN, timeout=10.0, cache_ttl=0)
    return replace(base, **overrides)


@pytest.fixture
def directory(standin) -> HttpUserDirectory:
    return HttpUserDirectory(settings_for(standin))


# -- is the key in use ---------------------------------------------------------------------------------------------
def test_a_users_current_email_is_in_use_and_another_is_not(standin, directory):
    standin.add_user(email="Asha.Rao@Example.com")

    assert directory.key_in_use(ContactType.EMAIL, "asha.rao@example.com") is True
    assert directory.key_in_use(ContactType.EMAIL, "someone.else@example.com") is False


def test_a_users_phone_kept_without_country_code_is_in_use_in_e164(standin, directory):
    standin.add_user(phone="9876543210", countryCode="+91")

    assert directory.key_in_use(ContactType.PHONE, "+919876543210") is True
    assert directory.key_in_use(ContactType.PHONE, "+919876543211") is False


def test_exists_is_asked_with_the_value_encoded_in_one_segment_and_the_bearer_token(standin, directory):
    directory.key_in_use(ContactType.PHONE, "+919876543210")
    directory.key_in_use(ContactType.EMAIL, "a.b+tag@example.com")

    sent = standin.received()
    assert [r.path for r in sent] == [
        "/v1/user/exists/phone/%2B919876543210",
        "/v1/user/exists/email/a.b%2Btag%40example.com",
    ]
    assert all(r.headers.get("Authorization") == f"Bearer {TOKEN}" for r in sent)


def test_configured_paths_are_used(standin):
    standin.prefix = "/api/user"
    standin.add_user("u-1", email="p@example.com")
    directory = HttpUserDirectory(
        settings_for(
            standin,
            base_url=standin.root_url,
            exists_path="/api/user/v1/user/exists/{type}/{value}",
            read_path="/api/user/v1/user/read/{userId}",
        )
    )

    assert directory.key_in_use(ContactType.EMAIL, "p@example.com") is True
    assert directory.user_contacts("u-1") == UserContacts(emails=frozenset({"p@example.com"}))
    assert [r.path for r in standin.received()] == [
        "/api/user/v1/user/exists/email/p%40example.com",
        "/api/user/v1/user/read/u-1",
    ]


# -- a user's contacts ---------------------------------------------------------------------------------------------
def test_a_users_current_and_previously_used_contacts_are_read_and_normalised(standin, directory):
    user_id = standin.add_user(
        email=" Now@Example.com ",
        prevUsedEmail="Before@Example.com",
        phone="9876543210",
        countryCode="+91",
        prevUsedPhone="+44 7911 123456",
        maskedEmail="no***@example.com",
    )

    contacts = directory.user_contacts(user_id)

    assert contacts == UserContacts(
        emails=frozenset({"now@example.com", "before@example.com"}),
        phones=frozenset({"+919876543210", "+447911123456"}),
    )
    assert standin.received()[-1].path == f"/v1/user/read/{user_id}"


def test_empty_masked_and_unparseable_values_are_ignored(standin, directory):
    user_id = standin.add_user(
        email="us******@example.com",  # Sunbird masks contacts for some readers: a mask is not a contact
        prevUsedEmail="",
        phone="******3210",
        prevUsedPhone="not a phone",
        countryCode="+91",
    )

    assert directory.user_contacts(user_id) == UserContacts()


def test_a_list_of_previously_used_contacts_is_accepted(standin, directory):
    user_id = standin.add_user(prevUsedEmail=["one@example.com", "TWO@example.com", 7])

    assert directory.user_contacts(user_id).emails == {"one@example.com", "two@example.com"}


def test_a_phone_without_country_code_takes_the_users_country_then_the_default(standin):
    directory = HttpUserDirectory(settings_for(standin, default_region="US"))
    with_country = standin.add_user(phone="7911123456", countryCode="+44")
    without_country = standin.add_user(phone="2015550123")

    assert directory.user_contacts(with_country).phones == {"+447911123456"}
    assert directory.user_contacts(without_country).phones == {"+12015550123"}


def test_an_unknown_user_is_none(standin, directory):
    assert directory.user_contacts("no-such-user") is None


def test_a_deleted_user_is_unknown(standin, directory):
    user_id = standin.add_user(email="gone@example.com", isDeleted=True)

    assert directory.user_contacts(user_id) is None


def test_a_user_id_is_one_encoded_path_segment(standin, directory):
    assert directory.user_contacts("a/b c?d") is None
    assert standin.received()[-1].path == "/v1/user/read/a%2Fb%20c%3Fd"


def test_a_dot_segment_user_id_is_unknown_without_asking(standin, directory):
    assert directory.user_contacts("..") is None
    assert standin.received() == []


# -- the user service down, slow or confused -----------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["down", "garbage"])
def test_an_error_or_a_body_that_is_not_the_envelope_is_unavailable(standin, directory, mode):
    user_id = standin.add_user(email="x@example.com")
    standin.mode = mode

    with pytest.raises(DirectoryUnavailable):
        directory.key_in_use(ContactType.EMAIL, "x@example.com")
    with pytest.raises(DirectoryUnavailable):
        directory.user_contacts(user_id)


def test_a_wrong_token_is_unavailable_not_an_answer(standin):
    directory = HttpUserDirectory(settings_for(standin, token="wrong"))

    with pytest.raises(DirectoryUnavailable):
        directory.key_in_use(ContactType.EMAIL, "x@example.com")


def test_a_bare_404_is_unavailable_but_an_enveloped_not_found_is_an_unknown_user(standin):
    standin.mode = "bare-404"
    wrong_path = HttpUserDirectory(settings_for(standin, read_path="/v9/nowhere/{userId}"))
    with pytest.raises(DirectoryUnavailable):
        wrong_path.user_contacts("u-1")

    standin.mode = "ok"
    assert wrong_path.user_contacts("u-1") is None  # the envelope said RESOURCE_NOT_FOUND


def test_a_hanging_user_service_is_unavailable_within_the_timeout(standin):
    directory = HttpUserDirectory(settings_for(standin, timeout=0.2))
    standin.mode = "hang"

    started = time.monotonic()
    with pytest.raises(DirectoryUnavailable):
        directory.key_in_use(ContactType.EMAIL, "x@example.com")
    with pytest.raises(DirectoryUnavailable):
        directory.user_contacts("u-1")

    assert time.monotonic() - started < NO_HANG_BOUND


def test_a_refused_connection_is_unavailable():
    standin = UserServiceStandIn().start()
    url = standin.base_url
    standin.stop()  # nothing listens on the port now
    directory = HttpUserDirectory(DirectorySettings(base_url=url, timeout=10.0, cache_ttl=0))

    with pytest.raises(DirectoryUnavailable):
        directory.key_in_use(ContactType.PHONE, "+919876543210")


@pytest.mark.parametrize("mode", ["down", "garbage", "hang", "refused"])
def test_failures_and_logs_never_carry_the_plain_key(standin, caplog, mode):
    directory = HttpUserDirectory(settings_for(standin, timeout=0.2))
    caplog.set_level(logging.DEBUG, logger="otp_service")
    email, phone = "secret.person@example.com", "+919876543210"
    if mode == "refused":
        standin.stop()  # requests' own error text names the URL, and so the key
    else:
        standin.mode = mode

    failures = []
    for contact_type, key in ((ContactType.EMAIL, email), (ContactType.PHONE, phone)):
        with pytest.raises(DirectoryUnavailable) as caught:
            directory.key_in_use(contact_type, key)
        failures.append(caught.value)

    for failure in failures:
        text = str(failure) + repr(failure)
        assert "secret.person" not in text and "9876543210" not in text and "%40" not in text
    assert "secret.person" not in caplog.text and "9876543210" not in caplog.text


def test_answers_are_logged_masked(standin, directory, caplog):
    caplog.set_level(logging.DEBUG, logger="otp_service")
    user_id = standin.add_user(email="secret.person@example.com", phone="9876543210")

    directory.key_in_use(ContactType.EMAIL, "secret.person@example.com")
    directory.user_contacts(user_id)

    assert "s***@e***.com" in caplog.text
    assert "secret.person" not in caplog.text and "9876543210" not in caplog.text


# -- the cache -----------------------------------------------------------------------------------------------------
def test_answers_are_kept_for_the_ttl_both_yes_and_no(standin):
    clock = Clock()
    directory = HttpUserDirectory(settings_for(standin, cache_ttl=30, cache_size=100), clock=clock)
    user_id = standin.add_user(email="kept@example.com")

    for _ in range(3):
        assert directory.key_in_use(ContactType.EMAIL, "kept@example.com") is True
        assert directory.key_in_use(ContactType.EMAIL, "free@example.com") is False
        assert directory.user_contacts(user_id).emails == {"kept@example.com"}
        assert directory.user_contacts("no-such-user") is None
    assert len(standin.received()) == 4

    standin.add_user(email="free@example.com")
    clock.now += 29
    assert directory.key_in_use(ContactType.EMAIL, "free@example.com") is False  # still the kept answer
    clock.now += 2
    assert directory.key_in_use(ContactType.EMAIL, "free@example.com") is True
    assert len(standin.received()) == 5


def test_failures_are_not_kept(standin):
    directory = HttpUserDirectory(settings_for(standin, cache_ttl=30, cache_size=100), clock=Clock())
    standin.add_user(email="kept@example.com")
    standin.mode = "down"
    with pytest.raises(DirectoryUnavailable):
        directory.key_in_use(ContactType.EMAIL, "kept@example.com")

    standin.mode = "ok"
    assert directory.key_in_use(ContactType.EMAIL, "kept@example.com") is True


def test_the_cache_is_bounded_and_forgets_the_least_recently_used(standin):
    directory = HttpUserDirectory(settings_for(standin, cache_ttl=30, cache_size=2), clock=Clock())
    for key in ("a@example.com", "b@example.com", "c@example.com"):
        directory.key_in_use(ContactType.EMAIL, key)
    assert len(directory.cache) == 2

    directory.key_in_use(ContactType.EMAIL, "c@example.com")  # kept
    directory.key_in_use(ContactType.EMAIL, "a@example.com")  # forgotten: asked again
    assert [r.path.rsplit("/", 1)[-1] for r in standin.received()][3:] == ["a%40example.com"]


def test_ttl_zero_turns_the_cache_off(standin, directory):
    for _ in range(3):
        directory.key_in_use(ContactType.EMAIL, "x@example.com")

    assert len(standin.received()) == 3


def test_parallel_callers_get_the_right_answers(standin):
    directory = HttpUserDirectory(settings_for(standin, cache_ttl=30, cache_size=8))
    in_use = {f"user{i}@example.com" for i in range(0, 20, 2)}
    for email in in_use:
        standin.add_user(email=email)
    wrong: list[str] = []

    def ask():
        for i in range(20):
            email = f"user{i}@example.com"
            if directory.key_in_use(ContactType.EMAIL, email) != (email in in_use):
                wrong.append(email)

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(NO_HANG_BOUND)

    assert wrong == []
    assert len(directory.cache) <= 8


# -- configuration -------------------------------------------------------------------------------------------------
def from_env(**env) -> DirectorySettings:
    return DirectorySettings.from_env(EnvReader(env))


def test_without_a_url_the_directory_is_off():
    settings = from_env()

    assert settings.enabled is False
    assert build_directory(settings) is None
    assert build_directory(None) is None


def test_the_env_variables_are_read():
    settings = from_env(
        OTP_USER_SERVICE_URL="https://users.internal:9000/api/",
        OTP_USER_SERVICE_TOKEN="tok",
        OTP_USER_SERVICE_TIMEOUT_SECONDS="1.5",
        OTP_USER_SERVICE_EXISTS_PATH="/v2/user/exists/{type}/{value}",
        OTP_USER_SERVICE_READ_PATH="/private/user/v1/read/{userId}",
        OTP_USER_SERVICE_CACHE_TTL_SECONDS="0",
        OTP_USER_SERVICE_CACHE_SIZE="50",
        OTP_DEFAULT_COUNTRY_CODE="+44",
    )

    assert settings == DirectorySettings(
        base_url="https://users.internal:9000/api",
        token="tok",
        timeout=1.5,
        exists_path="/v2/user/exists/{type}/{value}",
        read_path="/private/user/v1/read/{userId}",
        cache_ttl=0,
        cache_size=50,
        default_region="GB",
    )
    assert "tok" not in repr(settings)
    assert isinstance(build_directory(settings), HttpUserDirectory)


def test_app_settings_carry_the_directory():
    settings = Settings.from_env({"OTP_USER_SERVICE_URL": "http://127.0.0.1:1"})

    assert settings.directory.base_url == "http://127.0.0.1:1"


@pytest.mark.parametrize(
    "name, value",
    [
        ("OTP_USER_SERVICE_URL", "ftp://users.internal"),
        ("OTP_USER_SERVICE_URL", "users.internal:8080"),
        ("OTP_USER_SERVICE_URL", "http://"),
        ("OTP_USER_SERVICE_URL", "http://user:secret@users.internal"),
        ("OTP_USER_SERVICE_URL", "http://users.internal/?a=b"),
        ("OTP_USER_SERVICE_URL", "http://users.internal:notaport"),
        ("OTP_USER_SERVICE_TIMEOUT_SECONDS", "soon"),
        ("OTP_USER_SERVICE_TIMEOUT_SECONDS", "0"),
        ("OTP_USER_SERVICE_TIMEOUT_SECONDS", "600"),
        ("OTP_USER_SERVICE_EXISTS_PATH", "/v1/user/exists/{value}"),
        ("OTP_USER_SERVICE_EXISTS_PATH", "v1/user/exists/{type}/{value}"),
        ("OTP_USER_SERVICE_EXISTS_PATH", "/v1/user/exists/{type}/{value}/{other}"),
        ("OTP_USER_SERVICE_READ_PATH", "/v1/user/read"),
        ("OTP_USER_SERVICE_READ_PATH", "/v1/user/read/{userId}?fields=all"),
        ("OTP_USER_SERVICE_CACHE_TTL_SECONDS", "-1"),
        ("OTP_USER_SERVICE_CACHE_SIZE", "many"),
    ],
)
def test_a_bad_value_stops_start_up_naming_the_variable(name, value):
    env = {"OTP_USER_SERVICE_URL": "http://users.internal", name: value}

    with pytest.raises(ConfigError, match=name):
        Settings.from_env(env)
