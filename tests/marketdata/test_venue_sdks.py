"""The venues' official SDKs pointed at the fakes: if the SDK's own client fetches and parses what a
fake serves, the fake speaks the venue's protocol (and so our clients are tested against it)."""

import time
from decimal import Decimal
from typing import Any

import pytest
import v20
from binance_sdk_spot.rest_api.models import KlinesIntervalEnum
from binance_sdk_spot.spot import ConfigurationRestAPI, Spot
from coinbase.rest import RESTClient

from tests.fakes.binance import BinanceRestFake, fake_kline
from tests.fakes.coinbase import CoinbaseKey, CoinbaseRestFake, fake_candle
from tests.fakes.oanda import OandaFake, fake_mid, fake_volume, parse_rfc3339, rfc3339, trading
from tests.fakes.tape import Tape
from tests.support.waiting import await_until


@pytest.fixture(autouse=True)
def no_env_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "COINBASE_API_KEY",
        "COINBASE_API_SECRET",
        "COINBASE_API_KEY_NAME",
        "COINBASE_PRIVATE_KEY_PEM",
    ):
        monkeypatch.delenv(name, raising=False)


def test_the_coinbase_sdk_reads_public_candles_from_the_fake(
    coinbase_key: CoinbaseKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    end = int(time.time()) // 60 * 60 - 600
    start = end - 299 * 60
    with CoinbaseRestFake(coinbase_key, tls=True) as fake:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", fake.ca_file)  # the SDK only speaks https
        client = RESTClient(base_url=fake.host)
        response = client.get_public_candles(
            "BTC-USD", start=str(start), end=str(end), granularity="ONE_MINUTE", limit=300
        )
    candles = response.candles
    assert len(candles) == 300
    assert [int(c.start) for c in candles] == list(range(end, start - 60, -60))  # newest first
    expected = fake_candle("BTC-USD", int(candles[7].start), 60)
    assert {k: getattr(candles[7], k) for k in expected} == expected
    (request,) = fake.requests
    assert request.path == "/api/v3/brokerage/market/products/BTC-USD/candles"
    assert "Authorization" not in request.headers  # public: the SDK sends no key


def test_the_coinbase_sdk_is_refused_a_window_over_350_buckets(
    coinbase_key: CoinbaseKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    end = int(time.time()) // 60 * 60
    with CoinbaseRestFake(coinbase_key, tls=True) as fake:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", fake.ca_file)
        with pytest.raises(Exception, match="400 Client Error"):
            RESTClient(base_url=fake.host).get_public_candles(
                "BTC-USD", start=str(end - 400 * 60), end=str(end), granularity="ONE_MINUTE"
            )


def test_the_binance_sdk_reads_klines_from_the_fake() -> None:
    end_ms = (int(time.time()) // 60 * 60 - 600) * 1000
    with BinanceRestFake() as fake:
        client = Spot(config_rest_api=ConfigurationRestAPI(base_path=fake.url))
        response = client.rest_api.klines(
            symbol="BTCUSDT",
            interval=KlinesIntervalEnum.INTERVAL_1m,
            start_time=end_ms - 99 * 60_000,
            end_time=end_ms,
            limit=1000,
        )
        rows = response.data()
    assert len(rows) == 100 and rows[0][0] == end_ms - 99 * 60_000
    assert rows[42] == fake_kline("BTCUSDT", rows[42][0] // 1000, 60)
    assert fake.requests[0].arg("interval") == "1m"


def test_the_binance_sdk_reads_klines_folded_from_the_fakes_trades() -> None:
    bucket = (int(time.time()) - 600) // 60 * 60
    tape = Tape(since=bucket)
    tape.record("BTCUSDT", "95000.5", "0.2", "BUY", (bucket + 1) * 1_000_000_000)
    tape.record("BTCUSDT", "95001", "0.3", "SELL", (bucket + 2) * 1_000_000_000)
    with BinanceRestFake(tape=tape) as fake:
        client = Spot(config_rest_api=ConfigurationRestAPI(base_path=fake.url))
        response = client.rest_api.klines(
            symbol="BTCUSDT", interval=KlinesIntervalEnum.INTERVAL_1m, start_time=bucket * 1000, limit=1
        )
    (row,) = response.data()
    assert row[:9] == [
        bucket * 1000,
        "95000.5",
        "95001",
        "95000.5",
        "95001",
        "0.5",
        bucket * 1000 + 59_999,
        str(Decimal("95000.5") * Decimal("0.2") + Decimal("95001") * Decimal("0.3")),
        2,
    ]


def test_the_oanda_sdk_reads_candles_from_the_fake(oanda: OandaFake) -> None:
    start = (int(time.time()) - 86400 * 3) // 3600 * 3600
    context = v20.Context("127.0.0.1", port=oanda.port, ssl=False, token=oanda.token)
    response = context.instrument.candles(
        "EUR_USD", granularity="H1", price="M", fromTime=rfc3339(start), count=10
    )
    assert response.status == 200
    candles = response.get("candles", 200)
    assert len(candles) == 10
    first = candles[0]
    bucket = int(parse_rfc3339(first.time))  # RFC3339: the SDK asks for it by default
    assert bucket >= start and trading(bucket)
    expected = fake_mid(bucket, 3600)
    assert (first.mid.o, first.mid.h, first.mid.l, first.mid.c) == tuple(float(expected[k]) for k in "ohlc")
    assert first.volume == fake_volume(bucket, 3600) and first.complete
    assert oanda.requests[0].arg("from") == rfc3339(start)


async def test_the_coinbase_sdks_message_types_parse_the_fakes_market_trades() -> None:
    """The SDK's own WebSocket client needs websockets<14 (we run a newer one), so its typed parser
    reads frames our client took from the fake: it pops every envelope field, or raises."""
    import json

    import websockets
    from coinbase.websocket.types.websocket_response import WebsocketResponse

    from tests.fakes.coinbase import CoinbaseWsFake

    bucket = (int(time.time()) - 600) // 60 * 60
    frames: list[WebsocketResponse] = []
    async with CoinbaseWsFake() as fake, websockets.connect(fake.url) as ws:
        await ws.send(
            json.dumps({"type": "subscribe", "channel": "market_trades", "product_ids": ["BTC-USD"]})
        )
        await fake.wait_until(lambda: fake.subscribed("market_trades", "BTC-USD") == 1)
        await fake.trades("BTC-USD", [("95000.5", "0.2", "BUY", bucket * 1_000_000_000 + 5)])
        while len(frames) < 3:  # subscriptions, the snapshot, the update
            frames.append(WebsocketResponse(json.loads(await ws.recv())))
    assert [f.channel for f in frames] == ["subscriptions", "market_trades", "market_trades"]
    assert [f.sequence_num for f in frames] == [0, 1, 2]
    snapshot, update = frames[1].events[0], frames[2].events[0]
    assert (snapshot.type, snapshot.trades, update.type) == ("snapshot", [], "update")
    (trade,) = update.trades
    assert (trade.trade_id, trade.product_id, trade.price, trade.size, trade.side) == (
        "1000001",
        "BTC-USD",
        "95000.5",
        "0.2",
        "BUY",
    )
    assert trade.time.endswith("000000005Z")


async def test_the_binance_sdk_streams_trades_from_the_fake() -> None:
    """The connector opens a bare /stream, subscribes with a SUBSCRIBE frame, and parses each trade
    into its strict TradeResponse model (ints, strings and booleans where Binance sends them)."""
    from binance_sdk_spot.spot import ConfigurationWebSocketStreams

    from tests.fakes.binance import BinanceWsFake

    received: list[Any] = []
    async with BinanceWsFake() as fake:
        client = Spot(config_ws_streams=ConfigurationWebSocketStreams(stream_url=fake.url))
        connection = await client.websocket_streams.create_connection()
        try:
            stream = await connection.trade(symbol="btcusdt")
            stream.on("message", received.append)
            await fake.wait_until(lambda: fake.subscribed("btcusdt@trade") == 1, within_s=10)
            await fake.trade("BTCUSDT", "95000.5", "0.2", buyer_maker=True, ts_ns=1_772_445_600_123_000_000)
            await await_until(lambda: bool(received))
        finally:
            await connection.close_connection(close_session=True)
    assert fake.paths == ["/stream"]
    (trade,) = received
    assert (trade.e, trade.s, trade.t, trade.p, trade.q, trade.T, trade.m) == (
        "trade",
        "BTCUSDT",
        1000001,
        "95000.5",
        "0.2",
        1_772_445_600_123,
        True,
    )
