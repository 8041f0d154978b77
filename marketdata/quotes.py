"""The quote types every part of the market path speaks. No Django imports: this is the hot path."""

import time
from dataclasses import dataclass
from decimal import Decimal
from typing import TypedDict


def now_ns() -> int:
    return time.time_ns()


@dataclass(frozen=True, slots=True)
class Quote:
    """One top-of-book price from one venue, already in our instrument's name.

    Timestamps are integer nanoseconds since the Unix epoch (UTC): the venue's and our receipt time.
    """

    symbol: str
    venue: str
    bid: Decimal
    ask: Decimal
    venue_ts: int
    recv_ts: int
    bid_size: Decimal | None = None
    ask_size: Decimal | None = None
    last: Decimal | None = None  # the venue's last trade price, where it sends one (Coinbase ticker)

    @property
    def mid(self) -> Decimal:
        return (self.bid + self.ask) / 2


@dataclass(frozen=True, slots=True)
class Trade:
    """One print on a venue's tape, already in our instrument's name. `side` is the venue's (the
    taker's at Binance, the maker's at Coinbase: kept as sent, never used for bars). `trade_id` is
    unique per (venue, symbol): a trade seen twice (a reconnect's snapshot) is counted once."""

    symbol: str
    venue: str
    price: Decimal
    size: Decimal
    side: str
    trade_id: str
    venue_ts: int
    recv_ts: int


class QuotePayload(TypedDict):
    """A `quote` frame's data on `quotes:SYMBOL` / `quotes:*`, and a Redis ticker cache entry. With no
    healthy venue the symbol is not tradable and venue, prices and ts are null."""

    symbol: str
    seq: int
    tradable: bool
    venue: str | None
    bid: str | None
    ask: str | None
    ts: int | None  # the venue's timestamp, epoch milliseconds


@dataclass(frozen=True, slots=True)
class SelectedQuote:
    """A quote the LP manager selected for its symbol, numbered per symbol.

    `tradable` is False when no venue is healthy for the symbol: then `quote` is the last known
    price (or None) and nothing may fill, trigger or stop out on it.
    """

    symbol: str
    seq: int
    quote: Quote | None
    tradable: bool

    def to_wire(self) -> QuotePayload:
        """The JSON shape sent to stream subscribers and cached in Redis (prices as strings)."""
        q = self.quote
        return {
            "symbol": self.symbol,
            "seq": self.seq,
            "tradable": self.tradable,
            "venue": q.venue if q else None,
            "bid": str(q.bid) if q else None,
            "ask": str(q.ask) if q else None,
            "ts": q.venue_ts // 1_000_000 if q else None,
        }
