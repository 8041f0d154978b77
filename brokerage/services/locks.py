"""The trading account's row lock, taken first by every dealing call (with what an order needs when asked)."""

from collections.abc import Sequence
from functools import cache
from typing import Any, NamedTuple

from kernel import sql
from kernel.errors import ServiceError
from marketdata.models import Instrument

from ..models import (
    ClientGroup,
    LedgerAccount,
    LedgerAccountKind,
    TradingAccount,
)
from ..selectors import Conditions, group_conditions, instrument_by_symbol


@cache
def _lock_sql(trading: bool) -> str:
    """The account row locked and its ledger account; trading: and the house revenue account of the
    account's currency (commissions post to it), else the account's group."""
    ledger = sql.quote(LedgerAccount._meta.db_table)
    columns = f"{sql.columns(TradingAccount, 'a')}, {sql.columns(LedgerAccount, 'l')}"
    joins = (
        f" FROM {sql.quote(TradingAccount._meta.db_table)} a"
        f" LEFT JOIN {ledger} l ON l.trading_account_id = a.id"
    )
    if trading:
        columns += (
            f", (SELECT h.id FROM {ledger} h WHERE h.kind = %s"  # noqa: S608
            " AND h.currency = a.currency AND h.trading_account_id IS NULL)"
        )
    else:
        columns += f", {sql.columns(ClientGroup, 'g')}"
        joins += f" JOIN {sql.quote(ClientGroup._meta.db_table)} g ON g.id = a.group_id"
    return f"SELECT {columns}{joins} WHERE a.id = %s FOR UPDATE OF a"


def _build_account(row: Sequence[Any]) -> TradingAccount:
    account = sql.build(TradingAccount, row)
    at = sql.width(TradingAccount)
    if row[at] is not None:
        account.ledger_account = sql.build(LedgerAccount, row, at)
    return account


class Locked(NamedTuple):
    """What an order needs under the account lock."""

    account: TradingAccount
    instrument: Instrument
    conditions: Conditions
    revenue_account_id: int | None  # the house revenue account in the account's currency


def _lock_account_trading(account_id: int, symbol: str) -> Locked:
    """`_lock_account` with the house revenue account in one round trip, and the instrument of
    `symbol` and the group's conditions: those change rarely and come from the process's caches
    (brokerage.selectors, kept under their data versions); the account's group is its conditions'."""
    row = sql.execute(_lock_sql(True), [LedgerAccountKind.REVENUE, account_id]).fetchone()
    if row is None:
        raise TradingAccount.DoesNotExist(f"No trading account {account_id}.")
    account = _build_account(row)
    instrument = instrument_by_symbol(symbol)
    if instrument is None:
        raise ServiceError("unknown_symbol", f"No instrument {symbol!r}.", status_code=404)
    conditions = group_conditions(account.group_id)
    account.group = conditions.group
    return Locked(account, instrument, conditions, row[-1])


def _lock_account(account_id: int) -> TradingAccount:
    """The account row, locked until the transaction ends, with its group and ledger account (not
    locked) from the same round trip."""
    row = sql.execute(_lock_sql(False), [account_id]).fetchone()
    if row is None:
        raise TradingAccount.DoesNotExist(f"No trading account {account_id}.")
    account = _build_account(row)
    account.group = sql.build(ClientGroup, row, sql.width(TradingAccount) + sql.width(LedgerAccount))
    return account
