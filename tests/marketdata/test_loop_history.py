"""The market loop's history: warm-up from the venue's public candles at start, bars from the selected
venue's trades, and after a reconnect the gap backfilled, the venue's bar replacing the one built
here (counted)."""

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from types import SimpleNamespace

import pytest
from asgiref.sync import sync_to_async

from marketdata.adapters.base import AdapterStats
from marketdata.bars import TIMEFRAME_SECONDS
from marketdata.loop import MarketLoop
from marketdata.lpmanager import VenueSettings
from marketdata.models import Candle, Instrument, Venue, VenueKind, VenueSymbol
from marketdata.quotes import Quote, Trade
from tests.fakes.coinbase import CoinbaseKey, CoinbaseRestFake, CoinbaseWsFake
from tests.fakes.tape import Tape
from tests.support.instruments import make_instrument
from tests.support.waiting import await_until

NS = 1_000_000_000


@pytest.fixture(autouse=True)
def no_env_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COINBASE_API_KEY_NAME", raising=False)
    monkeypatch.delenv("COINBASE_PRIVATE_KEY_PEM", raising=False)


def coinbase_venue(btc: Instrument, ws_url: str, rest_url: str) -> Venue:
    venue = Venue.objects.create(
        code="cb",
        name="Coinbase",
        kind=VenueKind.COINBASE,
        config={"ws_url": ws_url, "rest_url": rest_url, "backoff_base_s": 0.05, "backoff_cap_s": 0.2},
    )
    VenueSymbol.objects.create(venue=venue, instrument=btc, venue_symbol="BTC-USD")
    return venue


@contextlib.asynccontextmanager
async def running(loop: MarketLoop) -> AsyncIterator[MarketLoop]:
    task = asyncio.create_task(loop.run())
    try:
        yield loop
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def per_timeframe() -> dict[tuple[str, str, str], int]:
    counts: dict[tuple[str, str, str], int] = {}
    for tf, source, venue in Candle.objects.values_list("timeframe", "source", "venue"):
        counts[(tf, source, venue)] = counts.get((tf, source, venue), 0) + 1
    return counts


@pytest.mark.django_db(transaction=True)
async def test_the_loop_warms_up_builds_bars_from_trades_and_backfills_a_reconnect_gap(
    settings, tick_table, thread_db_closed, coinbase_key: CoinbaseKey
):
    settings.CANDLE_WARMUP_BARS = 200
    now = int(time.time())
    minute = now - now % 60
    tape = Tape(since=minute - 60)  # the venue's candles come from its trades from the last minute on
    btc = await sync_to_async(make_instrument)("BTCUSD", digits=2)
    async with CoinbaseWsFake(tape=tape) as ws:
        with CoinbaseRestFake(coinbase_key, tape=tape) as rest:
            await sync_to_async(coinbase_venue)(btc, ws.url, rest.url)
            loop = MarketLoop(reload_interval_s=0.5)
            async with running(loop):
                await asyncio.wait_for(loop.warmed_up.wait(), 30)
                counts = await sync_to_async(per_timeframe)()
                for tf in TIMEFRAME_SECONDS:
                    assert counts[(tf, "backfill", "cb")] >= 200
                assert not any(r.headers.get("Authorization") for r in rest.requests)

                await ws.wait_until(lambda: ws.subscribed("market_trades", "BTC-USD") == 1)
                if time.time() % 60 > 45:  # the prints' minute and the drop must share one next minute
                    await asyncio.sleep(61 - time.time() % 60)
                # Only the selected venue's trades make bars (it stays selected for stale_after_ms).
                await ws.l2_update("BTC-USD", [("bid", "95000.00", "1"), ("offer", "95000.50", "1")])
                await await_until(lambda: loop.manager.selected.get("BTCUSD") == "cb")
                minute = int(time.time()) // 60 * 60 - 60  # the minute that just ended
                start = datetime.fromtimestamp(minute, UTC)
                await ws.trades(
                    "BTC-USD",
                    [
                        ("95001.5", "0.5", "BUY", (minute + 10) * NS),
                        ("95003", "0.25", "SELL", (minute + 30) * NS),
                    ],
                )
                await await_until(lambda: loop.candles.trades == 2, timeout_s=5)

                def built() -> Candle | None:
                    return Candle.objects.filter(timeframe="1m", start=start).first()

                bar = None
                for _ in range(50):
                    if (bar := await sync_to_async(built)()) is not None:
                        break
                    await asyncio.sleep(0.1)
                assert bar is not None
                assert (bar.source, bar.venue, bar.volume, bar.close, bar.replaced) == (
                    "trades",
                    "cb",
                    Decimal("0.75"),
                    Decimal("95003"),
                    False,
                )

                ws.drop()  # a reconnect: its gap is backfilled from the venue's candles
                await await_until(lambda: loop.warm_ups == 2, timeout_s=20)
                await sync_to_async(bar.refresh_from_db)()
                assert (bar.source, bar.venue, bar.replaced, bar.volume, bar.close) == (
                    "backfill",
                    "cb",
                    True,
                    Decimal("0.75"),
                    Decimal("95003"),
                )
    assert loop.warm_up_s is not None and loop.warm_up_s < 30


@pytest.mark.django_db
def test_only_the_selected_venues_trades_reach_the_bars_and_a_failover_marks_the_minute_partial(settings):
    settings.CANDLE_LISTENERS = []
    loop = MarketLoop()
    loop.manager.configure({"cb": VenueSettings(1, 5000), "sim": VenueSettings(5, 5000)})
    loop.candles.trade_venues.add("cb")
    t0 = (time.time_ns() // (60 * NS) - 2) * 60 * NS

    def quote(venue: str, at: int) -> Quote:
        return Quote("BTCUSD", venue, Decimal(100), Decimal(101), venue_ts=at, recv_ts=time.time_ns())

    def trade(venue: str, at: int, trade_id: str) -> Trade:
        return Trade("BTCUSD", venue, Decimal("100.5"), Decimal(2), "BUY", trade_id, at, time.time_ns())

    loop.on_quote(quote("sim", t0))
    loop.on_trade(trade("cb", t0 + NS, "1"))  # cb is not selected yet: not in a bar
    loop.on_quote(quote("cb", t0 + 2 * NS))
    loop.on_trade(trade("cb", t0 + 3 * NS, "2"))
    loop.on_trade(trade("cb", time.time_ns() + 3600 * NS, "3"))  # from the future: refused
    loop.manager.configure({"cb": VenueSettings(1, 5000, enabled=False), "sim": VenueSettings(5, 5000)})
    loop.on_quote(quote("sim", t0 + 10 * NS))  # failover to sim inside the minute
    loop.on_quote(quote("sim", t0 + 61 * NS))
    assert loop.trades_unselected == 1 and loop.candles.trades == 1
    minute = next(b for b in loop.candles.pending if b.timeframe == "1m")
    assert (minute.start, minute.open, minute.volume, minute.venue, minute.partial) == (
        t0 // NS,
        Decimal("100.5"),
        Decimal(2),
        "sim",
        True,
    )


@pytest.mark.django_db
async def test_reconnects_during_a_gap_fill_are_backfilled_together_after_it(settings):
    settings.CANDLE_LISTENERS = []
    loop = MarketLoop()
    fills: list[tuple[set[str] | None, int | None]] = []
    release = asyncio.Event()

    async def warm_up(venue_codes: set[str] | None, gap_from: int | None = None) -> None:
        fills.append((venue_codes, gap_from))
        await release.wait()

    loop.warm_up = warm_up  # type: ignore[method-assign]
    stats = {code: AdapterStats(connects=1, last_message_ns=100 * NS) for code in ("a", "b", "c")}
    loop.adapters = {code: (None, SimpleNamespace(stats=s), None) for code, s in stats.items()}  # type: ignore[misc]
    loop.check_reconnects()  # first connects: nothing to fill
    assert fills == []
    stats["a"].connects, stats["a"].last_message_ns = 2, 200 * NS
    loop.check_reconnects()
    await asyncio.sleep(0)
    assert fills == [({"a"}, 100)]
    stats["b"].connects, stats["b"].last_message_ns = 2, 300 * NS
    loop.check_reconnects()
    stats["c"].connects = 3
    loop.check_reconnects()
    await asyncio.sleep(0)
    assert len(fills) == 1 and loop.gaps == {"b": 100 * NS, "c": 100 * NS}  # waiting for the first fill
    release.set()
    await asyncio.sleep(0.01)
    loop.check_reconnects()
    await asyncio.sleep(0)
    assert fills == [({"a"}, 100), ({"b", "c"}, 100)] and not loop.gaps
