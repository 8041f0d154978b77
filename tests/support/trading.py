"""Trading accounts for tests, opened and funded the way the desk does: through the services."""

from decimal import Decimal

from brokerage import services
from brokerage.models import ClientGroup, TradingAccount
from users.models import User


def open_account(owner: User, group: ClientGroup, balance: str = "5000") -> TradingAccount:
    """An account of `group` for `owner`, with `balance` deposited (a balanced ledger transaction)."""
    account = services.account_open(owner=owner, group=group)
    if Decimal(balance):
        services.account_deposit(account=account, amount=Decimal(balance))  # sets account.balance too
    return account
