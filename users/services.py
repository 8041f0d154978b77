from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import models, transaction
from django.utils import timezone
from rest_framework import status
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken

from kernel.clientip import current_client_ip
from kernel.errors import ServiceError
from kernel.ws import user_streams_close

from .models import ApiKey, AuditLog, IdempotencyKey, User

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


def user_credentials_revoke(*, user: User, close_streams: bool) -> int:
    """Blacklists every refresh token issued to `user` that is not yet expired or blacklisted (their
    password changed, or they were deactivated) and, if `close_streams`, ends their open streams once
    the change has committed. Returns how many tokens it blacklisted."""
    outstanding = OutstandingToken.objects.filter(
        user=user, expires_at__gt=timezone.now(), blacklistedtoken__isnull=True
    )
    revoked = BlacklistedToken.objects.bulk_create(
        [BlacklistedToken(token=token) for token in outstanding], ignore_conflicts=True
    )
    if close_streams:
        user_id = user.pk
        transaction.on_commit(lambda: user_streams_close(user_id))
    return len(revoked)
