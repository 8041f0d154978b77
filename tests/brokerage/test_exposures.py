"""The account totals the dealing engine checks margin with come from exposures (positions summed per
instrument and side, in the database on the order path); they must equal the totals of the positions."""

from decimal import Decimal as D

import pytest
from django.db import connection

from brokerage import pricing, services
from brokerage.models import ClientGroup, GroupInstrument, Position
from brokerage.quotes import redis_quotes
from brokerage.selectors import (
    Conditions,
    account_summary,
    accounts_exposures,
    exposure_pnl,
    exposures_of,
    open_exposures,
    open_positions,
    position_pnl,
    remarked_margin,
)
from kernel import sql
from marketdata.models import Instrument
from tests.support.trading import open_account

pytestmark = pytest.mark.django_db

SPEC = pricing.Spec(symbol="USDJPY", base="USD", quote="JPY", contract_size=D(100000))


def test_the_pnl_of_a_cost_basis_is_the_sum_of_the_positions_pnl():
    fills = [(D("0.37"), D("150.123")), (D("1.2"), D("149.871")), (D("0.05"), D("151.004"))]
    rates = {"USDJPY": D("150.2")}.get
    for currency in ("JPY", "USD"):
        each = sum(
            pricing.pnl(
                SPEC, side="sell", volume=v, entry=p, exit=D("150.31"), currency=currency, rates=rates
            )
            for v, p in fills
        )
        together = pricing.pnl_of_cost(
            SPEC,
            side="sell",
            volume=sum(v for v, _ in fills),
            cost=sum(v * p for v, p in fills),
            exit=D("150.31"),
            currency=currency,
            rates=rates,
        )
        assert pricing.money(together, currency) == pricing.money(each, currency)


def test_exposures_summed_by_the_database_equal_those_of_the_loaded_positions(alice, instruments, market):
    group = ClientGroup.objects.create(
        name="marked-up", currency="USD", leverage=50, markup_default=D("0.00003")
    )
    GroupInstrument.objects.create(group=group, instrument=instruments["USDJPY"], markup=D("0.02"))
    account = open_account(alice, group, balance="500000")
    market.set("EURUSD", "1.1000", "1.1002")
    market.set("USDJPY", "150.00", "150.02")
    market.set("XAUUSD", "2400.10", "2400.60")
    for symbol, side, volume in [
        ("EURUSD", "buy", "0.3"),
        ("EURUSD", "buy", "1.1"),
        ("EURUSD", "sell", "0.25"),
        ("USDJPY", "sell", "2"),
        ("USDJPY", "sell", "0.7"),
        ("XAUUSD", "buy", "0.1"),
    ]:
        services.order_submit(account=account, symbol=symbol, side=side, volume=D(volume))
        market.set("EURUSD", "1.1004", "1.1006")  # later fills at other prices
        market.set("USDJPY", "150.07", "150.09")
    market.set("EURUSD", "1.0950", "1.0952")
    market.set("USDJPY", "151.13", "151.15")

    account.refresh_from_db()
    positions = open_positions(account=account)
    from_database = open_exposures(account=account)
    assert from_database == exposures_of(positions)
    assert [(e.instrument.symbol, e.side) for e in from_database] == [
        ("EURUSD", "buy"),
        ("EURUSD", "sell"),
        ("USDJPY", "sell"),
        ("XAUUSD", "buy"),
    ]
    eurusd_long = from_database[0]
    assert eurusd_long.volume == D("1.4") and eurusd_long.margin == sum(
        p.margin for p in positions if p.instrument.symbol == "EURUSD" and p.side == "buy"
    )

    conditions = Conditions(group)
    per_position = sum(
        position_pnl(p, currency="USD", conditions=conditions, quotes=redis_quotes) for p in positions
    )
    per_exposure = sum(
        exposure_pnl(e, currency="USD", conditions=conditions, quotes=redis_quotes) for e in from_database
    )
    assert pricing.money(per_exposure, "USD") == pricing.money(per_position, "USD")

    summary = account_summary(account=account)  # summed by the database
    assert summary == account_summary(account=account, positions=positions)
    assert summary.margin == sum(  # re-marked per exposure at the current quotes
        remarked_margin(
            e.instrument,
            e.side,
            e.volume,
            tick=conditions.client_tick(e.instrument, redis_quotes),
            leverage=account.effective_leverage,
            currency="USD",
            rates=redis_quotes.mid,
        )
        for e in from_database
    )
    assert summary.unrealized_pnl == pricing.money(per_position, "USD")
    detailed = account_summary(account=account, with_position_pnl=True)
    assert set(detailed.position_pnl) == {p.pk for p in positions}
    assert detailed.equity == summary.equity


def test_exposures_leave_out_closed_positions_and_other_accounts(alice, group, market):
    account = open_account(alice, group, balance="100000")
    other = open_account(alice, group, balance="100000")
    market.set("EURUSD", "1.1000", "1.1002")
    for volume in ("0.1", "0.2", "0.4"):
        services.order_submit(account=account, symbol="EURUSD", side="buy", volume=D(volume))
    services.order_submit(account=other, symbol="EURUSD", side="buy", volume=D("5"))
    first, second, _ = Position.objects.filter(account=account).order_by("id")
    services.position_close(position=first)
    services.position_close(position=second, volume=D("0.05"))  # 0.15 stays open

    account.refresh_from_db()
    [exposure] = open_exposures(account=account)
    assert (exposure.instrument.symbol, exposure.side, exposure.volume) == ("EURUSD", "buy", D("0.55"))
    assert [exposure] == exposures_of(open_positions(account=account))


def test_the_sweep_sums_every_account_as_open_exposures_does(alice, group, market):
    """The margin sweep's one statement for many accounts gives each the exposures the order path
    sums for it alone; an account is in when it holds any of the symbols asked, with all its
    exposures; closed positions and flat accounts are out."""
    market.set("EURUSD", "1.1000", "1.1002")
    market.set("USDJPY", "150.00", "150.02")
    mixed, jpy_only, flat = (open_account(alice, group, balance="100000") for _ in range(3))
    for account, symbol, side, volume in [
        (mixed, "EURUSD", "buy", "0.3"),
        (mixed, "EURUSD", "buy", "0.2"),
        (mixed, "EURUSD", "sell", "0.1"),
        (mixed, "USDJPY", "sell", "1"),
        (jpy_only, "USDJPY", "buy", "0.4"),
        (flat, "EURUSD", "buy", "0.1"),
    ]:
        services.order_submit(account=account, symbol=symbol, side=side, volume=D(volume))
    services.position_close(position=Position.objects.get(account=flat))

    everyone = accounts_exposures()
    assert list(everyone) == [mixed.pk, jpy_only.pk]
    for account in (mixed, jpy_only):
        assert everyone[account.pk] == open_exposures(account=account)
    assert accounts_exposures(symbols=["EURUSD"]) == {mixed.pk: everyone[mixed.pk]}
    assert accounts_exposures(symbols=["USDJPY", "XAUUSD"]) == everyone
    assert accounts_exposures(symbols=[]) == {}

    mixed.refresh_from_db()
    assert account_summary(account=mixed, exposures=everyone[mixed.pk]) == account_summary(account=mixed)


def test_an_exposure_without_a_price_leaves_the_summary_unpriced(alice, group, market):
    account = open_account(alice, group, balance="10000")
    market.set("EURUSD", "1.1000", "1.1002")
    services.order_submit(account=account, symbol="EURUSD", side="buy", volume=D("0.1"))
    market.clear("EURUSD")
    account.refresh_from_db()
    summary = account_summary(account=account)  # summed by the database
    assert summary.unpriced == ["EURUSD"] and summary.unrealized_pnl == 0
    assert summary.margin == Position.objects.get(account=account).margin


def test_hot_path_statements_are_prepared_on_the_server():
    """kernel.sql's statements are parsed and planned once per connection, not per call: Django
    turns psycopg's preparation off unless settings set a prepare_threshold."""
    sql.select(Instrument, "t.symbol = %s", ["EURUSD"])
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        prepared = [row[0] for row in cursor.fetchall()]
    assert any('FROM "marketdata_instrument" t WHERE t.symbol = $1' in s for s in prepared), prepared
