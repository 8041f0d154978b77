from django.urls import path

from . import api

urlpatterns = [
    path("auth/token", api.TokenObtainView.as_view(), name="auth-token"),
    path("auth/token/refresh", api.TokenRefreshView.as_view(), name="auth-token-refresh"),
    path("auth/token/revoke", api.TokenRevokeView.as_view(), name="auth-token-revoke"),
    path("me", api.MeView.as_view(), name="me"),
    path("api-keys", api.ApiKeyListView.as_view(), name="api-keys"),
    path("api-keys/<int:key_id>/revoke", api.ApiKeyRevokeView.as_view(), name="api-key-revoke"),
]
