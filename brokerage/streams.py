"""The `account:NUMBER` stream channel: the owner's, and staff holding brokerage.view_tradingaccount. The
snapshot is the account with its summary, open positions and pending orders; the engine's services
then publish `order`, `position`, `deal`, `account`, `margin_call` and `stop_out` events to the group
after commit."""

from typing import Any, cast

from .models import Order, OrderStatus, TradingAccount
from .payloads import AccountSnapshotPayload
from .selectors import account_summary, open_positions


class AccountChannel:
    def _account(self, user: Any, arg: str) -> TradingAccount | None:
        if not arg.isdigit() or not getattr(user, "is_authenticated", False):
            return None
        accounts = TradingAccount.objects.select_related("group").filter(number=int(arg))
        if not (user.is_staff and user.has_perm("brokerage.view_tradingaccount")):
            accounts = accounts.filter(owner=user)
        return accounts.first()

    def group(self, user: Any, arg: str) -> str | None:
        account = self._account(user, arg)
        return account.stream_group if account else None

    def snapshot(self, user: Any, arg: str) -> AccountSnapshotPayload | None:
        account = self._account(user, arg)
        if account is None:
            return None
        positions = open_positions(account=account)
        orders = Order.objects.filter(account=account, status=OrderStatus.PENDING).select_related(
            "instrument"
        )
        # The account's fields first, then its summary's (the same currency and balance).
        return cast(
            AccountSnapshotPayload,
            {
                **account.as_event(),
                **account_summary(account=account, positions=positions).as_event(),
                "positions": [p.as_event() for p in positions],
                "orders": [o.as_event() for o in orders.order_by("id")],
            },
        )
