"""Average-cost basis and bid valuation. Every expected number was worked out by hand (the working is
in the comments), not by running the code."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from portfolio.valuation import (
    Book,
    Fill,
    positions_from_fills,
    products_to_price,
    value_portfolio,
)

D = Decimal
T0 = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)


def fill(n: int, product: str, side: str, size: str, price: str, fee: str, **kw: str) -> Fill:
    return Fill(
        entry_id=f"e{n:03d}",
        product_id=product,
        side=side,
        size=D(size),
        price=D(price),
        commission=D(fee),
        trade_time=T0 + timedelta(minutes=n),
        trade_type=kw.get("trade_type", "FILL"),
    )


BTC_FILLS = [
    fill(1, "BTC-USD", "BUY", "1.0", "30000", "30"),  # qty 1, cost 30030
    fill(2, "BTC-USD", "BUY", "0.5", "36000", "18"),  # qty 1.5, cost 48048, avg 32032
    fill(3, "BTC-USD", "SELL", "0.6", "40000", "24"),  # releases 19219.2; realised 23976 - 19219.2
    fill(4, "BTC-USD", "BUY", "0.1", "35000", "3.5"),  # qty 1.0, cost 28828.8 + 3503.5 = 32332.3
]


def test_average_cost_runs_in_trade_order_over_buys_partial_sells_and_fees() -> None:
    # Given out of order: the computation sorts by trade time.
    position = positions_from_fills(list(reversed(BTC_FILLS)))["BTC-USD"]
    assert position.quantity == D("1.0")
    assert position.cost == D("32332.3")
    assert position.average_cost == D("32332.3")
    assert position.realized_pnl == D("4756.8")
    assert position.fees == D("75.5")
    assert (position.bought, position.sold, position.untracked_sold) == (D("1.6"), D("0.6"), D(0))


def test_the_average_cost_is_unchanged_by_a_partial_sell() -> None:
    position = positions_from_fills(BTC_FILLS[:3])["BTC-USD"]
    assert position.quantity == D("0.9")
    assert position.cost == D("28828.8")
    assert position.average_cost == D("32032")


def test_selling_more_than_the_fills_bought_sells_the_tracked_part_and_shares_the_fee() -> None:
    position = positions_from_fills(
        [fill(1, "SOL-USD", "BUY", "1", "100", "1"), fill(2, "SOL-USD", "SELL", "1.5", "120", "1.8")]
    )["SOL-USD"]
    # tracked 1 of 1.5: fee share 1.2; realised 120 - 1.2 - 101 = 17.8
    assert position.realized_pnl == D("17.8")
    assert (position.quantity, position.cost, position.untracked_sold) == (D(0), D(0), D("0.5"))
    assert position.average_cost is None


def test_adjusted_fills_are_counted_but_not_applied() -> None:
    position = positions_from_fills(
        [*BTC_FILLS[:1], fill(9, "BTC-USD", "SELL", "1.0", "30000", "0", trade_type="REVERSAL")]
    )["BTC-USD"]
    assert (position.quantity, position.cost, position.adjusted_fills, position.fills) == (
        D("1.0"),
        D("30030"),
        1,
        2,
    )


def test_a_fill_with_an_unknown_side_is_refused() -> None:
    with pytest.raises(ValueError, match="side must be BUY or SELL"):
        positions_from_fills([fill(1, "BTC-USD", "HOLD", "1", "1", "0")])


PORTFOLIO_FILLS = [
    *BTC_FILLS,
    fill(10, "ETH-BTC", "BUY", "2", "0.05", "0.0001"),  # cost 0.1001 BTC, avg 0.05005
    fill(11, "SOL-EUR", "BUY", "10", "20", "0.2"),  # cost 200.2 EUR
    fill(12, "ADA-GBP", "BUY", "50", "0.3", "0.15"),
]
BOOKS = {
    "BTC-USD": Book(bid=D("41000"), ask=D("41010")),
    "ETH-BTC": Book(bid=D("0.052"), ask=D("0.0521")),
    "SOL-EUR": Book(bid=D("25"), ask=D("25.1")),
    "USD-EUR": Book(bid=D("0.79"), ask=D("0.8")),  # no EUR-USD: converted at 1 / 0.8 = 1.25
    "ADA-GBP": Book(bid=D("0.4"), ask=D("0.41")),  # and no GBP product at all
}
HOLDINGS = {
    "USD": D("1000.25"),
    "BTC": D("1.2"),  # 0.2 more than the fills: a deposit, no cost basis
    "ETH": D("2"),
    "SOL": D("10"),
    "DOGE": D("100"),  # never traded, and Coinbase sent no DOGE-USD price
    "ADA": D("50"),
    "USDC": D("0"),
}


def test_a_portfolio_is_valued_at_the_bid_with_conversions_and_unpriced_holdings_reported() -> None:
    valuation = value_portfolio(
        holdings=HOLDINGS,
        account_currency="USD",
        positions=positions_from_fills(PORTFOLIO_FILLS),
        books=BOOKS,
    )
    by = {h.currency: h for h in valuation.holdings}
    assert by["USD"].value == D("1000.25")

    btc = by["BTC"]  # 1.2 x 41000; tracked 1.0 at avg 32332.3
    assert (btc.product_id, btc.bid, btc.value) == ("BTC-USD", D("41000"), D("49200.00"))
    assert (btc.tracked_quantity, btc.untracked_quantity) == (D("1.0"), D("0.2"))
    assert (btc.cost_basis, btc.unrealized_pnl) == (D("32332.30"), D("8667.70"))

    eth = by["ETH"]  # 2 x 0.052 BTC x 41000 = 4264; cost 0.1001 x 41000 = 4104.1
    assert (eth.product_id, eth.conversion_product, eth.conversion_rate) == ("ETH-BTC", "BTC-USD", D("41000"))
    assert (eth.value, eth.cost_basis, eth.unrealized_pnl) == (D("4264.00"), D("4104.10"), D("159.90"))
    assert eth.average_cost == D("0.05005")

    sol = by["SOL"]  # 10 x 25 EUR x 1.25 = 312.5; cost 200.2 x 1.25 = 250.25
    assert (sol.conversion_product, sol.conversion_rate) == ("USD-EUR", D("1.25"))
    assert (sol.value, sol.cost_basis, sol.unrealized_pnl) == (D("312.50"), D("250.25"), D("62.25"))

    assert by["DOGE"].value is None and by["DOGE"].unpriced_reason == "no price for DOGE-USD"
    assert by["ADA"].value is None and by["ADA"].bid == D("0.4")
    assert by["ADA"].unpriced_reason.startswith("no conversion product priced for GBP to USD")
    assert by["USDC"].value == D("0.00") and by["USDC"].unpriced_reason == ""

    assert valuation.total_value == D("54776.75")  # 1000.25 + 49200 + 4264 + 312.5
    assert valuation.total_cost_basis == D("36686.65")  # 32332.3 + 4104.1 + 250.25
    assert valuation.total_unrealized_pnl == D("8889.85")  # 8667.7 + 159.9 + 62.25
    assert (valuation.unpriced, valuation.complete) == (["ADA", "DOGE"], False)


def test_an_empty_bid_side_leaves_the_holding_unpriced() -> None:
    valuation = value_portfolio(
        holdings={"BTC": D("1")},
        account_currency="USD",
        positions={},
        books={"BTC-USD": Book(bid=None, ask=D("41010"))},
    )
    assert valuation.holdings[0].unpriced_reason == "no bid for BTC-USD"
    assert valuation.total_value == 0 and not valuation.complete


def test_the_products_asked_for_are_each_pricing_product_and_both_conversion_directions() -> None:
    positions = positions_from_fills(PORTFOLIO_FILLS)
    assert products_to_price(HOLDINGS, "USD", positions) == [
        "ADA-GBP",
        "BTC-USD",
        "DOGE-USD",
        "ETH-BTC",
        "EUR-USD",
        "GBP-USD",
        "SOL-EUR",
        "USD-BTC",
        "USD-EUR",
        "USD-GBP",
        "USDC-USD",
    ]


def test_a_holding_traded_in_the_account_currency_is_priced_there_even_if_traded_elsewhere_later() -> None:
    positions = positions_from_fills(
        [fill(1, "ETH-USD", "BUY", "1", "2000", "2"), fill(2, "ETH-BTC", "BUY", "1", "0.05", "0")]
    )
    assert products_to_price(["ETH"], "USD", positions) == ["ETH-USD"]
    assert products_to_price(["ETH"], "EUR", positions) == ["BTC-EUR", "ETH-BTC", "EUR-BTC"]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.booleans(),
            st.decimals(min_value=D("0.001"), max_value=D("5"), places=3),
            st.decimals(min_value=D("1"), max_value=D("50000"), places=2),
            st.decimals(min_value=D("0"), max_value=D("20"), places=2),
        ),
        min_size=1,
        max_size=12,
    )
)
def test_once_everything_is_sold_the_realized_pnl_is_all_money_in_minus_all_money_out(
    trades: list[tuple[bool, Decimal, Decimal, Decimal]],
) -> None:
    """Average cost only moves PnL between trades: after a full sale, realised PnL must equal the
    sales' proceeds less every fee and every purchase, whatever the order of buys and sells."""
    fills, held, money_in, money_out = [], D(0), D(0), D(0)
    for n, (is_sell, size, price, fee) in enumerate(trades):
        if is_sell and held:
            size = min(size, held)
            fills.append(fill(n, "BTC-USD", "SELL", str(size), str(price), str(fee)))
            held -= size
            money_in += size * price - fee
        else:
            fills.append(fill(n, "BTC-USD", "BUY", str(size), str(price), str(fee)))
            held += size
            money_out += size * price + fee
    if held:
        fills.append(fill(len(trades), "BTC-USD", "SELL", str(held), "100", "1"))
        money_in += held * 100 - 1
    position = positions_from_fills(fills)["BTC-USD"]
    assert (position.quantity, position.cost, position.untracked_sold) == (0, 0, 0)
    assert abs(position.realized_pnl - (money_in - money_out)) < D("1e-15")
