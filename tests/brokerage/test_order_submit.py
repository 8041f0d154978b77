from decimal import Decimal as D

import pytest

from brokerage import services
from brokerage.models import (
    AccountStatus,
    Deal,
    DealEntry,
    LedgerTransaction,
    Order,
    OrderStatus,
    Position,
    TransactionKind,
)
from brokerage.selectors import account_summary
from kernel.errors import ServiceError
from tests.support.trading import open_account

from .conftest import STALE_AFTER_MS, set_commission

pytestmark = pytest.mark.django_db


def buy(account, volume="1", symbol="EURUSD", **kwargs):
    return services.order_submit(account=account, symbol=symbol, side="buy", volume=D(volume), **kwargs)


def test_a_market_buy_fills_at_the_ask_and_holds_margin(account, market):
    market.set("EURUSD", "1.1000", "1.1002")
    order = buy(account)
    assert order.status == OrderStatus.FILLED
    assert order.fill_price == D("1.1002")
    position = Position.objects.get(account=account)
    assert (position.side, position.volume, position.open_price) == ("buy", D(1), D("1.1002"))
    assert position.margin == D("1100.20")
    deal = Deal.objects.get(order=order)
    assert (deal.entry, deal.price, deal.volume, deal.reason) == (DealEntry.IN, D("1.1002"), D(1), "client")
    summary = account_summary(account=account)
    assert summary.balance == D("5000.00")
    assert summary.equity == D("4980.00")  # marked at the bid
    assert summary.margin == D("1100.20")
    assert summary.free_margin == D("3879.80")
    assert summary.margin_level == D("4980.00") / D("1100.20") * 100  # 452.64 %, unrounded


def test_unrealized_pnl_follows_the_bid(account, market):
    market.set("EURUSD", "1.1000", "1.1002")
    buy(account)
    market.set("EURUSD", "1.1050", "1.1052")
    summary = account_summary(account=account)
    assert summary.unrealized_pnl == D("480.00")
    assert summary.equity == D("5480.00")


def test_a_market_sell_fills_at_the_bid(account, market):
    market.set("EURUSD", "1.1000", "1.1002")
    order = services.order_submit(account=account, symbol="EURUSD", side="sell", volume=D("0.5"))
    assert order.fill_price == D("1.1000")
    market.set("EURUSD", "1.0950", "1.0952")
    assert account_summary(account=account).unrealized_pnl == D("240.00")  # marked at the ask


def test_it_refuses_an_order_beyond_free_margin_and_writes_nothing(alice, group, market):
    poor = open_account(alice, group, balance="1000")
    market.set("EURUSD", "1.1000", "1.1002")
    with pytest.raises(ServiceError) as exc:
        buy(poor)
    assert (exc.value.code, exc.value.status_code) == ("insufficient_margin", 422)
    assert not Order.objects.exists()
    assert not Position.objects.exists()
    assert not Deal.objects.exists()
    assert LedgerTransaction.objects.filter(kind=TransactionKind.COMMISSION).count() == 0
    poor.refresh_from_db()
    assert poor.balance == D("1000")


def test_the_margin_check_counts_the_spread_loss_of_the_new_position(alice, group, market):
    # Margin 1100.20 equals the balance, but bought at the ask and marked at the bid the position is
    # worth -20 at once: equity 1080.20 would not cover its margin.
    tight = open_account(alice, group, balance="1100.20")
    market.set("EURUSD", "1.1000", "1.1002")
    with pytest.raises(ServiceError) as exc:
        buy(tight)
    assert exc.value.code == "insufficient_margin"
    assert not Position.objects.exists()
    services.account_deposit(account=tight, amount=D("20"))  # equity after the spread 1100.20: enough
    order = buy(tight)
    assert order.status == "filled"
    assert account_summary(account=tight).free_margin == D("0.00")


@pytest.mark.parametrize("volume", ["0.001", "101", "0.015", "0", "-1"])
def test_it_rejects_volumes_off_the_instrument_grid(account, market, volume):
    market.set("EURUSD", "1.1000", "1.1002")
    with pytest.raises(ServiceError) as exc:
        buy(account, volume)
    assert exc.value.code == "invalid_volume"
    assert exc.value.status_code == 422
    assert not Order.objects.exists()


def test_it_rejects_a_float_volume(account, market):
    market.set("EURUSD", "1.1000", "1.1002")
    with pytest.raises(ServiceError) as exc:
        services.order_submit(account=account, symbol="EURUSD", side="buy", volume=0.1)  # type: ignore[arg-type]
    assert exc.value.code == "invalid_volume"


def test_commission_per_lot_is_posted_to_house_revenue(account, group, instruments, market):
    set_commission(group, instruments["EURUSD"], "7")
    market.set("EURUSD", "1.1000", "1.1002")
    order = buy(account, "2")
    txn = LedgerTransaction.objects.get(kind=TransactionKind.COMMISSION)
    legs = {p.ledger_account.kind: p.amount for p in txn.postings.select_related("ledger_account")}
    assert legs == {"client": D("-14"), "revenue": D("14")}
    assert txn.deal == Deal.objects.get(order=order)
    account.refresh_from_db()
    assert account.balance == D("4986")
    assert Deal.objects.get(order=order).commission == D("-14")


def test_usdjpy_margin_is_converted_into_the_account_currency(account, market):
    market.set("USDJPY", "149.990", "150.000")
    buy(account, symbol="USDJPY")
    assert Position.objects.get().margin == D("1000.00")


def test_a_cross_pair_margin_converts_through_the_conversion_pair(account, market):
    # EURGBP-like case with the demo set: GBPUSD in a USD account needs no conversion, so use an
    # account in EUR holding USDJPY: JPY notional -> EUR through EURJPY is absent, so no price.
    market.set("USDJPY", "149.990", "150.000")
    market.set("EURUSD", "1.1000", "1.1002")
    from brokerage.models import ClientGroup

    eur = ClientGroup.objects.create(name="eur", currency="EUR", leverage=100)
    eur_account = open_account(account.owner, eur, balance="5000")
    buy(eur_account, "1", symbol="EURUSD")
    # EURUSD in a EUR account: margin in the base currency, 100000 / 100 = 1000 EUR.
    assert Position.objects.get(account=eur_account).margin == D("1000.00")
    with pytest.raises(ServiceError) as exc:
        buy(eur_account, "1", symbol="USDJPY")
    assert exc.value.code == "no_price"


def test_a_duplicate_client_order_id_is_refused(account, market):
    market.set("EURUSD", "1.1000", "1.1002")
    buy(account, "0.1", client_order_id="abc-1")
    with pytest.raises(ServiceError) as exc:
        buy(account, "0.1", client_order_id="abc-1")
    assert (exc.value.code, exc.value.status_code) == ("duplicate_client_order_id", 409)
    assert Order.objects.count() == 1


def test_a_disabled_account_cannot_trade(account, market):
    market.set("EURUSD", "1.1000", "1.1002")
    account.status = AccountStatus.DISABLED
    account.save()
    with pytest.raises(ServiceError) as exc:
        buy(account)
    assert (exc.value.code, exc.value.status_code) == ("account_disabled", 403)


def test_a_close_only_account_cannot_open_but_can_close(account, market):
    market.set("EURUSD", "1.1000", "1.1002")
    buy(account)
    account.status = AccountStatus.CLOSE_ONLY
    account.save()
    with pytest.raises(ServiceError) as exc:
        buy(account)
    assert (exc.value.code, exc.value.status_code) == ("account_close_only", 403)
    deal = services.position_close(position=Position.objects.get())
    assert deal.entry == DealEntry.OUT


def test_a_close_only_netting_account_may_reduce_its_position(alice, netting_group, market):
    netted = open_account(alice, netting_group)
    market.set("EURUSD", "1.1000", "1.1002")
    buy(netted)
    netted.status = AccountStatus.CLOSE_ONLY
    netted.save()
    services.order_submit(account=netted, symbol="EURUSD", side="sell", volume=D("0.4"))
    assert Position.objects.get().volume == D("0.6")
    with pytest.raises(ServiceError):
        services.order_submit(account=netted, symbol="EURUSD", side="sell", volume=D("1"))


def test_no_fill_without_a_healthy_quote(account, market, instruments):
    with pytest.raises(ServiceError) as exc:
        buy(account)
    assert (exc.value.code, exc.value.status_code) == ("no_price", 503)
    market.set("EURUSD", "1.1000", "1.1002", tradable=False)
    with pytest.raises(ServiceError):
        buy(account)
    market.set("EURUSD", "1.1000", "1.1002", age_ms=STALE_AFTER_MS + 1000)  # older than the venue allows
    with pytest.raises(ServiceError):
        buy(account)
    assert not Order.objects.exists()


def test_an_untradable_instrument_is_refused(account, market, instruments):
    market.set("EURUSD", "1.1000", "1.1002")
    instruments["EURUSD"].tradable = False
    instruments["EURUSD"].save()
    with pytest.raises(ServiceError) as exc:
        buy(account)
    assert exc.value.code == "instrument_not_tradable"


def test_sl_and_tp_must_be_on_the_right_side(account, market):
    market.set("EURUSD", "1.1000", "1.1002")
    with pytest.raises(ServiceError) as exc:
        buy(account, sl=D("1.1010"))
    assert exc.value.code == "invalid_sl"
    with pytest.raises(ServiceError) as exc:
        buy(account, tp=D("1.0990"))
    assert exc.value.code == "invalid_tp"
    with pytest.raises(ServiceError) as exc:
        services.order_submit(account=account, symbol="EURUSD", side="sell", volume=D(1), sl=D("1.0990"))
    assert exc.value.code == "invalid_sl"
    order = buy(account, sl=D("1.0950"), tp=D("1.1100"))
    position = Position.objects.get(deals__order=order)
    assert (position.sl, position.tp) == (D("1.0950"), D("1.1100"))


def test_pending_orders_are_stored_and_validated(account, market):
    market.set("EURUSD", "1.1000", "1.1002")
    limit = buy(account, type="limit", price=D("1.0950"))
    stop = buy(account, type="stop", stop_price=D("1.1050"))
    stop_limit = buy(account, type="stop_limit", stop_price=D("1.1050"), price=D("1.1060"))
    assert [o.status for o in (limit, stop, stop_limit)] == ["pending"] * 3
    assert not Position.objects.exists()
    for kwargs in (
        {"type": "limit", "price": D("1.1010")},  # a buy limit above the market
        {"type": "stop", "stop_price": D("1.0990")},  # a buy stop below the market
        {"type": "stop_limit", "stop_price": D("1.1050"), "price": D("1.1040")},
        {"type": "limit"},
        {"type": "market", "price": D("1.1")},
    ):
        with pytest.raises(ServiceError) as exc:
            buy(account, **kwargs)
        assert exc.value.code in ("invalid_price",)
    services.order_cancel(order=limit)
    limit.refresh_from_db()
    assert (limit.status, limit.close_reason) == ("cancelled", "client")
    with pytest.raises(ServiceError) as exc:
        services.order_cancel(order=limit)
    assert exc.value.code == "order_not_pending"


def test_bad_choices_are_refused_with_400(account, market):
    market.set("EURUSD", "1.1000", "1.1002")
    with pytest.raises(ServiceError) as exc:
        services.order_submit(account=account, symbol="EURUSD", side="long", volume=D(1))
    assert (exc.value.code, exc.value.status_code) == ("invalid_side", 400)
    with pytest.raises(ServiceError) as exc:
        services.order_submit(account=account, symbol="NOPE", side="buy", volume=D(1))
    assert (exc.value.code, exc.value.status_code) == ("unknown_symbol", 404)


def test_netting_adds_reduces_and_flips_one_position(alice, netting_group, market):
    netted = open_account(alice, netting_group, balance="10000")
    market.set("EURUSD", "1.1000", "1.1002")
    buy(netted, "1")
    market.set("EURUSD", "1.1010", "1.1012")
    buy(netted, "1")
    position = Position.objects.get(account=netted, status="open")
    assert position.volume == D(2)
    assert position.open_price == D("1.1007")
    market.set("EURUSD", "1.1020", "1.1022")
    services.order_submit(account=netted, symbol="EURUSD", side="sell", volume=D("3"))
    positions = list(Position.objects.filter(account=netted).order_by("id"))
    assert [(p.side, p.status, p.volume) for p in positions] == [("buy", "closed", 0), ("sell", "open", 1)]
    assert positions[0].realized_pnl == D("260.00")  # (1.1020 - 1.1007) x 2 x 100000
    assert positions[1].open_price == D("1.1020")
