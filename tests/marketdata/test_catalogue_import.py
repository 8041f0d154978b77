import json
from collections.abc import Iterator
from decimal import Decimal as D
from io import StringIO

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command

from kernel.errors import ServiceError
from marketdata.models import Instrument, Venue, VenueKind, VenueSymbol
from marketdata.services import instruments_import
from tests.fakes.binance import BinanceRestFake, binance_symbol
from tests.fakes.coinbase import CoinbaseKey, CoinbaseRestFake, coinbase_product
from tests.fakes.oanda import OandaFake, oanda_instrument
from tests.support.instruments import make_instrument
from tests.support.users import make_staff
from users.models import AuditLog

pytestmark = pytest.mark.django_db

SPEC_FIELDS = (
    "description",
    "base_currency",
    "quote_currency",
    "contract_size",
    "digits",
    "tick_size",
    "pip_size",
    "volume_min",
    "volume_max",
    "volume_step",
    "margin_rate",
    "tradable",
)


def spec(symbol: str) -> dict[str, object]:
    row = Instrument.objects.get(symbol=symbol)
    return {name: getattr(row, name) for name in SPEC_FIELDS}


def mappings(venue: Venue) -> dict[str, tuple[str, bool]]:
    return {
        m.venue_symbol: (m.instrument.symbol, m.enabled)
        for m in VenueSymbol.objects.filter(venue=venue).select_related("instrument")
    }


def snapshot() -> tuple[list[dict[str, object]], list[tuple[object, ...]]]:
    return (
        [spec(s) for s in Instrument.objects.values_list("symbol", flat=True)],
        list(VenueSymbol.objects.values_list("venue_id", "instrument_id", "venue_symbol", "enabled")),
    )


@pytest.fixture
def coinbase_public(coinbase_key: CoinbaseKey) -> Iterator[CoinbaseRestFake]:
    with CoinbaseRestFake(coinbase_key) as fake:
        fake.products = [
            coinbase_product("BTC-USD", base_name="Bitcoin", quote_name="US Dollar"),
            coinbase_product(
                "ETH-EUR",
                base_name="Ethereum",
                quote_name="Euro",
                base_increment="0.0001",
                base_min_size="0.001",
                base_max_size="1200",
            ),
            coinbase_product(
                "SOL-USD",
                base_name="Solana",
                quote_name="US Dollar",
                quote_increment="0.001",
                price_increment="0.005",
                base_increment="0.001",
                base_min_size="0.01",
                base_max_size="50000",
            ),
            coinbase_product("OLD-USD", base_name="Old", quote_name="US Dollar", status="delisted"),
            {
                **coinbase_product("BIT-PERP", base_name="Bitcoin", quote_name="US Dollar"),
                "product_type": "FUTURE",
            },
        ]
        yield fake


@pytest.fixture
def coinbase_venue(coinbase_public: CoinbaseRestFake) -> Venue:
    return Venue.objects.create(
        code="cb", name="Coinbase", kind=VenueKind.COINBASE, config={"rest_url": coinbase_public.url}
    )


@pytest.fixture
def binance_rest() -> Iterator[BinanceRestFake]:
    with BinanceRestFake() as fake:
        fake.symbols = [
            binance_symbol("BTCUSDT", "BTC", "USDT"),
            binance_symbol(
                "ETHBTC", "ETH", "BTC", tick_size="0.00001000", step_size="0.00010000", min_qty="0.00000000"
            ),
            binance_symbol("BNBUSDT", "BNB", "USDT", tick_size="0.50000000"),
            binance_symbol("LUNAUSDT", "LUNA", "USDT", status="BREAK"),
        ]
        yield fake


@pytest.fixture
def binance_venue(binance_rest: BinanceRestFake) -> Venue:
    return Venue.objects.create(
        code="bn", name="Binance", kind=VenueKind.BINANCE, config={"rest_url": binance_rest.url}
    )


@pytest.fixture
def oanda_venue(oanda: OandaFake) -> Venue:
    oanda.instruments = [
        oanda_instrument("EUR_USD"),
        oanda_instrument(
            "USD_JPY", pip_location=-2, display_precision=3, margin_rate="0.04", display_name="USD/JPY"
        ),
        oanda_instrument(
            "XAU_USD",
            kind="METAL",
            display_name="Gold",
            pip_location=-2,
            display_precision=3,
            trade_units_precision=0,
            minimum_trade_size="1",
            maximum_order_units="5000",
            margin_rate="0.05",
        ),
    ]
    return Venue.objects.create(
        code="oa",
        name="OANDA",
        kind=VenueKind.OANDA,
        config={"rest_url": oanda.url, "account_id": oanda.account_id},
        credentials=json.dumps({"token": oanda.token}),
    )


def test_coinbase_products_become_instruments_field_for_field(coinbase_venue, coinbase_public):
    plan = instruments_import(venue=coinbase_venue)

    assert plan.counts == {"create": 3, "update": 0, "unchanged": 0, "skipped": 1}
    assert plan.of("skipped")[0].reason == "not trading at the venue (delisted): not created"
    assert spec("BTCUSD") == {
        "description": "Bitcoin vs US Dollar",
        "base_currency": "BTC",
        "quote_currency": "USD",
        "contract_size": D(1),
        "digits": 2,
        "tick_size": D("0.01"),
        "pip_size": D("0.01"),
        "volume_min": D("0.00000001"),
        "volume_max": D(3400),
        "volume_step": D("0.00000001"),
        "margin_rate": D(1),
        "tradable": True,
    }
    eth = spec("ETHEUR")
    assert (eth["volume_min"], eth["volume_max"], eth["volume_step"]) == (D("0.001"), D(1200), D("0.0001"))
    # price_increment wins over quote_increment, and 0.005 is not a power of ten: kept exactly.
    sol = spec("SOLUSD")
    assert (sol["tick_size"], sol["digits"], sol["tradable"]) == (D("0.005"), 3, True)
    assert not Instrument.objects.filter(symbol__in=["OLDUSD", "BITPERP"]).exists()  # delisted, a future
    assert mappings(coinbase_venue) == {
        "BTC-USD": ("BTCUSD", False),
        "ETH-EUR": ("ETHEUR", False),
        "SOL-USD": ("SOLUSD", False),
    }
    [request] = coinbase_public.requests
    assert request.path == "/api/v3/brokerage/market/products"
    assert request.arg("product_type") == "SPOT"
    assert "Authorization" not in request.headers  # the public catalogue needs no key


def test_binance_exchange_info_symbols_become_instruments(binance_venue, binance_rest):
    instruments_import(venue=binance_venue)

    btc = spec("BTCUSDT")
    assert (btc["base_currency"], btc["quote_currency"], btc["description"]) == ("BTC", "USDT", "BTC vs USDT")
    assert (btc["tick_size"], btc["digits"], btc["pip_size"]) == (D("0.01"), 2, D("0.01"))
    assert (btc["volume_min"], btc["volume_max"], btc["volume_step"]) == (D("0.00001"), D(9000), D("0.00001"))
    assert btc["tradable"] is True
    # minQty 0 means no minimum: one step is the smallest tradable size.
    eth = spec("ETHBTC")
    assert (eth["tick_size"], eth["digits"], eth["volume_min"], eth["volume_step"]) == (
        D("0.00001"),
        5,
        D("0.0001"),
        D("0.0001"),
    )
    bnb = spec("BNBUSDT")
    assert (bnb["tick_size"], bnb["digits"], bnb["tradable"]) == (D("0.5"), 1, True)
    assert set(mappings(binance_venue)) == {"BTCUSDT", "ETHBTC", "BNBUSDT"}  # not LUNAUSDT, in BREAK
    assert [r.path for r in binance_rest.requests] == ["/api/v3/exchangeInfo"]


def test_oanda_instruments_become_instruments_in_lots(oanda_venue, oanda):
    plan = instruments_import(venue=oanda_venue)

    assert spec("EURUSD") == {
        "description": "EUR/USD",
        "base_currency": "EUR",
        "quote_currency": "USD",
        "contract_size": D(100000),
        "digits": 5,
        "tick_size": D("0.00001"),
        "pip_size": D("0.0001"),
        "volume_min": D("0.00001"),  # 1 unit
        "volume_max": D(1000),  # 100,000,000 units
        "volume_step": D("0.00001"),
        "margin_rate": D(1),  # OANDA's marginRate is a fraction of the notional: not ours
        "tradable": True,
    }
    jpy = spec("USDJPY")
    assert (jpy["digits"], jpy["tick_size"], jpy["pip_size"]) == (3, D("0.001"), D("0.01"))
    gold = spec("XAUUSD")
    assert (gold["contract_size"], gold["volume_min"], gold["volume_max"], gold["volume_step"]) == (
        D(1),
        D(1),
        D(5000),
        D(1),
    )
    assert {i.symbol: i.entry.venue_margin_rate for i in plan.items} == {
        "EURUSD": D("0.0333"),
        "USDJPY": D("0.04"),
        "XAUUSD": D("0.05"),
    }
    assert mappings(oanda_venue)["EUR_USD"] == ("EURUSD", False)
    [request] = oanda.requests
    assert request.path == f"/v3/accounts/{oanda.account_id}/instruments"
    assert request.headers["Authorization"] == f"Bearer {oanda.token}"


def test_the_preview_creates_nothing(coinbase_venue):
    eurusd = make_instrument("EURUSD")
    before = snapshot()

    plan = instruments_import(venue=coinbase_venue, dry_run=True)

    assert [(i.action, i.symbol) for i in plan.items] == [
        ("create", "BTCUSD"),
        ("create", "ETHEUR"),
        ("create", "SOLUSD"),
        ("skipped", "OLDUSD"),
    ]
    assert plan.items[0].values["tick_size"] == D("0.01")
    assert snapshot() == before
    assert list(Instrument.objects.all()) == [eurusd]


def test_a_second_import_changes_nothing(coinbase_venue):
    instruments_import(venue=coinbase_venue)
    before = snapshot()

    plan = instruments_import(venue=coinbase_venue)

    assert plan.counts == {"create": 0, "update": 0, "unchanged": 3, "skipped": 1}
    assert snapshot() == before


def test_match_takes_only_the_matching_products(coinbase_venue):
    plan = instruments_import(venue=coinbase_venue, match="btc-*, *EUR")

    assert sorted(i.symbol for i in plan.items) == ["BTCUSD", "ETHEUR"]
    assert sorted(Instrument.objects.values_list("symbol", flat=True)) == ["BTCUSD", "ETHEUR"]


def test_an_existing_instrument_keeps_the_desks_lot_description_and_tradable_flag(oanda_venue):
    eurusd = make_instrument("EURUSD")
    Instrument.objects.filter(pk=eurusd.pk).update(description="Euro vs US Dollar", tradable=False)

    plan = instruments_import(venue=oanda_venue, match="EUR_USD")

    [item] = plan.items
    assert item.action == "update" and item.mapping == "create"
    assert item.changes == {
        "volume_min": (D("0.01"), D("0.00001")),
        "volume_max": (D(100), D(1000)),
        "volume_step": (D("0.01"), D("0.00001")),
    }
    after = spec("EURUSD")
    assert (after["contract_size"], after["description"], after["tradable"]) == (
        D(100000),
        "Euro vs US Dollar",
        False,
    )
    assert after["volume_min"] == D("0.00001")


def test_a_venue_name_already_mapped_keeps_its_instrument_and_a_proxy_is_skipped(binance_venue):
    btcusd = Instrument.objects.create(
        symbol="BTCUSD",
        base_currency="BTC",
        quote_currency="USD",
        contract_size=D(1),
        digits=2,
        pip_size=D(1),
        volume_min=D("0.01"),
        volume_max=D(10),
        volume_step=D("0.01"),
    )
    VenueSymbol.objects.create(venue=binance_venue, instrument=btcusd, venue_symbol="BTCUSDT", enabled=True)

    plan = instruments_import(venue=binance_venue)

    skipped = {i.symbol: i.reason for i in plan.of("skipped")}
    assert skipped["BTCUSD"] == "mapped to BTCUSD (BTC/USD), the venue quotes BTC/USDT: specs not imported"
    assert not Instrument.objects.filter(symbol="BTCUSDT").exists()
    assert spec("BTCUSD")["volume_min"] == D("0.01")
    assert mappings(binance_venue)["BTCUSDT"] == ("BTCUSD", True)


def test_a_malformed_entry_writes_nothing(binance_venue, binance_rest):
    broken = binance_symbol("XRPUSDT", "XRP", "USDT")
    broken["filters"] = [f for f in broken["filters"] if f["filterType"] != "LOT_SIZE"]
    binance_rest.symbols.append(broken)
    binance_rest.symbols.append({"status": "TRADING"})
    before = snapshot()

    with pytest.raises(ServiceError) as caught:
        instruments_import(venue=binance_venue)

    assert caught.value.code == "catalogue_malformed"
    assert "nothing was written" in caught.value.message
    assert caught.value.fields == {"catalogue": ["XRPUSDT: no LOT_SIZE filter", "#5: symbol is missing"]}
    assert snapshot() == before
    # An entry without a name is a broken response whatever the match; a named one outside the
    # match is not looked at.
    with pytest.raises(ServiceError):
        instruments_import(venue=binance_venue, match="BTCUSDT")
    binance_rest.symbols.pop()
    assert instruments_import(venue=binance_venue, match="BTCUSDT").counts["create"] == 1


def test_a_venue_error_is_reported_and_writes_nothing(binance_venue, binance_rest):
    binance_rest.fail_next(1, 403, {"code": -2015, "msg": "Invalid API-key, IP, or permissions for action."})

    with pytest.raises(ServiceError) as caught:
        instruments_import(venue=binance_venue)

    assert caught.value.code == "venue_error" and caught.value.status_code == 502
    assert "HTTP 403: Invalid API-key, IP, or permissions for action." in caught.value.message
    assert not Instrument.objects.exists()


def test_a_response_without_a_catalogue_is_a_venue_error(coinbase_venue, coinbase_public):
    coinbase_public.fail_next(1, 200, {"pricebooks": []})

    with pytest.raises(ServiceError) as caught:
        instruments_import(venue=coinbase_venue)

    assert caught.value.code == "venue_error" and "no 'products' list" in caught.value.message


def test_oanda_without_a_token_or_a_simulator_has_no_catalogue(oanda_venue, monkeypatch):
    monkeypatch.delenv("OANDA_TOKEN", raising=False)
    Venue.objects.filter(pk=oanda_venue.pk).update(credentials="")
    oanda_venue.refresh_from_db()
    with pytest.raises(ServiceError) as caught:
        instruments_import(venue=oanda_venue)
    assert caught.value.code == "catalogue_unavailable" and "OANDA token" in caught.value.message

    sim = Venue.objects.create(code="sim", name="Sim", kind=VenueKind.SIMULATOR)
    with pytest.raises(ServiceError) as caught:
        instruments_import(venue=sim)
    assert caught.value.code == "catalogue_unavailable" and "simulator venue" in caught.value.message


def test_a_confirmation_of_a_stale_preview_writes_nothing(coinbase_venue, coinbase_public):
    preview = instruments_import(venue=coinbase_venue, dry_run=True)
    coinbase_public.products[0]["base_max_size"] = "5000"

    with pytest.raises(ServiceError) as caught:
        instruments_import(venue=coinbase_venue, expected=preview.fingerprint)

    assert caught.value.code == "catalogue_changed" and caught.value.status_code == 409
    assert not Instrument.objects.exists()
    fresh = instruments_import(venue=coinbase_venue, dry_run=True)
    instruments_import(venue=coinbase_venue, expected=fresh.fingerprint)
    assert spec("BTCUSD")["volume_max"] == D(5000)


def test_an_import_by_an_operator_is_audited(coinbase_venue):
    ops = make_staff("ops")

    instruments_import(venue=coinbase_venue, match="BTC-USD", actor=ops)

    entry = AuditLog.objects.get(action="venue.instruments_import")
    assert entry.actor == ops and entry.object_repr == "cb"
    assert entry.details == {"match": "BTC-USD", "create": ["BTCUSD"], "update": []}


def test_the_command_previews_then_imports(coinbase_venue):
    out = StringIO()
    call_command("instruments_import", "cb", "--match", "BTC-USD", "--dry-run", stdout=out)
    assert "create    BTC-USD          BTCUSD       tick_size=0.01, digits=2" in out.getvalue()
    assert "cb: 1 create, 0 update, 0 unchanged, 0 skipped (dry run: nothing written)" in out.getvalue()
    assert not Instrument.objects.exists()

    call_command("instruments_import", "cb", "--match", "BTC-USD", stdout=StringIO())
    out = StringIO()
    call_command("instruments_import", "cb", "--match", "BTC-USD", stdout=out)
    assert "unchanged BTC-USD          BTCUSD" in out.getvalue()
    assert "cb: 0 create, 0 update, 1 unchanged, 0 skipped" in out.getvalue()


def test_the_command_refuses_bad_input_clearly(coinbase_venue, binance_venue, binance_rest):
    with pytest.raises(CommandError, match=r"Unknown venue 'nope' \(known: .*cb.*\)"):
        call_command("instruments_import", "nope")
    with pytest.raises(CommandError, match="No staff user 'ghost'"):
        call_command("instruments_import", "cb", "--operator", "ghost")
    binance_rest.symbols.append({"symbol": "BADONE", "status": "TRADING"})
    err = StringIO()
    with pytest.raises(CommandError, match="1 catalogue entries cannot be imported"):
        call_command("instruments_import", "bn", "--dry-run", stdout=StringIO(), stderr=err)
    assert "BADONE" in err.getvalue() and "baseAsset" in err.getvalue()
    with pytest.raises(CommandError, match="cannot be imported, nothing was written"):
        call_command("instruments_import", "bn", stdout=StringIO())
    assert not Instrument.objects.exists()


def test_an_instrument_saved_without_a_tick_gets_one_unit_of_its_last_digit_and_a_finer_tick_is_refused():
    eurusd = make_instrument("EURUSD", digits=5)
    assert eurusd.tick_size == D("0.00001")

    eurusd.tick_size = D("0.5")
    eurusd.full_clean()  # 0.5 needs 1 digit of 5
    eurusd.tick_size = D("0.000001")
    with pytest.raises(ValidationError, match=r"A tick of 0\.000001 needs more than 5 digits"):
        eurusd.full_clean()


def test_an_import_can_put_what_it_imports_on_the_watchlist(coinbase_venue):
    ops = make_staff("ops")

    instruments_import(venue=coinbase_venue, match="BTC-USD, OLD-USD", watch=True, actor=ops)
    call_command("instruments_import", "cb", "--match", "ETH-*", "--watch", stdout=StringIO())

    assert mappings(coinbase_venue) == {"BTC-USD": ("BTCUSD", True), "ETH-EUR": ("ETHEUR", True)}
    entry = AuditLog.objects.get(action="venue.watchlist_change")
    assert entry.details == {"added": ["BTC-USD"], "removed": []}
