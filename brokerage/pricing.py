"""Dealing arithmetic: client prices, margin, PnL and currency conversion. Pure Python, Decimal only.

Nothing here rounds except `money()`, which services call at the edges (ledger amounts and stored
money); prices and intermediate amounts keep full precision.
"""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_EVEN, Decimal

BUY = "buy"
SELL = "sell"
SATURDAY, SUNDAY = 5, 6

# Minor units per currency; anything not listed uses cents.
CURRENCY_DECIMALS = {"JPY": 0, "KRW": 0, "HUF": 0, "BTC": 8, "ETH": 8, "XAU": 4}

# Mid price of a symbol ("EURUSD") from a healthy quote, or None.
RateLookup = Callable[[str], Decimal | None]


class NoRate(Exception):
    """No healthy quote to convert between two currencies."""

    def __init__(self, from_currency: str, to_currency: str) -> None:
        super().__init__(f"no price to convert {from_currency} to {to_currency}")
        self.from_currency, self.to_currency = from_currency, to_currency


@dataclass(frozen=True, slots=True)
class Tick:
    """A bid/ask and the selected quote it comes from (its venue and per-symbol seq), which a deal
    priced from it records."""

    bid: Decimal
    ask: Decimal
    venue: str = ""
    seq: int | None = None

    @property
    def mid(self) -> Decimal:
        return (self.bid + self.ask) / 2


@dataclass(frozen=True, slots=True)
class Spec:
    """What the arithmetic needs of an instrument."""

    symbol: str
    base: str
    quote: str
    contract_size: Decimal
    margin_rate: Decimal = Decimal(1)


def money(amount: Decimal, currency: str) -> Decimal:
    """Quantise to the currency's minor unit (banker's rounding)."""
    return amount.quantize(Decimal(1).scaleb(-CURRENCY_DECIMALS.get(currency, 2)), rounding=ROUND_HALF_EVEN)


def markup_in_price(markup: Decimal, *, pips: bool, pip_size: Decimal) -> Decimal:
    return markup * pip_size if pips else markup


def client_tick(tick: Tick, markup: Decimal) -> Tick:
    """The client's prices: the markup is added to the ask and taken off the bid."""
    if not markup:
        return tick
    return Tick(bid=tick.bid - markup, ask=tick.ask + markup, venue=tick.venue, seq=tick.seq)


def direction(side: str) -> int:
    return 1 if side == BUY else -1


def opposite(side: str) -> str:
    return SELL if side == BUY else BUY


def open_price(side: str, tick: Tick) -> Decimal:
    """BUY fills at the ask, SELL at the bid."""
    return tick.ask if side == BUY else tick.bid


def close_price(side: str, tick: Tick) -> Decimal:
    """A position is closed (and marked) on the other side: a long at the bid, a short at the ask."""
    return tick.bid if side == BUY else tick.ask


def convert(amount: Decimal, from_currency: str, to_currency: str, rates: RateLookup) -> Decimal:
    """Convert through the conversion pair's mid: direct (FROMTO, multiply) or inverse (TOFROM, divide)."""
    if from_currency == to_currency or not amount:
        return amount
    rate = rates(from_currency + to_currency)
    if rate:
        return amount * rate
    rate = rates(to_currency + from_currency)
    if rate:
        return amount / rate
    raise NoRate(from_currency, to_currency)


def margin(
    spec: Spec, *, volume: Decimal, price: Decimal, leverage: int, currency: str, rates: RateLookup
) -> Decimal:
    """volume x contract size x price / leverage x margin rate, in the account currency.

    The notional is in the quote currency. When the account currency is the base currency the
    conversion goes through the instrument's own price, which cancels: USDJPY 1 lot at 150.00 with
    leverage 100 holds exactly 1000 USD.
    """
    base_amount = volume * spec.contract_size * spec.margin_rate / leverage
    if currency == spec.base:
        return base_amount
    return convert(base_amount * price, spec.quote, currency, rates)


def pnl(
    spec: Spec,
    *,
    side: str,
    volume: Decimal,
    entry: Decimal,
    exit: Decimal,
    currency: str,
    rates: RateLookup,
) -> Decimal:
    """Profit of `volume` lots from entry to exit, in the account currency (base-currency accounts
    convert at the exit price, like the margin)."""
    amount = (exit - entry) * direction(side) * volume * spec.contract_size
    return _in_account_currency(spec, amount, exit=exit, currency=currency, rates=rates)


def pnl_of_cost(
    spec: Spec,
    *,
    side: str,
    volume: Decimal,
    cost: Decimal,
    exit: Decimal,
    currency: str,
    rates: RateLookup,
) -> Decimal:
    """`pnl` of positions of one side in one instrument taken together (an account's exposure):
    `volume` lots that cost sum(volume x entry) in price units. For the summaries (equity, margin
    checks); a deal's realized PnL is `pnl` of that deal."""
    amount = (exit * volume - cost) * direction(side) * spec.contract_size
    return _in_account_currency(spec, amount, exit=exit, currency=currency, rates=rates)


def _in_account_currency(
    spec: Spec, amount: Decimal, *, exit: Decimal, currency: str, rates: RateLookup
) -> Decimal:
    """A PnL in the quote currency converted (base-currency accounts at the exit price)."""
    if currency == spec.quote or not amount:
        return amount
    if currency == spec.base:
        return amount / exit
    return convert(amount, spec.quote, currency, rates)


def average_price(volume_a: Decimal, price_a: Decimal, volume_b: Decimal, price_b: Decimal) -> Decimal:
    return (volume_a * price_a + volume_b * price_b) / (volume_a + volume_b)


def volume_error(volume: Decimal, *, minimum: Decimal, maximum: Decimal, step: Decimal) -> str | None:
    """Why a volume is not tradable, or None."""
    if not volume.is_finite() or volume <= 0:
        return "Volume must be a positive number."
    if volume < minimum:
        return f"Volume must be at least {minimum}."
    if volume > maximum:
        return f"Volume must be at most {maximum}."
    if volume % step:
        return f"Volume must be a multiple of {step}."
    return None


def margin_level(equity: Decimal, used_margin: Decimal) -> Decimal | None:
    """Equity / margin in percent; None when no margin is used."""
    return equity / used_margin * 100 if used_margin else None


def trigger_rule(side: str, kind: str) -> tuple[str, bool]:
    """Which client price a trigger watches ("bid" or "ask") and whether it fires at or below its
    level (else at or above).

    kind is "limit" / "stop" (a pending order of `side`, entering at the open price) or "sl" / "tp"
    (of a position of `side`, exiting at the close price).
    """
    if kind in ("limit", "stop"):
        book = "ask" if side == BUY else "bid"
        below = (kind == "limit") == (side == BUY)  # buy limit and sell stop fire at or below
    else:
        book = "bid" if side == BUY else "ask"
        below = (kind == "sl") == (side == BUY)  # long SL and short TP fire at or below
    return book, below


def triggered(side: str, kind: str, level: Decimal, tick: Tick) -> bool:
    """Whether a trigger fires on a (client) tick."""
    book, below = trigger_rule(side, kind)
    price = tick.ask if book == "ask" else tick.bid
    return price <= level if below else price >= level


def rollover_at(day: date, hour: int) -> datetime:
    """The daily swap rollover of `day`, at `hour` UTC."""
    return datetime.combine(day, time(hour), tzinfo=UTC)


def rollover_day(moment: datetime, hour: int) -> date:
    """The date of the last rollover at or before `moment`."""
    utc = moment.astimezone(UTC)
    return utc.date() if utc.hour >= hour else utc.date() - timedelta(days=1)


def swap_days(first: date, last: date, *, triple_weekday: int | None) -> int:
    """Days of swap the rollovers dated `first` to `last` (inclusive) charge. Five-day markets (a
    triple weekday given) charge three on that weekday for the weekend and none on Saturday and
    Sunday; markets open every day charge one per rollover."""
    days = 0
    day = first
    while day <= last:
        weekday = day.weekday()
        if triple_weekday is None:
            days += 1
        elif weekday == triple_weekday:
            days += 3
        elif weekday not in (SATURDAY, SUNDAY):
            days += 1
        day += timedelta(days=1)
    return days
