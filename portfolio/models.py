from decimal import Decimal

from django.conf import settings
from django.db import models
from django.utils import timezone

from kernel.fields import EncryptedTextField

from . import valuation


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
    # Fills posted before this were fetched by an earlier sync (their sequence_timestamp).
    fills_synced_until = models.DateTimeField(null=True, blank=True)
    currency = models.CharField(
        max_length=16,
        default="USD",
        help_text="The account currency the portfolio is valued and totalled in (e.g. USD, EUR).",
    )
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
    """A Coinbase order of a user, upserted by order_id: open, filled, or cancelled/expired after at
    least one fill (an order that ends with nothing filled is kept only if it was mirrored while open)."""

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


class CoinbaseFill(models.Model):
    """One fill from Coinbase's List Fills, upserted by entry_id (unique per fill, also for adjusted
    fills, whose trade_id repeats). `size` is in base units: for quote-sized orders Coinbase sends
    the quote amount, converted here as size / price; `raw_size` keeps what was sent."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="coinbase_fills"
    )
    entry_id = models.CharField(max_length=64)
    trade_id = models.CharField(max_length=64)
    order_id = models.CharField(max_length=64)
    product_id = models.CharField(max_length=32)
    side = models.CharField(max_length=8)
    trade_type = models.CharField(max_length=16, default="FILL")
    price = models.DecimalField(max_digits=38, decimal_places=18)
    size = models.DecimalField(max_digits=38, decimal_places=18)
    raw_size = models.DecimalField(max_digits=38, decimal_places=18)
    size_in_quote = models.BooleanField(default=False)
    commission = models.DecimalField(max_digits=38, decimal_places=18, default=Decimal(0))
    liquidity_indicator = models.CharField(max_length=32, blank=True)
    trade_time = models.DateTimeField()
    sequence_timestamp = models.DateTimeField()
    synced_at = models.DateTimeField()

    class Meta:
        ordering = ("user", "trade_time", "entry_id")
        constraints = [models.UniqueConstraint(fields=("user", "entry_id"), name="coinbasefill_unique_entry")]
        indexes = [
            models.Index(fields=("user", "product_id", "trade_time"), name="coinbasefill_product_time")
        ]

    def __str__(self) -> str:
        return f"{self.side} {self.size} {self.product_id} @ {self.price}"

    def as_fill(self) -> valuation.Fill:
        return valuation.Fill(
            entry_id=self.entry_id,
            product_id=self.product_id,
            side=self.side,
            size=self.size,
            price=self.price,
            commission=self.commission,
            trade_time=self.trade_time,
            trade_type=self.trade_type,
        )


class PortfolioPrice(models.Model):
    """Coinbase's best bid and ask for a product, fetched by a user's sync to value that user's
    holdings (so a valuation always uses the prices of its own sync). None = that side was empty."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="portfolio_prices"
    )
    product_id = models.CharField(max_length=32)
    bid = models.DecimalField(max_digits=38, decimal_places=18, null=True, blank=True)
    ask = models.DecimalField(max_digits=38, decimal_places=18, null=True, blank=True)
    venue_time = models.DateTimeField(null=True, blank=True)
    synced_at = models.DateTimeField()

    class Meta:
        ordering = ("user", "product_id")
        constraints = [
            models.UniqueConstraint(fields=("user", "product_id"), name="portfolioprice_unique_product")
        ]

    def __str__(self) -> str:
        return f"{self.product_id} {self.bid}/{self.ask}"
