"""Recomputes the MACD-V stages and bias stored with past alerts under Livermore's rules.

An alert's payload kept each timeframe's MACD-V ("frames") and the bias the old rules made of them,
but not the signals the stages need. The signal is found again in the stored MACD-V values of that
timeframe: the latest bar, closed by the time the alert fired, whose value is the one the alert
kept. The payload gains "signals" and "stages" (as alerts fired from now on store them) and its
"bias" is recomputed; a timeframe whose signal cannot be found has the stage "unknown", which counts
for neither side. Payloads without frames are left as they are. Reversing keeps the new payloads.

It uses the stage and bias functions the application uses (alerts.indicators.macdv_stage,
alerts.rules.bias_of_stages), so stored labels are the ones every new alert gets.
"""

import bisect
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

from django.db import migrations

from alerts.indicators import macdv_stage
from alerts.rules import bias_of_stages
from marketdata.bars import TIMEFRAME_SECONDS

SEARCH_BARS = 50  # how far back from the alert a timeframe's frame is looked for
BATCH = 500


class _Series:
    """One timeframe's stored MACD-V bars of a symbol: closing times, values and signals."""

    def __init__(self, rows: list[tuple[datetime, Any, Any]], step: timedelta) -> None:
        self.closes = [start + step for start, _, _ in rows]
        self.values = [float(value) for _, value, _ in rows]
        self.signals = [None if signal is None else float(signal) for _, _, signal in rows]

    def signal_of(self, value: float, by: datetime) -> float | None:
        """The signal of the latest bar closed by `by` whose MACD-V is `value` (None if none is)."""
        end = bisect.bisect_right(self.closes, by)
        for i in range(end - 1, max(end - SEARCH_BARS, 0) - 1, -1):
            if abs(self.values[i] - value) <= 1e-9 * max(1.0, abs(value)):
                return self.signals[i]
        return None


def _recompute(apps: Any, schema_editor: Any) -> None:
    AlertEvent = apps.get_model("alerts", "AlertEvent")
    IndicatorValue = apps.get_model("alerts", "IndicatorValue")
    by_symbol: dict[str, list[Any]] = defaultdict(list)
    for event in (
        AlertEvent.objects.filter(payload__has_key="frames").order_by("pk").iterator(chunk_size=BATCH)
    ):
        if isinstance(event.payload.get("frames"), dict):
            by_symbol[event.symbol].append(event)
    for symbol, events in by_symbol.items():
        bounds = [
            max(e.fired_at, e.bar_start + timedelta(seconds=TIMEFRAME_SECONDS[e.timeframe])) for e in events
        ]
        timeframes = {tf for e in events for tf in e.payload["frames"] if tf in TIMEFRAME_SECONDS}
        series = {}
        for tf in timeframes:
            step = timedelta(seconds=TIMEFRAME_SECONDS[tf])
            rows = IndicatorValue.objects.filter(
                instrument__symbol=symbol,
                timeframe=tf,
                name="macdv",
                start__gte=min(bounds) - step * (SEARCH_BARS + 1),
                start__lte=max(bounds),
            ).order_by("start")
            series[tf] = _Series(list(rows.values_list("start", "value", "signal")), step)
        changed = []
        for event, bound in zip(events, bounds):
            payload = dict(event.payload)
            frames = payload["frames"]
            signals: dict[str, float | None] = {}
            stages: dict[str, str] = {}
            for tf, value in frames.items():
                signal = None
                if isinstance(value, int | float) and tf in series:
                    signal = series[tf].signal_of(float(value), bound)
                signals[tf] = signal
                stages[tf] = macdv_stage(value if isinstance(value, int | float) else None, signal)
            payload.update(signals=signals, stages=stages, bias=bias_of_stages(stages))
            payload.setdefault("diagnostics", None)
            event.payload = payload
            changed.append(event)
        AlertEvent.objects.bulk_update(changed, ["payload"], batch_size=BATCH)


class Migration(migrations.Migration):
    dependencies = [
        ("alerts", "0004_indicatorvalue_diagnostics"),
    ]

    operations = [migrations.RunPython(_recompute, migrations.RunPython.noop)]
