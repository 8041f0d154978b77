"""Reconnects that do not hammer a venue: backoff reset only after a good connection, and a cap on
connection attempts per venue below the venue's documented limit."""

import asyncio
import random

import pytest

from marketdata.adapters.base import Backoff, ConnectLimiter, VenueConfig
from marketdata.adapters.binance import BinanceAdapter
from marketdata.adapters.coinbase import CoinbaseAdapter
from marketdata.adapters.oanda import OandaAdapter
from marketdata.quotes import Quote
from tests.fakes.coinbase import CoinbaseWsFake
from tests.fakes.fixtures import fast_backoff, running
from tests.fakes.flaky import AcceptThenClose
from tests.support.waiting import await_until


def nowhere(quote: Quote) -> None:
    """These tests count connections, not quotes."""


@pytest.fixture(autouse=True)
def no_env_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COINBASE_API_KEY_NAME", raising=False)
    monkeypatch.delenv("COINBASE_PRIVATE_KEY_PEM", raising=False)


def binance(url: str, backoff: Backoff, **config: object) -> BinanceAdapter:
    venue = VenueConfig(
        code="bn", kind="binance", config={"ws_url": url, **config}, symbols={"btcusdt": "BTCUSD"}
    )
    return BinanceAdapter(venue, nowhere, backoff=backoff)


def coinbase(url: str, backoff: Backoff, **config: object) -> CoinbaseAdapter:
    venue = VenueConfig(
        code="cb", kind="coinbase", config={"ws_url": url, **config}, symbols={"BTC-USD": "BTCUSD"}
    )
    return CoinbaseAdapter(venue, nowhere, backoff=backoff)


@pytest.mark.parametrize("make", [binance, coinbase])
async def test_a_venue_that_accepts_then_closes_gets_ever_fewer_connections(make) -> None:
    async with AcceptThenClose() as venue:
        adapter = make(venue.url, Backoff(base_s=0.05, cap_s=5, rng=random.Random(3)))
        async with running(adapter):
            await asyncio.sleep(3.0)
    # Reset on every handshake, the delays would all be under 50 ms: some 60 connections or more.
    assert 3 <= venue.connects <= 10
    assert adapter.backoff.attempt == adapter.stats.disconnects  # never reset: no connection was good
    gaps = [b - a for a, b in zip(venue.connected_at, venue.connected_at[1:])]
    assert max(gaps[len(gaps) // 2 :]) > max(gaps[: len(gaps) // 2])
    assert adapter.stats.last_error  # the close is kept for the admin


async def test_the_backoff_starts_over_only_after_a_connection_delivered_data_for_a_while(
    coinbase_key,
) -> None:
    async with CoinbaseWsFake(coinbase_key, heartbeat_interval_s=0.05) as fake:
        adapter = coinbase(fake.url, fast_backoff(), stable_after_s=0.4)
        async with running(adapter):
            await fake.wait_until(lambda: fake.subscribed("heartbeats") == 1)
            await asyncio.sleep(0.1)
            fake.drop()  # a short connection: not a good one
            await fake.wait_until(lambda: fake.connects == 2 and fake.subscribed("heartbeats") == 1)
            assert adapter.backoff.attempt == 1
            await asyncio.sleep(0.1)
            fake.drop()
            await fake.wait_until(lambda: fake.connects == 3 and fake.subscribed("heartbeats") == 1)
            assert adapter.backoff.attempt == 2
            await asyncio.sleep(0.7)  # heartbeats for longer than stable_after_s
            fake.drop()
            await fake.wait_until(lambda: fake.connects == 4)
    assert adapter.backoff.attempt == 1  # reset, then one delay taken


async def test_connection_attempts_are_capped_per_venue() -> None:
    async with AcceptThenClose() as venue:
        adapter = binance(venue.url, fast_backoff(), max_connects=3, connects_window_s=1.5)
        async with running(adapter):
            await await_until(lambda: venue.connects == 3)
            await asyncio.sleep(0.8)
            assert venue.connects == 3 and adapter.stats.state == "throttled"
            await await_until(lambda: venue.connects == 4, timeout_s=10)  # the window, on a slow machine
    assert adapter.stats.throttled >= 1
    assert venue.connected_at[3] - venue.connected_at[0] >= 1.5 - 0.01


def test_the_limiter_keeps_a_sliding_window() -> None:
    now = [100.0]
    limiter = ConnectLimiter(max_attempts=2, window_s=10, clock=lambda: now[0])
    assert limiter.wait_s() == 0
    limiter.record()
    now[0] = 104.0
    limiter.record()
    assert limiter.wait_s() == pytest.approx(6.0)
    now[0] = 110.0
    assert limiter.wait_s() == 0  # the first attempt left the window
    limiter.record()
    assert limiter.wait_s() == pytest.approx(4.0)
    assert ConnectLimiter(max_attempts=0, window_s=1).wait_s() == 0  # no cap


def test_default_caps_stay_below_the_venues_documented_limits() -> None:
    attempts, window_s = BinanceAdapter.connect_limit
    assert attempts / window_s < 300 / 300  # 300 connections per 5 minutes per IP
    attempts, window_s = CoinbaseAdapter.connect_limit
    assert attempts / window_s < 8  # the lower of Coinbase's two published figures, per second
    attempts, window_s = OandaAdapter.connect_limit
    assert attempts / window_s < 2  # OANDA: at most 2 new connections a second


def test_a_venue_config_overrides_the_cap() -> None:
    adapter = binance("ws://127.0.0.1:9", fast_backoff(), max_connects=7, connects_window_s=42)
    assert (adapter.limiter.max_attempts, adapter.limiter.window_s) == (7, 42.0)
    assert adapter.stable_after_s == 30
