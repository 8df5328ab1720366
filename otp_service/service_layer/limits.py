"""The abuse limits (issue 19): checked once per request, before anything of the key is read or written.

Order, so that no check spends what another one refuses: the destination (a phone SMS may not go to is refused
before anything is counted), then every counter of the request in one take (`Store.take_counts`: all of them, or,
when any is at its limit, none), in this order: the client's address, the number range or mail domain, the
channel's budget per minute and per day. A generate that the per-key rules then refuse (blocked key, send window,
cool-down, unknown template or user) gives its budget back: the budget counts messages, not requests. The client and
range counters keep it: they count what a client asks for.

Every refusal is 429 ERROR_RATE_LIMIT_EXCEEDED with Retry-After (the window's end) and a message naming the window's
unit; it depends only on the client, the range or the channel, never on whether the key exists or has a code.
"""
from __future__ import annotations

import contextlib
import logging
import time
from typing import Callable, Iterator, NamedTuple, Protocol

from ..adapters.crypto import KeyRing
from ..adapters.store import Counter, Store, StoreUnavailable
from ..config import AbuseSettings
from ..domain import abuse, errors
from ..domain.contacts import Contact, ContactType
from .services import ContentionError

log = logging.getLogger("otp_service.limits")

# The limits' names: metric labels and the counters' name prefixes. No address, key or range is ever one.
IP_SEND, IP_VERIFY, PREFIX_SEND, EMAIL_DOMAIN_SEND = "ip_send", "ip_verify", "prefix_send", "email_domain_send"
DESTINATION = "destination"
BUDGET_PERIODS = {"minute": 60, "day": 86400}
CHANNELS = {ContactType.PHONE: "sms", ContactType.EMAIL: "email"}
LIMIT_NAMES = (DESTINATION, IP_SEND, IP_VERIFY, PREFIX_SEND, EMAIL_DOMAIN_SEND) + tuple(
    f"{channel}_budget_{period}" for channel in CHANNELS.values() for period in BUDGET_PERIODS
)


class Observer(Protocol):
    """Where refusals and budget use are reported (the Prometheus metrics)."""

    def limit_refused(self, limit: str) -> None: ...

    def budget_used(self, channel: str, period: str, used: int) -> None: ...


class _Nobody:
    def limit_refused(self, limit: str) -> None:
        pass

    def budget_used(self, channel: str, period: str, used: int) -> None:
        pass


class Admission(NamedTuple):
    """What an admitted generate took from the channel's budget: given back if it sends nothing."""

    budget: tuple[Counter, ...] = ()


_NOTHING = Admission()


class AbuseLimits:
    def __init__(
        self,
        settings: AbuseSettings,
        store: Store,
        keys: KeyRing,
        *,
        observer: Observer | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self.settings = settings
        self.store = store
        self.keys = keys
        self.observer = observer or _Nobody()
        self.clock = clock
        self.destinations = settings.sms_destinations
        self._warned: dict[str, float] = {}  # budget -> the window whose exhaustion this process has logged
        self._budgets = {
            channel: tuple(
                (period, seconds, getattr(settings, f"{channel}_budget_per_{period}"))
                for period, seconds in BUDGET_PERIODS.items()
                if getattr(settings, f"{channel}_budget_per_{period}")
            )
            for channel in CHANNELS.values()
        }

    # -- the client ---------------------------------------------------------------------------------------------------
    def client(self, environ: dict) -> str:
        """The client's address from the WSGI environ: REMOTE_ADDR, or X-Forwarded-For from a trusted proxy."""
        return abuse.client_address(
            environ.get("REMOTE_ADDR"), environ.get("HTTP_X_FORWARDED_FOR"), self.settings.trusted_proxies
        )

    # -- generate -----------------------------------------------------------------------------------------------------
    def admit_generate(self, contact: Contact, client: str) -> Admission:
        """Refuse (DESTINATION_NOT_ALLOWED, or 429) or admit; at most one store round trip."""
        s = self.settings
        if contact.type is ContactType.PHONE:
            if not self.destinations.allows(contact.key):
                self.observer.limit_refused(DESTINATION)
                log.info("destination refused key=%s", contact.masked)
                raise errors.destination_not_allowed()
        now = self.clock()
        counters: list[tuple[str, Counter]] = []
        if s.ip_send_limit:
            counters.append(self._counter(IP_SEND, client, s.ip_send_window, s.ip_send_limit, now))
        if contact.type is ContactType.PHONE and s.prefix_send_limit:
            prefix = abuse.phone_prefix(contact.key, s.prefix_digits)
            counters.append(self._counter(PREFIX_SEND, prefix, s.prefix_send_window, s.prefix_send_limit, now))
        if contact.type is ContactType.EMAIL and s.email_domain_send_limit:
            domain = abuse.email_domain(contact.canonical)
            if domain not in s.email_domain_exempt:
                counters.append(
                    self._counter(EMAIL_DOMAIN_SEND, domain, s.email_domain_send_window, s.email_domain_send_limit, now)
                )
        channel = CHANNELS[contact.type]
        budget = []
        for period, seconds, limit in self._budgets[channel]:
            budget.append(self._counter(f"{channel}_budget_{period}", "", seconds, limit, now))
        taken = self._take(counters + budget, now)
        for (name, _), count in zip(budget, taken[len(counters):], strict=True):
            self.observer.budget_used(channel, name.rpartition("_")[2], count)
        return Admission(tuple(counter for _, counter in budget)) if budget else _NOTHING

    @contextlib.contextmanager
    def spending(self, admission: Admission) -> Iterator[None]:
        """Around the per-key rules and the delivery: when they refuse (an OtpError other than DELIVERY_FAILED, whose
        message the provider may have billed) or the store fails, nothing was sent and the budget is given back."""
        try:
            yield
        except errors.OtpError as error:
            if error.err != "DELIVERY_FAILED":
                self.release(admission)
            raise
        except (StoreUnavailable, ContentionError):
            self.release(admission)
            raise

    def release(self, admission: Admission) -> None:
        """A generate that was admitted sent nothing: give back what it took from the budget (best effort)."""
        if not admission.budget:
            return
        try:
            self.store.release_counts(admission.budget)
        except StoreUnavailable as exc:
            log.warning("budget not given back: %s", exc)

    # -- verify -------------------------------------------------------------------------------------------------------
    def admit_verify(self, client: str) -> None:
        s = self.settings
        if s.ip_verify_limit:
            now = self.clock()
            self._take([self._counter(IP_VERIFY, client, s.ip_verify_window, s.ip_verify_limit, now)], now)

    # -- counting -----------------------------------------------------------------------------------------------------
    def _counter(self, limit: str, subject: str, seconds: int, allowed: int, now: float) -> tuple[str, Counter]:
        """The counter of `limit` for `subject` (a budget has none) in the window of `now`. Its name is the limit's
        and a keyed hash: the store keeps no address, range or domain, and installations that share a store but not
        their keys count apart."""
        name = f"{limit}:{self.keys.counter_name(f'{limit}:{subject}')}"
        return limit, Counter(name, abuse.window_start(now, seconds), seconds, allowed)

    def _take(self, named: list[tuple[str, Counter]], now: float) -> tuple[int, ...]:
        if not named:
            return ()
        taken = self.store.take_counts([counter for _, counter in named])
        if taken.refused is None:
            return taken.counts
        limit, counter = named[taken.refused]
        self.observer.limit_refused(limit)
        if "_budget_" in limit:
            channel, _, period = limit.partition("_budget_")
            self.observer.budget_used(channel, period, taken.counts[taken.refused])
            if self._warned.get(limit) != counter.start:  # once per window and process, not once per request
                self._warned[limit] = counter.start
                log.warning("%s exhausted: %d of %d used; no message goes out until the window ends in %d s",
                            limit, taken.counts[taken.refused], counter.limit,
                            abuse.retry_after(now, counter.start, counter.seconds))
        else:
            log.info("abuse limit %s reached", limit)
        error = errors.rate_limit_exceeded(abuse.unit_of(counter.seconds))
        error.retry_after = abuse.retry_after(now, counter.start, counter.seconds)
        raise error
