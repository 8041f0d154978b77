"""Fills in the MACD-V diagnostics (n_eff, span) of the MACD-V values stored before they were kept.

Each bar's diagnostics follow from the stored candles as the indicator service loads them: the real
bars of the 1000-bar window ending at the bar, of which the last 200 count. They are computed by
the function the service uses (alerts.indicators.macdv_diagnostics). A value whose own candle is
not stored (deleted since) keeps no diagnostics. Reversing leaves them in place.
"""

import bisect
from datetime import datetime
from typing import Any

import numpy as np
from django.db import migrations

from alerts.indicators import macdv_diagnostics
from marketdata.bars import TIMEFRAME_SECONDS

WINDOW_BARS = 1000  # alerts.services.INDICATOR_LOOKBACK when this was written
BATCH = 1000


def _epoch(moment: datetime) -> int:
    return int(moment.timestamp())


def _backfill(apps: Any, schema_editor: Any) -> None:
    IndicatorValue = apps.get_model("alerts", "IndicatorValue")
    Candle = apps.get_model("marketdata", "Candle")
    missing = IndicatorValue.objects.filter(name="macdv", n_eff__isnull=True)
    series = missing.values_list("instrument_id", "timeframe").distinct().order_by()
    for instrument_id, timeframe in list(series):
        step = TIMEFRAME_SECONDS[timeframe]
        starts = [
            _epoch(s)
            for s in Candle.objects.filter(instrument_id=instrument_id, timeframe=timeframe)
            .order_by("start")
            .values_list("start", flat=True)
        ]
        changed = []
        rows = missing.filter(instrument_id=instrument_id, timeframe=timeframe).only("pk", "start")
        for row in rows.iterator(chunk_size=BATCH):
            start = _epoch(row.start)
            end = bisect.bisect_right(starts, start)
            if not end or starts[end - 1] != start:
                continue
            first = bisect.bisect_left(starts, start - (WINDOW_BARS - 1) * step)
            offsets = (np.array(starts[first:end]) - starts[first]) // step
            synthetic = np.ones(int(offsets[-1]) + 1, dtype=bool)
            synthetic[offsets] = False
            diagnostics = macdv_diagnostics(synthetic, synthetic.size)
            row.n_eff, row.span = diagnostics.n_eff, diagnostics.span
            changed.append(row)
            if len(changed) == BATCH:
                IndicatorValue.objects.bulk_update(changed, ["n_eff", "span"])
                changed = []
        IndicatorValue.objects.bulk_update(changed, ["n_eff", "span"])


class Migration(migrations.Migration):
    dependencies = [
        ("alerts", "0005_alertevent_livermore_stages"),
        ("marketdata", "0004_candle_partial"),
    ]

    operations = [migrations.RunPython(_backfill, migrations.RunPython.noop)]
