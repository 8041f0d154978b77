from decimal import Decimal as D

import pytest
from django.db import IntegrityError, connection, transaction

from brokerage import services
from brokerage.models import LedgerAccountKind, LedgerTransaction, Posting, TransactionKind
from brokerage.selectors import ledger_balance, posted_balance
from kernel.errors import ServiceError
from tests.support.trading import open_account

pytestmark = pytest.mark.django_db


def test_a_deposit_is_a_balanced_transaction_from_house_cash(alice, group, operator):
    account = services.account_open(owner=alice, group=group)
    txn = services.account_deposit(account=account, amount=D("250.50"), actor=operator, comment="wire")
    assert (txn.kind, txn.created_by, txn.comment) == (TransactionKind.DEPOSIT, operator, "wire")
    legs = {p.ledger_account.kind: p.amount for p in txn.postings.select_related("ledger_account")}
    assert legs == {"client": D("250.50"), "cash": D("-250.50")}
    account.refresh_from_db()
    assert account.balance == posted_balance(account=account) == D("250.50")
    cash = services.house_account(kind=LedgerAccountKind.CASH, currency="USD")
    assert ledger_balance(ledger_account=cash) == D("-250.50")


def test_amounts_must_be_positive_and_in_cents(account):
    for amount in ("0", "-5", "1.001", "abc"):
        with pytest.raises(ServiceError) as exc:
            services.account_deposit(account=account, amount=amount)
        assert exc.value.code == "invalid_amount"
    account.refresh_from_db()
    assert account.balance == D("5000")


def test_a_withdrawal_beyond_free_margin_is_refused(account, market):
    market.set("EURUSD", "1.1000", "1.1002")
    services.order_submit(account=account, symbol="EURUSD", side="buy", volume=D(1))
    # equity 4980, margin 1100.20: free margin 3879.80
    with pytest.raises(ServiceError) as exc:
        services.account_withdraw(account=account, amount=D("3879.81"))
    assert exc.value.code == "insufficient_free_margin"
    services.account_withdraw(account=account, amount=D("3879.80"))
    account.refresh_from_db()
    assert account.balance == D("1120.20")


def test_withdrawing_more_than_the_balance_is_refused_even_with_profits(account, market):
    market.set("EURUSD", "1.1000", "1.1002")
    services.order_submit(account=account, symbol="EURUSD", side="buy", volume=D("0.1"))
    market.set("EURUSD", "1.2000", "1.2002")  # +998 unrealized
    with pytest.raises(ServiceError):
        services.account_withdraw(account=account, amount=D("5000.01"))


def test_adjustments_and_bonuses_post_against_their_house_accounts(account, operator):
    with pytest.raises(ServiceError) as exc:
        services.account_adjust(account=account, amount=D("-10"), comment=" ")
    assert exc.value.code == "comment_required"
    services.account_adjust(account=account, amount=D("-10"), comment="fee refund reversal", actor=operator)
    services.account_bonus(account=account, amount=D("100"), comment="welcome", actor=operator)
    account.refresh_from_db()
    assert account.balance == D("5090")
    adjustment = services.house_account(kind=LedgerAccountKind.ADJUSTMENT, currency="USD")
    bonus = services.house_account(kind=LedgerAccountKind.BONUS, currency="USD")
    assert ledger_balance(ledger_account=adjustment) == D("10")
    assert ledger_balance(ledger_account=bonus) == D("-100")


def test_the_database_refuses_to_update_or_delete_a_posting(account):
    posting = Posting.objects.first()
    with pytest.raises(IntegrityError, match="append-only"), transaction.atomic():
        Posting.objects.filter(pk=posting.pk).update(amount=D("1"))
    with pytest.raises(IntegrityError, match="append-only"), transaction.atomic():
        Posting.objects.filter(pk=posting.pk).delete()
    with pytest.raises(IntegrityError, match="append-only"), transaction.atomic():
        LedgerTransaction.objects.filter(pk=posting.transaction_id).update(comment="edited")
    posting.refresh_from_db()
    assert posting.amount == D("5000")


def test_the_database_refuses_an_unbalanced_transaction(account):
    client_leg = account.ledger_account
    with pytest.raises(IntegrityError, match="does not balance"), transaction.atomic():
        txn = LedgerTransaction.objects.create(kind=TransactionKind.ADJUSTMENT, currency="USD")
        Posting.objects.create(transaction=txn, ledger_account=client_leg, amount=D("10"))
        with connection.cursor() as cursor:
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")


def test_the_database_refuses_a_posting_in_another_currency(account, alice, instruments):
    from brokerage.models import ClientGroup

    eur_account = open_account(alice, ClientGroup.objects.create(name="eur", currency="EUR", leverage=50))
    with pytest.raises(IntegrityError, match="another currency"), transaction.atomic():
        txn = LedgerTransaction.objects.create(kind=TransactionKind.ADJUSTMENT, currency="USD")
        Posting.objects.create(transaction=txn, ledger_account=account.ledger_account, amount=D("10"))
        Posting.objects.create(transaction=txn, ledger_account=eur_account.ledger_account, amount=D("-10"))
        with connection.cursor() as cursor:
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")


def test_ledger_post_refuses_unbalanced_or_sub_cent_postings(account):
    cash = services.house_account(kind=LedgerAccountKind.CASH, currency="USD")
    for legs in (
        [(account.ledger_account, D("10")), (cash, D("-9"))],
        [(account.ledger_account, D("0.001")), (cash, D("-0.001"))],
        [(account.ledger_account, D("10"))],
    ):
        with pytest.raises(ServiceError):
            services.ledger_post(kind=TransactionKind.ADJUSTMENT, currency="USD", postings=legs)
