from django.urls import path

from . import api, backoffice

urlpatterns = [
    path("accounts", api.AccountListView.as_view(), name="accounts"),
    path("accounts/<int:number>", api.AccountDetailView.as_view(), name="account"),
    path("accounts/<int:number>/orders", api.OrderListView.as_view(), name="account-orders"),
    path("accounts/<int:number>/orders/<int:order_id>", api.OrderView.as_view(), name="account-order"),
    path(
        "accounts/<int:number>/orders/<int:order_id>/cancel",
        api.OrderCancelView.as_view(),
        name="account-order-cancel",
    ),
    path("accounts/<int:number>/positions", api.PositionListView.as_view(), name="account-positions"),
    path(
        "accounts/<int:number>/positions/close",
        api.PositionsCloseView.as_view(),
        name="account-positions-close",
    ),
    path(
        "accounts/<int:number>/positions/<int:position_id>",
        api.PositionView.as_view(),
        name="account-position",
    ),
    path(
        "accounts/<int:number>/positions/<int:position_id>/close",
        api.PositionCloseView.as_view(),
        name="account-position-close",
    ),
    path("accounts/<int:number>/deals", api.DealListView.as_view(), name="account-deals"),
    path("accounts/<int:number>/ledger", api.LedgerView.as_view(), name="account-ledger"),
    path(
        "accounts/<int:number>/margin-preview", api.MarginPreviewView.as_view(), name="account-margin-preview"
    ),
    path(
        "accounts/<int:number>/lot-calculator", api.LotCalculatorView.as_view(), name="account-lot-calculator"
    ),
    path("backoffice/accounts", backoffice.AccountOpenView.as_view(), name="backoffice-accounts"),
    path(
        "backoffice/accounts/<int:number>/deposit",
        backoffice.DepositView.as_view(),
        name="backoffice-deposit",
    ),
    path(
        "backoffice/accounts/<int:number>/withdraw",
        backoffice.WithdrawView.as_view(),
        name="backoffice-withdraw",
    ),
    path(
        "backoffice/accounts/<int:number>/adjust", backoffice.AdjustView.as_view(), name="backoffice-adjust"
    ),
    path("backoffice/accounts/<int:number>/bonus", backoffice.BonusView.as_view(), name="backoffice-bonus"),
    path(
        "backoffice/accounts/<int:number>/status",
        backoffice.AccountStatusView.as_view(),
        name="backoffice-status",
    ),
    path(
        "backoffice/accounts/<int:number>/group",
        backoffice.AccountGroupView.as_view(),
        name="backoffice-group",
    ),
    path(
        "backoffice/accounts/<int:number>/leverage",
        backoffice.AccountLeverageView.as_view(),
        name="backoffice-leverage",
    ),
    path(
        "backoffice/accounts/<int:number>/reset-password",
        backoffice.PasswordResetView.as_view(),
        name="backoffice-reset-password",
    ),
    path("backoffice/cash-operations", backoffice.CashOperationListView.as_view(), name="backoffice-cash"),
    path(
        "backoffice/trading-states", backoffice.TradingStateView.as_view(), name="backoffice-trading-states"
    ),
    path(
        "backoffice/cash-operations/<int:operation_id>/approve",
        backoffice.CashApproveView.as_view(),
        name="backoffice-cash-approve",
    ),
    path(
        "backoffice/cash-operations/<int:operation_id>/reject",
        backoffice.CashRejectView.as_view(),
        name="backoffice-cash-reject",
    ),
]
