from django.urls import path, re_path

from alerts import api

# Object ids as DRF's routers match them: a malformed one is a 404 in the API's error shape.
PK = r"(?P<pk>[^/.]+)"

urlpatterns = [
    path("indicators/<str:symbol>", api.IndicatorListView.as_view(), name="indicator-list"),
    path("signals", api.SignalListView.as_view(), name="signal-list"),
    path("alert-rules", api.AlertRuleListView.as_view(), name="alert-rule-list"),
    re_path(rf"^alert-rules/{PK}$", api.AlertRuleView.as_view(), name="alert-rule-detail"),
    path("alert-channels", api.NotificationChannelListView.as_view(), name="alert-channel-list"),
    re_path(rf"^alert-channels/{PK}$", api.NotificationChannelView.as_view(), name="alert-channel-detail"),
    re_path(
        rf"^alert-channels/{PK}/test$", api.NotificationChannelTestView.as_view(), name="alert-channel-test"
    ),
    path("me/settings", api.SettingsView.as_view(), name="me-settings"),
    path("alert-events", api.AlertEventListView.as_view(), name="alert-event-list"),
    re_path(rf"^alert-events/{PK}$", api.AlertEventView.as_view(), name="alert-event-detail"),
]
