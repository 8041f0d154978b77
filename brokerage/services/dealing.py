"""The locked dealing core: fills, opens, closes, commissions, swaps due before a volume change,
negative balance protection and re-margining, all under the account lock of the calling service."""

from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db.models import F
from django.utils import timezone

from kernel import sql
from kernel.errors import ServiceError
from marketdata.models import Instrument
from users.models import User

from .. import pricing
from ..models import (
    Deal,
    DealEntry,
    LedgerAccountKind,
    MarginMode,
    Order,
    OrderStatus,
    OrderType,
    Position,
    PositionStatus,
    Side,
    TradingAccount,
    TransactionKind,
)
from ..quotes import QuoteSource
from ..selectors import (
    LEVEL,
    AccountSummary,
    Conditions,
    Exposure,
    account_summary,
    instrument_spec,
    open_positions,
    remarked_margin,
)
from .checks import PRICE_DIGITS, ZERO, _client_tick
from .events import Outbox
from .ledger import _ledger_rows, _post_client, house_account


def _remargin(d: "_Dealing", *, refuse_stop_out: bool = True) -> bool:
    """Recompute the margin stored on the open positions (at their open price) at the account's (new)
    group and leverage; whether any changed. The account's margin is re-marked at current prices in
    its summary whatever the stored figure.

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
        after = d.account.margin_reserved + sum((p.margin for p in d.positions), ZERO)
        summary = d.summary()  # re-marked at the new leverage
        level = summary.margin_level
        if after > before and level is not None and level <= group.stop_out_level:
            raise ServiceError(
                "margin_level_too_low",
                f"The margin would rise to {summary.margin} {d.currency}: margin level "
                f"{level.quantize(LEVEL)} % is at or below the stop-out level {group.stop_out_level} %.",
                status_code=409,
            )
    now = timezone.now()
    for position in changed:
        Position.objects.filter(pk=position.pk, status=PositionStatus.OPEN).update(
            margin=position.margin, updated_at=now
        )
        d.outbox.add("position", position.as_event())
    return True


class _Dealing:
    """What one locked dealing step works with. The open positions are loaded when a step needs them
    one by one (netting, closing, stop-out); a margin check needs only the account's exposures."""

    def __init__(
        self,
        account: TradingAccount,
        quotes: QuoteSource,
        conditions: Conditions | None = None,
        house_accounts: dict[str, int] | None = None,
        exposures: list[Exposure] | None = None,
    ) -> None:
        self.account = account
        self.conditions = conditions or Conditions(account.group)
        # House ledger account ids by kind, in the account's currency: read with the lock when the
        # caller had them, else (or when one did not exist yet) looked up on first use.
        self.house_accounts = dict(house_accounts or {})
        self.quotes = quotes
        self.outbox = Outbox(account)
        self._positions: list[Position] | None = None
        # Read with the lock (a dealer's batch, services.locks.locked_ahead): true until the step's
        # first write, so the first summary takes them and any later one reads again.
        self._exposures = exposures

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
        exposures, self._exposures = self._exposures, None
        totals = account_summary(
            account=self.account,
            quotes=self.quotes,
            positions=self._positions,
            conditions=self.conditions,
            exposures=exposures if self._positions is None else None,
        )
        if totals.unpriced:
            raise ServiceError(
                "no_price",
                f"No tradable price for {', '.join(totals.unpriced)}: margin cannot be checked.",
                status_code=503,
            )
        return totals

    def house(self, kind: str) -> int:
        """The id of the house ledger account of `kind` in the account's currency."""
        pk = self.house_accounts.get(kind)
        if pk is None:
            pk = self.house_accounts[kind] = house_account(kind=kind, currency=self.currency).pk
        return pk

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


def _remarked(d: _Dealing, position: Position, volume: Decimal) -> Decimal:
    """The re-marked margin of `volume` lots of an open position, as the account summary counts it."""
    try:
        return remarked_margin(
            position.instrument,
            position.side,
            volume,
            tick=_client_tick(position.instrument, d.conditions, d.quotes),
            leverage=d.account.effective_leverage,
            currency=d.currency,
            rates=d.quotes.mid,
        )
    except pricing.NoRate as exc:
        raise ServiceError("no_price", f"{exc}.", status_code=503) from exc


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
    released = ZERO
    if existing is not None and close_volume:
        # What the summary holds for the closed part: re-marked at the current price.
        released = _remarked(d, existing, close_volume)
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
    if order._state.adding and existing is None:
        # A new order opening a new position: every row in one statement.
        deal = _open_new(
            d, order, volume, price, reason=reason, venue=venue, quote_seq=quote_seq, external_id=external_id
        )
        if order.sl is not None or order.tp is not None:
            d.outbox.triggers_changed = True
        return [deal]
    if not (order._state.adding and close_volume):  # else the close writes it, with its own rows
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
        position = sql.new(
            Position,
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
    deal = sql.new(
        Deal,
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


def _open_new(
    d: _Dealing,
    order: Order,
    volume: Decimal,
    price: Decimal,
    *,
    reason: str,
    venue: str,
    quote_seq: int | None,
    external_id: str,
) -> Deal:
    """Fill a new order with a new position: the order, the position, the deal and the commission's
    balanced ledger transaction (with the client's balance) written in one statement
    (kernel.sql.insert_linked); the database's ledger rules check it at commit as any other."""
    instrument = order.instrument
    now = timezone.now()
    commission = pricing.money(d.conditions.commission(instrument, volume), d.currency)
    position = sql.new(
        Position,
        account=d.account,
        instrument=instrument,
        side=order.side,
        volume=volume,
        open_price=price,
        margin=pricing.money(d.margin_for(instrument, volume, price), d.currency),
        sl=order.sl,
        tp=order.tp,
        commission=-commission,
        opened_at=now,
    )
    deal = sql.new(
        Deal,
        account=d.account,
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
    steps: list[sql.Step] = [([order], {}), ([position], {}), ([deal], {"order": 0, "position": 1})]
    additions: list[sql.Addition] = []
    if commission:
        house = d.house(LedgerAccountKind.REVENUE)
        client = d.account.ledger_account
        txn, postings = _ledger_rows(
            kind=TransactionKind.COMMISSION,
            currency=d.currency,
            postings=[(client.pk, client.currency, -commission), (house, d.currency, commission)],
        )
        steps += [([txn], {"order": 0, "position": 1, "deal": 2}), (postings, {"transaction": 3})]
        additions.append((TradingAccount, d.account.pk, {"balance": -commission}))
    sql.insert_linked(steps, additions)
    d.opened(position)
    d.outbox.add("order", order.as_event())
    if commission:
        d.account.balance -= commission
        d.outbox.add("account", d.account.as_event())
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
    """Close `volume` of an open position at the client price `price`, exactly once: the position's
    conditional change first (nothing else is written when it is no longer open as read), then in
    one statement (kernel.sql.insert_linked, as a new position's rows) the deal, the balanced ledger
    transactions of its realized P&L and commission with the client's balance, and a new order."""
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
    values: dict[str, Any] = {"volume": remaining, "close_price": price, "updated_at": now}
    if remaining:
        values["margin"] = pricing.money(position.margin * remaining / position.volume, d.currency)
    else:
        values.update(margin=ZERO, status=PositionStatus.CLOSED, close_reason=reason, closed_at=now)
    won = sql.update(
        Position,
        position.pk,
        values=values,
        add={"realized_pnl": realized, "commission": -commission},
        expect={"status": PositionStatus.OPEN, "volume": position.volume},
    )
    if won != 1:
        raise ServiceError("position_not_open", f"Position {position.pk} is no longer open.", status_code=409)
    deal = sql.new(
        Deal,
        account=d.account,
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
    steps: list[sql.Step] = []
    order_link: dict[str, int] = {}
    if order._state.adding:
        steps.append(([order], {}))
        order_link = {"order": 0}
    else:
        deal.order = order
    steps.append(([deal], order_link))
    links = {**order_link, "deal": len(steps) - 1}
    client = d.account.ledger_account
    balance = ZERO
    for kind, amount, house_kind in (
        (TransactionKind.REALIZED_PNL, realized, LedgerAccountKind.PNL),
        (TransactionKind.COMMISSION, -commission, LedgerAccountKind.REVENUE),
    ):
        if not amount:
            continue
        house = d.house(house_kind)
        txn, postings = _ledger_rows(
            kind=kind,
            currency=d.currency,
            postings=[(client.pk, client.currency, amount), (house, d.currency, -amount)],
            order=None if order._state.adding else order,
            position=position,
        )
        steps += [([txn], links), (postings, {"transaction": len(steps)})]
        balance += amount
    sql.insert_linked(steps, [(TradingAccount, d.account.pk, {"balance": balance})] if balance else [])
    if order_link:
        d.outbox.add("order", order.as_event())
    position.volume, position.close_price, position.margin = remaining, price, values["margin"]
    position.realized_pnl += realized
    position.commission -= commission
    if not remaining:
        position.status, position.close_reason, position.closed_at = PositionStatus.CLOSED, reason, now
        d.closed(position)
    if balance:
        d.account.balance += balance
        d.outbox.add("account", d.account.as_event())
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
    return sql.new(
        Order,
        account=d.account,
        instrument=position.instrument,
        type=OrderType.MARKET,
        side=pricing.opposite(position.side),
        volume=volume,
        filled_volume=volume,
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
    return _close(  # which writes the order with the deal
        d, position, volume, price, order=order, reason=reason, venue=tick.venue, quote_seq=tick.seq
    )


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
