"""Bars built from a venue's trade stream: the adapters' trade path, repeated trades, and the proof
that the bars built live equal, field for field, the venue's own bars for the same minutes (the
fakes fold their REST candles from the trades they stream)."""

import dataclasses
import time
from decimal import Decimal

import pytest

from marketdata.adapters.base import VenueConfig
from marketdata.adapters.binance import BinanceAdapter, BinanceRest
from marketdata.adapters.coinbase import CoinbaseAdapter, CoinbaseRest
from marketdata.bars import Bar
from marketdata.outputs import CandleStage
from marketdata.quotes import Quote, Trade
from tests.fakes.binance import BinanceRestFake, BinanceWsFake
from tests.fakes.coinbase import CoinbaseKey, CoinbaseRestFake, CoinbaseWsFake
from tests.fakes.fixtures import fast_backoff, running
from tests.fakes.tape import Tape
from tests.support.waiting import await_until

NS = 1_000_000_000


@pytest.fixture(autouse=True)
def no_env_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COINBASE_API_KEY_NAME", raising=False)
    monkeypatch.delenv("COINBASE_PRIVATE_KEY_PEM", raising=False)


@pytest.fixture
def stage(settings: object) -> CandleStage:
    settings.CANDLE_LISTENERS = []  # type: ignore[attr-defined]
    stage = CandleStage()
    yield stage
    stage.close()


def past_bucket() -> int:
    """The start of a 5-minute bucket that ended at least a minute ago."""
    now = int(time.time())
    return (now - 360) // 300 * 300


def prints(bucket: int) -> list[tuple[str, str, str, int]]:
    """(price, size, side, time ns) over the five minutes of `bucket`, two prints in one instant."""
    at = [5, 17.25, 42, 61, 61, 119.5, 180, 181, 240.125, 299]
    prices = [
        "95000.01",
        "95010.5",
        "94990",
        "95001",
        "95003.25",
        "95020",
        "94980.75",
        "94985",
        "95000",
        "95002",
    ]
    sizes = ["0.015", "1.2", "0.0003", "2", "0.5", "0.75", "0.01", "3.1415", "0.2", "0.05"]
    sides = ["BUY", "SELL", "BUY", "BUY", "SELL", "SELL", "BUY", "SELL", "BUY", "SELL"]
    return [(p, q, s, int((bucket + t) * NS)) for t, p, q, s in zip(at, prices, sizes, sides, strict=True)]


def fields(bar: Bar) -> tuple[object, ...]:
    return (bar.timeframe, bar.start, bar.open, bar.high, bar.low, bar.close, bar.volume)


async def test_coinbase_market_trades_become_trades_in_time_order(coinbase_key: CoinbaseKey) -> None:
    trades: list[Trade] = []
    bucket = past_bucket()
    async with CoinbaseWsFake() as fake:
        venue = VenueConfig(
            code="cb", kind="coinbase", config={"ws_url": fake.url}, symbols={"BTC-USD": "BTCUSD"}
        )
        adapter = CoinbaseAdapter(venue, lambda q: None, trade_sink=trades.append, backoff=fast_backoff())
        async with running(adapter):
            await fake.wait_until(lambda: fake.subscribed("market_trades", "BTC-USD") == 1)
            assert await fake.trades("BTC-USD", prints(bucket)[:3]) == 1
            await await_until(lambda: len(trades) == 3)
    assert [t.venue_ts for t in trades] == sorted(t.venue_ts for t in trades)
    first = trades[0]
    assert (first.symbol, first.venue, first.price, first.size, first.side) == (
        "BTCUSD",
        "cb",
        Decimal("95000.01"),
        Decimal("0.015"),
        "BUY",
    )
    assert first.venue_ts == (bucket + 5) * NS and first.trade_id == "1000001"
    assert adapter.stats.trades == 3 and adapter.stats.malformed == 0
    subscribed = [m["channel"] for m in fake.subscribe_messages]
    assert sorted(subscribed) == ["heartbeats", "level2", "market_trades", "ticker"]


def test_a_coinbase_venue_configured_without_market_trades_does_not_stream_trades() -> None:
    venue = VenueConfig(code="cb", kind="coinbase", config={"channels": ["heartbeats", "ticker"]})
    assert not CoinbaseAdapter(venue, lambda q: None, trade_sink=lambda t: None).streams_trades
    assert CoinbaseAdapter(
        dataclasses.replace(venue, config={}), lambda q: None, trade_sink=print
    ).streams_trades


async def test_an_adapter_without_a_trade_sink_does_not_subscribe_to_trades() -> None:
    async with CoinbaseWsFake() as fake:
        venue = VenueConfig(
            code="cb", kind="coinbase", config={"ws_url": fake.url}, symbols={"BTC-USD": "BTCUSD"}
        )
        async with running(CoinbaseAdapter(venue, lambda q: None, backoff=fast_backoff())):
            await fake.wait_until(lambda: len(fake.subscribe_messages) == 3)  # heartbeats, level2, ticker
    assert "market_trades" not in {m["channel"] for m in fake.subscribe_messages}


async def test_binance_trade_streams_become_trades_with_the_takers_side() -> None:
    trades: list[Trade] = []
    quotes: list[Quote] = []
    async with BinanceWsFake() as fake:
        venue = VenueConfig(
            code="bn", kind="binance", config={"ws_url": fake.url}, symbols={"btcusdt": "BTCUSD"}
        )
        adapter = BinanceAdapter(venue, quotes.append, trade_sink=trades.append, backoff=fast_backoff())
        async with running(adapter):
            await fake.wait_until(lambda: fake.subscribed("btcusdt@trade") == 1)
            await fake.trade("BTCUSDT", "95000.10", "0.25", buyer_maker=True, ts_ns=1_772_445_600_123_000_000)
            await fake.book_ticker("BTCUSDT", "95000.01", "1", "95000.02", "2")
            await await_until(lambda: len(trades) == 1 and len(quotes) == 1)
    assert fake.paths == ["/stream?streams=btcusdt@bookTicker/btcusdt@trade"]
    trade = trades[0]
    assert (trade.symbol, trade.venue, trade.price, trade.size, trade.side) == (
        "BTCUSD",
        "bn",
        Decimal("95000.10"),
        Decimal("0.25"),
        "SELL",
    )
    assert trade.venue_ts == 1_772_445_600_123_000_000 and trade.trade_id == "1000001"


async def test_bars_built_from_coinbase_trades_equal_its_candles_and_a_reconnect_counts_nothing_twice(
    coinbase_key: CoinbaseKey, stage: CandleStage
) -> None:
    bucket = past_bucket()
    tape = Tape(since=bucket)
    stage.trade_venues.add("cb")
    async with CoinbaseWsFake(tape=tape) as fake:
        venue = VenueConfig(
            code="cb", kind="coinbase", config={"ws_url": fake.url}, symbols={"BTC-USD": "BTCUSD"}
        )
        adapter = CoinbaseAdapter(venue, lambda q: None, trade_sink=stage.on_trade, backoff=fast_backoff())
        async with running(adapter):
            await fake.wait_until(lambda: fake.subscribed("market_trades", "BTC-USD") == 1)
            batch = prints(bucket)
            for start in range(0, len(batch), 3):  # in 250-ms-like batches
                await fake.trades("BTC-USD", batch[start : start + 3])
            await await_until(lambda: stage.trades == len(batch))
            fake.drop()  # the snapshot after the reconnect repeats the recent trades
            await fake.wait_until(
                lambda: fake.connects == 2 and fake.subscribed("market_trades", "BTC-USD") == 1
            )
            await await_until(lambda: stage.trades_duplicate == len(batch))
    stage.close_due(time.time_ns())
    built = {(b.timeframe, b.start): b for b in stage.pending}
    with (
        CoinbaseRestFake(coinbase_key, tape=tape) as rest,
        CoinbaseRest(signer=None, base_url=rest.url) as client,
    ):
        minutes = client.candles(
            product_id="BTC-USD", symbol="BTCUSD", timeframe="1m", start=bucket, end=bucket + 300
        )
        (five,) = client.candles(
            product_id="BTC-USD", symbol="BTCUSD", timeframe="5m", start=bucket, end=bucket + 300
        )
    assert len(minutes) == 4  # nothing traded in the third minute: no bar on either side
    for venue_bar in [*minutes, five]:
        mine = built[(venue_bar.timeframe, venue_bar.start)]
        assert fields(mine) == fields(venue_bar)
        assert (mine.source, mine.venue, mine.partial) == ("trades", "cb", False)
    assert built[("5m", bucket)].volume == Decimal("7.8668") and built[("5m", bucket)].tick_count == 10


async def test_bars_built_from_binance_trades_equal_its_klines_trade_count_included(
    stage: CandleStage,
) -> None:
    bucket = past_bucket()
    tape = Tape(since=bucket)
    stage.trade_venues.add("bn")
    async with BinanceWsFake(tape=tape) as fake:
        venue = VenueConfig(
            code="bn", kind="binance", config={"ws_url": fake.url}, symbols={"btcusdt": "BTCUSD"}
        )
        adapter = BinanceAdapter(venue, lambda q: None, trade_sink=stage.on_trade, backoff=fast_backoff())
        async with running(adapter):
            await fake.wait_until(lambda: fake.subscribed("btcusdt@trade") == 1)
            for price, size, side, ts in prints(bucket):
                await fake.trade("BTCUSDT", price, size, buyer_maker=side == "SELL", ts_ns=ts)
            await await_until(lambda: stage.trades == 10)
    stage.close_due(time.time_ns())
    built = {(b.timeframe, b.start): b for b in stage.pending}
    with BinanceRestFake(tape=tape) as rest, BinanceRest(base_url=rest.url) as client:
        minutes = client.klines(
            name="btcusdt", symbol="BTCUSD", timeframe="1m", start=bucket, end=bucket + 300
        )
        (five,) = client.klines(
            name="btcusdt", symbol="BTCUSD", timeframe="5m", start=bucket, end=bucket + 300
        )
    assert len(minutes) == 4  # nothing traded in the third minute: no bar on either side
    for venue_bar in [*minutes, five]:
        mine = built[(venue_bar.timeframe, venue_bar.start)]
        assert (*fields(mine), mine.tick_count) == (*fields(venue_bar), venue_bar.tick_count)
        assert (mine.source, mine.venue) == ("trades", "bn")
