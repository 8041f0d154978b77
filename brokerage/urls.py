from django.urls import path

from . import api

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
]
