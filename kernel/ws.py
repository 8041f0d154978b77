"""WebSocket handshake security: Origin check and JWT authentication on top of the session; the
message that closes a deactivated user's open streams."""

from typing import Any
from urllib.parse import urlsplit

from asgiref.sync import async_to_sync, sync_to_async
from channels.auth import AuthMiddlewareStack
from channels.layers import get_channel_layer
from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser
from django.http.request import split_domain_port, validate_host
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.settings import api_settings as jwt_settings
from rest_framework_simplejwt.tokens import AccessToken
from rest_framework_simplejwt.utils import get_md5_hash_password

# Every web process's stream hub listens on this channel-layer group for users whose streams must end.
USERS_REVOKED_GROUP = "stream.users"
USER_REVOKED = "stream.user_revoked"

DEFAULT_PORTS = {"http": 80, "https": 443}
Origin = tuple[str, str, int]  # scheme, host, port


def parse_origin(value: str) -> Origin | None:
    """'https://Example.com' -> ('https', 'example.com', 443); None for 'null' or anything malformed."""
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError:
        return None
    scheme, host = parts.scheme.lower(), (parts.hostname or "")
    if (
        scheme not in DEFAULT_PORTS
        or not host
        or parts.path not in ("", "/")
        or parts.query
        or parts.username
    ):
        return None
    return scheme, host, port or DEFAULT_PORTS[scheme]


def _trusted(origin: Origin, pattern: str) -> bool:
    """A CSRF_TRUSTED_ORIGINS entry: scheme and port exact, the host exact or, for '*.example.com',
    a subdomain of it (Django's rule for CSRF)."""
    wildcard = "://*." in pattern
    trusted = parse_origin(pattern.replace("://*.", "://", 1) if wildcard else pattern)
    if trusted is None or (origin[0], origin[2]) != (trusted[0], trusted[2]):
        return False
    return origin[1].endswith("." + trusted[1]) if wildcard else origin[1] == trusted[1]


def origin_allowed(value: str, scope: dict[str, Any]) -> bool:
    """The page's origin is this server's own (the Host it was reached by, an allowed host, and the
    scheme it was reached with) or one of CSRF_TRUSTED_ORIGINS; scheme, host and port compared exactly."""
    origin = parse_origin(value)
    if origin is None:
        return False
    if any(_trusted(origin, pattern) for pattern in settings.CSRF_TRUSTED_ORIGINS):
        return True
    host = next((v.decode("latin-1") for k, v in scope.get("headers", []) if k.lower() == b"host"), "")
    domain, port = split_domain_port(host)
    if not domain or not validate_host(domain, settings.ALLOWED_HOSTS):
        return False
    scheme = "https" if scope.get("scheme") == "wss" else "http"
    own = (scheme, domain, int(port) if port else DEFAULT_PORTS[scheme])
    return origin == own


class ExactOriginValidator:
    """Refuses a handshake whose Origin is not allowed. A missing Origin is a non-browser client,
    which carries no cookies a hostile page could ride on, so it may connect (and must still
    authenticate); more than one Origin header is refused."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        origins = [v.decode("latin-1") for k, v in scope.get("headers", []) if k.lower() == b"origin"]
        if origins and (len(origins) > 1 or not origin_allowed(origins[0], scope)):
            return await WebsocketDenier()(scope, receive, send)
        return await self.app(scope, receive, send)


def user_streams_close(user_id: int) -> None:
    """Ends the open streams of a user, in every web process (after the deactivation committed)."""
    async_to_sync(get_channel_layer().group_send)(
        USERS_REVOKED_GROUP, {"type": USER_REVOKED, "user_id": user_id}
    )


def user_for_token(raw: str) -> Any:
    """The active user an access token names, or None for a bad, expired or foreign-key token, or
    one issued before the user's password last changed (the check JWTAuthentication makes)."""
    try:
        token = AccessToken(raw)  # type: ignore[arg-type]
    except TokenError:
        return None
    user = get_user_model().objects.filter(pk=token.get("user_id"), is_active=True).first()
    if user is None or (
        jwt_settings.CHECK_REVOKE_TOKEN
        and token.get(jwt_settings.REVOKE_TOKEN_CLAIM) != get_md5_hash_password(user.password)
    ):
        return None
    return user


class JwtAuthMiddleware:
    """`Authorization: Bearer <access token>` on the handshake, for non-browser clients."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        headers = dict(scope.get("headers", []))
        scheme, _, raw = headers.get(b"authorization", b"").decode(errors="replace").partition(" ")
        if scheme == "Bearer":
            user = await sync_to_async(user_for_token)(raw.strip())
            scope = {
                **scope,
                "user": user or AnonymousUser(),
                "auth_error": None if user else "invalid_token",
            }
        return await self.app(scope, receive, send)


def secure_websocket(app: Any) -> Any:
    return ExactOriginValidator(AuthMiddlewareStack(JwtAuthMiddleware(app)))
