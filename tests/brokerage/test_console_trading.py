"""A dealer trades for a client from the account's trade page: market and pending orders with SL/TP,
changes and cancels of pending orders, SL/TP of open positions; refusals come back as form errors."""

from decimal import Decimal
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from brokerage import services
from brokerage.models import Order, OrderStatus, Position, Reason, TradingAccount
from tests.support.users import make_role_user
from users.models import AuditLog, User
from users.roles import DEALER

from .conftest import QuoteSetter

pytestmark = pytest.mark.django_db


@pytest.fixture
def dealer() -> User:
    return make_role_user("dina", DEALER)


@pytest.fixture
def desk(dealer: User) -> Client:
    browser = Client()
    browser.force_login(dealer)
    return browser


def trade_url(account: TradingAccount) -> str:
    return reverse("admin:brokerage_tradingaccount_trade", args=[account.pk])


def place(desk: Client, account: TradingAccount, **fields: str) -> Any:
    body = {"action": "place", "new-time_in_force": "gtc", "new-type": "market"}
    body.update({f"new-{name}": value for name, value in fields.items()})
    return desk.post(trade_url(account), body)


def test_a_dealer_places_a_market_order_with_sl_tp_for_the_client_audited(
    desk: Client, dealer: User, alice_account: TradingAccount, quotes: QuoteSetter
) -> None:
    response = place(desk, alice_account, symbol="EURUSD", side="buy", volume="0.1", sl="1.07", tp="1.10")
    assert response.status_code == 302
    position = Position.objects.get(account=alice_account)
    assert (position.side, position.volume, position.open_price) == ("buy", Decimal("0.1"), Decimal("1.0851"))
    assert (position.sl, position.tp) == (Decimal("1.07"), Decimal("1.10"))
    assert Order.objects.get(account=alice_account).reason == Reason.OPERATOR
    assert AuditLog.objects.filter(actor=dealer, action__startswith="order").exists()
    page = desk.get(trade_url(alice_account)).content.decode()
    assert f'id="position-{position.pk}"' in page


def test_a_dealer_places_modifies_and_cancels_a_pending_order(
    desk: Client, dealer: User, alice_account: TradingAccount, quotes: QuoteSetter
) -> None:
    response = place(
        desk, alice_account, symbol="EURUSD", side="buy", volume="0.2", type="limit", price="1.08"
    )
    assert response.status_code == 302
    order = Order.objects.get(account=alice_account, status=OrderStatus.PENDING)
    assert order.price == Decimal("1.08")

    changed = desk.post(
        trade_url(alice_account),
        {
            "action": "modify_order",
            "target": order.pk,
            f"order-{order.pk}-price": "1.079",
            f"order-{order.pk}-sl": "1.07",
        },
    )
    assert changed.status_code == 302
    order.refresh_from_db()
    assert (order.price, order.sl, order.tp) == (Decimal("1.079"), Decimal("1.07"), None)
    assert AuditLog.objects.filter(actor=dealer, action="order.modify").exists()

    cancelled = desk.post(trade_url(alice_account), {"action": "cancel_order", "target": order.pk})
    assert cancelled.status_code == 302
    order.refresh_from_db()
    assert (order.status, order.close_reason) == (OrderStatus.CANCELLED, Reason.OPERATOR)
    assert AuditLog.objects.filter(actor=dealer, action="order.cancel").exists()


def test_a_dealer_sets_the_sl_tp_of_an_open_position(
    desk: Client, dealer: User, alice_account: TradingAccount, quotes: QuoteSetter
) -> None:
    position = services.order_submit(
        account=alice_account, symbol="EURUSD", side="sell", volume=Decimal("0.1")
    )
    held = Position.objects.get(account=alice_account)
    assert position.status == OrderStatus.FILLED
    response = desk.post(
        trade_url(alice_account),
        {
            "action": "modify_position",
            "target": held.pk,
            f"position-{held.pk}-sl": "1.09",
            f"position-{held.pk}-tp": "1.05",
        },
    )
    assert response.status_code == 302
    held.refresh_from_db()
    assert (held.sl, held.tp) == (Decimal("1.09"), Decimal("1.05"))
    assert AuditLog.objects.get(actor=dealer, action="position.modify").details["sl"] == "1.09"


def test_refusals_are_form_errors_and_change_nothing(
    desk: Client, alice_account: TradingAccount, quotes: QuoteSetter
) -> None:
    wrong_side = place(desk, alice_account, symbol="EURUSD", side="buy", volume="0.1", sl="1.09")
    assert wrong_side.status_code == 400
    assert "SL must be below" in wrong_side.content.decode()
    too_big = place(desk, alice_account, symbol="EURUSD", side="buy", volume="500")
    assert too_big.status_code == 400 and "errorlist" in too_big.content.decode()
    not_a_number = place(desk, alice_account, symbol="EURUSD", side="buy", volume="lots")
    assert not_a_number.status_code == 400
    unknown_symbol = place(desk, alice_account, symbol="NOPE", side="buy", volume="0.1")
    assert unknown_symbol.status_code == 400
    assert not Order.objects.filter(account=alice_account).exists()

    pending = services.order_submit(
        account=alice_account,
        symbol="EURUSD",
        side="buy",
        volume=Decimal("0.1"),
        type="limit",
        price=Decimal("1.08"),
    )
    above_market = desk.post(
        trade_url(alice_account),
        {"action": "modify_order", "target": pending.pk, f"order-{pending.pk}-price": "1.2"},
    )
    assert above_market.status_code == 400 and "errorlist" in above_market.content.decode()
    services.order_cancel(order=pending)
    again = desk.post(trade_url(alice_account), {"action": "cancel_order", "target": pending.pk})
    assert again.status_code == 400 and "(order_not_pending)" in again.content.decode()
    assert desk.post(trade_url(alice_account), {"action": "cancel_order", "target": "x"}).status_code == 400
    assert desk.post(trade_url(alice_account), {"action": "drop_tables"}).status_code == 400
    assert (
        desk.post(trade_url(alice_account), {"action": "cancel_order", "target": "999999"}).status_code == 404
    )


def test_the_trade_page_is_the_dealers_only(alice_account: TradingAccount, quotes: QuoteSetter) -> None:
    viewer = Client()
    viewer.force_login(make_role_user("vic", "viewer"))
    assert viewer.get(trade_url(alice_account)).status_code == 403
    assert place(viewer, alice_account, symbol="EURUSD", side="buy", volume="0.1").status_code == 403
    account_page = viewer.get(reverse("admin:brokerage_tradingaccount_change", args=[alice_account.pk]))
    assert trade_url(alice_account) not in account_page.content.decode()
    assert not Order.objects.exists()
