"""The trading account's row lock, taken first by every dealing call (with what an order needs when asked)."""

from collections.abc import Sequence
from functools import cache
from typing import Any, NamedTuple

from kernel import sql
from kernel.errors import ServiceError
from marketdata.models import Instrument

from ..models import (
    ClientGroup,
    GroupInstrument,
    LedgerAccount,
    LedgerAccountKind,
    TradingAccount,
)
from ..selectors import Conditions


@cache
def _lock_sql(with_instrument: bool) -> str:
    """The account row locked, its group and ledger account; with_instrument: and the instrument of
    the symbol given first (LEFT JOIN: an unknown symbol still locks and reads the account), the
    house revenue account of the account's currency (commissions post to it), and the group's
    trading conditions, one row each (the account's columns repeat; one row when it has none)."""
    columns = ", ".join(
        (sql.columns(TradingAccount, "a"), sql.columns(ClientGroup, "g"), sql.columns(LedgerAccount, "l"))
    )
    joins = (
        f" FROM {sql.quote(TradingAccount._meta.db_table)} a"
        f" JOIN {sql.quote(ClientGroup._meta.db_table)} g ON g.id = a.group_id"
        f" LEFT JOIN {sql.quote(LedgerAccount._meta.db_table)} l ON l.trading_account_id = a.id"
    )
    if with_instrument:
        ledger = sql.quote(LedgerAccount._meta.db_table)
        columns += (
            f", {sql.columns(Instrument, 'i')}, (SELECT h.id FROM {ledger} h WHERE h.kind = %s"  # noqa: S608
            " AND h.currency = a.currency AND h.trading_account_id IS NULL)"
            f", {sql.columns(GroupInstrument, 'gi')}"
        )
        joins += (
            f" LEFT JOIN {sql.quote(Instrument._meta.db_table)} i ON i.symbol = %s"
            f" LEFT JOIN {sql.quote(GroupInstrument._meta.db_table)} gi ON gi.group_id = a.group_id"
        )
    return f"SELECT {columns}{joins} WHERE a.id = %s FOR UPDATE OF a"


def _build_account(row: Sequence[Any]) -> TradingAccount:
    account = sql.build(TradingAccount, row)
    at = sql.width(TradingAccount)
    account.group = sql.build(ClientGroup, row, at)
    at += sql.width(ClientGroup)
    if row[at] is not None:
        account.ledger_account = sql.build(LedgerAccount, row, at)
    return account


class Locked(NamedTuple):
    """What an order needs under the account lock, read in the statement that takes it."""

    account: TradingAccount
    instrument: Instrument
    conditions: Conditions
    revenue_account_id: int | None  # the house revenue account in the account's currency


def _lock_account_trading(account_id: int, symbol: str) -> Locked:
    """`_lock_account`, the instrument of `symbol`, the group's conditions and the house revenue
    account, in one round trip (an order needs them all)."""
    rows = sql.execute(_lock_sql(True), [LedgerAccountKind.REVENUE, symbol, account_id]).fetchall()
    if not rows:
        raise TradingAccount.DoesNotExist(f"No trading account {account_id}.")
    account = _build_account(rows[0])
    at = sql.width(TradingAccount) + sql.width(ClientGroup) + sql.width(LedgerAccount)
    if rows[0][at] is None:
        raise ServiceError("unknown_symbol", f"No instrument {symbol!r}.", status_code=404)
    instrument = sql.build(Instrument, rows[0], at)
    at += sql.width(Instrument)
    house = rows[0][at]
    at += 1
    settings = [sql.build(GroupInstrument, row, at) for row in rows if row[at] is not None]
    return Locked(account, instrument, Conditions(account.group, settings), house)


def _lock_account(account_id: int) -> TradingAccount:
    """The account row, locked until the transaction ends, with its group and ledger account (not
    locked) from the same round trip."""
    row = sql.execute(_lock_sql(False), [account_id]).fetchone()
    if row is None:
        raise TradingAccount.DoesNotExist(f"No trading account {account_id}.")
    return _build_account(row)
