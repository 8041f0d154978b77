import dataclasses
import json
from datetime import UTC, datetime
from decimal import Decimal as D

import pytest
from asgiref.sync import sync_to_async

from kernel.redis import sync_client
from marketdata.bars import Bar
from marketdata.models import Candle
from marketdata.outputs import CandleStage, OrderBookCache
from marketdata.publisher import book_key, candle_cache_key, candle_group
from marketdata.quotes import Quote, SelectedQuote, Trade
from marketdata.selectors import order_book_get
from marketdata.services import candles_store
from tests.support.instruments import make_instrument
from tests.support.streams import StreamTap

T0 = int(datetime(2026, 3, 2, 10, 0, tzinfo=UTC).timestamp())
NS = 1_000_000_000
closed_by_listener: list[Bar] = []


def remember(bar: Bar) -> None:
    assert Candle.objects.filter(instrument__symbol=bar.symbol, timeframe=bar.timeframe).exists()
    closed_by_listener.append(bar)


def mid_quote(seconds: float, mid: str, seq: int) -> SelectedQuote:
    m = D(mid)
    ts = int((T0 + seconds) * NS)
    q = Quote("EURUSD", "sim", m - D("0.00005"), m + D("0.00005"), venue_ts=ts, recv_ts=ts)
    return SelectedQuote(symbol="EURUSD", seq=seq, quote=q, tradable=True)


@pytest.mark.django_db(transaction=True)
async def test_a_closed_bar_is_stored_cached_published_and_handed_to_listeners(settings, thread_db_closed):
    settings.CANDLE_LISTENERS = [f"{__name__}.remember"]
    closed_by_listener.clear()
    await sync_to_async(make_instrument)("EURUSD")
    stage = CandleStage()
    try:
        async with StreamTap(candle_group("EURUSD", "1m")) as tap:  # what every web process's hub hears
            mids = [(0, "1.1000"), (30, "1.1010"), (59, "1.0990"), (60, "1.1005")]
            for seq, (t, mid) in enumerate(mids, 1):
                stage(mid_quote(t, mid, seq))
            stage(SelectedQuote(symbol="EURUSD", seq=5, quote=None, tradable=False))
            await stage.flush()
            event = await tap.receive()
    finally:
        stage.close()

    expected = {
        "symbol": "EURUSD",
        "tf": "1m",
        "start": "2026-03-02T10:00:00+00:00",
        "o": "1.10000",
        "h": "1.10100",
        "l": "1.09900",
        "c": "1.09900",
        "volume": "0",
        "ticks": 3,
        "synthetic": False,
        "source": "mid",
        "venue": "sim",
    }
    assert event == {"event": "candle", "channel": "candles:EURUSD:1m", "data": expected}
    cached = sync_client().zrange(candle_cache_key("EURUSD", "1m"), 0, -1, withscores=True)
    assert [(json.loads(m), s) for m, s in cached] == [(expected, T0)]
    assert 0 < sync_client().ttl(candle_cache_key("EURUSD", "1m")) <= settings.CANDLE_CACHE_TTL
    candle = await sync_to_async(Candle.objects.get)()
    assert (candle.timeframe, candle.start, candle.open, candle.high, candle.low, candle.close) == (
        "1m",
        datetime.fromtimestamp(T0, UTC),
        D("1.1000"),
        D("1.1010"),
        D("1.0990"),
        D("1.0990"),
    )
    assert (candle.tick_count, candle.source, candle.venue, candle.volume) == (3, "mid", "sim", 0)
    assert [b.start for b in closed_by_listener] == [T0]


@pytest.mark.django_db(transaction=True)
async def test_the_cache_is_capped_per_symbol_and_timeframe(settings, thread_db_closed):
    settings.CANDLE_CACHE_SIZE = 3
    await sync_to_async(make_instrument)("EURUSD")
    stage = CandleStage()
    try:
        for minute in range(6):
            stage(mid_quote(minute * 60, "1.1", minute + 1))
        await stage.flush()
    finally:
        stage.close()
    starts = sync_client().zrange(candle_cache_key("EURUSD", "1m"), 0, -1, withscores=True)
    assert [s for _, s in starts] == [T0 + 120, T0 + 180, T0 + 240]


@pytest.mark.django_db
def test_storing_a_bar_twice_keeps_the_first_and_ignores_unknown_symbols():
    make_instrument("EURUSD")
    first = Bar("EURUSD", "1h", T0, D(1), D(2), D("0.5"), D("1.5"), tick_count=9)
    again = Bar("EURUSD", "1h", T0, D(7), D(7), D(7), D(7), tick_count=1)
    assert candles_store(bars=[first, Bar("NOPE", "1h", T0, D(1), D(1), D(1), D(1))]) == 1
    candles_store(bars=[again])
    (candle,) = Candle.objects.all()
    assert (candle.open, candle.tick_count) == (D(1), 9)


async def test_the_order_book_cache_keeps_the_latest_top_of_book_per_venue_for_30_seconds(settings):
    books = OrderBookCache()
    for venue, bid in (("lp-a", "1.08500"), ("lp-a", "1.08501"), ("lp-b", "1.08490")):
        b = D(bid)
        books(Quote("EURUSD", venue, b, b + D("0.0001"), venue_ts=T0 * NS, recv_ts=0, bid_size=D(2)))
    await books.flush()
    book = await sync_to_async(order_book_get)(venue="lp-a", symbol="EURUSD")
    assert book == {
        "venue": "lp-a",
        "symbol": "EURUSD",
        "bids": [["1.08501", "2"]],
        "asks": [["1.08511", None]],
        "ts": T0 * 1000,
    }
    assert (await sync_to_async(order_book_get)(venue="lp-b", symbol="EURUSD"))["bids"] == [["1.08490", "2"]]
    assert 0 < sync_client().ttl(book_key("lp-a", "EURUSD")) <= settings.ORDER_BOOK_CACHE_TTL == 30
    assert await sync_to_async(order_book_get)(venue="lp-c", symbol="EURUSD") is None


def trade(seconds: float, price: str, size: str, trade_id: str, venue: str = "cb") -> Trade:
    ts = int((T0 + seconds) * NS)
    return Trade("EURUSD", venue, D(price), D(size), "BUY", trade_id, venue_ts=ts, recv_ts=ts)


def cb_quote(seconds: float, mid: str, seq: int) -> SelectedQuote:
    selected = mid_quote(seconds, mid, seq)
    assert selected.quote is not None
    return dataclasses.replace(selected, quote=dataclasses.replace(selected.quote, venue="cb"))


def test_a_venue_with_a_trade_feed_makes_bars_from_trades_counted_once_never_from_its_mid(settings):
    settings.CANDLE_LISTENERS = []
    stage = CandleStage()
    stage.trade_venues.add("cb")
    try:
        stage(cb_quote(1, "1.2000", 1))  # ignored: cb's bars come from its trades
        for t in (
            trade(5, "1.1000", "2", "a"),
            trade(9, "1.1020", "0.5", "b"),
            trade(9, "1.1020", "0.5", "b"),
        ):
            stage.on_trade(t)
        stage(cb_quote(30, "1.0000", 2))
        stage.close_due(int((T0 + 61) * NS))
    finally:
        stage.close()
    (bar,) = stage.pending
    assert (bar.open, bar.high, bar.low, bar.close, bar.volume, bar.tick_count) == (
        D("1.1000"),
        D("1.1020"),
        D("1.1000"),
        D("1.1020"),
        D("2.5"),
        2,
    )
    assert (bar.source, bar.venue, stage.trades, stage.trades_duplicate) == ("trades", "cb", 2, 1)
