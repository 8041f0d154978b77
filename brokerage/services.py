"""The dealing engine: every write to accounts, orders, positions, deals and the ledger.

Rules every function here keeps:
- One database transaction per call, holding the trading account's row lock (select_for_update) for
  all of it, so an account's fills, closes and cash movements are serialised and race-free. Only the
  account row is locked: house ledger accounts keep no cached balance, so fills on different
  accounts never wait for each other.
- Prices come from a healthy selected quote (brokerage.quotes); no quote, no fill.
- State transitions that must happen once (an order filling, a position closing) are conditional
  UPDATEs (`... WHERE status = 'open'`); the loser of a race gets nothing done.
- Every balance change is a balanced ledger transaction (ledger_post); the database rejects an
  unbalanced one at commit and any change to a posting.
- Account events go out after commit on `account.<number>` (see Outbox).

Errors are livermore.errors.ServiceError with a machine-readable code.
"""

import asyncio
import contextlib
import json
import logging
import queue
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from functools import cache
from typing import Any, Literal

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from livermore import sql
from livermore.errors import ServiceError
from livermore.redis import key, sync_client
from livermore.users.models import User
from livermore.users.services import audit_record
from marketdata.hub import Envelope, asend_batch, envelope, plain
from marketdata.models import Instrument

from . import pricing
from .models import (
    AccountStatus,
    Book,
    ClientGroup,
    Deal,
    DealEntry,
    LedgerAccount,
    LedgerAccountKind,
    LedgerTransaction,
    MarginMode,
    Order,
    OrderStatus,
    OrderType,
    Position,
    PositionStatus,
    Posting,
    Reason,
    Side,
    TimeInForce,
    TradingAccount,
    TransactionKind,
)
from .quotes import QuoteSnapshot, QuoteSource, redis_quotes
from .router import RouteRequest, order_route, routed_order_cancel
from .selectors import (
    AccountSummary,
    Conditions,
    account_summary,
    instrument_spec,
    open_positions,
)

log = logging.getLogger(__name__)

ZERO = Decimal(0)
PUBLISH_BATCH_MAX = 500
TRIGGERS_CHANNEL = ("brokerage", "triggers")
ROUTED_CHANNEL = ("brokerage", "routed")
PRICE_DIGITS = Decimal("1e-10")
BULK_FILTERS = ("all", "winners", "losers")
KEEP: Any = object()  # order_modify: leave this field as it is
SYSTEM_REASONS = {Reason.OPERATOR, Reason.STOP_OUT, Reason.SL, Reason.TP, Reason.PENDING, Reason.EXPIRY}


def triggers_channel() -> str:
    """Redis pub/sub channel telling trigger watchers which account's triggers changed."""
    return key(*TRIGGERS_CHANNEL)


def routed_channel() -> str:
    """Redis pub/sub channel announcing that an account has a new routed (A-Book) order, so the LP
    gateway (runfix) sends it at once instead of at its next poll."""
    return key(*ROUTED_CHANNEL)


# -- events ------------------------------------------------------------------------------------------


class _Publisher:
    """Sends committed transactions' events from one background thread, so a fill never waits on
    Redis and events of one account keep their commit order. What queued up while the last batch was
    sent goes out as one stream message (and one round trip), so the cost per fill falls as the rate
    rises. Events are notifications (the state is in the database): ones queued when the process
    dies are lost."""

    def __init__(self) -> None:
        self.queue: queue.SimpleQueue[Outbox] = queue.SimpleQueue()
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None

    def put(self, outbox: "Outbox") -> None:
        if self.thread is None:
            with self.lock:
                if self.thread is None:
                    self.thread = threading.Thread(target=self._run, name="account-events", daemon=True)
                    self.thread.start()
        self.queue.put(outbox)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        while True:
            batch = [self.queue.get()]
            with contextlib.suppress(queue.Empty):
                while len(batch) < PUBLISH_BATCH_MAX:
                    batch.append(self.queue.get_nowait())
            try:
                self._send(batch, loop)
            except Exception:
                log.exception("events of accounts %s not sent", sorted({o.account.number for o in batch}))

    def _send(self, batch: list["Outbox"], loop: asyncio.AbstractEventLoop) -> None:
        """Notices in one Redis pipeline; events in one channel-layer message per account group."""
        with sync_client().pipeline(transaction=False) as pipe:
            for outbox in batch:
                if outbox.triggers_changed:
                    pipe.publish(triggers_channel(), json.dumps({"account": outbox.account.pk}))
                if outbox.routed:
                    pipe.publish(routed_channel(), json.dumps({"account": outbox.account.pk}))
            pipe.execute()
        by_group: dict[str, list[Envelope]] = {}
        for outbox in batch:
            for event, data in outbox.events:
                by_group.setdefault(outbox.account.stream_group, []).append(
                    envelope(outbox.targets, event, plain(data))
                )
        if by_group:
            loop.run_until_complete(_send_batches(by_group))


async def _send_batches(by_group: dict[str, list[Envelope]]) -> None:
    await asyncio.gather(*(asend_batch(group, envelopes) for group, envelopes in by_group.items()))


_publisher = _Publisher()


class Outbox:
    """Account events, trigger-change and routed-order notices collected during a transaction, sent
    after commit."""

    def __init__(self, account: TradingAccount) -> None:
        self.account = account
        self.events: list[tuple[str, Any]] = []
        self.triggers_changed = False
        self.routed = False

    def add(self, event: str, data: Any) -> None:
        self.events.append((event, data))

    @property
    def targets(self) -> list[tuple[str, str]]:
        return [(self.account.stream_group, self.account.stream_channel)]

    def commit(self) -> None:
        if self.events or self.triggers_changed or self.routed:
            transaction.on_commit(lambda: _publisher.put(self))


# -- input checks ------------------------------------------------------------------------------------


def _decimal(value: Any, field: str, *, required: bool = True) -> Decimal | None:
    if value is None:
        if required:
            raise ServiceError(f"invalid_{field}", f"{field} is required.", fields={field: ["Required."]})
        return None
    if isinstance(value, float | bool):
        raise ServiceError(f"invalid_{field}", f"{field} must be a decimal string or Decimal, not {value!r}.")
    try:
        result = Decimal(value)
    except (InvalidOperation, TypeError, ValueError):
        raise ServiceError(
            f"invalid_{field}", f"{field} is not a number.", fields={field: ["Not a number."]}
        ) from None
    if not result.is_finite():
        raise ServiceError(f"invalid_{field}", f"{field} must be finite.", fields={field: ["Not finite."]})
    return result


def _choice(value: str, choices: type[Any], field: str) -> str:
    if value not in choices.values:
        raise ServiceError(
            f"invalid_{field}",
            f"{field} must be one of {', '.join(choices.values)}.",
            fields={field: ["Invalid choice."]},
            status_code=400,
        )
    return value


def _amount(value: Any, currency: str, *, signed: bool = False) -> Decimal:
    amount = _decimal(value, "amount")
    assert amount is not None
    if amount == 0 or (amount < 0 and not signed):
        raise ServiceError("invalid_amount", "The amount must be positive." if not signed else "Zero amount.")
    if amount != pricing.money(amount, currency):
        raise ServiceError("invalid_amount", f"The amount has more decimals than {currency} allows.")
    return amount


def _check_volume(volume: Decimal, instrument: Instrument) -> None:
    error = pricing.volume_error(
        volume, minimum=instrument.volume_min, maximum=instrument.volume_max, step=instrument.volume_step
    )
    if error:
        raise ServiceError("invalid_volume", error, fields={"volume": [error]})


def _check_tradable(instrument: Instrument, conditions: Conditions) -> None:
    gi = conditions.settings(instrument)
    if not instrument.tradable or (gi is not None and not gi.enabled):
        raise ServiceError(
            "instrument_not_tradable", f"{instrument.symbol} is not tradable now.", status_code=409
        )


def _check_account(account: TradingAccount, *, opening: bool, reason: str = Reason.CLIENT) -> None:
    if reason in SYSTEM_REASONS and not opening:
        return
    if account.status == AccountStatus.DISABLED:
        raise ServiceError("account_disabled", f"Account {account.number} is disabled.", status_code=403)
    if opening and account.status == AccountStatus.CLOSE_ONLY:
        raise ServiceError(
            "account_close_only", f"Account {account.number} may only close positions.", status_code=403
        )


def _check_sl_tp(side: str, reference: Decimal, sl: Decimal | None, tp: Decimal | None) -> None:
    """A long's SL is below and TP above the reference price; a short's the other way round."""
    below, above = (sl, tp) if side == Side.BUY else (tp, sl)
    for level, field in ((sl, "sl"), (tp, "tp")):
        if level is not None and level <= 0:
            raise ServiceError(f"invalid_{field}", f"{field.upper()} must be positive.")
    if below is not None and below >= reference:
        field = "sl" if side == Side.BUY else "tp"
        raise ServiceError(
            f"invalid_{field}",
            f"{field.upper()} must be below {reference} for a {side}.",
            fields={field: ["Wrong side of the price."]},
        )
    if above is not None and above <= reference:
        field = "tp" if side == Side.BUY else "sl"
        raise ServiceError(
            f"invalid_{field}",
            f"{field.upper()} must be above {reference} for a {side}.",
            fields={field: ["Wrong side of the price."]},
        )


def _client_tick(instrument: Instrument, conditions: Conditions, quotes: QuoteSource) -> pricing.Tick:
    tick = conditions.client_tick(instrument, quotes)
    if tick is None:
        raise ServiceError("no_price", f"No tradable price for {instrument.symbol}.", status_code=503)
    return tick


def _order_prices(type: str, price: Any, stop_price: Any) -> tuple[Decimal | None, Decimal | None]:
    """The limit and stop prices an order of `type` takes, as Decimals: a limit price for limit and
    stop-limit orders, a stop price for stop and stop-limit orders, each positive; none for market."""
    price_ = _decimal(price, "price", required=type in (OrderType.LIMIT, OrderType.STOP_LIMIT))
    stop_ = _decimal(stop_price, "stop_price", required=type in (OrderType.STOP, OrderType.STOP_LIMIT))
    if type == OrderType.MARKET and (price_ is not None or stop_ is not None):
        raise ServiceError("invalid_price", "A market order takes no price.", status_code=400)
    if type == OrderType.LIMIT and stop_ is not None:
        raise ServiceError("invalid_price", "A limit order takes no stop price.", status_code=400)
    if type == OrderType.STOP and price_ is not None:
        raise ServiceError("invalid_price", "A stop order takes no limit price.", status_code=400)
    for value, field in ((price_, "price"), (stop_, "stop_price")):
        if value is not None and value <= 0:
            raise ServiceError(
                "invalid_price", f"{field} must be positive.", fields={field: ["Not positive."]}
            )
    return price_, stop_


def _check_expiry(type: str, time_in_force: str, expires_at: datetime | None) -> None:
    """A good-till-date order (never a market one) expires in the future; any other has no expiry."""
    if time_in_force == TimeInForce.GTD:
        if type == OrderType.MARKET:
            raise ServiceError(
                "invalid_time_in_force", "A market order is not good till a date.", status_code=400
            )
        if expires_at is None or expires_at <= timezone.now():
            raise ServiceError(
                "invalid_expires_at", "expires_at must be in the future.", fields={"expires_at": ["Past."]}
            )
    elif expires_at is not None:
        raise ServiceError("invalid_expires_at", "expires_at needs time_in_force gtd.", status_code=400)


@cache
def _lock_sql(with_instrument: bool) -> str:
    """The account row locked, its group and ledger account; with_instrument: and the instrument of
    the symbol given first (LEFT JOIN: an unknown symbol still locks and reads the account)."""
    instrument = f", {sql.columns(Instrument, 'i')}" if with_instrument else ""
    return (
        f"SELECT {sql.columns(TradingAccount, 'a')}, {sql.columns(ClientGroup, 'g')},"  # noqa: S608
        f" {sql.columns(LedgerAccount, 'l')}{instrument}"
        f" FROM {sql.quote(TradingAccount._meta.db_table)} a"
        f" JOIN {sql.quote(ClientGroup._meta.db_table)} g ON g.id = a.group_id"
        f" LEFT JOIN {sql.quote(LedgerAccount._meta.db_table)} l ON l.trading_account_id = a.id"
        + (f" LEFT JOIN {sql.quote(Instrument._meta.db_table)} i ON i.symbol = %s" if with_instrument else "")
        + " WHERE a.id = %s FOR UPDATE OF a"
    )


def _locked_row(account_id: int, symbol: str | None) -> tuple[TradingAccount, Sequence[Any], int]:
    params: list[Any] = [account_id] if symbol is None else [symbol, account_id]
    row = sql.execute(_lock_sql(symbol is not None), params).fetchone()
    if row is None:
        raise TradingAccount.DoesNotExist(f"No trading account {account_id}.")
    account = sql.build(TradingAccount, row)
    at = sql.width(TradingAccount)
    account.group = sql.build(ClientGroup, row, at)
    at += sql.width(ClientGroup)
    if row[at] is not None:
        account.ledger_account = sql.build(LedgerAccount, row, at)
    return account, row, at + sql.width(LedgerAccount)


def _lock_account_trading(account_id: int, symbol: str) -> tuple[TradingAccount, Instrument]:
    """`_lock_account` and the instrument of `symbol`, in one round trip (an order needs both)."""
    account, row, at = _locked_row(account_id, symbol)
    if row[at] is None:
        raise ServiceError("unknown_symbol", f"No instrument {symbol!r}.", status_code=404)
    return account, sql.build(Instrument, row, at)


def _lock_account(account_id: int) -> TradingAccount:
    """The account row, locked until the transaction ends, with its group and ledger account (not
    locked) from the same round trip."""
    return _locked_row(account_id, None)[0]


# -- ledger ------------------------------------------------------------------------------------------


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
    _choice(kind, TransactionKind, "kind")
    if len(postings) < 2 or sum(amount for _, amount in postings) != 0:
        raise ServiceError("unbalanced", "A ledger transaction needs postings that sum to zero.")
    for ledger_account, amount in postings:
        if ledger_account.currency != currency:
            raise ServiceError("currency_mismatch", f"{ledger_account} is not in {currency}.")
        if not amount or amount != pricing.money(amount, currency):
            raise ServiceError(
                "invalid_amount", f"Posting {amount} is zero or below {currency}'s minor unit."
            )
    txn = LedgerTransaction(
        kind=kind,
        currency=currency,
        order=order,
        deal=deal,
        position=position,
        comment=comment[:255],
        created_by=created_by,
    )
    sql.insert(txn)
    sql.insert(*(Posting(transaction=txn, ledger_account=la, amount=amount) for la, amount in postings))
    for ledger_account, amount in postings:
        if ledger_account.trading_account_id is not None:
            sql.update(TradingAccount, ledger_account.trading_account_id, add={"balance": amount})
    return txn


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


# -- accounts ----------------------------------------------------------------------------------------


@transaction.atomic
def account_open(
    *,
    owner: User,
    group: ClientGroup,
    number: int | None = None,
    status: str = AccountStatus.ACTIVE,
) -> TradingAccount:
    """Open a trading account in the group's currency, with its client ledger account.
    The number comes from a database sequence unless given."""
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
    return account


def _cash_movement(
    account: TradingAccount,
    *,
    kind: str,
    house_kind: str,
    amount: Decimal,
    comment: str,
    created_by: User | None,
) -> LedgerTransaction:
    outbox = Outbox(account)
    txn = _post_client(
        account,
        kind=kind,
        amount=amount,
        house_kind=house_kind,
        outbox=outbox,
        comment=comment,
        created_by=created_by,
    )
    outbox.commit()
    return txn


@transaction.atomic
def account_deposit(
    *, account: TradingAccount, amount: Decimal, created_by: User | None = None, comment: str = ""
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
        created_by=created_by,
    )
    account.balance = locked.balance
    return txn


@transaction.atomic
def account_withdraw(
    *,
    account: TradingAccount,
    amount: Decimal,
    created_by: User | None = None,
    comment: str = "",
    quotes: QuoteSource | None = None,
) -> LedgerTransaction:
    """Pay out to the house cash account; never more than the free margin (nor the balance)."""
    quotes = quotes or redis_quotes
    locked = _lock_account(account.pk)
    value = _amount(amount, locked.currency)
    summary = _Dealing(locked, quotes).summary()
    available = min(summary.free_margin, summary.balance)
    if value > available:
        raise ServiceError(
            "insufficient_free_margin",
            f"At most {max(available, ZERO)} {locked.currency} can be withdrawn now.",
            fields={"amount": ["Exceeds the free margin."]},
        )
    txn = _cash_movement(
        locked,
        kind=TransactionKind.WITHDRAWAL,
        house_kind=LedgerAccountKind.CASH,
        amount=-value,
        comment=comment,
        created_by=created_by,
    )
    account.balance = locked.balance
    return txn


@transaction.atomic
def account_adjust(
    *, account: TradingAccount, amount: Decimal, comment: str, created_by: User | None = None
) -> LedgerTransaction:
    """An operator's correction, positive or negative, against the house adjustment account."""
    if not comment.strip():
        raise ServiceError(
            "comment_required", "An adjustment needs a comment.", fields={"comment": ["Required."]}
        )
    locked = _lock_account(account.pk)
    value = _amount(amount, locked.currency, signed=True)
    txn = _cash_movement(
        locked,
        kind=TransactionKind.ADJUSTMENT,
        house_kind=LedgerAccountKind.ADJUSTMENT,
        amount=value,
        comment=comment,
        created_by=created_by,
    )
    account.balance = locked.balance
    return txn


@transaction.atomic
def account_bonus(
    *, account: TradingAccount, amount: Decimal, comment: str = "", created_by: User | None = None
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
        created_by=created_by,
    )
    account.balance = locked.balance
    return txn


# -- operator changes of an account ------------------------------------------------------------------


def _account_event(account: TradingAccount) -> dict[str, Any]:
    return {**account.as_event(), "group": account.group.name, "leverage": account.effective_leverage}


def _remargin(d: "_Dealing", *, refuse_stop_out: bool = True) -> bool:
    """Recompute the margin of the open positions at the account's (new) group and leverage; whether
    any changed.

    With refuse_stop_out, a change that raises the margin is refused when it would leave the margin
    level at or below the stop-out level: an operator's change to one account must not liquidate the
    client on the next quote. The margin level is only checked with every position priced (no_price
    otherwise)."""
    before = d.account.margin_reserved + sum((p.margin for p in d.positions), ZERO)
    changed = []
    for position in d.positions:
        margin = pricing.money(
            d.margin_for(position.instrument, position.volume, position.open_price), d.currency
        )
        if margin != position.margin:
            position.margin = margin
            changed.append(position)
    if not changed:
        return False
    if refuse_stop_out:
        group = d.account.group
        summary = d.summary()
        level = summary.margin_level
        if summary.margin > before and level is not None and level <= group.stop_out_level:
            raise ServiceError(
                "margin_level_too_low",
                f"The margin would rise to {summary.margin} {d.currency}: margin level {level} % is at "
                f"or below the stop-out level {group.stop_out_level} %.",
                status_code=409,
            )
    now = timezone.now()
    for position in changed:
        Position.objects.filter(pk=position.pk, status=PositionStatus.OPEN).update(
            margin=position.margin, updated_at=now
        )
        d.outbox.add("position", position.as_event())
    return True


@dataclass(frozen=True)
class GroupRemargin:
    accounts: list[int]  # numbers of the accounts whose margin changed
    unpriced: list[int]  # numbers of the accounts left as they were: no price to convert a margin


def group_positions_remargin(
    *, group: ClientGroup, changed_by: User, quotes: QuoteSource | None = None
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
            actor=changed_by,
            action="group.remargin",
            target=group,
            details={"leverage": group.leverage, "accounts": changed, "unpriced": unpriced},
        )
    return GroupRemargin(accounts=changed, unpriced=unpriced)


@transaction.atomic
def account_status_set(
    *, account: TradingAccount, status: str, changed_by: User, reason: str
) -> TradingAccount:
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
            actor=changed_by,
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
    *, account: TradingAccount, group: ClientGroup, changed_by: User, quotes: QuoteSource | None = None
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
        actor=changed_by,
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
    changed_by: User,
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
        actor=changed_by,
        action="account.leverage",
        target=locked,
        details={"from": previous, "to": locked.effective_leverage, "override": leverage},
    )
    d.outbox.add("account", _account_event(locked))
    d.outbox.commit()
    account.leverage = leverage
    return locked


# -- fills -------------------------------------------------------------------------------------------


class _Dealing:
    """What one locked dealing step works with. The open positions are loaded when a step needs them
    one by one (netting, closing, stop-out); a margin check needs only the account's exposures."""

    def __init__(self, account: TradingAccount, quotes: QuoteSource) -> None:
        self.account = account
        self.conditions = Conditions(account.group)
        self.quotes = quotes
        self.outbox = Outbox(account)
        self._positions: list[Position] | None = None

    @property
    def currency(self) -> str:
        return self.account.currency

    @property
    def positions(self) -> list[Position]:
        if self._positions is None:
            self._positions = open_positions(account=self.account)
        return self._positions

    def opened(self, position: Position) -> None:
        if self._positions is not None:
            self._positions.append(position)

    def closed(self, position: Position) -> None:
        if self._positions is not None:
            self._positions = [p for p in self._positions if p.pk != position.pk]

    def summary(self) -> AccountSummary:
        """The account's summary now, priced as its margin checks price it (no_price otherwise):
        from the loaded positions, else from the exposures the database sums."""
        totals = account_summary(
            account=self.account, quotes=self.quotes, positions=self._positions, conditions=self.conditions
        )
        if totals.unpriced:
            raise ServiceError(
                "no_price",
                f"No tradable price for {', '.join(totals.unpriced)}: margin cannot be checked.",
                status_code=503,
            )
        return totals

    def netting_position(self, instrument: Instrument) -> Position | None:
        if self.account.group.margin_mode != MarginMode.NETTING:
            return None
        return next((p for p in self.positions if p.instrument_id == instrument.pk), None)

    def margin_for(self, instrument: Instrument, volume: Decimal, price: Decimal) -> Decimal:
        try:
            return pricing.margin(
                instrument_spec(instrument),
                volume=volume,
                price=price,
                leverage=self.account.effective_leverage,
                currency=self.currency,
                rates=self.quotes.mid,
            )
        except pricing.NoRate as exc:
            raise ServiceError("no_price", f"{exc}.", status_code=503) from exc


def _opening_loss(d: _Dealing, instrument: Instrument, side: str, volume: Decimal, price: Decimal) -> Decimal:
    """What a new position opened at `price` loses at once, marked at the current closing price (the
    spread and markup: a BUY opens at the ask and is marked at the bid). Zero or negative."""
    tick = _client_tick(instrument, d.conditions, d.quotes)
    try:
        loss = pricing.pnl(
            instrument_spec(instrument),
            side=side,
            volume=volume,
            entry=price,
            exit=pricing.close_price(side, tick),
            currency=d.currency,
            rates=d.quotes.mid,
        )
    except pricing.NoRate as exc:
        raise ServiceError("no_price", f"{exc}.", status_code=503) from exc
    return min(loss, ZERO)


def _check_margin(d: _Dealing, order: Order, price: Decimal) -> Decimal:
    """Refuse a fill at `price` that would leave free margin below zero just after it: equity marked
    with the new position at the closing price (its spread loss), less commission, must cover the
    margin held with it. Fills that only reduce exposure are always allowed. Returns the margin the
    opening part needs (zero when the fill only reduces)."""
    instrument = order.instrument
    existing = d.netting_position(instrument)
    close_volume = ZERO
    if existing is not None and existing.side != order.side:
        close_volume = min(order.volume, existing.volume)
    open_volume = order.volume - close_volume
    if not open_volume:
        return ZERO
    summary = d.summary()
    released = existing.margin * close_volume / existing.volume if existing and close_volume else ZERO
    opening = d.margin_for(instrument, open_volume, price)
    margin_after = summary.margin - released + opening
    commission = d.conditions.commission(instrument, order.volume)
    opening_loss = _opening_loss(d, instrument, order.side, open_volume, price)
    if summary.equity + opening_loss - commission - margin_after < 0:
        raise ServiceError(
            "insufficient_margin",
            f"Free margin {summary.free_margin} {d.currency} is not enough for this order.",
        )
    return opening


def _save_order(order: Order) -> None:
    if order._state.adding:
        sql.insert(order)
    else:
        order.save()


def _fill(
    d: _Dealing,
    order: Order,
    price: Decimal,
    *,
    reason: str,
    venue: str,
    quote_seq: int | None,
    check_margin: bool = True,
    external_id: str = "",
    volume: Decimal | None = None,
) -> list[Deal]:
    """Book `volume` lots of `order` (default: all it has left) as filled at the client price `price`:
    open, add to, reduce or flip positions. The order is filled once its whole volume is; until then
    its fill price is the average of its fills, and later fills add to the position the first opened.
    Its deals record where the price came from: the venue and the seq of the selected quote (an LP
    fill has the LP's venue and no seq).

    Every check (and any ServiceError) comes before the first write.
    """
    if check_margin:
        _check_margin(d, order, price)
    instrument = order.instrument
    volume = order.volume - order.filled_volume if volume is None else volume
    existing = d.netting_position(instrument)
    notional = volume * price
    if order.filled_volume:
        earlier = list(
            Deal.objects.filter(order=order).values_list("position_id", "entry", "volume", "price")
        )
        notional += sum((v * p for _, _, v, p in earlier), ZERO)
        if existing is None:
            opened = {pid for pid, entry, _, _ in earlier if entry == DealEntry.IN}
            existing = next((p for p in d.positions if p.pk in opened), None)
    close_volume = ZERO
    if existing is not None and existing.side != order.side:
        close_volume = min(volume, existing.volume)
    open_volume = volume - close_volume
    order.filled_volume += volume
    if order.filled_volume == order.volume:
        order.status = OrderStatus.FILLED
    order.fill_price = (
        price if order.filled_volume == volume else (notional / order.filled_volume).quantize(PRICE_DIGITS)
    )
    order.filled_at = timezone.now()
    _save_order(order)
    d.outbox.add("order", order.as_event())
    deals = []
    if close_volume:
        assert existing is not None
        deals.append(
            _close(
                d,
                existing,
                close_volume,
                price,
                order=order,
                reason=reason,
                venue=venue,
                quote_seq=quote_seq,
                external_id=external_id,
            )
        )
    if open_volume:
        deals.append(
            _open(
                d,
                order,
                open_volume,
                price,
                existing,
                reason=reason,
                venue=venue,
                quote_seq=quote_seq,
                external_id=external_id,
            )
        )
    if order.sl is not None or order.tp is not None:
        d.outbox.triggers_changed = True  # the position's SL/TP are the watcher's to watch
    return deals


def _open(
    d: _Dealing,
    order: Order,
    volume: Decimal,
    price: Decimal,
    existing: Position | None,
    *,
    reason: str,
    venue: str,
    quote_seq: int | None,
    external_id: str,
) -> Deal:
    instrument = order.instrument
    now = timezone.now()
    if existing is not None and existing.side == order.side:
        total = existing.volume + volume
        average = pricing.average_price(existing.volume, existing.open_price, volume, price)
        margin = pricing.money(d.margin_for(instrument, total, average), d.currency)
        _swaps_before_volume_change(d, existing)  # on the volume held over the rollovers
        existing.volume, existing.open_price, existing.margin = total, average, margin
        if order.sl is not None or order.tp is not None:
            existing.sl, existing.tp = order.sl, order.tp
        existing.updated_at = now
        sql.update(
            Position,
            existing.pk,
            values={
                "volume": existing.volume,
                "open_price": existing.open_price,
                "margin": existing.margin,
                "sl": existing.sl,
                "tp": existing.tp,
                "updated_at": now,
            },
        )
        position = existing
    else:
        position = Position(
            account=d.account,
            instrument=instrument,
            side=order.side,
            volume=volume,
            open_price=price,
            margin=pricing.money(d.margin_for(instrument, volume, price), d.currency),
            sl=order.sl,
            tp=order.tp,
            opened_at=now,
        )
        sql.insert(position)
        d.opened(position)
    commission = pricing.money(d.conditions.commission(instrument, volume), d.currency)
    deal = Deal(
        account=d.account,
        order=order,
        position=position,
        instrument=instrument,
        side=order.side,
        entry=DealEntry.IN,
        volume=volume,
        price=price,
        commission=-commission,
        reason=reason,
        book=order.book,
        external_id=external_id,
        venue=venue,
        quote_seq=quote_seq,
        created_at=now,
    )
    sql.insert(deal)
    if commission:
        _charge_commission(d, deal, commission)
    d.outbox.add("deal", deal.as_event())
    d.outbox.add("position", position.as_event())
    return deal


def _charge_commission(d: _Dealing, deal: Deal, commission: Decimal) -> None:
    _post_client(
        d.account,
        kind=TransactionKind.COMMISSION,
        amount=-commission,
        house_kind=LedgerAccountKind.REVENUE,
        outbox=d.outbox,
        deal=deal,
        order=deal.order,
        position=deal.position,
    )
    sql.update(Position, deal.position_id, add={"commission": -commission})
    deal.position.commission -= commission


def _close(
    d: _Dealing,
    position: Position,
    volume: Decimal,
    price: Decimal,
    *,
    order: Order,
    reason: str,
    venue: str,
    quote_seq: int | None,
    external_id: str = "",
) -> Deal:
    """Close `volume` of an open position at the client price `price`, exactly once."""
    instrument = position.instrument
    try:
        raw_pnl = pricing.pnl(
            instrument_spec(instrument),
            side=position.side,
            volume=volume,
            entry=position.open_price,
            exit=price,
            currency=d.currency,
            rates=d.quotes.mid,
        )
    except pricing.NoRate as exc:
        raise ServiceError("no_price", f"{exc}.", status_code=503) from exc
    realized = pricing.money(raw_pnl, d.currency)
    commission = pricing.money(d.conditions.commission(instrument, volume), d.currency)
    _swaps_before_volume_change(d, position)  # the first write: every check is done
    now = timezone.now()
    remaining = position.volume - volume
    changes: dict[str, Any] = {"volume": remaining, "close_price": price, "updated_at": now}
    if remaining:
        changes["margin"] = pricing.money(position.margin * remaining / position.volume, d.currency)
    else:
        changes.update(margin=ZERO, status=PositionStatus.CLOSED, close_reason=reason, closed_at=now)
    won = sql.update(
        Position,
        position.pk,
        values=changes,
        add={"realized_pnl": realized},
        expect={"status": PositionStatus.OPEN, "volume": position.volume},
    )
    if won != 1:
        raise ServiceError("position_not_open", f"Position {position.pk} is no longer open.", status_code=409)
    position.volume, position.close_price = remaining, price
    position.realized_pnl += realized
    position.margin = changes.get("margin", ZERO)
    if not remaining:
        position.status, position.close_reason, position.closed_at = PositionStatus.CLOSED, reason, now
        d.closed(position)
    deal = Deal(
        account=d.account,
        order=order,
        position=position,
        instrument=instrument,
        side=pricing.opposite(position.side),
        entry=DealEntry.OUT,
        volume=volume,
        price=price,
        commission=-commission,
        realized_pnl=realized,
        reason=reason,
        book=order.book,
        external_id=external_id,
        venue=venue,
        quote_seq=quote_seq,
        created_at=now,
    )
    sql.insert(deal)
    if realized:
        _post_client(
            d.account,
            kind=TransactionKind.REALIZED_PNL,
            amount=realized,
            house_kind=LedgerAccountKind.PNL,
            outbox=d.outbox,
            deal=deal,
            order=order,
            position=position,
        )
    if commission:
        _charge_commission(d, deal, commission)
    d.outbox.add("deal", deal.as_event())
    d.outbox.add("position", position.as_event())
    if position.sl is not None or position.tp is not None:
        d.outbox.triggers_changed = True  # its SL/TP triggers go (or follow the smaller volume)
    return deal


def _protect_negative_balance(d: _Dealing) -> None:
    """Once a stopped-out account is flat with a negative balance, the house restores it to zero."""
    account = d.account
    if account.balance >= 0 or d.positions or not account.group.negative_balance_protection:
        return
    _post_client(
        account,
        kind=TransactionKind.NEGATIVE_BALANCE_COMPENSATION,
        amount=-account.balance,
        house_kind=LedgerAccountKind.COMPENSATION,
        outbox=d.outbox,
        comment="Negative balance protection",
    )


def _closing_order(
    d: _Dealing, position: Position, volume: Decimal, *, reason: str, created_by: User | None
) -> Order:
    return Order(
        account=d.account,
        instrument=position.instrument,
        type=OrderType.MARKET,
        side=pricing.opposite(position.side),
        volume=volume,
        status=OrderStatus.FILLED,
        reason=reason,
        position=position,
        created_by=created_by,
    )


def _close_at_market(
    d: _Dealing,
    position: Position,
    volume: Decimal,
    *,
    reason: str,
    created_by: User | None,
    tick: pricing.Tick | None = None,
) -> Deal:
    tick = tick or _client_tick(position.instrument, d.conditions, d.quotes)
    price = pricing.close_price(position.side, tick)
    order = _closing_order(d, position, volume, reason=reason, created_by=created_by)
    order.fill_price, order.filled_at = price, timezone.now()
    _save_order(order)
    d.outbox.add("order", order.as_event())
    return _close(
        d, position, volume, price, order=order, reason=reason, venue=tick.venue, quote_seq=tick.seq
    )


# -- orders ------------------------------------------------------------------------------------------


def _check_pending_prices(
    order_type: str, side: str, price: Decimal | None, stop: Decimal | None, tick: pricing.Tick
) -> Decimal:
    """Where a pending order may rest relative to the current client prices; returns its entry price."""
    market = pricing.open_price(side, tick)
    buy = side == Side.BUY
    if order_type in (OrderType.STOP, OrderType.STOP_LIMIT):
        assert stop is not None
        if (stop <= market) if buy else (stop >= market):
            raise ServiceError(
                "invalid_price",
                f"A {side} stop must be {'above' if buy else 'below'} the market ({market}).",
                fields={"stop_price": ["Wrong side of the market."]},
            )
    if order_type == OrderType.LIMIT:
        assert price is not None
        if (price >= market) if buy else (price <= market):
            raise ServiceError(
                "invalid_price",
                f"A {side} limit must be {'below' if buy else 'above'} the market ({market}).",
                fields={"price": ["Wrong side of the market."]},
            )
    if order_type == OrderType.STOP_LIMIT:
        assert price is not None and stop is not None
        if (price < stop) if buy else (price > stop):
            raise ServiceError(
                "invalid_price",
                f"A {side} stop-limit's limit must be {'at or above' if buy else 'at or below'} its stop.",
                fields={"price": ["Wrong side of the stop price."]},
            )
    entry = price if order_type != OrderType.STOP else stop
    assert entry is not None
    return entry


def order_submit(
    *,
    account: TradingAccount,
    symbol: str,
    side: str,
    volume: Decimal,
    type: str = OrderType.MARKET,
    price: Decimal | None = None,
    stop_price: Decimal | None = None,
    sl: Decimal | None = None,
    tp: Decimal | None = None,
    time_in_force: str = TimeInForce.GTC,
    expires_at: datetime | None = None,
    client_order_id: str = "",
    reason: str = Reason.CLIENT,
    created_by: User | None = None,
    quotes: QuoteSource | None = None,
) -> Order:
    """Place an order. The router (settings.ORDER_ROUTER) decides its book first. B-Book: a market
    order fills now at the client's ask (BUY) or bid (SELL); limit, stop and stop-limit orders are
    stored as `pending` for the trigger watcher. A-Book: any type is stored as `routed` for the LP
    session the router chose, holding its margin. Raises ServiceError; nothing is written when it does."""
    quotes = QuoteSnapshot(quotes or redis_quotes)
    _choice(side, Side, "side")
    _choice(type, OrderType, "type")
    _choice(time_in_force, TimeInForce, "time_in_force")
    volume_ = _decimal(volume, "volume")
    assert volume_ is not None
    price_, stop_ = _order_prices(type, price, stop_price)
    sl_, tp_ = _decimal(sl, "sl", required=False), _decimal(tp, "tp", required=False)
    _check_expiry(type, time_in_force, expires_at)
    if len(client_order_id) > 64:
        raise ServiceError(
            "invalid_client_order_id", "client_order_id is at most 64 characters.", status_code=400
        )

    with transaction.atomic():
        locked, instrument = _lock_account_trading(account.pk, symbol)
        _check_volume(volume_, instrument)
        d = _Dealing(locked, quotes)
        existing = d.netting_position(instrument)
        reduces = existing is not None and existing.side != side and volume_ <= existing.volume
        _check_account(locked, opening=not reduces)
        _check_tradable(instrument, d.conditions)
        if client_order_id and Order.objects.filter(account=locked, client_order_id=client_order_id).exists():
            raise ServiceError(
                "duplicate_client_order_id",
                f"An order with client_order_id {client_order_id!r} exists.",
                status_code=409,
            )
        tick = _client_tick(instrument, d.conditions, quotes)
        if type == OrderType.MARKET:
            entry = pricing.open_price(side, tick)
        else:
            entry = _check_pending_prices(type, side, price_, stop_, tick)
        _check_sl_tp(side, entry, sl_, tp_)
        decision = order_route(
            RouteRequest(
                account_id=locked.pk,
                group_id=locked.group_id,
                symbol=instrument.symbol,
                volume=volume_,
                side=side,
                type=type,
            )
        )
        order = Order(
            account=locked,
            instrument=instrument,
            client_order_id=client_order_id,
            type=type,
            side=side,
            volume=volume_,
            price=price_,
            stop_price=stop_,
            sl=sl_,
            tp=tp_,
            time_in_force=time_in_force,
            expires_at=expires_at,
            reason=reason,
            book=decision.book,
            route=decision.session,
            position=existing if reduces else None,
            created_by=created_by,
        )
        if order.book == Book.A:
            _route(d, order, entry)
        elif type != OrderType.MARKET:
            order.status = OrderStatus.PENDING
            _save_order(order)
            d.outbox.add("order", order.as_event())
            d.outbox.triggers_changed = True
        else:
            _fill(d, order, entry, reason=reason, venue=tick.venue, quote_seq=tick.seq)
        d.outbox.commit()
    account.balance = locked.balance
    return order


def _reserve(account: TradingAccount, amount: Decimal) -> None:
    """Hold (or with a negative amount release) margin for routed orders on the locked account."""
    if amount:
        TradingAccount.objects.filter(pk=account.pk).update(margin_reserved=F("margin_reserved") + amount)
        account.margin_reserved += amount


def _route(d: _Dealing, order: Order, entry: Decimal) -> None:
    """Store an A-Book order as routed for the LP, holding the margin its opening part needs at its
    entry price (checked as a B-Book fill there would be) until the LP fills or ends it."""
    order.margin = pricing.money(_check_margin(d, order, entry), d.currency)
    order.status = OrderStatus.ROUTED
    order.save()
    _reserve(d.account, order.margin)
    d.outbox.add("order", order.as_event())
    d.outbox.routed = True


def _locked_routed(order_id: int) -> tuple[TradingAccount, Order | None]:
    account_id = Order.objects.filter(pk=order_id).values_list("account_id", flat=True).first()
    if account_id is None:
        raise ServiceError("unknown_order", f"No order {order_id}.", status_code=404)
    locked = _lock_account(account_id)
    order = Order.objects.select_related("instrument").filter(pk=order_id, status=OrderStatus.ROUTED).first()
    return locked, order


@transaction.atomic
def order_fill(
    *,
    order_id: int,
    price: Decimal,
    external_id: str,
    volume: Decimal | None = None,
    venue: str = "",
    quotes: QuoteSource | None = None,
) -> list[Deal]:
    """Book the LP's fill of `volume` lots (default: all that is left) of a routed (A-Book) order at
    the LP price plus the group's markup: a deal, the position change and its ledger postings. The
    rest of a partly filled order stays routed; its reserved margin is released pro rata. The deals
    record `venue` (the LP's) and no quote seq: the LP's execution priced them, not a quote.

    Idempotent on external_id (the LP's execution id): a repeated execution returns the deals
    already booked."""
    quotes = quotes or redis_quotes
    if not external_id:
        raise ServiceError("invalid_external_id", "An LP fill needs its execution id.", status_code=400)
    price_ = _decimal(price, "price")
    volume_ = _decimal(volume, "volume", required=False)
    assert price_ is not None
    if price_ <= 0:
        raise ServiceError("invalid_price", "price must be positive.", fields={"price": ["Not positive."]})
    locked, order = _locked_routed(order_id)
    booked = list(Deal.objects.filter(external_id=external_id))
    if booked:
        return booked
    if order is None:
        raise ServiceError(
            "order_not_routed", f"Order {order_id} is not waiting for a fill.", status_code=409
        )
    remaining = order.volume - order.filled_volume
    volume_ = remaining if volume_ is None else volume_
    if not 0 < volume_ <= remaining:
        raise ServiceError(
            "invalid_volume",
            f"A fill of order {order_id} must be above 0 and at most the {remaining} lots left.",
            fields={"volume": ["Out of range."]},
        )
    won = Order.objects.filter(
        pk=order.pk, status=OrderStatus.ROUTED, filled_volume=order.filled_volume
    ).update(filled_volume=order.filled_volume + volume_)
    if won != 1:
        raise ServiceError("order_not_routed", f"Order {order_id} changed meanwhile.", status_code=409)
    d = _Dealing(locked, quotes)
    markup = d.conditions.markup(order.instrument)
    client_price = price_ + markup if order.side == Side.BUY else price_ - markup
    released = (
        order.margin
        if volume_ == remaining
        else pricing.money(order.margin * volume_ / remaining, d.currency)
    )
    order.margin -= released
    deals = _fill(
        d,
        order,
        client_price,
        reason=Reason.LP,
        venue=venue,
        quote_seq=None,
        check_margin=False,
        external_id=external_id,
        volume=volume_,
    )
    _reserve(locked, -released)
    d.outbox.commit()
    return deals


@transaction.atomic
def order_routed_end(
    *,
    order_id: int,
    status: Literal["rejected", "cancelled", "expired"],
    reason: str,
    external_id: str = "",
    close_reason: str | None = None,
) -> Order | None:
    """End a routed (A-Book) order the LP will not fill any further: rejected, or cancelled or
    expired (good till date) with the fills it had kept. Releases its reserved margin. Exactly once:
    None when the order is no longer routed (already filled or ended, e.g. on a repeated execution
    report). The close reason is the LP's (expiry for an expired order) unless `close_reason` says
    whose request ended it."""
    if status not in (OrderStatus.REJECTED, OrderStatus.CANCELLED, OrderStatus.EXPIRED):
        raise ServiceError(
            "invalid_status", "status must be rejected, cancelled or expired.", status_code=400
        )
    if close_reason is None:
        close_reason = Reason.EXPIRY if status == OrderStatus.EXPIRED else Reason.LP
    _choice(close_reason, Reason, "close_reason")
    locked, order = _locked_routed(order_id)
    if order is None:
        return None
    changes = {"status": status, "close_reason": close_reason, "close_text": reason[:200], "margin": ZERO}
    if external_id:
        changes["external_id"] = external_id[:64]
    won = Order.objects.filter(
        pk=order.pk, status=OrderStatus.ROUTED, filled_volume=order.filled_volume
    ).update(updated_at=timezone.now(), **changes)
    if won != 1:
        return None
    _reserve(locked, -order.margin)
    for field, value in changes.items():
        setattr(order, field, value)
    outbox = Outbox(locked)
    outbox.add("order", order.as_event())
    outbox.commit()
    return order


@transaction.atomic
def order_cancel(*, order: Order, reason: str = Reason.CLIENT, created_by: User | None = None) -> Order:
    """Cancel a pending order, or a routed (A-Book) one through settings.ROUTED_ORDER_CANCEL: ended
    at once when the LP never got it; otherwise the LP is asked and the order stays `routed` until
    the LP's answer ends it (its status tells the caller which happened). A routed order's rows are
    locked by the hook in the LP gateway's order (order, then its FIX order, then the account, as an
    execution report locks them), so this does not take the account lock first."""
    _choice(reason, Reason, "reason")
    if Order.objects.filter(pk=order.pk, status=OrderStatus.ROUTED).exists():
        _check_account(TradingAccount.objects.get(pk=order.account_id), opening=False, reason=reason)
        routed_order_cancel(order.pk, reason)
        order.refresh_from_db()
        return order
    locked = _lock_account(order.account_id)
    _check_account(locked, opening=False, reason=reason)
    won = Order.objects.filter(pk=order.pk, status=OrderStatus.PENDING).update(
        status=OrderStatus.CANCELLED, close_reason=reason, updated_at=timezone.now()
    )
    if won != 1:
        raise ServiceError(
            "order_not_pending", f"Order {order.pk} is neither pending nor routed.", status_code=409
        )
    order.refresh_from_db()
    outbox = Outbox(locked)
    outbox.add("order", order.as_event())
    outbox.triggers_changed = True
    outbox.commit()
    return order


def _audit_operator_change(
    created_by: User | None,
    locked: TradingAccount,
    action: str,
    target: Order | Position,
    before: dict[str, Any],
    after: dict[str, Any],
    fields: list[str],
) -> None:
    """Audit a change of an account's order or position made by anyone but its owner: the changed
    fields' values before and after (events' string forms)."""
    if created_by is not None and created_by.pk != locked.owner_id:
        audit_record(
            actor=created_by,
            action=action,
            target=target,
            details={
                "account": locked.number,
                "before": {f: before[f] for f in fields},
                **{f: after[f] for f in fields},
            },
        )


@transaction.atomic
def order_modify(
    *,
    order: Order,
    price: Any = KEEP,
    stop_price: Any = KEEP,
    sl: Any = KEEP,
    tp: Any = KEEP,
    expires_at: Any = KEEP,
    created_by: User | None = None,
    quotes: QuoteSource | None = None,
) -> Order:
    """Change a pending order's prices, SL/TP and expiry: what is given (None removes SL, TP or the
    expiry; KEEP, the default, keeps the value the order has under the lock), checked as order_submit
    checks a new order against the current prices. A stop-limit whose stop was reached keeps its
    stop price. Routed (A-Book) orders are the LP's: cancel and place again. An operator's change
    (by anyone but the owner) is audited."""
    quotes = quotes or redis_quotes
    locked = _lock_account(order.account_id)
    _check_account(locked, opening=True)
    fresh = Order.objects.select_related("instrument").get(pk=order.pk)

    if fresh.status != OrderStatus.PENDING:
        code = "order_routed" if fresh.status == OrderStatus.ROUTED else "order_not_pending"
        raise ServiceError(
            code, f"Order {fresh.pk} is {fresh.status}: it cannot be modified.", status_code=409
        )

    def given(value: Any, field: str) -> Any:
        return getattr(fresh, field) if value is KEEP else value

    price_, stop_ = _order_prices(fresh.type, given(price, "price"), given(stop_price, "stop_price"))
    sl_, tp_ = (
        _decimal(given(sl, "sl"), "sl", required=False),
        _decimal(given(tp, "tp"), "tp", required=False),
    )
    expires_at = given(expires_at, "expires_at")
    _check_expiry(fresh.type, fresh.time_in_force, expires_at)
    armed = fresh.type == OrderType.STOP_LIMIT and fresh.stop_triggered_at is not None
    if armed and stop_ != fresh.stop_price:
        raise ServiceError(
            "invalid_stop_price",
            "The stop was reached: the stop price can no longer change.",
            status_code=409,
        )
    tick = _client_tick(fresh.instrument, Conditions(locked.group), quotes)
    if armed:  # now a limit order at its limit price
        assert price_ is not None
        entry = _check_pending_prices(OrderType.LIMIT, fresh.side, price_, None, tick)
    else:
        entry = _check_pending_prices(fresh.type, fresh.side, price_, stop_, tick)
    _check_sl_tp(fresh.side, entry, sl_, tp_)
    before = fresh.as_event()
    changes = {"price": price_, "stop_price": stop_, "sl": sl_, "tp": tp_, "expires_at": expires_at}
    if not Order.objects.filter(pk=fresh.pk, status=OrderStatus.PENDING).update(
        updated_at=timezone.now(), **changes
    ):
        raise ServiceError("order_not_pending", f"Order {fresh.pk} is not pending.", status_code=409)
    for field, value in changes.items():
        setattr(fresh, field, value)
    after = fresh.as_event()
    _audit_operator_change(created_by, locked, "order.modify", fresh, before, after, list(changes))
    outbox = Outbox(locked)
    outbox.add("order", after)
    outbox.triggers_changed = True  # the watcher re-arms it at its new level
    outbox.commit()
    return fresh


@transaction.atomic
def orders_expire(*, now: datetime | None = None) -> int:
    """Expire good-till-date pending orders whose time has passed (beat job)."""
    now = now or timezone.now()
    expired = 0
    due = Order.objects.filter(status=OrderStatus.PENDING, expires_at__lte=now).values_list(
        "pk", "account_id"
    )
    for order_id, account_id in list(due):
        expired += _expire(_lock_account(account_id), order_id, now)
    return expired


def _expire(locked: TradingAccount, order_id: int, now: datetime) -> bool:
    """Expire a pending order of the locked account, exactly once."""
    if not Order.objects.filter(pk=order_id, status=OrderStatus.PENDING).update(
        status=OrderStatus.EXPIRED, close_reason=Reason.EXPIRY, updated_at=now
    ):
        return False
    outbox = Outbox(locked)
    outbox.add("order", Order.objects.select_related("instrument").get(pk=order_id).as_event())
    outbox.triggers_changed = True
    outbox.commit()
    return True


@transaction.atomic
def order_trigger(*, order_id: int, tick: pricing.Tick, quotes: QuoteSource | None = None) -> Order | None:
    """Execute a pending order whose trigger the watcher saw on `tick` (raw prices), at that tick's
    client price: the trigger price when touched, the first price beyond it on a gap.

    Re-checks everything under the account lock; returns None when there is nothing to do (already
    filled, cancelled, or the tick does not cross). A fill failing the margin check rejects the order;
    a good-till-date order past its expiry is expired, never filled.
    """
    quotes = quotes or redis_quotes
    account_id = Order.objects.filter(pk=order_id).values_list("account_id", flat=True).first()
    if account_id is None:
        return None
    locked = _lock_account(account_id)
    order = Order.objects.select_related("instrument").filter(pk=order_id, status=OrderStatus.PENDING).first()
    if order is None:
        return None
    now = timezone.now()
    if order.expires_at is not None and order.expires_at <= now:
        _expire(locked, order.pk, now)
        order.refresh_from_db()
        return order
    d = _Dealing(locked, quotes)
    ctick = pricing.client_tick(tick, d.conditions.markup(order.instrument))
    if order.type == OrderType.STOP_LIMIT and order.stop_triggered_at is None:
        assert order.stop_price is not None
        if not pricing.triggered(order.side, "stop", order.stop_price, ctick):
            return None
        order.stop_triggered_at = timezone.now()
        Order.objects.filter(pk=order.pk, stop_triggered_at__isnull=True).update(
            stop_triggered_at=order.stop_triggered_at
        )
        d.outbox.triggers_changed = True
        d.outbox.add("order", order.as_event())
        assert order.price is not None
        if not pricing.triggered(order.side, "limit", order.price, ctick):
            d.outbox.commit()
            return order
    else:
        kind = "stop" if order.type == OrderType.STOP else "limit"
        level = order.stop_price if kind == "stop" else order.price
        assert level is not None
        if not pricing.triggered(order.side, kind, level, ctick):
            return None
    if locked.status == AccountStatus.DISABLED or not order.instrument.tradable:
        return None
    won = Order.objects.filter(pk=order.pk, status=OrderStatus.PENDING).update(status=OrderStatus.FILLED)
    if won != 1:
        return None
    try:
        with transaction.atomic():
            _fill(
                d,
                order,
                pricing.open_price(order.side, ctick),
                reason=Reason.PENDING,
                venue=ctick.venue,
                quote_seq=ctick.seq,
            )
    except ServiceError as exc:
        order.status, order.close_reason = OrderStatus.REJECTED, Reason.INSUFFICIENT_MARGIN
        order.save(update_fields=["status", "close_reason", "updated_at"])
        log.info("order=%s rejected at trigger: %s", order.pk, exc.code)
        d.outbox.events = [("order", order.as_event())]
        d.outbox.triggers_changed = True
    d.outbox.commit()
    return order


# -- positions ---------------------------------------------------------------------------------------


def _locked_position(position_id: int) -> tuple[TradingAccount, Position]:
    account_id = Position.objects.filter(pk=position_id).values_list("account_id", flat=True).first()
    if account_id is None:
        raise ServiceError("unknown_position", f"No position {position_id}.", status_code=404)
    locked = _lock_account(account_id)
    position = Position.objects.select_related("instrument").get(pk=position_id)
    if position.status != PositionStatus.OPEN:
        raise ServiceError("position_not_open", f"Position {position_id} is closed.", status_code=409)
    return locked, position


@transaction.atomic
def position_modify(
    *,
    position: Position,
    sl: Decimal | None,
    tp: Decimal | None,
    created_by: User | None = None,
    quotes: QuoteSource | None = None,
) -> Position:
    """Set (or with None remove) a position's SL and TP. They must lie on the right side of the
    current closing price (of the open price while there is no quote). An operator's change (by
    anyone but the owner) is audited."""
    quotes = quotes or redis_quotes
    sl_, tp_ = _decimal(sl, "sl", required=False), _decimal(tp, "tp", required=False)
    locked, fresh = _locked_position(position.pk)
    _check_account(locked, opening=False)
    tick = Conditions(locked.group).client_tick(fresh.instrument, quotes)
    reference = pricing.close_price(fresh.side, tick) if tick else fresh.open_price
    _check_sl_tp(fresh.side, reference, sl_, tp_)
    before = fresh.as_event()
    fresh.sl, fresh.tp = sl_, tp_
    fresh.save(update_fields=["sl", "tp", "updated_at"])
    after = fresh.as_event()
    _audit_operator_change(created_by, locked, "position.modify", fresh, before, after, ["sl", "tp"])
    outbox = Outbox(locked)
    outbox.add("position", after)
    outbox.triggers_changed = True
    outbox.commit()
    return fresh


@transaction.atomic
def position_close(
    *,
    position: Position,
    volume: Decimal | None = None,
    reason: str = Reason.CLIENT,
    created_by: User | None = None,
    quotes: QuoteSource | None = None,
) -> Deal:
    """Close a position at market, fully or `volume` lots of it (the rest stays at its open price)."""
    quotes = quotes or redis_quotes
    _choice(reason, Reason, "reason")
    locked, fresh = _locked_position(position.pk)
    _check_account(locked, opening=False, reason=reason)
    volume_ = fresh.volume if volume is None else _decimal(volume, "volume")
    assert volume_ is not None
    instrument = fresh.instrument
    _check_volume(volume_, instrument)
    if volume_ > fresh.volume:
        raise ServiceError("invalid_volume", f"The position has only {fresh.volume} lots.")
    if 0 < fresh.volume - volume_ < instrument.volume_min:
        raise ServiceError("invalid_volume", f"The rest would be below the minimum {instrument.volume_min}.")
    d = _Dealing(locked, quotes)
    _check_tradable(instrument, d.conditions)
    deal = _close_at_market(d, fresh, volume_, reason=reason, created_by=created_by)
    _protect_negative_balance(d)
    d.outbox.commit()
    position.volume, position.status = fresh.volume, fresh.status
    return deal


@transaction.atomic
def positions_close_bulk(
    *,
    account: TradingAccount,
    which: Literal["all", "winners", "losers"] = "all",
    symbol: str | None = None,
    reason: str = Reason.CLIENT,
    created_by: User | None = None,
    quotes: QuoteSource | None = None,
) -> list[Deal]:
    """Close all, the winning or the losing open positions of an account (optionally of one symbol).
    Positions without a tradable price are left open."""
    quotes = quotes or redis_quotes
    if which not in BULK_FILTERS:
        raise ServiceError("invalid_which", "which must be all, winners or losers.", status_code=400)
    _choice(reason, Reason, "reason")
    locked = _lock_account(account.pk)
    _check_account(locked, opening=False, reason=reason)
    d = _Dealing(locked, quotes)
    summary = account_summary(
        account=locked, quotes=quotes, positions=d.positions, conditions=d.conditions, with_position_pnl=True
    )
    deals = []
    for position in list(d.positions):
        pnl = summary.position_pnl.get(position.pk)
        if pnl is None or (symbol and position.instrument.symbol != symbol):
            continue
        if (which == "winners" and pnl <= 0) or (which == "losers" and pnl >= 0):
            continue
        if not position.instrument.tradable:
            continue
        deals.append(_close_at_market(d, position, position.volume, reason=reason, created_by=created_by))
    _protect_negative_balance(d)
    d.outbox.commit()
    account.balance = locked.balance
    return deals


@transaction.atomic
def position_trigger(
    *, position_id: int, kind: Literal["sl", "tp"], tick: pricing.Tick, quotes: QuoteSource | None = None
) -> Deal | None:
    """Close a position whose SL or TP the watcher saw crossed on `tick` (raw prices), at that tick's
    client closing price. Exactly once: later attempts find the position closed and return None."""
    quotes = quotes or redis_quotes
    account_id = Position.objects.filter(pk=position_id).values_list("account_id", flat=True).first()
    if account_id is None:
        return None
    locked = _lock_account(account_id)
    position = (
        Position.objects.select_related("instrument")
        .filter(pk=position_id, status=PositionStatus.OPEN)
        .first()
    )
    level = getattr(position, kind) if position is not None else None
    if position is None or level is None or not position.instrument.tradable:
        return None
    d = _Dealing(locked, quotes)
    ctick = pricing.client_tick(tick, d.conditions.markup(position.instrument))
    if not pricing.triggered(position.side, kind, level, ctick):
        return None
    deal = _close_at_market(d, position, position.volume, reason=kind, created_by=None, tick=ctick)
    _protect_negative_balance(d)
    d.outbox.commit()
    return deal


@transaction.atomic
def account_margin_check(*, account_id: int, quotes: QuoteSource | None = None) -> list[Deal]:
    """Margin call and stop-out for one account, decided under its lock.

    Entering margin call (margin level at or below the group's level) emits `margin_call` once per
    episode. At or below the stop-out level, positions are closed one at a time, largest loss first,
    until the level is back above it; a flat account left negative is then restored to zero.
    Nothing is decided while any open position has no tradable price (its equity is unknown).
    """
    quotes = quotes or redis_quotes
    locked = _lock_account(account_id)
    d = _Dealing(locked, quotes)
    group = locked.group
    summary = account_summary(
        account=locked, quotes=quotes, positions=d.positions, conditions=d.conditions, with_position_pnl=True
    )
    if summary.unpriced:
        # Equity is unknown while a position cannot be marked: no margin call, no stop-out.
        log.warning(
            "account %s: margin not checked, no price for %s", locked.number, ", ".join(summary.unpriced)
        )
        return []
    in_call = summary.margin_level is not None and summary.margin_level <= group.margin_call_level
    if in_call and locked.margin_call_at is None:
        locked.margin_call_at = timezone.now()
        locked.save(update_fields=["margin_call_at"])
        d.outbox.add("margin_call", {**summary.as_event(), "margin_call_level": str(group.margin_call_level)})
    elif not in_call and locked.margin_call_at is not None:
        locked.margin_call_at = None
        locked.save(update_fields=["margin_call_at"])
        d.outbox.add("account", {**locked.as_event(), "margin_call": False})
    deals: list[Deal] = []
    while summary.margin_level is not None and summary.margin_level <= group.stop_out_level:
        losers = sorted(
            (pnl, p.pk)
            for p in d.positions
            if (pnl := summary.position_pnl.get(p.pk)) is not None and p.instrument.tradable
        )
        if not losers:
            break
        worst = next(p for p in d.positions if p.pk == losers[0][1])
        level_before = summary.margin_level
        deals.append(_close_at_market(d, worst, worst.volume, reason=Reason.STOP_OUT, created_by=None))
        summary = account_summary(
            account=locked,
            quotes=quotes,
            positions=d.positions,
            conditions=d.conditions,
            with_position_pnl=True,
        )
        d.outbox.add(
            "stop_out",
            {
                "position": worst.pk,
                "margin_level_before": str(level_before),
                "stop_out_level": str(group.stop_out_level),
                **summary.as_event(),
            },
        )
    if deals:
        _protect_negative_balance(d)
        if summary.margin_level is None or summary.margin_level > group.margin_call_level:
            locked.margin_call_at = None
            locked.save(update_fields=["margin_call_at"])
    d.outbox.commit()
    return deals


# -- swaps -------------------------------------------------------------------------------------------


def swaps_accrue(*, day: date | None = None, quotes: QuoteSource | None = None) -> int:
    """Charge (or pay) swaps on positions held over the daily rollovers (settings.SWAP_ROLLOVER_HOUR_UTC)
    up to the rollover of `day` (default: the last one passed) that were not charged yet.

    A position takes part in each rollover it was open at, on the volume it held then: opened before
    it, and charged here if still open, else by its close (a close or a netting add between a
    rollover and this job charges that rollover first, see _swaps_before_volume_change). Per lot
    per day, from the group's instrument settings, times pricing.swap_days (three days on the triple
    weekday of five-day markets, none on their weekends). Exactly once per rollover: a position's
    swap_through (the last rollover date charged) only moves forward, by a conditional update."""
    hour = settings.SWAP_ROLLOVER_HOUR_UTC
    day = day or pricing.rollover_day(timezone.now(), hour)
    due = (
        Position.objects.filter(status=PositionStatus.OPEN, opened_at__lt=pricing.rollover_at(day, hour))
        .filter(Q(swap_through__isnull=True) | Q(swap_through__lt=day))
        .values_list("pk", "account_id")
        .order_by("account_id", "pk")
    )
    charged = 0
    for position_id, account_id in list(due):
        with transaction.atomic():
            charged += _swap_position(position_id, account_id, day, hour)
    return charged


def _swap_position(position_id: int, account_id: int, day: date, hour: int) -> int:
    locked = _lock_account(account_id)
    position = Position.objects.select_related("instrument").get(pk=position_id)
    if position.status != PositionStatus.OPEN:
        return 0
    outbox = Outbox(locked)
    charged = _charge_swaps(locked, Conditions(locked.group), position, day, hour, outbox)
    outbox.commit()
    return int(charged)


def _charge_swaps(
    locked: TradingAccount, conditions: Conditions, position: Position, day: date, hour: int, outbox: Outbox
) -> bool:
    """Charge `position` (of the locked account) the swaps of the rollovers after the last one it
    was charged for (or after its opening) through `day`, on its volume now. True when posted."""
    if position.swap_through is not None and position.swap_through >= day:
        return False
    if position.swap_through is not None:
        first = position.swap_through + timedelta(days=1)
    else:
        first = pricing.rollover_day(position.opened_at, hour) + timedelta(days=1)
    gi = conditions.settings(position.instrument)
    rate = (gi.swap_long if position.side == Side.BUY else gi.swap_short) if gi else ZERO
    days = pricing.swap_days(first, day, triple_weekday=gi.swap_triple_weekday if gi else None)
    amount = pricing.money(rate * position.volume * days, locked.currency)
    won = Position.objects.filter(pk=position.pk, swap_through=position.swap_through).update(
        swap_through=day, swap=F("swap") + amount
    )
    if won != 1:
        return False
    position.swap_through, position.swap = day, position.swap + amount
    if not amount:
        return False
    _post_client(
        locked,
        kind=TransactionKind.SWAP,
        amount=amount,
        house_kind=LedgerAccountKind.SWAP,
        outbox=outbox,
        position=position,
        comment=f"Swap {days} day(s) through the {day.isoformat()} rollover",
    )
    return True


def _swaps_before_volume_change(d: _Dealing, position: Position) -> None:
    """A close or a netting add changes the volume the next swap is charged on: first charge the
    rollovers already passed that the swap job has not reached yet (it runs shortly after each),
    on the volume held over them. Nothing to do, and no query, outside that window."""
    hour = settings.SWAP_ROLLOVER_HOUR_UTC
    day = pricing.rollover_day(timezone.now(), hour)
    if position.opened_at < pricing.rollover_at(day, hour):  # else no rollover has passed over it
        _charge_swaps(d.account, d.conditions, position, day, hour, d.outbox)
