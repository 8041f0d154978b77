from typing import Any, TypedDict

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

from alerts import rules
from alerts.indicators import Diagnostics, DiagnosticsJson, macdv_stage
from kernel.fields import EncryptedTextField
from kernel.sysevents import SystemEventKind
from marketdata.models import Instrument, Timeframe

# Staff and API users with it see the signals grid, its charts and GET /api/v1/signals.
SIGNALS_PERMISSION = "alerts.view_signals"
# Staff with it see the metrics page (the figures GET /metrics gives Prometheus).
METRICS_PERMISSION = "alerts.view_metrics"


class IndicatorValue(models.Model):
    """An indicator's value on one closed bar (signal and histogram where the indicator has them)."""

    instrument = models.ForeignKey(Instrument, on_delete=models.CASCADE, related_name="indicator_values")
    timeframe = models.CharField(max_length=3, choices=Timeframe.choices)
    start = models.DateTimeField(help_text="Start of the bar the value was computed on")
    name = models.CharField(max_length=20, help_text="macdv, ema12, rsi14, ...")
    value = models.DecimalField(max_digits=30, decimal_places=10)
    signal = models.DecimalField(max_digits=30, decimal_places=10, null=True, blank=True)
    histogram = models.DecimalField(max_digits=30, decimal_places=10, null=True, blank=True)
    # MACD-V only (indicators.Diagnostics); the gap ratio and liquidity tier follow from them.
    n_eff = models.PositiveIntegerField(
        null=True, blank=True, help_text="Real bars behind the ATR, of the last 200 (MACD-V)"
    )
    span = models.PositiveIntegerField(
        null=True, blank=True, help_text="Bars from the first of those real bars to the last (MACD-V)"
    )
    computed_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ("instrument", "timeframe", "name", "start")
        constraints = [
            models.UniqueConstraint(
                fields=("instrument", "timeframe", "start", "name"), name="indicatorvalue_unique_bar"
            ),
        ]
        indexes = [models.Index(fields=("instrument", "timeframe", "name", "start"))]
        permissions = [("view_signals", "Can view the MACD-V signals grid and charts")]

    def __str__(self) -> str:
        return f"{self.instrument_id} {self.timeframe} {self.name} {self.start:%Y-%m-%d %H:%M}"

    @property
    def stage(self) -> str | None:
        """MACD-V's stage on this bar (None for other indicators)."""
        if self.name != rules.MACDV:
            return None
        return macdv_stage(float(self.value), float(self.signal) if self.signal is not None else None)

    @property
    def diagnostics(self) -> Diagnostics | None:
        if self.n_eff is None or self.span is None:
            return None
        return Diagnostics(n_eff=self.n_eff, span=self.span)


class NotificationChannel(models.Model):
    """Where a user's alerts go: a Discord webhook. The URL holds a token, so it is encrypted at
    rest, write-only in the admin and the API, and never logged."""

    class Kind(models.TextChoices):
        DISCORD = "discord", "Discord webhook"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="alert_channels"
    )
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.DISCORD)
    webhook_url = EncryptedTextField()
    enabled = models.BooleanField(default=True)
    disabled_reason = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ("user", "name")
        permissions = [("test_notificationchannel", "Can send a test message to a notification channel")]

    def __str__(self) -> str:
        return self.name


class AlertPreferences(models.Model):
    """A user's trading defaults: the symbols and timeframes the signals grid shows them, and the
    channel a new alert rule of theirs goes to. A user without a row has none; the row is made on the
    first change. Their time zone and quiet hours are users.UserSettings."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True, related_name="alert_preferences"
    )
    default_symbols = models.ManyToManyField(Instrument, blank=True, related_name="+")
    default_timeframes = ArrayField(
        models.CharField(max_length=3, choices=Timeframe.choices), default=list, blank=True
    )
    default_channel = models.ForeignKey(
        NotificationChannel,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        help_text="New alert rules made without a channel go to this one",
    )

    class Meta:
        verbose_name_plural = "alert preferences"

    def __str__(self) -> str:
        return f"alert preferences of {self.user_id}"

    def clean(self) -> None:
        if self.default_channel is not None and self.default_channel.user_id != self.user_id:
            raise ValidationError({"default_channel": ["Not a channel of this user."]})
        self.default_timeframes = timeframes_ordered(self.default_timeframes)


def timeframes_ordered(timeframes: list[str]) -> list[str]:
    """Each timeframe once, shortest first (1m ... 1d)."""
    return [tf for tf in Timeframe.values if tf in timeframes]


class AlertRuleQuerySet(models.QuerySet["AlertRule"]):
    def active(self, *, now: Any = None) -> "AlertRuleQuerySet":
        now = now or timezone.now()
        return self.filter(status=AlertRule.Status.ACTIVE).exclude(expires_at__lte=now)


class AlertRule(models.Model):
    """A user's price/indicator condition or MACD-V preset on one symbol and timeframe."""

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        PAUSED = "paused", "Paused"
        TRIGGERED = "triggered", "Triggered (once)"
        EXPIRED = "expired", "Expired"
        STOPPED = "stopped", "Stopped (triggered too often)"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="alert_rules")
    name = models.CharField(max_length=100, blank=True)
    # Where its alerts go: this channel only, or, when none, every enabled channel of the owner.
    channel = models.ForeignKey(
        NotificationChannel,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="rules",
        help_text="Send to this channel only; empty: every enabled channel of the owner",
    )
    instrument = models.ForeignKey(Instrument, on_delete=models.CASCADE, related_name="alert_rules")
    timeframe = models.CharField(max_length=3, choices=Timeframe.choices)
    kind = models.CharField(
        max_length=16, choices=[(k.value, k.name.title()) for k in rules.Kind], default=rules.Kind.CONDITION
    )
    source = models.CharField(
        max_length=40,
        default=rules.PRICE,
        help_text="'price', a bar field (close, high...) or an indicator key such as ema12, rsi14, macdv",
    )
    condition = models.CharField(
        max_length=24, choices=[(c.value, c.value.replace("_", " ")) for c in rules.Condition], blank=True
    )
    threshold = models.DecimalField(
        max_digits=24,
        decimal_places=10,
        null=True,
        blank=True,
        help_text="The level, the channel's lower bound, or the amount (percentage) for moving (%)",
    )
    upper = models.DecimalField(
        max_digits=24, decimal_places=10, null=True, blank=True, help_text="The channel's upper bound"
    )
    other = models.CharField(
        max_length=40, blank=True, help_text="Compare with this series instead of the threshold"
    )
    bars = models.PositiveSmallIntegerField(default=1, help_text="N for moving (%) over N bars")
    frequency = models.CharField(
        max_length=24,
        choices=[(f.value, f.value.replace("_", " ")) for f in rules.Frequency],
        default=rules.Frequency.ONCE_PER_BAR_CLOSE,
    )
    expires_at = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    # rules.RuleState: latches, cooldowns, last firing bar. Written only by the evaluation services.
    state = models.JSONField(default=dict, blank=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)
    last_fired_at = models.DateTimeField(null=True, blank=True, editable=False)

    objects = AlertRuleQuerySet.as_manager()

    class Meta:
        ordering = ("user", "instrument", "timeframe", "id")
        indexes = [models.Index(fields=("instrument", "timeframe", "status"), name="alertrule_series_status")]

    def __str__(self) -> str:
        return self.name or f"{self.instrument_id} {self.timeframe} {self.kind}"

    def spec_errors(self) -> dict[str, list[str]]:
        return rules.validate_spec(
            kind=self.kind,
            source=self.source,
            condition=self.condition,
            threshold=self.threshold,
            upper=self.upper,
            other=self.other,
            bars=self.bars,
            frequency=self.frequency,
        )

    def clean(self) -> None:
        errors = self.spec_errors()
        if self.channel is not None and self.channel.user_id != self.user_id:
            errors["channel"] = ["Not a channel of the rule's owner."]
        if errors:
            raise ValidationError(errors)

    @property
    def live(self) -> bool:
        return rules.is_live(
            kind=self.kind,
            source=self.source,
            condition=self.condition,
            other=self.other,
            frequency=self.frequency,
        )

    def to_rule(self, symbol: str) -> rules.Rule:
        return rules.Rule(
            id=self.pk,
            symbol=symbol,
            timeframe=self.timeframe,
            kind=rules.Kind(self.kind),
            source=self.source,
            condition=rules.Condition(self.condition) if self.condition else None,
            threshold=self.threshold,  # stays Decimal on price rules: see rules.Rule.exact
            upper=self.upper,
            other=self.other,
            bars=self.bars,
            frequency=rules.Frequency(self.frequency),
            expires_at=self.expires_at.timestamp() if self.expires_at else None,
            state=rules.RuleState.from_json(self.state),
            version=self.updated_at.isoformat() if self.updated_at else "",
        )


class AlertSeriesState(models.Model):
    """The last evaluated bar of a (symbol, timeframe): its values (the "previous" values crossings
    compare with), a short history (moving %, charts) and when it was evaluated."""

    symbol = models.CharField(max_length=20)
    timeframe = models.CharField(max_length=3, choices=Timeframe.choices)
    bar_start = models.DateTimeField(null=True)
    values = models.JSONField(default=dict)
    history = models.JSONField(default=dict)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ("symbol", "timeframe")
        constraints = [
            models.UniqueConstraint(fields=("symbol", "timeframe"), name="alerts_seriesstate_unique")
        ]

    def __str__(self) -> str:
        return f"{self.symbol} {self.timeframe}"

    def to_state(self) -> rules.SeriesState:
        return rules.SeriesState(
            symbol=self.symbol,
            timeframe=self.timeframe,
            bar_start=int(self.bar_start.timestamp()) if self.bar_start else None,
            values=rules.SeriesState.values_from_json(self.values),
            starts=list(self.history.get("starts", [])),
            history=dict(self.history.get("history", {})),
        )


class AlertPayload(TypedDict):
    """An `alert` frame's data on the `alerts` channel (and its snapshot's items)."""

    id: int
    rule: int
    symbol: str
    timeframe: str
    bar_start: str
    label: str
    title: str
    value: str
    price: str | None
    direction: str
    bias: str | None
    stages: dict[str, str] | None  # each timeframe's MACD-V stage when it fired
    diagnostics: DiagnosticsJson | None  # MACD-V diagnostics of the alert's timeframe
    fired_at: str


class AlertEvent(models.Model):
    """The alert history: one row per (rule, bar, label), inserted once."""

    rule = models.ForeignKey(AlertRule, on_delete=models.CASCADE, related_name="events")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="alert_events")
    symbol = models.CharField(max_length=20)
    timeframe = models.CharField(max_length=3, choices=Timeframe.choices)
    bar_start = models.DateTimeField()
    label = models.CharField(max_length=64)
    title = models.CharField(max_length=256)
    value = models.DecimalField(max_digits=30, decimal_places=10)
    price = models.DecimalField(max_digits=24, decimal_places=10, null=True)
    direction = models.CharField(max_length=8, choices=[(d.value, d.value) for d in rules.Direction])
    # The six timeframes' MACD-V, the bias and the chart's series, as the engine saw them.
    payload = models.JSONField(default=dict)
    fired_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ("-fired_at", "-id")
        constraints = [
            models.UniqueConstraint(fields=("rule", "bar_start", "label"), name="alertevent_unique_firing")
        ]
        indexes = [models.Index(fields=("user", "-fired_at"), name="alertevent_user_recent")]

    def __str__(self) -> str:
        return self.title

    def to_wire(self) -> AlertPayload:
        return {
            "id": self.pk,
            "rule": self.rule_id,
            "symbol": self.symbol,
            "timeframe": self.timeframe,
            "bar_start": self.bar_start.isoformat(),
            "label": self.label,
            "title": self.title,
            "value": str(self.value),
            "price": str(self.price) if self.price is not None else None,
            "direction": self.direction,
            "bias": self.payload.get("bias"),
            "stages": self.payload.get("stages"),
            "diagnostics": self.payload.get("diagnostics"),
            "fired_at": self.fired_at.isoformat(),
        }


class SystemEventRoute(models.Model):
    """Where one kind of system event goes: a channel, or nowhere (silenced). A kind without a route
    is not sent."""

    kind = models.CharField(max_length=32, choices=SystemEventKind.choices, unique=True)
    channel = models.ForeignKey(
        NotificationChannel, on_delete=models.PROTECT, null=True, blank=True, related_name="system_routes"
    )
    silenced = models.BooleanField(default=False)

    class Meta:
        ordering = ("kind",)
        constraints = [
            models.CheckConstraint(
                condition=models.Q(silenced=True) | models.Q(channel__isnull=False),
                name="systemeventroute_channel_or_silenced",
            )
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} -> {'silenced' if self.silenced else self.channel}"


class SystemNoticeItem(TypedDict):
    subject: str
    text: str
    at: str


class SystemNotice(models.Model):
    """System events of one kind grouped into one message: every event of the kind for the channel
    that comes while the message waits to be sent is added to it."""

    kind = models.CharField(max_length=32, choices=SystemEventKind.choices)
    items = models.JSONField(default=list)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ("-created_at", "-id")
        permissions = [("view_metrics", "Can view the system metrics page")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} ({len(self.items)})"

    @property
    def title(self) -> str:
        label = self.get_kind_display()
        if len(self.items) == 1:
            return f"{label}: {self.items[0]['subject']}"
        return f"{label}: {len(self.items)} events"


class Notification(models.Model):
    """The outbox: one row per alert event (or grouped system notice) and channel, delivered by a
    Celery task, at least once (see services.notification_deliver): `attempt_log` tells whether a
    duplicate is possible."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"

    event = models.ForeignKey(
        AlertEvent, on_delete=models.CASCADE, null=True, blank=True, related_name="notifications"
    )
    system_notice = models.ForeignKey(
        SystemNotice, on_delete=models.CASCADE, null=True, blank=True, related_name="notifications"
    )
    # None: a system notice for the system webhook (SYSTEM_NOTIFICATION_WEBHOOK_URL), which is no row.
    channel = models.ForeignKey(
        NotificationChannel, on_delete=models.CASCADE, null=True, blank=True, related_name="notifications"
    )
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveSmallIntegerField(
        default=0, help_text="Failed and successful sends, 429s aside"
    )
    rate_limited = models.PositiveSmallIntegerField(default=0, help_text="429 answers")
    next_attempt_at = models.DateTimeField(default=timezone.now)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    sent_at = models.DateTimeField(null=True, blank=True)
    message_id = models.CharField(max_length=32, blank=True)
    # One entry per request: {at, status (0: no answer), outcome, ms, error, message_id}.
    attempt_log = models.JSONField(default=list, blank=True, editable=False)
    # Set, and committed, before a request goes out; cleared with its outcome. Still set past its
    # time: the worker died mid-request (the requeue job sends the row again at once).
    in_flight_until = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ("-created_at", "-id")
        constraints = [
            models.UniqueConstraint(fields=("event", "channel"), name="notification_unique_event_channel"),
            models.CheckConstraint(
                condition=models.Q(event__isnull=True) ^ models.Q(system_notice__isnull=True),
                name="notification_event_or_system_notice",
            ),
            models.CheckConstraint(
                condition=models.Q(channel__isnull=False) | models.Q(system_notice__isnull=False),
                name="notification_channel_or_system_notice",
            ),
        ]
        indexes = [models.Index(fields=("status", "next_attempt_at"), name="notification_due")]

    def __str__(self) -> str:
        return f"#{self.pk} {self.status}"

    @property
    def maybe_duplicated(self) -> bool:
        """Sent after a request that got no answer: that one may have been posted as well."""
        return self.status == self.Status.SENT and any(
            entry.get("outcome") == "unknown" for entry in self.attempt_log
        )
