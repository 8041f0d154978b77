from django.urls import path
from rest_framework.routers import SimpleRouter

from alerts import api
from alerts.api import IndicatorListView

router = SimpleRouter(trailing_slash=False)
router.register("alert-rules", api.AlertRuleViewSet, basename="alert-rule")
router.register("alert-channels", api.NotificationChannelViewSet, basename="alert-channel")
router.register("alert-events", api.AlertEventViewSet, basename="alert-event")

urlpatterns = [
    path("indicators/<str:symbol>", IndicatorListView.as_view(), name="indicator-list"),
    path("signals", api.SignalListView.as_view(), name="signal-list"),
    *router.urls,
]
