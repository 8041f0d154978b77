from decimal import Decimal
from typing import Any

import pytest
from django.test import Client
from rest_framework.test import APIClient

from brokerage import services
from brokerage.models import (
    CashOperation,
    ClientGroup,
    GroupInstrument,
    LedgerTransaction,
    OrderStatus,
    Position,
    PositionStatus,
    Reason,
    TradingAccount,
)
from marketdata.models import Instrument
from users.models import AuditLog, User

from .conftest import QuoteSetter

pytestmark = pytest.mark.django_db


def cash(admin_client: Client, account: TradingAccount, operation: str, amount: str, comment: str = ""):
    return admin_client.post(
        f"/admin/brokerage/tradingaccount/{account.pk}/cash/",
        {"operation": operation, "amount": amount, "comment": comment},
        follow=True,
    )


@pytest.mark.parametrize(
    ("operation", "amount", "balance"),
    [
        ("deposit", "500", "10500"),
        ("withdrawal", "300", "9700"),
        ("adjustment", "-25.50", "9974.50"),
        ("bonus", "100", "10100"),
    ],
)
def test_cash_operations_are_posted_attributed_and_audited(
    admin_client: Client,
    admin_user: User,
    alice_account: TradingAccount,
    operation: str,
    amount: str,
    balance: str,
) -> None:
    response = cash(admin_client, alice_account, operation, amount, comment="desk correction")
    assert response.status_code == 200
    assert "done" in response.content.decode()
    alice_account.refresh_from_db()
    assert alice_account.balance == Decimal(balance)
    tx = LedgerTransaction.objects.order_by("-id").first()
    assert tx is not None and tx.created_by == admin_user
    entry = AuditLog.objects.get()
    operation_row = CashOperation.objects.get()
    assert (entry.actor, entry.action, entry.object_id) == (admin_user, "cash.applied", str(operation_row.pk))
    assert (entry.details["amount"], entry.details["account"]) == (amount, alice_account.number)
    assert (operation_row.kind, operation_row.status, operation_row.transaction) == (operation, "applied", tx)


def test_a_refused_withdrawal_is_reported_and_changes_nothing(
    admin_client: Client, alice_account: TradingAccount, quotes: QuoteSetter
) -> None:
    response = cash(admin_client, alice_account, "withdrawal", "20000")
    page = response.content.decode()
    assert "can be withdrawn now. (insufficient_free_margin)" in page
    alice_account.refresh_from_db()
    assert alice_account.balance == Decimal("10000")
    assert not AuditLog.objects.exists()


def test_bad_cash_input_shows_the_form_again(admin_client: Client, alice_account: TradingAccount) -> None:
    response = cash(admin_client, alice_account, "adjustment", "10")  # an adjustment needs a comment
    assert response.status_code == 200
    assert "needs a comment" in response.content.decode()
    response = cash(admin_client, alice_account, "deposit", "lots")
    assert "Enter a number" in response.content.decode()
    alice_account.refresh_from_db()
    assert alice_account.balance == Decimal("10000")


def test_a_client_cannot_reach_the_console(
    client: Client, alice: User, alice_account: TradingAccount
) -> None:
    client.force_login(alice)
    response = cash(client, alice_account, "deposit", "1000000")
    assert "/admin/login/" in response.redirect_chain[0][0]
    alice_account.refresh_from_db()
    assert alice_account.balance == Decimal("10000")


def test_operators_close_positions_from_the_admin(
    admin_client: Client, admin_user: User, alice_account: TradingAccount, quotes: QuoteSetter
) -> None:
    for _ in range(2):
        services.order_submit(account=alice_account, symbol="EURUSD", side="buy", volume=Decimal("0.10"))
    first = Position.objects.order_by("id").first()
    assert first is not None
    admin_client.post(
        "/admin/brokerage/position/",
        {"action": "close_positions", "_selected_action": [first.pk]},
    )
    first.refresh_from_db()
    assert first.status == PositionStatus.CLOSED
    assert first.close_reason == Reason.OPERATOR
    assert AuditLog.objects.get().action == "position.close"

    admin_client.post(
        "/admin/brokerage/tradingaccount/",
        {"action": "close_all_positions", "_selected_action": [alice_account.pk]},
    )
    assert not Position.objects.filter(status=PositionStatus.OPEN).exists()
    assert AuditLog.objects.filter(action="account.close_positions", actor=admin_user).count() == 1


def test_operators_cancel_pending_orders_from_the_admin(
    admin_client: Client, alice_account: TradingAccount, quotes: QuoteSetter
) -> None:
    order = services.order_submit(
        account=alice_account,
        symbol="EURUSD",
        side="buy",
        volume=Decimal("0.10"),
        type="limit",
        price=Decimal("1.08"),
    )
    admin_client.post("/admin/brokerage/order/", {"action": "cancel_orders", "_selected_action": [order.pk]})
    order.refresh_from_db()
    assert order.status == OrderStatus.CANCELLED
    assert AuditLog.objects.get().action == "order.cancel"


def test_the_exposure_page_shows_net_volume_and_house_pnl(
    admin_client: Client, alice_account: TradingAccount, bob_account: TradingAccount, quotes: QuoteSetter
) -> None:
    services.order_submit(account=alice_account, symbol="EURUSD", side="buy", volume=Decimal("0.30"))
    services.order_submit(account=bob_account, symbol="EURUSD", side="sell", volume=Decimal("0.10"))
    quotes("EURUSD", "1.08600", "1.08610")  # +10 pips: the long gains 9 pips (bid), the short loses 11
    page = admin_client.get("/admin/brokerage/tradingaccount/exposure/").content.decode()
    # clients: 0.3 lot * 9 pips = +27, 0.1 lot * -11 pips (sold at the bid, marked at the ask) = -11
    assert "<td>standard</td><td>EURUSD</td><td>0.3</td><td>0.1</td><td>0.2</td><td>-16.00</td>" in page


def test_the_margin_watch_lists_accounts_near_margin_call(
    admin_client: Client, alice_account: TradingAccount, bob_account: TradingAccount, quotes: QuoteSetter
) -> None:
    services.order_submit(account=alice_account, symbol="EURUSD", side="buy", volume=Decimal("0.10"))
    services.account_withdraw(account=bob_account, amount=Decimal("9800"))
    services.order_submit(account=bob_account, symbol="EURUSD", side="buy", volume=Decimal("0.15"))
    page = admin_client.get("/admin/brokerage/tradingaccount/margin-watch/").content.decode()
    assert f">{bob_account.number}</a>" in page
    assert f">{alice_account.number}</a>" not in page


def test_the_audit_log_is_read_only(
    admin_client: Client, admin_user: User, alice_account: TradingAccount
) -> None:
    cash(admin_client, alice_account, "deposit", "1")
    entry = AuditLog.objects.get()
    assert admin_client.get("/admin/users/auditlog/").status_code == 200
    assert admin_client.post(f"/admin/users/auditlog/{entry.pk}/delete/", {"post": "yes"}).status_code == 403
    assert AuditLog.objects.filter(pk=entry.pk).exists()


def test_an_account_page_links_to_the_cash_page(admin_client: Client, alice_account: TradingAccount) -> None:
    page = admin_client.get(f"/admin/brokerage/tradingaccount/{alice_account.pk}/change/").content.decode()
    assert f"/admin/brokerage/tradingaccount/{alice_account.pk}/cash/" in page
    listing = admin_client.get("/admin/brokerage/tradingaccount/").content.decode()
    assert "/admin/brokerage/tradingaccount/exposure/" in listing


def conditions(admin_client: Client, account: TradingAccount, **changes: Any):
    data = {
        "status": account.status,
        "group": account.group_id,
        "leverage": account.leverage or "",
        "reason": "",
    }
    return admin_client.post(
        f"/admin/brokerage/tradingaccount/{account.pk}/conditions/", {**data, **changes}, follow=True
    )


def test_operators_change_status_group_and_leverage_through_the_services(
    admin_client: Client, admin_user: User, alice_account: TradingAccount, quotes: QuoteSetter
) -> None:
    services.order_submit(account=alice_account, symbol="EURUSD", side="buy", volume=Decimal("1"))
    vip = ClientGroup.objects.create(name="vip", currency="USD", leverage=200)
    response = conditions(
        admin_client, alice_account, status="close_only", group=vip.pk, leverage="400", reason="risk review"
    )
    assert "changed." in response.content.decode()
    alice_account.refresh_from_db()
    assert (alice_account.status, alice_account.group, alice_account.leverage) == ("close_only", vip, 400)
    assert Position.objects.get().margin == Decimal("271.28")  # 1 lot at 1.08510 / 400
    entries = AuditLog.objects.filter(actor=admin_user).order_by("id")
    assert [e.action for e in entries] == ["account.status", "account.group", "account.leverage"]
    assert entries[0].details["reason"] == "risk review"


def test_a_refused_change_is_reported_and_changes_nothing(
    admin_client: Client, alice_account: TradingAccount, quotes: QuoteSetter
) -> None:
    services.account_withdraw(account=alice_account, amount=Decimal("8800"))
    services.order_submit(account=alice_account, symbol="EURUSD", side="buy", volume=Decimal("1"))
    tight = ClientGroup.objects.create(name="tight", currency="USD", leverage=20)
    response = conditions(admin_client, alice_account, status="disabled", group=tight.pk, reason="moving")
    assert "(margin_level_too_low)" in response.content.decode()
    alice_account.refresh_from_db()
    assert (alice_account.status, alice_account.group.name) == ("active", "standard")  # all or nothing
    assert not AuditLog.objects.exists()
    response = conditions(admin_client, alice_account, status="disabled")
    assert "A status change needs a reason." in response.content.decode()
    alice_account.refresh_from_db()
    assert alice_account.status == "active"


def test_the_account_change_form_saves_nothing_directly(
    admin_client: Client, alice_account: TradingAccount, group: ClientGroup
) -> None:
    page = admin_client.get(f"/admin/brokerage/tradingaccount/{alice_account.pk}/change/").content.decode()
    assert f"/admin/brokerage/tradingaccount/{alice_account.pk}/conditions/" in page
    admin_client.post(
        f"/admin/brokerage/tradingaccount/{alice_account.pk}/change/", {"status": "disabled", "leverage": "1"}
    )
    alice_account.refresh_from_db()
    assert (alice_account.status, alice_account.leverage) == ("active", None)


def test_account_creation_and_group_edits_in_the_admin_are_audited(
    admin_client: Client, admin_user: User, alice: User, quotes: QuoteSetter
) -> None:
    eurusd = Instrument.objects.get(symbol="EURUSD")
    group_form = {
        "name": "vip",
        "currency": "USD",
        "leverage": "200",
        "margin_mode": "hedging",
        "margin_call_level": "100",
        "stop_out_level": "50",
        "markup_unit": "price",
        "markup_default": "0",
        "negative_balance_protection": "on",
        "instruments-TOTAL_FORMS": "1",
        "instruments-INITIAL_FORMS": "0",
        "instruments-MIN_NUM_FORMS": "0",
        "instruments-MAX_NUM_FORMS": "1000",
        "instruments-0-instrument": str(eurusd.pk),
        "instruments-0-enabled": "on",
        "instruments-0-commission_per_lot": "7",
        "instruments-0-swap_long": "0",
        "instruments-0-swap_short": "0",
        "instruments-0-swap_triple_weekday": "2",
    }
    assert admin_client.post("/admin/brokerage/clientgroup/add/", group_form).status_code == 302
    vip = ClientGroup.objects.get(name="vip")
    setting = GroupInstrument.objects.get(group=vip)
    edit = {
        **group_form,
        "leverage": "300",
        "instruments-INITIAL_FORMS": "1",
        "instruments-0-id": str(setting.pk),
        "instruments-0-group": str(vip.pk),
        "instruments-0-commission_per_lot": "5",
    }
    assert admin_client.post(f"/admin/brokerage/clientgroup/{vip.pk}/change/", edit).status_code == 302
    response = admin_client.post(
        "/admin/brokerage/tradingaccount/add/", {"owner": alice.pk, "group": vip.pk, "status": "active"}
    )
    assert response.status_code == 302
    log = [(e.action, e.details) for e in AuditLog.objects.filter(actor=admin_user).order_by("id")]
    assert [action for action, _ in log] == [
        "group.create",
        "group_instrument.create",
        "group.change",
        "group_instrument.change",
        "account.open",
    ]
    assert log[2][1] == {"changes": {"leverage": "300"}}
    assert log[3][1] == {"group": "vip", "changes": {"commission_per_lot": "5"}}
    assert log[4][1] == {"owner": "alice", "group": "vip", "status": "active"}


def test_operator_actions_through_the_api_are_audited(
    operator: User, alice: User, alice_account: TradingAccount, alice_api: Any, quotes: QuoteSetter
) -> None:
    url = f"/api/v1/accounts/{alice_account.number}"
    order = {"symbol": "EURUSD", "side": "buy", "volume": "0.10"}
    assert alice_api.post(f"{url}/orders", order, format="json").status_code == 201
    assert not AuditLog.objects.exists()  # the owner's own orders are not operator actions

    desk = APIClient()
    desk.force_authenticate(operator)
    placed = desk.post(f"{url}/orders", order, format="json").json()
    position = Position.objects.get(deals__order_id=placed["id"])
    assert (
        desk.patch(f"{url}/positions/{position.pk}", {"sl": "1.07", "tp": None}, format="json").status_code
        == 200
    )
    assert desk.post(f"{url}/positions/{position.pk}/close", {}, format="json").status_code == 200
    assert desk.post(f"{url}/positions/close", {"which": "all"}, format="json").status_code == 200
    log = list(AuditLog.objects.filter(actor=operator).order_by("id"))
    assert [(e.action, e.object_type) for e in log] == [
        ("order.submit", "brokerage.order"),
        ("position.modify", "brokerage.position"),
        ("position.close", "brokerage.deal"),
        ("account.close_positions", "brokerage.tradingaccount"),
    ]
    assert log[0].object_id == str(placed["id"])
    assert log[1].details == {
        "account": alice_account.number,
        "before": {"sl": None, "tp": None},
        "sl": "1.0700000000",
        "tp": None,
    }
    assert all(e.details["account"] == alice_account.number for e in log)
