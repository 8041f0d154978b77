"""Cash operations with four-eyes: deposits, withdrawals, adjustments and bonuses as the back office
makes them (brokerage.CashOperation), with payment method, external reference and status.

One whose amount is above the four-eyes threshold of its currency (settings.FOUR_EYES_THRESHOLDS,
else FOUR_EYES_THRESHOLD) is created `pending` and reaches the ledger only when a second operator
holding brokerage.approve_cash approves it; its maker cannot. A pending withdrawal holds its funds at
once (client -> house `held`), so they cannot be traded away or withdrawn twice; approval pays them out
(held -> house cash), rejection gives them back. Every step is in the audit log with who and when."""

from decimal import Decimal

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from kernel.errors import ServiceError
from users.models import User
from users.services import audit_record

from ..models import (
    CashOperation,
    CashOperationKind,
    CashStatus,
    LedgerAccountKind,
    LedgerTransaction,
    PaymentMethod,
    TradingAccount,
    TransactionKind,
)
from ..quotes import QuoteSource, redis_quotes
from .accounts import _cash_movement, _check_cash_out
from .checks import _amount, _choice
from .ledger import house_account, ledger_post
from .locks import _lock_account

CASH_PERMISSIONS = {
    CashOperationKind.DEPOSIT: "brokerage.deposit",
    CashOperationKind.WITHDRAWAL: "brokerage.withdraw",
    CashOperationKind.ADJUSTMENT: "brokerage.adjust",
    CashOperationKind.BONUS: "brokerage.bonus",
}
APPROVE_PERMISSION = "brokerage.approve_cash"
OVERRIDE_PERMISSION = "brokerage.override_negative_adjustment"


def four_eyes_threshold(currency: str) -> Decimal:
    """Amounts (absolute) above this need a second operator's approval."""
    return Decimal(settings.FOUR_EYES_THRESHOLDS.get(currency.upper(), settings.FOUR_EYES_THRESHOLD))


def _forbidden(message: str) -> ServiceError:
    return ServiceError("permission_denied", message, status_code=403)


def _audit(actor: User, action: str, operation: CashOperation, **details: object) -> None:
    audit_record(
        actor=actor,
        action=f"cash.{action}",
        target=operation,
        details={
            "account": operation.account.number,
            "kind": operation.kind,
            "amount": str(operation.amount),
            "currency": operation.currency,
            "method": operation.method,
            "external_ref": operation.external_ref,
            **details,
        },
    )


# kind -> (ledger transaction kind, house account, sign of the client's posting)
_POSTING = {
    CashOperationKind.DEPOSIT: (TransactionKind.DEPOSIT, LedgerAccountKind.CASH, 1),
    CashOperationKind.WITHDRAWAL: (TransactionKind.WITHDRAWAL, LedgerAccountKind.CASH, -1),
    CashOperationKind.ADJUSTMENT: (TransactionKind.ADJUSTMENT, LedgerAccountKind.ADJUSTMENT, 1),
    CashOperationKind.BONUS: (TransactionKind.BONUS, LedgerAccountKind.BONUS, 1),
}


def _apply(operation: CashOperation, *, actor: User, quotes: QuoteSource) -> LedgerTransaction:
    """Post an operation to the ledger under the account lock the caller holds (operation.account is
    the locked row), with the money rules of account_withdraw and account_adjust. The movement is
    attributed to `actor` and not audited again: the operation's cash.* rows are its one trail."""
    account, amount = operation.account, operation.amount
    if operation.hold_id is not None:
        # A held withdrawal: the client was debited when it was held; the held funds go to house cash.
        held = house_account(kind=LedgerAccountKind.HELD, currency=operation.currency)
        cash = house_account(kind=LedgerAccountKind.CASH, currency=operation.currency)
        return ledger_post(
            kind=TransactionKind.WITHDRAWAL,
            currency=operation.currency,
            postings=[(held, -amount), (cash, amount)],
            comment=operation.comment,
            created_by=actor,
        )
    if operation.kind == CashOperationKind.WITHDRAWAL:
        _check_cash_out(account, amount, quotes=quotes, withdrawal=True)
    elif operation.kind == CashOperationKind.ADJUSTMENT and amount < 0:
        _check_cash_out(account, -amount, quotes=quotes, withdrawal=False, override=operation.override)
    kind, house, sign = _POSTING[CashOperationKind(operation.kind)]
    return _cash_movement(
        account,
        kind=kind,
        house_kind=house,
        amount=sign * amount,
        comment=operation.comment,
        actor=actor,
        operation=str(operation.kind),
        requested=amount,
        audited=False,
    )


@transaction.atomic
def cash_operation_create(
    *,
    account: TradingAccount,
    kind: str,
    amount: Decimal,
    actor: User,
    method: str = PaymentMethod.MANUAL,
    external_ref: str = "",
    comment: str = "",
    override: bool = False,
    quotes: QuoteSource | None = None,
) -> CashOperation:
    """Record a cash operation and apply it now, or leave it pending above the four-eyes threshold
    (a withdrawal's funds then held). The actor needs the operation's permission; `override` (a
    negative adjustment below zero balance or free margin) needs its own, and is audited."""
    quotes = quotes or redis_quotes
    _choice(kind, CashOperationKind, "kind")
    _choice(method, PaymentMethod, "method")
    if not actor.has_perm(CASH_PERMISSIONS[CashOperationKind(kind)]):
        raise _forbidden(f"You may not make a {kind}.")
    if override and not actor.has_perm(OVERRIDE_PERMISSION):
        raise _forbidden("You may not override the negative adjustment rules.")
    if override and kind != CashOperationKind.ADJUSTMENT:
        raise ServiceError("invalid_override", "Only an adjustment takes an override.", status_code=400)
    if kind == CashOperationKind.ADJUSTMENT and not comment.strip():
        raise ServiceError(
            "comment_required", "An adjustment needs a comment.", fields={"comment": ["Required."]}
        )
    locked = _lock_account(account.pk)
    value = _amount(amount, locked.currency, signed=kind == CashOperationKind.ADJUSTMENT)
    pending = abs(value) > four_eyes_threshold(locked.currency)
    operation = CashOperation(
        account=locked,
        kind=kind,
        amount=value,
        currency=locked.currency,
        method=method,
        external_ref=external_ref.strip(),
        comment=comment.strip(),
        override=override,
        status=CashStatus.PENDING if pending else CashStatus.APPLIED,
        created_by=actor,
    )
    if pending and kind == CashOperationKind.WITHDRAWAL:
        _check_cash_out(locked, value, quotes=quotes, withdrawal=True)
        operation.hold = _cash_movement(
            locked,
            kind=TransactionKind.WITHDRAWAL_HOLD,
            house_kind=LedgerAccountKind.HELD,
            amount=-value,
            comment=operation.comment,
            actor=actor,
            audited=False,
            operation="withdraw_hold",
            requested=value,
        )
    elif not pending:
        operation.transaction = _apply(operation, actor=actor, quotes=quotes)
        operation.applied_at = timezone.now()
    try:
        with transaction.atomic():
            operation.save()
    except IntegrityError:
        raise ServiceError(
            "duplicate_external_ref",
            f"A {method} operation with reference {operation.external_ref!r} exists.",
            fields={"external_ref": ["Already used for this method."]},
            status_code=409,
        ) from None
    _audit(actor, operation.status, operation, override=override)
    account.balance = locked.balance
    return operation


def _lock_pending(operation: CashOperation) -> tuple[CashOperation, TradingAccount]:
    """Lock order: the account, then the operation."""
    account = _lock_account(operation.account_id)
    locked = CashOperation.objects.select_for_update().get(pk=operation.pk)
    locked.account = account
    if locked.status != CashStatus.PENDING:
        raise ServiceError(
            "not_pending", f"Cash operation {locked.pk} is {locked.status}, not pending.", status_code=409
        )
    return locked, account


@transaction.atomic
def cash_operation_approve(
    *, operation: CashOperation, actor: User, comment: str = "", quotes: QuoteSource | None = None
) -> CashOperation:
    """A second operator approves a pending operation: it is applied to the ledger now, under the
    money rules of this moment (a held withdrawal's funds are already out of the account)."""
    if not actor.has_perm(APPROVE_PERMISSION):
        raise _forbidden("You may not approve cash operations.")
    locked, _ = _lock_pending(operation)
    if locked.created_by_id == actor.pk:
        raise ServiceError(
            "four_eyes_same_operator",
            "A cash operation needs a second operator: its maker cannot approve it.",
            status_code=403,
        )
    now = timezone.now()
    locked.decided_by, locked.decided_at, locked.decision_comment = actor, now, comment.strip()
    _audit(actor, "approved", locked, comment=locked.decision_comment)
    locked.transaction = _apply(locked, actor=actor, quotes=quotes or redis_quotes)
    locked.status, locked.applied_at = CashStatus.APPLIED, timezone.now()
    locked.save(
        update_fields=["decided_by", "decided_at", "decision_comment", "transaction", "status", "applied_at"]
    )
    _audit(actor, "applied", locked)
    return locked


@transaction.atomic
def cash_operation_reject(*, operation: CashOperation, actor: User, comment: str = "") -> CashOperation:
    """Reject a pending operation (its maker may withdraw it too); a held withdrawal's funds return
    to the account."""
    if not actor.has_perm(APPROVE_PERMISSION) and operation.created_by_id != actor.pk:
        raise _forbidden("You may not reject cash operations.")
    locked, account = _lock_pending(operation)
    if locked.hold_id is not None:
        _cash_movement(
            account,
            kind=TransactionKind.WITHDRAWAL_RELEASE,
            house_kind=LedgerAccountKind.HELD,
            amount=locked.amount,
            comment=f"Release of withdrawal #{locked.pk}",
            actor=actor,
            audited=False,
            operation="withdraw_release",
            requested=locked.amount,
        )
    locked.status = CashStatus.REJECTED
    locked.decided_by, locked.decided_at, locked.decision_comment = actor, timezone.now(), comment.strip()
    locked.save(update_fields=["status", "decided_by", "decided_at", "decision_comment"])
    _audit(actor, "rejected", locked, comment=locked.decision_comment)
    return locked
