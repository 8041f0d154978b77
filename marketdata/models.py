from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models
from django.utils import timezone

from kernel.credentials import DestinationBoundCredentials
from kernel.fields import EncryptedTextField


class VenueKind(models.TextChoices):
    SIMULATOR = "simulator", "Simulator"
    COINBASE = "coinbase", "Coinbase Advanced Trade"
    BINANCE = "binance", "Binance"
    OANDA = "oanda", "OANDA v20"
    FIX = "fix", "FIX 4.4 LP"


ENDPOINT_WORDS = ("url", "host", "port", "endpoint")


class Venue(DestinationBoundCredentials):
    """A liquidity provider or price source. Lower priority number wins selection.

    A venue is live or simulated: the simulator kind always is, and so is any venue marked `demo`
    (e.g. a FIX session to the LP simulator). A simulated price never prices a symbol that has a live
    venue enabled, and a live deployment (settings.LIVERMORE_DEMO off) never uses one at all.
    """

    code = models.SlugField(max_length=32, unique=True)
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=16, choices=VenueKind.choices)
    enabled = models.BooleanField(default=True)
    priority = models.PositiveSmallIntegerField(default=10)
    demo = models.BooleanField(
        default=False,
        help_text="Simulated prices (a test LP or simulator behind a real protocol): never used for a "
        "symbol that has a live venue, never used at all in a live deployment.",
    )
    stale_after_ms = models.PositiveIntegerField(default=5000, validators=[MinValueValidator(100)])
    # Non-secret connection settings (endpoints, seeds, account ids); secrets go in `credentials`.
    config = models.JSONField(default=dict, blank=True)
    # A JSON object of secrets (API keys, tokens, PEM keys), encrypted at rest, write-only in the UI.
    credentials = EncryptedTextField(blank=True, default="")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ("priority", "code")
        permissions = [
            ("import_instruments", "Can import instruments from a venue's catalogue"),
            ("change_watchlist", "Can add and remove the symbols a venue quotes"),
        ]

    # A new kind or endpoint (a config key naming a URL, host or port) needs the credentials entered
    # again (kernel/credentials.py).
    credential_fields = ("credentials",)

    def __str__(self) -> str:
        return self.code

    def destination(self) -> tuple[object, ...]:
        config = self.config if isinstance(self.config, dict) else {}
        endpoints = sorted(
            (k, str(v)) for k, v in config.items() if any(w in k.lower() for w in ENDPOINT_WORDS)
        )
        return (self.kind, tuple(endpoints))

    @property
    def simulated(self) -> bool:
        return venue_simulated(kind=self.kind, demo=self.demo)

    def clean(self) -> None:
        if self.enabled and self.simulated and not settings.LIVERMORE_DEMO:
            raise ValidationError(
                {"enabled": "A simulated venue cannot be enabled: this deployment is live (LIVERMORE_DEMO)."}
            )


def venue_simulated(*, kind: str, demo: bool) -> bool:
    """Whether a venue's prices are simulated: the one rule (SIMULATED is the same as a filter)."""
    return demo or kind == VenueKind.SIMULATOR


SIMULATED = models.Q(demo=True) | models.Q(kind=VenueKind.SIMULATOR)


class Instrument(models.Model):
    """A tradable symbol with its contract specification."""

    symbol = models.CharField(max_length=20, unique=True)
    description = models.CharField(max_length=100, blank=True)
    base_currency = models.CharField(max_length=10)
    quote_currency = models.CharField(max_length=10)
    contract_size = models.DecimalField(
        max_digits=20, decimal_places=8, validators=[MinValueValidator(Decimal(0))]
    )
    digits = models.PositiveSmallIntegerField(help_text="Decimals of a price: those of the tick size.")
    tick_size = models.DecimalField(
        max_digits=20,
        decimal_places=10,
        blank=True,
        validators=[MinValueValidator(Decimal("1e-10"))],
        help_text="The smallest price step, not always a power of ten (0.5). "
        "Left empty: 1 unit of the last digit.",
    )
    pip_size = models.DecimalField(max_digits=20, decimal_places=10)
    volume_min = models.DecimalField(max_digits=20, decimal_places=8)
    volume_max = models.DecimalField(max_digits=20, decimal_places=8)
    volume_step = models.DecimalField(max_digits=20, decimal_places=8)
    margin_rate = models.DecimalField(
        max_digits=10,
        decimal_places=6,
        default=Decimal(1),
        help_text="Multiplier on the group's margin requirement (1 = as leveraged).",
    )
    tradable = models.BooleanField(default=True)

    class Meta:
        ordering = ("symbol",)
        constraints = [
            models.CheckConstraint(
                condition=models.Q(volume_min__gt=0), name="instrument_volume_min_positive"
            ),
            models.CheckConstraint(
                condition=models.Q(volume_max__gte=models.F("volume_min")),
                name="instrument_volume_max_ge_min",
            ),
            models.CheckConstraint(
                condition=models.Q(volume_step__gt=0), name="instrument_volume_step_positive"
            ),
            models.CheckConstraint(condition=models.Q(tick_size__gt=0), name="instrument_tick_size_positive"),
        ]

    def __str__(self) -> str:
        return self.symbol

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.tick_size is None:
            self.tick_size = Decimal(1).scaleb(-self.digits)
        super().save(*args, **kwargs)

    def clean(self) -> None:
        if self.tick_size is not None and self.digits is not None:
            exponent = self.tick_size.normalize().as_tuple().exponent
            if isinstance(exponent, int) and -exponent > self.digits:
                tick = self.tick_size.normalize()
                raise ValidationError(
                    {"tick_size": f"A tick of {tick} needs more than {self.digits} digits."}
                )


class VenueSymbol(models.Model):
    """How a venue names an instrument (EUR_USD at OANDA, BTC-USD at Coinbase, btcusdt at Binance)."""

    venue = models.ForeignKey(Venue, on_delete=models.CASCADE, related_name="symbols")
    instrument = models.ForeignKey(Instrument, on_delete=models.CASCADE, related_name="venue_symbols")
    venue_symbol = models.CharField(max_length=40)
    enabled = models.BooleanField(default=True)
    priority = models.PositiveSmallIntegerField(
        null=True,
        blank=True,
        help_text="Overrides the venue's priority for this instrument (lower wins); empty uses the venue's.",
    )

    class Meta:
        ordering = ("venue", "instrument")
        constraints = [
            models.UniqueConstraint(fields=("venue", "instrument"), name="venuesymbol_unique_instrument"),
            models.UniqueConstraint(fields=("venue", "venue_symbol"), name="venuesymbol_unique_name"),
        ]

    def __str__(self) -> str:
        return f"{self.venue.code}:{self.venue_symbol}"


class FeedHealthSnapshot(models.Model):
    """Periodic record of which venue each symbol is priced from and how fresh it is (beat job)."""

    taken_at = models.DateTimeField(default=timezone.now, db_index=True)
    symbol = models.CharField(max_length=20)
    venue = models.CharField(max_length=32, blank=True)
    bid = models.DecimalField(max_digits=24, decimal_places=10, null=True)
    ask = models.DecimalField(max_digits=24, decimal_places=10, null=True)
    seq = models.BigIntegerField(null=True)
    age_ms = models.BigIntegerField(null=True)
    tradable = models.BooleanField(default=False)

    class Meta:
        ordering = ("-taken_at", "symbol")
        get_latest_by = "taken_at"

    def __str__(self) -> str:
        return f"{self.symbol}@{self.taken_at:%Y-%m-%d %H:%M:%S}"


class Timeframe(models.TextChoices):
    M1 = "1m", "1 minute"
    M5 = "5m", "5 minutes"
    M15 = "15m", "15 minutes"
    H1 = "1h", "1 hour"
    H4 = "4h", "4 hours"
    D1 = "1d", "1 day"


class CandleSource(models.TextChoices):
    TRADES = "trades", "Trades"
    MID = "mid", "Mid (tick volume)"
    BACKFILL = "backfill", "Venue backfill"
    IMPORT = "import", "Imported history"


class Candle(models.Model):
    """A closed OHLC bar of the selected venue: built live from its trades (real volume) or its mid
    (tick volume only), or the venue's own bar fetched by a backfill. Never reopened; a locally
    built bar is replaced once by the venue's own when a backfill brings it."""

    instrument = models.ForeignKey(Instrument, on_delete=models.CASCADE, related_name="candles")
    timeframe = models.CharField(max_length=3, choices=Timeframe.choices)
    start = models.DateTimeField()
    open = models.DecimalField(max_digits=24, decimal_places=10)
    high = models.DecimalField(max_digits=24, decimal_places=10)
    low = models.DecimalField(max_digits=24, decimal_places=10)
    close = models.DecimalField(max_digits=24, decimal_places=10)
    volume = models.DecimalField(max_digits=28, decimal_places=10, default=Decimal(0))
    tick_count = models.PositiveIntegerField(default=0)
    source = models.CharField(max_length=16, choices=CandleSource.choices, default=CandleSource.MID)
    venue = models.CharField(
        max_length=32, blank=True, default="", help_text="Code of the venue it came from."
    )
    partial = models.BooleanField(
        default=False,
        help_text="A live bar whose period began before the market loop was running, or fed by two "
        "venues (a failover inside it).",
    )
    replaced = models.BooleanField(
        default=False, help_text="A backfilled venue bar that replaced a bar built here."
    )
    suspect = models.CharField(
        max_length=200,
        blank=True,
        default="",
        help_text="Why an imported bar is implausible (a move of many times its file's median range): "
        "kept for the record, not to be trusted.",
    )

    class Meta:
        ordering = ("instrument", "timeframe", "start")
        constraints = [
            models.UniqueConstraint(fields=("instrument", "timeframe", "start"), name="candle_unique_bar"),
            models.CheckConstraint(condition=models.Q(high__gte=models.F("low")), name="candle_high_ge_low"),
        ]

    def __str__(self) -> str:
        return f"{self.instrument_id} {self.timeframe} {self.start:%Y-%m-%d %H:%M}"


class BackfillJob(models.Model):
    """One requested backfill of a (instrument, venue, timeframe) window, with its progress saved
    after every page so the admin can show it while it runs."""

    class State(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    instrument = models.ForeignKey(Instrument, on_delete=models.CASCADE, related_name="backfill_jobs")
    venue = models.ForeignKey(Venue, on_delete=models.CASCADE, related_name="backfill_jobs")
    timeframe = models.CharField(max_length=3, choices=Timeframe.choices)
    start = models.DateTimeField()
    end = models.DateTimeField()
    state = models.CharField(max_length=8, choices=State.choices, default=State.QUEUED, db_index=True)
    pages = models.PositiveIntegerField(default=0)
    bars_fetched = models.PositiveIntegerField(default=0)
    bars_added = models.PositiveIntegerField(default=0)
    bars_replaced = models.PositiveIntegerField(
        default=0, help_text="Bars built here (from trades or the mid) replaced by the venue's own."
    )
    rate_limit_waits = models.PositiveIntegerField(default=0)
    error = models.CharField(max_length=300, blank=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-created_at", "-id")
        permissions = [("run_backfill", "Can run candle backfills")]

    def __str__(self) -> str:
        return f"{self.instrument_id} {self.timeframe} from venue {self.venue_id} ({self.state})"
