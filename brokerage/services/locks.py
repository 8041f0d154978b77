"""The trading account's row lock, taken first by every dealing call (with the instrument when asked)."""

from collections.abc import Sequence
from functools import cache
from typing import Any

from kernel import sql
from kernel.errors import ServiceError
from marketdata.models import Instrument

from ..models import (
    ClientGroup,
    LedgerAccount,
    TradingAccount,
)


@cache
def _lock_sql(with_instrument: bool) -> str:
    """The account row locked, its group and ledger account; with_instrument: and the instrument of
    the symbol given first (LEFT JOIN: an unknown symbol still locks and reads the account)."""
    instrument = f", {sql.columns(Instrument, 'i')}" if with_instrument else ""
    return (
        f"SELECT {sql.columns(TradingAccount, 'a')}, {sql.columns(ClientGroup, 'g')},"  # noqa: S608
        f" {sql.columns(LedgerAccount, 'l')}{instrument}"
        f" FROM {sql.quote(TradingAccount._meta.db_table)} a"
        f" JOIN {sql.quote(ClientGroup._meta.db_table)} g ON g.id = a.group_id"
        f" LEFT JOIN {sql.quote(LedgerAccount._meta.db_table)} l ON l.trading_account_id = a.id"
        + (f" LEFT JOIN {sql.quote(Instrument._meta.db_table)} i ON i.symbol = %s" if with_instrument else "")
        + " WHERE a.id = %s FOR UPDATE OF a"
    )


def _locked_row(account_id: int, symbol: str | None) -> tuple[TradingAccount, Sequence[Any], int]:
    params: list[Any] = [account_id] if symbol is None else [symbol, account_id]
    row = sql.execute(_lock_sql(symbol is not None), params).fetchone()
    if row is None:
        raise TradingAccount.DoesNotExist(f"No trading account {account_id}.")
    account = sql.build(TradingAccount, row)
    at = sql.width(TradingAccount)
    account.group = sql.build(ClientGroup, row, at)
    at += sql.width(ClientGroup)
    if row[at] is not None:
        account.ledger_account = sql.build(LedgerAccount, row, at)
    return account, row, at + sql.width(LedgerAccount)


def _lock_account_trading(account_id: int, symbol: str) -> tuple[TradingAccount, Instrument]:
    """`_lock_account` and the instrument of `symbol`, in one round trip (an order needs both)."""
    account, row, at = _locked_row(account_id, symbol)
    if row[at] is None:
        raise ServiceError("unknown_symbol", f"No instrument {symbol!r}.", status_code=404)
    return account, sql.build(Instrument, row, at)


def _lock_account(account_id: int) -> TradingAccount:
    """The account row, locked until the transaction ends, with its group and ledger account (not
    locked) from the same round trip."""
    return _locked_row(account_id, None)[0]
