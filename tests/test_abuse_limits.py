"""The abuse limits (issue 19; docs/api.md, "Abuse limits"): per client address, per number range and mail domain,
where SMS may go, a budget per channel, one counted form per mailbox. Every API test runs on both stores."""
from __future__ import annotations

import ipaddress
import logging
import math
import uuid

import pytest

from otp_service.adapters.crypto import new_key
from otp_service.domain import abuse
from otp_service.domain.contacts import normalise_email

from .support import AUTH, unique_email, wrong_code
from .test_metrics import scrape, total

ONE_HOUR = "3600"


@pytest.fixture(autouse=True)
def _at_the_start_of_an_hour(clock):
    """Windows are aligned to multiples of their length, so a test that moves the clock on within one must not start
    near its end: two of these failed when started at hh:59:40, their 31 s step crossing into the next hour. The
    clock starts 1 s into the next hour instead (ahead of real time, never behind it: Cassandra's TTLs count from
    real time)."""
    clock.now = (math.floor(clock.now / 3600) + 1) * 3600 + 1


@pytest.fixture
def make_app(make_app):
    """Apps of this test, with an encryption key of their own: the counters' names are keyed hashes, so the tests
    that share one Cassandra keyspace (and the same addresses, or one budget) count apart."""
    key = new_key()
    return lambda store=None, **env: make_app(store=store, **{"OTP_ENCRYPTION_KEYS": key, **env})


class Client:
    """The gateway's two calls from one client address (REMOTE_ADDR), optionally through a proxy."""

    def __init__(self, app, address: str = "203.0.113.7", forwarded_for: str | None = None):
        self.http = app.test_client()
        self.environ = {"REMOTE_ADDR": address}
        self.headers = dict(AUTH)
        if forwarded_for is not None:
            self.headers["X-Forwarded-For"] = forwarded_for

    def generate(self, key: str, type_: str = "email"):
        body = {"request": {"key": key, "type": type_}}
        return self.http.post("/v1/otp/generate", json=body, headers=self.headers, environ_base=self.environ)

    def verify(self, key: str, otp: str, type_: str = "email"):
        body = {"request": {"key": key, "type": type_, "otp": otp}}
        return self.http.post("/v1/otp/verify", json=body, headers=self.headers, environ_base=self.environ)


def err(response) -> str:
    return response.get_json()["params"]["err"]


def indian_mobile(range_: str = "98765") -> str:
    """A valid Indian mobile number in the range +91 <range_>."""
    return f"+91{range_}{uuid.uuid4().int % 10 ** (10 - len(range_)):0{10 - len(range_)}d}"


def assert_rate_limited(response, unit: str, retry_after: int | None = None):
    assert response.status_code == 429, response.get_json()
    body = response.get_json()
    assert body["params"]["err"] == "ERROR_RATE_LIMIT_EXCEEDED"
    assert body["params"]["errmsg"] == f"Your per {unit} rate limit has exceeded. You can retry after some time."
    assert body["responseCode"] == "TOO_MANY_REQUESTS" and body["result"] == {}
    seconds = int(response.headers["Retry-After"])
    assert 1 <= seconds <= 86400
    if retry_after is not None:
        assert seconds == retry_after


# -- the client's address (pure) --------------------------------------------------------------------------------------
PROXIES = abuse.parse_networks(["10.0.0.0/8", "2001:db8:ffff::/48"])


@pytest.mark.parametrize(
    "peer, forwarded, client",
    [
        ("203.0.113.7", None, "203.0.113.7"),  # no proxy: the peer
        ("203.0.113.7", "198.51.100.1", "203.0.113.7"),  # a forwarded header from anyone else is ignored
        ("10.0.0.5", "198.51.100.1", "198.51.100.1"),  # through the gateway
        ("10.0.0.5", "6.6.6.6, 198.51.100.1, 10.1.1.1", "198.51.100.1"),  # rightmost address not a trusted proxy
        ("10.0.0.5", "10.9.9.9, 10.1.1.1", "10.9.9.9"),  # every hop trusted: the leftmost
        ("10.0.0.5", "198.51.100.1, not-an-address", "10.0.0.5"),  # a malformed hop stops at the proxy that sent it
        ("10.0.0.5", None, "10.0.0.5"),
        ("::ffff:203.0.113.7", None, "203.0.113.7"),  # IPv4-mapped IPv6 is the IPv4 address
        ("2001:db8:1:2:3:4:5:6", None, "2001:db8:1:2::/64"),  # IPv6 clients count per /64
        ("2001:db8:ffff::1", "[2001:db8:7::9]", "2001:db8:7::/64"),
        (None, "198.51.100.1", "unknown"),
    ],
)
def test_the_client_is_the_peer_or_what_a_trusted_proxy_forwarded(peer, forwarded, client):
    assert abuse.client_address(peer, forwarded, PROXIES) == client


def test_without_trusted_proxies_the_forwarded_header_is_never_read():
    assert abuse.client_address("10.0.0.5", "198.51.100.1", ()) == "10.0.0.5"
    assert isinstance(PROXIES[0], ipaddress.IPv4Network)


# -- one mailbox, one counted form (pure) -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "spelling",
    ["victim@gmail.com", "Victim@Gmail.com", "v.i.c.t.i.m@gmail.com", "victim+otp@gmail.com",
     "vic.tim+a+b@googlemail.com", "ｖictim@gmail.com", "vıctim@gmail.com"],
)
def test_every_spelling_of_one_gmail_mailbox_counts_as_it(spelling):
    assert abuse.canonical_email(normalise_email(spelling)) == "victim@gmail.com"


def test_other_domains_keep_their_dots_and_lose_their_tags_and_accents():
    assert abuse.canonical_email("first.last+news@example.org") == "first.last@example.org"
    assert abuse.canonical_email("josé@example.org") == "jose@example.org"
    assert abuse.canonical_email("+only@example.org") == "+only@example.org"  # no name left: as it is
    assert abuse.canonical_email("олег@mail.ru") == "олег@mail.ru"  # one script: a mailbox of its own


@pytest.mark.parametrize("lookalike", ["vіctim@gmail.com", "pаypal@example.com"])  # Cyrillic і, а
def test_a_local_part_that_mixes_scripts_is_refused(make_app, lookalike):
    client = Client(make_app())
    response = client.generate(lookalike)
    assert response.status_code == 400 and err(response) == "INVALID_EMAIL"


def test_the_send_window_counts_one_mailbox_however_it_is_spelt(make_app, channel, clock):
    """Four sends to one Gmail mailbox in four spellings, then the fifth is MAX_LIMIT_EXHAUSTED; each message went
    to the address as it was given."""
    client = Client(make_app(OTP_RESEND_COOLDOWN_SECONDS="0"))
    spellings = ["Name.Surname@gmail.com", "namesurname+a@gmail.com", "n.a.m.e.surname@googlemail.com",
                 "ｎamesurname@gmail.com"]
    tag = uuid.uuid4().hex[:6]
    spellings = [s.replace("surname", f"surname{tag}").replace("Surname", f"Surname{tag}") for s in spellings]
    for spelling in spellings:
        assert client.generate(spelling).status_code == 200
    delivered = [m.contact.key for m in channel.sent]
    assert delivered == [normalise_email(s) for s in spellings]
    assert len({m.code for m in channel.sent}) == 1  # one mailbox, one live code: the later sends were resends
    assert err(client.generate(f"namesurname{tag}+zzz@gmail.com")) == "MAX_LIMIT_EXHAUSTED"
    # The code verifies under any spelling of the mailbox.
    assert client.verify(f"name.surname{tag}@gmail.com", channel.sent[0].code).status_code == 400  # blocked: gone


def test_a_code_sent_to_one_spelling_verifies_under_another(make_app, channel):
    client = Client(make_app())
    tag = uuid.uuid4().hex[:6]
    assert client.generate(f"first.last{tag}@gmail.com").status_code == 200
    code = channel.sent[-1].code
    assert client.verify(f"firstlast{tag}+x@googlemail.com", wrong_code(code)).status_code == 400
    assert client.verify(f"FirstLast{tag}@gmail.com", code).status_code == 200


# -- where SMS may go -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "number, env",
    [
        ("+1 415 555 2671", {}),  # default: the default country (IN) only
        ("+44 7911 123456", {}),
        ("+252 61 1234567", {}),  # Somalia
        ("+881 2 12345678", {"OTP_SMS_ALLOWED_COUNTRIES": "*"}),  # non-geographic: only when 001 is listed
        ("+883 510012345", {"OTP_SMS_ALLOWED_COUNTRIES": "*"}),
        ("+1 900 200 0000", {"OTP_SMS_ALLOWED_COUNTRIES": "US,IN"}),  # premium rate
        ("+44 909 8790000", {"OTP_SMS_ALLOWED_COUNTRIES": "GB,IN"}),  # premium rate
        ("1-800-FLOWERS", {}),  # toll free (+91 1800 ... with the default country)
        ("+1-800-FLOWERS", {"OTP_SMS_ALLOWED_COUNTRIES": "US,IN"}),  # toll free
        ("+91 11 2345 6789", {}),  # a fixed line, certainly: New Delhi
        ("+252 61 1234567", {"OTP_SMS_ALLOWED_COUNTRIES": "*", "OTP_SMS_DENIED_PREFIXES": "+252"}),
        ("+91 98765 43210", {"OTP_SMS_DENIED_PREFIXES": "+91 98765"}),
    ],
)
def test_sms_to_a_destination_not_allowed_is_refused_before_anything_is_counted(make_app, channel, number, env):
    app = make_app(OTP_SMS_ALLOWED_COUNTRIES=env.get("OTP_SMS_ALLOWED_COUNTRIES", "IN"),
                   OTP_SMS_DENIED_NUMBER_TYPES="", OTP_SMS_DENIED_PREFIXES=env.get("OTP_SMS_DENIED_PREFIXES", ""),
                   OTP_IP_SEND_LIMIT="1", OTP_IP_SEND_WINDOW_SECONDS=ONE_HOUR)
    client = Client(app)
    response = client.generate(number, type_="phone")
    assert response.status_code == 400
    body = response.get_json()
    assert body["params"]["err"] == "DESTINATION_NOT_ALLOWED"
    assert body["params"]["errmsg"] == "SMS to this destination is not supported."
    assert channel.sent == []
    assert client.generate(indian_mobile("98111"), type_="phone").status_code == 200  # the address's 1 was unspent
    assert total(scrape(client.http), "otp_abuse_refusals_total", limit="destination") == 1


def test_allowed_destinations_and_the_switches_that_open_them(make_app):
    allowed = Client(make_app(OTP_SMS_ALLOWED_COUNTRIES="US,001", OTP_SMS_DENIED_NUMBER_TYPES="none"))
    for number in ("+1 415 555 2671", "+1 900 200 0000", "+881 2 12345678"):
        assert allowed.generate(number, type_="phone").status_code == 200, number
    default = Client(make_app(OTP_SMS_ALLOWED_COUNTRIES="", OTP_SMS_DENIED_NUMBER_TYPES=""))  # the defaults
    assert default.generate(indian_mobile(), type_="phone").status_code == 200
    assert err(default.generate("+91 11 2345 6789", type_="phone")) == "DESTINATION_NOT_ALLOWED"
    assert default.generate(unique_email()).status_code == 200  # email goes anywhere


# -- per client address -----------------------------------------------------------------------------------------------
def test_generates_per_client_address_are_limited_and_every_key_gets_the_same_answer(make_app, clock, channel):
    app = make_app(OTP_IP_SEND_LIMIT="3", OTP_IP_SEND_WINDOW_SECONDS=ONE_HOUR)
    client, other = Client(app), Client(app, "198.51.100.20")
    known = unique_email()
    for key in (known, unique_email(), unique_email()):
        assert client.generate(key).status_code == 200
    clock.advance(31)
    answers = [client.generate(known), client.generate(unique_email()), client.generate(indian_mobile(), "phone")]
    left = 3600 - clock() % 3600
    for response in answers:
        assert_rate_limited(response, "hour")
        assert abs(int(response.headers["Retry-After"]) - left) <= 1
    # The same answer whatever the key: one with a live code, one never seen, a phone.
    assert len({(r.status_code, r.headers["Retry-After"], r.get_data().split(b'"ts"')[0],
                 str({k: v for k, v in r.get_json().items() if k not in ("ts", "params")}),
                 r.get_json()["params"]["errmsg"]) for r in answers}) == 1
    assert len(channel.sent) == 3
    assert other.generate(unique_email()).status_code == 200  # another address has its own limit
    clock.advance(left + 1)  # the next window
    assert client.generate(unique_email()).status_code == 200


def test_a_request_refused_by_a_limit_changes_nothing_of_the_key(make_app, clock, channel):
    app = make_app(OTP_IP_SEND_LIMIT="2", OTP_IP_SEND_WINDOW_SECONDS=ONE_HOUR, OTP_MAX_SENDS="2")
    client, other = Client(app), Client(app, "198.51.100.21")
    key = unique_email()
    assert client.generate(key).status_code == 200
    assert client.generate(unique_email()).status_code == 200
    clock.advance(31)
    for _ in range(3):
        assert client.generate(key).status_code == 429  # not counted as sends to the key
    assert other.generate(key).status_code == 200  # the key's 2nd send: a resend of the same code
    assert channel.codes_for(key)[0] == channel.codes_for(key)[1]
    clock.advance(31)
    assert err(other.generate(key)) == "MAX_LIMIT_EXHAUSTED"


def test_verifies_per_client_address_are_limited(make_app, channel):
    app = make_app(OTP_IP_VERIFY_LIMIT="3", OTP_IP_VERIFY_WINDOW_SECONDS="60")
    client, other = Client(app), Client(app, "198.51.100.22")
    keys = [unique_email() for _ in range(3)]
    for key in keys:
        assert other.generate(key).status_code == 200
    for key in keys:  # three guesses against three keys: spraying
        assert err(client.verify(key, wrong_code(channel.last_code(key)))) == "OTP_VERIFICATION_FAILED"
    for key in (keys[0], unique_email()):
        assert_rate_limited(client.verify(key, channel.last_code(keys[0])), "minute")
    assert other.verify(keys[0], channel.last_code(keys[0])).status_code == 200  # no attempt was spent


def test_the_forwarded_address_counts_only_through_a_trusted_proxy(make_app):
    app = make_app(OTP_IP_SEND_LIMIT="1", OTP_TRUSTED_PROXIES="10.0.0.0/8")
    via_gateway = [Client(app, "10.0.0.5", forwarded_for=f"198.51.100.{n}") for n in (1, 2)]
    assert via_gateway[0].generate(unique_email()).status_code == 200
    assert via_gateway[1].generate(unique_email()).status_code == 200  # two clients behind one gateway
    assert via_gateway[0].generate(unique_email()).status_code == 429
    spoofing = Client(app, "203.0.113.50", forwarded_for="198.51.100.99")  # not a trusted proxy: header ignored
    assert spoofing.generate(unique_email()).status_code == 200
    assert Client(app, "203.0.113.50", forwarded_for="198.51.100.100").generate(unique_email()).status_code == 429


# -- per number range and mail domain ---------------------------------------------------------------------------------
def test_generates_to_one_number_range_are_limited(make_app, channel):
    app = make_app(OTP_PREFIX_SEND_LIMIT="2", OTP_PREFIX_SEND_WINDOW_SECONDS="86400", OTP_SMS_ALLOWED_COUNTRIES="IN")
    clients = [Client(app, f"198.51.100.{n}") for n in range(1, 5)]  # a bot on many addresses
    range_ = f"9{uuid.uuid4().int % 10000:04d}"
    assert clients[0].generate(indian_mobile(range_), type_="phone").status_code == 200
    assert clients[1].generate(indian_mobile(range_), type_="phone").status_code == 200
    assert_rate_limited(clients[2].generate(indian_mobile(range_), type_="phone"), "day")
    assert clients[3].generate(indian_mobile(f"8{range_[1:]}"), type_="phone").status_code == 200  # another range
    assert len(channel.sent) == 3
    assert total(scrape(clients[0].http), "otp_abuse_refusals_total", limit="prefix_send") == 1


def test_generates_to_one_mail_domain_are_limited_but_large_providers_are_exempt(make_app):
    app = make_app(OTP_EMAIL_DOMAIN_SEND_LIMIT="2", OTP_EMAIL_DOMAIN_EXEMPT="")
    clients = [Client(app, f"198.51.100.{n}") for n in range(1, 8)]
    domain = f"corp{uuid.uuid4().hex[:6]}.example"
    assert clients[0].generate(f"a@{domain}").status_code == 200
    assert clients[1].generate(f"b@{domain}").status_code == 200
    assert_rate_limited(clients[2].generate(f"c@{domain.upper()}"), "hour")
    for n, client in enumerate(clients[3:]):
        assert client.generate(f"user{uuid.uuid4().hex[:8]}{n}@gmail.com").status_code == 200


# -- the budget per channel -------------------------------------------------------------------------------------------
def test_the_sms_budget_stops_every_send_and_tells_operators(make_app, channel, caplog):
    app = make_app(OTP_SMS_BUDGET_PER_MINUTE="2")
    clients = [Client(app, f"198.51.100.{n}") for n in range(1, 5)]
    assert clients[0].generate(indian_mobile(), type_="phone").status_code == 200
    assert clients[1].generate(indian_mobile(), type_="phone").status_code == 200
    with caplog.at_level(logging.WARNING, logger="otp_service.limits"):
        assert_rate_limited(clients[2].generate(indian_mobile(), type_="phone"), "minute")
    assert any("sms_budget_minute exhausted" in r.getMessage() for r in caplog.records)
    assert clients[3].generate(unique_email()).status_code == 200  # email has its own budget
    assert len(channel.sent) == 3
    found = scrape(clients[0].http)
    assert total(found, "otp_abuse_refusals_total", limit="sms_budget_minute") == 1
    assert total(found, "otp_budget_used", channel="sms", period="minute") == 2
    assert total(found, "otp_budget_limit", channel="sms", period="minute") == 2
    for line in clients[0].http.get("/metrics").get_data(as_text=True).splitlines():  # labels: never an address,
        assert "198.51.100" not in line and "+91" not in line and "@" not in line  # a key or a range


def test_a_generate_the_per_key_rules_refuse_spends_no_budget(make_app, channel):
    app = make_app(OTP_EMAIL_BUDGET_PER_DAY="2")
    client = Client(app)
    key = unique_email()
    assert client.generate(key).status_code == 200
    for _ in range(3):
        assert client.generate(key).status_code == 429  # the resend cool-down: nothing sent
    assert client.generate(unique_email()).status_code == 200  # the budget's 2nd message
    assert_rate_limited(client.generate(unique_email()), "day")
    assert total(scrape(client.http), "otp_budget_used", channel="email", period="day") == 2


def test_a_failed_delivery_keeps_its_budget_spent(make_app, channel):
    from otp_service.adapters.notifications import DeliveryError

    client = Client(make_app(OTP_EMAIL_BUDGET_PER_MINUTE="1"))
    channel.failure = DeliveryError("recording", "down", provider_code=1)
    assert err(client.generate(unique_email())) == "DELIVERY_FAILED"  # the provider may have billed it
    channel.failure = None
    assert_rate_limited(client.generate(unique_email()), "minute")


def test_checks_refused_early_spend_nothing_of_the_later_ones(make_app, channel):
    app = make_app(OTP_IP_SEND_LIMIT="1", OTP_PREFIX_SEND_LIMIT="2", OTP_SMS_BUDGET_PER_DAY="2")
    client, second, third = Client(app), Client(app, "198.51.100.30"), Client(app, "198.51.100.31")
    range_ = f"9{uuid.uuid4().int % 10000:04d}"
    assert client.generate(indian_mobile(range_), type_="phone").status_code == 200
    for _ in range(3):  # over the address's limit: neither the range nor the budget is spent
        assert client.generate(indian_mobile(range_), type_="phone").status_code == 429
    assert second.generate(indian_mobile(range_), type_="phone").status_code == 200
    assert third.generate(indian_mobile(), type_="phone").status_code == 429  # now the budget (2 of 2) refuses
    assert len(channel.sent) == 2


# -- two instances, one store -----------------------------------------------------------------------------------------
def test_two_app_instances_on_one_store_share_every_limit(make_app, make_store, channel):
    env = dict(OTP_IP_SEND_LIMIT="3", OTP_PREFIX_SEND_LIMIT="100", OTP_SMS_BUDGET_PER_MINUTE="5")
    first, second = make_app(store=make_store(), **env), make_app(store=make_store(), **env)
    a, b = Client(first), Client(second)
    assert a.generate(unique_email()).status_code == 200
    assert b.generate(unique_email()).status_code == 200
    assert a.generate(indian_mobile(), type_="phone").status_code == 200
    assert b.generate(unique_email()).status_code == 429  # the address's 3 were spent across both
    assert a.generate(unique_email()).status_code == 429
    phones = [Client(app, f"198.51.100.{n}") for n, app in enumerate((first, second) * 3, start=40)]
    answers = [c.generate(indian_mobile(), type_="phone").status_code for c in phones]
    assert answers == [200, 200, 200, 200, 429, 429]  # one SMS budget: 1 + 4 of 5


def test_parallel_generates_from_two_instances_never_pass_a_limit(make_app, make_store):
    import threading

    env = dict(OTP_IP_SEND_LIMIT="5")
    apps = [make_app(store=make_store(), **env) for _ in range(2)]
    clients = [Client(apps[i % 2]) for i in range(12)]
    statuses, barrier = [], threading.Barrier(12)

    def send(client):
        barrier.wait()
        statuses.append(client.generate(unique_email()).status_code)

    threads = [threading.Thread(target=send, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [200] * 5 + [429] * 7


# -- configuration ----------------------------------------------------------------------------------------------------
def test_the_defaults(make_app):
    from otp_service.config import Settings

    s = Settings.from_env({}).abuse
    assert (s.ip_send_limit, s.ip_send_window, s.ip_verify_limit, s.ip_verify_window) == (100, 3600, 300, 3600)
    assert (s.prefix_send_limit, s.prefix_send_window, s.prefix_digits) == (20, 3600, 7)
    assert (s.email_domain_send_limit, s.email_domain_send_window) == (300, 3600)
    assert "gmail.com" in s.email_domain_exempt and s.trusted_proxies == ()
    assert s.sms_allowed_countries == {"IN"} and s.sms_denied_prefixes == ()
    assert set(s.sms_denied_number_types) == {"premium_rate", "shared_cost", "toll_free", "uan", "voicemail",
                                              "fixed_line"}
    assert (s.sms_budget_per_minute, s.sms_budget_per_day, s.email_budget_per_minute, s.email_budget_per_day) == (
        0, 0, 0, 0)
    assert Settings.from_env({"OTP_DEFAULT_COUNTRY_CODE": "+44"}).abuse.sms_allowed_countries == {"GB"}


@pytest.mark.parametrize(
    "name, value",
    [("OTP_TRUSTED_PROXIES", "10.0.0.0/33"), ("OTP_TRUSTED_PROXIES", "gateway"), ("OTP_IP_SEND_LIMIT", "-1"),
     ("OTP_IP_SEND_WINDOW_SECONDS", "0"), ("OTP_PREFIX_DIGITS", "16"), ("OTP_SMS_ALLOWED_COUNTRIES", "India"),
     ("OTP_SMS_DENIED_PREFIXES", "+25x"), ("OTP_SMS_DENIED_NUMBER_TYPES", "premium"),
     ("OTP_SMS_BUDGET_PER_DAY", "lots")],
)
def test_a_bad_value_stops_start_up_naming_the_variable(name, value):
    from otp_service.config import ConfigError, Settings

    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: value})


# -- cost: at most one store round trip -------------------------------------------------------------------------------
class CountingStore:
    """Wraps a store and counts the limits' calls to it."""

    def __init__(self, inner):
        self.inner, self.calls = inner, []

    def __getattr__(self, name):
        found = getattr(self.inner, name)
        if name in ("take_counts", "release_counts"):
            def counted(*args, **kwargs):
                self.calls.append(name)
                return found(*args, **kwargs)
            return counted
        return found


def test_the_limits_cost_one_store_call_a_request_and_none_when_off(make_app, make_store):
    store = make_store()
    counting = CountingStore(store)
    app = make_app(store=store, OTP_IP_SEND_LIMIT="100", OTP_PREFIX_SEND_LIMIT="100", OTP_IP_VERIFY_LIMIT="100",
                   OTP_SMS_BUDGET_PER_MINUTE="100", OTP_SMS_BUDGET_PER_DAY="100")
    app.extensions["otp_limits"].store = counting
    client = Client(app)
    phone = indian_mobile()
    assert client.generate(phone, type_="phone").status_code == 200  # address, range, two budgets: one take
    assert client.verify(phone, "000000", type_="phone").status_code == 400
    assert counting.calls == ["take_counts", "take_counts"]
    assert client.generate(phone, type_="phone").status_code == 429  # cool-down: the budget is given back
    assert counting.calls[2:] == ["take_counts", "release_counts"]

    off = make_app(store=store, OTP_IP_VERIFY_LIMIT="0")
    off.extensions["otp_limits"].store = counting
    before = len(counting.calls)
    assert Client(off).generate(unique_email()).status_code == 200
    assert len(counting.calls) == before


def test_on_cassandra_a_take_is_one_round_of_concurrent_statements(cassandra_target):
    """(SQLite takes in one transaction, in process.)"""
    import time

    from otp_service.adapters.store import Counter

    store = cassandra_target.new_store()
    session = store._ready()
    sent = []
    real = session.execute_async
    session.execute_async = lambda *args, **kwargs: sent.append(args) or real(*args, **kwargs)
    try:
        start = time.time() // 3600 * 3600
        counters = [Counter(f"test:{uuid.uuid4().hex}", start, 3600, 10) for _ in range(4)]
        assert store.take_counts(counters).refused is None
        assert len(sent) == 4  # new counters: four inserts, sent together
        sent.clear()
        assert store.take_counts(counters).counts == (2, 2, 2, 2)
        assert len(sent) == 4  # this process saw the counts last: every guess right, one round
    finally:
        session.execute_async = real
        store.close()
