import copy
import secrets
from datetime import timedelta
from typing import Any

from django.utils import timezone
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from kernel.versions import VersionedCache

from .backends import PERMISSIONS_VERSION
from .models import ApiKey, User

LAST_USED_PRECISION = timedelta(minutes=1)
API_KEYS_VERSION = "api-keys"

# Live keys by prefix, with their users, kept per process: every bot request asks, and the statement
# cost more than the rest of the authentication. Any write to a key or a user moves one of these
# versions on after commit (users/receivers.py), so a revoked key or a deactivated user is refused
# from the next request on; the last use, written apart, is kept up to date here.
_live_keys: VersionedCache[str, ApiKey | None] = VersionedCache(
    (API_KEYS_VERSION, PERMISSIONS_VERSION), ApiKey.objects.live_by_prefix, size=10_000
)


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """`Authorization: Api-Key <prefix>.<secret>` for bots."""

    keyword = "Api-Key"

    def authenticate(self, request: Request) -> tuple[Any, ApiKey] | None:
        header = authentication.get_authorization_header(request).decode(errors="replace")
        scheme, _, raw = header.partition(" ")
        if scheme != self.keyword:
            return None
        raw = raw.strip()
        kept = _live_keys.get(raw.partition(".")[0])
        if (
            kept is None
            or not secrets.compare_digest(kept.hashed, ApiKey.hash(raw))
            or not kept.user.is_active
        ):
            raise exceptions.AuthenticationFailed("Invalid API key.", code="invalid_api_key")
        now = timezone.now()
        # A write per request would cost more than the lookup; a minute's precision is plenty.
        if kept.last_used_at is None or now - kept.last_used_at > LAST_USED_PRECISION:
            ApiKey.objects.filter(pk=kept.pk).update(last_used_at=now)
            kept.last_used_at = now
        # The request's own copies: what a request sets on its user (a permission cache) stays with it.
        key = copy.copy(kept)
        key.user = copy.copy(kept.user)
        return key.user, key

    def authenticate_header(self, request: Request) -> str:
        return self.keyword


def request_user(request: Request) -> User:
    """The authenticated user of a request that passed IsAuthenticated (typed for the callers)."""
    user = request.user
    if not isinstance(user, User):
        raise exceptions.NotAuthenticated()
    return user
