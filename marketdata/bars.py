"""The bar type the candle builder, backfill, gap filling and indicators share. No Django imports."""

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import TypedDict

TIMEFRAME_SECONDS = {"1m": 60, "5m": 300, "15m": 900, "1h": 3600, "4h": 14400, "1d": 86400}

# Where a bar's prices come from. A venue that streams its trades (Coinbase, Binance) gets bars
# built from them, with real volume; one that streams only prices (OANDA, FIX LPs, the simulator)
# gets bars of its mid, whose volume is 0 and whose tick_count counts the quotes. A backfilled bar
# is the venue's own closed bar.
TRADES, MID, BACKFILL = "trades", "mid", "backfill"


@dataclass(frozen=True, slots=True)
class Bar:
    """An OHLC bar. `start` is the bar's opening time in UTC epoch seconds, aligned to the timeframe.
    `synthetic` marks a gap-filled bar (OHLC = previous close, volume 0), made at read time only.
    `partial` marks a live bar whose period began before the market loop was watching (a start or a
    restart in the middle of it), or one fed by more than one venue or source (a failover inside
    it): a backfill may replace it. `source` (TRADES, MID or BACKFILL) and `venue` (its code) say
    where the prices came from."""

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
    source: str = MID
    venue: str = ""


class CandlePayload(TypedDict):
    """A closed bar as a `candle` frame's data on `candles:SYMBOL:TF`, in the Redis candle cache and
    the API: prices and volume as decimal strings, `start` in ISO 8601 (UTC)."""

    symbol: str
    tf: str
    start: str
    o: str
    h: str
    l: str  # noqa: E741 (the wire's name)
    c: str
    volume: str
    ticks: int
    synthetic: bool
    source: str  # TRADES, MID or BACKFILL
    venue: str


def bar_to_wire(bar: Bar) -> CandlePayload:
    """The JSON shape of a bar in stream events, the Redis cache and the API (prices as strings)."""
    return {
        "symbol": bar.symbol,
        "tf": bar.timeframe,
        "start": datetime.fromtimestamp(bar.start, UTC).isoformat(),
        "o": format(bar.open, "f"),
        "h": format(bar.high, "f"),
        "l": format(bar.low, "f"),
        "c": format(bar.close, "f"),
        "volume": format(bar.volume, "f"),
        "ticks": bar.tick_count,
        "synthetic": bar.synthetic,
        "source": bar.source,
        "venue": bar.venue,
    }
