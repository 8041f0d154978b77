"""Accounts: opening, cash movements, and the operator's status, group and leverage changes."""

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.db import IntegrityError, transaction

from kernel.errors import ServiceError
from users.models import User
from users.services import audit_record

from .. import pricing
from ..models import (
    AccountStatus,
    ClientGroup,
    LedgerAccount,
    LedgerAccountKind,
    LedgerTransaction,
    MarginMode,
    Position,
    PositionStatus,
    TradingAccount,
    TransactionKind,
)
from ..payloads import AccountPayload
from ..quotes import QuoteSource, redis_quotes
from ..selectors import LEVEL
from .checks import ZERO, _amount, _choice
from .dealing import _Dealing, _remargin
from .events import Outbox
from .ledger import _post_client
from .locks import _lock_account


@transaction.atomic
def account_open(
    *,
    owner: User,
    group: ClientGroup,
    number: int | None = None,
    status: str = AccountStatus.ACTIVE,
    actor: User | None = None,
) -> TradingAccount:
    """Open a trading account in the group's currency, with its client ledger account.
    The number comes from a database sequence unless given; an operator's (`actor`) is audited."""
    _choice(status, AccountStatus, "status")
    fields: dict[str, Any] = {"owner": owner, "group": group, "currency": group.currency, "status": status}
    if number is not None:
        fields["number"] = number
    try:
        with transaction.atomic():
            account = TradingAccount.objects.create(**fields)
    except IntegrityError:
        raise ServiceError("duplicate_account_number", f"Account {number} exists.", status_code=409) from None
    account.refresh_from_db(fields=["number"])
    LedgerAccount.objects.create(
        kind=LedgerAccountKind.CLIENT, currency=account.currency, trading_account=account
    )
    if actor is not None:
        audit_record(
            actor=actor,
            action="account.open",
            target=account,
            details={"owner": owner.username, "group": group.name, "status": status},
        )
    return account


def _cash_movement(
    account: TradingAccount,
    *,
    kind: str,
    house_kind: str,
    amount: Decimal,
    comment: str,
    actor: User | None,
    operation: str,
    requested: Decimal,
    audited: bool = True,
) -> LedgerTransaction:
    """Post a cash movement of the locked account, attributed to `actor`; an operator's is audited as
    `account.<operation>` with the amount as requested, unless the caller audits it itself
    (`audited=False`: a four-eyes cash operation has its own cash.* trail)."""
    outbox = Outbox(account)
    txn = _post_client(
        account,
        kind=kind,
        amount=amount,
        house_kind=house_kind,
        outbox=outbox,
        comment=comment,
        created_by=actor,
    )
    if actor is not None and audited:
        audit_record(
            actor=actor,
            action=f"account.{operation}",
            target=account,
            details={"amount": str(requested), "comment": comment},
        )
    outbox.commit()
    return txn


@transaction.atomic
def account_deposit(
    *, account: TradingAccount, amount: Decimal, actor: User | None = None, comment: str = ""
) -> LedgerTransaction:
    """Credit the account from the house cash account."""
    locked = _lock_account(account.pk)
    value = _amount(amount, locked.currency)
    txn = _cash_movement(
        locked,
        kind=TransactionKind.DEPOSIT,
        house_kind=LedgerAccountKind.CASH,
        amount=value,
        comment=comment,
        actor=actor,
        operation="deposit",
        requested=amount,
    )
    account.balance = locked.balance
    return txn


def _check_cash_out(
    account: TradingAccount, value: Decimal, *, quotes: QuoteSource, withdrawal: bool, override: bool = False
) -> None:
    """The money rules for taking `value` out of a locked account (a withdrawal, a hold for one, or a
    negative adjustment): never below zero balance nor free margin (a withdrawal never beyond the free
    margin and the balance; an adjustment only with `override`), and never at or below the stop-out
    level, override or not. Margin levels are compared unrounded."""
    summary = _Dealing(account, quotes).summary()
    available = min(summary.free_margin, summary.balance)
    if value > available and (withdrawal or not override):
        code = "insufficient_free_margin" if withdrawal else "negative_adjustment_refused"
        what = "withdrawn" if withdrawal else "taken off without an override"
        raise ServiceError(
            code,
            f"At most {max(available, ZERO)} {account.currency} can be {what} now.",
            fields={"amount": ["Exceeds the free margin or the balance."]},
        )
    if summary.margin:
        level = pricing.margin_level(summary.equity - value, summary.margin)
        stop_out = account.group.stop_out_level
        if level is not None and level <= stop_out:
            raise ServiceError(
                "margin_level_too_low",
                f"The margin level would fall to {level.quantize(LEVEL)} %, at or below the "
                f"stop-out level {stop_out} %.",
                fields={"amount": ["Would stop the account out."]},
                status_code=409,
            )


@transaction.atomic
def account_withdraw(
    *,
    account: TradingAccount,
    amount: Decimal,
    actor: User | None = None,
    comment: str = "",
    quotes: QuoteSource | None = None,
) -> LedgerTransaction:
    """Pay out to the house cash account; never more than the free margin (nor the balance), never to
    the stop-out level."""
    locked = _lock_account(account.pk)
    value = _amount(amount, locked.currency)
    _check_cash_out(locked, value, quotes=quotes or redis_quotes, withdrawal=True)
    txn = _cash_movement(
        locked,
        kind=TransactionKind.WITHDRAWAL,
        house_kind=LedgerAccountKind.CASH,
        amount=-value,
        comment=comment,
        actor=actor,
        operation="withdraw",
        requested=amount,
    )
    account.balance = locked.balance
    return txn


@transaction.atomic
def account_adjust(
    *,
    account: TradingAccount,
    amount: Decimal,
    comment: str,
    actor: User | None = None,
    override: bool = False,
    quotes: QuoteSource | None = None,
) -> LedgerTransaction:
    """An operator's correction, positive or negative, against the house adjustment account. A
    negative one is held to _check_cash_out's rules; `override` (for an operator holding
    brokerage.override_negative_adjustment, audited by the caller) lets it below zero balance or free
    margin, never to the stop-out level."""
    if not comment.strip():
        raise ServiceError(
            "comment_required", "An adjustment needs a comment.", fields={"comment": ["Required."]}
        )
    locked = _lock_account(account.pk)
    value = _amount(amount, locked.currency, signed=True)
    if value < 0:
        _check_cash_out(locked, -value, quotes=quotes or redis_quotes, withdrawal=False, override=override)
    txn = _cash_movement(
        locked,
        kind=TransactionKind.ADJUSTMENT,
        house_kind=LedgerAccountKind.ADJUSTMENT,
        amount=value,
        comment=comment,
        actor=actor,
        operation="adjust",
        requested=amount,
    )
    account.balance = locked.balance
    return txn


@transaction.atomic
def account_bonus(
    *, account: TradingAccount, amount: Decimal, comment: str = "", actor: User | None = None
) -> LedgerTransaction:
    """A bonus credit paid by the house bonus account."""
    locked = _lock_account(account.pk)
    value = _amount(amount, locked.currency)
    txn = _cash_movement(
        locked,
        kind=TransactionKind.BONUS,
        house_kind=LedgerAccountKind.BONUS,
        amount=value,
        comment=comment,
        actor=actor,
        operation="bonus",
        requested=amount,
    )
    account.balance = locked.balance
    return txn


def _account_event(account: TradingAccount) -> AccountPayload:
    return {**account.as_event(), "group": account.group.name, "leverage": account.effective_leverage}


@dataclass(frozen=True)
class GroupRemargin:
    accounts: list[int]  # numbers of the accounts whose margin changed
    unpriced: list[int]  # numbers of the accounts left as they were: no price to convert a margin


def group_positions_remargin(
    *, group: ClientGroup, actor: User, quotes: QuoteSource | None = None
) -> GroupRemargin:
    """After an operator changed a group's leverage: re-margin the open positions of every account
    that follows it (no leverage override of its own), one account lock at a time in id order; audited
    when any margin changed.

    Unlike an account's own change, nothing is refused: lowering a group's leverage before a weekend
    is meant to raise the margin of open positions, and an account it leaves at its margin-call or
    stop-out level gets them from the market process's next margin sweep. Run it in the transaction
    that saves the group, so the leverage and the margins change together."""
    ids = (
        Position.objects.filter(
            status=PositionStatus.OPEN, account__group=group, account__leverage__isnull=True
        )
        .values_list("account_id", flat=True)
        .distinct()
        .order_by("account_id")
    )
    changed, unpriced = [], []
    for account_id in ids:
        locked = _lock_account(account_id)
        if locked.group_id != group.pk or locked.leverage is not None:
            continue
        locked.group = group
        d = _Dealing(locked, quotes or redis_quotes)
        try:
            if not _remargin(d, refuse_stop_out=False):
                continue
        except ServiceError:  # no rate to convert some position's margin: left as it was
            unpriced.append(locked.number)
            continue
        changed.append(locked.number)
        d.outbox.add("account", _account_event(locked))
        d.outbox.commit()
    if changed or unpriced:  # the leverage edit itself is the group's own audit entry
        audit_record(
            actor=actor,
            action="group.remargin",
            target=group,
            details={"leverage": group.leverage, "accounts": changed, "unpriced": unpriced},
        )
    return GroupRemargin(accounts=changed, unpriced=unpriced)


@transaction.atomic
def account_status_set(*, account: TradingAccount, status: str, actor: User, reason: str) -> TradingAccount:
    """Set an account active, close-only or disabled (an operator, with a reason); audited."""
    _choice(status, AccountStatus, "status")
    if not reason.strip():
        raise ServiceError(
            "reason_required", "A status change needs a reason.", fields={"reason": ["Required."]}
        )
    locked = _lock_account(account.pk)
    previous = locked.status
    if status != previous:
        locked.status = status
        locked.save(update_fields=["status"])
        audit_record(
            actor=actor,
            action="account.status",
            target=locked,
            details={"from": previous, "to": status, "reason": reason},
        )
        outbox = Outbox(locked)
        outbox.add("account", _account_event(locked))
        outbox.commit()
    account.status = status
    return locked


@transaction.atomic
def account_group_change(
    *, account: TradingAccount, group: ClientGroup, actor: User, quotes: QuoteSource | None = None
) -> TradingAccount:
    """Move an account to another group of its currency; audited. Open positions are re-margined at
    the new group's leverage (unless the account overrides it), refused as _remargin says; a netting
    group takes no account holding several positions in one symbol."""
    locked = _lock_account(account.pk)
    previous = locked.group
    if group.pk == previous.pk:
        return locked
    if group.currency != locked.currency:
        raise ServiceError(
            "currency_mismatch",
            f"Account {locked.number} is in {locked.currency}; group {group} is in {group.currency}.",
            status_code=409,
        )
    locked.group = group
    d = _Dealing(locked, quotes or redis_quotes)
    if group.margin_mode == MarginMode.NETTING:
        symbols = [p.instrument.symbol for p in d.positions]
        if len(symbols) != len(set(symbols)):
            raise ServiceError(
                "margin_mode_conflict",
                f"Account {locked.number} holds several positions in one symbol; {group} is netting.",
                status_code=409,
            )
    _remargin(d)
    locked.save(update_fields=["group"])
    audit_record(
        actor=actor,
        action="account.group",
        target=locked,
        details={"from": previous.name, "to": group.name, "leverage": locked.effective_leverage},
    )
    d.outbox.add("account", _account_event(locked))
    d.outbox.triggers_changed = True  # the group's markup moves trigger thresholds
    d.outbox.commit()
    account.group = group
    return locked


@transaction.atomic
def account_leverage_set(
    *,
    account: TradingAccount,
    leverage: int | None,
    actor: User,
    quotes: QuoteSource | None = None,
) -> TradingAccount:
    """Override the account's leverage (None: back to the group's); audited. Open positions are
    re-margined, refused as _remargin says."""
    if leverage is not None and (isinstance(leverage, bool) or not isinstance(leverage, int) or leverage < 1):
        raise ServiceError(
            "invalid_leverage",
            "Leverage must be a whole number of at least 1.",
            fields={"leverage": ["Invalid."]},
        )
    locked = _lock_account(account.pk)
    previous = locked.effective_leverage
    if leverage == locked.leverage:
        return locked
    locked.leverage = leverage
    d = _Dealing(locked, quotes or redis_quotes)
    _remargin(d)
    locked.save(update_fields=["leverage"])
    audit_record(
        actor=actor,
        action="account.leverage",
        target=locked,
        details={"from": previous, "to": locked.effective_leverage, "override": leverage},
    )
    d.outbox.add("account", _account_event(locked))
    d.outbox.commit()
    account.leverage = leverage
    return locked
