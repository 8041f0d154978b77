"""The bar type the candle builder, backfill, gap filling and indicators share. No Django imports."""

from dataclasses import dataclass
from decimal import Decimal

TIMEFRAME_SECONDS = {"1m": 60, "5m": 300, "15m": 900, "1h": 3600, "4h": 14400, "1d": 86400}


@dataclass(frozen=True, slots=True)
class Bar:
    """An OHLC bar. `start` is the bar's opening time in UTC epoch seconds, aligned to the timeframe.
    `synthetic` marks a gap-filled bar (OHLC = previous close, volume 0), made at read time only.
    `partial` marks a live bar whose period began before the market loop was watching (a start or a
    restart in the middle of it): quotes of that stretch are missing, so a backfill may replace it."""

    symbol: str
    timeframe: str
    start: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal = Decimal(0)
    tick_count: int = 0
    synthetic: bool = False
    partial: bool = False
