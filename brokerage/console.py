"""The operator console in the Django admin: cash operations, status / group / leverage changes,
closing positions, cancelling orders, the exposure page and the margin watch page. Every action calls
an engine service with the operator as its `actor`; the service writes the audit log (users.AuditLog)
in its own transaction. Every page declares the permission it needs (kernel.admin.requires) and every
action its permission (`permissions=[...]`); the roles holding them are in users/roles.py."""

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db import transaction
from django.db.models import QuerySet
from django.forms.models import model_to_dict
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse

from kernel.admin import permission_check, requires
from kernel.errors import ServiceError
from kernel.live import Cell, LiveTable, link, live_response, text, wants_json
from marketdata.selectors import instrument_symbols
from users.models import User

from . import services
from .models import (
    AccountStatus,
    CashOperationKind,
    ClientGroup,
    Order,
    OrderStatus,
    OrderType,
    PaymentMethod,
    Position,
    PositionStatus,
    Reason,
    Side,
    TimeInForce,
    TradingAccount,
)
from .selectors import (
    ExposureRow,
    MarginRow,
    account_summary,
    accounts_near_margin_call,
    exposure,
    open_positions,
)
from .services.cash import CASH_PERMISSIONS, OVERRIDE_PERMISSION

TRADE_PERMISSION = "brokerage.trade_for_client"
CONDITIONS_PERMISSION = "brokerage.change_conditions"


def operator_of(request: HttpRequest) -> User:
    assert isinstance(request.user, User)
    return request.user


class AccountConditionsForm(forms.Form):
    status = forms.ChoiceField(choices=AccountStatus.choices)
    group = forms.ModelChoiceField(
        queryset=ClientGroup.objects.none(), help_text="Groups of the account's currency."
    )
    leverage = forms.IntegerField(
        min_value=1, required=False, help_text="Overrides the group's leverage; empty uses the group's."
    )
    reason = forms.CharField(max_length=255, required=False, help_text="Required to change the status.")

    def __init__(self, data: Any, *, account: TradingAccount) -> None:
        initial = {"status": account.status, "group": account.group_id, "leverage": account.leverage}
        super().__init__(data, initial=initial)
        self.account = account
        group_field = self.fields["group"]
        assert isinstance(group_field, forms.ModelChoiceField)
        group_field.queryset = ClientGroup.objects.filter(currency=account.currency)

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("status") not in (None, self.account.status) and not (data.get("reason") or "").strip():
            self.add_error("reason", "A status change needs a reason.")
        return data


def account_conditions_change(
    *,
    operator: User,
    account: TradingAccount,
    status: str,
    group: ClientGroup,
    leverage: int | None,
    reason: str,
) -> list[str]:
    """Apply an operator's status, group and leverage changes together (all or none); what changed."""
    changed = []
    with transaction.atomic():
        if status != account.status:
            services.account_status_set(account=account, status=status, actor=operator, reason=reason)
            changed.append(f"status {status}")
        if group.pk != account.group_id:
            services.account_group_change(account=account, group=group, actor=operator)
            changed.append(f"group {group}")
        if leverage != account.leverage:
            services.account_leverage_set(account=account, leverage=leverage, actor=operator)
            changed.append(f"leverage {leverage or 'of the group'}")
    return changed


class CashForm(forms.Form):
    operation = forms.ChoiceField(choices=CashOperationKind.choices)
    amount = forms.DecimalField(
        max_digits=24, decimal_places=8, help_text="Adjustments may be negative; the rest positive."
    )
    method = forms.ChoiceField(choices=PaymentMethod.choices, initial=PaymentMethod.MANUAL, required=False)
    external_ref = forms.CharField(
        max_length=128, required=False, help_text="The payment's reference (unique per method)."
    )
    comment = forms.CharField(max_length=255, required=False)
    override = forms.BooleanField(
        required=False,
        help_text="Let a negative adjustment take the balance or free margin below zero (audited).",
    )

    def __init__(self, data: Any, *, operator: User) -> None:
        super().__init__(data)
        operation = self.fields["operation"]
        assert isinstance(operation, forms.ChoiceField)
        operation.choices = [
            (kind, label)
            for kind, label in CashOperationKind.choices
            if operator.has_perm(CASH_PERMISSIONS[CashOperationKind(kind)])
        ]
        if not operator.has_perm(OVERRIDE_PERMISSION):
            del self.fields["override"]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("operation") == CashOperationKind.ADJUSTMENT and not data.get("comment"):
            self.add_error("comment", "An adjustment needs a comment.")
        return data


def exposure_table(rows: list[ExposureRow], *, by_group: bool = True) -> LiveTable:
    """The house exposure as the console shows it (per group and instrument, or per instrument)."""
    columns = ("Symbol", "Long lots", "Short lots", "Net lots", "House PnL", "Currency", "Unpriced positions")
    table = LiveTable(("Group", *columns) if by_group else columns, "No open positions.")
    for row in rows:
        cells: list[Cell] = [
            row.symbol,
            str(row.long_volume.normalize()),
            str(row.short_volume.normalize()),
            str(row.net_volume.normalize()),
            str(row.house_pnl),
            row.currency,
            str(row.unpriced),
        ]
        table.rows.append([row.group, *cells] if by_group else cells)
    return table


def margin_table(rows: list[MarginRow], *, empty: str) -> LiveTable:
    """Accounts with their margin level against their group's margin-call and stop-out levels."""
    table = LiveTable(
        (
            "Account",
            "Owner",
            "Group",
            "Margin level %",
            "Margin call at %",
            "Stop out at %",
            "Equity",
            "Margin",
            "In margin call since (UTC)",
        ),
        empty,
    )
    for row in rows:
        account = row.account
        table.rows.append(
            [
                link(account, reverse("admin:brokerage_tradingaccount_change", args=[account.pk])),
                str(account.owner),
                str(account.group),
                text(None if row.margin_level is None else row.margin_level.quantize(Decimal("0.01"))),
                str(account.group.margin_call_level),
                str(account.group.stop_out_level),
                str(row.equity),
                str(row.margin),
                text(account.margin_call_at and f"{account.margin_call_at:%Y-%m-%d %H:%M:%S}", empty=""),
            ]
        )
    return table


def price_field(label: str | None = None, help_text: str = "") -> forms.DecimalField:
    return forms.DecimalField(
        max_digits=24, decimal_places=10, required=False, label=label, help_text=help_text
    )


class OrderEntryForm(forms.Form):
    """A market or pending order with SL/TP for a client's account, as the API takes it."""

    symbol = forms.ChoiceField()
    side = forms.ChoiceField(choices=Side.choices)
    type = forms.ChoiceField(choices=OrderType.choices, initial=OrderType.MARKET)
    volume = forms.DecimalField(max_digits=24, decimal_places=8, help_text="Lots.")
    price = price_field(help_text="Limit price (limit and stop-limit orders).")
    stop_price = price_field(help_text="Stop price (stop and stop-limit orders).")
    sl = price_field("SL")
    tp = price_field("TP")
    time_in_force = forms.ChoiceField(choices=TimeInForce.choices, initial=TimeInForce.GTC)
    expires_at = forms.DateTimeField(required=False, help_text="UTC, for good-till-date orders.")

    def __init__(self, data: Any) -> None:
        super().__init__(data, prefix="new")
        symbol = self.fields["symbol"]
        assert isinstance(symbol, forms.ChoiceField)
        symbol.choices = [(s, s) for s in instrument_symbols()]


class OrderChangeForm(forms.Form):
    """A pending order's prices and SL/TP (empty SL or TP removes it)."""

    price = price_field()
    stop_price = price_field()
    sl = price_field("SL")
    tp = price_field("TP")


class PositionChangeForm(forms.Form):
    """An open position's SL/TP (empty removes it)."""

    sl = price_field("SL")
    tp = price_field("TP")


def add_service_error(form: forms.Form, exc: ServiceError) -> None:
    """A service's refusal as the form's errors: its message, and its field errors on the fields."""
    form.add_error(None, f"{exc.message} ({exc.code})")
    for field, errors in exc.fields.items():
        if field in form.fields:
            form.add_error(field, errors)


class OperatorAccountMixin:
    """For TradingAccountAdmin: the cash page and bulk-close action."""

    actions: Sequence[Any] | None = ["close_all_positions"]
    admin_site: admin.AdminSite

    def get_urls(self) -> list[URLPattern]:
        urls: list[URLPattern] = super().get_urls()  # type: ignore[misc]
        wrap = self.admin_site.admin_view
        return [
            path("<int:pk>/cash/", wrap(self.cash_view), name="brokerage_tradingaccount_cash"),
            path(
                "<int:pk>/conditions/",
                wrap(self.conditions_view),
                name="brokerage_tradingaccount_conditions",
            ),
            path("<int:pk>/trade/", wrap(self.trade_view), name="brokerage_tradingaccount_trade"),
            path("exposure/", wrap(self.exposure_view), name="brokerage_exposure"),
            path("margin-watch/", wrap(self.margin_watch_view), name="brokerage_margin_watch"),
            *urls,
        ]

    @requires(*CASH_PERMISSIONS.values())
    def cash_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        account = get_object_or_404(TradingAccount.objects.select_related("owner", "group"), pk=pk)
        operator = operator_of(request)
        form = CashForm(request.POST or None, operator=operator)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                operation = services.cash_operation_create(
                    account=account,
                    kind=data["operation"],
                    amount=data["amount"],
                    method=data["method"] or PaymentMethod.MANUAL,
                    external_ref=data["external_ref"],
                    comment=data["comment"],
                    override=data.get("override", False),
                    actor=operator,
                )
            except ServiceError as exc:
                self.message_user(request, f"{exc.message} ({exc.code})", messages.ERROR)  # type: ignore[attr-defined]
            else:
                done = "waits for a second operator's approval" if operation.status == "pending" else "done"
                self.message_user(  # type: ignore[attr-defined]
                    request, f"{operation.get_kind_display()} of {operation.amount} on {account} {done}."
                )
                return HttpResponseRedirect(reverse("admin:brokerage_tradingaccount_change", args=[pk]))
        context = {
            **self.admin_site.each_context(request),
            "title": f"Cash operation on account {account}",
            "account": account,
            "summary": account_summary(account=account),
            "form": form,
            "opts": TradingAccount._meta,
        }
        return TemplateResponse(request, "admin/brokerage/cash.html", context)

    @requires(CONDITIONS_PERMISSION)
    def conditions_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        account = get_object_or_404(TradingAccount.objects.select_related("owner", "group"), pk=pk)
        form = AccountConditionsForm(request.POST or None, account=account)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                changed = account_conditions_change(
                    operator=operator_of(request),
                    account=account,
                    status=data["status"],
                    group=data["group"],
                    leverage=data["leverage"],
                    reason=data["reason"],
                )
            except ServiceError as exc:
                self.message_user(request, f"{exc.message} ({exc.code})", messages.ERROR)  # type: ignore[attr-defined]
            else:
                self.message_user(  # type: ignore[attr-defined]
                    request, f"Account {account}: {', '.join(changed) or 'nothing'} changed."
                )
                return HttpResponseRedirect(reverse("admin:brokerage_tradingaccount_change", args=[pk]))
        context = {
            **self.admin_site.each_context(request),
            "title": f"Status, group and leverage of account {account}",
            "account": account,
            "summary": account_summary(account=account),
            "form": form,
            "opts": TradingAccount._meta,
        }
        return TemplateResponse(request, "admin/brokerage/conditions.html", context)

    @requires(TRADE_PERMISSION)
    def trade_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        """Order entry for a client's account, and changes to its pending orders and open positions,
        through the same services as the API (reason `operator`, audited with the operator). A POST
        names its `action` and, for a change, its `target` (the order or position id)."""
        account = get_object_or_404(TradingAccount.objects.select_related("owner", "group"), pk=pk)
        operator = operator_of(request)
        action = request.POST.get("action", "") if request.method == "POST" else ""
        target = request.POST.get("target", "")
        if action not in ("", "place", "modify_order", "cancel_order", "modify_position") or (
            action not in ("", "place") and not target.isdigit()
        ):
            return HttpResponseBadRequest("Unknown action or target.")
        new_order = OrderEntryForm(request.POST if action == "place" else None)
        changing: dict[str, forms.Form] = {}
        form: forms.Form = new_order
        done = None
        try:
            if action == "place" and new_order.is_valid():
                order = services.order_submit(
                    account=account, **new_order.cleaned_data, reason=Reason.OPERATOR, actor=operator
                )
                what = f"{order.type} {order.side} {order.volume.normalize()} {order.instrument.symbol}"
                done = f"Order {order.pk} ({what}): {order.status}."
            elif action == "cancel_order":
                # The order may be gone from the page (filled, cancelled): its refusal is the page's.
                form = changing["cancel"] = forms.Form({})
                pending = get_object_or_404(Order, pk=target, account=account)
                pending = services.order_cancel(order=pending, reason=Reason.OPERATOR, actor=operator)
                done = f"Order {pending.pk}: {pending.status}."
            elif action == "modify_order":
                pending = get_object_or_404(Order, pk=target, account=account)
                form = changing[f"order-{pending.pk}"] = OrderChangeForm(
                    request.POST, prefix=f"order-{pending.pk}"
                )
                if form.is_valid():
                    services.order_modify(order=pending, **form.cleaned_data, actor=operator)
                    done = f"Order {pending.pk} modified."
            elif action == "modify_position":
                position = get_object_or_404(Position, pk=target, account=account)
                form = changing[f"position-{position.pk}"] = PositionChangeForm(
                    request.POST, prefix=f"position-{position.pk}"
                )
                if form.is_valid():
                    services.position_modify(position=position, **form.cleaned_data, actor=operator)
                    done = f"Position {position.pk}: SL/TP set."
        except ServiceError as exc:
            add_service_error(form, exc)
        if done:
            self.message_user(request, done)  # type: ignore[attr-defined]
            return HttpResponseRedirect(reverse("admin:brokerage_tradingaccount_trade", args=[pk]))
        summary = account_summary(account=account, with_position_pnl=True)
        orders = Order.objects.filter(account=account, status=OrderStatus.PENDING).order_by("pk")
        context = {
            **self.admin_site.each_context(request),
            "title": f"Trade for account {account}",
            "account": account,
            "summary": summary,
            "form": new_order,
            "cancel": changing.get("cancel"),
            "orders": [
                (
                    o,
                    changing.get(f"order-{o.pk}")
                    or OrderChangeForm(prefix=f"order-{o.pk}", initial=model_to_dict(o)),
                )
                for o in orders.select_related("instrument")
            ],
            "positions": [
                (
                    p,
                    summary.position_pnl.get(p.pk),
                    changing.get(f"position-{p.pk}")
                    or PositionChangeForm(prefix=f"position-{p.pk}", initial=model_to_dict(p)),
                )
                for p in open_positions(account=account)
            ],
            "opts": TradingAccount._meta,
        }
        refused = any(f.errors for f in (new_order, *changing.values()))
        return TemplateResponse(
            request, "admin/brokerage/trade.html", context, status=400 if refused else 200
        )

    has_trade_permission = permission_check(TRADE_PERMISSION)

    @admin.action(description="Close all open positions of the selected accounts", permissions=["trade"])
    def close_all_positions(self, request: HttpRequest, queryset: QuerySet[TradingAccount]) -> None:
        operator = operator_of(request)
        for account in queryset:
            try:
                deals = services.positions_close_bulk(
                    account=account, which="all", reason=Reason.OPERATOR, actor=operator
                )
            except ServiceError as exc:
                self.message_user(request, f"{account}: {exc.message}", messages.ERROR)  # type: ignore[attr-defined]
            else:
                self.message_user(request, f"{account}: {len(deals)} position(s) closed.")  # type: ignore[attr-defined]

    @requires("brokerage.view_position")
    def exposure_view(self, request: HttpRequest) -> HttpResponse:
        """The house exposure; `?format=json` is what the page polls to update live."""
        table = exposure_table(exposure())
        if wants_json(request):
            return live_response({"exposure": table})
        context = {
            **self.admin_site.each_context(request),
            "title": "House exposure",
            "table": table,
            "opts": TradingAccount._meta,
        }
        return TemplateResponse(request, "admin/brokerage/exposure.html", context)

    @requires("brokerage.view_tradingaccount")
    def margin_watch_view(self, request: HttpRequest) -> HttpResponse:
        """Accounts near margin call; `?format=json` is what the page polls to update live."""
        table = margin_table(accounts_near_margin_call(), empty="No account near margin call.")
        if wants_json(request):
            return live_response({"margin_watch": table})
        context = {
            **self.admin_site.each_context(request),
            "title": "Accounts near margin call",
            "table": table,
            "opts": TradingAccount._meta,
        }
        return TemplateResponse(request, "admin/brokerage/margin_watch.html", context)


class OperatorPositionMixin:
    actions: Sequence[Any] | None = ["close_positions"]

    has_trade_permission = permission_check(TRADE_PERMISSION)

    @admin.action(description="Close the selected positions at market", permissions=["trade"])
    def close_positions(self, request: HttpRequest, queryset: QuerySet[Position]) -> None:
        operator = operator_of(request)
        for position in queryset.filter(status=PositionStatus.OPEN):
            try:
                deal = services.position_close(position=position, reason=Reason.OPERATOR, actor=operator)
            except ServiceError as exc:
                self.message_user(request, f"Position {position.pk}: {exc.message}", messages.ERROR)  # type: ignore[attr-defined]
            else:
                self.message_user(request, f"Position {position.pk} closed at {deal.price}.")  # type: ignore[attr-defined]


class OperatorOrderMixin:
    actions: Sequence[Any] | None = ["cancel_orders"]

    has_trade_permission = permission_check(TRADE_PERMISSION)

    @admin.action(description="Cancel the selected pending orders", permissions=["trade"])
    def cancel_orders(self, request: HttpRequest, queryset: QuerySet[Order]) -> None:
        operator = operator_of(request)
        for order in queryset.filter(status=OrderStatus.PENDING):
            try:
                services.order_cancel(order=order, reason=Reason.OPERATOR, actor=operator)
            except ServiceError as exc:
                self.message_user(request, f"Order {order.pk}: {exc.message}", messages.ERROR)  # type: ignore[attr-defined]
            else:
                self.message_user(request, f"Order {order.pk} cancelled.")  # type: ignore[attr-defined]
