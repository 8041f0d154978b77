"""Fans selected quotes out to the Redis ticker cache and, through the channel layer, the stream
hubs, off the hot path."""

import asyncio
import json
import logging
from collections.abc import Callable

from django.conf import settings

from kernel.redis import async_client, key
from marketdata.hub import ALL_QUOTES_GROUP, Envelope, batch_wire, envelope
from marketdata.quotes import SelectedQuote

log = logging.getLogger(__name__)

PUBLISH_CHUNK = 500  # quotes per channel-layer message

# A batch of quotes, fenced: nothing is cached or sent if a newer leader's fence is in KEYS[1].
# ARGV: fence, ticker TTL, number of tickers n, then n (ticker key, JSON) pairs, then (channel,
# message) pairs. Returns 1 if sent, 0 if refused.
_PUBLISH = """
if tonumber(redis.call('get', KEYS[1]) or '0') > tonumber(ARGV[1]) then return 0 end
local n = tonumber(ARGV[3])
for i = 4, 3 + 2 * n, 2 do redis.call('set', ARGV[i], ARGV[i + 1], 'EX', ARGV[2]) end
for i = 4 + 2 * n, #ARGV, 2 do redis.call('publish', ARGV[i], ARGV[i + 1]) end
return 1
"""


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

    def __init__(
        self,
        *,
        max_pending: int = 100_000,
        leading: Callable[[], bool] = lambda: True,
        fence: tuple[str, int] = ("market", 0),
    ) -> None:
        self.pending: list[SelectedQuote] = []
        self.max_pending = max_pending
        self.leading = leading  # a batch is sent only while this process's leader lease is valid
        # (lease name, fence number): Redis refuses the batch once a newer leader's fence is there.
        self.fence_key, self.fence = key("fence", fence[0]), fence[1]
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
                if not await self.flush(batch):
                    self.fenced += len(batch)
            except Exception:
                log.exception("quote publish of %d quotes failed", len(batch))

    async def flush(self, batch: list[SelectedQuote]) -> bool:
        """Cache, then send the batch to the channel layer, in one script (one Redis round trip
        per batch, however large) that first checks the fence: a snapshot read after an update
        arrived is never older than it, and a superseded leader sends nothing. False if refused."""
        envelopes = [quote_envelope(sq) for sq in batch]
        latest = {env["key"]: env["data"] for env in envelopes}
        args: list[str | bytes | int] = [self.fence, settings.TICKER_CACHE_TTL, len(latest)]
        for symbol, wire in latest.items():
            args += [ticker_key(symbol), json.dumps(wire)]
        for start in range(0, len(envelopes), PUBLISH_CHUNK):
            args += batch_wire(ALL_QUOTES_GROUP, envelopes[start : start + PUBLISH_CHUNK])
        sent = await async_client().eval(_PUBLISH, 1, self.fence_key, *args)  # type: ignore[arg-type, misc]
        return bool(sent)
