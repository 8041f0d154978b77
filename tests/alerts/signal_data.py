"""Stored MACD-V rows and bars that put the signals grid in known states (demo instruments)."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from alerts.models import IndicatorValue
from marketdata.bars import TIMEFRAME_SECONDS
from marketdata.demo import demo_seed
from marketdata.models import Candle, Instrument, VenueSymbol

AS_OF = datetime(2026, 1, 5, tzinfo=UTC)

# EURUSD: one stage per timeframe, bullish on the light timeframes and bearish on the heavy ones.
# Bullish 1m+5m+15m = 1+2+3 = 6, bearish 1h+4h+1d = 4+5+6 = 15 > 1.5 x 6 = 9: Bearish.
EURUSD = {
    "1m": ("100", "50", "rallying"),  # above, 50 < 100 < 150
    "5m": ("-100", "-120", "rebounding"),  # above, -150 < -100 < 50
    "15m": ("-200", "-100", "oversold"),  # < -150
    "1h": ("200", "100", "overbought"),  # above, > 150
    "4h": ("-100", "-80", "reversing"),  # below, -150 < -100 < -50
    "1d": ("60", "80", "retracing"),  # below, > -50
}
# ETHUSD: rallying 1d (bullish 6) against reversing 1m (bearish 1); 6 > 1.5 x 1: Bullish.
ETHUSD = {
    "1d": ("120", "100", "rallying"),  # above, 50 < 120 < 150
    "1m": ("-80", "-60", "reversing"),  # below, -150 < -80 < -50
}


def store_macdv(
    instrument: Instrument, timeframe: str, value: str, signal: str | None, *, start: datetime = AS_OF
) -> None:
    IndicatorValue.objects.create(
        instrument=instrument,
        timeframe=timeframe,
        start=start,
        name="macdv",
        value=Decimal(value),
        signal=None if signal is None else Decimal(signal),
        histogram=None if signal is None else Decimal(value) - Decimal(signal),
    )


def store_bars(instrument: Instrument, timeframe: str, count: int, *, every: int = 1) -> None:
    """`count` closed bars ending at AS_OF, one every `every` bars (the rest are gaps)."""
    step = timedelta(seconds=TIMEFRAME_SECONDS[timeframe])
    Candle.objects.bulk_create(
        Candle(
            instrument=instrument,
            timeframe=timeframe,
            start=AS_OF - (count - 1 - i) * every * step,
            open=Decimal(1),
            high=Decimal(2),
            low=Decimal(1),
            close=Decimal(2),
        )
        for i in range(count)
    )


def seed_signals() -> None:
    """EURUSD (Bearish) on every timeframe; ETHUSD (Bullish) on two; GBPUSD (Neutral) ranging on 1m with
    each reason elsewhere; USDJPY disabled; the other demo instruments with nothing stored."""
    demo_seed()
    eurusd = Instrument.objects.get(symbol="EURUSD")
    for timeframe, (value, signal, _) in EURUSD.items():
        store_macdv(eurusd, timeframe, value, signal)
        store_macdv(eurusd, timeframe, "0", "0", start=AS_OF - timedelta(days=3))  # an older row
    ethusd = Instrument.objects.get(symbol="ETHUSD")
    for timeframe, (value, signal, _) in ETHUSD.items():
        store_macdv(ethusd, timeframe, value, signal)
    gbpusd = Instrument.objects.get(symbol="GBPUSD")
    # Ranging: -50 < 10 < 50 and neither above nor below its signal (above would be rebounding).
    store_macdv(gbpusd, "1m", "10", "10")
    store_bars(gbpusd, "15m", 5)  # not enough bars
    store_bars(gbpusd, "1h", 10, every=4)  # 10 real bars over 37: low trading activity
    store_bars(gbpusd, "4h", 30)  # enough bars, nothing computed
    store_macdv(gbpusd, "1d", "80", None)  # the signal is not seeded yet
    VenueSymbol.objects.filter(instrument__symbol="USDJPY").update(enabled=False)
