"""Reads of the dealing engine. `account_summary` is also what the services check margin with, so the
numbers a client sees are the numbers the engine used."""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from functools import cache

from django.db.models import OuterRef, QuerySet, Subquery, Sum

from kernel import sql, versions
from marketdata.models import Instrument
from marketdata.selectors import MARKET_VERSION

from . import pricing
from .models import (
    SEVERITY,
    CashOperation,
    CashStatus,
    ClientGroup,
    GroupInstrument,
    LedgerAccount,
    LedgerAccountKind,
    MarkupUnit,
    Position,
    PositionStatus,
    Posting,
    Side,
    TradingAccount,
    TradingScope,
    TradingState,
    TradingStatus,
)
from .payloads import SummaryPayload
from .quotes import QuoteSource, redis_quotes

ZERO = Decimal(0)
LEVEL = Decimal("0.01")


def instrument_spec(instrument: Instrument) -> pricing.Spec:
    return pricing.Spec(
        symbol=instrument.symbol,
        base=instrument.base_currency,
        quote=instrument.quote_currency,
        contract_size=instrument.contract_size,
        margin_rate=instrument.margin_rate,
    )


class Conditions:
    """A group's trading conditions per instrument (one query), with the group's defaults."""

    def __init__(self, group: ClientGroup) -> None:
        self.group = group
        rows = sql.select(GroupInstrument, "t.group_id = %s", [group.pk])
        self.by_instrument = {gi.instrument_id: gi for gi in rows}

    def settings(self, instrument: Instrument) -> GroupInstrument | None:
        return self.by_instrument.get(instrument.pk)

    def markup(self, instrument: Instrument) -> Decimal:
        """The markup in price units for this instrument."""
        gi = self.by_instrument.get(instrument.pk)
        raw = gi.markup if gi is not None and gi.markup is not None else self.group.markup_default
        return pricing.markup_in_price(
            raw, pips=self.group.markup_unit == MarkupUnit.PIPS, pip_size=instrument.pip_size
        )

    def commission(self, instrument: Instrument, volume: Decimal) -> Decimal:
        """Commission for a deal of `volume` lots, in the account currency (unrounded)."""
        gi = self.by_instrument.get(instrument.pk)
        return gi.commission_per_lot * volume if gi is not None else ZERO

    def client_tick(self, instrument: Instrument, quotes: QuoteSource) -> pricing.Tick | None:
        tick = quotes.tick(instrument.symbol)
        return pricing.client_tick(tick, self.markup(instrument)) if tick else None


# The data version of the client groups and their per-instrument settings (kernel/versions.py): moved
# on by any save or delete of either (brokerage/receivers.py). A write that bypasses the model signals
# (a queryset .update()) must bump it.
GROUPS_VERSION = "groups"


def _group_conditions_load(group_id: int) -> Conditions:
    (group,) = sql.select(ClientGroup, "t.id = %s", [group_id])
    return Conditions(group)


def _instrument_load(symbol: str) -> Instrument | None:
    found = sql.select(Instrument, "t.symbol = %s", [symbol])
    return found[0] if found else None


def _instrument_by_id_load(instrument_id: int) -> Instrument:
    (found,) = sql.select(Instrument, "t.id = %s", [instrument_id])
    return found


# Every order needs its instrument and its group's conditions, which change only when an operator
# edits them: they are kept per process under their data versions instead of read with each order.
# The kept objects are shared by every thread of the process: read them, never change them.
_group_conditions: versions.VersionedCache[int, Conditions] = versions.VersionedCache(
    (GROUPS_VERSION,), _group_conditions_load, size=1024, seed=True
)
_instruments: versions.VersionedCache[str, Instrument | None] = versions.VersionedCache(
    (MARKET_VERSION,), _instrument_load, size=4096, seed=True
)
# The instruments of positions (an exposure names its instrument by id): an instrument a position
# refers to cannot be deleted.
_instruments_by_id: versions.VersionedCache[int, Instrument] = versions.VersionedCache(
    (MARKET_VERSION,), _instrument_by_id_load, size=4096, seed=True
)


# The data version of the trading accounts' identities: moved on by any save or delete of an account
# (brokerage/receivers.py). An account's number and owner never change once it is open.
ACCOUNTS_VERSION = "accounts"


def _account_identity_load(number: int) -> tuple[int, int] | None:
    return TradingAccount.objects.filter(number=number).values_list("pk", "owner_id").first()


# The account an order names is checked on every order: by its identity, kept per process, not by a
# statement in the request's own connection.
_account_identities: versions.VersionedCache[int, tuple[int, int] | None] = versions.VersionedCache(
    (ACCOUNTS_VERSION,), _account_identity_load, size=100_000, seed=True
)


def account_identity(number: int) -> tuple[int, int] | None:
    """The id and owner id of account `number` (None: no such account), kept per process until the
    accounts' version moves on."""
    return _account_identities.get(number)


def group_conditions(group_id: int) -> Conditions:
    """The group's conditions (its row and per-instrument settings), kept per process until the
    groups' version moves on (shared: read-only)."""
    return _group_conditions.get(group_id)


def instrument_by_symbol(symbol: str) -> Instrument | None:
    """The instrument of `symbol` (None: none), kept per process until the market data version moves
    on (shared: read-only)."""
    return _instruments.get(symbol)


@dataclass
class AccountSummary:
    currency: str
    balance: Decimal
    equity: Decimal
    margin: Decimal
    free_margin: Decimal
    margin_level: Decimal | None  # percent, unrounded (compared so); None when no margin is used
    unrealized_pnl: Decimal
    # Symbols of open positions without a healthy quote: their PnL is counted as zero.
    unpriced: list[str] = field(default_factory=list)
    # Unrounded unrealized PnL per open position id (priced ones only).
    position_pnl: dict[int, Decimal] = field(default_factory=dict)

    def as_event(self) -> SummaryPayload:
        return {
            "currency": self.currency,
            "balance": str(self.balance),
            "equity": str(self.equity),
            "margin": str(self.margin),
            "free_margin": str(self.free_margin),
            "margin_level": None if self.margin_level is None else str(self.margin_level.quantize(LEVEL)),
            "unrealized_pnl": str(self.unrealized_pnl),
            "unpriced": self.unpriced,
        }


@dataclass(frozen=True, slots=True)
class Exposure:
    """An account's open positions in one instrument and side taken together: all the account's
    totals (equity, margin) need, whatever the number of positions."""

    instrument: Instrument
    side: str
    volume: Decimal
    cost: Decimal  # sum of volume x open price
    margin: Decimal


def exposures_of(positions: Iterable[Position]) -> list[Exposure]:
    """The exposures of loaded positions, as `open_exposures` sums them in the database."""
    totals: dict[tuple[int, str], list[Decimal]] = {}
    instruments: dict[int, Instrument] = {}
    for p in positions:
        instruments[p.instrument_id] = p.instrument
        total = totals.setdefault((p.instrument_id, p.side), [ZERO, ZERO, ZERO])
        total[0] += p.volume
        total[1] += p.volume * p.open_price
        total[2] += p.margin
    return [
        Exposure(instruments[instrument_id], side, volume, cost, margin)
        for (instrument_id, side), (volume, cost, margin) in sorted(totals.items())
    ]


def open_exposures(*, account: TradingAccount) -> list[Exposure]:
    """The account's exposures summed by the database: one row each, however many positions."""
    return accounts_exposures(account_ids=[account.pk]).get(account.pk, [])


def open_positions(*, account: TradingAccount) -> list[Position]:
    """The account's open positions, oldest first. Their instruments come from the process's cache
    (`_instruments_by_id`, read-only and shared), as an exposure's do: a netting order reads the
    account's positions, and joining their instruments' rows cost as much as the positions."""
    positions = sql.select(
        Position, "t.account_id = %s AND t.status = %s ORDER BY t.id", [account.pk, PositionStatus.OPEN]
    )
    if positions:
        with versions.pinned():  # one read of the market version for all of them (an order's own pin)
            for position in positions:
                position.instrument = _instruments_by_id.get(position.instrument_id)
    return positions


def position_pnl(
    position: Position, *, currency: str, conditions: Conditions, quotes: QuoteSource
) -> Decimal | None:
    """Unrealized PnL of an open position marked at the client's closing price, or None unpriced."""
    return exposure_pnl(exposures_of([position])[0], currency=currency, conditions=conditions, quotes=quotes)


def exposure_pnl(
    exposure: Exposure, *, currency: str, conditions: Conditions, quotes: QuoteSource
) -> Decimal | None:
    """Unrealized PnL of an exposure marked at the client's closing price, or None unpriced."""
    tick = conditions.client_tick(exposure.instrument, quotes)
    if tick is None:
        return None
    try:
        return pricing.pnl_of_cost(
            instrument_spec(exposure.instrument),
            side=exposure.side,
            volume=exposure.volume,
            cost=exposure.cost,
            exit=pricing.close_price(exposure.side, tick),
            currency=currency,
            rates=quotes.mid,
        )
    except pricing.NoRate:
        return None


def remarked_margin(
    instrument: Instrument,
    side: str,
    volume: Decimal,
    *,
    tick: pricing.Tick,
    leverage: int,
    currency: str,
    rates: pricing.RateLookup,
) -> Decimal:
    """The margin `volume` lots of `side` hold now (the re-marking rule, docs/operators.md "Margin
    re-marking"): `pricing.margin` at the client's current opening price of the side (a long at the
    ask, a short at the bid, as a new order of that side would fill), the account's leverage now and
    the conversion rates now, rounded to the account currency. Raises pricing.NoRate."""
    return pricing.money(
        pricing.margin(
            instrument_spec(instrument),
            volume=volume,
            price=pricing.open_price(side, tick),
            leverage=leverage,
            currency=currency,
            rates=rates,
        ),
        currency,
    )


def _mark(
    exposure: Exposure, tick: pricing.Tick, *, account: TradingAccount, quotes: QuoteSource
) -> tuple[Decimal, Decimal] | None:
    """An exposure's unrealized PnL (at the closing price) and re-marked margin, or None without a
    conversion rate."""
    currency = account.currency
    try:
        pnl = pricing.pnl_of_cost(
            instrument_spec(exposure.instrument),
            side=exposure.side,
            volume=exposure.volume,
            cost=exposure.cost,
            exit=pricing.close_price(exposure.side, tick),
            currency=currency,
            rates=quotes.mid,
        )
        margin = remarked_margin(
            exposure.instrument,
            exposure.side,
            exposure.volume,
            tick=tick,
            leverage=account.effective_leverage,
            currency=currency,
            rates=quotes.mid,
        )
    except pricing.NoRate:
        return None
    return pnl, margin


def account_summary(
    *,
    account: TradingAccount,
    quotes: QuoteSource | None = None,
    positions: Iterable[Position] | None = None,
    conditions: Conditions | None = None,
    with_position_pnl: bool = False,
    exposures: Iterable[Exposure] | None = None,
) -> AccountSummary:
    """Balance, equity, margin, free margin, margin level and unrealized PnL of an account.

    Positions are marked at the client's prices (markup applied): longs at the bid, shorts at the ask.
    Their margin is re-marked at the current prices and the account's leverage (`remarked_margin`);
    an unpriced exposure counts with the margin stored on its positions (the margin at their open
    price) and is listed in `unpriced`. The margin includes what routed (A-Book) orders hold until
    the LP fills them. The totals come from
    the account's exposures (`exposures` when the caller summed them, else those of the positions
    given, else summed by the database), so they do not depend on how many positions make them up;
    `with_position_pnl` adds each position's PnL.
    """
    quotes = quotes or redis_quotes
    conditions = conditions or Conditions(account.group)
    if positions is None and with_position_pnl:
        positions = open_positions(account=account)
    if positions is not None:
        positions = list(positions)
    if exposures is None:
        exposures = exposures_of(positions) if positions is not None else open_exposures(account=account)
    currency = account.currency
    pnl_total, used = ZERO, account.margin_reserved
    unpriced: list[str] = []
    for exposure in exposures:
        tick = conditions.client_tick(exposure.instrument, quotes)
        marked = None if tick is None else _mark(exposure, tick, account=account, quotes=quotes)
        if marked is None:
            used += exposure.margin
            unpriced.append(exposure.instrument.symbol)
        else:
            pnl_total += marked[0]
            used += marked[1]
    by_position: dict[int, Decimal] = {}
    if with_position_pnl and positions is not None:
        for position in positions:
            value = position_pnl(position, currency=currency, conditions=conditions, quotes=quotes)
            if value is not None:
                by_position[position.pk] = value
    balance = pricing.money(account.balance, currency)
    unrealized = pricing.money(pnl_total, currency)
    equity = balance + unrealized
    level = pricing.margin_level(equity, used)
    return AccountSummary(
        currency=currency,
        balance=balance,
        equity=equity,
        margin=used,
        free_margin=equity - used,
        margin_level=level,
        unrealized_pnl=unrealized,
        unpriced=sorted(set(unpriced)),
        position_pnl=by_position,
    )


def ledger_balance(*, ledger_account: LedgerAccount) -> Decimal:
    """Sum of a ledger account's postings (house accounts have no cached balance)."""
    return ledger_account.postings.aggregate(total=Sum("amount"))["total"] or ZERO


def posted_balance(*, account: TradingAccount) -> Decimal:
    """Sum of a trading account's postings: what its cached balance must equal."""
    return Posting.objects.filter(ledger_account__trading_account=account).aggregate(total=Sum("amount"))[
        "total"
    ] or Decimal(0)


@dataclass
class MarginRow:
    account: TradingAccount
    margin_level: Decimal | None
    equity: Decimal
    margin: Decimal
    unpriced: list[str] = field(default_factory=list)


@cache
def _accounts_exposures_sql(by: str) -> str:
    """The exposures of accounts summed by the database: one row per account, instrument and side,
    however many positions. `by` "ids": of the accounts given, each account's open positions read
    from position_account_status_idx as for one account (with `account_id = ANY(ids)` the planner
    read every open position through position_open_idx and filtered them); "symbols": of every account
    holding an open position in any of the symbols given; "all": of every account holding one. The
    positions are summed and their instruments come from the process's cache (`_instruments_by_id`),
    as the order's own instrument does."""
    positions = sql.quote(Position._meta.db_table)
    summed = (
        "SELECT account_id, instrument_id, side, SUM(volume) AS volume, SUM(volume * open_price) AS cost,"  # noqa: S608
        f" SUM(margin) AS margin FROM {positions} WHERE status = %s AND "
    )
    if by == "ids":  # each account's open positions by their index, as for one account
        summed = f"unnest(%s::bigint[]) AS a(id) CROSS JOIN LATERAL ({summed}account_id = a.id"
    else:
        summed = f"({summed}account_id IN (SELECT h.account_id FROM {positions} h WHERE h.status = %s"  # noqa: S608
        if by == "symbols":
            summed += (
                f" AND h.instrument_id IN (SELECT i.id FROM {sql.quote(Instrument._meta.db_table)} i"  # noqa: S608
                " WHERE i.symbol = ANY(%s))"
            )
        summed += ")"
    return (
        "SELECT t.account_id, t.instrument_id, t.side, t.volume, t.cost, t.margin"  # noqa: S608
        f" FROM {summed} GROUP BY account_id, instrument_id, side) t"
        " ORDER BY t.account_id, t.instrument_id, t.side"
    )


def accounts_exposures(
    *, symbols: Iterable[str] | None = None, account_ids: Sequence[int] | None = None
) -> dict[int, list[Exposure]]:
    """The exposures of the accounts holding open positions (in any of `symbols`, or of those of
    `account_ids`), by account id in ascending order, as `open_exposures` sums them for one account."""
    params: list[object]
    if account_ids is not None:
        by, params = "ids", [list(account_ids), PositionStatus.OPEN]
    else:
        by, params = "all" if symbols is None else "symbols", [PositionStatus.OPEN, PositionStatus.OPEN]
        if symbols is not None:
            params.append(list(symbols))
    rows = sql.execute(_accounts_exposures_sql(by), params).fetchall()
    by_account: dict[int, list[Exposure]] = {}
    with versions.pinned():  # one read of the market version for all of them (an order's own pin)
        for account_id, instrument_id, *sums in rows:
            instrument = _instruments_by_id.get(instrument_id)
            by_account.setdefault(account_id, []).append(Exposure(instrument, *sums))
    return by_account


def margin_rows(
    *, factor: Decimal, symbols: Iterable[str] | None = None, quotes: QuoteSource | None = None
) -> list[MarginRow]:
    """Accounts holding positions (in `symbols`) whose margin level is at or below `factor` times their
    group's margin-call level, or that are marked in margin call, lowest level first: screened
    without locks (account_margin_check decides under the lock). Two statements whatever the number
    of positions: the trigger watcher screens every account that holds a moved symbol twice a second."""
    quotes = quotes or redis_quotes
    exposures = accounts_exposures(symbols=symbols)
    accounts = TradingAccount.objects.select_related("group", "owner").in_bulk(list(exposures))
    conditions: dict[int, Conditions] = {}
    rows = []
    for account_id, held in exposures.items():
        account = accounts.get(account_id)
        if account is None:  # closed meanwhile
            continue
        if account.group_id not in conditions:
            conditions[account.group_id] = Conditions(account.group)
        summary = account_summary(
            account=account, quotes=quotes, exposures=held, conditions=conditions[account.group_id]
        )
        level = summary.margin_level
        if (
            level is not None and level <= account.group.margin_call_level * factor
        ) or account.margin_call_at:
            rows.append(MarginRow(account, level, summary.equity, summary.margin, summary.unpriced))
    return sorted(rows, key=lambda r: (r.margin_level if r.margin_level is not None else ZERO, r.account.pk))


def margin_watchlist(*, symbols: Iterable[str] | None, quotes: QuoteSource) -> list[int]:
    """Accounts (holding positions in `symbols`) at or below their margin-call level, or marked in
    margin call: the trigger watcher's margin sweep."""
    return sorted(row.account.pk for row in margin_rows(factor=Decimal(1), symbols=symbols, quotes=quotes))


# Accounts whose margin level is within this factor of their margin-call level are "near".
NEAR_MARGIN_CALL_FACTOR = Decimal("1.5")


def accounts_near_margin_call() -> list[MarginRow]:
    """The console's margin watch: accounts near (NEAR_MARGIN_CALL_FACTOR) or in margin call."""
    return margin_rows(factor=NEAR_MARGIN_CALL_FACTOR)


@dataclass
class ExposureRow:
    group: str
    symbol: str
    currency: str
    long_volume: Decimal = Decimal(0)
    short_volume: Decimal = Decimal(0)
    client_pnl: Decimal = Decimal(0)
    unpriced: int = 0

    @property
    def net_volume(self) -> Decimal:
        return self.long_volume - self.short_volume

    @property
    def house_pnl(self) -> Decimal:
        """The B-Book house is the clients' counterparty: it gains what they lose."""
        return pricing.money(-self.client_pnl, self.currency)


def accounts_in_margin_call() -> list[MarginRow]:
    """Accounts the margin sweep marked in margin call, lowest margin level first."""
    rows = []
    for account in TradingAccount.objects.filter(margin_call_at__isnull=False).select_related(
        "group", "owner"
    ):
        summary = account_summary(account=account)
        rows.append(
            MarginRow(account, summary.margin_level, summary.equity, summary.margin, summary.unpriced)
        )
    return sorted(rows, key=lambda r: (r.margin_level if r.margin_level is not None else ZERO, r.account.pk))


def cash_operations_pending() -> QuerySet[CashOperation]:
    """Cash operations waiting for a second operator's approval (four eyes), oldest first."""
    return (
        CashOperation.objects.filter(status=CashStatus.PENDING)
        .select_related("account", "created_by")
        .order_by("created_at", "pk")
    )


def exposure() -> list[ExposureRow]:
    """Open client volume and the house's unrealized PnL per (group, instrument), at current prices."""
    positions = Position.objects.filter(status=PositionStatus.OPEN).select_related(
        "instrument", "account__group"
    )
    rows: dict[tuple[str, str], ExposureRow] = {}
    conditions: dict[int, Conditions] = {}
    for position in positions:
        account = position.account
        if account.group_id not in conditions:
            conditions[account.group_id] = Conditions(account.group)
        row = rows.setdefault(
            (account.group.name, position.instrument.symbol),
            ExposureRow(account.group.name, position.instrument.symbol, account.currency),
        )
        if position.side == Side.BUY:
            row.long_volume += position.volume
        else:
            row.short_volume += position.volume
        pnl = position_pnl(
            position, currency=account.currency, conditions=conditions[account.group_id], quotes=redis_quotes
        )
        if pnl is None:
            row.unpriced += 1
        else:
            row.client_pnl += pnl
    return [rows[k] for k in sorted(rows)]


def exposure_by_instrument() -> list[ExposureRow]:
    """The house exposure summed over groups: one row per instrument and account currency."""
    rows: dict[tuple[str, str], ExposureRow] = {}
    for row in exposure():
        total = rows.setdefault((row.symbol, row.currency), ExposureRow("", row.symbol, row.currency))
        total.long_volume += row.long_volume
        total.short_volume += row.short_volume
        total.client_pnl += row.client_pnl
        total.unpriced += row.unpriced
    return [rows[k] for k in sorted(rows)]


def ledger_postings(*, account: TradingAccount) -> QuerySet[Posting]:
    """A trading account's ledger postings, each with the account's balance after it (`balance_after`).
    A subquery, not a window: a window would only sum the page a cursor filtered the rows down to."""
    running = (
        Posting.objects.filter(ledger_account=OuterRef("ledger_account"), id__lte=OuterRef("id"))
        .values("ledger_account")
        .annotate(total=Sum("amount"))
        .values("total")
    )
    return (
        Posting.objects.filter(ledger_account__trading_account=account)
        .select_related("transaction")
        .annotate(balance_after=Subquery(running))
    )


@dataclass(frozen=True)
class MarginPreview:
    """What a hypothetical market order would do to an account now, in the account currency."""

    price: Decimal  # the client price it would open at
    margin: Decimal  # the margin it would hold
    spread_cost: Decimal  # lost at once: opened at one side, marked at the other (spread and markup)
    commission: Decimal
    free_margin: Decimal  # now
    free_margin_after: Decimal
    margin_level_after: Decimal | None


def margin_preview(
    *,
    account: TradingAccount,
    instrument: Instrument,
    side: str,
    volume: Decimal,
    quotes: QuoteSource | None = None,
) -> MarginPreview | None:
    """The margin, spread cost and free margin after a market order of `volume` lots, priced as the
    engine's margin check prices it (a new position, no netting offset); None without a price."""
    quotes = quotes or redis_quotes
    conditions = Conditions(account.group)
    tick = conditions.client_tick(instrument, quotes)
    if tick is None:
        return None
    spec = instrument_spec(instrument)
    price = pricing.open_price(side, tick)
    try:
        margin = pricing.margin(
            spec,
            volume=volume,
            price=price,
            leverage=account.effective_leverage,
            currency=account.currency,
            rates=quotes.mid,
        )
        loss = pricing.pnl(
            spec,
            side=side,
            volume=volume,
            entry=price,
            exit=pricing.close_price(side, tick),
            currency=account.currency,
            rates=quotes.mid,
        )
    except pricing.NoRate:
        return None
    summary = account_summary(account=account, quotes=quotes, conditions=conditions)
    if summary.unpriced:
        return None
    spread_cost = -min(loss, ZERO)
    commission = conditions.commission(instrument, volume)
    equity_after = summary.equity - spread_cost - commission
    return MarginPreview(
        price=price,
        margin=margin,
        spread_cost=spread_cost,
        commission=commission,
        free_margin=summary.free_margin,
        free_margin_after=equity_after - summary.margin - margin,
        margin_level_after=pricing.margin_level(equity_after, summary.margin + margin),
    )


@dataclass(frozen=True)
class LotSize:
    volume: Decimal  # lots, a multiple of the instrument's step, within its limits
    risk: Decimal  # what the stop would lose at that volume, in the account currency
    loss_per_lot: Decimal


def lot_size(
    *,
    account: TradingAccount,
    instrument: Instrument,
    side: str,
    risk: Decimal,
    stop_distance: Decimal,
    quotes: QuoteSource | None = None,
) -> LotSize | None:
    """The largest volume whose loss at a stop `stop_distance` (price units) from the client's open
    price is at most `risk` (account currency), rounded down to the volume step and capped at the
    instrument's maximum; a volume below the minimum is returned as zero. None without a price."""
    quotes = quotes or redis_quotes
    tick = Conditions(account.group).client_tick(instrument, quotes)
    if tick is None:
        return None
    entry = pricing.open_price(side, tick)
    try:
        loss_per_lot = -pricing.pnl(
            instrument_spec(instrument),
            side=side,
            volume=Decimal(1),
            entry=entry,
            exit=entry - stop_distance * pricing.direction(side),
            currency=account.currency,
            rates=quotes.mid,
        )
    except pricing.NoRate:
        return None
    step = instrument.volume_step
    volume = min((risk / loss_per_lot // step) * step, instrument.volume_max)
    if volume < instrument.volume_min:
        volume = ZERO
    return LotSize(volume=volume, risk=volume * loss_per_lot, loss_per_lot=loss_per_lot)


TRADING_STATES_VERSION = "trading_states"  # moved on by brokerage.services.trading_state_set


@dataclass(frozen=True, slots=True)
class Restriction:
    state: str  # a TradingStatus other than active
    target: str  # what set it: "global", "venue sim", "instrument EURUSD", "group standard"
    reason: str


@dataclass(frozen=True, slots=True)
class TradingStates:
    """Every scope whose state is not active, by what it covers."""

    everything: Restriction | None = None
    venues: dict[str, Restriction] = field(default_factory=dict)  # by venue code
    instruments: dict[int, Restriction] = field(default_factory=dict)
    groups: dict[int, Restriction] = field(default_factory=dict)

    def effective(self, *, group_id: int, instrument_id: int, venues: Iterable[str]) -> Restriction | None:
        """The most restrictive state of the scopes an order falls in (None: active)."""
        found = [
            self.everything,
            self.instruments.get(instrument_id),
            self.groups.get(group_id),
            *(self.venues.get(v) for v in venues if v),
        ]
        worst = None
        for restriction in found:
            if restriction is not None and (
                worst is None
                or SEVERITY[TradingStatus(restriction.state)] > SEVERITY[TradingStatus(worst.state)]
            ):
                worst = restriction
        return worst


def _trading_states_load(_: None) -> TradingStates:
    states = TradingStates()
    rows = TradingState.objects.exclude(state=TradingStatus.ACTIVE).select_related(
        "venue", "instrument", "group"
    )
    for row in rows:
        restriction = Restriction(state=row.state, target=row.target, reason=row.reason)
        if row.scope == TradingScope.GLOBAL:
            states = TradingStates(restriction, states.venues, states.instruments, states.groups)
        elif row.venue is not None:
            states.venues[row.venue.code] = restriction
        elif row.instrument_id is not None:
            states.instruments[row.instrument_id] = restriction
        elif row.group_id is not None:
            states.groups[row.group_id] = restriction
    return states


_trading_states: versions.VersionedCache[None, TradingStates] = versions.VersionedCache(
    (TRADING_STATES_VERSION,), _trading_states_load, seed=True
)


def trading_states() -> TradingStates:
    """The kill switch's states, kept per process until one changes (one Redis read per call)."""
    return _trading_states.get(None)


def trading_state_rows() -> QuerySet[TradingState]:
    return TradingState.objects.select_related("venue", "instrument", "group", "set_by")


def house_result_since(*, since: datetime) -> dict[str, Decimal]:
    """The house's realized dealing result since `since` per currency: its B-Book PnL and commission
    revenue postings (negative: a loss)."""
    rows = (
        Posting.objects.filter(
            ledger_account__kind__in=(LedgerAccountKind.PNL, LedgerAccountKind.REVENUE),
            transaction__created_at__gte=since,
        )
        .values_list("ledger_account__currency")
        .annotate(total=Sum("amount"))
    )
    return {currency: total for currency, total in rows}
