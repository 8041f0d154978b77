"""WebSocket handshake security: Origin check and JWT authentication on top of the session."""

from typing import Any
from urllib.parse import urlparse

from asgiref.sync import sync_to_async
from channels.auth import AuthMiddlewareStack
from channels.security.websocket import OriginValidator
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.tokens import AccessToken


class BrowserOriginValidator(OriginValidator):
    """Rejects a foreign Origin. A missing Origin is a non-browser client, which carries no cookies
    a hostile page could ride on, so it may connect (and must still authenticate)."""

    def valid_origin(self, parsed_origin: Any) -> bool:
        return parsed_origin is None or self.validate_origin(parsed_origin)


def allowed_origins() -> list[str]:
    hosts = [f"*{h}" if h.startswith(".") else h for h in settings.ALLOWED_HOSTS]
    return [*hosts, *(urlparse(o).netloc for o in settings.CSRF_TRUSTED_ORIGINS)]


def user_for_token(raw: str) -> Any:
    """The active user an access token names, or None for a bad, expired or foreign-key token."""
    try:
        token = AccessToken(raw)  # type: ignore[arg-type]
    except TokenError:
        return None
    user = get_user_model().objects.filter(pk=token.get("user_id"), is_active=True).first()
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
    return BrowserOriginValidator(AuthMiddlewareStack(JwtAuthMiddleware(app)), allowed_origins())
