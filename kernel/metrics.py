"""Prometheus metrics, shared by every process. With PROMETHEUS_MULTIPROC_DIR set (production: one
directory per host, emptied at start) each process writes its values to files there and a scrape of
any web process reads them all; without it, the process's own registry is read.

Figures read from the database or Redis at scrape time (outbox depth, queue depth) come from the
collectors named in settings.METRICS_COLLECTORS, so the kernel imports no app."""

import functools
import os
import time
from collections.abc import Callable, Iterable
from functools import cache
from typing import ParamSpec, TypeVar

from django.conf import settings
from django.utils.module_loading import import_string
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from kernel.errors import ServiceError

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
DELIVERY_BUCKETS = (0.5, 1, 2.5, 5, 10, 15, 30, 60, 120, 300, 600)
LAG_BUCKETS = (0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 1800)

VENUE_UP = Gauge(
    "livermore_venue_up",
    "1 while the venue's connection shows life within its staleness window",
    ["venue"],
    multiprocess_mode="livemax",
)
VENUE_TRANSITIONS = Counter(
    "livermore_venue_transitions",
    "Venue connections going silent (down) or live again (up)",
    ["venue", "state"],
)
FAILOVERS = Counter("livermore_failovers", "Changes of a symbol's selected venue", ["symbol"])
ORDERS = Counter("livermore_orders", "Orders submitted, by outcome (a status or a refusal code)", ["outcome"])
ORDER_LATENCY = Histogram(
    "livermore_order_latency_seconds", "order_submit, from call to commit or refusal", buckets=LATENCY_BUCKETS
)
MARGIN_EVENTS = Counter("livermore_margin_events", "Margin calls and stop-outs", ["kind"])
SYSTEM_EVENTS = Counter("livermore_system_events", "System events raised", ["kind"])
DELIVERIES = Counter("livermore_notification_deliveries", "Outbox delivery attempts, by outcome", ["outcome"])
DELIVERY_LATENCY = Histogram(
    "livermore_notification_delivery_seconds",
    "From an outbox row's creation to its message being posted (a system notice's grouping window included)",
    buckets=DELIVERY_BUCKETS,
)

TRIGGER_EXECUTIONS = Counter(
    "livermore_trigger_executions",
    "Triggers the watcher executed: kind (pending, sl, tp) and outcome (the order's status, closed, "
    "none when there was nothing left to do, error)",
    ["kind", "outcome"],
)
RECORDER_LAG = Histogram(
    "livermore_recorder_lag_seconds",
    "Tick recorder: from the oldest tick's time in a COPY to that COPY's commit",
    buckets=LAG_BUCKETS,
)

P = ParamSpec("P")
R = TypeVar("R")


def observed(
    counter: Counter, histogram: Histogram, outcome: Callable[[R], str]
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Times each call into `histogram` and counts it in `counter` under its outcome: `outcome(result)`,
    a refusal's ServiceError code, or "error"."""

    def wrap(fn: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(fn)
        def call(*args: P.args, **kwargs: P.kwargs) -> R:
            started = time.perf_counter()
            label = "error"
            try:
                result = fn(*args, **kwargs)
                label = outcome(result)
                return result
            except ServiceError as exc:
                label = exc.code
                raise
            finally:
                histogram.observe(time.perf_counter() - started)
                counter.labels(outcome=label).inc()

        return call

    return wrap


ScrapeCollector = Callable[[], Iterable[Metric]]


@cache
def _collectors(paths: tuple[str, ...]) -> tuple[ScrapeCollector, ...]:
    return tuple(import_string(path) for path in paths)


class _AtScrape(Collector):
    def collect(self) -> Iterable[Metric]:
        for collector in _collectors(tuple(settings.METRICS_COLLECTORS)):
            yield from collector()


def metrics_registry() -> CollectorRegistry:
    """The registry a scrape reads: every process's values, and the figures read at scrape time."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
    else:
        registry = CollectorRegistry()
        registry.register(_Process())
    registry.register(_AtScrape())
    return registry


class _Process(Collector):
    """The process's own metrics (no multiprocess directory)."""

    def collect(self) -> Iterable[Metric]:
        yield from REGISTRY.collect()


def metrics_text() -> bytes:
    return generate_latest(metrics_registry())


def metrics_families() -> list[Metric]:
    return list(metrics_registry().collect())
