"""Quotes and candles on /ws/v1/stream, fed through the real LP manager -> QuotePublisher -> Redis ->
stream hub path, received over real WebSocket connections (WebsocketCommunicator)."""

import asyncio
import json
import os
import sys
import uuid

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings as django_settings

from kernel.redis import sync_client
from marketdata.demo import demo_seed
from marketdata.streams import candle_cache_key, stream_send
from tests.marketdata.streamkit import ROOT, Market, connected, frames_until
from users.models import User

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def own_prefix(settings):
    settings.REDIS_PREFIX = f"test-stream-{uuid.uuid4().hex[:8]}"
    yield
    client = sync_client()
    for key in client.scan_iter(f"{settings.REDIS_PREFIX}:*"):
        client.delete(key)


@pytest.fixture
def alice(alice: User) -> User:
    """The shared alice, with the demo instruments to subscribe to."""
    demo_seed()
    return alice


async def drain(comm, seconds: float) -> list[dict]:
    """Every frame until none arrives for `seconds`."""
    frames = []
    while not await comm.receive_nothing(timeout=seconds):
        frames.append(await comm.receive_json_from())
    return frames


async def test_it_sends_a_snapshot_from_the_ticker_cache_then_numbered_updates(alice):
    async with Market() as market, connected(alice) as comm:
        market.quote("EURUSD", "1.08500", "1.08512")
        await market.settle()
        await comm.send_json_to({"type": "subscribe", "channels": ["quotes:EURUSD"]})
        snapshot = await comm.receive_json_from()
        assert snapshot["type"] == "snapshot"
        assert snapshot["channel"] == "quotes:EURUSD"
        assert [(q["symbol"], q["seq"], q["bid"], q["ask"]) for q in snapshot["data"]] == [
            ("EURUSD", 1, "1.08500", "1.08512")
        ]
        await asyncio.sleep(0.15)  # past the default rate slot
        market.quote("EURUSD", "1.08501", "1.08513")
        update = await comm.receive_json_from()
        assert update["type"] == "quote"
        assert update["channel"] == "quotes:EURUSD"
        data = update["data"]
        assert (data["seq"], data["bid"], data["tradable"]) == (2, "1.08501", True)


async def test_the_all_quotes_snapshot_holds_every_cached_symbol(alice):
    async with Market() as market, connected(alice) as comm:
        market.quote("EURUSD", "1.08500", "1.08512")
        market.quote("GBPUSD", "1.27000", "1.27016")
        await market.settle()
        await comm.send_json_to({"type": "subscribe", "channels": ["quotes:*"]})
        snapshot = await comm.receive_json_from()
        assert sorted(q["symbol"] for q in snapshot["data"]) == ["EURUSD", "GBPUSD"]


async def test_it_delivers_a_quote_once_to_a_client_subscribed_to_the_symbol_and_to_all(alice):
    async with Market() as market, connected(alice) as comm:
        await comm.send_json_to({"type": "subscribe", "channels": ["quotes:EURUSD", "quotes:*"]})
        await frames_until(comm, 2)
        market.quote("EURUSD", "1.08500", "1.08512")
        market.quote("GBPUSD", "1.27000", "1.27016")
        frames = await drain(comm, 0.5)
        assert sorted((f["channel"], f["data"]["symbol"]) for f in frames) == [
            ("quotes:*", "GBPUSD"),
            ("quotes:EURUSD", "EURUSD"),
        ]


async def test_it_conflates_a_burst_to_the_latest_quote_without_reordering(alice):
    async with Market() as market, connected(alice) as comm:
        await comm.send_json_to({"type": "subscribe", "channels": ["quotes:EURUSD"]})
        await comm.receive_json_from()
        seqs = [market.quote("EURUSD", f"1.085{i:02d}", f"1.086{i:02d}") for i in range(20)]
        frames = await drain(comm, 0.5)
        received = [f["data"]["seq"] for f in frames]
        assert received[0] == seqs[0]
        assert received[-1] == seqs[-1]  # the latest value always gets out
        assert received == sorted(set(received))
        assert len(received) <= 3  # default 10/s per symbol


async def test_it_limits_each_symbol_to_the_max_rate_the_client_asked_for(alice):
    async with Market() as market, connected(alice) as comm:
        await comm.send_json_to({"type": "subscribe", "channels": ["quotes:*"], "max_rate": 4})
        await comm.receive_json_from()
        for i in range(40):  # 50/s per symbol for 0.8 s
            market.quote("EURUSD", f"1.085{i:02d}", f"1.086{i:02d}")
            market.quote("GBPUSD", f"1.270{i:02d}", f"1.271{i:02d}")
            await asyncio.sleep(0.02)
        frames = await drain(comm, 0.6)
        for symbol in ("EURUSD", "GBPUSD"):
            seqs = [f["data"]["seq"] for f in frames if f["data"]["symbol"] == symbol]
            assert 2 <= len(seqs) <= 6  # 4/s over about 1.2 s
            assert seqs == sorted(seqs)
            assert seqs[-1] == 40


async def test_it_delivers_every_quote_in_order_when_conflation_is_off(alice):
    async with Market() as market, connected(alice) as comm:
        await comm.send_json_to({"type": "subscribe", "channels": ["quotes:*"], "conflate": False})
        await comm.receive_json_from()
        for i in range(50):
            market.quote("EURUSD", f"1.085{i:02d}", f"1.086{i:02d}")
        frames = await drain(comm, 0.5)
        assert [f["data"]["seq"] for f in frames] == list(range(1, 51))


async def test_it_stops_sending_after_unsubscribe(alice):
    async with Market() as market, connected(alice) as comm:
        await comm.send_json_to({"type": "subscribe", "channels": ["quotes:*"]})
        await comm.receive_json_from()
        await comm.send_json_to({"type": "unsubscribe", "channels": ["quotes:*"]})
        assert (await comm.receive_json_from())["type"] == "unsubscribed"
        market.quote("EURUSD", "1.08500", "1.08512")
        assert await drain(comm, 0.3) == []


def cache_bars(symbol: str, timeframe: str, count: int) -> list[dict]:
    bars = [
        {"start": 1_700_000_000 + 60 * i, "open": "1.1", "high": "1.2", "low": "1.0", "close": f"1.1{i}"}
        for i in range(count)
    ]
    sync_client().zadd(candle_cache_key(symbol, timeframe), {json.dumps(b): b["start"] for b in bars})
    return bars


async def test_a_candles_subscription_gets_the_latest_closed_bars_then_candle_events(alice):
    bars = await sync_to_async(cache_bars)("EURUSD", "1m", 120)
    async with connected(alice) as comm:
        await comm.send_json_to({"type": "subscribe", "channels": ["candles:EURUSD:1m"]})
        snapshot = await comm.receive_json_from()
        assert snapshot["channel"] == "candles:EURUSD:1m"
        assert snapshot["data"] == bars[-django_settings.STREAM_CANDLE_SNAPSHOT_BARS :]
        bar = {"start": 1_700_007_200, "open": "1.1", "high": "1.3", "low": "1.0", "close": "1.25"}
        await sync_to_async(stream_send)("candles.EURUSD.1m", "candles:EURUSD:1m", "candle", bar)
        event = await comm.receive_json_from()
        assert event == {"type": "candle", "channel": "candles:EURUSD:1m", "data": bar}


async def test_a_candles_subscription_without_cached_bars_gets_an_empty_snapshot(alice):
    async with connected(alice) as comm:
        await comm.send_json_to({"type": "subscribe", "channels": ["candles:GBPUSD:4h"]})
        snapshot = await comm.receive_json_from()
        assert snapshot == {"type": "snapshot", "channel": "candles:GBPUSD:4h", "data": []}


async def test_an_event_sent_from_another_process_reaches_the_subscriber(alice):
    async with connected(alice) as comm:
        await comm.send_json_to({"type": "subscribe", "channels": ["candles:EURUSD:5m"]})
        await comm.receive_json_from()
        script = (
            "import os, django; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'livermore.settings');"
            "django.setup();"
            "from decimal import Decimal; from marketdata.streams import stream_send;"
            "stream_send('candles.EURUSD.5m', 'candles:EURUSD:5m', 'candle', {'close': Decimal('1.5')})"
        )
        env = {**os.environ, "REDIS_PREFIX": django_settings.REDIS_PREFIX}
        proc = await asyncio.create_subprocess_exec(sys.executable, "-c", script, cwd=ROOT, env=env)
        assert await proc.wait() == 0
        assert await comm.receive_json_from(timeout=5) == {
            "type": "candle",
            "channel": "candles:EURUSD:5m",
            "data": {"close": "1.5"},
        }
