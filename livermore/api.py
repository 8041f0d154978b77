"""The /api/v1/ URL tree: each app contributes its urls module."""

from django.urls import include, path

urlpatterns = [
    path("", include("marketdata.urls")),
    path("", include("alerts.urls")),
    path("", include("portfolio.urls")),
    path("", include("livermore.users.urls")),
    path("", include("brokerage.urls")),
]
