"""FIX session state and sequence numbers, read at scrape time from what runfix exports to Redis
(settings.METRICS_COLLECTORS)."""

import json
from collections.abc import Iterator
from typing import cast

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from kernel.redis import sync_client

from .channels import state_key
from .models import FixSession


def fix_metrics() -> Iterator[Metric]:
    names = list(FixSession.objects.order_by("name").values_list("name", flat=True))
    raw_states = sync_client().mget([state_key(n) for n in names]) if names else []
    states = cast(list[bytes | None], raw_states)
    logged_on = GaugeMetricFamily(
        "livermore_fix_logged_on", "1 while the session is logged on", labels=["session"]
    )
    next_out = GaugeMetricFamily(
        "livermore_fix_next_sender_seq", "Next outbound MsgSeqNum", labels=["session"]
    )
    next_in = GaugeMetricFamily(
        "livermore_fix_next_target_seq", "Next expected inbound MsgSeqNum", labels=["session"]
    )
    logons = CounterMetricFamily("livermore_fix_logons", "Logons since runfix started", labels=["session"])
    for name, raw in zip(names, states):
        state = json.loads(raw) if raw else {}
        logged_on.add_metric([name], 1 if state.get("logged_on") else 0)
        if state.get("next_out") is not None:
            next_out.add_metric([name], state["next_out"])
            next_in.add_metric([name], state["next_in"])
        logons.add_metric([name], state.get("logons", 0))
    yield from (logged_on, next_out, next_in, logons)
