"""Authentication endpoints (JWT login, refresh with rotation, revoke), the caller's profile and
the caller's API keys."""

from typing import Any

from django.contrib.auth.signals import user_logged_in
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import exceptions, permissions, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import BaseThrottle
from rest_framework.views import APIView
from rest_framework_simplejwt import views as jwt_views
from rest_framework_simplejwt.serializers import TokenObtainPairSerializer

from kernel.throttling import ScopedRateThrottle

from . import selectors, services
from .authentication import request_user
from .models import ApiKey, User
from .security import LockedOut

AUTH_THROTTLES: list[type[BaseThrottle]] = [ScopedRateThrottle]


@extend_schema(tags=["auth"], summary="Log in: exchange username and password for a token pair")
class TokenObtainView(jwt_views.TokenObtainPairView):
    throttle_classes = AUTH_THROTTLES
    throttle_scope = "auth"

    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = TokenObtainPairSerializer(data=request.data, context=self.get_serializer_context())
        try:
            serializer.is_valid(raise_exception=True)
        except exceptions.AuthenticationFailed:
            # django-axes flags the request it was handed (this DRF request) when it locks out.
            if getattr(request, "axes_locked_out", False):
                raise LockedOut() from None
            raise
        # A token login is a login: axes resets the failure count, last_login is kept.
        user_logged_in.send(sender=type(serializer.user), request=request, user=serializer.user)
        return Response(serializer.validated_data)


@extend_schema(tags=["auth"], summary="Refresh: a new access token and a new refresh token (rotation)")
class TokenRefreshView(jwt_views.TokenRefreshView):
    throttle_classes = AUTH_THROTTLES
    throttle_scope = "auth"


@extend_schema(
    tags=["auth"],
    summary="Log out: revoke a refresh token",
    responses={204: OpenApiResponse(description="Revoked")},
)
class TokenRevokeView(jwt_views.TokenBlacklistView):
    throttle_classes = AUTH_THROTTLES
    throttle_scope = "auth"

    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        super().post(request, *args, **kwargs)
        return Response(status=status.HTTP_204_NO_CONTENT)


class MeSerializer(serializers.ModelSerializer[User]):
    class Meta:
        model = User
        fields = ("id", "username", "email", "first_name", "last_name", "is_staff", "date_joined")
        read_only_fields = fields


@extend_schema(tags=["auth"], summary="The authenticated user", responses=MeSerializer)
class MeView(APIView):
    def get(self, request: Request) -> Response:
        return Response(MeSerializer(request_user(request)).data)


class ApiKeySerializer(serializers.ModelSerializer[ApiKey]):
    class Meta:
        model = ApiKey
        fields = ("id", "name", "prefix", "created_at", "last_used_at", "revoked_at")
        read_only_fields = ("id", "prefix", "created_at", "last_used_at", "revoked_at")


class NotWithApiKey(permissions.BasePermission):
    """API keys cannot mint or revoke API keys: that takes a person's login."""

    message = "Managing API keys needs a user login, not an API key."
    code = "api_key_not_allowed"

    def has_permission(self, request: Request, view: APIView) -> bool:
        return not isinstance(request.auth, ApiKey)


class ApiKeyListView(APIView):
    permission_classes = [permissions.IsAuthenticated, NotWithApiKey]
    serializer_class = ApiKeySerializer

    @extend_schema(
        tags=["api keys"],
        summary="The caller's API keys (never the secret)",
        responses=ApiKeySerializer(many=True),
    )
    def get(self, request: Request) -> Response:
        return Response(ApiKeySerializer(selectors.api_key_list(user=request_user(request)), many=True).data)

    @extend_schema(
        tags=["api keys"],
        summary="Create an API key; the secret is in this response only",
        request=ApiKeySerializer,
        responses={
            201: inline_serializer(
                "ApiKeyCreated",
                {
                    "id": serializers.IntegerField(),
                    "name": serializers.CharField(),
                    "prefix": serializers.CharField(),
                    "created_at": serializers.DateTimeField(),
                    "key": serializers.CharField(help_text="Send as `Authorization: Api-Key <key>`."),
                },
            )
        },
    )
    def post(self, request: Request) -> Response:
        serializer = ApiKeySerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        key, raw = services.api_key_issue(user=request_user(request), name=serializer.validated_data["name"])
        data = ApiKeySerializer(key).data
        return Response({**data, "key": raw}, status=status.HTTP_201_CREATED)


class ApiKeyRevokeView(APIView):
    permission_classes = [permissions.IsAuthenticated, NotWithApiKey]
    serializer_class = ApiKeySerializer

    @extend_schema(
        tags=["api keys"],
        summary="Revoke one of the caller's API keys",
        request=None,
        responses=ApiKeySerializer,
    )
    def post(self, request: Request, key_id: int) -> Response:
        key = services.api_key_revoke(user=request_user(request), key_id=key_id)
        return Response(ApiKeySerializer(key).data)
