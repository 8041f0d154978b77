from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

from brokerage.models import Reason
from kernel.credentials import DestinationBoundCredentials, validate_env_secret_name
from kernel.fields import EncryptedTextField


class FixRole(models.TextChoices):
    MARKET_DATA = "md", "Market data"
    TRADING = "trading", "Trading"
    BOTH = "both", "Market data and trading"


class Weekday(models.TextChoices):
    SUNDAY = "Sunday"
    MONDAY = "Monday"
    TUESDAY = "Tuesday"
    WEDNESDAY = "Wednesday"
    THURSDAY = "Thursday"
    FRIDAY = "Friday"
    SATURDAY = "Saturday"


class FixSession(DestinationBoundCredentials):
    """One FIX 4.4 initiator session to an LP. `runfix` builds QuickFIX settings from these rows in
    memory; the password never reaches a settings file, a store or a log."""

    name = models.SlugField(max_length=40, unique=True)
    begin_string = models.CharField(max_length=8, default="FIX.4.4", choices=[("FIX.4.4", "FIX 4.4")])
    sender_comp_id = models.CharField("SenderCompID", max_length=64)
    target_comp_id = models.CharField("TargetCompID", max_length=64)
    host = models.CharField(max_length=255)
    port = models.PositiveIntegerField(validators=[MinValueValidator(1), MaxValueValidator(65535)])
    tls = models.BooleanField("TLS", default=False)
    tls_ca_file = models.CharField(
        "TLS CA file",
        max_length=255,
        blank=True,
        help_text="PEM bundle to verify the LP with (path on the server); empty: the system CAs.",
    )
    heartbeat_s = models.PositiveSmallIntegerField(
        "HeartBtInt (s)", default=30, validators=[MinValueValidator(1), MaxValueValidator(300)]
    )
    reconnect_s = models.PositiveSmallIntegerField(
        "reconnect interval (s)", default=5, validators=[MinValueValidator(1), MaxValueValidator(600)]
    )
    role = models.CharField(max_length=8, choices=FixRole.choices, default=FixRole.BOTH)
    venue = models.ForeignKey(
        "marketdata.Venue",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="fix_sessions",
        limit_choices_to={"kind": "fix"},
        help_text="The venue whose symbols are subscribed and whose quotes this session provides.",
    )
    start_time = models.TimeField(null=True, blank=True, help_text="UTC. Empty with end time: always on.")
    end_time = models.TimeField(null=True, blank=True, help_text="UTC.")
    start_day = models.CharField(max_length=9, choices=Weekday.choices, blank=True)
    end_day = models.CharField(max_length=9, choices=Weekday.choices, blank=True)
    reset_on_logon = models.BooleanField(
        default=False, help_text="Send ResetSeqNumFlag on every logon (both sides start at 1)."
    )
    enabled = models.BooleanField(default=True)
    username = models.CharField("Username (553)", max_length=64, blank=True)
    password = EncryptedTextField("Password (554)", blank=True, default="")
    password_env = models.CharField(
        max_length=64,
        blank=True,
        help_text="Name of an environment variable holding the password; wins over the stored one.",
    )
    account = models.CharField("Account (1)", max_length=64, blank=True)
    log_market_data = models.BooleanField(
        default=False, help_text="Also keep market-data messages (W, X) in the message log."
    )
    relax_field_validation = models.BooleanField(
        default=False,
        help_text="Accept fields the FIX 4.4 dictionary does not define for the message (user-defined "
        "tags included) instead of answering them with a session Reject. Only for an LP that needs it.",
    )
    next_sender_seq = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="Set by the 'Set next sequence numbers' action (a cut-over from another gateway): "
        "runfix writes it to the session's store when it next starts the session, then clears it.",
    )
    next_target_seq = models.PositiveIntegerField(null=True, blank=True, validators=[MinValueValidator(1)])
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ("name",)
        # Naming an environment variable sends a secret the operator never saw to the session's host:
        # no role has it (superusers do), so changing a session cannot aim the desk's LP passwords at
        # another server.
        permissions = [("set_password_env", "Can name the environment variable of a FIX session's password")]
        constraints = [
            models.UniqueConstraint(
                fields=("begin_string", "sender_comp_id", "target_comp_id"), name="fixsession_unique_ids"
            ),
            models.CheckConstraint(
                condition=Q(role="trading") | Q(venue__isnull=False), name="fixsession_md_needs_venue"
            ),
            models.CheckConstraint(
                condition=Q(start_time__isnull=True, end_time__isnull=True)
                | Q(start_time__isnull=False, end_time__isnull=False),
                name="fixsession_schedule_times_paired",
            ),
            models.CheckConstraint(
                condition=(Q(start_day="") & Q(end_day=""))
                | (~Q(start_day="") & ~Q(end_day="") & Q(start_time__isnull=False)),
                name="fixsession_schedule_days_paired",
            ),
        ]

    # A new host, port or TLS setting needs the password entered again (kernel/credentials.py).
    credential_fields = ("password", "password_env")

    def __str__(self) -> str:
        return self.name

    def destination(self) -> tuple[object, ...]:
        return (self.host, self.port, self.tls, self.tls_ca_file)

    def clean(self) -> None:
        super().clean()
        try:
            validate_env_secret_name(self.password_env)
        except ValidationError as exc:
            raise ValidationError({"password_env": exc.messages}) from exc

    @property
    def does_market_data(self) -> bool:
        return self.role in (FixRole.MARKET_DATA, FixRole.BOTH)

    @property
    def does_trading(self) -> bool:
        return self.role in (FixRole.TRADING, FixRole.BOTH)


class Direction(models.TextChoices):
    IN = "in", "Received"
    OUT = "out", "Sent"


class FixMessage(models.Model):
    """A FIX message as sent or received, with secrets redacted. Pruned by a beat job."""

    session = models.ForeignKey(FixSession, on_delete=models.CASCADE, related_name="messages")
    direction = models.CharField(max_length=3, choices=Direction.choices)
    msg_type = models.CharField(max_length=4)
    seq = models.PositiveIntegerField()
    raw = models.TextField(help_text="SOH shown as |; 554 and other secrets redacted.")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ("-id",)
        indexes = [
            models.Index(fields=("session", "-id"), name="fixmessage_session_recent"),
            models.Index(fields=("created_at",), name="fixmessage_created"),
        ]

    def __str__(self) -> str:
        return f"{self.session_id} {self.direction} {self.msg_type} #{self.seq}"


class CommandAction(models.TextChoices):
    CONNECT = "connect", "Connect"
    DISCONNECT = "disconnect", "Disconnect"
    RESET_SEQNUMS = "reset", "Reset sequence numbers"
    POSITIONS = "positions", "Reconcile positions"


class FixCommand(models.Model):
    """An operator action for `runfix`, kept as an audit trail; runfix marks it done."""

    session = models.ForeignKey(FixSession, on_delete=models.CASCADE, related_name="commands")
    action = models.CharField(max_length=12, choices=CommandAction.choices)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    requested_at = models.DateTimeField(default=timezone.now)
    done_at = models.DateTimeField(null=True, blank=True)
    result = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ("-requested_at",)
        indexes = [models.Index(fields=("done_at",), name="fixcommand_pending")]

    def __str__(self) -> str:
        return f"{self.action} {self.session_id}"


class RoutingAction(models.TextChoices):
    A_BOOK = "A", "A-Book (to a FIX session)"
    B_BOOK = "B", "B-Book (internalise)"


class RoutingRule(models.Model):
    """Where an order goes: the first enabled rule (lowest priority number) whose conditions all
    match. Empty conditions match anything."""

    priority = models.PositiveIntegerField(default=100)
    name = models.CharField(max_length=100)
    enabled = models.BooleanField(default=True)
    group = models.ForeignKey(
        "brokerage.ClientGroup", on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    account = models.ForeignKey(
        "brokerage.TradingAccount", on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    instrument_pattern = models.CharField(
        max_length=40, default="*", help_text="Shell pattern on our symbol: *, XAU*, EURUSD, *JPY."
    )
    volume_min = models.DecimalField(max_digits=20, decimal_places=8, null=True, blank=True)
    volume_max = models.DecimalField(max_digits=20, decimal_places=8, null=True, blank=True)
    action = models.CharField(max_length=1, choices=RoutingAction.choices)
    session = models.ForeignKey(
        FixSession,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="routing_rules",
        help_text="The FIX session A-Book orders go to.",
    )

    class Meta:
        ordering = ("priority", "id")
        constraints = [
            models.CheckConstraint(
                condition=Q(action="B") | Q(session__isnull=False), name="routingrule_a_book_needs_session"
            ),
            models.CheckConstraint(
                condition=Q(volume_min__isnull=True)
                | Q(volume_max__isnull=True)
                | Q(volume_max__gte=models.F("volume_min")),
                name="routingrule_volume_range",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.priority}: {self.name}"


class FixOrderState(models.TextChoices):
    PENDING = "pending", "Pending (outbox, not sent)"
    SENT = "sent", "Sent, not acknowledged"
    NEW = "new", "New at the LP"
    PARTIALLY_FILLED = "partial", "Partially filled"
    FILLED = "filled", "Filled"
    CANCELLED = "cancelled", "Cancelled"
    EXPIRED = "expired", "Expired (good till date)"
    REJECTED = "rejected", "Rejected"


OPEN_ORDER_STATES = (FixOrderState.SENT, FixOrderState.NEW, FixOrderState.PARTIALLY_FILLED)


class FixOrder(models.Model):
    """An A-Book order at the LP, and the outbox row runfix sends from. One per brokerage order:
    ClOrdID is our order id, unique, so an order reaches the LP at most once."""

    order = models.OneToOneField("brokerage.Order", on_delete=models.PROTECT, related_name="fix_order")
    session = models.ForeignKey(FixSession, on_delete=models.PROTECT, related_name="orders")
    cl_ord_id = models.CharField("ClOrdID", max_length=64, unique=True)
    current_cl_ord_id = models.CharField(
        max_length=64, help_text="The ClOrdID of the last accepted cancel/replace, else ClOrdID."
    )
    lp_order_id = models.CharField("OrderID (37)", max_length=64, blank=True)
    symbol = models.CharField(max_length=40, help_text="The LP's symbol (55).")
    side = models.CharField(max_length=1, choices=[("1", "Buy"), ("2", "Sell")])
    ord_type = models.CharField(
        max_length=1, choices=[("1", "Market"), ("2", "Limit"), ("3", "Stop"), ("4", "Stop limit")]
    )
    time_in_force = models.CharField(max_length=1, default="1")
    expire_time = models.DateTimeField(
        "ExpireTime (126)", null=True, blank=True, help_text="When a good-till-date order ends at the LP."
    )
    quantity = models.DecimalField(max_digits=24, decimal_places=8, help_text="Units (lots x contract size).")
    contract_size = models.DecimalField(max_digits=20, decimal_places=8)
    price = models.DecimalField(max_digits=24, decimal_places=10, null=True, blank=True)
    stop_px = models.DecimalField("StopPx (99)", max_digits=24, decimal_places=10, null=True, blank=True)
    state = models.CharField(max_length=10, choices=FixOrderState.choices, default=FixOrderState.PENDING)
    cum_qty = models.DecimalField(max_digits=24, decimal_places=8, default=0)
    notional = models.DecimalField(max_digits=32, decimal_places=12, default=0)
    text = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)
    acked_at = models.DateTimeField(null=True, blank=True)
    status_requested_at = models.DateTimeField(null=True, blank=True)
    status_requests = models.PositiveSmallIntegerField(default=0)
    done_at = models.DateTimeField(null=True, blank=True)
    settled = models.BooleanField(default=False, help_text="The client's order has been booked or closed.")

    class Meta:
        ordering = ("-id",)
        indexes = [
            models.Index(
                fields=("session", "state"),
                condition=Q(state__in=["pending", "sent", "new", "partial"]),
                name="fixorder_open",
            )
        ]

    def __str__(self) -> str:
        return self.cl_ord_id

    @property
    def avg_px(self) -> Decimal | None:
        return self.notional / self.cum_qty if self.cum_qty else None

    @property
    def is_open(self) -> bool:
        return self.state in (FixOrderState.PENDING, *OPEN_ORDER_STATES)


class RequestKind(models.TextChoices):
    CANCEL = "cancel", "Cancel (F)"
    REPLACE = "replace", "Cancel/replace (G)"


class RequestState(models.TextChoices):
    PENDING = "pending", "Pending (outbox)"
    SENT = "sent", "Sent"
    ACCEPTED = "accepted", "Accepted"
    REJECTED = "rejected", "Rejected"


class FixOrderRequest(models.Model):
    """A cancel or cancel/replace of an order at the LP, sent once from this outbox row."""

    fix_order = models.ForeignKey(FixOrder, on_delete=models.CASCADE, related_name="requests")
    kind = models.CharField(max_length=8, choices=RequestKind.choices)
    cl_ord_id = models.CharField("ClOrdID", max_length=64, unique=True)
    quantity = models.DecimalField(max_digits=24, decimal_places=8, null=True, blank=True)
    price = models.DecimalField(max_digits=24, decimal_places=10, null=True, blank=True)
    state = models.CharField(max_length=8, choices=RequestState.choices, default=RequestState.PENDING)
    text = models.CharField(max_length=200, blank=True)
    reason = models.CharField(
        max_length=20,
        choices=Reason.choices,
        default=Reason.OPERATOR,
        help_text="Whose request it is: the client's order ends with this reason once the LP cancels.",
    )
    created_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(
        null=True, blank=True, help_text="When it was last sent, or last seen pending at the LP."
    )
    attempts = models.PositiveSmallIntegerField(default=0, help_text="How many times it was sent.")
    queried_at = models.DateTimeField(
        null=True, blank=True, help_text="When runfix last asked the LP for the order's status, unanswered."
    )

    class Meta:
        ordering = ("-id",)

    def __str__(self) -> str:
        return self.cl_ord_id


class FixFill(models.Model):
    """One LP execution (ExecType F). ExecID is unique per session: a repeated report is one fill."""

    fix_order = models.ForeignKey(FixOrder, on_delete=models.PROTECT, related_name="fills")
    session = models.ForeignKey(FixSession, on_delete=models.PROTECT, related_name="+")
    exec_id = models.CharField("ExecID", max_length=64)
    quantity = models.DecimalField(max_digits=24, decimal_places=8)
    price = models.DecimalField(max_digits=24, decimal_places=10)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ("-id",)
        constraints = [models.UniqueConstraint(fields=("session", "exec_id"), name="fixfill_unique_exec_id")]

    def __str__(self) -> str:
        return self.exec_id


class LpPosition(models.Model):
    """The house's net position at an LP per symbol (units, + long), from our fills."""

    session = models.ForeignKey(FixSession, on_delete=models.PROTECT, related_name="positions")
    symbol = models.CharField(max_length=40)
    quantity = models.DecimalField(max_digits=24, decimal_places=8, default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ("session", "symbol")
        constraints = [models.UniqueConstraint(fields=("session", "symbol"), name="lpposition_unique")]

    def __str__(self) -> str:
        return f"{self.session_id}:{self.symbol} {self.quantity}"


class PositionCheck(models.Model):
    """One symbol of a reconciliation against the LP's PositionReports (RequestForPositions)."""

    session = models.ForeignKey(FixSession, on_delete=models.CASCADE, related_name="position_checks")
    request_id = models.CharField("PosReqID", max_length=64)
    symbol = models.CharField(max_length=40)
    ours = models.DecimalField(max_digits=24, decimal_places=8)
    theirs = models.DecimalField(max_digits=24, decimal_places=8)
    matched = models.BooleanField()
    checked_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ("-checked_at", "symbol")
        get_latest_by = "checked_at"

    def __str__(self) -> str:
        return f"{self.session_id}:{self.symbol} {'ok' if self.matched else 'MISMATCH'}"
