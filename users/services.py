from dataclasses import dataclass
from datetime import datetime, time
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import models, transaction
from django.utils import timezone
from django_otp.plugins.otp_static.models import StaticDevice, StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice
from rest_framework import status
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken

from kernel.clientip import current_client_ip
from kernel.errors import ServiceError
from kernel.ws import user_streams_close

from .models import (
    ApiKey,
    AuditLog,
    IdempotencyKey,
    User,
    UserSettings,
    quiet_hours_errors,
    timezone_validate,
)

ISSUE_FOR_OTHERS = "users.issue_for_others"


def api_key_issue_check(*, actor: User, user: User) -> None:
    """Whether `actor` may create a key for `user`: for oneself, or as an administrator (holding
    users.issue_for_others) for a user with no more rights than the actor's own."""
    if actor.pk == user.pk:
        return
    if not actor.has_perm(ISSUE_FOR_OTHERS):
        raise ServiceError("permission_denied", "You may create API keys for yourself only.", status_code=403)
    more = (
        (user.is_superuser and not actor.is_superuser)
        or (user.is_staff and not actor.is_staff)
        or not (actor.is_superuser or user.get_all_permissions() <= actor.get_all_permissions())
    )
    if more:
        raise ServiceError(
            "permission_denied",
            f"{user.username} has rights you do not have: no API key for them from you.",
            status_code=403,
        )


def api_key_issue(*, user: User, name: str, actor: User | None = None) -> tuple[ApiKey, str]:
    """A new key for `user` (made by `actor`, by default the user themself, as api_key_issue_check
    allows); the raw secret is returned once and never stored."""
    api_key_issue_check(actor=actor or user, user=user)
    name = name.strip()
    if not name:
        raise ServiceError("invalid", "A key needs a name.", fields={"name": ["This field is required."]})
    return ApiKey.issue(user=user, name=name)


@transaction.atomic
def api_key_revoke(*, user: User, key_id: int) -> ApiKey:
    key = ApiKey.objects.select_for_update().filter(pk=key_id, user=user).first()
    if key is None:
        raise ServiceError("not_found", "No such API key.", status_code=status.HTTP_404_NOT_FOUND)
    if key.revoked_at is None:
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])
    return key


def idempotency_keys_purge(*, now: datetime | None = None) -> int:
    """Delete the stored responses of keys older than settings.IDEMPOTENCY_KEY_TTL."""
    cutoff = (now or timezone.now()) - settings.IDEMPOTENCY_KEY_TTL
    deleted, _ = IdempotencyKey.objects.filter(created_at__lt=cutoff).delete()
    return deleted


def audit_record(
    *, actor: User, action: str, target: models.Model | None = None, details: dict[str, Any] | None = None
) -> AuditLog:
    """Record an operator action; call it inside the transaction of the action it describes."""
    return AuditLog.objects.create(
        actor=actor,
        action=action,
        object_type=target._meta.label_lower if target is not None else "",
        object_id=str(target.pk) if target is not None else "",
        object_repr=str(target)[:200] if target is not None else "",
        details=details or {},
        ip_address=current_client_ip.get() or None,
    )


def user_credentials_revoke(*, user: User) -> int:
    """Blacklists every refresh token issued to `user` that is not yet expired or blacklisted (their
    password changed, or they were deactivated) and ends their open streams once the change has
    committed (their access tokens are refused from then on by the token's password claim or by the
    inactive check). Returns how many tokens it blacklisted."""
    outstanding = OutstandingToken.objects.filter(
        user=user, expires_at__gt=timezone.now(), blacklistedtoken__isnull=True
    )
    revoked = BlacklistedToken.objects.bulk_create(
        [BlacklistedToken(token=token) for token in outstanding], ignore_conflicts=True
    )
    user_id = user.pk
    transaction.on_commit(lambda: user_streams_close(user_id))
    return len(revoked)


@dataclass(frozen=True)
class OtpEnrolment:
    config_url: str  # otpauth:// URL for an authenticator app (shown once, as a QR code)
    recovery_codes: list[str]  # one-use codes (shown once)


def staff_otp_enrol(*, user: User, enrolled_by: User | None = None) -> OtpEnrolment:
    """Give a staff user a new TOTP device and a new set of recovery codes, replacing any they had
    (a lost phone: the old device stops working at once)."""
    if not user.is_staff or not user.is_active:
        raise ServiceError("not_staff", f"{user.username} is not active staff: only staff use the admin")
    with transaction.atomic():
        TOTPDevice.objects.filter(user=user).delete()
        StaticDevice.objects.filter(user=user).delete()
        device = TOTPDevice.objects.create(user=user, name="authenticator", confirmed=True)
        recovery = StaticDevice.objects.create(user=user, name="recovery codes", confirmed=True)
        codes = [StaticToken.random_token() for _ in range(settings.OTP_RECOVERY_CODES)]
        StaticToken.objects.bulk_create([StaticToken(device=recovery, token=code) for code in codes])
        audit_record(actor=enrolled_by or user, action="user.otp_enrol", target=user)
    return OtpEnrolment(config_url=device.config_url, recovery_codes=codes)


UNSET: Any = object()


def user_settings_update(
    *,
    user: User,
    timezone_name: str = UNSET,
    quiet_hours_start: time | None = UNSET,
    quiet_hours_end: time | None = UNSET,
) -> UserSettings:
    """Changes the given settings of `user` (made on the first change); the others keep their value.
    A bad time zone or a half-given or empty quiet-hours span is a 400 naming the field."""
    with transaction.atomic():
        UserSettings.objects.bulk_create([UserSettings(user=user)], ignore_conflicts=True)
        row = UserSettings.objects.select_for_update().get(user=user)
        if timezone_name is not UNSET:
            row.timezone = timezone_name
        if quiet_hours_start is not UNSET:
            row.quiet_hours_start = quiet_hours_start
        if quiet_hours_end is not UNSET:
            row.quiet_hours_end = quiet_hours_end
        errors = quiet_hours_errors(row.quiet_hours_start, row.quiet_hours_end)
        try:
            timezone_validate(row.timezone)
        except DjangoValidationError as exc:
            errors["timezone"] = exc.messages
        if errors:
            raise ServiceError("invalid", "The settings are not valid.", fields=errors, status_code=400)
        row.save()
    return row
