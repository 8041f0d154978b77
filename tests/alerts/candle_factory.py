"""Instruments and closed candles for the indicator tests."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from marketdata.models import Candle, Instrument

T0 = datetime(2026, 1, 5, tzinfo=UTC)


def make_ramp(
    instrument: Instrument, bars: int, *, timeframe: str = "1m", skip: frozenset[int] | set[int] = frozenset()
) -> None:
    """Closed candles close = 100 + i, high/low = close +- 1, one per minute from T0 (none at `skip`)."""
    Candle.objects.bulk_create(
        Candle(
            instrument=instrument,
            timeframe=timeframe,
            start=bar_start(i),
            open=Decimal(100 + i),
            high=Decimal(101 + i),
            low=Decimal(99 + i),
            close=Decimal(100 + i),
        )
        for i in range(bars)
        if i not in skip
    )


def bar_start(i: int) -> datetime:
    return T0 + timedelta(minutes=i)


def epoch(i: int) -> int:
    return int(bar_start(i).timestamp())
