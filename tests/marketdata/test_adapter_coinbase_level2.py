"""Coinbase top of book from the `level2` channel, against the fake over a real socket."""

import asyncio
from decimal import Decimal as D

import pytest

from marketdata.adapters.base import VenueConfig
from marketdata.adapters.coinbase import CoinbaseAdapter
from marketdata.lpmanager import LPManager, VenueSettings
from marketdata.quotes import Quote, SelectedQuote
from tests.fakes.coinbase import CoinbaseKey, CoinbaseWsFake
from tests.fakes.fixtures import fast_backoff, running
from tests.support.waiting import await_until


@pytest.fixture(autouse=True)
def no_env_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COINBASE_API_KEY_NAME", raising=False)
    monkeypatch.delenv("COINBASE_PRIVATE_KEY_PEM", raising=False)


class Listener:
    def __init__(self) -> None:
        self.alive = 0
        self.down: list[tuple[str, list[str] | None]] = []

    def venue_alive(self, venue: str, ts_ns: int) -> None:
        self.alive += 1

    def venue_down(self, venue: str, symbols: object = None) -> None:
        self.down.append((venue, sorted(symbols) if symbols is not None else None))  # type: ignore[call-overload]


def make_adapter(
    fake: CoinbaseWsFake, key: CoinbaseKey | None, sink: object, listener: object = None, **config: object
) -> CoinbaseAdapter:
    venue = VenueConfig(
        code="cb",
        kind="coinbase",
        config={"ws_url": fake.url, **config},
        credentials=key.credentials if key else {},
        symbols={"BTC-USD": "BTCUSD", "ETH-USD": "ETHUSD"},
    )
    return CoinbaseAdapter(venue, sink, backoff=fast_backoff(), listener=listener)  # type: ignore[arg-type]


def btc_book(fake: CoinbaseWsFake) -> None:
    fake.set_book(
        "BTC-USD",
        bids=[("95000.01", "0.5"), ("94999.50", "2"), ("94990", "7.25")],
        asks=[("95000.35", "1.5"), ("95001", "3")],
    )


def tops(quotes: list[Quote]) -> list[tuple[str, str, str, str]]:
    return [(str(q.bid), str(q.bid_size), str(q.ask), str(q.ask_size)) for q in quotes]


async def test_the_snapshot_gives_the_best_bid_and_ask_with_sizes(coinbase_key: CoinbaseKey) -> None:
    quotes: list[Quote] = []
    async with CoinbaseWsFake(coinbase_key) as fake:
        btc_book(fake)
        async with running(make_adapter(fake, coinbase_key, quotes.append)) as adapter:
            await await_until(lambda: len(quotes) == 1)
    assert tops(quotes) == [("95000.01", "0.5", "95000.35", "1.5")]
    quote = quotes[0]
    assert (quote.symbol, quote.venue) == ("BTCUSD", "cb")
    assert quote.venue_ts <= quote.recv_ts
    subscribed = sorted(m["channel"] for m in fake.subscribe_messages)
    assert subscribed == ["heartbeats", "level2", "ticker"]
    assert adapter.stats.malformed == 0


async def test_updates_move_the_top_and_updates_below_it_publish_nothing(coinbase_key: CoinbaseKey) -> None:
    quotes: list[Quote] = []
    async with CoinbaseWsFake(coinbase_key) as fake:
        btc_book(fake)
        async with running(make_adapter(fake, coinbase_key, quotes.append)) as adapter:
            await await_until(lambda: len(quotes) == 1)
            await fake.l2_update("BTC-USD", [("bid", "94980", "1"), ("offer", "95010", "4")])  # deeper
            await fake.l2_update("BTC-USD", [("bid", "95000.01", "0.75")])  # best bid size
            await await_until(lambda: len(quotes) == 2)
            await fake.l2_update("BTC-USD", [("offer", "95000.35", "0")])  # best ask removed
            await await_until(lambda: len(quotes) == 3)
            await fake.l2_update("BTC-USD", [("bid", "95000.20", "0.1"), ("offer", "95000.30", "9")])
            await await_until(lambda: len(quotes) == 4)
            await asyncio.sleep(0.1)
    assert tops(quotes) == [
        ("95000.01", "0.5", "95000.35", "1.5"),
        ("95000.01", "0.75", "95000.35", "1.5"),
        ("95000.01", "0.75", "95001", "3"),
        ("95000.20", "0.1", "95000.30", "9"),
    ]
    book = adapter.books["BTC-USD"]
    assert book.bids.levels == {D(p): D(q) for p, q in fake.books["BTC-USD"]["bid"].items()}
    assert book.asks.levels == {D(p): D(q) for p, q in fake.books["BTC-USD"]["offer"].items()}


async def test_the_ticker_gives_the_last_trade_and_no_quote_of_its_own(coinbase_key: CoinbaseKey) -> None:
    quotes: list[Quote] = []
    async with CoinbaseWsFake(coinbase_key) as fake:
        btc_book(fake)
        async with running(make_adapter(fake, coinbase_key, quotes.append)) as adapter:
            await await_until(lambda: len(quotes) == 1)
            assert await fake.ticker("BTC-USD", "94000", "96000") == 1  # best_* fields ignored
            await await_until(lambda: "BTC-USD" in adapter.last_trades)
            await fake.l2_update("BTC-USD", [("bid", "95000.02", "1")])
            await await_until(lambda: len(quotes) == 2)
    assert adapter.last_trades["BTC-USD"] == D("96000")  # the fake's ticker trades at the ask
    assert quotes[0].last is None and quotes[1].last == D("96000")
    assert (quotes[1].bid, quotes[1].ask) == (D("95000.02"), D("95000.35"))


async def test_a_sequence_gap_resyncs_every_book_from_a_fresh_snapshot(coinbase_key: CoinbaseKey) -> None:
    quotes: list[Quote] = []
    listener = Listener()
    async with CoinbaseWsFake(coinbase_key) as fake:
        btc_book(fake)
        async with running(make_adapter(fake, coinbase_key, quotes.append, listener)) as adapter:
            await await_until(lambda: len(quotes) == 1)
            # An update is lost on the way: the fake's book moves on, the adapter's misses it.
            fake.skip_sequence(1)
            fake.books["BTC-USD"]["bid"]["95000.10"] = "3"
            await fake.l2_update("BTC-USD", [("offer", "95001", "5")])
            await await_until(lambda: len(quotes) == 2)
            await asyncio.sleep(0.1)
    assert adapter.sequence_gaps == 1 and adapter.resyncs == 1
    assert ("cb", ["BTCUSD", "ETHUSD"]) in listener.down  # told at once, before the snapshot
    level2 = [(m["type"], m["channel"]) for m in fake.subscribe_messages if m["channel"] == "level2"]
    assert level2 == [("subscribe", "level2"), ("unsubscribe", "level2"), ("subscribe", "level2")]
    # the fresh snapshot carries the level the adapter never saw
    assert tops(quotes)[-1] == ("95000.10", "3", "95000.35", "1.5")
    assert adapter.books["BTC-USD"].asks.levels[D("95001")] == D("5")


async def test_updates_before_a_snapshot_are_ignored(coinbase_key: CoinbaseKey) -> None:
    quotes: list[Quote] = []
    async with (
        CoinbaseWsFake(coinbase_key) as fake,
        running(make_adapter(fake, coinbase_key, quotes.append)) as adapter,
    ):
        await fake.wait_until(lambda: fake.subscribed("level2", "ETH-USD") == 1)
        await fake.l2_update("ETH-USD", [("bid", "3400", "1"), ("offer", "3401", "1")])
        await asyncio.sleep(0.1)
        # Our fake sent an empty snapshot first: this book is synced and the update applies.
        assert tops(quotes) == [("3400", "1", "3401", "1")]
        adapter.books["ETH-USD"].reset()  # as while a resync waits for its snapshot
        await fake.l2_update("ETH-USD", [("bid", "3400.5", "1")])
        await asyncio.sleep(0.1)
    assert len(quotes) == 1


async def test_a_resync_without_a_snapshot_reconnects(coinbase_key: CoinbaseKey) -> None:
    async with CoinbaseWsFake(coinbase_key) as fake:
        btc_book(fake)
        adapter = make_adapter(fake, coinbase_key, [].append, resync_timeout_s=0.3)
        async with running(adapter):
            await fake.wait_until(lambda: fake.subscribed("level2", "BTC-USD") == 1)
            fake.send_snapshots = False
            fake.skip_sequence(3)
            await fake.l2_update("BTC-USD", [("bid", "1", "1")])
            await await_until(lambda: adapter.resyncs == 1)
            await fake.wait_until(lambda: fake.connects == 2, within_s=5)
    assert "BookResyncTimeout" in adapter.stats.last_error


async def test_a_malformed_level_update_resyncs_the_books(coinbase_key: CoinbaseKey) -> None:
    quotes: list[Quote] = []
    async with CoinbaseWsFake(coinbase_key) as fake:
        btc_book(fake)
        async with running(make_adapter(fake, coinbase_key, quotes.append)) as adapter:
            await await_until(lambda: len(quotes) == 1)
            await fake.l2_update("BTC-USD", [("bid", "95000.02", "1"), ("sideways", "1", "1")])
            await await_until(lambda: adapter.resyncs == 1 and len(quotes) == 2)
    assert adapter.stats.malformed == 1
    assert tops(quotes)[-1][0] == "95000.02"  # the fake kept the good level; the snapshot has it


async def test_a_quiet_book_on_a_live_connection_stays_selected_and_a_silent_one_goes_stale(
    coinbase_key: CoinbaseKey,
) -> None:
    published: list[SelectedQuote] = []
    manager = LPManager({"cb": VenueSettings(priority=1, stale_after_ms=400)}, outputs=[published.append])
    async with CoinbaseWsFake(coinbase_key, heartbeat_interval_s=0.1) as fake:
        btc_book(fake)
        adapter = make_adapter(fake, coinbase_key, manager.on_quote, manager, silence_timeout_s=30)
        async with running(adapter):
            await await_until(lambda: len(published) == 1)
            for _ in range(10):  # a second of quiet book, heartbeats only: 2.5 x stale_after_ms
                await asyncio.sleep(0.1)
                manager.check()
            assert manager.selected["BTCUSD"] == "cb" and published[-1].tradable
            assert len(published) == 1  # no quote and no failover: the old top is still the top
            fake.silent = True  # the connection stays open but says nothing, heartbeats included
            await asyncio.sleep(0.5)
            manager.check()
            assert manager.selected["BTCUSD"] is None
            assert not published[-1].tradable and manager.state("BTCUSD", "cb", manager.clock()) == "stale"


async def test_a_sequence_number_going_back_resyncs_too(coinbase_key: CoinbaseKey) -> None:
    quotes: list[Quote] = []
    async with CoinbaseWsFake(coinbase_key) as fake:
        btc_book(fake)
        async with running(make_adapter(fake, coinbase_key, quotes.append)) as adapter:
            await await_until(lambda: len(quotes) == 1)
            fake.skip_sequence(-2)  # a repeat of numbers already seen
            await fake.l2_update("BTC-USD", [("bid", "95000.05", "1")])
            await await_until(lambda: adapter.resyncs == 1 and len(quotes) == 2)
    assert adapter.sequence_gaps == 1
    assert tops(quotes)[-1] == ("95000.05", "1", "95000.35", "1.5")  # from the fresh snapshot


async def test_a_product_never_snapshotted_does_not_turn_a_resync_into_a_reconnect(
    coinbase_key: CoinbaseKey,
) -> None:
    quotes: list[Quote] = []
    async with CoinbaseWsFake(coinbase_key, heartbeat_interval_s=0.05) as fake:
        btc_book(fake)
        fake.withheld_snapshots.add("ETH-USD")
        adapter = make_adapter(fake, coinbase_key, quotes.append, resync_timeout_s=0.2)
        async with running(adapter):
            await await_until(lambda: len(quotes) == 1)
            fake.skip_sequence(1)
            await fake.l2_update("BTC-USD", [("bid", "95000.05", "1")])
            await await_until(lambda: adapter.resyncs == 1 and len(quotes) == 2)
            await asyncio.sleep(0.6)  # heartbeats past the resync deadline
    assert fake.connects == 1 and adapter.stats.disconnects == 0
    assert not adapter.books["ETH-USD"].synced
