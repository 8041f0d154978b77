"""The catalogue parsers and the import plan, without a database or a venue."""

from decimal import Decimal as D

import pytest

from marketdata.catalogue import (
    Catalogue,
    InstrumentRow,
    MalformedEntry,
    MappingRow,
    binance_entry,
    coinbase_entry,
    digits_of,
    oanda_entry,
    parse_catalogue,
    patterns_of,
    plan_import,
)
from tests.fakes.binance import binance_symbol
from tests.fakes.coinbase import coinbase_product
from tests.fakes.oanda import oanda_instrument


@pytest.mark.parametrize(
    ("tick", "digits"),
    [("0.00001", 5), ("0.01000000", 2), ("0.5", 1), ("0.25", 2), ("0.005", 3), ("1", 0), ("5", 0), ("10", 0)],
)
def test_digits_are_the_decimals_of_the_tick(tick, digits):
    assert digits_of(D(tick)) == digits


def test_patterns_are_comma_or_space_separated_and_case_blind():
    assert patterns_of(" btc-*, eth-usd  *EUR ") == ["BTC-*", "ETH-USD", "*EUR"]
    assert patterns_of("") == []


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (coinbase_product("BTC-USD", base_name="B", quote_name="U", base_min_size="-1"), "base_min_size"),
        (coinbase_product("BTC-USD", base_name="B", quote_name="U", base_increment="abc"), "not a number"),
        (coinbase_product("BTC-USD", base_name="B", quote_name="U", base_max_size="0.000000001"), "below"),
        ({**binance_symbol("BTCUSDT", "BTC", "USDT"), "filters": []}, "no PRICE_FILTER"),
        (binance_symbol("BTCUSDT", "BTC", "USDT", step_size="0"), "stepSize must be positive"),
        (binance_symbol("BTCUSDT", "BTC", "USD-T"), "quoteAsset is not a currency code"),
        ({**oanda_instrument("EUR_USD"), "name": "EURUSD"}, "not BASE_QUOTE"),
        ({**oanda_instrument("EUR_USD"), "pipLocation": "-4"}, "pipLocation"),
        ({**oanda_instrument("EUR_USD"), "minimumTradeSize": 1.5}, "minimumTradeSize"),
    ],
)
def test_a_malformed_entry_says_what_is_wrong(entry, message):
    parse = (
        coinbase_entry if "product_id" in entry else binance_entry if "baseAsset" in entry else oanda_entry
    )
    with pytest.raises(MalformedEntry, match=message):
        parse(entry)


def row(symbol: str, base: str, quote: str, **kw: object) -> InstrumentRow:
    values: dict[str, object] = {
        "description": "",
        "contract_size": D(1),
        "digits": 2,
        "tick_size": D("0.01"),
        "pip_size": D("0.01"),
        "volume_min": D("0.00001"),
        "volume_max": D(9000),
        "volume_step": D("0.00001"),
        "tradable": True,
        **kw,
    }
    return InstrumentRow(symbol=symbol, base_currency=base, quote_currency=quote, **values)  # type: ignore[arg-type]


def test_sizes_that_do_not_fit_the_columns_in_the_instruments_lots_are_errors():
    catalogue = parse_catalogue(
        "binance", {"symbols": [binance_symbol("BTCUSDT", "BTC", "USDT", step_size="0.00000001")]}
    )
    # 1e-8 BTC in lots of 1000 BTC is 1e-11 lots: more decimals than volumes have.
    plan = plan_import(
        "bn",
        catalogue,
        match="",
        instruments={"BTCUSDT": row("BTCUSDT", "BTC", "USDT", contract_size=D(1000))},
        mappings=[],
    )
    assert plan.items == []
    assert plan.errors == [("BTCUSDT", "volume_step 1E-11 (lots of 1000) does not fit 8 decimals")]


def test_two_entries_for_one_instrument_are_an_error_not_a_silent_overwrite():
    catalogue = Catalogue(
        [
            binance_entry(binance_symbol("BTCUSDT", "BTC", "USDT")),
            binance_entry(binance_symbol("XBTUSDT", "XBT", "USDT")),
        ],
        [],
    )
    plan = plan_import(
        "bn",
        catalogue,
        match="",
        instruments={"BTCUSDT": row("BTCUSDT", "BTC", "USDT")},
        mappings=[MappingRow("XBTUSDT", "BTCUSDT", True)],
    )
    assert [i.symbol for i in plan.items] == ["BTCUSDT"]
    assert plan.errors == [("XBTUSDT", "BTCUSDT is also the instrument of BTCUSDT")]


def test_a_mapping_under_another_name_is_renamed_and_the_fingerprint_follows_the_plan():
    catalogue = Catalogue([binance_entry(binance_symbol("BTCUSDT", "BTC", "USDT"))], [])
    instruments = {"BTCUSDT": row("BTCUSDT", "BTC", "USDT")}

    renamed = plan_import(
        "bn", catalogue, match="", instruments=instruments, mappings=[MappingRow("btcusdt", "BTCUSDT", True)]
    )
    same = plan_import(
        "bn", catalogue, match="", instruments=instruments, mappings=[MappingRow("BTCUSDT", "BTCUSDT", True)]
    )

    [item] = renamed.items
    assert (item.action, item.mapping, item.old_name, item.changes) == ("update", "rename", "btcusdt", {})
    assert same.items[0].action == "unchanged"
    assert renamed.fingerprint != same.fingerprint
