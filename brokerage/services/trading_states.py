"""The kill switch: trading states by scope (global, venue, instrument, client group), set by an
operator or automatically (an instrument without a tradable price for too long, the house's realized
loss of the day past its limit). Every change is recorded (TradingStateChange), an operator's is
audited, and each is notified as a `trading.state` system event once committed."""

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from kernel import versions
from kernel.errors import ServiceError
from kernel.redis import mget
from kernel.sysevents import SystemEventKind, system_event_emit
from marketdata.models import Instrument, Venue
from marketdata.publisher import ticker_key
from users.models import User
from users.services import audit_record

from ..models import (
    ClientGroup,
    TradingScope,
    TradingState,
    TradingStateChange,
    TradingStateSource,
    TradingStatus,
)
from ..selectors import TRADING_STATES_VERSION, house_result_since
from .checks import _choice

log = logging.getLogger(__name__)


def _target(
    scope: str, venue: Venue | None, instrument: Instrument | None, group: ClientGroup | None
) -> dict[str, Any]:
    given = {"venue": venue, "instrument": instrument, "group": group}
    wanted = {TradingScope.VENUE: "venue", TradingScope.INSTRUMENT: "instrument", TradingScope.GROUP: "group"}
    field = wanted.get(TradingScope(scope))
    extra = [name for name, value in given.items() if value is not None and name != field]
    if extra or (field is not None and given[field] is None):
        raise ServiceError(
            "invalid_scope",
            f"A {scope} state names {f'its {field}' if field else 'nothing'} and nothing else.",
            fields={name: ["Not for this scope."] for name in extra}
            or ({field: ["Required."]} if field else {}),
            status_code=400,
        )
    return {"scope": scope, **({field: given[field]} if field else {})}


def _locked_row(target: dict[str, Any]) -> TradingState:
    """The scope's row, locked (created active on its first change)."""
    row = TradingState.objects.select_for_update().filter(**target).first()
    if row is not None:
        return row
    try:
        with transaction.atomic():
            return TradingState.objects.create(**target)
    except IntegrityError:  # created meanwhile by another
        return TradingState.objects.select_for_update().get(**target)


@transaction.atomic
def trading_state_set(
    *,
    scope: str,
    state: str,
    reason: str = "",
    venue: Venue | None = None,
    instrument: Instrument | None = None,
    group: ClientGroup | None = None,
    actor: User | None,
    source: str = TradingStateSource.MANUAL,
    auto_resume: bool = False,
) -> TradingState:
    """Set the trading state of a scope (active clears it). An operator's change (`actor`, source
    manual) is audited; an automatic one has no actor (trading_states_watch, which never replaces a
    manual state). Every change is recorded and notified; one that changes nothing writes nothing.
    auto_resume applies to automatic states only."""
    _choice(scope, TradingScope, "scope")
    _choice(state, TradingStatus, "state")
    _choice(source, TradingStateSource, "source")
    if (actor is None) != (source != TradingStateSource.MANUAL):
        raise ServiceError("invalid_source", "An operator's change is manual, an automatic one has no actor.")
    reason = reason.strip()[:255]
    row = _locked_row(_target(scope, venue, instrument, group))
    auto_resume = auto_resume and source != TradingStateSource.MANUAL
    if (row.state, row.source, row.reason, row.auto_resume) == (state, source, reason, auto_resume):
        return row
    before = row.state
    row.state, row.source, row.reason, row.auto_resume = state, source, reason, auto_resume
    row.set_by, row.set_at = actor, timezone.now()
    row.save()
    TradingStateChange.objects.create(
        trading_state=row,
        target=row.target,
        state_before=before,
        state=state,
        source=source,
        reason=reason,
        auto_resume=auto_resume,
        actor=actor,
        created_at=row.set_at,
    )
    if actor is not None:
        audit_record(
            actor=actor,
            action="trading_state.set",
            target=row,
            details={"scope": row.target, "before": before, "state": state, "reason": reason},
        )
    versions.bump_on_commit(TRADING_STATES_VERSION)
    text = (
        f"{TradingStatus(before).label} -> {TradingStatus(state).label} ({TradingStateSource(source).label})"
    )
    if reason:
        text += f": {reason}"
    subject = row.target
    transaction.on_commit(
        lambda: system_event_emit(SystemEventKind.TRADING_STATE, subject=subject, text=text)
    )
    log.warning("trading state %s: %s", subject, text)
    return row


# -- automatic states ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cause:
    """Why a scope should be restricted now, and since when (None: unknown, e.g. no price at all)."""

    reason: str
    since: datetime | None


def _auto_state(row: TradingState | None, source: str, state: str, cause: Cause | None) -> str | None:
    """The state an automatic check of `source` puts a scope in now, or None to leave it as it is:
    `state` for a cause, active once the cause is gone (if its state chose auto-resume). A manual
    state is never replaced: a manual restriction stays, and a manual resume holds while the cause it
    overrode lasts (it was set after the cause began)."""
    if cause is None:
        if row is None or row.source != source or row.state == TradingStatus.ACTIVE or not row.auto_resume:
            return None
        return TradingStatus.ACTIVE
    if row is None:
        return state
    holds = row.state != TradingStatus.ACTIVE or cause.since is None or row.set_at >= cause.since
    if (row.source == TradingStateSource.MANUAL and holds) or (row.source == source and row.state == state):
        return None
    return state


def _auto_apply(
    target: dict[str, Any],
    row: TradingState | None,
    source: str,
    state: str,
    cause: Cause | None,
    *,
    auto_resume: bool,
) -> TradingState | None:
    """Apply _auto_state to a scope: decided on `row` as read, and again under the row's lock (an
    operator may have just changed it)."""
    if _auto_state(row, source, state, cause) is None:
        return None
    with transaction.atomic():
        row = TradingState.objects.select_for_update().filter(**target).first()
        new = _auto_state(row, source, state, cause)
        if new is None:
            return None
        return trading_state_set(
            **target,
            state=new,
            reason=cause.reason if cause is not None else "cause cleared",
            actor=None,
            source=source,
            auto_resume=auto_resume,
        )


def _quoted_instruments() -> list[Instrument]:
    """The tradable instruments an enabled venue quotes: those that should have a price."""
    return list(
        Instrument.objects.filter(
            tradable=True, venue_symbols__enabled=True, venue_symbols__venue__enabled=True
        ).distinct()
    )


def _stale_causes(instruments: list[Instrument], now: datetime) -> dict[int, Cause | None]:
    """Per instrument, why its price is stale (older than KILL_SWITCH_STALE_PRICE_S, not tradable or
    gone from the ticker cache), or None when it has a fresh tradable price."""
    limit = timedelta(seconds=settings.KILL_SWITCH_STALE_PRICE_S)
    raw = mget([ticker_key(i.symbol) for i in instruments])
    causes: dict[int, Cause | None] = {}
    for instrument, value in zip(instruments, raw, strict=True):
        wire = json.loads(value) if value else {}
        at = datetime.fromtimestamp(int(wire["ts"]) / 1000, tz=UTC) if wire.get("ts") else None
        fresh = at is not None and wire.get("tradable") and now - at <= limit
        if fresh:
            causes[instrument.pk] = None
        elif at is None:
            causes[instrument.pk] = Cause("no tradable price", None)
        else:
            causes[instrument.pk] = Cause(
                f"no tradable price since {at.isoformat(timespec='seconds')}", at + limit
            )
    return causes


def _loss_cause(now: datetime) -> Cause | None:
    """The house's realized result of the UTC day past its loss limit in any currency, or None."""
    limits: dict[str, Decimal] = settings.KILL_SWITCH_DAILY_LOSS_LIMIT
    if not limits:
        return None
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    result = house_result_since(since=day)
    for currency, limit in sorted(limits.items()):
        loss = -result.get(currency, Decimal(0)).quantize(Decimal("0.01"))
        if loss > limit:
            return Cause(f"house realized loss today {loss} {currency} is past the limit {limit}", day)
    return None


def trading_states_watch(*, now: datetime | None = None) -> list[TradingState]:
    """The automatic kill switch (a beat job): halt each quoted instrument without a tradable price
    for KILL_SWITCH_STALE_PRICE_S, and put everything under KILL_SWITCH_DAILY_LOSS_STATE once the
    house's realized loss of the UTC day passes KILL_SWITCH_DAILY_LOSS_LIMIT; with
    KILL_SWITCH_AUTO_RESUME, resume each when its cause clears. Returns the states it changed."""
    now = now or timezone.now()
    auto_resume = settings.KILL_SWITCH_AUTO_RESUME
    changed = []
    if settings.KILL_SWITCH_STALE_PRICE_S > 0:
        instruments = _quoted_instruments()
        causes = _stale_causes(instruments, now)
        rows = {r.instrument_id: r for r in TradingState.objects.filter(scope=TradingScope.INSTRUMENT)}
        for instrument in instruments:
            row = _auto_apply(
                {"scope": TradingScope.INSTRUMENT, "instrument": instrument},
                rows.get(instrument.pk),
                TradingStateSource.STALE_PRICE,
                TradingStatus.HALTED,
                causes[instrument.pk],
                auto_resume=auto_resume,
            )
            if row is not None:
                changed.append(row)
    row = _auto_apply(
        {"scope": TradingScope.GLOBAL},
        TradingState.objects.filter(scope=TradingScope.GLOBAL).first(),
        TradingStateSource.DAILY_LOSS,
        settings.KILL_SWITCH_DAILY_LOSS_STATE,
        _loss_cause(now),
        auto_resume=auto_resume,
    )
    if row is not None:
        changed.append(row)
    return changed
