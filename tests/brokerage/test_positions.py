from decimal import Decimal as D

import pytest

from brokerage import services
from brokerage.models import Deal, LedgerTransaction, Order, Position, TransactionKind
from brokerage.pricing import Tick
from kernel.errors import ServiceError

pytestmark = pytest.mark.django_db


def open_long(account, market, volume="1", **kwargs) -> Position:
    market.set("EURUSD", "1.1000", "1.1002")
    order = services.order_submit(account=account, symbol="EURUSD", side="buy", volume=D(volume), **kwargs)
    return Position.objects.get(deals__order=order)


def test_a_partial_close_realizes_its_share_and_keeps_the_rest_open(account, market):
    position = open_long(account, market)
    market.set("EURUSD", "1.1050", "1.1052")
    deal = services.position_close(position=position, volume=D("0.4"))
    assert (deal.entry, deal.price, deal.volume, deal.realized_pnl) == (
        "out",
        D("1.1050"),
        D("0.4"),
        D("192"),
    )
    position.refresh_from_db()
    assert (position.status, position.volume, position.open_price) == ("open", D("0.6"), D("1.1002"))
    assert position.margin == D("660.12")
    account.refresh_from_db()
    assert account.balance == D("5192")
    txn = LedgerTransaction.objects.get(kind=TransactionKind.REALIZED_PNL)
    assert sorted(p.amount for p in txn.postings.all()) == [D("-192"), D("192")]


def test_a_closing_order_reports_the_volume_it_filled(account, market):
    position = open_long(account, market)
    market.set("EURUSD", "1.1050", "1.1052")
    deal = services.position_close(position=position, volume=D("0.4"))
    order = Order.objects.get(pk=deal.order_id)
    assert (order.status, order.volume, order.filled_volume) == ("filled", D("0.4"), D("0.4"))


def test_a_full_close_at_a_loss_books_it_to_the_house(account, market):
    position = open_long(account, market)
    market.set("EURUSD", "1.0990", "1.0992")
    deal = services.position_close(position=position)
    assert deal.realized_pnl == D("-120")
    position.refresh_from_db()
    assert (position.status, position.close_reason, position.volume) == ("closed", "client", 0)
    assert Order.objects.get(position=position).side == "sell"
    with pytest.raises(ServiceError) as exc:
        services.position_close(position=position)
    assert (exc.value.code, exc.value.status_code) == ("position_not_open", 409)


def test_a_close_beyond_the_open_volume_is_refused(account, market):
    position = open_long(account, market, "0.5")
    with pytest.raises(ServiceError) as exc:
        services.position_close(position=position, volume=D("0.6"))
    assert exc.value.code == "invalid_volume"
    with pytest.raises(ServiceError):
        services.position_close(position=position, volume=D("0.495"))


def test_the_stop_loss_closes_exactly_once_at_the_trigger_price(account, market):
    position = open_long(account, market, sl=D("1.0950"))
    assert (
        services.position_trigger(position_id=position.pk, kind="sl", tick=Tick(D("1.0951"), D("1.0953")))
        is None
    )
    deal = services.position_trigger(position_id=position.pk, kind="sl", tick=Tick(D("1.0950"), D("1.0952")))
    assert deal is not None
    assert (deal.price, deal.realized_pnl, deal.reason) == (D("1.0950"), D("-520"), "sl")
    assert (
        services.position_trigger(position_id=position.pk, kind="sl", tick=Tick(D("1.0950"), D("1.0952")))
        is None
    )
    position.refresh_from_db()
    assert (position.status, position.close_reason) == ("closed", "sl")
    assert Deal.objects.filter(position=position, entry="out").count() == 1
    assert LedgerTransaction.objects.filter(kind=TransactionKind.REALIZED_PNL).count() == 1


def test_a_gap_through_the_stop_loss_closes_at_the_first_price_beyond(account, market):
    position = open_long(account, market, sl=D("1.0950"))
    deal = services.position_trigger(position_id=position.pk, kind="sl", tick=Tick(D("1.0940"), D("1.0942")))
    assert deal is not None
    assert (deal.price, deal.realized_pnl) == (D("1.0940"), D("-620"))


def test_take_profit_of_a_short_fires_on_the_ask(account, market):
    market.set("EURUSD", "1.1000", "1.1002")
    order = services.order_submit(account=account, symbol="EURUSD", side="sell", volume=D(1), tp=D("1.0900"))
    position = Position.objects.get(deals__order=order)
    assert (
        services.position_trigger(position_id=position.pk, kind="tp", tick=Tick(D("1.0898"), D("1.0901")))
        is None
    )
    deal = services.position_trigger(position_id=position.pk, kind="tp", tick=Tick(D("1.0897"), D("1.0899")))
    assert deal is not None
    assert (deal.price, deal.realized_pnl, deal.reason) == (D("1.0899"), D("1010"), "tp")


def test_position_modify_sets_and_removes_levels_on_the_right_side(account, market):
    position = open_long(account, market)
    market.set("EURUSD", "1.1050", "1.1052")
    with pytest.raises(ServiceError) as exc:
        services.position_modify(position=position, sl=D("1.1060"), tp=None)
    assert exc.value.code == "invalid_sl"
    modified = services.position_modify(position=position, sl=D("1.1010"), tp=D("1.1100"))
    assert (modified.sl, modified.tp) == (D("1.1010"), D("1.1100"))
    cleared = services.position_modify(position=position, sl=None, tp=None)
    assert (cleared.sl, cleared.tp) == (None, None)


def test_bulk_close_takes_winners_losers_or_all(account, market):
    market.set("EURUSD", "1.1000", "1.1002")
    market.set("GBPUSD", "1.2700", "1.2702")
    services.order_submit(account=account, symbol="EURUSD", side="buy", volume=D("0.1"))
    services.order_submit(account=account, symbol="EURUSD", side="sell", volume=D("0.1"))
    services.order_submit(account=account, symbol="GBPUSD", side="buy", volume=D("0.1"))
    market.set("EURUSD", "1.1050", "1.1052")
    market.set("GBPUSD", "1.2750", "1.2752")
    winners = services.positions_close_bulk(account=account, which="winners", symbol="EURUSD")
    assert [(d.side, d.realized_pnl) for d in winners] == [("sell", D("48"))]
    losers = services.positions_close_bulk(account=account, which="losers")
    assert [(d.side, d.realized_pnl) for d in losers] == [("buy", D("-52"))]
    rest = services.positions_close_bulk(account=account, which="all")
    assert [d.instrument.symbol for d in rest] == ["GBPUSD"]
    assert not Position.objects.filter(status="open").exists()
    with pytest.raises(ServiceError) as exc:
        services.positions_close_bulk(account=account, which="some")  # type: ignore[arg-type]
    assert exc.value.code == "invalid_which"
