"""A venue fake's tape: the trades it streamed, per product, from which its REST candles are folded,
so bars a client builds from the stream can be checked against the venue's own bars field for field.

Buckets that start before `since` (the history before the fake began trading) come from a
deterministic function of the bucket instead, so a backfill of months costs nothing to serve."""

import itertools
import threading
import time
from dataclasses import dataclass
from decimal import Decimal


@dataclass(frozen=True)
class TapeTrade:
    product: str
    trade_id: int
    price: Decimal
    size: Decimal
    side: str  # the venue's own word for it (Coinbase "BUY"/"SELL", Binance "BUY"/"SELL" taker side)
    ts_ns: int


@dataclass(frozen=True)
class Ohlcv:
    start: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    count: int
    quote_volume: Decimal
    taker_buy_volume: Decimal
    taker_buy_quote_volume: Decimal


class Tape:
    def __init__(self, *, since: float | None = None) -> None:
        self.since = int(time.time() if since is None else since)
        self.trades: dict[str, list[TapeTrade]] = {}
        self._ids = itertools.count(1_000_001)
        self._lock = threading.Lock()  # the REST fake reads from its own thread

    def record(self, product: str, price: str, size: str, side: str, ts_ns: int) -> TapeTrade:
        trade = TapeTrade(product, next(self._ids), Decimal(price), Decimal(size), side, ts_ns)
        with self._lock:
            self.trades.setdefault(product, []).append(trade)
        return trade

    def recent(self, product: str, count: int) -> list[TapeTrade]:
        with self._lock:
            return list(self.trades.get(product, [])[-count:])

    def bucket(self, product: str, start: int, step: int) -> Ohlcv | None:
        """The bar of [start, start + step) folded from the tape, None when nothing traded. Trades in
        time order (ties in the order they were streamed): the first opens, the last closes."""
        lo, hi = start * 1_000_000_000, (start + step) * 1_000_000_000
        with self._lock:
            inside = sorted(
                (t for t in self.trades.get(product, []) if lo <= t.ts_ns < hi), key=lambda t: t.ts_ns
            )
        if not inside:
            return None
        return Ohlcv(
            start=start,
            open=inside[0].price,
            high=max(t.price for t in inside),
            low=min(t.price for t in inside),
            close=inside[-1].price,
            volume=sum((t.size for t in inside), Decimal(0)),
            count=len(inside),
            quote_volume=sum((t.size * t.price for t in inside), Decimal(0)),
            taker_buy_volume=sum((t.size for t in inside if t.side == "BUY"), Decimal(0)),
            taker_buy_quote_volume=sum((t.size * t.price for t in inside if t.side == "BUY"), Decimal(0)),
        )
