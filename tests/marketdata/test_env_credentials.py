"""The desk's venue keys in the environment (OANDA_TOKEN, COINBASE_*) go only to the venue's own hosts:
a venue row pointed at another server sends its own credentials or none."""

import pytest

from marketdata.adapters.base import VenueConfig, official_url
from marketdata.adapters.coinbase import OFFICIAL_ORIGINS as COINBASE_ORIGINS
from marketdata.adapters.coinbase import CoinbaseAdapter, coinbase_signer
from marketdata.adapters.oanda import OFFICIAL_ORIGINS as OANDA_ORIGINS
from marketdata.adapters.oanda import OandaAdapter, oanda_account, oanda_token
from marketdata.backfill import can_backfill
from marketdata.catalogue import CatalogueUnavailable, catalogue_payload
from marketdata.quotes import Quote
from tests.fakes.coinbase import CoinbaseKey, CoinbaseWsFake
from tests.fakes.fixtures import fast_backoff, running
from tests.fakes.oanda import OandaFake
from tests.support.waiting import await_until

DESK_TOKEN = "oanda-test-token"  # what the OANDA fake accepts: a leak would be served


@pytest.fixture
def desk_keys(monkeypatch: pytest.MonkeyPatch, coinbase_key: CoinbaseKey) -> None:
    monkeypatch.setenv("OANDA_TOKEN", DESK_TOKEN)
    monkeypatch.setenv("OANDA_ACCOUNT_ID", "101-004-0000000-001")
    monkeypatch.setenv("COINBASE_API_KEY_NAME", coinbase_key.name)
    monkeypatch.setenv("COINBASE_PRIVATE_KEY_PEM", coinbase_key.private_pem)


@pytest.mark.parametrize(
    "url",
    [
        "https://api-fxtrade.oanda.com",
        "https://stream-fxtrade.oanda.com/",
        "https://api-fxpractice.oanda.com",
        "https://STREAM-FXPRACTICE.oanda.com:443/",
    ],
)
def test_oandas_own_hosts_get_the_environment_token(desk_keys: None, url: str) -> None:
    assert oanda_token({}, url=url) == DESK_TOKEN
    assert oanda_account({}, url=url) == "101-004-0000000-001"


@pytest.mark.parametrize(
    "url",
    [
        "http://api-fxtrade.oanda.com",
        "https://api-fxtrade.oanda.com:8443",
        "https://api-fxtrade.oanda.com.evil.example",
        "https://evil.example/api-fxtrade.oanda.com",
        "https://api-fxtrade.oanda.com@evil.example",
        "https://user@api-fxtrade.oanda.com",
        "https://api-fxtrade.oanda.com./",
        "https://api-fxtrade.oanda.com/v3",
        "https://api-fxtrade.oanda.com?@evil.example",
        "https://api-fxtrade.oanda.com#@evil.example",
        "https://api-fxtrade.oanda.com\\@evil.example",
        "wss://api-fxtrade.oanda.com",
        "https://api.coinbase.com",
        "https://[",
        "",
    ],
)
def test_any_other_url_gets_no_environment_token(desk_keys: None, url: str) -> None:
    assert oanda_token({}, url=url) == ""
    assert oanda_account({}, url=url) == ""
    assert not official_url(url, OANDA_ORIGINS)


def test_a_venues_own_token_goes_wherever_it_points(desk_keys: None) -> None:
    assert oanda_token({"token": "venue-token"}, url="http://127.0.0.1:9") == "venue-token"


def test_coinbase_signs_with_the_environment_keys_only_for_coinbase(desk_keys: None) -> None:
    for url in (
        "https://api.coinbase.com",
        "wss://advanced-trade-ws.coinbase.com",
        "wss://advanced-trade-ws-user.coinbase.com",
    ):
        assert official_url(url, COINBASE_ORIGINS)
        assert coinbase_signer({}, url=url) is not None
    for url in ("ws://advanced-trade-ws.coinbase.com", "wss://api.coinbase.com", "wss://ws.evil.example"):
        assert coinbase_signer({}, url=url) is None


async def test_an_oanda_venue_on_another_server_sends_no_token(desk_keys: None, oanda: OandaFake) -> None:
    quotes: list[Quote] = []
    venue = VenueConfig(
        code="oa",
        kind="oanda",
        config={"stream_url": oanda.url, "account_id": oanda.account_id},
        symbols={"EUR_USD": "EURUSD"},
    )
    adapter = OandaAdapter(venue, quotes.append, backoff=fast_backoff())
    async with running(adapter):
        await await_until(lambda: "no OANDA token" in adapter.stats.last_error)
    assert oanda.requests == [] and quotes == []


async def test_a_coinbase_venue_on_another_server_subscribes_unsigned(
    desk_keys: None, coinbase_key: CoinbaseKey
) -> None:
    async with CoinbaseWsFake(coinbase_key) as fake:
        venue = VenueConfig(
            code="cb", kind="coinbase", config={"ws_url": fake.url}, symbols={"BTC-USD": "BTCUSD"}
        )
        adapter = CoinbaseAdapter(venue, [].append, backoff=fast_backoff())
        async with running(adapter):
            await fake.wait_until(lambda: fake.subscribed("level2", "BTC-USD") == 1)
    assert adapter.signer is None
    assert fake.subscribe_messages and all("jwt" not in m for m in fake.subscribe_messages)
    assert fake.jwt_claims == []


def test_an_oanda_venue_on_another_server_has_no_catalogue_or_history(
    desk_keys: None, oanda: OandaFake
) -> None:
    venue = VenueConfig(code="oa", kind="oanda", config={"rest_url": oanda.url})
    with pytest.raises(CatalogueUnavailable, match="needs an OANDA token"):
        catalogue_payload(venue)
    assert not can_backfill(venue)
    assert oanda.requests == []
