"""Input checks shared by the services: amounts, choices, volumes, SL/TP sides, order prices, expiry,
and the kill switch (trading states)."""

from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal, InvalidOperation
from functools import cache
from typing import Any

from django.db.models import Choices
from django.utils import timezone

from kernel.errors import ServiceError
from marketdata.models import Instrument

from .. import pricing
from ..models import AccountStatus, OrderType, Reason, Side, TimeInForce, TradingAccount, TradingStatus
from ..quotes import QuoteSource
from ..selectors import Conditions, trading_states

ZERO = Decimal(0)


PRICE_DIGITS = Decimal("1e-10")


SYSTEM_REASONS = {Reason.OPERATOR, Reason.STOP_OUT, Reason.SL, Reason.TP, Reason.PENDING, Reason.EXPIRY}


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


@cache
def _values(choices: type[Choices]) -> frozenset[str]:
    return frozenset(choices.values)  # the enum builds a new list on each read of .values


def _choice(value: str, choices: type[Choices], field: str) -> str:
    if value not in _values(choices):
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


def trading_state_refusal(
    account: TradingAccount, instrument: Instrument, *, venues: Iterable[str], opening: bool, reason: str
) -> ServiceError | None:
    """The kill switch for one dealing step, or None when it may go ahead. The state is the most
    restrictive of the global one, the venues' (the one whose quote prices the step, and for an A-Book
    order the LP's), the instrument's and the account's group's (brokerage.models.TradingState):
    - a stop-out always runs;
    - halted: nothing else does (pending orders, SL and TP wait for the state to change);
    - reduce-only: only a step that adds no exposure (`opening` False): a close, a partial close, SL
      or TP, an order that reduces the netting position it meets.
    The states come from a per-process cache under a data version: one Redis read, no query."""
    if reason == Reason.STOP_OUT:
        return None
    restriction = trading_states().effective(
        group_id=account.group_id, instrument_id=instrument.pk, venues=venues
    )
    if restriction is None or (restriction.state == TradingStatus.REDUCE_ONLY and not opening):
        return None
    because = f" ({restriction.reason})" if restriction.reason else ""
    if restriction.state == TradingStatus.HALTED:
        return ServiceError(
            "trading_halted",
            f"Trading in {instrument.symbol} is halted: {restriction.target}{because}.",
            status_code=409,
        )
    return ServiceError(
        "reduce_only",
        f"{instrument.symbol} is reduce-only ({restriction.target}{because}): only orders that close or "
        "reduce a position are taken.",
        status_code=409,
    )


def _check_trading_state(
    account: TradingAccount, instrument: Instrument, *, venues: Iterable[str], opening: bool, reason: str
) -> None:
    refusal = trading_state_refusal(account, instrument, venues=venues, opening=opening, reason=reason)
    if refusal is not None:
        raise refusal
