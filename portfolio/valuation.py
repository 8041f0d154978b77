"""Portfolio arithmetic: cost basis from fills and valuation from best bid/ask. Pure Python, Decimal only.

Cost basis: **average cost**, applied in trade order (trade_time, then entry_id) per product.
- A BUY of q at p with commission f adds q to the quantity and q*p + f to the cost: fees paid to buy
  are part of what the position cost.
- A SELL of q at p with commission f releases the average cost of what it sold (cost * q / quantity)
  and realises q*p - f minus that cost. A sell larger than the quantity the fills account for (coins
  that came in by deposit or transfer) sells the tracked part only; the rest is counted as
  `untracked_sold` and the commission is shared pro rata.
- Only `trade_type` FILL changes a position. Adjusted fills (REVERSAL, CORRECTION, SYNTHETIC) are
  mirrored and counted (`adjusted_fills`) but not applied: Coinbase does not document how each one
  adjusts the fill it refers to, so a position with any is flagged rather than guessed at.
- Commission is in the product's quote currency (Coinbase spot charges fees in quote).

Valuation: a holding is valued at the **best bid** (what it could be sold for now), never the mid or
the ask. Its pricing product is the one it was bought on: among the products with the holding as
base that have fills, the one quoted in the account currency if any, else the most recently traded;
with no fills, BASE-ACCOUNT. A value in another quote currency Q is converted to the account currency
through a conversion product: Q-ACCOUNT at its bid (selling Q), else ACCOUNT-Q at its ask (buying
the account currency with Q). A holding with no bid on its product, or no conversion product priced,
is reported unpriced with the reason and left out of the totals, which then say `complete: false`.
Cost basis and unrealized PnL in the account currency use the same current conversion rate (not the
rate on the trade dates). Unrealized PnL covers the tracked quantity: min(holding, fills' quantity);
anything above it (deposits, rewards) has no cost basis and is reported as `untracked_quantity`.

Nothing is rounded until the end: account-currency amounts are quantised to the currency's minor unit
per holding, and totals are the sums of the rounded holding figures (so the shown parts add up).
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal

BUY, SELL = "BUY", "SELL"
REGULAR_FILL = "FILL"
ZERO = Decimal(0)

# Minor units of an account currency; anything not listed uses cents.
CURRENCY_DECIMALS = {"JPY": 0, "KRW": 0, "BTC": 8, "ETH": 8}


def money(amount: Decimal, currency: str) -> Decimal:
    return amount.quantize(Decimal(1).scaleb(-CURRENCY_DECIMALS.get(currency, 2)), rounding=ROUND_HALF_EVEN)


def plain(value: Decimal) -> str:
    """A quantity or price as people write it: exact, no trailing zeros, no exponent."""
    return format(value.normalize(), "f")


def currency_code(raw: str) -> str:
    """A currency code as Coinbase writes them (USD, EUR, USDC, 1INCH): 2-10 letters or digits."""
    code = raw.strip().upper()
    if not (2 <= len(code) <= 10 and code.isascii() and code.isalnum()):
        raise ValueError("A currency is a code of 2 to 10 letters or digits, e.g. USD.")
    return code


def split_product(product_id: str) -> tuple[str, str]:
    """ "BTC-USD" -> ("BTC", "USD"). Spot product ids are BASE-QUOTE."""
    base, sep, quote = product_id.partition("-")
    if not (base and sep and quote) or "-" in quote:
        raise ValueError(f"not a spot product id: {product_id!r}")
    return base, quote


def is_spot(product_id: str) -> bool:
    try:
        split_product(product_id)
    except ValueError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class Fill:
    entry_id: str
    product_id: str
    side: str
    size: Decimal  # base units
    price: Decimal
    commission: Decimal
    trade_time: datetime
    trade_type: str = REGULAR_FILL


@dataclass(slots=True)
class Position:
    """What the fills of one product add up to, in its quote currency."""

    product_id: str
    quantity: Decimal = ZERO
    cost: Decimal = ZERO  # cost basis of `quantity`, fees included
    realized_pnl: Decimal = ZERO
    fees: Decimal = ZERO
    bought: Decimal = ZERO
    sold: Decimal = ZERO
    untracked_sold: Decimal = ZERO
    adjusted_fills: int = 0
    fills: int = 0
    last_trade_time: datetime | None = None

    @property
    def base(self) -> str:
        return split_product(self.product_id)[0]

    @property
    def quote(self) -> str:
        return split_product(self.product_id)[1]

    @property
    def average_cost(self) -> Decimal | None:
        return self.cost / self.quantity if self.quantity else None

    def apply(self, fill: Fill) -> None:
        self.fills += 1
        self.last_trade_time = fill.trade_time
        if fill.trade_type != REGULAR_FILL:
            self.adjusted_fills += 1
            return
        if fill.size <= 0 or fill.price < 0 or fill.commission < 0:
            raise ValueError(f"fill {fill.entry_id}: size, price and commission must be positive")
        self.fees += fill.commission
        if fill.side == BUY:
            self.quantity += fill.size
            self.cost += fill.size * fill.price + fill.commission
            self.bought += fill.size
        elif fill.side == SELL:
            self.sold += fill.size
            tracked = min(fill.size, self.quantity)
            self.untracked_sold += fill.size - tracked
            if not tracked:
                return
            # Selling everything releases the whole cost, so no rounding residue is left behind.
            released = self.cost if tracked == self.quantity else self.cost * tracked / self.quantity
            fee = fill.commission if tracked == fill.size else fill.commission * tracked / fill.size
            self.realized_pnl += tracked * fill.price - fee - released
            self.cost -= released
            self.quantity -= tracked
        else:
            raise ValueError(f"fill {fill.entry_id}: side must be BUY or SELL, not {fill.side!r}")


def positions_from_fills(fills: Iterable[Fill]) -> dict[str, Position]:
    positions: dict[str, Position] = {}
    for fill in sorted(fills, key=lambda f: (f.trade_time, f.entry_id)):
        split_product(fill.product_id)
        positions.setdefault(fill.product_id, Position(fill.product_id)).apply(fill)
    return positions


@dataclass(frozen=True, slots=True)
class Book:
    bid: Decimal | None
    ask: Decimal | None


def pricing_product(currency: str, account_currency: str, positions: Mapping[str, Position]) -> str:
    traded = [p for p in positions.values() if p.base == currency and p.last_trade_time is not None]
    for position in traded:
        if position.quote == account_currency:
            return position.product_id
    if traded:
        return max(traded, key=lambda p: (p.last_trade_time, p.product_id)).product_id
    return f"{currency}-{account_currency}"


def products_to_price(
    currencies: Iterable[str], account_currency: str, positions: Mapping[str, Position]
) -> list[str]:
    """Every product a valuation may need, for one batched best_bid_ask request: each holding's
    pricing product and, when it is quoted in another currency, both conversion directions."""
    wanted: set[str] = set()
    for currency in currencies:
        if currency == account_currency:
            continue
        product = pricing_product(currency, account_currency, positions)
        wanted.add(product)
        quote = split_product(product)[1]
        if quote != account_currency:
            wanted.update({f"{quote}-{account_currency}", f"{account_currency}-{quote}"})
    return sorted(wanted)


@dataclass(frozen=True, slots=True)
class Conversion:
    product_id: str
    rate: Decimal  # account-currency units per quote unit


def conversion(quote: str, account_currency: str, books: Mapping[str, Book]) -> Conversion | None:
    if quote == account_currency:
        return Conversion("", Decimal(1))
    direct = books.get(f"{quote}-{account_currency}")
    if direct is not None and direct.bid:
        return Conversion(f"{quote}-{account_currency}", direct.bid)
    inverse = books.get(f"{account_currency}-{quote}")
    if inverse is not None and inverse.ask:
        return Conversion(f"{account_currency}-{quote}", 1 / inverse.ask)
    return None


@dataclass(frozen=True, slots=True)
class HoldingValue:
    currency: str
    quantity: Decimal
    product_id: str  # "" for the account currency itself
    bid: Decimal | None  # in the product's quote currency
    conversion_product: str
    conversion_rate: Decimal | None
    value: Decimal | None  # account currency, at the bid
    tracked_quantity: Decimal
    untracked_quantity: Decimal
    average_cost: Decimal | None  # quote currency per base unit, fees included
    cost_basis: Decimal | None  # account currency, of the tracked quantity
    unrealized_pnl: Decimal | None  # account currency
    unpriced_reason: str = ""


@dataclass(frozen=True, slots=True)
class Valuation:
    currency: str
    holdings: list[HoldingValue]
    positions: list[Position]
    total_value: Decimal
    total_cost_basis: Decimal
    total_unrealized_pnl: Decimal
    unpriced: list[str] = field(default_factory=list)
    priced_at: datetime | None = None  # when the prices used were fetched

    @property
    def complete(self) -> bool:
        return not self.unpriced


def value_holding(
    currency: str,
    quantity: Decimal,
    *,
    account_currency: str,
    positions: Mapping[str, Position],
    books: Mapping[str, Book],
) -> HoldingValue:
    if currency == account_currency:
        amount = money(quantity, account_currency)
        return HoldingValue(
            currency, quantity, "", Decimal(1), "", Decimal(1), amount, ZERO, quantity, None, None, None
        )
    product = pricing_product(currency, account_currency, positions)
    quote = split_product(product)[1]
    position = positions.get(product)
    tracked = min(quantity, position.quantity) if position is not None else ZERO
    average = position.average_cost if position is not None else None
    book = books.get(product)
    bid = book.bid if book is not None else None
    rate = conversion(quote, account_currency, books)
    reason = ""
    if not bid:
        reason = f"no bid for {product}" if book is not None else f"no price for {product}"
    elif rate is None:
        pair, inverse = f"{quote}-{account_currency}", f"{account_currency}-{quote}"
        reason = f"no conversion product priced for {quote} to {account_currency} ({pair} or {inverse})"
    unpriced = bool(reason and quantity)
    value = cost_basis = unrealized = None
    if not unpriced:
        unit = (bid or ZERO) * (rate.rate if rate else ZERO)
        cost = average * tracked * rate.rate if average is not None and rate is not None else None
        value = money(quantity * unit, account_currency)
        cost_basis = money(cost, account_currency) if cost is not None else None
        unrealized = money(tracked * unit - cost, account_currency) if cost is not None else None
    return HoldingValue(
        currency,
        quantity,
        product,
        bid or None,
        rate.product_id if rate else "",
        rate.rate if rate else None,
        value,
        tracked,
        quantity - tracked,
        average,
        cost_basis,
        unrealized,
        reason if unpriced else "",
    )


def value_portfolio(
    *,
    holdings: Mapping[str, Decimal],
    account_currency: str,
    positions: Mapping[str, Position],
    books: Mapping[str, Book],
    priced_at: datetime | None = None,
) -> Valuation:
    """`holdings` maps a currency to its total (available + hold) quantity."""
    values = [
        value_holding(c, q, account_currency=account_currency, positions=positions, books=books)
        for c, q in sorted(holdings.items())
    ]
    priced = [v for v in values if v.value is not None]
    return Valuation(
        currency=account_currency,
        holdings=values,
        positions=[positions[k] for k in sorted(positions)],
        total_value=sum((v.value for v in priced if v.value is not None), ZERO),
        total_cost_basis=sum((v.cost_basis for v in priced if v.cost_basis is not None), ZERO),
        total_unrealized_pnl=sum((v.unrealized_pnl for v in priced if v.unrealized_pnl is not None), ZERO),
        unpriced=[v.currency for v in values if v.value is None],
        priced_at=priced_at,
    )
