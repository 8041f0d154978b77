from typing import Any

from django import forms
from django.contrib import admin
from django.http import HttpRequest

from livermore.admin import ReadOnlyAdmin
from marketdata.adapters.coinbase import CoinbaseSigner

from . import services, tasks
from .models import CoinbaseLink, CoinbaseOrder, Holding


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

    class Meta:
        model = CoinbaseLink
        fields = ("user", "enabled")

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
    list_display = ("user", "enabled", "status", "last_synced_at", "last_error")
    list_filter = ("status", "enabled")
    list_select_related = ("user",)
    readonly_fields = ("status", "last_error", "last_synced_at", "orders_synced_until")
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
        obj.pk = link.pk
        obj.refresh_from_db()

    @admin.action(description="Sync now")
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


@admin.register(CoinbaseOrder)
class CoinbaseOrderAdmin(ReadOnlyAdmin):
    list_select_related = ("user",)
    list_display = (
        "user",
        "order_id",
        "product_id",
        "side",
        "status",
        "created_time",
        "filled_size",
        "average_filled_price",
    )
    list_filter = ("status", "side", "product_id")
    search_fields = ("user__username", "order_id", "product_id")
    date_hierarchy = "created_time"
