from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import models, transaction
from django.utils import timezone
from django_otp.plugins.otp_static.models import StaticDevice, StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice
from rest_framework import status

from kernel.errors import ServiceError

from .models import ApiKey, AuditLog, IdempotencyKey, User


def api_key_issue(*, user: User, name: str) -> tuple[ApiKey, str]:
    """A new key for `user`; the raw secret is returned once and never stored."""
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
    )


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
