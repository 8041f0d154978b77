"""The Coinbase fake checked against Coinbase's own client, coinbase-advanced-py: its WSClient
connects to the fake, subscribes with its own JWTs, and its typed parser reads what the fake sends
(the level2 snapshot and updates, heartbeats, the ticker)."""

import json

import pytest
import websockets
from coinbase.websocket import WSClient, websocket_base
from coinbase.websocket.types.misc_types import L2Update, WSTicker
from coinbase.websocket.types.websocket_response import WebsocketResponse

from marketdata.adapters.base import VenueConfig
from marketdata.adapters.coinbase import CoinbaseAdapter
from tests.fakes.coinbase import CoinbaseKey, CoinbaseWsFake
from tests.support.waiting import await_until


@pytest.fixture(autouse=True)
def no_env_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COINBASE_API_KEY_NAME", raising=False)
    monkeypatch.delenv("COINBASE_PRIVATE_KEY_PEM", raising=False)


@pytest.fixture(autouse=True)
def sdk_websockets_client(monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK is written for websockets<14, whose `websockets.connect` is the legacy client
    (`extra_headers`, `.open`); the project runs a newer websockets (the Makefile installs the SDK
    without its pin). Hand the SDK that same legacy client, which websockets still ships; with
    websockets 13 this changes nothing."""
    if int(websockets.__version__.split(".")[0]) >= 14:
        from websockets.legacy.client import connect as legacy_connect

        monkeypatch.setattr(websocket_base.websockets, "connect", legacy_connect)


def parsed(messages: list[str], channel: str) -> list[WebsocketResponse]:
    # WebsocketResponse pops channel, client_id, timestamp, sequence_num and events with no default:
    # a message missing one of them fails here.
    responses = [WebsocketResponse(json.loads(m)) for m in messages]
    return [r for r in responses if r.channel == channel]


async def test_the_sdk_client_subscribes_to_the_fake_and_reads_level2_heartbeats_and_ticker(
    coinbase_key: CoinbaseKey,
) -> None:
    messages: list[str] = []
    async with CoinbaseWsFake(coinbase_key, heartbeat_interval_s=0.05) as fake:
        fake.set_book("BTC-USD", bids=[("95000.01", "0.5"), ("94999", "2")], asks=[("95000.35", "1.5")])
        client = WSClient(
            api_key=coinbase_key.name,
            api_secret=coinbase_key.private_pem,
            base_url=fake.url,
            on_message=messages.append,
            retry=False,
        )
        await client.open_async()
        try:
            await client.level2_async(product_ids=["BTC-USD"])
            await client.heartbeats_async()
            await client.ticker_async(product_ids=["BTC-USD"])
            await fake.wait_until(lambda: fake.subscribed("ticker", "BTC-USD") == 1)
            await fake.l2_update("BTC-USD", [("offer", "95000.35", "0"), ("offer", "95000.50", "4")])
            await fake.ticker("BTC-USD", "95000.01", "95000.50")
            await await_until(lambda: len(parsed(messages, "heartbeats")) >= 2)
        finally:
            await client.close_async()

    # Every subscribe the SDK sent carried its JWT, and the fake's verification accepted each one.
    assert [m["channel"] for m in fake.subscribe_messages] == ["level2", "heartbeats", "ticker"]
    assert len(fake.jwt_claims) == 3

    snapshot, update = (r.events[0] for r in parsed(messages, "l2_data"))
    assert (snapshot.type, snapshot.product_id, update.type) == ("snapshot", "BTC-USD", "update")
    assert all(isinstance(u, L2Update) for u in snapshot.updates + update.updates)
    assert [(u.side, u.price_level, u.new_quantity) for u in snapshot.updates] == [
        ("bid", "95000.01", "0.5"),
        ("bid", "94999", "2"),
        ("offer", "95000.35", "1.5"),
    ]
    assert [(u.side, u.price_level, u.new_quantity) for u in update.updates] == [
        ("offer", "95000.35", "0"),
        ("offer", "95000.50", "4"),
    ]
    assert all(u.event_time.endswith("Z") for u in snapshot.updates)

    beats = [r.events[0] for r in parsed(messages, "heartbeats")]
    assert [b.heartbeat_counter for b in beats[:2]] == [1, 2] and "UTC" in beats[0].current_time

    (ticker_message,) = parsed(messages, "ticker")
    (ticker,) = ticker_message.events[0].tickers
    assert isinstance(ticker, WSTicker) and (ticker.best_bid, ticker.best_ask) == ("95000.01", "95000.50")

    # One connection-wide sequence: every message of the connection, whatever its channel.
    sequence = [json.loads(m)["sequence_num"] for m in messages]
    assert sequence == list(range(len(messages)))


async def test_our_subscribe_messages_have_the_sdks_shape(coinbase_key: CoinbaseKey) -> None:
    client = WSClient(
        api_key=coinbase_key.name, api_secret=coinbase_key.private_pem, on_message=lambda _: None
    )
    venue = VenueConfig(
        code="cb", kind="coinbase", credentials=coinbase_key.credentials, symbols={"BTC-USD": "BTCUSD"}
    )
    adapter = CoinbaseAdapter(venue, lambda _: None)
    for kind in ("subscribe", "unsubscribe"):
        ours = adapter.subscription("level2", kind)
        theirs = client._build_subscription_message(["BTC-USD"], "level2", kind, True)
        assert set(ours) == set(theirs)
        assert {k: v for k, v in ours.items() if k != "jwt"} == {
            k: v for k, v in theirs.items() if k != "jwt"
        }
