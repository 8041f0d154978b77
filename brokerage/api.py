"""Client and operator REST API of the dealing engine, under /api/v1/accounts/<number>/.

A client sees only their own accounts: another's account answers 403 `forbidden_account`, an unknown
number 404. Staff see every account with brokerage.view_tradingaccount and trade on them with
brokerage.trade_for_client (never by is_staff alone); their actions carry reason `operator`, and the
services audit them. Views validate, call one service or selector, and render.
"""

from decimal import Decimal
from functools import cache
from typing import Any

from django.http import Http404, HttpRequest, HttpResponseBase
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.exceptions import PermissionDenied
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.utils.serializer_helpers import BindingDict
from rest_framework.views import APIView

from kernel import sql, versions
from kernel.errors import ServiceError
from kernel.pagination import PaginatedListView
from kernel.params import choice_param
from kernel.throttling import ScopedWriteThrottle, throttles_with
from marketdata.models import Instrument
from users.authentication import request_user
from users.idempotency import idempotent
from users.models import User

from . import pricing, selectors, services
from .models import (
    Deal,
    Order,
    OrderStatus,
    OrderType,
    Position,
    PositionStatus,
    Posting,
    Reason,
    Side,
    TimeInForce,
    TradingAccount,
)
from .selectors import AccountSummary, ledger_postings


def price_field(**kwargs: Any) -> serializers.DecimalField:
    return serializers.DecimalField(max_digits=24, decimal_places=10, **kwargs)


def volume_field(**kwargs: Any) -> serializers.DecimalField:
    return serializers.DecimalField(max_digits=20, decimal_places=8, **kwargs)


VIEW_PERMISSION = "brokerage.view_tradingaccount"
TRADE_PERMISSION = "brokerage.trade_for_client"


def account_for(request: Request, number: int, *, trade: bool = False) -> TradingAccount:
    """The account `number` if the caller may use it: its owner, or staff holding the permission
    (brokerage.view_tradingaccount to read it, brokerage.trade_for_client to trade on it)."""
    found = sql.select(TradingAccount, "t.number = %s", [number], related="group")
    if not found:
        raise Http404("No TradingAccount matches the given query.")
    account = found[0]
    _check_access(request, account.owner_id, trade=trade)
    return account


def _check_access(request: Request, owner_id: int, *, trade: bool) -> None:
    """The caller may use an account of `owner_id`: its owner, or staff holding the permission."""
    user = request_user(request)
    if owner_id != user.pk and not (
        user.is_staff and user.has_perm(TRADE_PERMISSION if trade else VIEW_PERMISSION)
    ):
        raise PermissionDenied("This account is not yours.", code="forbidden_account")


def account_to_trade(request: Request, number: int) -> TradingAccount:
    """`account_for(trade=True)` for placing an order, from the account's identity kept per process
    (selectors.account_identity): the account holds its id, number and owner; the rest of its row
    is deferred (read on first use), since the order service locks and reads the row itself."""
    identity = selectors.account_identity(number)
    if identity is None:
        raise Http404("No TradingAccount matches the given query.")
    pk, owner_id = identity
    _check_access(request, owner_id, trade=True)
    return TradingAccount.from_db("default", ["id", "number", "owner_id"], [pk, number, owner_id])


def reason_for(user: User, account: TradingAccount) -> str:
    return Reason.CLIENT if account.owner_id == user.pk else Reason.OPERATOR


# -- serializers -------------------------------------------------------------------------------------


class SummarySerializer(serializers.Serializer[Any]):
    currency = serializers.CharField()
    balance = serializers.DecimalField(max_digits=24, decimal_places=2)
    equity = serializers.DecimalField(max_digits=24, decimal_places=2)
    margin = serializers.DecimalField(max_digits=24, decimal_places=2)
    free_margin = serializers.DecimalField(max_digits=24, decimal_places=2)
    margin_level = serializers.DecimalField(
        max_digits=12, decimal_places=2, allow_null=True, help_text="Percent; null without margin used."
    )
    unrealized_pnl = serializers.DecimalField(max_digits=24, decimal_places=2)
    unpriced = serializers.ListField(
        child=serializers.CharField(), help_text="Symbols of open positions without a tradable price."
    )

    def to_representation(self, instance: Any) -> dict[str, Any]:
        return summary_data(instance)


def summary_data(summary: AccountSummary) -> dict[str, Any]:
    """The engine's summary, money quantised to the account currency at this edge."""
    data: dict[str, Any] = {**summary.as_event()}
    for name in ("balance", "equity", "margin", "free_margin", "unrealized_pnl"):
        data[name] = str(pricing.money(getattr(summary, name), summary.currency))
    return data


class AccountSerializer(serializers.ModelSerializer[TradingAccount]):
    group = serializers.CharField(source="group.name")
    leverage = serializers.IntegerField(source="group.leverage")

    class Meta:
        model = TradingAccount
        fields: tuple[str, ...] = (
            "number",
            "currency",
            "status",
            "group",
            "leverage",
            "balance",
            "created_at",
        )


class AccountDetailSerializer(AccountSerializer):
    summary = SummarySerializer(source="*", read_only=True)

    class Meta(AccountSerializer.Meta):
        fields = (*AccountSerializer.Meta.fields, "summary")


class OrderSerializer(serializers.ModelSerializer[Order]):
    symbol = serializers.CharField(source="instrument.symbol")

    class Meta:
        model = Order
        fields = (
            "id",
            "client_order_id",
            "symbol",
            "type",
            "side",
            "volume",
            "price",
            "stop_price",
            "sl",
            "tp",
            "time_in_force",
            "expires_at",
            "status",
            "reason",
            "close_reason",
            "close_text",
            "book",
            "route",
            "position",
            "filled_volume",
            "fill_price",
            "filled_at",
            "created_at",
        )


# DRF builds a ModelSerializer's fields anew for each serializer; the order placed on the hot path is
# rendered by one instance's fields, built once (rendering only reads them).
_order_output = OrderSerializer()


class OrderCreateSerializer(serializers.Serializer[Any]):
    symbol = serializers.CharField(max_length=20)
    side = serializers.ChoiceField(choices=Side.choices)
    volume = volume_field()
    type = serializers.ChoiceField(choices=OrderType.choices, default=OrderType.MARKET)
    price = price_field(required=False, allow_null=True)
    stop_price = price_field(required=False, allow_null=True)
    sl = price_field(required=False, allow_null=True)
    tp = price_field(required=False, allow_null=True)
    time_in_force = serializers.ChoiceField(choices=TimeInForce.choices, default=TimeInForce.GTC)
    expires_at = serializers.DateTimeField(required=False, allow_null=True)
    client_order_id = serializers.CharField(max_length=64, required=False, default="", allow_blank=True)

    @property
    def fields(self) -> BindingDict:
        # Validating reads the fields and keeps its state (data, errors) on the serializer: one set
        # of fields serves every order instead of a deep copy of the declared ones per request.
        return _order_input_fields()


@cache
def _order_input_fields() -> BindingDict:
    return serializers.Serializer.fields.func(OrderCreateSerializer())  # type: ignore[attr-defined]


class PositionSerializer(serializers.ModelSerializer[Position]):
    symbol = serializers.CharField(source="instrument.symbol")
    unrealized_pnl = serializers.SerializerMethodField(
        help_text="Open positions: marked at the client's closing price, in the account currency."
    )

    class Meta:
        model = Position
        fields = (
            "id",
            "symbol",
            "side",
            "volume",
            "open_price",
            "margin",
            "sl",
            "tp",
            "status",
            "unrealized_pnl",
            "realized_pnl",
            "commission",
            "swap",
            "close_reason",
            "close_price",
            "opened_at",
            "closed_at",
        )

    def get_unrealized_pnl(self, position: Position) -> str | None:
        value = self.context.get("pnl", {}).get(position.pk)
        return None if value is None else str(value)


class PositionCloseSerializer(serializers.Serializer[Any]):
    volume = volume_field(
        required=False, allow_null=True, help_text="Lots to close; the whole position if absent."
    )


class PositionsCloseSerializer(serializers.Serializer[Any]):
    which = serializers.ChoiceField(choices=services.BULK_FILTERS, default="all")
    symbol = serializers.CharField(max_length=20, required=False, allow_null=True, default=None)


class OrderModifySerializer(serializers.Serializer[Any]):
    """A pending order's new values; a field left out keeps its current value."""

    price = price_field(required=False, allow_null=True)
    stop_price = price_field(required=False, allow_null=True)
    sl = price_field(required=False, allow_null=True, help_text="null removes it.")
    tp = price_field(required=False, allow_null=True, help_text="null removes it.")
    expires_at = serializers.DateTimeField(required=False, allow_null=True)


class PositionModifySerializer(serializers.Serializer[Any]):
    sl = price_field(allow_null=True, help_text="null removes it.")
    tp = price_field(allow_null=True, help_text="null removes it.")


class DealSerializer(serializers.ModelSerializer[Deal]):
    symbol = serializers.CharField(source="instrument.symbol")

    class Meta:
        model = Deal
        fields = (
            "id",
            "order",
            "position",
            "symbol",
            "side",
            "entry",
            "volume",
            "price",
            "commission",
            "realized_pnl",
            "reason",
            "book",
            "venue",
            "quote_seq",
            "created_at",
        )


class PostingSerializer(serializers.ModelSerializer[Posting]):
    transaction = serializers.IntegerField(source="transaction_id")
    kind = serializers.CharField(source="transaction.kind")
    comment = serializers.CharField(source="transaction.comment")
    order = serializers.IntegerField(source="transaction.order_id", allow_null=True)
    deal = serializers.IntegerField(source="transaction.deal_id", allow_null=True)
    position = serializers.IntegerField(source="transaction.position_id", allow_null=True)
    created_at = serializers.DateTimeField(source="transaction.created_at")
    balance_after = serializers.DecimalField(max_digits=24, decimal_places=8)

    class Meta:
        model = Posting
        fields = (
            "id",
            "transaction",
            "kind",
            "amount",
            "balance_after",
            "comment",
            "order",
            "deal",
            "position",
            "created_at",
        )


# -- views -------------------------------------------------------------------------------------------


class AccountListView(APIView):
    serializer_class = AccountSerializer

    @extend_schema(
        tags=["accounts"],
        operation_id="accounts_list",
        summary="Your trading accounts (every account for operators)",
        responses=AccountSerializer(many=True),
    )
    def get(self, request: Request) -> Response:
        user = request_user(request)
        accounts = TradingAccount.objects.select_related("group").order_by("number")
        if not (user.is_staff and user.has_perm(VIEW_PERMISSION)):
            accounts = accounts.filter(owner=user)
        return Response(AccountSerializer(accounts, many=True).data)


class AccountDetailView(APIView):
    serializer_class = AccountDetailSerializer

    @extend_schema(
        tags=["accounts"], summary="An account with balance, equity, margin, free margin, margin level"
    )
    def get(self, request: Request, number: int) -> Response:
        account = account_for(request, number)
        summary = selectors.account_summary(account=account)
        data = AccountSerializer(account).data
        return Response({**data, "summary": summary_data(summary)})


class OrderListView(PaginatedListView):
    serializer_class = OrderSerializer
    throttle_classes = throttles_with(ScopedWriteThrottle)
    throttle_scope = "orders"

    @extend_schema(
        tags=["orders"],
        summary="The account's orders, newest first",
        parameters=[OpenApiParameter("status", enum=OrderStatus.values)],
    )
    def get(self, request: Request, number: int) -> Response:
        account = account_for(request, number)
        orders = Order.objects.filter(account=account).select_related("instrument")
        if status_filter := choice_param(request, "status", OrderStatus.values):
            orders = orders.filter(status=status_filter)
        return self.paginate(orders, request)

    @extend_schema(
        tags=["orders"],
        summary="Place an order (market orders fill now). Send an Idempotency-Key to retry safely.",
        request=OrderCreateSerializer,
        responses={201: OrderSerializer},
        parameters=[OpenApiParameter("Idempotency-Key", location=OpenApiParameter.HEADER, required=False)],
    )
    @idempotent
    def post(self, request: Request, number: int) -> Response:
        account = account_to_trade(request, number)
        serializer = OrderCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user = request_user(request)
        order = services.order_submit(
            account=account,
            **serializer.validated_data,
            reason=reason_for(user, account),
            actor=user,
        )
        return Response(_order_output.to_representation(order), status=status.HTTP_201_CREATED)

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        # The account's identity and the order's own caches (instrument, group, routing) are checked
        # against versions read together, in the round trip that checks the caller's rates.
        with versions.pinned():
            return super().dispatch(request, *args, **kwargs)


class OrderView(APIView):
    serializer_class = OrderSerializer

    @extend_schema(
        tags=["orders"],
        operation_id="accounts_order_retrieve",
        summary="One order of the account (e.g. a routed one awaiting the LP)",
    )
    def get(self, request: Request, number: int, order_id: int) -> Response:
        account = account_for(request, number)
        order = get_object_or_404(Order.objects.select_related("instrument"), pk=order_id, account=account)
        return Response(OrderSerializer(order).data)

    @extend_schema(
        tags=["orders"],
        operation_id="accounts_order_modify",
        summary="Change a pending order's prices, SL/TP or expiry (fields left out keep their values)",
        request=OrderModifySerializer,
    )
    def patch(self, request: Request, number: int, order_id: int) -> Response:
        account = account_for(request, number, trade=True)
        order = get_object_or_404(Order.objects.select_related("instrument"), pk=order_id, account=account)
        serializer = OrderModifySerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user = request_user(request)
        order = services.order_modify(order=order, **serializer.validated_data, actor=user)
        return Response(OrderSerializer(order).data)


class OrderCancelView(APIView):
    serializer_class = OrderSerializer

    @extend_schema(
        tags=["orders"],
        summary="Cancel a pending order, or a routed (A-Book) one",
        description=(
            "200: the order is cancelled. 202: the order is working at the LP, which has been asked to"
            " cancel it; it stays `routed` until the LP answers, and an `order` event on"
            " account:NUMBER tells how it ended (cancelled, or filled if the cancel came too late)."
        ),
        request=None,
        responses={200: OrderSerializer, 202: OrderSerializer},
    )
    @idempotent
    def post(self, request: Request, number: int, order_id: int) -> Response:
        account = account_for(request, number, trade=True)
        order = get_object_or_404(Order.objects.select_related("instrument"), pk=order_id, account=account)
        user = request_user(request)
        order = services.order_cancel(order=order, reason=reason_for(user, account), actor=user)
        routed = order.status == OrderStatus.ROUTED
        return Response(
            OrderSerializer(order).data, status=status.HTTP_202_ACCEPTED if routed else status.HTTP_200_OK
        )


class PositionListView(PaginatedListView):
    serializer_class = PositionSerializer

    @extend_schema(
        tags=["positions"],
        summary="The account's positions, newest first (open ones with their unrealized PnL)",
        parameters=[OpenApiParameter("status", enum=PositionStatus.values)],
    )
    def get(self, request: Request, number: int) -> Response:
        account = account_for(request, number)
        positions = Position.objects.filter(account=account).select_related("instrument")
        if status_filter := choice_param(request, "status", PositionStatus.values):
            positions = positions.filter(status=status_filter)
        pnl = selectors.account_summary(account=account, with_position_pnl=True).position_pnl
        money = {pk: pricing.money(value, account.currency) for pk, value in pnl.items()}
        return self.paginate(positions, request, pnl=money)


class PositionView(APIView):
    serializer_class = PositionSerializer

    @extend_schema(
        tags=["positions"], summary="Set or remove a position's SL and TP", request=PositionModifySerializer
    )
    def patch(self, request: Request, number: int, position_id: int) -> Response:
        account = account_for(request, number, trade=True)
        position = get_object_or_404(Position, pk=position_id, account=account)
        serializer = PositionModifySerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        position = services.position_modify(
            position=position, **serializer.validated_data, actor=request_user(request)
        )
        return Response(PositionSerializer(position).data)


CloseResult = inline_serializer(
    "PositionsClosed", {"deals": DealSerializer(many=True), "positions": PositionSerializer(many=True)}
)


def _closed(deals: list[Deal]) -> Response:
    positions = Position.objects.filter(pk__in={d.position_id for d in deals}).select_related("instrument")
    return Response(
        {
            "deals": DealSerializer(deals, many=True).data,
            "positions": PositionSerializer(positions.order_by("id"), many=True).data,
        }
    )


class PositionCloseView(APIView):
    serializer_class = PositionCloseSerializer

    @extend_schema(
        tags=["positions"],
        summary="Close a position at market, fully or partly",
        request=PositionCloseSerializer,
        responses=CloseResult,
    )
    @idempotent
    def post(self, request: Request, number: int, position_id: int) -> Response:
        account = account_for(request, number, trade=True)
        position = get_object_or_404(Position, pk=position_id, account=account)
        serializer = PositionCloseSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user = request_user(request)
        deal = services.position_close(
            position=position,
            volume=serializer.validated_data.get("volume"),
            reason=reason_for(user, account),
            actor=user,
        )
        return _closed([deal])


class PositionsCloseView(APIView):
    serializer_class = PositionsCloseSerializer

    @extend_schema(
        tags=["positions"],
        operation_id="accounts_positions_close_bulk",
        summary="Close all, the winning or the losing positions (optionally of one symbol)",
        request=PositionsCloseSerializer,
        responses=CloseResult,
    )
    @idempotent
    def post(self, request: Request, number: int) -> Response:
        account = account_for(request, number, trade=True)
        serializer = PositionsCloseSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user = request_user(request)
        deals = services.positions_close_bulk(
            account=account,
            **serializer.validated_data,
            reason=reason_for(user, account),
            actor=user,
        )
        return _closed(deals)


class DealListView(PaginatedListView):
    serializer_class = DealSerializer

    @extend_schema(tags=["deals"], summary="The account's deals (fills), newest first")
    def get(self, request: Request, number: int) -> Response:
        account = account_for(request, number)
        return self.paginate(Deal.objects.filter(account=account).select_related("instrument"), request)


class LedgerView(PaginatedListView):
    serializer_class = PostingSerializer

    @extend_schema(
        tags=["ledger"], summary="The account's ledger postings, newest first, with the balance after each"
    )
    def get(self, request: Request, number: int) -> Response:
        return self.paginate(ledger_postings(account=account_for(request, number)), request)


def _instrument(symbol: str) -> Instrument:
    found = Instrument.objects.filter(symbol=symbol.upper()).first()
    if found is None:
        raise ServiceError(
            "unknown_symbol", f"No instrument {symbol}.", fields={"symbol": ["Unknown."]}, status_code=400
        )
    return found


def _no_price(symbol: str) -> ServiceError:
    return ServiceError("no_price", f"No tradable price for {symbol} now.", status_code=503)


class MarginPreviewQuery(serializers.Serializer[Any]):
    symbol = serializers.CharField(max_length=20)
    side = serializers.ChoiceField(choices=Side.choices)
    volume = volume_field()


class MarginPreviewSerializer(serializers.Serializer[Any]):
    price = price_field()
    margin = serializers.DecimalField(max_digits=24, decimal_places=2)
    spread_cost = serializers.DecimalField(max_digits=24, decimal_places=2)
    commission = serializers.DecimalField(max_digits=24, decimal_places=2)
    free_margin = serializers.DecimalField(max_digits=24, decimal_places=2)
    free_margin_after = serializers.DecimalField(max_digits=24, decimal_places=2)
    margin_level_after = serializers.DecimalField(max_digits=12, decimal_places=2, allow_null=True)


class MarginPreviewView(APIView):
    serializer_class = MarginPreviewSerializer

    @extend_schema(
        tags=["accounts"],
        summary="Margin preview: the margin, spread cost and free margin after a hypothetical market order",
        parameters=[MarginPreviewQuery],
    )
    def get(self, request: Request, number: int) -> Response:
        account = account_for(request, number)
        query = MarginPreviewQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        instrument = _instrument(query.validated_data["symbol"])
        volume = query.validated_data["volume"]
        error = pricing.volume_error(
            volume, minimum=instrument.volume_min, maximum=instrument.volume_max, step=instrument.volume_step
        )
        if error:
            raise ServiceError("invalid_volume", error, fields={"volume": [error]})
        preview = selectors.margin_preview(
            account=account, instrument=instrument, side=query.validated_data["side"], volume=volume
        )
        if preview is None:
            raise _no_price(instrument.symbol)
        return Response(MarginPreviewSerializer(preview).data)


class LotCalculatorQuery(serializers.Serializer[Any]):
    symbol = serializers.CharField(max_length=20)
    side = serializers.ChoiceField(choices=Side.choices, default=Side.BUY)
    risk = serializers.DecimalField(
        max_digits=24, decimal_places=8, min_value=Decimal("0.01"), help_text="In the account currency."
    )
    stop_distance = price_field(
        min_value=Decimal("1e-10"), help_text="From the open price to the stop loss, in price units."
    )


class LotSizeSerializer(serializers.Serializer[Any]):
    volume = volume_field(help_text="0 when even the minimum volume risks more.")
    risk = serializers.DecimalField(max_digits=24, decimal_places=2, help_text="At that volume.")
    loss_per_lot = serializers.DecimalField(max_digits=24, decimal_places=8)


class LotCalculatorView(APIView):
    serializer_class = LotSizeSerializer

    @extend_schema(
        tags=["accounts"],
        summary="Lot calculator: the volume that risks a given amount with a stop a given distance away",
        parameters=[LotCalculatorQuery],
    )
    def get(self, request: Request, number: int) -> Response:
        account = account_for(request, number)
        query = LotCalculatorQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        instrument = _instrument(query.validated_data["symbol"])
        size = selectors.lot_size(
            account=account,
            instrument=instrument,
            side=query.validated_data["side"],
            risk=query.validated_data["risk"],
            stop_distance=query.validated_data["stop_distance"],
        )
        if size is None:
            raise _no_price(instrument.symbol)
        return Response(LotSizeSerializer(size).data)
