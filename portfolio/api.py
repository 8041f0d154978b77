from typing import Any, cast

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from livermore.errors import ServiceError
from livermore.throttling import ScopedWriteThrottle, throttles_with
from livermore.users.models import User

from . import selectors, services, tasks
from .models import CoinbaseLink, CoinbaseOrder, Holding


class HoldingSerializer(serializers.ModelSerializer[Holding]):
    class Meta:
        model = Holding
        fields = ("currency", "name", "available", "hold", "synced_at")


class CoinbaseOrderSerializer(serializers.ModelSerializer[CoinbaseOrder]):
    class Meta:
        model = CoinbaseOrder
        fields = (
            "order_id",
            "product_id",
            "side",
            "status",
            "order_type",
            "created_time",
            "last_fill_time",
            "filled_size",
            "average_filled_price",
            "filled_value",
            "total_fees",
        )


class LinkSerializer(serializers.ModelSerializer[CoinbaseLink]):
    """The link's state only: the key itself is never serialised."""

    class Meta:
        model = CoinbaseLink
        fields = ("enabled", "status", "last_error", "last_synced_at")


class CredentialsSerializer(serializers.Serializer[None]):
    api_key_name = serializers.CharField(write_only=True, max_length=300)
    private_key_pem = serializers.CharField(write_only=True, max_length=5000, trim_whitespace=False)


PortfolioSerializer = inline_serializer(
    "Portfolio",
    {
        "coinbase": LinkSerializer(allow_null=True),
        "holdings": HoldingSerializer(many=True),
        "orders": CoinbaseOrderSerializer(many=True),
    },
)


def _user(request: Request) -> User:
    return cast(User, request.user)  # IsAuthenticated (the default permission) ran first


class PortfolioView(APIView):
    """The signed-in user's own mirrored Coinbase portfolio."""

    @extend_schema(responses=PortfolioSerializer)
    def get(self, request: Request) -> Response:
        link = selectors.coinbase_link_for(user=_user(request))
        return Response(
            {
                "coinbase": LinkSerializer(link).data if link else None,
                "holdings": HoldingSerializer(selectors.holdings_for(user=_user(request)), many=True).data,
                "orders": CoinbaseOrderSerializer(
                    selectors.coinbase_orders_for(user=_user(request)), many=True
                ).data,
            }
        )


class CoinbaseKeyView(APIView):
    """Store (PUT) or forget (DELETE) the user's Coinbase key. Write-only: never returned."""

    @extend_schema(request=CredentialsSerializer, responses=LinkSerializer)
    def put(self, request: Request) -> Response:
        serializer = CredentialsSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data: dict[str, Any] = serializer.validated_data
        link = services.coinbase_link_set(user=_user(request), **data)
        tasks.sync_portfolio.delay_on_commit(link.pk)
        return Response(LinkSerializer(link).data)

    @extend_schema(responses={204: None})
    def delete(self, request: Request) -> Response:
        services.coinbase_link_delete(user=_user(request))
        return Response(status=status.HTTP_204_NO_CONTENT)


class PortfolioSyncView(APIView):
    throttle_classes = throttles_with(ScopedWriteThrottle)
    throttle_scope = "portfolio_sync"

    @extend_schema(request=None, responses={202: LinkSerializer})
    def post(self, request: Request) -> Response:
        link = selectors.coinbase_link_for(user=_user(request))
        if link is None:
            raise ServiceError(
                "no_coinbase_key", "Store a Coinbase key first.", status_code=status.HTTP_409_CONFLICT
            )
        tasks.sync_portfolio.delay_on_commit(link.pk)
        return Response(LinkSerializer(link).data, status=status.HTTP_202_ACCEPTED)
