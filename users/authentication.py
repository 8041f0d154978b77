import copy
import secrets
from datetime import timedelta
from typing import Any, TypeGuard

from django.utils import timezone
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from kernel.throttling import check_ahead
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
        prefix, hashed = raw.partition(".")[0], ApiKey.hash(raw)
        versions = None
        if (entry := _live_keys.kept(prefix)) is not None and _opens(entry[1], hashed):
            # The key's versions are read in the round trip that checks the view's throttles.
            versions = check_ahead(request, entry[1].user, list(zip(_live_keys.keys, entry[0], strict=True)))
        kept = _live_keys.get(prefix) if versions is None else _live_keys.get_as_of(prefix, versions)
        if not _opens(kept, hashed):
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


def _opens(key: ApiKey | None, hashed: str) -> TypeGuard[ApiKey]:
    """Whether `key` is a live key of an active user whose hash is `hashed`."""
    return key is not None and secrets.compare_digest(key.hashed, hashed) and key.user.is_active


def request_user(request: Request) -> User:
    """The authenticated user of a request that passed IsAuthenticated (typed for the callers)."""
    user = request.user
    if not isinstance(user, User):
        raise exceptions.NotAuthenticated()
    return user
