"""Positions: modify SL/TP, close (one, part, bulk), triggers and the margin check (stop-out)."""

import logging
from decimal import Decimal
from typing import Literal

from django.db import transaction
from django.utils import timezone

from kernel.errors import ServiceError
from users.models import User

from .. import pricing
from ..models import Deal, Position, PositionStatus, Reason, TradingAccount
from ..quotes import QuoteSnapshot, QuoteSource, redis_quotes
from ..selectors import LEVEL, Conditions, account_summary
from .checks import (
    _check_account,
    _check_sl_tp,
    _check_tradable,
    _check_trading_state,
    _check_volume,
    _choice,
    _decimal,
    trading_state_refusal,
)
from .dealing import _close_at_market, _Dealing, _protect_negative_balance
from .events import Outbox
from .locks import _lock_account
from .orders import _audit_operator_action, _audit_operator_change

log = logging.getLogger(__name__)


BULK_FILTERS = ("all", "winners", "losers")


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
    actor: User | None = None,
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
    _audit_operator_change(actor, locked, "position.modify", fresh, before, after, ["sl", "tp"])
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
    actor: User | None = None,
    quotes: QuoteSource | None = None,
) -> Deal:
    """Close a position at market, fully or `volume` lots of it (the rest stays at its open price).
    The desk's (reason `operator`, by `actor`) is audited. Refused while the position's trading state
    is halted (reduce-only allows it)."""
    quotes = QuoteSnapshot(quotes or redis_quotes)
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
    tick = quotes.tick(instrument.symbol)
    _check_trading_state(
        locked, instrument, venues=(tick.venue,) if tick else (), opening=False, reason=reason
    )
    deal = _close_at_market(d, fresh, volume_, reason=reason, created_by=actor)
    _audit_operator_action(actor, reason, locked, "position.close", deal, position=fresh.pk)
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
    actor: User | None = None,
    quotes: QuoteSource | None = None,
) -> list[Deal]:
    """Close all, the winning or the losing open positions of an account (optionally of one symbol).
    Positions without a tradable price, or whose trading state is halted, are left open. The desk's
    (reason `operator`, by `actor`) is audited, even when nothing was closed."""
    quotes = QuoteSnapshot(quotes or redis_quotes)
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
        tick = quotes.tick(position.instrument.symbol)
        venues = (tick.venue,) if tick else ()
        if trading_state_refusal(locked, position.instrument, venues=venues, opening=False, reason=reason):
            continue
        deals.append(_close_at_market(d, position, position.volume, reason=reason, created_by=actor))
    _audit_operator_action(
        actor, reason, locked, "account.close_positions", locked, deals=[x.pk for x in deals]
    )
    _protect_negative_balance(d)
    d.outbox.commit()
    account.balance = locked.balance
    return deals


@transaction.atomic
def position_trigger(
    *, position_id: int, kind: Literal["sl", "tp"], tick: pricing.Tick, quotes: QuoteSource | None = None
) -> Deal | None:
    """Close a position whose SL or TP the watcher saw crossed on `tick` (raw prices), at that tick's
    client closing price. Exactly once: later attempts find the position closed and return None.
    While the position's trading state is halted it waits (None; reduce-only lets it execute)."""
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
    if trading_state_refusal(locked, position.instrument, venues=(ctick.venue,), opening=False, reason=kind):
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
    Nothing is decided while any open position has no tradable price (its equity is unknown). The
    kill switch never stops a stop-out.
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
                "margin_level_before": str(level_before.quantize(LEVEL)),
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
