"""Where the dealing services get prices.

The market process owns the selected quotes. Web and worker processes read the copy it publishes to
the Redis ticker cache (marketdata.publisher); the market process itself (trigger watcher) hands its
in-memory latest quotes to the services. Either way a quote that is not tradable, older than its
venue's stale_after_ms, or from a simulated venue in a live deployment (settings.LIVERMORE_DEMO off;
the LP manager never selects one there, this is the dealing side's own check) is no price at all:
nothing fills, triggers or stops out on it.
"""

import json
import threading
import time
from decimal import Decimal
from typing import Protocol, cast

from django.conf import settings

from kernel.redis import sync_client
from marketdata.models import Venue, venue_simulated
from marketdata.publisher import ticker_key
from marketdata.quotes import SelectedQuote

from .pricing import Tick

DEFAULT_STALE_AFTER_MS = 5000
VENUE_CACHE_S = 5.0


class QuoteSource(Protocol):
    def tick(self, symbol: str) -> Tick | None:
        """The healthy raw (pre-markup) bid/ask of a symbol, or None."""

    def mid(self, symbol: str) -> Decimal | None:
        """The healthy mid of a symbol, or None (a pricing.RateLookup)."""


class _MaxAge:
    """Venue code -> how old (ms) its quote may be to price a deal: its stale_after_ms, or None when
    its prices may not be dealt on at all (simulated, in a live deployment). Read from the database
    at most every few seconds."""

    def __init__(self) -> None:
        self._values: dict[str, int | None] = {}
        self._loaded = 0.0
        self._live = False
        self._lock = threading.Lock()

    def __call__(self, venue: str) -> int | None:
        now = time.monotonic()
        live = not settings.LIVERMORE_DEMO
        if now - self._loaded > VENUE_CACHE_S or live != self._live:
            values = {
                code: None if live and venue_simulated(kind=kind, demo=demo) else stale
                for code, stale, kind, demo in Venue.objects.values_list(
                    "code", "stale_after_ms", "kind", "demo"
                )
            }
            with self._lock:
                self._values, self._loaded, self._live = values, now, live
        return self._values.get(venue, DEFAULT_STALE_AFTER_MS)


max_age_ms = _MaxAge()


class RedisQuoteSource:
    """Reads the ticker cache the market process writes (JSON of SelectedQuote.to_wire())."""

    def tick(self, symbol: str) -> Tick | None:
        raw = cast("bytes | None", sync_client().get(ticker_key(symbol)))
        if not raw:
            return None
        wire = json.loads(raw)
        if not wire.get("tradable") or wire.get("bid") is None or wire.get("ask") is None:
            return None
        venue = wire.get("venue") or ""
        max_age = max_age_ms(venue)
        if max_age is None or time.time_ns() // 1_000_000 - int(wire["ts"]) > max_age:
            return None
        return Tick(bid=Decimal(wire["bid"]), ask=Decimal(wire["ask"]), venue=venue, seq=wire.get("seq"))

    def mid(self, symbol: str) -> Decimal | None:
        tick = self.tick(symbol)
        return tick.mid if tick else None


class MemoryQuoteSource:
    """The latest selected quote per symbol, fed by the market loop (the trigger watcher's listener)."""

    def __init__(self) -> None:
        self.latest: dict[str, SelectedQuote] = {}

    def update(self, selected: SelectedQuote) -> None:
        self.latest[selected.symbol] = selected

    def tick(self, symbol: str) -> Tick | None:
        selected = self.latest.get(symbol)
        if selected is None or not selected.tradable or selected.quote is None:
            return None
        q = selected.quote
        max_age = max_age_ms(q.venue)
        if max_age is None or time.time_ns() - q.recv_ts > max_age * 1_000_000:
            return None
        return Tick(bid=q.bid, ask=q.ask, venue=q.venue, seq=selected.seq)

    def mid(self, symbol: str) -> Decimal | None:
        tick = self.tick(symbol)
        return tick.mid if tick else None


class QuoteSnapshot:
    """One dealing step's view of a QuoteSource: each symbol is read once, so every check and price
    of the step uses the same quote (and the Redis ticker cache is read once per symbol)."""

    def __init__(self, source: QuoteSource) -> None:
        self.source = source
        self.ticks: dict[str, Tick | None] = {}

    def tick(self, symbol: str) -> Tick | None:
        if symbol not in self.ticks:
            self.ticks[symbol] = self.source.tick(symbol)
        return self.ticks[symbol]

    def mid(self, symbol: str) -> Decimal | None:
        tick = self.tick(symbol)
        return tick.mid if tick else None


redis_quotes = RedisQuoteSource()
