"""Brokerage models in the admin. Trading state (orders, positions, deals) and the ledger are
read-only here: they change only through brokerage.services (operator actions call those)."""

from collections.abc import Callable
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html

from kernel.admin import ReadOnlyAdmin, permission_check, requires
from kernel.errors import ServiceError

from . import services
from .console import OperatorAccountMixin, OperatorOrderMixin, OperatorPositionMixin, operator_of
from .models import (
    CashOperation,
    CashStatus,
    ClientGroup,
    Deal,
    GroupInstrument,
    LedgerAccount,
    LedgerTransaction,
    Order,
    Position,
    Posting,
    TradingAccount,
    TradingScope,
    TradingState,
    TradingStateChange,
    TradingStatus,
)
from .services.cash import APPROVE_PERMISSION


class GroupInstrumentInline(admin.TabularInline[GroupInstrument, ClientGroup]):
    model = GroupInstrument
    extra = 0
    autocomplete_fields = ("instrument",)


def _form_changes(form: Any) -> dict[str, str]:
    return {name: str(form.cleaned_data.get(name)) for name in form.changed_data}


@admin.register(ClientGroup)
class ClientGroupAdmin(admin.ModelAdmin[ClientGroup]):
    """Group and per-instrument settings apply to new deals, except the leverage: a change re-margins
    the open positions of the accounts following it. Edits go through the group services, which audit
    them."""

    list_display = (
        "name",
        "currency",
        "leverage",
        "margin_mode",
        "margin_call_level",
        "stop_out_level",
        "markup_default",
        "markup_unit",
    )
    list_filter = ("currency", "margin_mode")
    search_fields = ("name",)
    inlines = (GroupInstrumentInline,)

    def save_model(self, request: HttpRequest, obj: ClientGroup, form: Any, change: bool) -> None:
        result = services.group_save(
            group=obj, created=not change, changes=_form_changes(form), actor=operator_of(request)
        )
        if result is None:
            return
        self.message_user(
            request, f"Leverage 1:{obj.leverage}: positions of {len(result.accounts)} account(s) re-margined."
        )
        if result.unpriced:
            self.message_user(
                request,
                "No price to convert the margin of accounts "
                f"{', '.join(map(str, result.unpriced))}: their positions keep their margin.",
                level=messages.WARNING,
            )

    def save_formset(self, request: HttpRequest, form: Any, formset: Any, change: bool) -> None:
        formset.save(commit=False)
        services.group_instruments_save(
            group=form.instance,
            new=formset.new_objects,
            changed=formset.changed_objects,
            deleted=formset.deleted_objects,
            actor=operator_of(request),
        )

    def delete_model(self, request: HttpRequest, obj: ClientGroup) -> None:
        services.groups_delete(groups=[obj], actor=operator_of(request))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[ClientGroup]) -> None:
        services.groups_delete(groups=queryset, actor=operator_of(request))


@admin.register(TradingAccount)
class TradingAccountAdmin(OperatorAccountMixin, admin.ModelAdmin[TradingAccount]):
    """Accounts open through account_open; status, group and leverage change on the console's
    "Status / group / leverage" page (services with attribution and audit), never by a plain save."""

    list_display = (
        "number",
        "owner",
        "group",
        "leverage",
        "currency",
        "status",
        "balance",
        "margin_call_at",
    )
    list_select_related = ("owner", "group")
    list_filter = ("status", "currency", "group")
    search_fields = ("=number", "owner__username", "owner__email")
    autocomplete_fields = ("owner",)
    readonly_fields = ("balance", "margin_reserved", "margin_call_at", "created_at")

    def get_fields(self, request: HttpRequest, obj: TradingAccount | None = None) -> Any:
        if obj is None:
            return ["owner", "group", "status"]
        return ["number", "owner", "group", "leverage", "currency", "status", *self.readonly_fields]

    def get_readonly_fields(self, request: HttpRequest, obj: TradingAccount | None = None) -> Any:
        if obj is None:
            return ()
        return ("number", "owner", "group", "leverage", "currency", "status", *self.readonly_fields)

    def save_model(self, request: HttpRequest, obj: TradingAccount, form: Any, change: bool) -> None:
        if change:
            return  # nothing is editable on this form
        account = services.account_open(
            owner=obj.owner, group=obj.group, status=obj.status, actor=operator_of(request)
        )
        obj.pk, obj.number, obj.currency = account.pk, account.number, account.currency

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("brokerage.open_account")


@admin.register(CashOperation)
class CashOperationAdmin(ReadOnlyAdmin):
    """Cash operations as made on the account's cash page or through the back-office API; the pending
    ones wait here for a second operator (the maker cannot approve their own)."""

    list_display = (
        "id",
        "account",
        "kind",
        "amount",
        "currency",
        "method",
        "external_ref",
        "status",
        "created_by",
        "created_at",
        "decided_by",
        "decided_at",
    )
    list_select_related = ("account", "created_by", "decided_by")
    list_filter = ("status", "kind", "method", "currency")
    search_fields = ("=id", "=account__number", "external_ref", "comment")
    date_hierarchy = "created_at"
    actions = ("approve", "reject")

    has_approve_cash_permission = permission_check(APPROVE_PERMISSION)

    @admin.action(description="Approve the selected pending operations", permissions=["approve_cash"])
    def approve(self, request: HttpRequest, queryset: QuerySet[CashOperation]) -> None:
        self._decide(request, queryset, services.cash_operation_approve, "approved and applied")

    @admin.action(description="Reject the selected pending operations", permissions=["approve_cash"])
    def reject(self, request: HttpRequest, queryset: QuerySet[CashOperation]) -> None:
        self._decide(request, queryset, services.cash_operation_reject, "rejected")

    def _decide(
        self,
        request: HttpRequest,
        queryset: QuerySet[CashOperation],
        decide: Callable[..., CashOperation],
        done: str,
    ) -> None:
        for operation in queryset.filter(status=CashStatus.PENDING).select_related("account"):
            try:
                decide(operation=operation, actor=operator_of(request))
            except ServiceError as exc:
                self.message_user(request, f"Operation {operation.pk}: {exc.message}", messages.ERROR)
            else:
                self.message_user(request, f"Operation {operation.pk} {done}.")


@admin.register(Order)
class OrderAdmin(OperatorOrderMixin, ReadOnlyAdmin):
    list_display = (
        "id",
        "account",
        "instrument",
        "type",
        "side",
        "volume",
        "price",
        "stop_price",
        "status",
        "reason",
        "close_reason",
        "filled_volume",
        "fill_price",
        "book",
        "route",
        "created_at",
    )
    list_select_related = ("account", "instrument")
    list_filter = ("status", "type", "side", "reason", "book")
    search_fields = ("=id", "=account__number", "client_order_id", "external_id")
    date_hierarchy = "created_at"


@admin.register(Position)
class PositionAdmin(OperatorPositionMixin, ReadOnlyAdmin):
    list_display = (
        "id",
        "account",
        "instrument",
        "side",
        "volume",
        "open_price",
        "sl",
        "tp",
        "margin",
        "status",
        "close_reason",
        "realized_pnl",
        "opened_at",
    )
    list_select_related = ("account", "instrument")
    list_filter = ("status", "side", "close_reason", "instrument")
    search_fields = ("=id", "=account__number")
    date_hierarchy = "opened_at"


@admin.register(Deal)
class DealAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "account",
        "instrument",
        "entry",
        "side",
        "volume",
        "price",
        "commission",
        "realized_pnl",
        "reason",
        "book",
        "venue",
        "quote_seq",
        "created_at",
    )
    list_select_related = ("account", "instrument")
    list_filter = ("entry", "side", "reason", "book")
    search_fields = ("=id", "=account__number", "=order__id", "=position__id", "external_id", "=quote_seq")
    date_hierarchy = "created_at"


@admin.register(LedgerAccount)
class LedgerAccountAdmin(ReadOnlyAdmin):
    list_display = ("__str__", "kind", "currency", "trading_account")
    list_select_related = ("trading_account",)
    list_filter = ("kind", "currency")


class PostingInline(admin.TabularInline[Posting, LedgerTransaction]):
    model = Posting
    extra = 0
    can_delete = False
    fields = ("ledger_account", "amount")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(LedgerTransaction)
class LedgerTransactionAdmin(ReadOnlyAdmin):
    list_display = ("id", "kind", "currency", "created_at", "created_by", "deal_link", "comment")
    list_select_related = ("created_by",)
    list_filter = ("kind", "currency")
    search_fields = ("=id", "comment", "=deal__id", "=order__id")
    date_hierarchy = "created_at"
    inlines = (PostingInline,)

    @admin.display(description="deal")
    def deal_link(self, obj: LedgerTransaction) -> str:
        if obj.deal_id is None:
            return "-"
        url = reverse("admin:brokerage_deal_change", args=[obj.deal_id])
        return format_html('<a href="{}">#{}</a>', url, obj.deal_id)


@admin.register(Posting)
class PostingAdmin(ReadOnlyAdmin):
    list_display = ("id", "transaction", "ledger_account", "amount")
    list_select_related = ("transaction", "ledger_account")
    list_filter = ("ledger_account__kind", "ledger_account__currency")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Posting]:
        return super().get_queryset(request).select_related("ledger_account__trading_account")


SET_TRADING_STATE = "brokerage.set_trading_state"


class KillSwitchForm(forms.Form):
    """The dashboard's one-click switch: everything halted, reduce-only or resumed."""

    state = forms.ChoiceField(choices=TradingStatus.choices)
    reason = forms.CharField(max_length=255, required=False)


@admin.register(TradingState)
class TradingStateAdmin(admin.ModelAdmin[TradingState]):
    """The kill switch by scope. Adding or changing a state calls trading_state_set (recorded,
    audited, notified); a state is never deleted, it is set back to active."""

    list_display = ("scope_target", "state", "source", "reason", "auto_resume", "set_by", "set_at")
    list_filter = ("state", "scope", "source")
    list_select_related = ("venue", "instrument", "group", "set_by")
    autocomplete_fields = ("instrument",)
    fields = (
        "scope",
        "venue",
        "instrument",
        "group",
        "state",
        "reason",
        "source",
        "auto_resume",
        "set_by",
        "set_at",
    )
    readonly_fields = ("source", "auto_resume", "set_by", "set_at")

    @admin.display(description="Scope", ordering="scope")
    def scope_target(self, obj: TradingState) -> str:
        return obj.target

    def get_readonly_fields(self, request: HttpRequest, obj: TradingState | None = None) -> Any:
        if obj is None:
            return self.readonly_fields
        return ("scope", "venue", "instrument", "group", *self.readonly_fields)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(SET_TRADING_STATE)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.has_perm(SET_TRADING_STATE)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: TradingState, form: Any, change: bool) -> None:
        saved = services.trading_state_set(
            scope=obj.scope,
            venue=obj.venue,
            instrument=obj.instrument,
            group=obj.group,
            state=obj.state,
            reason=obj.reason,
            actor=operator_of(request),
        )
        obj.pk = saved.pk

    def get_urls(self) -> list[URLPattern]:
        wrap = self.admin_site.admin_view
        return [
            path("switch/", wrap(self.switch_view), name="brokerage_tradingstate_switch"),
            *super().get_urls(),
        ]

    @requires(SET_TRADING_STATE)
    def switch_view(self, request: HttpRequest) -> HttpResponse:
        """The dashboard panel's POST (admin/brokerage/_kill_switch.html): the global state."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        form = KillSwitchForm(request.POST)
        if not form.is_valid():
            self.message_user(request, "Choose halted, reduce-only or active.", messages.ERROR)
            return HttpResponseRedirect(reverse("admin:index"))
        try:
            row = services.trading_state_set(
                scope=TradingScope.GLOBAL,
                state=form.cleaned_data["state"],
                reason=form.cleaned_data["reason"],
                actor=operator_of(request),
            )
        except ServiceError as exc:
            self.message_user(request, f"{exc.message} ({exc.code})", messages.ERROR)
        else:
            self.message_user(request, f"Trading (global) is now {row.get_state_display()}.")
        return HttpResponseRedirect(reverse("admin:index"))


@admin.register(TradingStateChange)
class TradingStateChangeAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "target", "state_before", "state", "source", "reason", "actor")
    list_filter = ("state", "source")
    list_select_related = ("actor",)
    search_fields = ("target", "reason")
