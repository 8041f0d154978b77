"""Orders: submit, fill from the LP, cancel, modify, expire and trigger."""

import logging
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from django.db import transaction
from django.db.models import F, Model
from django.utils import timezone

from kernel import metrics, sql, versions
from kernel.errors import ServiceError
from users.models import User
from users.services import audit_record

from .. import pricing
from ..models import (
    AccountStatus,
    Book,
    Deal,
    Order,
    OrderStatus,
    OrderType,
    Position,
    Reason,
    Side,
    TimeInForce,
    TradingAccount,
)
from ..quotes import QuoteSnapshot, QuoteSource, redis_quotes
from ..router import RouteRequest, order_route, routed_order_cancel
from ..selectors import Conditions
from .checks import (
    ZERO,
    _check_account,
    _check_expiry,
    _check_sl_tp,
    _check_tradable,
    _check_trading_state,
    _check_volume,
    _choice,
    _client_tick,
    _decimal,
    _order_prices,
    trading_state_refusal,
)
from .dealer import dealers
from .dealing import _check_margin, _Dealing, _fill, _save_order
from .events import Outbox
from .locks import _lock_account, _lock_account_trading

log = logging.getLogger(__name__)


KEEP: Any = object()  # order_modify: leave this field as it is


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


def _order_outcome(order: Order) -> str:
    return str(order.status)


@metrics.observed(metrics.ORDERS, metrics.ORDER_LATENCY, _order_outcome)
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
    actor: User | None = None,
    quotes: QuoteSource | None = None,
) -> Order:
    """Place an order. The LP gateway (settings.ORDER_GATEWAY) decides its book first. B-Book: a market
    order fills now at the client's ask (BUY) or bid (SELL); limit, stop and stop-limit orders are
    stored as `pending` for the trigger watcher. A-Book: any type is stored as `routed` for the LP
    session the router chose, holding its margin. Raises ServiceError; nothing is written when it does.
    The desk's (reason `operator`, by `actor`) is audited. Outside a transaction the order goes to
    this process's dealer for its account, which may commit it with other accounts' orders (group
    commit, brokerage.services.dealer)."""
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

    def deal(savepoint: bool = True) -> Order:
        with transaction.atomic(savepoint=savepoint):
            locked, instrument, conditions, house_accounts, exposures = _lock_account_trading(
                account.pk, symbol
            )
            _check_volume(volume_, instrument)
            d = _Dealing(locked, quotes, conditions, house_accounts, exposures)
            existing = d.netting_position(instrument)
            reduces = existing is not None and existing.side != side and volume_ <= existing.volume
            _check_account(locked, opening=not reduces)
            _check_tradable(instrument, d.conditions)
            if (
                client_order_id
                and Order.objects.filter(account=locked, client_order_id=client_order_id).exists()
            ):
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
            _check_trading_state(
                locked, instrument, venues=(tick.venue, decision.venue), opening=not reduces, reason=reason
            )
            order = sql.new(
                Order,
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
                created_by=actor,
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
            _audit_operator_action(actor, reason, locked, "order.submit", order)
            d.outbox.commit()
        account.balance = locked.balance
        return order

    if dealers.enabled():
        return dealers.submit(account.pk, deal)
    with versions.pinned():  # the versions the order's caches check, in one round trip (as a dealer's)
        return deal()


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
def order_cancel(*, order: Order, reason: str = Reason.CLIENT, actor: User | None = None) -> Order:
    """Cancel a pending order, or a routed (A-Book) one through the LP gateway (settings.ORDER_GATEWAY): ended
    at once when the LP never got it; otherwise the LP is asked and the order stays `routed` until
    the LP's answer ends it (its status tells the caller which happened). A routed order's rows are
    locked by the hook in the LP gateway's order (order, then its FIX order, then the account, as an
    execution report locks them), so this does not take the account lock first. The desk's (reason
    `operator`, by `actor`) is audited."""
    _choice(reason, Reason, "reason")
    if Order.objects.filter(pk=order.pk, status=OrderStatus.ROUTED).exists():
        _check_account(TradingAccount.objects.get(pk=order.account_id), opening=False, reason=reason)
        routed_order_cancel(order.pk, reason)
        order.refresh_from_db()
        _audit_operator_action(actor, reason, order.account, "order.cancel", order)
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
    _audit_operator_action(actor, reason, locked, "order.cancel", order)
    outbox = Outbox(locked)
    outbox.add("order", order.as_event())
    outbox.triggers_changed = True
    outbox.commit()
    return order


def _audit_operator_action(
    actor: User | None,
    reason: str,
    account: TradingAccount,
    action: str,
    target: Model,
    **details: Any,
) -> None:
    """Audit an action taken for the desk (reason `operator`: the console, or an operator through the
    API on another's account) by `actor`; clients' own actions are not audited."""
    if actor is not None and reason == Reason.OPERATOR:
        audit_record(
            actor=actor, action=action, target=target, details={"account": account.number, **details}
        )


def _audit_operator_change(
    actor: User | None,
    locked: TradingAccount,
    action: str,
    target: Order | Position,
    before: Mapping[str, Any],
    after: Mapping[str, Any],
    fields: list[str],
) -> None:
    """Audit a change of an account's order or position made by anyone but its owner: the changed
    fields' values before and after (events' string forms)."""
    if actor is not None and actor.pk != locked.owner_id:
        audit_record(
            actor=actor,
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
    actor: User | None = None,
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
    _audit_operator_change(actor, locked, "order.modify", fresh, before, after, list(changes))
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
    existing = d.netting_position(order.instrument)
    reduces = existing is not None and existing.side != order.side and order.volume <= existing.volume
    if trading_state_refusal(
        locked, order.instrument, venues=(ctick.venue,), opening=not reduces, reason=Reason.PENDING
    ):
        d.outbox.commit()  # a stop-limit armed above stays armed; the order waits, pending
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
