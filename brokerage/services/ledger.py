"""The double-entry ledger: house accounts and balanced transactions of postings."""

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from kernel import sql
from kernel.errors import ServiceError
from users.models import User

from .. import pricing
from ..models import (
    Deal,
    LedgerAccount,
    LedgerTransaction,
    Order,
    Position,
    Posting,
    TradingAccount,
    TransactionKind,
)
from .checks import _choice
from .events import Outbox


def house_account(*, kind: str, currency: str) -> LedgerAccount:
    found = sql.select(
        LedgerAccount, "t.kind = %s AND t.currency = %s AND t.trading_account_id IS NULL", [kind, currency]
    )
    if found:
        return found[0]
    account, _ = LedgerAccount.objects.get_or_create(kind=kind, currency=currency, trading_account=None)
    return account


def ledger_post(
    *,
    kind: str,
    currency: str,
    postings: Sequence[tuple[LedgerAccount, Decimal]],
    order: Order | None = None,
    deal: Deal | None = None,
    position: Position | None = None,
    comment: str = "",
    created_by: User | None = None,
) -> LedgerTransaction:
    """Write one balanced ledger transaction and move the cached balances of client accounts.

    The caller must hold the row lock of every trading account posted to. Amounts must be in the
    currency's minor units and sum to zero; the database checks the same at commit.
    """
    txn, rows = _ledger_rows(
        kind=kind,
        currency=currency,
        postings=[(la.pk, la.currency, amount) for la, amount in postings],
        order=order,
        deal=deal,
        position=position,
        comment=comment,
        created_by=created_by,
    )
    sql.insert(txn)
    for posting in rows:
        posting.transaction = txn
    sql.insert(*rows)
    for ledger_account, amount in postings:
        if ledger_account.trading_account_id is not None:
            sql.update(TradingAccount, ledger_account.trading_account_id, add={"balance": amount})
    return txn


def _ledger_rows(
    *,
    kind: str,
    currency: str,
    postings: Sequence[tuple[int, str, Decimal]],
    order: Order | None = None,
    deal: Deal | None = None,
    position: Position | None = None,
    comment: str = "",
    created_by: User | None = None,
) -> tuple[LedgerTransaction, list[Posting]]:
    """A balanced ledger transaction and its postings (ledger account id, its currency, amount),
    checked and not yet written: `ledger_post` writes them, a fill writes them with its own rows."""
    _choice(kind, TransactionKind, "kind")
    if len(postings) < 2 or sum(amount for _, _, amount in postings) != 0:
        raise ServiceError("unbalanced", "A ledger transaction needs postings that sum to zero.")
    for ledger_account_id, account_currency, amount in postings:
        if account_currency != currency:
            raise ServiceError(
                "currency_mismatch", f"Ledger account {ledger_account_id} is not in {currency}."
            )
        if not amount or amount != pricing.money(amount, currency):
            raise ServiceError(
                "invalid_amount", f"Posting {amount} is zero or below {currency}'s minor unit."
            )
    txn = sql.new(
        LedgerTransaction,
        kind=kind,
        currency=currency,
        order=order,
        deal=deal,
        position=position,
        comment=comment[:255],
        created_by=created_by,
    )
    rows = [sql.new(Posting, ledger_account_id=la, amount=amount) for la, _, amount in postings]
    return txn, rows


def _post_client(
    account: TradingAccount,
    *,
    kind: str,
    amount: Decimal,
    house_kind: str,
    outbox: Outbox,
    **refs: Any,
) -> LedgerTransaction:
    """Post `amount` to the client against a house account and keep the in-memory balance in step."""
    house = house_account(kind=house_kind, currency=account.currency)
    txn = ledger_post(
        kind=kind,
        currency=account.currency,
        postings=[(account.ledger_account, amount), (house, -amount)],
        **refs,
    )
    account.balance += amount
    outbox.add("account", account.as_event())
    return txn
