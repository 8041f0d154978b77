"""Four-eyes on money and the money rules of cash operations, with exact figures."""

from decimal import Decimal as D
from typing import Any

import pytest

from brokerage import services
from brokerage.models import (
    CashOperation,
    CashStatus,
    ClientGroup,
    LedgerAccountKind,
    PositionStatus,
    TradingAccount,
)
from brokerage.selectors import account_summary, ledger_balance
from kernel.errors import ServiceError
from tests.support.users import make_role_user
from users.models import AuditLog, User
from users.roles import BACK_OFFICE, DEALER

from .conftest import Market, open_account

pytestmark = pytest.mark.django_db


@pytest.fixture
def maker(db: None) -> User:
    return make_role_user("maker", BACK_OFFICE)


@pytest.fixture
def checker(db: None) -> User:
    return make_role_user("checker", BACK_OFFICE)


def create(account: TradingAccount, actor: User, kind: str, amount: str, **extra: Any) -> CashOperation:
    return services.cash_operation_create(account=account, kind=kind, amount=D(amount), actor=actor, **extra)


def balance(account: TradingAccount) -> D:
    account.refresh_from_db()
    return account.balance


def test_at_the_threshold_a_deposit_is_applied_at_once(account, maker):
    operation = create(account, maker, "deposit", "10000", method="bank", external_ref="W-1")
    assert (operation.status, operation.created_by, operation.decided_by) == (CashStatus.APPLIED, maker, None)
    assert operation.transaction is not None and operation.applied_at is not None
    assert balance(account) == D("15000")
    assert AuditLog.objects.get().action == "cash.applied"


def test_above_the_threshold_a_deposit_waits_for_a_second_operator(account, maker, checker):
    operation = create(account, maker, "deposit", "10000.01", method="bank", external_ref="W-2")
    assert operation.status == CashStatus.PENDING and operation.transaction is None
    assert balance(account) == D("5000")
    with pytest.raises(ServiceError) as exc:
        services.cash_operation_approve(operation=operation, actor=maker)
    assert (exc.value.code, exc.value.status_code) == ("four_eyes_same_operator", 403)
    assert balance(account) == D("5000")

    approved = services.cash_operation_approve(operation=operation, actor=checker, comment="wire seen")
    assert (approved.status, approved.decided_by, approved.decision_comment) == (
        CashStatus.APPLIED,
        checker,
        "wire seen",
    )
    assert balance(account) == D("15000.01")
    trail = list(AuditLog.objects.order_by("id").values_list("action", "actor__username"))
    assert trail == [("cash.pending", "maker"), ("cash.approved", "checker"), ("cash.applied", "checker")]
    with pytest.raises(ServiceError) as exc:
        services.cash_operation_approve(operation=operation, actor=checker)
    assert exc.value.code == "not_pending"


def test_the_threshold_is_per_currency(account, maker, settings):
    settings.FOUR_EYES_THRESHOLDS = {"USD": D("100")}
    assert create(account, maker, "bonus", "100").status == CashStatus.APPLIED
    assert create(account, maker, "bonus", "100.01").status == CashStatus.PENDING
    assert create(account, maker, "adjustment", "-100.01", comment="fee").status == CashStatus.PENDING
    assert balance(account) == D("5100")


def test_a_pending_withdrawal_holds_the_funds_and_a_rejection_releases_them(
    account, maker, checker, settings
):
    settings.FOUR_EYES_THRESHOLDS = {"USD": D("1000")}
    operation = create(account, maker, "withdrawal", "3000", method="crypto", external_ref="0xabc")
    assert operation.status == CashStatus.PENDING and operation.hold is not None
    assert balance(account) == D("2000")  # held: neither tradable nor withdrawable twice
    held = services.house_account(kind=LedgerAccountKind.HELD, currency="USD")
    assert ledger_balance(ledger_account=held) == D("3000")
    with pytest.raises(ServiceError) as exc:
        create(account, maker, "withdrawal", "2000.01", method="crypto")
    assert exc.value.code == "insufficient_free_margin"

    rejected = services.cash_operation_reject(operation=operation, actor=checker, comment="not verified")
    assert (rejected.status, rejected.decided_by) == (CashStatus.REJECTED, checker)
    assert balance(account) == D("5000")
    assert ledger_balance(ledger_account=held) == D("0")


def test_an_approved_withdrawal_pays_the_held_funds_out(account, maker, checker, settings):
    settings.FOUR_EYES_THRESHOLDS = {"USD": D("1000")}
    operation = create(account, maker, "withdrawal", "3000", method="bank")
    services.cash_operation_approve(operation=operation, actor=checker)
    assert balance(account) == D("2000")
    held = services.house_account(kind=LedgerAccountKind.HELD, currency="USD")
    cash = services.house_account(kind=LedgerAccountKind.CASH, currency="USD")
    assert ledger_balance(ledger_account=held) == D("0")
    assert ledger_balance(ledger_account=cash) == D("-2000")  # 5000 in, 3000 out


def test_external_references_are_unique_per_method(account, maker):
    create(account, maker, "deposit", "10", method="bank", external_ref="REF-9")
    create(account, maker, "deposit", "10", method="card", external_ref="REF-9")
    with pytest.raises(ServiceError) as exc:
        create(account, maker, "deposit", "10", method="bank", external_ref="REF-9")
    assert (exc.value.code, exc.value.status_code) == ("duplicate_external_ref", 409)
    assert balance(account) == D("5020")


def test_each_cash_operation_needs_its_permission(account, db):
    dealer = make_role_user("dealer", DEALER)
    with pytest.raises(ServiceError) as exc:
        create(account, dealer, "deposit", "1000000")
    assert exc.value.status_code == 403
    assert balance(account) == D("5000")


def test_a_negative_adjustment_never_takes_the_balance_below_zero_without_the_override(account, maker):
    with pytest.raises(ServiceError) as exc:
        create(account, maker, "adjustment", "-5000.01", comment="chargeback")
    assert exc.value.code == "negative_adjustment_refused"
    with pytest.raises(ServiceError) as exc:
        create(account, maker, "adjustment", "-5000.01", comment="chargeback", override=True)
    assert exc.value.status_code == 403  # the override is a permission of its own
    create(account, maker, "adjustment", "-5000", comment="chargeback")
    assert balance(account) == D("0")


def test_the_override_is_separately_permitted_and_audited(account, maker):
    from django.contrib.auth.models import Permission

    maker.user_permissions.add(Permission.objects.get(codename="override_negative_adjustment"))
    maker = User.objects.get(pk=maker.pk)
    operation = create(account, maker, "adjustment", "-5200", comment="chargeback", override=True)
    assert (operation.status, operation.override) == (CashStatus.APPLIED, True)
    assert balance(account) == D("-200")
    entry = AuditLog.objects.get(action="cash.applied")
    assert entry.details["override"] is True and entry.actor == maker


def test_a_negative_adjustment_is_kept_above_zero_free_margin(account, maker, market: Market):
    market.set("EURUSD", "1.1000", "1.1002")
    services.order_submit(account=account, symbol="EURUSD", side="buy", volume=D(1))
    # balance 5000, equity 4980 (spread), margin 1100.20: free margin 3879.80
    with pytest.raises(ServiceError) as exc:
        create(account, maker, "adjustment", "-3879.81", comment="fee")
    assert exc.value.code == "negative_adjustment_refused"
    create(account, maker, "adjustment", "-3879.80", comment="fee")
    assert balance(account) == D("1120.20")


def test_no_cash_operation_may_reach_the_stop_out_level(alice, instruments, maker, market: Market):
    from django.contrib.auth.models import Permission

    group = ClientGroup.objects.create(
        name="tight", currency="USD", leverage=100, margin_call_level=D(200), stop_out_level=D(150)
    )
    account = open_account(alice, group, balance="3000")
    market.set("EURUSD", "1.1000", "1.1002")
    services.order_submit(account=account, symbol="EURUSD", side="buy", volume=D(1))
    # equity 2980, margin 1100.20; stop-out at 150 %: equity must stay above 1650.30
    maker.user_permissions.add(Permission.objects.get(codename="override_negative_adjustment"))
    maker = User.objects.get(pk=maker.pk)
    with pytest.raises(ServiceError) as exc:
        create(account, maker, "withdrawal", "1329.70")  # equity 1650.30: 150.00 % exactly
    assert exc.value.code == "margin_level_too_low"
    with pytest.raises(ServiceError) as exc:
        create(account, maker, "adjustment", "-1329.70", comment="fee", override=True)
    assert exc.value.code == "margin_level_too_low"
    create(account, maker, "withdrawal", "1329.69")
    assert balance(account) == D("1670.31")


def test_margin_levels_are_compared_unrounded(alice, group, market: Market):
    account = open_account(alice, group, balance="2000")
    market.set("EURUSD", "1.1000", "1.1002")
    services.order_submit(account=account, symbol="EURUSD", side="buy", volume=D(1))  # margin 1100.20
    # PnL -1457.17: equity 542.83; margin re-marked at the ask: 1 lot x 1.0856483 / 100 = 1085.65
    market.set("EURUSD", "1.0856283", "1.0856483")
    summary = account_summary(account=account)
    assert summary.margin == D("1085.65")
    assert summary.margin_level == D("542.83") / D("1085.65") * 100  # 50.00046...%, unrounded
    assert summary.as_event()["margin_level"] == "50.00"  # rounded only where it is shown
    assert services.account_margin_check(account_id=account.pk) == []  # stop-out is at or below 50 %
    assert account.positions.get().status == PositionStatus.OPEN
    account.refresh_from_db()
    assert account.margin_call_at is not None  # but it is in margin call (100 %)
