"""The payloads of account events on the stream (`account:NUMBER`, docs/stream.md) and of the dealing
engine's Redis notices. Money, prices and volumes are decimal strings. No Django imports."""

from typing import Literal, NotRequired, TypedDict


class AccountPayload(TypedDict):
    """`account`: the account's state after a cash movement, a fill or an operator's change."""

    number: int
    currency: str
    status: str
    balance: str
    group: NotRequired[str]  # after a status, group or leverage change
    leverage: NotRequired[int]  # the effective leverage, with the group
    margin_call: NotRequired[bool]  # False: the account left its margin call


class OrderPayload(TypedDict):
    """`order`: an order placed, pending, routed, filled, modified, cancelled or expired."""

    id: int
    client_order_id: str
    symbol: str
    type: str
    side: str
    volume: str
    price: str | None
    stop_price: str | None
    sl: str | None
    tp: str | None
    time_in_force: str
    expires_at: str | None
    status: str
    reason: str
    close_reason: str
    book: str
    route: str
    close_text: str
    position: int | None
    filled_volume: str
    fill_price: str | None


class PositionPayload(TypedDict):
    """`position`: a position opened, changed (volume, SL/TP, margin, swap) or closed."""

    id: int
    symbol: str
    side: str
    volume: str
    open_price: str
    margin: str
    sl: str | None
    tp: str | None
    status: str
    close_reason: str
    close_price: str | None
    realized_pnl: str
    commission: str
    swap: str


class DealPayload(TypedDict):
    """`deal`: one fill."""

    id: int
    order: int
    position: int
    symbol: str
    side: str
    entry: str
    volume: str
    price: str
    commission: str
    realized_pnl: str
    reason: str
    venue: str
    quote_seq: int | None


class SummaryPayload(TypedDict):
    """An account's summary (`AccountSummary.as_event`), in the account currency."""

    currency: str
    balance: str
    equity: str
    margin: str
    free_margin: str
    margin_level: str | None  # percent; None without margin used
    unrealized_pnl: str
    unpriced: list[str]  # symbols of open positions without a tradable price


class MarginCallPayload(SummaryPayload):
    """`margin_call`: the margin level fell to the group's margin-call level."""

    margin_call_level: str


class StopOutPayload(SummaryPayload):
    """`stop_out`: a position closed by the stop-out; the summary after it."""

    position: int
    margin_level_before: str
    stop_out_level: str


class AccountSnapshotPayload(SummaryPayload):
    """The `snapshot` of `account:NUMBER`: the account, its summary, open positions and pending orders."""

    number: int
    status: str
    positions: list[PositionPayload]
    orders: list[OrderPayload]


AccountEventName = Literal["account", "order", "position", "deal", "margin_call", "stop_out"]
AccountEventPayload = (
    AccountPayload | OrderPayload | PositionPayload | DealPayload | MarginCallPayload | StopOutPayload
)


class AccountNotice(TypedDict):
    """On the Redis pub/sub channels `triggers` and `routed` (brokerage.services.channels): the
    account whose triggers changed, or which has a new routed order."""

    account: int
