import time
from typing import Any, cast

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html

from alerts import rules, selectors, services
from alerts.models import (
    METRICS_PERMISSION,
    SIGNALS_PERMISSION,
    AlertEvent,
    AlertPreferences,
    AlertRule,
    AlertSeriesState,
    IndicatorValue,
    Notification,
    NotificationChannel,
    SystemEventRoute,
    SystemNotice,
)
from alerts.signal_grid import STAGES, TIMEFRAMES
from kernel.admin import permission_check, requires
from kernel.errors import ServiceError
from kernel.metrics import metrics_families
from marketdata.forms import CandleChartForm
from marketdata.models import Instrument, Timeframe
from users.admin import UserOwnedInline
from users.models import User, timezone_validate
from users.selectors import user_settings

OWN_SETTINGS_PERMISSION = "users.change_own_settings"


@admin.register(IndicatorValue)
class IndicatorValueAdmin(admin.ModelAdmin[IndicatorValue]):
    list_display = (
        "instrument",
        "timeframe",
        "name",
        "start",
        "value",
        "signal",
        "histogram",
        "stage",
        "n_eff",
        "span",
        "liquidity",
    )
    list_filter = ("timeframe", "name", "instrument")
    list_select_related = ("instrument",)
    date_hierarchy = "start"
    search_fields = ("instrument__symbol", "name")

    @admin.display(description="MACD-V stage")
    def stage(self, obj: IndicatorValue) -> str:
        return obj.stage or "-"

    @admin.display(description="liquidity")
    def liquidity(self, obj: IndicatorValue) -> str:
        diagnostics = obj.diagnostics
        return diagnostics.liquidity if diagnostics else "-"

    def has_add_permission(self, request: object) -> bool:
        return False

    def has_change_permission(self, request: object, obj: object = None) -> bool:
        return False

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view
        return [
            path("signals/", view(self.signals), name="alerts_signals"),
            path("signals/chart/", view(self.signal_chart), name="alerts_signal_chart"),
            *super().get_urls(),
        ]

    @requires(SIGNALS_PERMISSION)
    def signals(self, request: HttpRequest) -> HttpResponse:
        """The grid of instruments by timeframe coloured by stage, live from the indicators stream."""
        rows: dict[str, dict[str, Any]] = {}
        for signal in selectors.signal_list():
            row = rows.setdefault(signal.symbol, {"symbol": signal.symbol, "bias": signal.bias, "cells": []})
            row["cells"].append(signal)
        context = {
            **self.admin_site.each_context(request),
            "title": "Signals",
            "timeframes": TIMEFRAMES,
            "stages": STAGES,
            "rows": list(rows.values()),
        }
        return TemplateResponse(request, "admin/alerts/signals.html", context)

    @requires(SIGNALS_PERMISSION)
    def signal_chart(self, request: HttpRequest) -> HttpResponse:
        """Candles, EMAs, volume and MACD-V of one instrument for a range, drawn in the browser from
        the candles and indicators APIs."""
        form = CandleChartForm(request.GET or None)
        chart = form.chart() if form.is_valid() else None
        context = {
            **self.admin_site.each_context(request),
            "title": f"Chart {chart['symbol']} {chart['tf']}" if chart else "Chart",
            "form": form,
            "chart": chart,
        }
        return TemplateResponse(
            request,
            "admin/alerts/signal_chart.html",
            context,
            status=200 if chart or not form.is_bound else 400,
        )


class NotificationChannelForm(forms.ModelForm[NotificationChannel]):
    """The webhook URL is write-only: never shown; leaving the box empty keeps the stored one."""

    new_webhook_url = forms.CharField(
        required=False,
        label="Webhook URL",
        widget=forms.PasswordInput(render_value=False),
        help_text="https://discord.com/api/webhooks/{id}/{token}. Leave empty to keep the stored one.",
    )

    class Meta:
        model = NotificationChannel
        fields = ("user", "name", "kind", "enabled")

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        url = cleaned.get("new_webhook_url", "").strip()
        if url:
            try:
                services.webhook_url_check(url)
            except ServiceError as exc:
                self.add_error("new_webhook_url", exc.message)
        elif self.instance.pk is None:
            self.add_error("new_webhook_url", "Required.")
        return cleaned


class AlertPreferencesForm(forms.ModelForm[AlertPreferences]):
    default_timeframes = forms.MultipleChoiceField(
        choices=Timeframe.choices, widget=forms.CheckboxSelectMultiple, required=False
    )

    class Meta:
        model = AlertPreferences
        fields = ("default_symbols", "default_timeframes", "default_channel")


class AlertPreferencesInline(UserOwnedInline):
    """On the user's admin page (settings.USER_ADMIN_INLINES): their default channel is one of theirs."""

    model = AlertPreferences
    form = AlertPreferencesForm
    filter_horizontal = ("default_symbols",)

    def get_formset(self, request: HttpRequest, obj: Any = None, **kwargs: Any) -> Any:
        formset = super().get_formset(request, obj, **kwargs)
        if "default_channel" in formset.form.base_fields:  # not for a read-only view
            channels = cast(forms.ModelChoiceField, formset.form.base_fields["default_channel"])
            channels.queryset = (
                NotificationChannel.objects.filter(user=obj) if obj else NotificationChannel.objects.none()
            )
        return formset


class MySettingsForm(forms.Form):
    """The operator's own settings: the console and their alerts use them."""

    timezone = forms.CharField(
        max_length=64, help_text="IANA name, e.g. Europe/London: the console shows times in it"
    )
    quiet_hours_start = forms.TimeField(required=False, help_text="Alerts from this time are held ...")
    quiet_hours_end = forms.TimeField(
        required=False, help_text="... until this time (past midnight if earlier)"
    )
    default_symbols = forms.ModelMultipleChoiceField(
        Instrument.objects.order_by("symbol"), to_field_name="symbol", required=False,
        help_text="The signals grid's default instruments",
    )  # fmt: skip
    default_timeframes = forms.MultipleChoiceField(
        choices=Timeframe.choices, widget=forms.CheckboxSelectMultiple, required=False
    )
    default_channel = forms.ModelChoiceField(
        NotificationChannel.objects.none(), required=False, help_text="Where your new alert rules go"
    )

    def __init__(self, *args: Any, user: User, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        channels = cast(forms.ModelChoiceField, self.fields["default_channel"])
        channels.queryset = selectors.notification_channels_for_user(user=user)

    def clean_timezone(self) -> str:
        name: str = self.cleaned_data["timezone"].strip()
        timezone_validate(name)
        return name


@admin.register(NotificationChannel)
class NotificationChannelAdmin(admin.ModelAdmin[NotificationChannel]):
    form = NotificationChannelForm
    list_display = ("name", "user", "kind", "enabled", "disabled_reason", "created_at")
    list_select_related = ("user",)
    list_filter = ("enabled", "kind")
    search_fields = ("name", "user__username")
    readonly_fields = ("disabled_reason",)
    actions = ("send_test_message",)

    def save_model(self, request: HttpRequest, obj: NotificationChannel, form: Any, change: bool) -> None:
        url = form.cleaned_data.get("new_webhook_url") or None
        services.notification_channel_save(channel=obj, webhook_url=url)

    def has_test_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("alerts.test_notificationchannel")

    def get_urls(self) -> list[URLPattern]:
        return [
            path("my-settings/", self.admin_site.admin_view(self.my_settings), name="alerts_my_settings"),
            *super().get_urls(),
        ]

    @requires(OWN_SETTINGS_PERMISSION)
    def my_settings(self, request: HttpRequest) -> HttpResponse:
        """The signed-in operator's own settings: time zone, quiet hours and alert defaults."""
        user = cast(User, request.user)
        current = selectors.user_preferences(user_id=user.pk)
        initial = {
            "timezone": current.timezone,
            "quiet_hours_start": current.quiet_hours_start,
            "quiet_hours_end": current.quiet_hours_end,
            "default_symbols": Instrument.objects.filter(symbol__in=current.default_symbols),
            "default_timeframes": current.default_timeframes,
            "default_channel": current.default_channel,
        }
        form = MySettingsForm(request.POST or None, initial=initial, user=user)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                services.user_preferences_update(
                    user=user,
                    timezone_name=data["timezone"],
                    quiet_hours_start=data["quiet_hours_start"],
                    quiet_hours_end=data["quiet_hours_end"],
                    default_symbols=[i.symbol for i in data["default_symbols"]],
                    default_timeframes=data["default_timeframes"],
                    default_channel_id=data["default_channel"].pk if data["default_channel"] else None,
                )
            except ServiceError as exc:
                for field, errors in exc.fields.items():
                    form.add_error(field if field in form.fields else None, errors)
            else:
                self.message_user(request, "Your settings are saved.")
                return HttpResponseRedirect(reverse("admin:alerts_my_settings"))
        context = {
            **self.admin_site.each_context(request),
            "title": "My settings",
            "form": form,
            "zone": user_settings(user_id=user.pk).timezone,
        }
        return TemplateResponse(
            request, "admin/alerts/my_settings.html", context, status=400 if form.errors else 200
        )

    @admin.action(description="Send a test message to the selected channels", permissions=["test"])
    def send_test_message(self, request: HttpRequest, queryset: QuerySet[NotificationChannel]) -> None:
        for channel in queryset:
            try:
                message_id = services.notification_channel_test(channel=channel)
            except ServiceError as exc:
                self.message_user(request, f"{channel}: {exc.message}", messages.ERROR)
            else:
                self.message_user(request, f"{channel}: test message posted (Discord message {message_id}).")


class AlertRuleForm(forms.ModelForm[AlertRule]):
    class Meta:
        model = AlertRule
        fields = (
            "user", "name", "instrument", "timeframe", "kind", "source", "condition", "threshold", "upper",
            "other", "bars", "frequency", "expires_at", "channel", "status",
        )  # fmt: skip

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if self.instance.pk is None or "expires_at" in self.changed_data:
            expires_at = cleaned.get("expires_at")
            errors = rules.expiry_errors(
                expires_at=expires_at.timestamp() if expires_at else None, now=time.time()
            )
            for field, messages_ in errors.items():
                self.add_error(field, messages_)
        return cleaned


@admin.register(AlertRule)
class AlertRuleAdmin(admin.ModelAdmin[AlertRule]):
    form = AlertRuleForm
    list_display = (
        "__str__",
        "user",
        "instrument",
        "timeframe",
        "kind",
        "source",
        "condition",
        "threshold",
        "frequency",
        "status",
        "last_fired_at",
    )
    list_select_related = ("user", "instrument")
    list_filter = ("status", "kind", "timeframe", "frequency", "instrument")
    search_fields = ("name", "user__username", "instrument__symbol")
    autocomplete_fields = ("instrument",)
    readonly_fields = ("state", "created_at", "updated_at", "last_fired_at")

    def save_model(self, request: HttpRequest, obj: AlertRule, form: Any, change: bool) -> None:
        services.alert_rule_save(rule=obj, changed=form.changed_data if change else ())


class NotificationInline(admin.TabularInline[Notification, AlertEvent]):
    model = Notification
    extra = 0
    can_delete = False
    fields = ("channel", "status", "attempts", "next_attempt_at", "sent_at", "last_error")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(AlertEvent)
class AlertEventAdmin(admin.ModelAdmin[AlertEvent]):
    list_display = ("fired_at", "title", "user", "value", "price", "direction", "bias", "bar_start")
    list_select_related = ("user",)
    list_filter = ("direction", "timeframe", "symbol")
    search_fields = ("title", "user__username", "symbol")
    date_hierarchy = "fired_at"
    inlines = (NotificationInline,)

    @admin.display(description="MACD-V bias")
    def bias(self, obj: AlertEvent) -> str:
        return str(obj.payload.get("bias", "-"))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin[Notification]):
    list_display = (
        "id",
        "event_link",
        "destination",
        "status",
        "attempts",
        "rate_limited",
        "next_attempt_at",
        "sent_at",
        "maybe_duplicated",
        "last_error",
    )
    list_select_related = ("event", "system_notice", "channel")
    list_filter = ("status", "channel", "system_notice__kind")
    actions = ("retry",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="may show twice", boolean=True)
    def maybe_duplicated(self, obj: Notification) -> bool:
        return obj.maybe_duplicated

    @admin.display(description="channel", ordering="channel__name")
    def destination(self, obj: Notification) -> str:
        return (
            str(obj.channel)
            if obj.channel is not None
            else "system webhook (SYSTEM_NOTIFICATION_WEBHOOK_URL)"
        )

    @admin.display(description="alert or system notice")
    def event_link(self, obj: Notification) -> str:
        if obj.system_notice is not None:
            url = reverse("admin:alerts_systemnotice_change", args=[obj.system_notice_id])
            return format_html('<a href="{}">{}</a>', url, obj.system_notice.title)
        assert obj.event is not None
        url = reverse("admin:alerts_alertevent_change", args=[obj.event_id])
        return format_html('<a href="{}">{}</a>', url, obj.event.title)

    has_retry_permission = permission_check("alerts.change_notification")

    @admin.action(description="Retry delivery of the selected notifications", permissions=["retry"])
    def retry(self, request: HttpRequest, queryset: QuerySet[Notification]) -> None:
        retried = 0
        for notification in queryset:
            try:
                services.notification_retry(notification=notification)
                retried += 1
            except ServiceError as exc:
                self.message_user(request, exc.message, messages.WARNING)
        self.message_user(request, f"{retried} notification(s) queued for delivery.")


@admin.register(SystemEventRoute)
class SystemEventRouteAdmin(admin.ModelAdmin[SystemEventRoute]):
    """Where each kind of system event goes: a channel, or silenced; a kind with no row is not sent.
    Needs the model's change permission (alerts.change_systemeventroute)."""

    list_display = ("kind", "channel", "silenced")
    list_editable = ("channel", "silenced")
    list_select_related = ("channel",)
    list_filter = ("silenced",)


@admin.register(SystemNotice)
class SystemNoticeAdmin(admin.ModelAdmin[SystemNotice]):
    list_display = ("id", "kind", "title", "count", "created_at")
    list_filter = ("kind",)
    readonly_fields = ("kind", "items", "created_at")

    @admin.display(description="events")
    def count(self, obj: SystemNotice) -> int:
        return len(obj.items)

    def get_urls(self) -> list[URLPattern]:
        return [
            path("metrics/", self.admin_site.admin_view(self.metrics), name="alerts_metrics"),
            *super().get_urls(),
        ]

    @requires(METRICS_PERMISSION)
    def metrics(self, request: HttpRequest) -> HttpResponse:
        """Every figure the Prometheus endpoint gives, as tables: one per metric, a row per sample."""
        families = [
            {
                "name": family.name,
                "help": family.documentation,
                "samples": [
                    {
                        "name": sample.name,
                        "labels": ", ".join(f"{k}={v}" for k, v in sorted(sample.labels.items())),
                        "value": sample.value,
                    }
                    for sample in family.samples
                    if not sample.name.endswith("_created")
                ],
            }
            for family in metrics_families()
            if family.name.startswith("livermore_")
        ]
        context = {**self.admin_site.each_context(request), "title": "Metrics", "families": families}
        return TemplateResponse(request, "admin/alerts/metrics.html", context)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(AlertSeriesState)
class AlertSeriesStateAdmin(admin.ModelAdmin[AlertSeriesState]):
    list_display = ("symbol", "timeframe", "bar_start", "updated_at")
    list_filter = ("timeframe", "symbol")
    readonly_fields = ("symbol", "timeframe", "bar_start", "values", "updated_at")
    exclude = ("history",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
