import asyncio
import json
import logging
from decimal import Decimal

import jwt
import pytest
import websockets
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from marketdata.adapters import adapter_class
from marketdata.adapters.base import VenueConfig
from marketdata.adapters.coinbase import CoinbaseAdapter, CoinbaseSigner, coinbase_signer
from marketdata.bars import Bar
from marketdata.quotes import Quote, now_ns
from tests.fakes.coinbase import CoinbaseKey, CoinbaseWsFake, verify_jwt
from tests.fakes.fixtures import fast_backoff, running
from tests.support.waiting import await_until


@pytest.fixture(autouse=True)
def no_env_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COINBASE_API_KEY_NAME", raising=False)
    monkeypatch.delenv("COINBASE_PRIVATE_KEY_PEM", raising=False)


def make_adapter(
    fake: CoinbaseWsFake, key: CoinbaseKey | None, quotes: list[Quote], **config: object
) -> CoinbaseAdapter:
    """The ticker-only configuration (quotes from `ticker`); the level2 book has its own tests in
    test_adapter_coinbase_level2.py."""
    venue = VenueConfig(
        code="cb",
        kind="coinbase",
        config={"ws_url": fake.url, "channels": ["heartbeats", "ticker"], **config},
        credentials=key.credentials if key else {},
        symbols={"BTC-USD": "BTCUSD", "ETH-USD": "ETHUSD"},
    )
    return CoinbaseAdapter(venue, quotes.append, backoff=fast_backoff())


def test_the_registry_knows_every_venue_kind() -> None:
    assert adapter_class("coinbase") is CoinbaseAdapter
    assert {adapter_class(k).kind for k in ("binance", "oanda", "simulator")} == {
        "binance",
        "oanda",
        "simulator",
    }


async def test_it_turns_ticker_best_bid_and_ask_into_quotes(coinbase_key: CoinbaseKey) -> None:
    quotes: list[Quote] = []
    async with CoinbaseWsFake(coinbase_key) as fake:
        adapter = make_adapter(fake, coinbase_key, quotes)
        async with running(adapter):
            await fake.wait_until(lambda: fake.subscribed("ticker", "BTC-USD") == 1)
            before = now_ns()
            assert await fake.ticker("BTC-USD", "95000.01", "95000.35", bid_qty="0.25", ask_qty="1.5") == 1
            await await_until(lambda: len(quotes) == 1)
    quote = quotes[0]
    assert quote.symbol == "BTCUSD" and quote.venue == "cb"
    assert (quote.bid, quote.ask) == (Decimal("95000.01"), Decimal("95000.35"))
    assert (quote.bid_size, quote.ask_size) == (Decimal("0.25"), Decimal("1.5"))
    assert isinstance(quote.venue_ts, int) and isinstance(quote.recv_ts, int)
    assert before - 1_000_000_000 < quote.venue_ts <= quote.recv_ts
    assert adapter.stats.quotes == 1 and adapter.stats.malformed == 0


async def test_each_subscribe_message_names_one_channel_and_carries_a_fresh_jwt(
    coinbase_key: CoinbaseKey,
) -> None:
    async with CoinbaseWsFake(coinbase_key) as fake, running(make_adapter(fake, coinbase_key, [])):
        await fake.wait_until(lambda: len(fake.subscribe_messages) == 2)
        await asyncio.sleep(0.2)  # nothing else follows
    channels = [m["channel"] for m in fake.subscribe_messages]
    # No bar sink (the market loop's case): the candles channel would only be dropped on the floor.
    assert sorted(channels) == ["heartbeats", "ticker"]
    for message in fake.subscribe_messages:
        assert message["type"] == "subscribe"
        if message["channel"] != "heartbeats":
            assert message["product_ids"] == ["BTC-USD", "ETH-USD"]
    assert len(fake.jwt_claims) == 2  # every one verified by the fake, none rejected
    nonces = {jwt.get_unverified_header(m["jwt"])["nonce"] for m in fake.subscribe_messages}
    assert len(nonces) == 2
    assert all("uri" not in claims for claims in fake.jwt_claims)


async def test_without_credentials_it_subscribes_unauthenticated(coinbase_key: CoinbaseKey) -> None:
    async with CoinbaseWsFake(coinbase_key) as fake, running(make_adapter(fake, None, [])):
        await fake.wait_until(lambda: len(fake.subscribe_messages) == 2)
    assert all("jwt" not in m for m in fake.subscribe_messages)


async def test_it_reconnects_and_resubscribes_after_a_drop(coinbase_key: CoinbaseKey) -> None:
    quotes: list[Quote] = []
    async with CoinbaseWsFake(coinbase_key) as fake:
        adapter = make_adapter(fake, coinbase_key, quotes)
        async with running(adapter):
            await fake.wait_until(lambda: fake.subscribed("ticker", "ETH-USD") == 1)
            fake.drop()
            await fake.wait_until(lambda: fake.connects == 2 and fake.subscribed("ticker", "ETH-USD") == 1)
            await fake.ticker("ETH-USD", "3400.10", "3400.60")
            await await_until(lambda: len(quotes) == 1)
    assert quotes[0].symbol == "ETHUSD"
    assert adapter.stats.connects == 2 and adapter.stats.disconnects == 1
    assert len(fake.subscribe_messages) == 4  # heartbeats and ticker, on each connection


async def test_the_silence_watchdog_drops_a_quiet_connection_and_reconnects(
    coinbase_key: CoinbaseKey,
) -> None:
    async with CoinbaseWsFake(coinbase_key, heartbeat_interval_s=0.1) as fake:
        adapter = make_adapter(fake, coinbase_key, [], silence_timeout_s=0.5)
        async with running(adapter):
            await fake.wait_until(lambda: fake.subscribed("heartbeats") == 1)
            await asyncio.sleep(0.8)  # heartbeats keep it alive past the timeout
            assert fake.connects == 1
            fake.silent = True
            await fake.wait_until(lambda: fake.connects == 2, within_s=3)
            fake.silent = False
            await fake.wait_until(lambda: fake.subscribed("heartbeats") == 1)
    assert "SilenceTimeout" in adapter.stats.last_error


async def test_garbage_frames_are_counted_and_do_not_stop_the_feed(coinbase_key: CoinbaseKey) -> None:
    quotes: list[Quote] = []
    async with CoinbaseWsFake(coinbase_key) as fake:
        adapter = make_adapter(fake, coinbase_key, quotes)
        async with running(adapter):
            await fake.wait_until(lambda: fake.subscribed("ticker", "BTC-USD") == 1)
            await fake.send_raw("not json at all")
            await fake.send_raw("[1, 2, 3]")
            await fake.send_raw(json.dumps({"channel": "ticker", "sequence_num": 99}))
            await fake.ticker("BTC-USD", "NaN", "95000.35")
            await fake.ticker("BTC-USD", "95000.00", "95000.50")
            await await_until(lambda: len(quotes) == 1)
    assert adapter.stats.malformed == 4
    assert adapter.stats.connects == 1
    assert quotes[0].bid == Decimal("95000.00")


async def test_error_frames_are_logged_and_the_stream_goes_on(
    coinbase_key: CoinbaseKey, caplog: pytest.LogCaptureFixture
) -> None:
    quotes: list[Quote] = []
    async with CoinbaseWsFake(coinbase_key) as fake:
        adapter = make_adapter(fake, coinbase_key, quotes)
        async with running(adapter):
            await fake.wait_until(lambda: fake.subscribed("ticker", "BTC-USD") == 1)
            with caplog.at_level(logging.WARNING, logger="marketdata.adapters.coinbase"):
                await fake.send_raw(json.dumps({"type": "error", "message": "rate limit exceeded"}))
                await fake.ticker("BTC-USD", "1", "2")
                await await_until(lambda: len(quotes) == 1)
    assert adapter.error_frames == 1 and adapter.stats.malformed == 0
    assert "rate limit exceeded" in caplog.text


async def test_a_sequence_gap_is_logged(coinbase_key: CoinbaseKey, caplog: pytest.LogCaptureFixture) -> None:
    quotes: list[Quote] = []
    async with CoinbaseWsFake(coinbase_key) as fake:
        adapter = make_adapter(fake, coinbase_key, quotes)
        async with running(adapter):
            await fake.wait_until(lambda: fake.subscribed("ticker", "BTC-USD") == 1)
            await fake.ticker("BTC-USD", "1", "2")
            fake.skip_sequence(3)
            with caplog.at_level(logging.WARNING, logger="marketdata.adapters.coinbase"):
                await fake.ticker("BTC-USD", "1.5", "2")
                await await_until(lambda: len(quotes) == 2)
    assert adapter.sequence_gaps == 1
    assert "sequence gap" in caplog.text


async def test_candles_channel_updates_reach_the_bar_sink(coinbase_key: CoinbaseKey) -> None:
    bars: list[Bar] = []
    async with CoinbaseWsFake(coinbase_key) as fake:
        venue = VenueConfig(
            code="cb", kind="coinbase", config={"ws_url": fake.url}, symbols={"BTC-USD": "BTCUSD"}
        )
        async with running(
            CoinbaseAdapter(venue, lambda q: None, bar_sink=bars.append, backoff=fast_backoff())
        ):
            await fake.wait_until(lambda: fake.subscribed("candles", "BTC-USD") == 1)
            candle = {
                "start": "1688998200",
                "high": "3",
                "low": "1",
                "open": "2",
                "close": "2.5",
                "volume": "10",
            }
            await fake.candle("BTC-USD", candle)
            await await_until(lambda: len(bars) == 1)
    assert bars[0] == Bar(
        symbol="BTCUSD",
        timeframe="5m",
        start=1688998200,
        open=Decimal(2),
        high=Decimal(3),
        low=Decimal(1),
        close=Decimal("2.5"),
        volume=Decimal(10),
    )


async def test_the_fake_closes_a_socket_that_does_not_subscribe_in_time(coinbase_key: CoinbaseKey) -> None:
    async with CoinbaseWsFake(coinbase_key, subscribe_deadline_s=0.3) as fake:
        async with websockets.connect(fake.url) as idle:
            await asyncio.wait_for(idle.wait_closed(), 2)
        assert fake.deadline_closes == 1
        async with running(make_adapter(fake, coinbase_key, [])):
            await fake.wait_until(lambda: fake.subscribed("ticker") == 1)
            await asyncio.sleep(0.5)
            assert fake.subscribed("ticker") == 1
        assert fake.deadline_closes == 1


def test_the_websocket_jwt_has_the_documented_header_and_claims(coinbase_key: CoinbaseKey) -> None:
    token = CoinbaseSigner(coinbase_key.name, coinbase_key.private_pem).token()
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "ES256" and header["typ"] == "JWT" and header["kid"] == coinbase_key.name
    claims = verify_jwt(token, coinbase_key, uri=None)
    assert claims["iss"] == "cdp" and claims["sub"] == coinbase_key.name
    assert claims["exp"] - claims["nbf"] == 120


def test_rest_jwts_carry_the_method_host_and_path(coinbase_key: CoinbaseKey) -> None:
    uri = "GET api.coinbase.com/api/v3/brokerage/accounts"
    token = CoinbaseSigner(coinbase_key.name, coinbase_key.private_pem).token(uri=uri)
    assert verify_jwt(token, coinbase_key, uri=uri)["uri"] == uri


def test_an_expired_jwt_is_rejected(coinbase_key: CoinbaseKey) -> None:
    from tests.fakes.coinbase import JwtRejected

    signer = CoinbaseSigner(coinbase_key.name, coinbase_key.private_pem)
    stale = jwt.encode(
        {"sub": coinbase_key.name, "iss": "cdp", "nbf": 1, "exp": 121},
        signer.key,
        algorithm="ES256",
        headers={"kid": coinbase_key.name, "nonce": "a" * 64},
    )
    with pytest.raises(JwtRejected, match="expired"):
        verify_jwt(stale, coinbase_key, uri=None)


def test_keys_come_from_the_environment_with_escaped_newlines(
    coinbase_key: CoinbaseKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COINBASE_API_KEY_NAME", coinbase_key.name)
    monkeypatch.setenv("COINBASE_PRIVATE_KEY_PEM", coinbase_key.private_pem.replace("\n", "\\n"))
    signer = coinbase_signer({}, url="wss://advanced-trade-ws.coinbase.com")
    assert signer is not None
    assert verify_jwt(signer.token(), coinbase_key, uri=None)["sub"] == coinbase_key.name
    assert coinbase_key.private_pem not in repr(signer)


def test_ed25519_keys_sign_with_eddsa() -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    token = CoinbaseSigner("organizations/o/apiKeys/k", pem).token()
    assert jwt.get_unverified_header(token)["alg"] == "EdDSA"
    claims = jwt.decode(token, key.public_key(), algorithms=["EdDSA"], issuer="cdp")
    assert claims["sub"] == "organizations/o/apiKeys/k"
