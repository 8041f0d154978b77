"""How stream events travel: the channel layer (channels-redis pub/sub) between processes, one hub
channel per web process, joined to a layer group while a local connection needs it."""

import asyncio
import threading
import uuid
from decimal import Decimal
from typing import Any

import pytest
from channels.layers import get_channel_layer

from kernel.redis import sync_client
from marketdata.demo import demo_seed
from marketdata.hub import ALL_QUOTES_GROUP
from marketdata.streams import SEND_MANY_BATCH, stream_send, stream_send_many
from tests.marketdata.streamkit import Market, connected
from tests.support.streams import StreamTap
from tests.support.waiting import await_until
from users.models import User

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def own_prefix(settings: Any) -> None:
    settings.REDIS_PREFIX = f"test-stream-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def alice(alice: User) -> User:
    """The shared alice, with the demo instruments to subscribe to."""
    demo_seed()
    return alice


def subscribers(group: str) -> int:
    """Redis subscriptions to a layer group: one per process (per event loop) that joined it."""
    name = get_channel_layer()._get_group_channel_name(group)
    [(_, count)] = sync_client().pubsub_numsub(name)
    return int(count)


async def subscribe(comm: Any, channel: str) -> None:
    await comm.send_json_to({"type": "subscribe", "channels": [channel]})
    assert (await comm.receive_json_from())["type"] == "snapshot"


async def test_stream_send_works_from_a_thread_without_an_event_loop() -> None:
    async with StreamTap("candles.EURUSD.1m") as tap:
        thread = threading.Thread(
            target=stream_send,
            args=("candles.EURUSD.1m", "candles:EURUSD:1m", "candle", {"c": Decimal("1.1")}),
        )
        thread.start()
        assert await tap.receive() == {
            "event": "candle",
            "channel": "candles:EURUSD:1m",
            "data": {"c": "1.1"},
        }
        await asyncio.to_thread(thread.join)


async def test_stream_send_works_when_called_inside_a_running_event_loop() -> None:
    async with StreamTap("alerts.7") as tap:
        stream_send("alerts.7", "alerts", "alert", {"id": 1})  # a sync producer in a loop's thread
        assert await tap.receive() == {"event": "alert", "channel": "alerts", "data": {"id": 1}}


async def test_stream_send_many_delivers_each_groups_events_in_order() -> None:
    count = SEND_MANY_BATCH + 7  # two layer messages for the first group
    async with StreamTap("alerts.7") as seven, StreamTap("alerts.8") as eight:
        events = [("alerts.7", "alerts", "alert", {"id": i, "price": Decimal("1.10")}) for i in range(count)]
        events.insert(3, ("alerts.8", "alerts", "alert", {"id": -1}))
        await asyncio.to_thread(stream_send_many, events)
        assert [(await seven.receive())["data"] for _ in range(count)] == [
            {"id": i, "price": "1.10"} for i in range(count)
        ]
        assert await eight.receive() == {"event": "alert", "channel": "alerts", "data": {"id": -1}}
        await asyncio.to_thread(stream_send_many, [])  # nothing to send: no round trip, no error


async def test_the_process_joins_a_group_once_and_leaves_with_its_last_subscriber(alice: Any) -> None:
    group = "candles.EURUSD.1m"
    async with connected(alice) as first, connected(alice) as second:
        assert subscribers(group) == 0
        await subscribe(first, "candles:EURUSD:1m")
        await subscribe(second, "candles:EURUSD:1m")
        assert subscribers(group) == 1
        await first.send_json_to({"type": "unsubscribe", "channels": ["candles:EURUSD:1m"]})
        await first.receive_json_from()
        assert subscribers(group) == 1
        await second.send_json_to({"type": "unsubscribe", "channels": ["candles:EURUSD:1m"]})
        await second.receive_json_from()
        # UNSUBSCRIBE is sent without waiting for Redis to act on it (SUBSCRIBE is confirmed by a probe)
        await await_until(lambda: subscribers(group) == 0, timeout_s=5)


async def test_each_quote_is_sent_once_to_all_quotes_and_filtered_per_symbol_in_the_process(
    alice: Any,
) -> None:
    async with Market() as market, connected(alice) as comm, StreamTap(ALL_QUOTES_GROUP) as tap:
        await subscribe(comm, "quotes:EURUSD")
        assert subscribers("quotes.EURUSD") == 0  # the hub joined quotes._all instead
        market.quote("GBPUSD", "1.27000", "1.27016")
        market.quote("EURUSD", "1.08500", "1.08512")
        sent = [await tap.receive(), await tap.receive()]
        assert [s["data"]["symbol"] for s in sent] == ["GBPUSD", "EURUSD"]
        frame = await comm.receive_json_from()
        assert (frame["channel"], frame["data"]["symbol"]) == ("quotes:EURUSD", "EURUSD")
        assert await comm.receive_nothing(timeout=0.3)
