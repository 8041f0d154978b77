"""Stale means a silent connection, not an unchanged book: per venue kind, a quiet book on a live
connection keeps its venue selected, and a dead connection makes it stale. Real sockets, fakes."""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import cast

import pytest

from kernel.redis import sync_client
from marketdata.adapters.base import Adapter, VenueConfig
from marketdata.adapters.binance import BinanceAdapter
from marketdata.adapters.fix import FixAdapter, encode_rows, fixmd_channel
from marketdata.adapters.oanda import OandaAdapter
from marketdata.adapters.simulator import SimulatorAdapter
from marketdata.lpmanager import LPManager, VenueSettings
from marketdata.quotes import SelectedQuote
from tests.fakes.binance import BinanceWsFake
from tests.fakes.fixtures import fast_backoff, running
from tests.fakes.oanda import OandaFake
from tests.support.waiting import await_until

STALE_MS = 400


def lp_manager(venue: str) -> tuple[LPManager, list[SelectedQuote]]:
    published: list[SelectedQuote] = []
    return LPManager(
        {venue: VenueSettings(priority=1, stale_after_ms=STALE_MS)}, [published.append]
    ), published


async def stays_selected(manager: LPManager, symbol: str, venue: str, *, for_s: float) -> None:
    """Run the manager's check timer for `for_s`; the venue must stay selected all along."""
    for _ in range(int(for_s / 0.1)):
        await asyncio.sleep(0.1)
        manager.check()
        assert manager.selected[symbol] == venue, manager.health_rows(manager.clock())


async def goes_stale(manager: LPManager, symbol: str, published: list[SelectedQuote]) -> None:
    async def untradable() -> None:
        while manager.selected.get(symbol) is not None:
            await asyncio.sleep(0.05)
            manager.check()

    await asyncio.wait_for(untradable(), 3)
    assert not published[-1].tradable


async def test_binance_pongs_keep_a_quiet_book_and_a_frozen_peer_goes_stale() -> None:
    manager, published = lp_manager("bn")
    async with BinanceWsFake() as fake:
        venue = VenueConfig(
            code="bn",
            kind="binance",
            config={"ws_url": fake.url, "ping_interval_s": 0.1, "pong_timeout_s": 0.5},
            symbols={"btcusdt": "BTCUSD"},
        )
        adapter = BinanceAdapter(venue, manager.on_quote, backoff=fast_backoff(), listener=manager)
        async with running(adapter):
            await fake.wait_until(lambda: fake.subscribed("btcusdt@bookTicker") == 1)
            await fake.book_ticker("btcusdt", "95000.01", "1", "95000.35", "2")
            await await_until(lambda: len(published) == 1)
            await stays_selected(manager, "BTCUSD", "bn", for_s=1.2)  # no data frame at all
            assert len(published) == 1
            fake.freeze()
            await goes_stale(manager, "BTCUSD", published)
            await await_until(lambda: "PongTimeout" in adapter.stats.last_error, timeout_s=3)


async def test_oanda_heartbeat_lines_keep_a_quiet_book_and_a_silent_stream_goes_stale(
    oanda: OandaFake,
) -> None:
    manager, published = lp_manager("oa")
    venue = VenueConfig(
        code="oa",
        kind="oanda",
        config={"stream_url": oanda.url, "account_id": oanda.account_id, "silence_timeout_s": 30},
        credentials={"token": "oanda-test-token"},
        symbols={"EUR_USD": "EURUSD"},
    )
    adapter = OandaAdapter(venue, manager.on_quote, backoff=fast_backoff(), listener=manager)
    async with running(adapter):
        await await_until(lambda: oanda.open_streams == 1)
        oanda.price("EUR_USD", [("1.10012", 1_000_000)], [("1.10026", 1_000_000)])
        await await_until(lambda: len(published) == 1)
        await stays_selected(manager, "EURUSD", "oa", for_s=1.2)  # heartbeats every 0.2 s only
        oanda.silent = True
        await goes_stale(manager, "EURUSD", published)
        oanda.silent = False


async def test_fix_beacons_keep_a_quiet_book_and_their_end_makes_it_stale() -> None:
    manager, published = lp_manager("fx")
    venue = VenueConfig(code="fx", kind="fix", symbols={"EUR/USD": "EURUSD"})
    adapter = FixAdapter(venue, manager.on_quote, backoff=fast_backoff(), listener=manager)
    redis = sync_client()
    channel = fixmd_channel("fx")

    @contextlib.asynccontextmanager
    async def beacons() -> AsyncIterator[None]:
        async def send() -> None:
            while True:
                redis.publish(channel, "[]")
                await asyncio.sleep(0.1)

        task = asyncio.create_task(send())
        try:
            yield
        finally:
            task.cancel()

    async with running(adapter):
        await await_until(lambda: cast("list[tuple[bytes, int]]", redis.pubsub_numsub(channel))[0][1] == 1)
        async with beacons():
            redis.publish(channel, encode_rows([("EUR/USD", "1.1", "1.1002", "1", "1", 1)]))
            await await_until(lambda: len(published) == 1)
            await stays_selected(manager, "EURUSD", "fx", for_s=1.2)
        await goes_stale(manager, "EURUSD", published)
    assert adapter.stats.malformed == 0


async def test_a_running_simulator_stays_selected_and_a_stopped_one_goes_down_at_once() -> None:
    manager, published = lp_manager("sim")
    venue = VenueConfig(
        code="sim",
        kind="simulator",
        config={"interval_ms": 50, "symbols": {"EURUSD": {"price": "1.10000", "spread": "0.00010"}}},
        symbols={"EURUSD": "EURUSD"},
    )
    adapter: Adapter = SimulatorAdapter(venue, manager.on_quote, listener=manager)
    async with running(adapter):
        await await_until(lambda: len(published) >= 1)
        await stays_selected(manager, "EURUSD", "sim", for_s=0.6)
    # The adapter's end (here: cancelled) withdraws its books without waiting for stale_after_ms.
    assert manager.selected["EURUSD"] is None and not published[-1].tradable


@pytest.mark.parametrize("kind", ["simulator", "coinbase", "binance", "oanda", "fix"])
def test_every_venue_kind_has_a_staleness_floor_at_least_its_liveness_period(kind: str) -> None:
    from marketdata.adapters import adapter_class

    floor = adapter_class(kind).min_stale_after_ms
    period_ms = {"simulator": 0, "coinbase": 1000, "binance": 1000, "oanda": 5000, "fix": 1000}[kind]
    assert floor >= 2 * period_ms


def test_the_market_loop_never_judges_a_venue_on_less_than_its_kinds_floor() -> None:
    from marketdata.loop import _stale_after_ms

    assert _stale_after_ms(VenueConfig(code="oa", kind="oanda", stale_after_ms=2000)) == 10_000
    assert _stale_after_ms(VenueConfig(code="oa", kind="oanda", stale_after_ms=20_000)) == 20_000
    assert _stale_after_ms(VenueConfig(code="sim", kind="simulator", stale_after_ms=700)) == 700
    assert _stale_after_ms(VenueConfig(code="x", kind="carrier-pigeon", stale_after_ms=700)) == 700
