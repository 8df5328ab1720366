"""Prometheus metrics, served at GET /metrics.

Under gunicorn every worker is its own process, so a counter kept in one worker's memory would be a fraction of
the truth, different on each scrape. prometheus_client's multiprocess mode fixes that: with PROMETHEUS_MULTIPROC_DIR
set (gunicorn.conf.py and `otp-service serve` set it before the workers fork), each worker writes its values to
files in that folder and /metrics sums the files of every worker, dead ones included, whichever worker answers.
In a single process (tests, `flask run`) each app has its own registry.

Labels are bounded and never carry a key, a code or a path a caller made up: routes are the app's URL rules
("<unmatched>" for anything else), `err` is one of the contract's codes ("" on success).
"""
from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    values,
)

CONTENT_TYPE = CONTENT_TYPE_LATEST
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
DELIVERY_RESULTS = ("accepted", "failed")
STORE_ERROR_KINDS = ("unavailable", "contention")


def multiprocess_mode() -> bool:
    """True when prometheus_client writes values to PROMETHEUS_MULTIPROC_DIR (decided when it was imported)."""
    return values.ValueClass is not values.MutexValue


class Metrics:
    def __init__(
        self,
        *,
        channels: tuple[str, ...] = (),
        store: str = "store",
        limits: tuple[str, ...] = (),
        budgets: dict[tuple[str, str], int] | None = None,
    ):
        self.multiprocess = multiprocess_mode()
        self.store = store
        self._request_children: dict[tuple, tuple] = {}
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "otp_http_requests", "HTTP requests answered, by route, method, status and the envelope's err.",
            ["route", "method", "status", "err"], registry=self.registry,
        )
        self.latency = Histogram(
            "otp_http_request_duration_seconds", "Time to answer a request, by route.",
            ["route"], buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.deliveries = Counter(
            "otp_deliveries", "Codes handed to a delivery channel, by channel and result (accepted, failed).",
            ["channel", "result"], registry=self.registry,
        )
        self.blocks = Counter(
            "otp_keys_blocked", "Keys blocked for going over the send window (MAX_LIMIT_EXHAUSTED), by type.",
            ["type"], registry=self.registry,
        )
        self.store_errors = Counter(
            "otp_store_errors", "Requests the store failed: unavailable (503) or too much contention on a key (503).",
            ["store", "kind"], registry=self.registry,
        )
        self.refusals = Counter(
            "otp_abuse_refusals", "Requests refused by an abuse limit, by limit (ip_send, prefix_send, sms_budget_day, "
            "destination, ...): 429 ERROR_RATE_LIMIT_EXCEEDED, or DESTINATION_NOT_ALLOWED for destination.",
            ["limit"], registry=self.registry,
        )
        # The budget's use: the count of the current window as the last send of any worker saw it ("mostrecent"
        # across gunicorn workers), and the budget itself; use / budget is what an alert watches.
        self.budget_use = Gauge(
            "otp_budget_used", "Messages counted against the channel's budget in the current window (every instance).",
            ["channel", "period"], multiprocess_mode="mostrecent", registry=self.registry,
        )
        self.budget_limit = Gauge(
            "otp_budget_limit", "The channel's budget per period (OTP_SMS_BUDGET_PER_MINUTE, ...).",
            ["channel", "period"], multiprocess_mode="mostrecent", registry=self.registry,
        )
        for limit in limits:
            self.refusals.labels(limit)
        for (channel, period), budget in (budgets or {}).items():
            self.budget_limit.labels(channel, period).set(budget)
            self.budget_use.labels(channel, period)
        # Series that alerts divide by exist from the start, at 0; their children are kept, as in observe_request.
        self._delivery_children = {
            (channel, accepted): self.deliveries.labels(channel, result)
            for channel in channels
            for accepted, result in zip((True, False), DELIVERY_RESULTS, strict=True)
        }
        for type_ in ("email", "phone"):
            self.blocks.labels(type_)
        for kind in STORE_ERROR_KINDS:
            self.store_errors.labels(store, kind)

    def observe_request(self, route: str, method: str, status: int, err: str, seconds: float) -> None:
        # labels() takes a lock and builds its key on every call; the children of the few label sets the app
        # answers with are kept here instead (a race only makes labels() return the same child twice).
        found = self._request_children.get((route, method, status, err))
        if found is None:
            found = (self.requests.labels(route, method, str(status), err), self.latency.labels(route))
            self._request_children[(route, method, status, err)] = found
        found[0].inc()
        found[1].observe(seconds)

    def delivery(self, channel: str, accepted: bool) -> None:
        child = self._delivery_children.get((channel, accepted))
        if child is None:  # a channel not named at start-up
            child = self.deliveries.labels(channel, DELIVERY_RESULTS[0] if accepted else DELIVERY_RESULTS[1])
        child.inc()

    def blocked(self, type_: str) -> None:
        self.blocks.labels(type_).inc()

    def limit_refused(self, limit: str) -> None:
        self.refusals.labels(limit).inc()

    def budget_used(self, channel: str, period: str, used: int) -> None:
        self.budget_use.labels(channel, period).set(used)

    def store_error(self, kind: str) -> None:
        self.store_errors.labels(self.store, kind).inc()

    def exposition(self) -> bytes:
        """The Prometheus text format: this app's registry, or the sum over every worker's files."""
        if self.multiprocess:
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)
