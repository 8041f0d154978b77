from decimal import Decimal as D

import pytest

from brokerage import pricing
from brokerage.pricing import Spec, Tick

EURUSD = Spec("EURUSD", "EUR", "USD", D(100000))
USDJPY = Spec("USDJPY", "USD", "JPY", D(100000))
XAUUSD = Spec("XAUUSD", "XAU", "USD", D(100), margin_rate=D(5))
RATES = {"EURUSD": D("1.1000"), "USDJPY": D("150.00"), "GBPUSD": D("1.2500")}


def rates(symbol: str) -> D | None:
    return RATES.get(symbol)


def test_margin_is_notional_over_leverage_in_the_quote_currency():
    assert pricing.margin(
        EURUSD, volume=D(1), price=D("1.1002"), leverage=100, currency="USD", rates=rates
    ) == D("1100.2")


def test_margin_of_a_base_currency_account_needs_no_conversion():
    assert (
        pricing.margin(USDJPY, volume=D(1), price=D("150.00"), leverage=100, currency="USD", rates=rates)
        == 1000
    )


def test_margin_applies_the_instrument_margin_rate():
    assert (
        pricing.margin(XAUUSD, volume=D(1), price=D(2000), leverage=100, currency="USD", rates=rates) == 10000
    )


def test_conversion_goes_direct_or_inverse():
    assert pricing.convert(D(100), "EUR", "USD", rates) == D("110.0000")
    assert pricing.convert(D(110), "USD", "EUR", rates) == D(100)
    assert pricing.convert(D(15000), "JPY", "USD", rates) == D(100)
    with pytest.raises(pricing.NoRate):
        pricing.convert(D(1), "CHF", "USD", rates)


def test_pnl_is_converted_into_the_account_currency():
    args = {"side": "buy", "volume": D(1), "entry": D("1.1002"), "exit": D("1.1050")}
    assert pricing.pnl(EURUSD, **args, currency="USD", rates=rates) == 480
    assert pricing.pnl(EURUSD, **args, currency="GBP", rates=rates) == D(480) / D("1.25")
    jpy = pricing.pnl(
        USDJPY, side="sell", volume=D(1), entry=D("150.00"), exit=D("149.00"), currency="USD", rates=rates
    )
    assert jpy == D(100000) / D(149)


def test_fills_take_the_ask_for_buys_and_the_bid_for_sells_after_markup():
    tick = pricing.client_tick(Tick(D("1.1000"), D("1.1002")), D("0.0001"))
    assert (pricing.open_price("buy", tick), pricing.open_price("sell", tick)) == (D("1.1003"), D("1.0999"))
    assert (pricing.close_price("buy", tick), pricing.close_price("sell", tick)) == (D("1.0999"), D("1.1003"))
    assert pricing.markup_in_price(D("1.5"), pips=True, pip_size=D("0.0001")) == D("0.00015")


def test_money_rounds_to_the_currency_minor_unit_only_there():
    assert pricing.money(D("1100.205"), "USD") == D("1100.20")
    assert pricing.money(D("1100.215"), "USD") == D("1100.22")
    assert pricing.money(D("1234.5"), "JPY") == D("1234")


@pytest.mark.parametrize(
    ("volume", "error"),
    [("0.01", False), ("100", False), ("0.001", True), ("101", True), ("0.015", True), ("0", True)],
)
def test_volume_must_sit_on_the_grid(volume, error):
    result = pricing.volume_error(D(volume), minimum=D("0.01"), maximum=D(100), step=D("0.01"))
    assert (result is not None) == error


@pytest.mark.parametrize(
    ("side", "kind", "level", "bid", "ask", "fires"),
    [
        ("buy", "limit", "1.0950", "1.0948", "1.0950", True),
        ("buy", "limit", "1.0950", "1.0949", "1.0951", False),
        ("buy", "stop", "1.1050", "1.1048", "1.1050", True),
        ("sell", "limit", "1.1050", "1.1050", "1.1052", True),
        ("sell", "stop", "1.0950", "1.0951", "1.0953", False),
        ("buy", "sl", "1.0950", "1.0950", "1.0952", True),
        ("buy", "tp", "1.1050", "1.1049", "1.1051", False),
        ("sell", "sl", "1.1050", "1.1048", "1.1050", True),
        ("sell", "tp", "1.0950", "1.0948", "1.0950", True),
    ],
)
def test_trigger_rules(side, kind, level, bid, ask, fires):
    assert pricing.triggered(side, kind, D(level), Tick(D(bid), D(ask))) is fires
