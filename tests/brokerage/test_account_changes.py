"""Operator changes of an account's status, group and leverage: services with attribution and audit."""

from decimal import Decimal as D

import pytest
from asgiref.sync import sync_to_async
from django.db import connection

from brokerage import services
from brokerage.models import ClientGroup, MarginMode, Position, TradingAccount
from kernel.errors import ServiceError
from tests.support.streams import StreamTap
from tests.support.trading import open_account
from users.models import AuditLog

pytestmark = pytest.mark.django_db


def buy(account: TradingAccount, volume: str = "1") -> Position:
    services.order_submit(account=account, symbol="EURUSD", side="buy", volume=D(volume))
    return Position.objects.filter(account=account).latest("id")


def test_a_status_change_is_attributed_and_audited_with_its_reason(account, operator):
    services.account_status_set(account=account, status="close_only", actor=operator, reason="KYC review")
    account.refresh_from_db()
    assert account.status == "close_only"
    entry = AuditLog.objects.get()
    assert (entry.actor, entry.action, entry.object_id) == (operator, "account.status", str(account.pk))
    assert entry.details == {"from": "active", "to": "close_only", "reason": "KYC review"}


def test_a_status_change_needs_a_valid_status_and_a_reason(account, operator):
    with pytest.raises(ServiceError) as exc:
        services.account_status_set(account=account, status="frozen", actor=operator, reason="x")
    assert exc.value.code == "invalid_status"
    with pytest.raises(ServiceError) as exc:
        services.account_status_set(account=account, status="disabled", actor=operator, reason=" ")
    assert exc.value.code == "reason_required"
    account.refresh_from_db()
    assert account.status == "active"
    assert not AuditLog.objects.exists()


def test_a_group_change_re_margins_open_positions_at_the_new_leverage(account, operator, market):
    market.set("EURUSD", "1.1000", "1.1002")
    position = buy(account)
    assert position.margin == D("1100.20")
    low = ClientGroup.objects.create(name="low", currency="USD", leverage=50)
    services.account_group_change(account=account, group=low, actor=operator)
    account.refresh_from_db()
    position.refresh_from_db()
    assert (account.group, position.margin) == (low, D("2200.40"))
    entry = AuditLog.objects.get()
    assert (entry.actor, entry.action) == (operator, "account.group")
    assert entry.details == {"from": "standard", "to": "low", "leverage": 50}


def test_a_group_change_that_would_stop_the_account_out_is_refused(alice, group, operator, market):
    account = open_account(alice, group, balance="1200")
    market.set("EURUSD", "1.1000", "1.1002")
    position = buy(account)
    strict = ClientGroup.objects.create(name="strict", currency="USD", leverage=20)
    with pytest.raises(ServiceError) as exc:  # margin 5501 against equity 1180: 21.45 %
        services.account_group_change(account=account, group=strict, actor=operator)
    assert (exc.value.code, exc.value.status_code) == ("margin_level_too_low", 409)
    assert "21.45 %" in exc.value.message
    account.refresh_from_db()
    position.refresh_from_db()
    assert (account.group, position.margin) == (group, D("1100.20"))
    assert not AuditLog.objects.exists()


def test_a_group_change_keeps_the_currency_and_the_margin_mode_rules(account, operator, market):
    euro = ClientGroup.objects.create(name="euro", currency="EUR", leverage=100)
    with pytest.raises(ServiceError) as exc:
        services.account_group_change(account=account, group=euro, actor=operator)
    assert exc.value.code == "currency_mismatch"
    market.set("EURUSD", "1.1000", "1.1002")
    buy(account, "0.1")
    buy(account, "0.1")
    netting = ClientGroup.objects.create(
        name="net", currency="USD", leverage=100, margin_mode=MarginMode.NETTING
    )
    with pytest.raises(ServiceError) as exc:
        services.account_group_change(account=account, group=netting, actor=operator)
    assert exc.value.code == "margin_mode_conflict"
    account.refresh_from_db()
    assert account.group.name == "standard"


def test_a_leverage_override_re_margins_and_applies_to_new_orders(account, operator, market):
    market.set("EURUSD", "1.1000", "1.1002")
    first = buy(account)
    services.account_leverage_set(account=account, leverage=200, actor=operator)
    first.refresh_from_db()
    assert first.margin == D("550.10")
    assert buy(account).margin == D("550.10")
    services.account_leverage_set(account=account, leverage=None, actor=operator)
    assert {p.margin for p in Position.objects.all()} == {D("1100.20")}
    assert [(e.action, e.details["from"], e.details["to"]) for e in AuditLog.objects.order_by("id")] == [
        ("account.leverage", 100, 200),
        ("account.leverage", 200, 100),
    ]
    with pytest.raises(ServiceError) as exc:
        services.account_leverage_set(account=account, leverage=0, actor=operator)
    assert exc.value.code == "invalid_leverage"


@pytest.mark.django_db(transaction=True)
async def test_operator_changes_are_pushed_to_the_owners_account_stream(account, operator):
    def change() -> None:
        try:
            services.account_status_set(account=account, status="disabled", actor=operator, reason="fraud")
            services.account_leverage_set(account=account, leverage=50, actor=operator)
        finally:
            connection.close()

    async with StreamTap(account.stream_group) as tap:
        await sync_to_async(change)()
        frames = [await tap.receive()]
        while frames[-1]["data"].get("leverage") != 50:
            frames.append(await tap.receive())
    changes = [f for f in frames if f["data"]["status"] == "disabled"]  # not the deposit's, if late
    assert {f["channel"] for f in changes} == {f"account:{account.number}"}
    assert [(f["event"], f["data"]["leverage"]) for f in changes] == [("account", 100), ("account", 50)]


def test_a_group_leverage_change_re_margins_the_accounts_following_it(alice, group, operator, market):
    market.set("EURUSD", "1.1000", "1.1002")
    follower = open_account(alice, group, balance="5000")
    thin = open_account(alice, group, balance="1200")
    overridden = open_account(alice, group, balance="5000")
    services.account_leverage_set(account=overridden, leverage=200, actor=operator)
    positions = {a.number: buy(a) for a in (follower, thin, overridden)}

    group.leverage = 20  # as the admin saves it, then re-margins in the same transaction
    group.save(update_fields=["leverage"])
    result = services.group_positions_remargin(group=group, actor=operator)

    assert sorted(result.accounts) == sorted([follower.number, thin.number]) and result.unpriced == []
    margins = {n: Position.objects.get(pk=p.pk).margin for n, p in positions.items()}
    assert margins == {
        follower.number: D("5501.00"),
        thin.number: D("5501.00"),
        overridden.number: D("550.10"),
    }
    entry = AuditLog.objects.get(action="group.remargin")
    assert (entry.actor, entry.details["leverage"]) == (operator, 20)
    # Not refused for the thin account (margin level 21.45 %): the margin sweep stops it out.
    deals = services.account_margin_check(account_id=thin.pk)
    assert [d.reason for d in deals] == ["stop_out"]
    assert Position.objects.get(pk=positions[thin.number].pk).status == "closed"
    assert services.account_margin_check(account_id=follower.pk) == []
