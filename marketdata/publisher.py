"""Fans selected quotes out to the Redis ticker cache and, through the channel layer, the stream
hubs, off the hot path."""

import asyncio
import json
import logging
from collections.abc import Callable

from django.conf import settings

from kernel.redis import async_client, key
from marketdata.hub import ALL_QUOTES_GROUP, Envelope, asend_batch, envelope
from marketdata.quotes import SelectedQuote

log = logging.getLogger(__name__)

PUBLISH_CHUNK = 500  # quotes per channel-layer message


def quote_group(symbol: str) -> str:
    return f"quotes.{symbol}"


def ticker_key(symbol: str) -> str:
    return key("ticker", symbol)


def book_key(venue: str, symbol: str) -> str:
    return key("book", venue, symbol)


def candle_group(symbol: str, timeframe: str) -> str:
    return f"candles.{symbol}.{timeframe}"


def candle_cache_key(symbol: str, timeframe: str) -> str:
    return key("candles", symbol, timeframe)


def quote_envelope(sq: SelectedQuote) -> Envelope:
    """One quote for subscribers of quotes:SYMBOL and quotes:*, conflatable per symbol."""
    return envelope(
        [(quote_group(sq.symbol), f"quotes:{sq.symbol}"), (ALL_QUOTES_GROUP, "quotes:*")],
        "quote",
        sq.to_wire(),
        key=sq.symbol,
        seq=sq.seq,
    )


class QuotePublisher:
    """A sync output for the LP manager; a task drains what it collected in batches."""

    def __init__(self, *, max_pending: int = 100_000, leading: Callable[[], bool] = lambda: True) -> None:
        self.pending: list[SelectedQuote] = []
        self.max_pending = max_pending
        self.leading = leading  # a batch is sent only while this process's leader lease is valid
        self.dropped = 0
        self.fenced = 0
        self.wakeup = asyncio.Event()

    def __call__(self, selected: SelectedQuote) -> None:
        if len(self.pending) >= self.max_pending:
            self.dropped += 1
            return
        self.pending.append(selected)
        self.wakeup.set()

    async def run(self) -> None:
        while True:
            await self.wakeup.wait()
            self.wakeup.clear()
            batch, self.pending = self.pending, []
            if not self.leading():
                self.fenced += len(batch)
                continue
            try:
                await self.flush(batch)
            except Exception:
                log.exception("quote publish of %d quotes failed", len(batch))

    async def flush(self, batch: list[SelectedQuote]) -> None:
        """Cache, then send the batch to the channel layer (two Redis round trips per batch, however
        large): a snapshot read after an update arrived is never older than it."""
        envelopes = [quote_envelope(sq) for sq in batch]
        latest = {env["key"]: env["data"] for env in envelopes}
        async with async_client().pipeline(transaction=False) as pipe:
            for symbol, wire in latest.items():
                pipe.set(ticker_key(symbol), json.dumps(wire), ex=settings.TICKER_CACHE_TTL)
            await pipe.execute()
        for start in range(0, len(envelopes), PUBLISH_CHUNK):
            await asend_batch(ALL_QUOTES_GROUP, envelopes[start : start + PUBLISH_CHUNK])
