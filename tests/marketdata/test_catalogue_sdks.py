"""The venues' official SDKs read the fakes' catalogues: the fakes speak the real protocol, and what
our import stores is what the SDK parses from the same response."""

import json
from collections.abc import Iterator
from decimal import Decimal as D
from typing import Any

import pytest
import v20
from binance_common.configuration import ConfigurationRestAPI
from binance_common.errors import BadRequestError
from binance_sdk_spot.spot import Spot
from coinbase.rest import RESTClient

from marketdata.models import Instrument, Venue, VenueKind
from marketdata.services import instruments_import
from tests.fakes.binance import BinanceRestFake, binance_symbol
from tests.fakes.coinbase import CoinbaseKey, CoinbaseRestFake, coinbase_product
from tests.fakes.oanda import OandaFake, oanda_instrument

pytestmark = pytest.mark.django_db


@pytest.fixture
def coinbase_tls(coinbase_key: CoinbaseKey, monkeypatch: pytest.MonkeyPatch) -> Iterator[CoinbaseRestFake]:
    """coinbase-advanced-py only speaks https: the fake serves TLS and requests trusts its cert."""
    fake = CoinbaseRestFake(coinbase_key)
    fake.tls = True
    with fake:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", fake.ca_file)
        fake.products = [
            coinbase_product("BTC-USD", base_name="Bitcoin", quote_name="US Dollar"),
            coinbase_product("ETH-EUR", base_name="Ethereum", quote_name="Euro", base_increment="0.0001"),
        ]
        yield fake


def test_coinbase_sdk_lists_the_public_products(coinbase_tls, coinbase_key):
    client = RESTClient(base_url=coinbase_tls.host)

    listed = client.get_public_products(product_type="SPOT")

    assert listed.num_products == 2
    btc = listed.products[0]
    assert (btc.product_id, btc.base_name, btc.quote_name) == ("BTC-USD", "Bitcoin", "US Dollar")
    assert (btc.base_increment, btc.price_increment, btc.base_min_size, btc.base_max_size) == (
        "0.00000001",
        "0.01",
        "0.00000001",
        "3400",
    )
    assert (btc.base_currency_id, btc.quote_currency_id, btc.status, btc.product_type) == (
        "BTC",
        "USD",
        "online",
        "SPOT",
    )
    assert "Authorization" not in coinbase_tls.requests[-1].headers

    # With a key the SDK signs even public calls; the public catalogue does not care.
    keyed = RESTClient(
        api_key=coinbase_key.name, api_secret=coinbase_key.private_pem, base_url=coinbase_tls.host
    )
    assert [p.product_id for p in keyed.get_public_products().products] == ["BTC-USD", "ETH-EUR"]
    assert coinbase_tls.requests[-1].headers["Authorization"].startswith("Bearer ")


def test_binance_sdk_reads_exchange_info_and_what_we_import_matches_it():
    with BinanceRestFake() as fake:
        fake.symbols = [
            binance_symbol("BTCUSDT", "BTC", "USDT", tick_size="0.50000000", step_size="0.00100000")
        ]
        client = Spot(config_rest_api=ConfigurationRestAPI(base_path=fake.url, retries=0))

        info: Any = client.rest_api.exchange_info().data()  # the SDK's pydantic model
        filters = {f.actual_instance.filter_type: f.actual_instance for f in info.symbols[0].filters}
        with pytest.raises(BadRequestError, match="Invalid symbol"):
            client.rest_api.exchange_info(symbol="NOPEUSDT")

        venue = Venue.objects.create(
            code="bn", name="Binance", kind=VenueKind.BINANCE, config={"rest_url": fake.url}
        )
        instruments_import(venue=venue)

    assert (info.symbols[0].symbol, info.symbols[0].base_asset, info.symbols[0].quote_asset) == (
        "BTCUSDT",
        "BTC",
        "USDT",
    )
    assert set(filters) == {"PRICE_FILTER", "LOT_SIZE", "ICEBERG_PARTS", "NOTIONAL"}
    btc = Instrument.objects.get(symbol="BTCUSDT")
    assert btc.tick_size == D(filters["PRICE_FILTER"].tick_size) == D("0.5")
    assert btc.volume_step == D(filters["LOT_SIZE"].step_size)
    assert btc.volume_min == D(filters["LOT_SIZE"].min_qty)
    assert btc.volume_max == D(filters["LOT_SIZE"].max_qty)


def test_oanda_sdk_reads_the_account_instruments_and_what_we_import_matches_it(oanda: OandaFake):
    oanda.instruments = [
        oanda_instrument("EUR_USD"),
        oanda_instrument("USD_JPY", pip_location=-2, display_precision=3),
    ]
    ctx = v20.Context("127.0.0.1", oanda.port, ssl=False, token=oanda.token)

    response = ctx.account.instruments(oanda.account_id)
    only = ctx.account.instruments(oanda.account_id, instruments="USD_JPY")
    wrong = ctx.account.instruments("101-004-00000000-001")

    assert response.status == 200 and response.get("lastTransactionID", 200) == "6356"
    listed = {i.name: i for i in response.get("instruments", 200)}
    assert [i.name for i in only.get("instruments", 200)] == ["USD_JPY"]
    assert wrong.status == 400
    venue = Venue.objects.create(
        code="oa",
        name="OANDA",
        kind=VenueKind.OANDA,
        config={"rest_url": oanda.url, "account_id": oanda.account_id},
        credentials=json.dumps({"token": oanda.token}),
    )
    instruments_import(venue=venue)
    for name, symbol in (("EUR_USD", "EURUSD"), ("USD_JPY", "USDJPY")):
        sdk, ours = listed[name], Instrument.objects.get(symbol=symbol)
        assert (sdk.type, sdk.displayName) == ("CURRENCY", ours.description)
        assert ours.digits == sdk.displayPrecision
        assert ours.pip_size == D(10) ** sdk.pipLocation
        assert ours.volume_step * ours.contract_size == D(10) ** -sdk.tradeUnitsPrecision
        assert ours.volume_min * ours.contract_size == D(str(sdk.minimumTradeSize))
        assert ours.volume_max * ours.contract_size == D(str(sdk.maximumOrderUnits))
