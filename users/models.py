import functools
import hashlib
import secrets
import zoneinfo
from datetime import datetime, time, timedelta

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

from kernel import sql

API_KEY_PREFIX_LEN = 8


class User(AbstractUser):
    """A person: an operator (is_staff) or a client who owns trading accounts."""


class ApiKeyManager(models.Manager["ApiKey"]):
    def live_by_prefix(self, prefix: str) -> "ApiKey | None":
        """The unrevoked key with this prefix, with its user (the secret is not checked here)."""
        # A prepared statement, not an ORM query compiled per call: bot requests ask for it.
        found = sql.select(ApiKey, "t.prefix = %s AND t.revoked_at IS NULL", [prefix], related="user")
        return found[0] if found else None


class ApiKey(models.Model):
    """A bot's credential: shown once at creation, stored as a SHA-256 hash."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=API_KEY_PREFIX_LEN, unique=True, editable=False)
    hashed = models.CharField(max_length=64, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = ApiKeyManager()

    class Meta:
        permissions = [("issue_for_others", "Can create API keys for other users")]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @staticmethod
    def hash(raw: str) -> str:
        return hashlib.sha256(raw.encode()).hexdigest()

    @classmethod
    def issue(cls, *, user: User, name: str) -> tuple["ApiKey", str]:
        """Create a key; the raw secret is returned once and never stored."""
        prefix = secrets.token_hex(API_KEY_PREFIX_LEN // 2)
        raw = f"{prefix}.{secrets.token_urlsafe(32)}"
        return cls.objects.create(user=user, name=name, prefix=prefix, hashed=cls.hash(raw)), raw


class IdempotencyKey(models.Model):
    """The stored outcome of a POST sent with an `Idempotency-Key` header (see users/idempotency.py).

    The row is inserted in the same transaction that runs the request, so a concurrent duplicate
    blocks on the unique constraint until the first one commits, then replays its response."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="idempotency_keys"
    )
    key = models.CharField(max_length=255)
    method = models.CharField(max_length=10)
    path = models.CharField(max_length=2000)
    request_hash = models.CharField(max_length=64)
    response_status = models.PositiveSmallIntegerField(null=True)
    response_body = models.JSONField(null=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "key"], name="idempotency_key_unique")]

    def __str__(self) -> str:
        return f"{self.method} {self.path} [{self.key}]"


class AuditLog(models.Model):
    """Who did what to which object, for every operator action. Append-only (read-only in the admin)."""

    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="audit_entries"
    )
    action = models.CharField(max_length=64)
    object_type = models.CharField(max_length=100, blank=True, default="")
    object_id = models.CharField(max_length=64, blank=True, default="")
    object_repr = models.CharField(max_length=200, blank=True, default="")
    details = models.JSONField(default=dict, blank=True)
    # The client address as the web server resolved it (kernel/clientip.py); none outside a request.
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False, db_index=True)

    class Meta:
        ordering = ("-id",)
        indexes = [models.Index(fields=("object_type", "object_id"), name="auditlog_object_idx")]

    def __str__(self) -> str:
        return f"{self.actor_id} {self.action} {self.object_repr}"


@functools.cache
def _zone_names() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def timezone_validate(name: str) -> None:
    """An IANA time zone name (Europe/London, America/New_York, UTC) that zoneinfo knows."""
    if name not in _zone_names():
        raise ValidationError(f"Unknown time zone {name!r}: give an IANA name such as Europe/London.")


def quiet_hours_until(*, start: time, end: time, zone: zoneinfo.ZoneInfo, now: datetime) -> datetime | None:
    """When quiet hours from `start` to `end` (wall-clock times in `zone`; a start after the end
    crosses midnight) that hold at `now` end, as an aware datetime; None when `now` is outside them."""
    local = now.astimezone(zone)
    at = local.time().replace(tzinfo=None)
    quiet = start <= at < end if start < end else at >= start or at < end
    if not quiet:
        return None
    day = local.date() if at < end else local.date() + timedelta(days=1)
    # Wall-clock arithmetic, then back to an instant: a DST change between now and the end is kept.
    return datetime.combine(day, end, tzinfo=zone)


class UserSettings(models.Model):
    """A person's own settings that need no trading data: the time zone the console and their alert
    messages show times in, and their alert quiet hours (wall-clock times in that zone). A user
    without a row has the defaults (UTC, no quiet hours); the row is made on the first change.
    Their trading defaults (symbols, timeframes, notification channel) are alerts.AlertPreferences."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True, related_name="settings"
    )
    timezone = models.CharField(
        max_length=64,
        default="UTC",
        validators=[timezone_validate],
        help_text="IANA name, e.g. Europe/London",
    )
    quiet_hours_start = models.TimeField(
        null=True, blank=True, help_text="Alerts are held from this time (in the user's time zone)"
    )
    quiet_hours_end = models.TimeField(
        null=True, blank=True, help_text="... until this time, then delivered; may be past midnight"
    )

    class Meta:
        verbose_name_plural = "user settings"
        permissions = [("change_own_settings", "Can change their own settings")]
        constraints = [
            models.CheckConstraint(
                condition=(
                    models.Q(quiet_hours_start__isnull=True, quiet_hours_end__isnull=True)
                    | (
                        models.Q(quiet_hours_start__isnull=False, quiet_hours_end__isnull=False)
                        & ~models.Q(quiet_hours_start=models.F("quiet_hours_end"))
                    )
                ),
                name="usersettings_quiet_hours_pair",
            )
        ]

    def __str__(self) -> str:
        return f"settings of {self.user_id}"

    def clean(self) -> None:
        errors = quiet_hours_errors(self.quiet_hours_start, self.quiet_hours_end)
        if errors:
            raise ValidationError(errors)

    @property
    def zone(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.timezone)

    def quiet_until(self, now: datetime) -> datetime | None:
        """The end of the quiet hours holding at `now`, or None."""
        if self.quiet_hours_start is None or self.quiet_hours_end is None:
            return None
        return quiet_hours_until(
            start=self.quiet_hours_start, end=self.quiet_hours_end, zone=self.zone, now=now
        )


def quiet_hours_errors(start: time | None, end: time | None) -> dict[str, list[str]]:
    if (start is None) != (end is None):
        missing = "quiet_hours_end" if end is None else "quiet_hours_start"
        return {missing: ["Give both the start and the end of the quiet hours, or neither."]}
    if start is not None and start == end:
        return {"quiet_hours_end": ["The quiet hours must end at another time than they start."]}
    return {}
