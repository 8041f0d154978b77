"""The market process's figures, read at scrape time from what it exports to Redis each second
(settings.METRICS_COLLECTORS): quote age and rate per venue and symbol, reconnects, the tick recorder
and candle counters. A market process that died leaves ages that keep growing, then nothing (30 s)."""

import json
from collections.abc import Iterator
from typing import cast

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from kernel.redis import key, sync_client
from marketdata.loop import RECORDER_KEY, VENUES_KEY
from marketdata.selectors import feed_health

RECORDER_GAUGES = {
    "buffered": "Ticks waiting for the recorder's next COPY",
    "candles_unstored": "Bars not stored yet",
}
RECORDER_COUNTERS = {
    "written": "Ticks written",
    "dropped": "Ticks dropped (buffer full)",
    "rejected": "Ticks refused by the database",
    "failures": "Recorder write failures",
    "candles_stored": "Candles closed and stored",
    "candles_late": "Quotes too late for their bar",
}


def market_metrics() -> Iterator[Metric]:
    age = GaugeMetricFamily(
        "livermore_quote_age_seconds",
        "Time since the venue's last quote for the symbol",
        labels=["venue", "symbol"],
    )
    rate = GaugeMetricFamily(
        "livermore_quotes_per_minute", "Quotes in the last minute", labels=["venue", "symbol"]
    )
    selected = GaugeMetricFamily(
        "livermore_feed_selected", "1 for the venue selected for the symbol", labels=["venue", "symbol"]
    )
    for row in feed_health():
        labels = [str(row["venue"]), str(row["symbol"])]
        age.add_metric(labels, row["age_ms"] / 1000)
        rate.add_metric(labels, row["quotes_per_minute"])
        selected.add_metric(labels, 1 if row["state"] == "selected" else 0)
    yield from (age, rate, selected)

    raw_venues, raw_recorder = cast(
        list[bytes | None], sync_client().mget([key(VENUES_KEY), key(RECORDER_KEY)])
    )
    reconnects = CounterMetricFamily("livermore_venue_reconnects", "Venue connections lost", labels=["venue"])
    for venue in json.loads(raw_venues) if raw_venues else []:
        reconnects.add_metric([venue["venue"]], venue["reconnects"])
    yield reconnects

    recorder = json.loads(raw_recorder) if raw_recorder else {}
    for name, text in RECORDER_GAUGES.items():
        if name in recorder:
            yield GaugeMetricFamily(f"livermore_recorder_{name}", text, value=recorder[name])
    for name, text in RECORDER_COUNTERS.items():
        if name in recorder:
            yield CounterMetricFamily(f"livermore_recorder_{name}", text, value=recorder[name])
