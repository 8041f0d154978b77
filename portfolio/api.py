from decimal import Decimal
from typing import Any, cast

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from kernel.errors import ServiceError
from kernel.throttling import ScopedWriteThrottle, throttles_with
from users.models import User

from . import selectors, services, tasks
from .models import CoinbaseLink, CoinbaseOrder, Holding
from .valuation import plain


def money(**kwargs: Any) -> serializers.DecimalField:
    """Account-currency money as a JSON string, already rounded to the currency's minor unit."""
    return serializers.DecimalField(max_digits=None, decimal_places=None, **kwargs)


class NumberField(serializers.DecimalField):
    """A quantity, price or quote-currency amount as a JSON string, exact, without trailing zeros."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(max_digits=None, decimal_places=None, **kwargs)

    def to_representation(self, value: Any) -> str:
        return plain(Decimal(value))


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
        fields = ("enabled", "status", "last_error", "last_synced_at", "currency")


class PortfolioHoldingValueSerializer(serializers.Serializer[Any]):
    currency = serializers.CharField()
    quantity = NumberField(help_text="available + hold")
    product_id = serializers.CharField(
        help_text="The product it is priced on; empty for the account currency."
    )
    bid = NumberField(allow_null=True, help_text="Best bid of product_id, in its quote currency.")
    conversion_product = serializers.CharField(
        help_text="The product converting the quote currency to the account currency; empty if none needed."
    )
    conversion_rate = NumberField(allow_null=True, help_text="Account-currency units per quote unit.")
    value = money(allow_null=True, help_text="quantity x bid x conversion_rate; null when unpriced.")
    tracked_quantity = NumberField(help_text="The part of the quantity the fills account for.")
    untracked_quantity = NumberField(help_text="Quantity with no cost basis (deposits, transfers, rewards).")
    average_cost = NumberField(
        allow_null=True, help_text="Average cost per unit in the quote currency, fees included."
    )
    cost_basis = money(allow_null=True, help_text="Cost of the tracked quantity, in the account currency.")
    unrealized_pnl = money(allow_null=True, help_text="tracked_quantity at the bid minus cost_basis.")
    unpriced_reason = serializers.CharField()


class PortfolioPositionSerializer(serializers.Serializer[Any]):
    product_id = serializers.CharField()
    quantity = NumberField()
    cost = NumberField(help_text="Average-cost basis of the quantity, in the quote currency, fees included.")
    average_cost = NumberField(allow_null=True)
    realized_pnl = NumberField(help_text="In the quote currency, fees deducted.")
    fees = NumberField()
    bought = NumberField()
    sold = NumberField()
    untracked_sold = NumberField(
        help_text="Sold beyond what the fills bought (coins that came in otherwise)."
    )
    adjusted_fills = serializers.IntegerField(help_text="REVERSAL/CORRECTION/SYNTHETIC fills, not applied.")
    fills = serializers.IntegerField()


class PortfolioValuationSerializer(serializers.Serializer[Any]):
    """Holdings valued at the best bid (what they could be sold for now) from the last sync's prices."""

    currency = serializers.CharField(help_text="The account currency of every amount below.")
    priced_at = serializers.DateTimeField(allow_null=True, help_text="When the prices used were fetched.")
    total_value = money()
    total_cost_basis = money()
    total_unrealized_pnl = money()
    complete = serializers.BooleanField(help_text="False when a holding could not be priced.")
    unpriced = serializers.ListField(child=serializers.CharField())
    holdings = PortfolioHoldingValueSerializer(many=True)
    positions = PortfolioPositionSerializer(many=True)


class CurrencySerializer(serializers.Serializer[None]):
    currency = serializers.CharField(max_length=10)


class CredentialsSerializer(serializers.Serializer[None]):
    api_key_name = serializers.CharField(write_only=True, max_length=300)
    private_key_pem = serializers.CharField(write_only=True, max_length=5000, trim_whitespace=False)


PortfolioSerializer = inline_serializer(
    "Portfolio",
    {
        "coinbase": LinkSerializer(allow_null=True),
        "holdings": HoldingSerializer(many=True),
        "valuation": PortfolioValuationSerializer(),
        "orders": CoinbaseOrderSerializer(many=True),
    },
)


def _user(request: Request) -> User:
    return cast(User, request.user)  # IsAuthenticated (the default permission) ran first


class PortfolioView(APIView):
    """The signed-in user's own mirrored Coinbase portfolio, valued at the best bid in their account
    currency, with average-cost basis and unrealized PnL from the mirrored fills."""

    @extend_schema(responses=PortfolioSerializer)
    def get(self, request: Request) -> Response:
        link = selectors.coinbase_link_for(user=_user(request))
        valuation = selectors.portfolio_valuation_for(user=_user(request))
        return Response(
            {
                "coinbase": LinkSerializer(link).data if link else None,
                "holdings": HoldingSerializer(selectors.holdings_for(user=_user(request)), many=True).data,
                "valuation": PortfolioValuationSerializer(valuation).data,
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


class PortfolioCurrencyView(APIView):
    """Set the account currency the portfolio is valued in; a sync is queued to fetch its prices."""

    throttle_classes = throttles_with(ScopedWriteThrottle)
    throttle_scope = "portfolio_sync"

    @extend_schema(request=CurrencySerializer, responses=LinkSerializer)
    def put(self, request: Request) -> Response:
        serializer = CurrencySerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        link = selectors.coinbase_link_for(user=_user(request))
        if link is None:
            raise ServiceError(
                "no_coinbase_key", "Store a Coinbase key first.", status_code=status.HTTP_409_CONFLICT
            )
        link = services.portfolio_currency_set(link=link, currency=serializer.validated_data["currency"])
        tasks.sync_portfolio.delay_on_commit(link.pk)
        return Response(LinkSerializer(link).data)
