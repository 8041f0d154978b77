"""The trading account's row lock, taken first by every dealing call (with what an order needs when asked)."""

import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
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
from ..selectors import Conditions, Exposure, accounts_exposures, group_conditions, instrument_by_symbol

# The house accounts an order's fill posts to, read with the account's lock.
HOUSE_KINDS = (LedgerAccountKind.REVENUE, LedgerAccountKind.PNL)


@cache
def _lock_sql(trading: bool, many: bool = False) -> str:
    """The account row locked and its ledger account; trading: and the house accounts of HOUSE_KINDS
    in the account's currency (a fill's commission and realized P&L post to them), else the account's
    group. Many: the rows of a list of ids, locked in ascending id order (the order every dealer
    locks in)."""
    ledger = sql.quote(LedgerAccount._meta.db_table)
    columns = f"{sql.columns(TradingAccount, 'a')}, {sql.columns(LedgerAccount, 'l')}"
    accounts = sql.quote(TradingAccount._meta.db_table)
    if many:  # each id looked up by its keys, as one id is, whatever the planner makes of a list
        joins = (
            f" FROM unnest(%s::bigint[]) AS u(id) JOIN {accounts} a ON a.id = u.id LEFT JOIN LATERAL"  # noqa: S608
            f" (SELECT * FROM {ledger} WHERE trading_account_id = a.id) l ON true"
        )
    else:
        joins = f" FROM {accounts} a LEFT JOIN {ledger} l ON l.trading_account_id = a.id"
    if trading:
        for _ in HOUSE_KINDS:
            columns += (
                f", (SELECT h.id FROM {ledger} h WHERE h.kind = %s"  # noqa: S608
                " AND h.currency = a.currency AND h.trading_account_id IS NULL)"
            )
    else:
        columns += f", {sql.columns(ClientGroup, 'g')}"
        joins += f" JOIN {sql.quote(ClientGroup._meta.db_table)} g ON g.id = a.group_id"
    if many:
        return f"SELECT {columns}{joins} ORDER BY a.id FOR UPDATE OF a"
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
    house_accounts: dict[str, int]  # the ids of those of HOUSE_KINDS in the account's currency that exist
    exposures: list[Exposure] | None  # read with the lock by a dealer's batch, else None


_ahead = threading.local()


@contextmanager
def locked_ahead(account_ids: Iterable[int]) -> Iterator[None]:
    """Lock the accounts of a dealer's batch in one statement (ascending ids) and read their exposures
    in one more, after it (a statement's subqueries would see the snapshot taken before it waited for
    the locks). In the block, each account's first `_lock_account_trading` takes its row and
    exposures from there instead of two statements of its own; a later one (the account's next order
    in the batch, after the first one wrote) locks and reads again."""
    ids = sorted(set(account_ids))
    rows = sql.execute(_lock_sql(True, many=True), [*HOUSE_KINDS, ids]).fetchall()
    exposures = accounts_exposures(account_ids=ids)
    _ahead.rows = {row[0]: (row, exposures.get(row[0], [])) for row in rows}
    try:
        yield
    finally:
        del _ahead.rows


def _lock_account_trading(account_id: int, symbol: str) -> Locked:
    """`_lock_account` with the house accounts of HOUSE_KINDS in one round trip, and the instrument of
    `symbol` and the group's conditions: those change rarely and come from the process's caches
    (brokerage.selectors, kept under their data versions); the account's group is its conditions'.
    Within `locked_ahead`, the row and exposures it read for the account, once."""
    ahead: dict[int, tuple[Sequence[Any], list[Exposure]]] | None = getattr(_ahead, "rows", None)
    exposures: list[Exposure] | None = None
    if ahead is not None and account_id in ahead:
        row, exposures = ahead.pop(account_id)
    else:
        row = sql.execute(_lock_sql(True), [*HOUSE_KINDS, account_id]).fetchone()
    if row is None:
        raise TradingAccount.DoesNotExist(f"No trading account {account_id}.")
    account = _build_account(row)
    instrument = instrument_by_symbol(symbol)
    if instrument is None:
        raise ServiceError("unknown_symbol", f"No instrument {symbol!r}.", status_code=404)
    conditions = group_conditions(account.group_id)
    account.group = conditions.group
    houses = row[len(row) - len(HOUSE_KINDS) :]
    house_accounts: dict[str, int] = {
        kind: pk for kind, pk in zip(HOUSE_KINDS, houses, strict=True) if pk is not None
    }
    return Locked(account, instrument, conditions, house_accounts, exposures)


def _lock_account(account_id: int) -> TradingAccount:
    """The account row, locked until the transaction ends, with its group and ledger account (not
    locked) from the same round trip."""
    row = sql.execute(_lock_sql(False), [account_id]).fetchone()
    if row is None:
        raise TradingAccount.DoesNotExist(f"No trading account {account_id}.")
    account = _build_account(row)
    account.group = sql.build(ClientGroup, row, sql.width(TradingAccount) + sql.width(LedgerAccount))
    return account
