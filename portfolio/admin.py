from typing import Any

from django import forms
from django.contrib import admin
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join

from kernel.admin import ReadOnlyAdmin
from marketdata.adapters.coinbase import CoinbaseSigner

from . import selectors, services, tasks
from .models import CoinbaseFill, CoinbaseLink, Holding, PortfolioPrice
from .valuation import Valuation, currency_code, plain


def valuation_text(valuation: Valuation) -> str:
    text = (
        f"{valuation.total_value} {valuation.currency} at the bid; cost basis "
        f"{valuation.total_cost_basis}, unrealized PnL {valuation.total_unrealized_pnl}"
    )
    if valuation.unpriced:
        reasons = "; ".join(
            f"{h.currency}: {h.unpriced_reason}" for h in valuation.holdings if h.value is None
        )
        text += f". Not priced, left out of the totals: {reasons}"
    return text


class CoinbaseLinkForm(forms.ModelForm[CoinbaseLink]):
    """The key is write-only: never shown; leaving both boxes empty keeps the stored one."""

    new_api_key_name = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False),
        label="API key name",
        help_text="organizations/{org_id}/apiKeys/{key_id}. Leave empty to keep the stored key.",
    )
    new_private_key_pem = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 4, "autocomplete": "off"}),
        label="Private key",
        help_text="The PEM private key. Never displayed again once saved.",
    )

    currency = forms.CharField(
        required=False,
        max_length=10,
        help_text="The account currency the portfolio is valued in (e.g. USD). Empty keeps the current one.",
    )

    class Meta:
        model = CoinbaseLink
        fields = ("user", "enabled", "currency")

    def clean_currency(self) -> str:
        raw = self.cleaned_data.get("currency") or ""
        try:
            return currency_code(raw) if raw.strip() else ""
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from exc

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        name, pem = data.get("new_api_key_name", "").strip(), data.get("new_private_key_pem", "").strip()
        if name or pem or self.instance.pk is None:
            if not (name and pem):
                raise forms.ValidationError("Give both the API key name and the private key.")
            try:
                CoinbaseSigner(name, pem)
            except ValueError as exc:
                raise forms.ValidationError({"new_private_key_pem": str(exc)}) from exc
        return data


@admin.register(CoinbaseLink)
class CoinbaseLinkAdmin(admin.ModelAdmin[CoinbaseLink]):
    form = CoinbaseLinkForm
    list_display = ("user", "enabled", "currency", "total_value", "status", "last_synced_at", "last_error")
    list_filter = ("status", "enabled")
    list_select_related = ("user",)
    readonly_fields = (
        "status",
        "last_error",
        "last_synced_at",
        "orders_synced_until",
        "fills_synced_until",
        "valuation",
    )
    search_fields = ("user__username",)
    autocomplete_fields = ("user",)
    actions = ("sync_now",)

    def get_readonly_fields(self, request: HttpRequest, obj: CoinbaseLink | None = None) -> Any:
        return (*self.readonly_fields, "user") if obj is not None else self.readonly_fields

    def save_model(self, request: HttpRequest, obj: CoinbaseLink, form: Any, change: bool) -> None:
        """Through the services: a new key resets the sync state, else only `enabled` changes."""
        name = form.cleaned_data.get("new_api_key_name", "").strip()
        if name:
            link = services.coinbase_link_set(
                user=obj.user,
                api_key_name=name,
                private_key_pem=form.cleaned_data["new_private_key_pem"],
                enabled=obj.enabled,
            )
        else:
            link = services.coinbase_link_enable(link=obj, enabled=obj.enabled)
        if currency := form.cleaned_data.get("currency", "").strip():
            services.portfolio_currency_set(link=link, currency=currency)
        obj.pk = link.pk
        obj.refresh_from_db()

    @admin.display(description="Value at the bid")
    def total_value(self, obj: CoinbaseLink) -> str:
        valuation = selectors.portfolio_valuation_for(user=obj.user)
        return f"{valuation.total_value} {valuation.currency}" + (
            "" if valuation.complete else " (incomplete)"
        )

    @admin.display(description="Valuation (at the bid)")
    def valuation(self, obj: CoinbaseLink) -> str:
        if obj.pk is None:
            return "-"
        valuation = selectors.portfolio_valuation_for(user=obj.user)
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    h.currency,
                    plain(h.quantity),
                    h.product_id or "-",
                    plain(h.bid) if h.bid is not None else "-",
                    h.conversion_product or "-",
                    h.value if h.value is not None else h.unpriced_reason,
                    h.cost_basis if h.cost_basis is not None else "-",
                    h.unrealized_pnl if h.unrealized_pnl is not None else "-",
                )
                for h in valuation.holdings
            ),
        )
        return format_html(
            "<p>{}</p><table><tr><th>Currency</th><th>Quantity</th><th>Priced on</th><th>Bid</th>"
            "<th>Converted through</th><th>Value ({})</th><th>Cost basis</th><th>Unrealized PnL</th></tr>"
            "{}</table>",
            valuation_text(valuation),
            valuation.currency,
            rows,
        )

    @admin.action(description="Sync now", permissions=["change"])
    def sync_now(self, request: HttpRequest, queryset: Any) -> None:
        ids = list(queryset.values_list("pk", flat=True))
        for link_id in ids:
            tasks.sync_portfolio.delay_on_commit(link_id)
        self.message_user(request, f"{len(ids)} portfolio sync(s) queued.")


@admin.register(Holding)
class HoldingAdmin(ReadOnlyAdmin):
    list_select_related = ("user",)
    list_display = ("user", "currency", "name", "available", "hold", "synced_at")
    list_filter = ("currency",)
    search_fields = ("user__username", "currency")


@admin.register(CoinbaseFill)
class CoinbaseFillAdmin(ReadOnlyAdmin):
    list_select_related = ("user",)
    list_display = (
        "user",
        "trade_time",
        "product_id",
        "side",
        "size",
        "price",
        "commission",
        "trade_type",
        "order_id",
    )
    list_filter = ("side", "trade_type", "product_id")
    search_fields = ("user__username", "order_id", "trade_id", "product_id")
    date_hierarchy = "trade_time"


@admin.register(PortfolioPrice)
class PortfolioPriceAdmin(ReadOnlyAdmin):
    list_select_related = ("user",)
    list_display = ("user", "product_id", "bid", "ask", "venue_time", "synced_at")
    search_fields = ("user__username", "product_id")
