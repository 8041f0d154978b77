"""Indicators on closed bars: computed, stored, cached and streamed; the values rules read."""

import json
import logging
from collections.abc import Mapping
from decimal import Context, Decimal
from typing import TypedDict

import numpy as np
from django.db import transaction
from rest_framework import status

from alerts import rules
from alerts.indicators import INDICATORS, NOT_ENOUGH_BARS, Diagnostics, DiagnosticsJson, History, macdv_stage
from alerts.models import IndicatorValue
from alerts.selectors import (
    INDICATORS_VERSION,
    closed_bars,
    epoch_to_datetime,
    indicator_cache_key,
)
from alerts.streams import indicator_channel, indicator_group
from kernel import versions
from kernel.errors import ServiceError
from kernel.redis import sync_client
from marketdata.bars import TIMEFRAME_SECONDS
from marketdata.models import Candle, Instrument
from marketdata.streams import stream_send

log = logging.getLogger(__name__)

INDICATOR_CACHE_TTL = 24 * 3600
# Bars loaded to compute one bar: far more than any seed needs, so the seed's effect on the
# newest value is below 1e-15 (ATR26: (25/26)^975) and a value does not depend on the window.
INDICATOR_LOOKBACK = 1000
VALUE_QUANTUM = Decimal("1e-10")  # IndicatorValue and AlertEvent values keep 10 decimal places
DECIMAL_LIMIT = Decimal("1e20")  # and at most 20 integer digits
_DECIMALS = Context(prec=40)

# Sets the cached latest value unless the cache already holds a later bar (a late redelivery).
_SET_IF_NEWER = """
local current = redis.call('GET', KEYS[1])
if current and cjson.decode(current)['ts'] > tonumber(ARGV[2]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
return 1
"""


class IndicatorReading(TypedDict):
    symbol: str
    timeframe: str
    name: str
    start: str
    ts: int
    value: str | None
    signal: str | None
    histogram: str | None
    seeded: bool
    reason: str | None
    stage: str | None  # MACD-V only: its stage ("unknown" while unseeded)
    diagnostics: DiagnosticsJson | None  # MACD-V only: nEff, span, gap ratio, liquidity tier


class IndicatorPayload(TypedDict):
    """An `indicator` frame's data on `indicators:SYMBOL:TF`: every indicator's reading on one closed
    bar (`start` in ISO 8601), by name."""

    symbol: str
    timeframe: str
    start: str
    indicators: dict[str, IndicatorReading]


def _decimal(value: Decimal | float) -> Decimal | None:
    """`value` as the value columns store it (a float exactly, then rounded to 10 places); None when
    it is not finite or does not fit."""
    d = Decimal(value)
    if not d.is_finite() or abs(d) >= DECIMAL_LIMIT:
        return None
    return d.quantize(VALUE_QUANTUM, context=_DECIMALS)


def _text(d: Decimal | None) -> str | None:
    return None if d is None else str(d)


def indicators_update_for_bar(
    *, symbol: str, timeframe: str, start: int, lookback: int = INDICATOR_LOOKBACK
) -> IndicatorPayload:
    """Compute every indicator on the closed bar of `symbol`/`timeframe` starting at `start` (epoch
    seconds), store the values, cache the latest in Redis and publish them. Idempotent."""
    instrument = Instrument.objects.filter(symbol=symbol).first()
    if instrument is None:
        raise ServiceError(
            "unknown_symbol", f"Unknown symbol {symbol!r}.", status_code=status.HTTP_404_NOT_FOUND
        )
    if timeframe not in TIMEFRAME_SECONDS:
        raise ServiceError(
            "invalid_timeframe", f"Unknown timeframe {timeframe!r}.", status_code=status.HTTP_400_BAD_REQUEST
        )
    bar_start = epoch_to_datetime(start)
    bars = closed_bars(instrument=instrument, timeframe=timeframe, end=start, limit=lookback)
    if not bars or bars[-1].start != start or bars[-1].synthetic:
        raise ServiceError(
            "bar_not_closed",
            f"No closed {timeframe} bar of {symbol} starts at {bar_start.isoformat()}.",
            status_code=status.HTTP_404_NOT_FOUND,
        )
    history = History(
        high=np.array([float(b.high) for b in bars]),
        low=np.array([float(b.low) for b in bars]),
        close=np.array([float(b.close) for b in bars]),
        synthetic=np.array([b.synthetic for b in bars], dtype=bool),
    )
    readings: dict[str, IndicatorReading] = {}
    rows = []
    for name, compute in INDICATORS.items():
        series = compute(history)
        value = _decimal(float(series.value[-1]))
        signal = _decimal(float(series.signal[-1])) if series.signal is not None else None
        histogram = _decimal(float(series.histogram[-1])) if series.histogram is not None else None
        diagnostics: Diagnostics | None = series.diagnostics
        if value is not None:
            rows.append(
                IndicatorValue(
                    instrument=instrument,
                    timeframe=timeframe,
                    start=bar_start,
                    name=name,
                    value=value,
                    signal=signal,
                    histogram=histogram,
                    n_eff=diagnostics.n_eff if diagnostics else None,
                    span=diagnostics.span if diagnostics else None,
                )
            )
        elif series.seeded:
            log.warning("%s %s %s %s out of range: %r", symbol, timeframe, name, start, series.value[-1])
        readings[name] = IndicatorReading(
            symbol=symbol,
            timeframe=timeframe,
            name=name,
            start=bar_start.isoformat(),
            ts=start,
            value=_text(value),
            signal=_text(signal),
            histogram=_text(histogram),
            seeded=value is not None,
            reason=None if value is not None else (series.reason or NOT_ENOUGH_BARS),
            # The stage of the stored (rounded) values, so a reader recomputing it from them agrees.
            stage=macdv_stage(_float(value), _float(signal)) if name == rules.MACDV else None,
            diagnostics=diagnostics.to_json() if diagnostics else None,
        )
    with transaction.atomic():
        IndicatorValue.objects.bulk_create(
            rows,
            update_conflicts=True,
            unique_fields=("instrument", "timeframe", "start", "name"),
            update_fields=("value", "signal", "histogram", "n_eff", "span", "computed_at"),
        )
        versions.bump_on_commit(INDICATORS_VERSION)
    redis = sync_client()
    set_if_newer = redis.register_script(_SET_IF_NEWER)
    for name, reading in readings.items():
        set_if_newer(
            keys=[indicator_cache_key(symbol, timeframe, name)],
            args=[json.dumps(reading), start, INDICATOR_CACHE_TTL],
        )
    data = IndicatorPayload(
        symbol=symbol, timeframe=timeframe, start=bar_start.isoformat(), indicators=readings
    )
    stream_send(indicator_group(symbol, timeframe), indicator_channel(symbol, timeframe), "indicator", data)
    return data


def _float(d: Decimal | None) -> float | None:
    return None if d is None else float(d)


def bar_close_values(candle: Candle, readings: Mapping[str, IndicatorReading]) -> dict[str, Decimal]:
    """The keys rules read on a closed bar: its OHLCV and each seeded indicator, with `<name>_signal`
    and `<name>_histogram` where the indicator has them (`macdv`, `macdv_signal`, `macdv_histogram`).
    Also MACD-V's diagnostics (`macdv_n_eff`, `macdv_span`), kept with the series for the alerts'
    payload; no rule reads them."""
    values = {
        "open": candle.open,
        "high": candle.high,
        "low": candle.low,
        "close": candle.close,
        "volume": candle.volume,
    }
    for name, reading in readings.items():
        for suffix, text in (
            ("", reading["value"]),
            ("_signal", reading["signal"]),
            ("_histogram", reading["histogram"]),
        ):
            if text is not None:
                values[f"{name}{suffix}"] = Decimal(text)
        if (diagnostics := reading.get("diagnostics")) is not None:
            values[rules.MACDV_N_EFF] = Decimal(diagnostics["n_eff"])
            values[rules.MACDV_SPAN] = Decimal(diagnostics["span"])
    return values
