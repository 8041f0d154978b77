"""The FIX operator console: sessions with runfix's live state and actions, the redacted message
log, routing rules with a preview, A-Book orders and the LP position reconciliation."""

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, cast

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html, format_html_join

from brokerage.models import TradingAccount
from kernel.admin import permission_check, requires
from kernel.errors import ServiceError
from users.models import User

from .models import (
    CommandAction,
    FixCommand,
    FixFill,
    FixMessage,
    FixOrder,
    FixOrderRequest,
    FixOrderState,
    FixSession,
    LpPosition,
    PositionCheck,
    RoutingRule,
)
from .selectors import fix_session_state, routing_rule_match
from .services import fix_command_request, fix_order_cancel_request, fix_session_seqnums_set


def _ms(value: object) -> str:
    if not isinstance(value, int):
        return "-"
    return datetime.fromtimestamp(value / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


class ReadOnlyAdmin(admin.ModelAdmin[Any]):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


# -- sessions ---------------------------------------------------------------------------------------
class FixSessionForm(forms.ModelForm[FixSession]):
    """The password is write-only: never shown; leaving the box empty keeps the stored one."""

    new_password = forms.CharField(
        label="Password (554)",
        required=False,
        strip=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="Leave empty to keep the stored password.",
    )
    clear_password = forms.BooleanField(required=False, help_text="Remove the stored password.")

    class Meta:
        model = FixSession
        fields = (
            "name",
            "enabled",
            "role",
            "venue",
            "begin_string",
            "sender_comp_id",
            "target_comp_id",
            "host",
            "port",
            "heartbeat_s",
            "reconnect_s",
            "reset_on_logon",
            "relax_field_validation",
            "tls",
            "tls_ca_file",
            "start_time",
            "end_time",
            "start_day",
            "end_day",
            "username",
            "password_env",
            "account",
            "log_market_data",
        )

    def save(self, commit: bool = True) -> FixSession:
        session = super().save(commit=False)
        if self.cleaned_data.get("clear_password"):
            session.password = ""
        elif self.cleaned_data.get("new_password"):
            session.password = self.cleaned_data["new_password"]
        if commit:
            session.save()
        return session


class SeqNumsForm(forms.Form):
    sender = forms.IntegerField(
        min_value=1,
        label="Next sender MsgSeqNum",
        help_text="The next number this side sends (34 of our next message).",
    )
    target = forms.IntegerField(
        min_value=1, label="Next target MsgSeqNum", help_text="The next number expected from the LP."
    )


@admin.register(FixSession)
class FixSessionAdmin(admin.ModelAdmin[FixSession]):
    form = FixSessionForm
    list_display = (
        "name",
        "role",
        "venue",
        "endpoint",
        "enabled",
        "logged_on",
        "next_in",
        "next_out",
        "last_heartbeat",
        "reconciled",
        "messages_link",
    )
    list_filter = ("role", "enabled")
    list_select_related = ("venue",)
    readonly_fields = ("live_state", "has_password", "reconciliation")
    actions = ("connect", "disconnect", "reset_seqnums", "set_seqnums", "reconcile_positions")
    fieldsets = (
        (None, {"fields": ("name", "enabled", "role", "venue", "live_state")}),
        ("Connection", {"fields": ("begin_string", "sender_comp_id", "target_comp_id", "host", "port")}),
        (
            "Session",
            {
                "fields": (
                    "heartbeat_s",
                    "reconnect_s",
                    "reset_on_logon",
                    "relax_field_validation",
                    "tls",
                    "tls_ca_file",
                )
            },
        ),
        ("Schedule (UTC)", {"fields": ("start_time", "end_time", "start_day", "end_day")}),
        (
            "Credentials",
            {
                "fields": (
                    "username",
                    "has_password",
                    "new_password",
                    "clear_password",
                    "password_env",
                    "account",
                )
            },
        ),
        ("Logging", {"fields": ("log_market_data",)}),
        ("LP positions", {"fields": ("reconciliation",)}),
    )

    def get_readonly_fields(self, request: HttpRequest, obj: FixSession | None = None) -> tuple[str, ...]:
        fields = tuple(super().get_readonly_fields(request, obj))
        if request.user.has_perm("fix.set_password_env"):
            return fields
        return (*fields, "password_env")

    def _state(self, obj: FixSession) -> dict[str, Any]:
        cache = getattr(obj, "_fix_state", None)
        if cache is None:
            cache = obj._fix_state = fix_session_state(session=obj) or {}  # type: ignore[attr-defined]
        return cache

    @admin.display(description="endpoint")
    def endpoint(self, obj: FixSession) -> str:
        return f"{obj.host}:{obj.port}{' (TLS)' if obj.tls else ''}"

    @admin.display(boolean=True, description="logged on")
    def logged_on(self, obj: FixSession) -> bool | None:
        state = self._state(obj)
        return bool(state.get("logged_on")) if state else None

    @admin.display(description="next in")
    def next_in(self, obj: FixSession) -> object:
        return self._state(obj).get("next_in", "-")

    @admin.display(description="next out")
    def next_out(self, obj: FixSession) -> object:
        return self._state(obj).get("next_out", "-")

    @admin.display(description="last heartbeat in")
    def last_heartbeat(self, obj: FixSession) -> str:
        return _ms(self._state(obj).get("last_heartbeat_ms"))

    @admin.display(description="positions")
    def reconciled(self, obj: FixSession) -> str:
        latest = obj.position_checks.order_by("-checked_at").first()
        if latest is None:
            return "-"
        bad = obj.position_checks.filter(request_id=latest.request_id, matched=False).count()
        return "reconciled" if not bad else f"{bad} MISMATCH"

    @admin.display(description="last reconciliation")
    def reconciliation(self, obj: FixSession) -> str:
        latest = obj.position_checks.order_by("-checked_at").first()
        if latest is None:
            return "no positions reconciled yet"
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (c.symbol, c.ours, c.theirs, "ok" if c.matched else "MISMATCH")
                for c in obj.position_checks.filter(request_id=latest.request_id).order_by("symbol")
            ),
        )
        return format_html(
            "{} ({})<table><tr><th>symbol</th><th>ours</th><th>LP</th><th></th></tr>{}</table>",
            latest.checked_at.strftime("%Y-%m-%d %H:%M:%S"),
            latest.request_id,
            rows,
        )

    @admin.display(description="messages")
    def messages_link(self, obj: FixSession) -> str:
        url = reverse("admin:fix_fixmessage_changelist") + f"?session__id__exact={obj.pk}"
        return format_html('<a href="{}">view</a>', url)

    @admin.display(boolean=True, description="password set")
    def has_password(self, obj: FixSession) -> bool:
        return bool(obj.password or obj.password_env)

    @admin.display(description="live state (from runfix)")
    def live_state(self, obj: FixSession) -> str:
        state = self._state(obj)
        if not state:
            return "runfix is not running this session"
        return format_html(
            "{} · next in {} · next out {} · logons {} · last heartbeat {} · subscribed {} · rejected {}{}{}",
            "LOGGED ON" if state.get("logged_on") else "down",
            state.get("next_in"),
            state.get("next_out"),
            state.get("logons"),
            _ms(state.get("last_heartbeat_ms")),
            ", ".join(state.get("subscribed", [])) or "-",
            ", ".join(f"{k} ({v})" for k, v in state.get("rejected", {}).items()) or "-",
            f" · last logout: {state['last_logout_text']}" if state.get("last_logout_text") else "",
            (
                f" · logon refused {state['logon_refusals']}x, next try in {state.get('logon_retry_in_s')} s"
                if state.get("logon_refusals")
                else ""
            ),
        )

    def _command(
        self, request: HttpRequest, queryset: QuerySet[FixSession], action: str
    ) -> HttpResponse | None:
        label = CommandAction(action).label
        if request.POST.get("confirmed") != "yes":
            context = {
                **self.admin_site.each_context(request),
                "title": f"{label}: are you sure?",
                "action": request.POST.get("action"),
                "label": label,
                "sessions": queryset,
                "selected": request.POST.getlist(helpers.ACTION_CHECKBOX_NAME),
                "opts": self.model._meta,
            }
            return TemplateResponse(request, "admin/fix/confirm_action.html", context)
        for session in queryset:
            fix_command_request(session=session, action=action, user=cast(User, request.user))
        self.message_user(request, f"{label} requested for {queryset.count()} session(s); runfix applies it.")
        return None

    @admin.action(description="Connect (log on)", permissions=["change"])
    def connect(self, request: HttpRequest, queryset: QuerySet[FixSession]) -> HttpResponse | None:
        return self._command(request, queryset, CommandAction.CONNECT)

    @admin.action(description="Disconnect (log out and stay down)", permissions=["change"])
    def disconnect(self, request: HttpRequest, queryset: QuerySet[FixSession]) -> HttpResponse | None:
        return self._command(request, queryset, CommandAction.DISCONNECT)

    @admin.action(description="Reset sequence numbers to 1", permissions=["change"])
    def reset_seqnums(self, request: HttpRequest, queryset: QuerySet[FixSession]) -> HttpResponse | None:
        return self._command(request, queryset, CommandAction.RESET_SEQNUMS)

    @admin.action(description="Set next sequence numbers (cut-over)", permissions=["change"])
    def set_seqnums(self, request: HttpRequest, queryset: QuerySet[FixSession]) -> HttpResponse | None:
        if queryset.count() != 1:
            self.message_user(request, "Set the sequence numbers of one session at a time.", messages.ERROR)
            return None
        session = queryset.get()
        form = SeqNumsForm(request.POST if request.POST.get("confirmed") == "yes" else None)
        if form.is_valid():
            try:
                fix_session_seqnums_set(
                    session=session,
                    sender=form.cleaned_data["sender"],
                    target=form.cleaned_data["target"],
                    user=cast(User, request.user),
                )
            except ServiceError as exc:
                self.message_user(request, exc.message, messages.ERROR)
                return None
            self.message_user(
                request,
                f"{session.name} starts at sender {form.cleaned_data['sender']}, target "
                f"{form.cleaned_data['target']} when enabled; runfix writes them to its store first.",
            )
            return None
        context = {
            **self.admin_site.each_context(request),
            "title": f"Next sequence numbers of {session.name}",
            "session": session,
            "form": form,
            "action": request.POST.get("action"),
            "selected": request.POST.getlist(helpers.ACTION_CHECKBOX_NAME),
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/fix/set_seqnums.html", context)

    @admin.action(description="Reconcile LP positions now", permissions=["change"])
    def reconcile_positions(self, request: HttpRequest, queryset: QuerySet[FixSession]) -> None:
        for session in queryset:
            fix_command_request(
                session=session, action=CommandAction.POSITIONS, user=cast(User, request.user)
            )
        self.message_user(request, "Position requests queued; results appear under each session.")


@admin.register(FixCommand)
class FixCommandAdmin(ReadOnlyAdmin):
    list_display = ("requested_at", "session", "action", "requested_by", "done_at", "result")
    list_filter = ("action", "session")
    list_select_related = ("session", "requested_by")


@admin.register(FixMessage)
class FixMessageAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "session", "direction", "msg_type", "seq", "raw_short")
    list_filter = ("session", "direction", "msg_type")
    search_fields = ("raw",)
    list_select_related = ("session",)
    show_full_result_count = False
    fields = ("created_at", "session", "direction", "msg_type", "seq", "raw")

    @admin.display(description="message (secrets redacted)")
    def raw_short(self, obj: FixMessage) -> str:
        return obj.raw if len(obj.raw) <= 160 else obj.raw[:157] + "..."


# -- routing ----------------------------------------------------------------------------------------
class RoutingPreviewForm(forms.Form):
    account = forms.IntegerField(label="Account number")
    symbol = forms.CharField(max_length=20)
    volume = forms.DecimalField(max_digits=20, decimal_places=8, min_value=Decimal("0.00000001"))

    def clean_account(self) -> TradingAccount:
        account = (
            TradingAccount.objects.select_related("group").filter(number=self.cleaned_data["account"]).first()
        )
        if account is None:
            raise forms.ValidationError("No such account.")
        return account


@admin.register(RoutingRule)
class RoutingRuleAdmin(admin.ModelAdmin[RoutingRule]):
    list_display = (
        "priority",
        "name",
        "enabled",
        "group",
        "account",
        "instrument_pattern",
        "volume_min",
        "volume_max",
        "action",
        "session",
    )
    list_display_links = ("name",)
    list_editable = ("priority", "enabled")
    list_filter = ("action", "enabled", "session")
    list_select_related = ("group", "account", "session")
    change_list_template = "admin/fix/routingrule/change_list.html"

    def get_urls(self) -> list[URLPattern]:
        preview = path("preview/", self.admin_site.admin_view(self.preview), name="fix_routingrule_preview")
        return [preview, *super().get_urls()]

    @requires("fix.view_routingrule")
    def preview(self, request: HttpRequest) -> HttpResponse:
        form = RoutingPreviewForm(request.GET or None)
        result: dict[str, Any] | None = None
        if form.is_valid():
            account = form.cleaned_data["account"]
            rule = routing_rule_match(
                account_id=account.pk,
                group_id=account.group_id,
                symbol=form.cleaned_data["symbol"].upper(),
                volume=form.cleaned_data["volume"],
            )
            result = {"rule": rule}
        context = {
            **self.admin_site.each_context(request),
            "title": "Routing preview",
            "form": form,
            "result": result,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/fix/routingrule/preview.html", context)


# -- orders and positions ---------------------------------------------------------------------------
class OpenFilter(admin.SimpleListFilter):
    title = "open"
    parameter_name = "open"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "Open at the LP"), ("no", "Done")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[FixOrder]) -> QuerySet[FixOrder]:
        open_states = [
            FixOrderState.PENDING,
            FixOrderState.SENT,
            FixOrderState.NEW,
            FixOrderState.PARTIALLY_FILLED,
        ]
        if self.value() == "yes":
            return queryset.filter(state__in=open_states)
        if self.value() == "no":
            return queryset.exclude(state__in=open_states)
        return queryset


class FixFillInline(admin.TabularInline[FixFill, FixOrder]):
    model = FixFill
    fields = ("exec_id", "quantity", "price", "created_at")
    readonly_fields = fields
    extra = 0
    max_num = 0
    can_delete = False


class FixOrderRequestInline(admin.TabularInline[FixOrderRequest, FixOrder]):
    model = FixOrderRequest
    fields = ("cl_ord_id", "kind", "quantity", "price", "state", "text", "sent_at")
    readonly_fields = fields
    extra = 0
    max_num = 0
    can_delete = False


@admin.register(FixOrder)
class FixOrderAdmin(ReadOnlyAdmin):
    list_display = (
        "cl_ord_id",
        "session",
        "symbol",
        "side",
        "ord_type",
        "quantity",
        "price",
        "state",
        "cum_qty",
        "avg_price",
        "sent_at",
        "acked_at",
        "text",
        "client_order",
    )
    list_filter = (OpenFilter, "state", "session")
    list_select_related = ("session", "order")
    search_fields = ("cl_ord_id", "lp_order_id", "symbol")
    inlines = (FixFillInline, FixOrderRequestInline)
    actions = ("cancel_at_lp",)

    @admin.display(description="avg px")
    def avg_price(self, obj: FixOrder) -> Decimal | None:
        return obj.avg_px

    @admin.display(description="client order")
    def client_order(self, obj: FixOrder) -> str:
        url = reverse("admin:brokerage_order_change", args=[obj.order_id])
        return format_html('<a href="{}">#{} ({})</a>', url, obj.order_id, obj.order.status)

    has_trade_permission = permission_check("brokerage.trade_for_client")

    @admin.action(description="Cancel at the LP (OrderCancelRequest)", permissions=["trade"])
    def cancel_at_lp(self, request: HttpRequest, queryset: QuerySet[FixOrder]) -> None:
        for fix_order in queryset:
            try:
                fix_order_cancel_request(fix_order=fix_order)
            except ServiceError as exc:
                self.message_user(request, f"{fix_order}: {exc.message}", level=messages.ERROR)
            else:
                self.message_user(request, f"{fix_order}: cancel requested.")


@admin.register(LpPosition)
class LpPositionAdmin(ReadOnlyAdmin):
    list_display = ("session", "symbol", "quantity", "updated_at")
    list_filter = ("session",)


@admin.register(PositionCheck)
class PositionCheckAdmin(ReadOnlyAdmin):
    list_display = ("checked_at", "session", "symbol", "ours", "theirs", "matched", "request_id")
    list_filter = ("matched", "session")
    date_hierarchy = "checked_at"
