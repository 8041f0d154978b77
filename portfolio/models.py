from decimal import Decimal

from django.conf import settings
from django.db import models
from django.utils import timezone

from livermore.fields import EncryptedTextField


class SyncStatus(models.TextChoices):
    NEVER = "never", "Never synced"
    OK = "ok", "OK"
    FAILED = "failed", "Failed"


class CoinbaseLink(models.Model):
    """A user's Coinbase API key (a view-only key is enough), used to mirror their portfolio.

    Both secrets are encrypted at rest and write-only in the admin and the API."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="coinbase_link"
    )
    api_key_name = EncryptedTextField()
    private_key_pem = EncryptedTextField()
    enabled = models.BooleanField(default=True)
    status = models.CharField(max_length=8, choices=SyncStatus.choices, default=SyncStatus.NEVER)
    last_error = models.CharField(max_length=500, blank=True)
    last_synced_at = models.DateTimeField(null=True, blank=True)
    # Orders created before this were fetched by an earlier sync; the next asks only for newer ones.
    orders_synced_until = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    def __str__(self) -> str:
        return f"Coinbase link of {self.user}"


class Holding(models.Model):
    """One Coinbase account (a currency wallet) of a user, as of the last successful sync."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="holdings")
    account_uuid = models.CharField(max_length=64)
    currency = models.CharField(max_length=16)
    name = models.CharField(max_length=100, blank=True)
    available = models.DecimalField(max_digits=38, decimal_places=18, default=Decimal(0))
    hold = models.DecimalField(max_digits=38, decimal_places=18, default=Decimal(0))
    synced_at = models.DateTimeField()

    class Meta:
        ordering = ("user", "currency")
        constraints = [
            models.UniqueConstraint(fields=("user", "account_uuid"), name="holding_unique_account")
        ]

    def __str__(self) -> str:
        return f"{self.currency} {self.available}"

    @property
    def total(self) -> Decimal:
        return self.available + self.hold


class CoinbaseOrder(models.Model):
    """An open or filled Coinbase order of a user, upserted by order_id."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="coinbase_orders"
    )
    order_id = models.CharField(max_length=64)
    product_id = models.CharField(max_length=32)
    side = models.CharField(max_length=8)
    status = models.CharField(max_length=24)
    order_type = models.CharField(max_length=24, blank=True)
    created_time = models.DateTimeField()
    last_fill_time = models.DateTimeField(null=True, blank=True)
    filled_size = models.DecimalField(max_digits=38, decimal_places=18, default=Decimal(0))
    average_filled_price = models.DecimalField(max_digits=38, decimal_places=18, default=Decimal(0))
    filled_value = models.DecimalField(max_digits=38, decimal_places=18, default=Decimal(0))
    total_fees = models.DecimalField(max_digits=38, decimal_places=18, default=Decimal(0))
    order_configuration = models.JSONField(default=dict, blank=True)
    synced_at = models.DateTimeField()

    class Meta:
        ordering = ("user", "-created_time")
        constraints = [
            models.UniqueConstraint(fields=("user", "order_id"), name="coinbaseorder_unique_order")
        ]

    def __str__(self) -> str:
        return f"{self.side} {self.product_id} {self.status}"
