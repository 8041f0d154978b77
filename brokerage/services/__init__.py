"""The dealing engine: every write to accounts, orders, positions, deals and the ledger.

Rules every function here keeps:
- One database transaction per call, holding the trading account's row lock (select_for_update) for
  all of it, so an account's fills, closes and cash movements are serialised and race-free. Only the
  account row is locked: house ledger accounts keep no cached balance, so fills on different
  accounts never wait for each other.
- Prices come from a healthy selected quote (brokerage.quotes); no quote, no fill.
- State transitions that must happen once (an order filling, a position closing) are conditional
  UPDATEs (`... WHERE status = 'open'`); the loser of a race gets nothing done.
- Every balance change is a balanced ledger transaction (ledger_post); the database rejects an
  unbalanced one at commit and any change to a posting.
- Account events go out after commit on `account.<number>` (see Outbox).

Errors are kernel.errors.ServiceError with a machine-readable code.
"""

from kernel.errors import ServiceError

from .accounts import (
    GroupRemargin,
    account_adjust,
    account_bonus,
    account_deposit,
    account_group_change,
    account_leverage_set,
    account_open,
    account_status_set,
    account_withdraw,
    group_positions_remargin,
)
from .backoffice import client_account_open, client_password_reset
from .cash import (
    cash_operation_approve,
    cash_operation_create,
    cash_operation_reject,
    four_eyes_threshold,
)
from .channels import ROUTED_CHANNEL, TRIGGERS_CHANNEL, routed_channel, triggers_channel
from .checks import PRICE_DIGITS, SYSTEM_REASONS, ZERO, trading_state_refusal
from .events import PUBLISH_BATCH_MAX, Outbox
from .groups import group_instruments_save, group_save, groups_delete
from .ledger import house_account, ledger_post
from .orders import (
    KEEP,
    order_cancel,
    order_fill,
    order_modify,
    order_routed_end,
    order_submit,
    order_trigger,
    orders_expire,
)
from .positions import (
    BULK_FILTERS,
    account_margin_check,
    position_close,
    position_modify,
    position_trigger,
    positions_close_bulk,
)
from .swaps import swaps_accrue
from .trading_states import trading_state_set, trading_states_watch

__all__ = [
    "BULK_FILTERS",
    "KEEP",
    "PRICE_DIGITS",
    "PUBLISH_BATCH_MAX",
    "ROUTED_CHANNEL",
    "SYSTEM_REASONS",
    "TRIGGERS_CHANNEL",
    "ZERO",
    "GroupRemargin",
    "Outbox",
    "ServiceError",
    "account_adjust",
    "account_bonus",
    "account_deposit",
    "account_group_change",
    "account_leverage_set",
    "account_margin_check",
    "account_open",
    "account_status_set",
    "account_withdraw",
    "cash_operation_approve",
    "cash_operation_create",
    "cash_operation_reject",
    "client_account_open",
    "client_password_reset",
    "four_eyes_threshold",
    "group_instruments_save",
    "group_positions_remargin",
    "group_save",
    "groups_delete",
    "house_account",
    "ledger_post",
    "order_cancel",
    "order_fill",
    "order_modify",
    "order_routed_end",
    "order_submit",
    "order_trigger",
    "orders_expire",
    "position_close",
    "position_modify",
    "position_trigger",
    "positions_close_bulk",
    "routed_channel",
    "swaps_accrue",
    "trading_state_refusal",
    "trading_state_set",
    "trading_states_watch",
    "triggers_channel",
]
