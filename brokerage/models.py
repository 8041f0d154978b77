"""Client groups, trading accounts, orders, positions, deals and the double-entry ledger.

Writes go through brokerage.services only. Database rules the code cannot be trusted to keep alone
live in migrations as triggers: postings and ledger transactions are append-only, and every ledger
transaction balances to zero in its own currency (a deferred constraint trigger, checked at commit).
"""

from decimal import Decimal

from django.conf import settings
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models.functions import Now
from django.utils import timezone

from marketdata.models import Instrument

from .payloads import AccountPayload, DealPayload, OrderPayload, PositionPayload


def _s(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


class MarginMode(models.TextChoices):
    HEDGING = "hedging", "Hedging (many positions per symbol)"
    NETTING = "netting", "Netting (one position per symbol)"


class MarkupUnit(models.TextChoices):
    PRICE = "price", "Price units"
    PIPS = "pips", "Pips"


class Book(models.TextChoices):
    A = "A", "A-Book (routed to an LP)"
    B = "B", "B-Book (internalised)"


class ClientGroup(models.Model):
    """Trading conditions shared by a set of accounts."""

    name = models.CharField(max_length=64, unique=True)
    currency = models.CharField(max_length=10)
    leverage = models.PositiveIntegerField(validators=[MinValueValidator(1)])
    margin_mode = models.CharField(max_length=8, choices=MarginMode.choices, default=MarginMode.HEDGING)
    margin_call_level = models.DecimalField(
        max_digits=8, decimal_places=2, default=Decimal(100), help_text="Margin level in percent."
    )
    stop_out_level = models.DecimalField(
        max_digits=8, decimal_places=2, default=Decimal(50), help_text="Margin level in percent."
    )
    markup_unit = models.CharField(max_length=8, choices=MarkupUnit.choices, default=MarkupUnit.PRICE)
    markup_default = models.DecimalField(
        max_digits=24,
        decimal_places=10,
        default=Decimal(0),
        help_text="Added to the ask and taken off the bid, for instruments without their own markup.",
    )
    negative_balance_protection = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ("name",)
        constraints = [
            models.CheckConstraint(condition=models.Q(leverage__gte=1), name="clientgroup_leverage_positive"),
            models.CheckConstraint(
                condition=models.Q(stop_out_level__lt=models.F("margin_call_level")),
                name="clientgroup_stop_out_below_margin_call",
            ),
            models.CheckConstraint(
                condition=models.Q(markup_default__gte=0), name="clientgroup_markup_non_negative"
            ),
        ]

    def __str__(self) -> str:
        return self.name


class Weekday(models.IntegerChoices):
    MONDAY = 0, "Monday"
    TUESDAY = 1, "Tuesday"
    WEDNESDAY = 2, "Wednesday"
    THURSDAY = 3, "Thursday"
    FRIDAY = 4, "Friday"
    SATURDAY = 5, "Saturday"
    SUNDAY = 6, "Sunday"


class GroupInstrument(models.Model):
    """Per-instrument conditions of a group: commission, markup override, swaps, trading switch."""

    group = models.ForeignKey(ClientGroup, on_delete=models.CASCADE, related_name="instruments")
    instrument = models.ForeignKey(Instrument, on_delete=models.CASCADE, related_name="group_settings")
    enabled = models.BooleanField(default=True)
    commission_per_lot = models.DecimalField(
        max_digits=24,
        decimal_places=8,
        default=Decimal(0),
        validators=[MinValueValidator(Decimal(0))],
        help_text="Charged on every deal (open and close), in the account currency.",
    )
    markup = models.DecimalField(
        max_digits=24,
        decimal_places=10,
        null=True,
        blank=True,
        help_text="Overrides the group's default markup (same unit).",
    )
    swap_long = models.DecimalField(
        max_digits=24,
        decimal_places=8,
        default=Decimal(0),
        help_text="Per lot per day in the account currency; negative charges.",
    )
    swap_short = models.DecimalField(
        max_digits=24,
        decimal_places=8,
        default=Decimal(0),
        help_text="Per lot per day in the account currency; negative charges.",
    )
    swap_triple_weekday = models.PositiveSmallIntegerField(
        choices=Weekday.choices,
        null=True,
        blank=True,
        default=Weekday.WEDNESDAY,
        help_text="Five-day markets (FX): the rollover charging three days (the weekend), none on "
        "Saturday and Sunday. Blank for markets open every day (crypto): one day per rollover.",
    )

    class Meta:
        ordering = ("group", "instrument")
        constraints = [
            models.UniqueConstraint(fields=("group", "instrument"), name="groupinstrument_unique"),
            models.CheckConstraint(
                condition=models.Q(commission_per_lot__gte=0), name="groupinstrument_commission_non_negative"
            ),
            models.CheckConstraint(
                condition=models.Q(markup__gte=0) | models.Q(markup__isnull=True),
                name="groupinstrument_markup_non_negative",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.group_id}:{self.instrument_id}"


class AccountStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    CLOSE_ONLY = "close_only", "Close only"
    DISABLED = "disabled", "Disabled"


class TradingAccount(models.Model):
    """A client's trading account. `balance` is a cache of the sum of its ledger postings, updated
    by ledger_post in the same transaction as the postings (tests check the equality in SQL)."""

    number = models.BigIntegerField(
        unique=True,
        db_default=models.Func(models.Value("brokerage_account_number_seq"), function="nextval"),
    )
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="accounts")
    group = models.ForeignKey(ClientGroup, on_delete=models.PROTECT, related_name="accounts")
    currency = models.CharField(max_length=10)
    status = models.CharField(max_length=10, choices=AccountStatus.choices, default=AccountStatus.ACTIVE)
    leverage = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="Overrides the group's leverage for this account; blank uses the group's.",
    )
    balance = models.DecimalField(max_digits=24, decimal_places=8, default=Decimal(0), editable=False)
    margin_call_at = models.DateTimeField(
        null=True, blank=True, editable=False, help_text="Set while the account is in margin call."
    )
    margin_reserved = models.DecimalField(
        max_digits=24,
        decimal_places=8,
        default=Decimal(0),
        editable=False,
        help_text="Margin held for routed (A-Book) orders until the LP fills or ends them: the sum of "
        "their Order.margin, kept in step under the account lock.",
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ("number",)
        # The operator rights beyond the model defaults; users/roles.py gives them to the roles.
        permissions = [
            ("trade_for_client", "Can trade for clients: place, modify, cancel orders, close positions"),
            ("open_account", "Can open client accounts"),
            ("change_conditions", "Can change an account's status, group and leverage"),
            ("reset_client_password", "Can reset a client's password"),
            ("deposit", "Can deposit to client accounts"),
            ("withdraw", "Can withdraw from client accounts"),
            ("adjust", "Can adjust client balances"),
            ("bonus", "Can credit bonuses"),
            ("approve_cash", "Can approve or reject another operator's four-eyes cash operation"),
            (
                "override_negative_adjustment",
                "Can adjust a balance or free margin below zero (audited)",
            ),
        ]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(leverage__gte=1) | models.Q(leverage__isnull=True),
                name="tradingaccount_leverage_positive",
            ),
            models.CheckConstraint(
                condition=models.Q(margin_reserved__gte=0), name="tradingaccount_margin_reserved_non_negative"
            ),
        ]

    def __str__(self) -> str:
        return str(self.number)

    @property
    def effective_leverage(self) -> int:
        return self.leverage or self.group.leverage

    @property
    def stream_group(self) -> str:
        return f"account.{self.number}"

    @property
    def stream_channel(self) -> str:
        return f"account:{self.number}"

    def as_event(self) -> AccountPayload:
        return {
            "number": self.number,
            "currency": self.currency,
            "status": self.status,
            "balance": str(self.balance),
        }


class Side(models.TextChoices):
    BUY = "buy", "Buy"
    SELL = "sell", "Sell"


class OrderType(models.TextChoices):
    MARKET = "market", "Market"
    LIMIT = "limit", "Limit"
    STOP = "stop", "Stop"
    STOP_LIMIT = "stop_limit", "Stop limit"


class TimeInForce(models.TextChoices):
    GTC = "gtc", "Good till cancelled"
    GTD = "gtd", "Good till date (expires_at)"


class OrderStatus(models.TextChoices):
    PENDING = "pending", "Pending (waiting for its trigger)"
    ROUTED = "routed", "Routed to an LP (A-Book), waiting for its fill"
    FILLED = "filled", "Filled"
    CANCELLED = "cancelled", "Cancelled"
    REJECTED = "rejected", "Rejected"
    EXPIRED = "expired", "Expired"


class Reason(models.TextChoices):
    """Why an order, deal or position change happened."""

    CLIENT = "client", "Client"
    OPERATOR = "operator", "Operator"
    PENDING = "pending", "Pending order triggered"
    SL = "sl", "Stop loss"
    TP = "tp", "Take profit"
    STOP_OUT = "stop_out", "Stop out"
    EXPIRY = "expiry", "Expired"
    INSUFFICIENT_MARGIN = "insufficient_margin", "Insufficient margin at trigger"
    LP = "lp", "Liquidity provider"


class Order(models.Model):
    account = models.ForeignKey(TradingAccount, on_delete=models.PROTECT, related_name="orders")
    instrument = models.ForeignKey(Instrument, on_delete=models.PROTECT, related_name="orders")
    client_order_id = models.CharField(max_length=64, blank=True, default="")
    type = models.CharField(max_length=10, choices=OrderType.choices)
    side = models.CharField(max_length=4, choices=Side.choices)
    volume = models.DecimalField(max_digits=20, decimal_places=8)
    price = models.DecimalField(
        max_digits=24, decimal_places=10, null=True, blank=True, help_text="Limit price."
    )
    stop_price = models.DecimalField(
        max_digits=24, decimal_places=10, null=True, blank=True, help_text="Stop trigger price."
    )
    sl = models.DecimalField(max_digits=24, decimal_places=10, null=True, blank=True)
    tp = models.DecimalField(max_digits=24, decimal_places=10, null=True, blank=True)
    time_in_force = models.CharField(max_length=3, choices=TimeInForce.choices, default=TimeInForce.GTC)
    expires_at = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=10, choices=OrderStatus.choices)
    reason = models.CharField(
        max_length=20, choices=Reason.choices, default=Reason.CLIENT, help_text="Who or what placed it."
    )
    close_reason = models.CharField(
        max_length=20, choices=Reason.choices, blank=True, default="", help_text="Why it ended unfilled."
    )
    book = models.CharField(max_length=1, choices=Book.choices, default=Book.B)
    route = models.CharField(
        max_length=64, blank=True, default="", help_text="A-Book: the LP session the router chose."
    )
    margin = models.DecimalField(
        max_digits=24,
        decimal_places=8,
        default=Decimal(0),
        help_text="Routed: margin held for the unfilled volume, in the account currency.",
    )
    close_text = models.CharField(max_length=200, blank=True, default="", help_text="Why the LP ended it.")
    position = models.ForeignKey(
        "Position",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="closing_orders",
        help_text="The position this order closes (position_close), if any.",
        db_index=False,  # order_position_idx: only the orders that have one
    )
    stop_triggered_at = models.DateTimeField(null=True, blank=True, help_text="Stop-limit: stop reached.")
    filled_volume = models.DecimalField(max_digits=20, decimal_places=8, default=Decimal(0))
    fill_price = models.DecimalField(
        max_digits=24, decimal_places=10, null=True, blank=True, help_text="Average price of its fills."
    )
    filled_at = models.DateTimeField(null=True, blank=True)
    external_id = models.CharField(max_length=64, blank=True, default="", help_text="LP order id (A-Book).")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ("-id",)
        constraints = [
            models.UniqueConstraint(
                fields=("account", "client_order_id"),
                condition=~models.Q(client_order_id=""),
                name="order_unique_client_order_id",
            ),
            models.CheckConstraint(condition=models.Q(volume__gt=0), name="order_volume_positive"),
            models.CheckConstraint(
                condition=~models.Q(time_in_force="gtd") | models.Q(expires_at__isnull=False),
                name="order_gtd_has_expiry",
            ),
            models.CheckConstraint(
                condition=models.Q(filled_volume__gte=0, filled_volume__lte=models.F("volume")),
                name="order_filled_volume_in_range",
            ),
        ]
        indexes = [
            models.Index(fields=("status",), condition=models.Q(status="pending"), name="order_pending_idx"),
            models.Index(
                fields=("created_at",), condition=models.Q(status="routed"), name="order_routed_idx"
            ),
            # Most orders open a position and close none: the market order path need not index them.
            models.Index(
                fields=("position",), condition=models.Q(position__isnull=False), name="order_position_idx"
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.side} {self.volume} {self.instrument_id}"

    def as_event(self) -> OrderPayload:
        return {
            "id": self.pk,
            "client_order_id": self.client_order_id,
            "symbol": self.instrument.symbol,
            "type": self.type,
            "side": self.side,
            "volume": str(self.volume),
            "price": _s(self.price),
            "stop_price": _s(self.stop_price),
            "sl": _s(self.sl),
            "tp": _s(self.tp),
            "time_in_force": self.time_in_force,
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            "status": self.status,
            "reason": self.reason,
            "close_reason": self.close_reason,
            "book": self.book,
            "route": self.route,
            "close_text": self.close_text,
            "position": self.position_id,
            "filled_volume": str(self.filled_volume),
            "fill_price": _s(self.fill_price),
        }


class PositionStatus(models.TextChoices):
    OPEN = "open", "Open"
    CLOSED = "closed", "Closed"


class Position(models.Model):
    """An open exposure. Hedging accounts hold many per symbol; netting accounts at most one
    (kept by order_submit under the account lock)."""

    # No index of its own: position_account_status_idx (account, status) leads with it.
    account = models.ForeignKey(
        TradingAccount, on_delete=models.PROTECT, related_name="positions", db_index=False
    )
    instrument = models.ForeignKey(Instrument, on_delete=models.PROTECT, related_name="positions")
    side = models.CharField(max_length=4, choices=Side.choices)
    volume = models.DecimalField(
        max_digits=20, decimal_places=8, help_text="Open volume in lots (0 once closed)."
    )
    open_price = models.DecimalField(
        max_digits=24, decimal_places=10, help_text="Volume-weighted average entry price."
    )
    margin = models.DecimalField(
        max_digits=24,
        decimal_places=8,
        help_text="Margin held for the open volume, in the account currency at open.",
    )
    sl = models.DecimalField(max_digits=24, decimal_places=10, null=True, blank=True)
    tp = models.DecimalField(max_digits=24, decimal_places=10, null=True, blank=True)
    status = models.CharField(max_length=6, choices=PositionStatus.choices, default=PositionStatus.OPEN)
    close_reason = models.CharField(max_length=20, choices=Reason.choices, blank=True, default="")
    close_price = models.DecimalField(
        max_digits=24, decimal_places=10, null=True, blank=True, help_text="Price of the last exit."
    )
    realized_pnl = models.DecimalField(max_digits=24, decimal_places=8, default=Decimal(0))
    commission = models.DecimalField(max_digits=24, decimal_places=8, default=Decimal(0))
    swap = models.DecimalField(max_digits=24, decimal_places=8, default=Decimal(0))
    swap_through = models.DateField(null=True, blank=True, help_text="Last day swaps were charged for.")
    opened_at = models.DateTimeField(default=timezone.now)
    closed_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ("-id",)
        constraints = [
            models.CheckConstraint(condition=models.Q(volume__gte=0), name="position_volume_non_negative"),
            models.CheckConstraint(
                condition=models.Q(status="closed") | models.Q(volume__gt=0),
                name="position_open_has_volume",
            ),
        ]
        indexes = [
            models.Index(fields=("account", "status"), name="position_account_status_idx"),
            models.Index(fields=("status",), condition=models.Q(status="open"), name="position_open_idx"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.side} {self.volume} {self.instrument_id}"

    def as_event(self) -> PositionPayload:
        return {
            "id": self.pk,
            "symbol": self.instrument.symbol,
            "side": self.side,
            "volume": str(self.volume),
            "open_price": str(self.open_price),
            "margin": str(self.margin),
            "sl": _s(self.sl),
            "tp": _s(self.tp),
            "status": self.status,
            "close_reason": self.close_reason,
            "close_price": _s(self.close_price),
            "realized_pnl": str(self.realized_pnl),
            "commission": str(self.commission),
            "swap": str(self.swap),
        }


class DealEntry(models.TextChoices):
    IN = "in", "In (opens or adds)"
    OUT = "out", "Out (reduces or closes)"


class Deal(models.Model):
    """One fill. Money fields are in the account currency, signed from the client's side."""

    account = models.ForeignKey(TradingAccount, on_delete=models.PROTECT, related_name="deals")
    order = models.ForeignKey(Order, on_delete=models.PROTECT, related_name="deals")
    position = models.ForeignKey(Position, on_delete=models.PROTECT, related_name="deals")
    instrument = models.ForeignKey(Instrument, on_delete=models.PROTECT, related_name="deals")
    side = models.CharField(max_length=4, choices=Side.choices)
    entry = models.CharField(max_length=3, choices=DealEntry.choices)
    volume = models.DecimalField(max_digits=20, decimal_places=8)
    price = models.DecimalField(max_digits=24, decimal_places=10)
    commission = models.DecimalField(max_digits=24, decimal_places=8, default=Decimal(0))
    realized_pnl = models.DecimalField(max_digits=24, decimal_places=8, default=Decimal(0))
    reason = models.CharField(max_length=20, choices=Reason.choices)
    book = models.CharField(max_length=1, choices=Book.choices, default=Book.B)
    external_id = models.CharField(
        max_length=64, blank=True, default="", help_text="LP execution id (A-Book fills)."
    )
    # Where the price came from, so a fill can be traced to the exact quote: the venue code and the
    # per-symbol seq of the selected quote (the seq on the stream and in the ticks); an A-Book fill
    # has the LP's venue and no seq (the LP's execution report priced it).
    venue = models.CharField(max_length=32, blank=True, default="", help_text="Venue that priced the fill.")
    quote_seq = models.BigIntegerField(
        null=True, blank=True, help_text="Seq of the selected quote that priced it (none for LP fills)."
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ("-id",)
        constraints = [
            models.CheckConstraint(condition=models.Q(volume__gt=0), name="deal_volume_positive"),
            models.UniqueConstraint(
                fields=("external_id",), condition=~models.Q(external_id=""), name="deal_unique_external_id"
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.entry} {self.side} {self.volume} @ {self.price}"

    def as_event(self) -> DealPayload:
        return {
            "id": self.pk,
            "order": self.order_id,
            "position": self.position_id,
            "symbol": self.instrument.symbol,
            "side": self.side,
            "entry": self.entry,
            "volume": str(self.volume),
            "price": str(self.price),
            "commission": str(self.commission),
            "realized_pnl": str(self.realized_pnl),
            "reason": self.reason,
            "venue": self.venue,
            "quote_seq": self.quote_seq,
        }


class LedgerAccountKind(models.TextChoices):
    CLIENT = "client", "Client trading account"
    CASH = "cash", "House cash (deposits and withdrawals)"
    REVENUE = "revenue", "House revenue (commissions)"
    PNL = "pnl", "House dealing PnL (B-Book counterparty)"
    SWAP = "swap", "House swaps"
    BONUS = "bonus", "House bonuses"
    ADJUSTMENT = "adjustment", "House adjustments"
    COMPENSATION = "compensation", "House negative-balance compensation"
    HELD = "held", "House withdrawals held pending approval"


class LedgerAccount(models.Model):
    """A ledger account: one per trading account, and one per (house kind, currency).
    House balances are derived by summing postings, never cached, so no hot row serialises fills."""

    kind = models.CharField(max_length=12, choices=LedgerAccountKind.choices)
    currency = models.CharField(max_length=10)
    trading_account = models.OneToOneField(
        TradingAccount, on_delete=models.PROTECT, null=True, blank=True, related_name="ledger_account"
    )

    class Meta:
        ordering = ("kind", "currency")
        constraints = [
            models.CheckConstraint(
                condition=(models.Q(kind="client") & models.Q(trading_account__isnull=False))
                | (~models.Q(kind="client") & models.Q(trading_account__isnull=True)),
                name="ledgeraccount_client_has_trading_account",
            ),
            models.UniqueConstraint(
                fields=("kind", "currency"),
                condition=~models.Q(kind="client"),
                name="ledgeraccount_one_house_account_per_currency",
            ),
        ]

    def __str__(self) -> str:
        if self.trading_account_id:
            return f"client:{self.trading_account_id}"
        return f"house:{self.kind}:{self.currency}"


class TransactionKind(models.TextChoices):
    DEPOSIT = "deposit", "Deposit"
    WITHDRAWAL = "withdrawal", "Withdrawal"
    COMMISSION = "commission", "Commission"
    REALIZED_PNL = "realized_pnl", "Realized PnL"
    SWAP = "swap", "Swap"
    ADJUSTMENT = "adjustment", "Adjustment"
    BONUS = "bonus", "Bonus"
    NEGATIVE_BALANCE_COMPENSATION = "negative_balance_compensation", "Negative balance compensation"
    WITHDRAWAL_HOLD = "withdrawal_hold", "Withdrawal held pending approval"
    WITHDRAWAL_RELEASE = "withdrawal_release", "Held withdrawal released (rejected)"


class LedgerTransaction(models.Model):
    """A balanced set of postings. Append-only (database trigger)."""

    kind = models.CharField(max_length=32, choices=TransactionKind.choices)
    currency = models.CharField(max_length=10)
    order = models.ForeignKey(Order, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    deal = models.ForeignKey(Deal, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    position = models.ForeignKey(Position, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    comment = models.CharField(max_length=255, blank=True, default="")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    # indexed: the kill switch sums the day's house postings every few seconds
    created_at = models.DateTimeField(db_default=Now(), editable=False, db_index=True)

    class Meta:
        ordering = ("-id",)

    def __str__(self) -> str:
        return f"#{self.pk} {self.kind} {self.currency}"


class Posting(models.Model):
    """One leg of a ledger transaction. Append-only (database trigger); amounts in the currency's
    minor units, signed: positive credits the ledger account."""

    transaction = models.ForeignKey(LedgerTransaction, on_delete=models.PROTECT, related_name="postings")
    ledger_account = models.ForeignKey(LedgerAccount, on_delete=models.PROTECT, related_name="postings")
    amount = models.DecimalField(max_digits=24, decimal_places=8)

    class Meta:
        ordering = ("id",)
        constraints = [models.CheckConstraint(condition=~models.Q(amount=0), name="posting_amount_non_zero")]

    def __str__(self) -> str:
        return f"{self.ledger_account_id} {self.amount:+}"


class CashOperationKind(models.TextChoices):
    DEPOSIT = "deposit", "Deposit"
    WITHDRAWAL = "withdrawal", "Withdrawal"
    ADJUSTMENT = "adjustment", "Adjustment"
    BONUS = "bonus", "Bonus"


class PaymentMethod(models.TextChoices):
    BANK = "bank", "Bank transfer"
    CRYPTO = "crypto", "Crypto"
    CARD = "card", "Card"
    MANUAL = "manual", "Manual"
    BONUS = "bonus", "Bonus"


class CashStatus(models.TextChoices):
    PENDING = "pending", "Pending a second operator's approval"
    REJECTED = "rejected", "Rejected"
    APPLIED = "applied", "Applied to the ledger"


class CashOperation(models.Model):
    """A deposit, withdrawal, adjustment or bonus: the ledger entry as the back office sees it, with its
    payment method, external reference and status. One above the four-eyes threshold waits `pending`
    until a second operator approves it (`decided_by`, then applied at once) or rejects it; a pending
    withdrawal holds its funds in the house `held` account (`hold`). Who did what and when is kept on
    the row and in the audit log (cash.pending, cash.approved, cash.applied, cash.rejected)."""

    account = models.ForeignKey(TradingAccount, on_delete=models.PROTECT, related_name="cash_operations")
    kind = models.CharField(max_length=10, choices=CashOperationKind.choices)
    amount = models.DecimalField(
        max_digits=24, decimal_places=8, help_text="Signed for adjustments; positive otherwise."
    )
    currency = models.CharField(max_length=10)
    method = models.CharField(max_length=8, choices=PaymentMethod.choices, default=PaymentMethod.MANUAL)
    external_ref = models.CharField(
        max_length=128, blank=True, default="", help_text="The payment's id at the bank, chain or gateway."
    )
    comment = models.CharField(max_length=255, blank=True, default="")
    status = models.CharField(max_length=8, choices=CashStatus.choices)
    override = models.BooleanField(
        default=False, help_text="A negative adjustment allowed below zero balance or free margin."
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="cash_operations_made"
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="cash_operations_decided",
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    decision_comment = models.CharField(max_length=255, blank=True, default="")
    applied_at = models.DateTimeField(null=True, blank=True)
    hold = models.ForeignKey(
        LedgerTransaction, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    transaction = models.ForeignKey(
        LedgerTransaction, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ("-id",)
        constraints = [
            models.UniqueConstraint(
                fields=("method", "external_ref"),
                condition=~models.Q(external_ref=""),
                name="cashoperation_unique_external_ref",
            ),
            models.CheckConstraint(condition=~models.Q(amount=0), name="cashoperation_amount_non_zero"),
            models.CheckConstraint(
                condition=~models.Q(status="applied") | models.Q(transaction__isnull=False),
                name="cashoperation_applied_has_transaction",
            ),
        ]
        indexes = [
            models.Index(fields=("status",), condition=models.Q(status="pending"), name="cash_pending_idx")
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.kind} {self.amount} {self.currency} ({self.status})"


class TradingScope(models.TextChoices):
    GLOBAL = "global", "Global"
    VENUE = "venue", "Venue"
    INSTRUMENT = "instrument", "Instrument"
    GROUP = "group", "Client group"


class TradingStatus(models.TextChoices):
    """The kill switch's states, from the least to the most restrictive (SEVERITY)."""

    ACTIVE = "active", "Active"
    REDUCE_ONLY = "reduce_only", "Reduce-only"
    HALTED = "halted", "Halted"


SEVERITY = {TradingStatus.ACTIVE: 0, TradingStatus.REDUCE_ONLY: 1, TradingStatus.HALTED: 2}


class TradingStateSource(models.TextChoices):
    MANUAL = "manual", "Manual"
    STALE_PRICE = "auto_stale_price", "Auto: stale price"
    DAILY_LOSS = "auto_daily_loss", "Auto: daily loss"


_SCOPE_TARGETS: dict[str, tuple[str, ...]] = {
    TradingScope.GLOBAL: (),
    TradingScope.VENUE: ("venue",),
    TradingScope.INSTRUMENT: ("instrument",),
    TradingScope.GROUP: ("group",),
}


def _scope_condition(scope: str) -> models.Q:
    condition = models.Q(scope=scope)
    for field in ("venue", "instrument", "group"):
        condition &= models.Q(**{f"{field}__isnull": field not in _SCOPE_TARGETS[scope]})
    return condition


class TradingState(models.Model):
    """The kill switch of one scope: everything, a venue (the one pricing a deal or taking an A-Book
    order), an instrument or a client group. An order is dealt under the most restrictive state of the
    scopes it falls in (brokerage.services.checks.trading_state_check). Changed only through
    brokerage.services.trading_state_set, which records every change in TradingStateChange."""

    scope = models.CharField(max_length=16, choices=TradingScope.choices)
    venue = models.ForeignKey(
        "marketdata.Venue", on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    instrument = models.ForeignKey(
        Instrument, on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    group = models.ForeignKey(ClientGroup, on_delete=models.CASCADE, null=True, blank=True, related_name="+")
    state = models.CharField(max_length=16, choices=TradingStatus.choices, default=TradingStatus.ACTIVE)
    reason = models.CharField(max_length=255, blank=True, default="")
    source = models.CharField(
        max_length=20, choices=TradingStateSource.choices, default=TradingStateSource.MANUAL
    )
    auto_resume = models.BooleanField(
        default=False, help_text="An automatic state goes back to active once its cause clears."
    )
    set_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    set_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ("scope", "id")
        permissions = [("set_trading_state", "Can set trading states (the kill switch)")]
        constraints = [
            models.CheckConstraint(
                condition=_scope_condition(TradingScope.GLOBAL)
                | _scope_condition(TradingScope.VENUE)
                | _scope_condition(TradingScope.INSTRUMENT)
                | _scope_condition(TradingScope.GROUP),
                name="tradingstate_scope_target",
            ),
            models.UniqueConstraint(
                fields=("scope",), condition=models.Q(scope="global"), name="tradingstate_one_global"
            ),
            models.UniqueConstraint(fields=("venue",), name="tradingstate_one_per_venue"),
            models.UniqueConstraint(fields=("instrument",), name="tradingstate_one_per_instrument"),
            models.UniqueConstraint(fields=("group",), name="tradingstate_one_per_group"),
        ]

    def __str__(self) -> str:
        return f"{self.target}: {self.get_state_display()}"

    @property
    def target(self) -> str:
        """What the state covers: "global", "venue sim", "instrument EURUSD", "group standard"."""
        if self.scope == TradingScope.VENUE:
            return f"venue {self.venue}"
        if self.scope == TradingScope.INSTRUMENT:
            return f"instrument {self.instrument}"
        if self.scope == TradingScope.GROUP:
            return f"group {self.group}"
        return "global"


class TradingStateChange(models.Model):
    """Every change of a trading state, manual or automatic (append-only; an operator's is also in the
    audit log)."""

    trading_state = models.ForeignKey(TradingState, on_delete=models.CASCADE, related_name="changes")
    target = models.CharField(max_length=140)
    state_before = models.CharField(max_length=16, choices=TradingStatus.choices)
    state = models.CharField(max_length=16, choices=TradingStatus.choices)
    source = models.CharField(max_length=20, choices=TradingStateSource.choices)
    reason = models.CharField(max_length=255, blank=True, default="")
    auto_resume = models.BooleanField(default=False)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ("-id",)

    def __str__(self) -> str:
        return f"{self.target}: {self.state_before} -> {self.state}"
