import asyncio
import json
from decimal import Decimal

from marketdata.adapters.base import VenueConfig
from marketdata.adapters.binance import BinanceAdapter
from marketdata.quotes import Quote
from tests.fakes.binance import BinanceWsFake
from tests.fakes.fixtures import fast_backoff, running
from tests.support.waiting import await_until


def make_adapter(fake: BinanceWsFake, quotes: list[Quote], **config: object) -> BinanceAdapter:
    venue = VenueConfig(
        code="bn",
        kind="binance",
        config={"ws_url": fake.url, **config},
        symbols={"BTCUSDT": "BTCUSD", "ethusdt": "ETHUSD"},
    )
    return BinanceAdapter(venue, quotes.append, backoff=fast_backoff())


async def test_it_reads_book_tickers_from_one_combined_stream() -> None:
    quotes: list[Quote] = []
    async with BinanceWsFake() as fake, running(make_adapter(fake, quotes)):
        await fake.wait_until(lambda: fake.subscribed("ethusdt@bookTicker") == 1)
        await fake.book_ticker("ETHUSDT", "3400.10000000", "31.21000000", "3400.20000000", "40.66000000")
        await await_until(lambda: len(quotes) == 1)
    assert fake.paths == ["/stream?streams=btcusdt@bookTicker/ethusdt@bookTicker"]
    quote = quotes[0]
    assert (quote.symbol, quote.venue) == ("ETHUSD", "bn")
    assert (quote.bid, quote.ask) == (Decimal("3400.10000000"), Decimal("3400.20000000"))
    assert (quote.bid_size, quote.ask_size) == (Decimal("31.21"), Decimal("40.66"))
    assert quote.venue_ts == quote.recv_ts


async def test_it_reconnects_after_a_drop_and_streams_again() -> None:
    quotes: list[Quote] = []
    async with BinanceWsFake() as fake:
        adapter = make_adapter(fake, quotes)
        async with running(adapter):
            await fake.wait_until(lambda: fake.subscribed("btcusdt@bookTicker") == 1)
            fake.drop()
            await fake.wait_until(lambda: fake.connects == 2 and fake.subscribed("btcusdt@bookTicker") == 1)
            await fake.book_ticker("BTCUSDT", "95000.01", "1", "95000.02", "2")
            await await_until(lambda: len(quotes) == 1)
    assert adapter.stats.connects == 2


async def test_a_server_shutdown_event_makes_it_reconnect() -> None:
    async with BinanceWsFake() as fake:
        adapter = make_adapter(fake, [])
        async with running(adapter):
            await fake.wait_until(lambda: fake.connects == 1)
            await fake.server_shutdown()
            await fake.wait_until(lambda: fake.connects == 2)
    assert adapter.stats.malformed == 0


async def test_it_reconnects_on_its_own_before_the_24_hour_cut() -> None:
    async with BinanceWsFake(max_lifetime_s=5) as fake:
        adapter = make_adapter(fake, [], max_connection_s=0.3)
        async with running(adapter):
            await await_until(lambda: adapter.stats.connects >= 3, timeout_s=3)
    assert fake.lifetime_closes == 0
    assert "SilenceTimeout" not in adapter.stats.last_error


async def test_it_answers_pings_so_the_server_keeps_it() -> None:
    async with BinanceWsFake(ping_interval_s=0.1, pong_timeout_s=0.3) as fake:
        adapter = make_adapter(fake, [], silence_timeout_s=5)
        async with running(adapter):
            await fake.wait_until(lambda: fake.connects == 1)
            await asyncio.sleep(1.0)
            assert fake.connects == 1 and len(fake.connections) == 1


async def test_silence_drops_the_connection_and_it_reconnects() -> None:
    async with BinanceWsFake() as fake:
        adapter = make_adapter(fake, [], silence_timeout_s=0.3)
        async with running(adapter):
            await fake.wait_until(lambda: fake.connects >= 2, within_s=3)
    assert "SilenceTimeout" in adapter.stats.last_error


async def test_garbage_is_counted_and_survived() -> None:
    quotes: list[Quote] = []
    async with BinanceWsFake() as fake:
        adapter = make_adapter(fake, quotes)
        async with running(adapter):
            await fake.wait_until(lambda: fake.connects == 1)
            await fake.send_raw("{{{")
            await fake.send_raw(
                json.dumps({"stream": "btcusdt@bookTicker", "data": {"s": "BTCUSDT", "b": 1}})
            )
            await fake.send_raw(json.dumps({"unexpected": True}))
            await fake.book_ticker("BTCUSDT", "95000.01", "1", "95000.02", "2")
            await await_until(lambda: len(quotes) == 1)
    assert adapter.stats.malformed == 3 and adapter.stats.connects == 1
