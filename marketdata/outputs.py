"""Market loop stages around the LP manager: the candle stage (build bars from the selected venue's
trades, or its mid when it has no trade feed; cache, publish, store, notify) and the order-book
cache (latest top of book per venue)."""

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any, cast

from django.conf import settings
from django.db import close_old_connections, connections
from django.utils.module_loading import import_string
from redis.exceptions import RedisError

from kernel.lease import StaleFence
from kernel.redis import async_client, key
from marketdata.bars import MID, TRADES, Bar, bar_to_wire
from marketdata.candles import ZERO, CandleBuilder
from marketdata.publisher import book_key, candle_cache_key, candle_group
from marketdata.quotes import Quote, SelectedQuote, Trade
from marketdata.selectors import Tick, candle_restore_inputs
from marketdata.services import candles_store
from marketdata.streams import astream_send

log = logging.getLogger(__name__)

CandleListener = Callable[[Bar], None]
UNSTORED_KEY = "candles-unstored"  # closed bars a run could not store, for the next run


def candle_channel(symbol: str, timeframe: str) -> str:
    return f"candles:{symbol}:{timeframe}"


def book_to_wire(quote: Quote) -> dict[str, Any]:
    return {
        "venue": quote.venue,
        "symbol": quote.symbol,
        "bids": [[str(quote.bid), str(quote.bid_size) if quote.bid_size is not None else None]],
        "asks": [[str(quote.ask), str(quote.ask_size) if quote.ask_size is not None else None]],
        "ts": quote.venue_ts // 1_000_000,
    }


def bar_dump(bar: Bar) -> str:
    """A closed bar as kept in Redis between runs (prices as strings, exact)."""
    return json.dumps(
        [
            bar.symbol,
            bar.timeframe,
            bar.start,
            *(str(v) for v in (bar.open, bar.high, bar.low, bar.close, bar.volume)),
            bar.tick_count,
            bar.partial,
            bar.source,
            bar.venue,
        ]
    )


def bar_load(raw: str | bytes) -> Bar:
    fields = json.loads(raw)
    symbol, timeframe, start, o, h, low, c, volume, ticks, partial = fields[:10]
    # Bars kept by a run from before bars carried their source were built from the mid.
    source, venue = fields[10:12] if len(fields) >= 12 else (MID, "")
    return Bar(
        symbol,
        timeframe,
        start,
        Decimal(o),
        Decimal(h),
        Decimal(low),
        Decimal(c),
        Decimal(volume),
        tick_count=ticks,
        partial=partial,
        source=source,
        venue=venue,
    )


class RecentTradeIds:
    """The last `size` trade ids seen per (venue, symbol): a trade sent twice (Coinbase repeats
    recent trades in the snapshot after every subscribe) must count once in a bar's volume."""

    def __init__(self, size: int = 5000) -> None:
        self.size = size
        self.seen: dict[tuple[str, str], tuple[deque[str], set[str]]] = {}

    def add(self, trade: Trade) -> bool:
        """False when the trade was already seen."""
        key_ = (trade.venue, trade.symbol)
        entry = self.seen.get(key_)
        if entry is None:
            entry = self.seen[key_] = (deque(), set())
        order, ids = entry
        if trade.trade_id in ids:
            return False
        ids.add(trade.trade_id)
        order.append(trade.trade_id)
        if len(order) > self.size:
            ids.discard(order.popleft())
        return True


class CandleStage:
    """An LP manager output. A symbol's bars are built from the trades of its selected venue when
    that venue streams them (`trade_venues`, kept by the market loop; `on_trade`), else from the
    selected mid. Closed bars are cached in Redis and published at once, then stored in the database
    from a dedicated thread (retried while the database is away) and handed to the CANDLE_LISTENERS
    once stored."""

    def __init__(
        self, *, grace_ms: int = 250, max_unstored: int = 100_000, fence: tuple[str, int] | None = None
    ) -> None:
        self.builder = CandleBuilder()
        self.fence = fence  # the leader lease's (name, number): a superseded leader stores no bar
        self.fenced = 0
        self.grace_ns = grace_ms * 1_000_000
        self.max_unstored = max_unstored
        self.listeners: list[CandleListener] = [import_string(p) for p in settings.CANDLE_LISTENERS]
        self.pending: list[Bar] = []
        self.unstored: list[Bar] = []
        self.stored = 0
        self.dropped = 0
        self.wakeup = asyncio.Event()
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="candles")
        self.trade_venues: set[str] = set()
        self.trade_ids = RecentTradeIds()
        self.trades = 0
        self.trades_duplicate = 0

    def __call__(self, selected: SelectedQuote) -> None:
        q = selected.quote
        if q is None or not selected.tradable or q.venue in self.trade_venues:
            return
        closed = self.builder.add(selected.symbol, q.venue_ts, (q.bid + q.ask) / 2, ZERO, MID, q.venue)
        if closed:
            self.pending.extend(closed)
            self.wakeup.set()

    def on_trade(self, trade: Trade) -> None:
        """A trade of the symbol's selected venue (the market loop checks that)."""
        if not self.trade_ids.add(trade):
            self.trades_duplicate += 1
            return
        self.trades += 1
        closed = self.builder.add(trade.symbol, trade.venue_ts, trade.price, trade.size, TRADES, trade.venue)
        if closed:
            self.pending.extend(closed)
            self.wakeup.set()

    def close_due(self, now_ns: int) -> None:
        """The timer path: close bars whose end passed (a little grace for quotes in flight)."""
        closed = self.builder.close_due(now_ns - self.grace_ns)
        if closed:
            self.pending.extend(closed)
            self.wakeup.set()

    async def run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wakeup.wait(), timeout=1.0 if self.unstored else None)
            self.wakeup.clear()
            await self.flush()

    async def flush(self) -> None:
        batch, self.pending = self.pending, []
        if batch:
            try:
                await self.publish(batch)
            except Exception:
                log.exception("candle publish of %d bars failed", len(batch))
            self.unstored.extend(batch)
            if len(self.unstored) > self.max_unstored:
                excess = len(self.unstored) - self.max_unstored
                self.dropped += excess
                del self.unstored[:excess]
                log.error("candle store backlog full: %d oldest bars dropped", excess)
        if self.unstored:
            bars = self.unstored
            try:
                await asyncio.get_running_loop().run_in_executor(self.executor, self.store, bars)
            except StaleFence:
                self.fenced += len(bars)
                self.unstored = self.unstored[len(bars) :]
                log.error("candle store: %d bars refused, a newer leader's fence is recorded", len(bars))
            except Exception as exc:
                log.warning("candle store of %d bars failed, will retry: %s", len(bars), exc)
            else:
                self.unstored = self.unstored[len(bars) :]

    async def publish(self, bars: list[Bar]) -> None:
        ttl, size = settings.CANDLE_CACHE_TTL, settings.CANDLE_CACHE_SIZE
        wires = [bar_to_wire(bar) for bar in bars]
        async with async_client().pipeline(transaction=False) as pipe:
            for bar, wire in zip(bars, wires):
                cache = candle_cache_key(bar.symbol, bar.timeframe)
                pipe.zremrangebyscore(cache, bar.start, bar.start)
                pipe.zadd(cache, {json.dumps(wire): bar.start})
                pipe.zremrangebyrank(cache, 0, -size - 1)
                pipe.expire(cache, ttl)
            await pipe.execute()
        for bar, wire in zip(bars, wires):
            await astream_send(
                candle_group(bar.symbol, bar.timeframe),
                candle_channel(bar.symbol, bar.timeframe),
                "candle",
                wire,
            )

    def store(self, bars: list[Bar]) -> None:
        """In the candle thread: insert (a bar already stored stays as it is), then notify."""
        close_old_connections()
        candles_store(bars=bars, fence=self.fence)
        self.stored += len(bars)
        for bar in bars:
            for listener in self.listeners:
                try:
                    listener(bar)
                except Exception:
                    log.exception("candle listener %r failed on %s %s", listener, bar.symbol, bar.timeframe)

    async def restore(self, symbols: list[str], now: int) -> None:
        """At start: store the bars a previous run left in Redis, then rebuild the bars it left open
        from the stored bars and ticks, so the bars closed after a restart cover their whole period
        (those whose period ended meanwhile are closed now and stored with the next flush)."""
        self.builder.since = now
        try:
            async with async_client().pipeline(transaction=True) as pipe:
                pipe.lrange(key(UNSTORED_KEY), 0, -1)
                pipe.delete(key(UNSTORED_KEY))
                spilled, _ = await pipe.execute()
        except RedisError as exc:
            # They stay in Redis for the next start; the open bars are rebuilt from the database.
            log.error("candle store: bars left in Redis by the previous run not read (%s)", exc)
            spilled = []
        if spilled:
            self.unstored.extend(bar_load(raw) for raw in spilled)
            log.info("candle store: %d bars left by the previous run queued for storage", len(spilled))
            await self.flush()
        loop = asyncio.get_running_loop()
        stored = await loop.run_in_executor(self.executor, self._restore_inputs, symbols, now)
        for symbol, (bars, ticks) in stored.items():
            closed = self.builder.restore(symbol, bars, ticks, now)
            if closed:
                log.info("%s: %d bars the previous run left open rebuilt from its ticks", symbol, len(closed))
                self.pending.extend(closed)
                self.wakeup.set()

    def _restore_inputs(self, symbols: list[str], now: int) -> dict[str, tuple[list[Bar], list[Tick]]]:
        close_old_connections()
        return candle_restore_inputs(symbols=symbols, now=now)

    async def shutdown(self, timeout_s: float = 5.0) -> None:
        """Store what is pending, retrying for up to `timeout_s`. Bars the database would not take
        are kept in Redis for the next run's `restore`; if Redis is away too, they are logged."""
        deadline = time.monotonic() + timeout_s
        await self.flush()
        while self.unstored and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            await self.flush()
        if not self.unstored:
            return
        bars, self.unstored = self.unstored, []
        try:
            await cast("Awaitable[int]", async_client().rpush(key(UNSTORED_KEY), *map(bar_dump, bars)))
        except Exception:
            log.exception(
                "candle store: %d closed bars could not be stored nor kept: %s",
                len(bars),
                [bar_dump(bar) for bar in bars],
            )
        else:
            log.error("candle store: database unavailable, %d bars kept in Redis for the next run", len(bars))

    def close(self) -> None:
        self.executor.submit(connections.close_all)
        self.executor.shutdown(wait=True)


class OrderBookCache:
    """Latest top of book per (venue, symbol) from every venue, in Redis for ORDER_BOOK_CACHE_TTL
    seconds (the replaced systems' order-book cache). Collected per quote, written in batches."""

    def __init__(self) -> None:
        self.latest: dict[tuple[str, str], Quote] = {}

    def __call__(self, quote: Quote) -> None:
        self.latest[(quote.venue, quote.symbol)] = quote

    async def flush(self) -> None:
        batch, self.latest = self.latest, {}
        if not batch:
            return
        ttl = settings.ORDER_BOOK_CACHE_TTL
        async with async_client().pipeline(transaction=False) as pipe:
            for (venue, symbol), quote in batch.items():
                pipe.set(book_key(venue, symbol), json.dumps(book_to_wire(quote)), ex=ttl)
            await pipe.execute()
